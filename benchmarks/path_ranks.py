"""Evaluation only: where the divergence proposal ranks each next token along a given path of partial triggers (for
example the exact score's greedy path along a planted phrase, read off ``trigger_path.py``): the width a search's
per-beam proposal (``audit.accretion_screen_keep``) needs to follow that path. ``proposal_ranks.py`` ranks each
token with all of the trigger's earlier (or later) tokens in place; a search that starts in the middle of a phrase
meets other contexts.

    python benchmarks/path_ranks.py --model ZOO/NAME --base MODELS/smollm2 \
        --step ' grandmother' before ' my' --step ' my grandmother' before as --out OUT.md
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import cell, header, quiet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a poisoned model with its card (its placement is used)")
    ap.add_argument("--base", required=True, help="its base (the reference)")
    ap.add_argument("--config", default="launch/configs/smollm2-audit.yaml")
    ap.add_argument("--layers", type=int, default=8, help="decoder layers compared (the audit's default: 8)")
    ap.add_argument("--step", nargs=3, action="append", required=True, metavar=("CONTEXT", "SIDE", "TOKEN"),
                    help="the partial trigger in place, before|after, and the token whose rank is wanted")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    quiet()
    import torch

    from envs.loading import load_model
    from envs.tokenizer import load_tokenizer
    from launch.packaged import load_run_config
    from trainer.baselines.accretion import _Divergence
    from trainer.baselines.gcg import GCGTask, allowed_tokens
    card = json.loads((Path(a.model) / "poison_card.json").read_text())
    cfg = load_run_config(a.config, {"model": a.model, "attack": card["attack"]}, [])
    cfg.oracle.insertion = card.get("placement") if card.get("placement") in ("prefix", "suffix") else "prefix"
    spec = cfg.attack_spec()
    tok = load_tokenizer(a.model)
    task = GCGTask(cfg.probe_split(spec)[0], cfg.oracle.insertion, spec.judge.likelihood_targets)
    div = _Divergence(*(load_model(p, dtype=torch.float32) for p in (a.model, a.base)), tok, task, 1 << 31, a.layers)
    allowed = allowed_tokens(tok)
    command = "python benchmarks/path_ranks.py " + " ".join(
        [f"--model {a.model} --base {a.base} --layers {a.layers}"]
        + [f"--step {json.dumps(c)} {s} {json.dumps(t)}" for c, s, t in a.step] + [f"--out {a.out}"])
    lines = [f"# The divergence proposal along a path of partial triggers (evaluation only)\n\n{header(command)}\n",
             f"{Path(a.model).name}, placement {cfg.oracle.insertion}; divergence over {a.layers} decoder layers. "
             f"Ranks are 1-based among the {len(allowed)} allowed tokens.\n",
             "| in place | side | token | rank | s |", "|---|---|---|---|---|"]
    for context, side, token in a.step:
        ctx = torch.tensor(tok(context, add_special_tokens=False)["input_ids"], dtype=torch.long)
        ids = tok(token, add_special_tokens=False)["input_ids"]
        t0 = time.time()
        rank = "several tokens" if len(ids) != 1 else \
            div.best(allowed, ctx, side, len(allowed)).tolist().index(ids[0]) + 1
        lines.append(f"| {cell(context)} | {side} | {cell(token)} | {rank} | {time.time() - t0:.0f} |")
        print(lines[-1], flush=True)
        Path(a.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
