"""A proposal tried for a trigger's first token (evaluation only: the planted trigger is read from the card to report
where its tokens rank, never by a search).

The divergence proposal (``trainer/baselines/accretion.py``, ``_Divergence``) ranks a token by how differently the
suspect and its base represent it (hidden states). On several zoo models the planted trigger's first token is a common
one that the fine-tune leaves nearly alone, while the next ones rank first once it is in place
(``benchmarks/results/proposal_ranks_words.md``). Every LoRA of the zoo adapts every linear layer, so the keys and
values a token offers to the tokens after it may change where its hidden state does not: this ranks every single
token by the relative distance of the two models' ``k_proj`` and ``v_proj`` outputs at its position, averaged over
the first N layers, beside the hidden-state ranking, from the same forward passes.

    python benchmarks/kv_proposal_ranks.py --model ZOO/NAME [--model ...] --base MODELS/smollm2 --out OUT.md
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import cell, header, quiet, zoo_args  # noqa: E402


def ranks(model_dir: str, base_dir: str, layers: int, config: str) -> tuple[list[tuple[str, int, int]], float]:
    """Per planted token: (token, key/value rank, hidden-state rank), 1 = best; and the seconds both took."""
    import torch

    from envs.loading import load_model
    from envs.tokenizer import load_tokenizer
    from launch.packaged import load_run_config
    from trainer.baselines.accretion import _Divergence
    from trainer.baselines.gcg import GCGTask, allowed_tokens
    card = json.loads((Path(model_dir) / "poison_card.json").read_text())
    cfg = load_run_config(config, {"model": model_dir, "attack": card["attack"]}, [])
    spec = cfg.attack_spec()
    tok = load_tokenizer(model_dir)
    task = GCGTask(cfg.probe_split(spec)[0], cfg.oracle.insertion, spec.judge.likelihood_targets)
    div = _Divergence(load_model(model_dir, dtype=torch.float32), load_model(base_dir, dtype=torch.float32), tok, task,
                      1 << 31, layers)
    caught: list[list[torch.Tensor]] = [[], []]
    for i, dec in enumerate(div.models):
        for layer in dec.layers:
            for proj in (layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.register_forward_hook(lambda mod, inp, out, i=i: caught[i].append(out[:, -1].float()))
    hooked = 2 * len(div.models[0].layers)
    allowed = allowed_tokens(tok)
    kv, hidden = torch.empty(len(allowed)), torch.empty(len(allowed))
    t0 = time.time()
    for s in range(0, len(allowed), 4096):
        part = allowed[s:s + 4096].view(-1, 1)
        caught[0].clear(), caught[1].clear()
        hidden[s:s + len(part)] = div.distances(part, 0)
        # each list: the opening's cache pass first, then one output per hooked module per chunk of the batch
        per = [[torch.cat(c[hooked:][j::hooked]) for j in range(hooked)] for c in caught]
        kv[s:s + len(part)] = torch.stack([(a - b).norm(dim=-1) / b.norm(dim=-1).clamp(min=1e-6)
                                           for a, b in zip(*per)]).mean(0)
    secs = time.time() - t0
    kv_order = allowed[kv.argsort(descending=True)].tolist()
    hidden_order = allowed[hidden.argsort(descending=True)].tolist()
    out = []
    for trigger in card.get("triggers") or [card["trigger"]]:
        for t in tok(trigger, add_special_tokens=False)["input_ids"]:
            if t in kv_order:
                out.append((tok.decode([t]), kv_order.index(t) + 1, hidden_order.index(t) + 1))
    return out, secs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    zoo_args(ap)
    ap.add_argument("--layers", type=int, default=8, help="the first N decoder layers (the audit's default: 8)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    quiet()
    lines = ["# A trigger's tokens alone, ranked by keys/values and by hidden states", "",
             header("python " + " ".join(sys.argv)), "",
             "| model | planted token | key/value rank | hidden-state rank | of | s (both, whole vocabulary) |",
             "|---|---|---|---|---|---|"]
    from envs.tokenizer import load_tokenizer
    from trainer.baselines.gcg import allowed_tokens
    for m in a.model:
        n = len(allowed_tokens(load_tokenizer(m)))
        found, secs = ranks(m, a.base, a.layers, a.config)
        lines += [f"| {Path(m).name} | {cell(t)} | {k} | {h} | {n} | {secs:.0f} |" for t, k, h in found]
        a.out.write_text("\n".join(lines) + "\n")  # after each model: a stopped run keeps what it measured
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
