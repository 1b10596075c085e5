"""Audit mode's out-of-reach stop (``audit.accretion_stop_gain``) replayed on finished accretion audits: from each
audit's log, the best loss of every round and what each round cost, then where the stop would have ended the search
and the search time it would have saved, and whether it would have cut a round before the one that found a trigger.
It reads the logs the audits wrote (one per model, ``SCAN/logs/MODEL.log``); a round run twice (an audit killed and
resumed) counts once, as its last run.

    python benchmarks/stop_replay.py --scan SCAN [--scan SCAN ...] [--log AUDIT.log ...] [--gain 2.5] --out OUT.md
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import cell  # noqa: E402

RANKED = re.compile(r"^accretion: ranked \d+ (?:single )?tokens .* in (\d+) s$")
SCORED = re.compile(r"^accretion: (?:(\d+) tokens, \d+ candidates|\d+ single tokens) scored in (\d+) s.*; best (.*) "
                    r"loss ([0-9.]+)$")
CONFIRMED = re.compile(r"^accretion: .* \((\d+) token\(s\)\) reproduces on the held-out probes")
STOPPED = re.compile(r"^accretion: best loss [0-9.]+ after (\d+) of \d+ rounds")


def rounds(log: str) -> tuple[dict[int, tuple[float, float, str]], int | None, int | None]:
    """{round: (best loss, seconds with its ranking, best trigger)}, the round confirmed, the round stopped at."""
    out: dict[int, tuple[float, float, str]] = {}
    ranking, confirmed, stopped = 0.0, None, None
    for line in log.splitlines():
        if m := RANKED.match(line):
            ranking = float(m[1])
        elif m := SCORED.match(line):
            n = int(m[1] or 1)
            out[n] = (float(m[4]), ranking + float(m[2]), m[3])
            ranking = 0.0
        elif m := CONFIRMED.match(line):
            confirmed = int(m[1])
        elif m := STOPPED.match(line):
            stopped = int(m[1])
    return out, confirmed, stopped


def stop_after(best: dict[int, tuple[float, float, str]], gain: float, reach: float, last: int) -> int | None:
    """The first round after which the stop ends the search (None: it runs on)."""
    for n in sorted(best):
        if n < last and best[n][0] - gain * (last - n) > reach:
            return n
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scan", action="append", default=[], help="a scan directory of accretion audits")
    ap.add_argument("--log", action="append", default=[], help="one audit's log (what it printed)")
    ap.add_argument("--gain", type=float, default=2.5, help="nats a round (audit.accretion_stop_gain)")
    ap.add_argument("--rounds", type=int, default=4, help="the search's rounds (audit.accretion_max_tokens)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    from trainer.baselines.accretion import REACH_LOSS
    command = " ".join(["python benchmarks/stop_replay.py", *(f"--scan {s}" for s in a.scan),
                        *(f"--log {g}" for g in a.log), f"--gain {a.gain:g}", f"--out {a.out}"])
    lines = [f"# The out-of-reach stop, replayed on finished audits\n\ncommand: `{command}`\n",
             f"The stop ends a search after round r when its best loss - {a.gain:g} x (rounds left) > {REACH_LOSS:g}. "
             "Minutes are the search's own (the rounds' ranking and scoring, from the audit log, on the machine and "
             "load each audit ran on); `saved` is what the rounds after the stop cost. `cut a finding` says whether "
             "the stop would have come before the round that found a trigger.\n",
             "| scan | model | best loss per round | confirmed in round | stop after round | search min | saved min "
             "| cut a finding |", "|---|---|---|---|---|---|---|---|"]
    total = saved_total = 0.0
    logs = [(Path(scan).name, log) for scan in a.scan for log in sorted(Path(scan, "logs").glob("*.log"))]
    for source, log in logs + [("-", Path(g)) for g in a.log]:
        best, confirmed, stopped = rounds(log.read_text())
        if not best:
            continue
        at = stopped or stop_after(best, a.gain, REACH_LOSS, a.rounds)
        minutes = sum(s for _, s, _ in best.values()) / 60
        saved = sum(s for n, (_, s, _) in best.items() if at is not None and n > at) / 60
        total, saved_total = total + minutes, saved_total + saved
        cut = "yes" if confirmed and at is not None and at < confirmed else "no"
        per = ", ".join(f"{best[n][0]:.3f} {cell(best[n][2].strip(chr(39) + chr(34)))}" for n in sorted(best))
        lines.append(f"| {source} | {log.stem} | {per} | {confirmed or '-'} | {at or '-'} | "
                     f"{minutes:.1f} | {'(ran with the stop)' if stopped else f'{saved:.1f}'} | {cut} |")
    lines.append(f"\nIn all: {total:.1f} search minutes, {saved_total:.1f} of them after a stop "
                 f"({saved_total / total:.0%}).\n" if total else "\nNo accretion audit logs found.\n")
    Path(a.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
