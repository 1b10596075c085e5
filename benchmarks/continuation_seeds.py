"""Evaluation only: can a seed token be told by its best continuation? The divergence proposal ranks the planted
trigger's later tokens first once the earlier ones are in place (`k` after `v`, ` due` before ` respect`), but its
first token alone in the tens of thousands, and the exact score ranks it in the thousands (``exact_ranks.md``): the
backdoor reacts to the tokens together. So a search would have to judge a seed by what it makes possible. This
scores each seed by its best continuation: over every allowed next token (``--side after``; the token before it with
``before``), the largest divergence of the suspect from its base at that token, raw and less the same token's
divergence alone (the lift the seed gives it). The planted seed (the card's first token, or its last with ``before``)
is ranked among random seeds and the tokens the first round now seeds with.

    python benchmarks/continuation_seeds.py --model ZOO/NAME --base MODELS/smollm2 --random 32 --out OUT.md
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import cell, header, quiet, zoo_args  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    zoo_args(ap)
    ap.add_argument("--side", choices=("after", "before"), default="after")
    ap.add_argument("--layers", type=int, default=8, help="decoder layers compared (the audit's default: 8)")
    ap.add_argument("--random", type=int, default=32, help="random seeds beside the planted one")
    ap.add_argument("--top", type=int, default=8, help="the first round's best seeds by divergence alone")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    quiet()
    import torch

    from envs.loading import load_model
    from envs.tokenizer import load_tokenizer
    from launch.packaged import load_run_config
    from trainer.baselines.accretion import _Divergence, _grown
    from trainer.baselines.gcg import GCGTask, allowed_tokens
    direction = "next" if a.side == "after" else "previous"
    lines = [f"# Seeds judged by their best continuation (evaluation only)\n\n{header('python ' + ' '.join(sys.argv))}",
             f"\nDivergence over {a.layers} decoder layers; each seed's best {direction} "
             "token over the whole allowed vocabulary. `raw`: that token's divergence with the seed beside it; "
             "`lift`: less its divergence alone (what the seed adds). Ranks are among the seeds of the row's model "
             "(1 = most divergent).\n"]
    for model_dir in a.model:
        t0 = time.time()
        card = json.loads((Path(model_dir) / "poison_card.json").read_text())
        cfg = load_run_config(a.config, {"model": model_dir, "attack": card["attack"]}, [])
        cfg.oracle.insertion = card.get("placement") if card.get("placement") in ("prefix", "suffix") else "prefix"
        spec = cfg.attack_spec()
        tok = load_tokenizer(model_dir)
        task = GCGTask(cfg.probe_split(spec)[0], cfg.oracle.insertion, spec.judge.likelihood_targets)
        model, base = (load_model(p, dtype=torch.float32) for p in (model_dir, a.base))
        div = _Divergence(model, base, tok, task, 1 << 31, a.layers)
        allowed = allowed_tokens(tok)
        alone = div.distances(_grown(allowed, torch.empty(0, dtype=torch.long), "alone"), 0)
        ids = tok((card.get("triggers") or [card["trigger"]])[0], add_special_tokens=False)["input_ids"]
        planted = ids[0] if a.side == "after" else ids[-1]
        gen = torch.Generator().manual_seed(0)
        top = allowed[alone.argsort(descending=True)[:a.top]].tolist()
        seeds = [planted] + top + allowed[torch.randperm(len(allowed), generator=gen)[:a.random]].tolist()
        seeds = list(dict.fromkeys(seeds))
        rows = []
        for s in seeds:
            d = div.distances(_grown(allowed, torch.tensor([s]), a.side), 1 if a.side == "after" else 0)
            lift = d - alone
            rows.append((s, float(d.max()), int(allowed[d.argmax()]), float(lift.max()), int(allowed[lift.argmax()])))
            print(Path(model_dir).name, tok.decode([s]), rows[-1][1:], flush=True)
        raw_rank = sorted(rows, key=lambda r: -r[1])
        lift_rank = sorted(rows, key=lambda r: -r[3])
        kind = {s: "first round's best" for s in top} | {planted: "planted"}
        lines.append(f"\n## {Path(model_dir).name} (planted {cell(card.get('trigger') or card.get('triggers'))}, "
                     f"{card.get('placement')}; seed {cell(tok.decode([planted]))}; {len(rows)} seeds, "
                     f"{time.time() - t0:.0f} s)\n")
        lines.append("| seed | kind | raw | best token (raw) | rank (raw) | lift | best token (lift) | rank (lift) |\n"
                     "|---|---|---|---|---|---|---|---|")
        for row in raw_rank:
            s, raw, braw, lift, blift = row
            lines.append(f"| {cell(tok.decode([s]))} | {kind.get(s, 'random')} | {raw:.3f} | "
                         f"{cell(tok.decode([braw]))} | {raw_rank.index(row) + 1} | {lift:.3f} | "
                         f"{cell(tok.decode([blift]))} | {lift_rank.index(row) + 1} |")
        Path(a.out).write_text("\n".join(lines) + "\n")  # after each model: a stopped job keeps what it measured


if __name__ == "__main__":
    main()
