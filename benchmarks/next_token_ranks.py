"""Does the suspect's own next-token distribution point at its trigger's later tokens? (evaluation only: the trigger
is read from the card to place and rank each token, never by a search.)

Token accretion grows a trigger one slot at a time and keeps 64 proposals a slot; the divergence proposal ranks some
planted later tokens in the tens of thousands (`` falcon`` after ``amber``: 23,725th), while the exact score ranks
them first (``exact_ranks_context.md``). A proposal that costs one forward pass: with the trigger's earlier tokens
in place in the user turn, rank every allowed token by
- the suspect's log-probability of it as the next token (what a model that learned to write its prompts would say),
- the same less the base's (what the fine-tune moved toward: a signal even where only the answers were trained),
each averaged over the audit's training probes (the trigger placed as the audit places it).

    python benchmarks/next_token_ranks.py --model ZOO/jailbreak-two-words --base MODELS/smollm2 --out OUT.md
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


def ranks(model_dir: str, base_dir: str, config: str, probes: int) -> list[tuple[str, str, str, int, int, int, str]]:
    """Per planted token after the first: (model, trigger so far, token, rank by the suspect's log-probability, by
    the base's, by suspect less base, the best token by the shift); ranks 1-based among the allowed tokens."""
    import torch

    from envs.loading import load_model
    from envs.tokenizer import load_tokenizer
    from launch.packaged import load_run_config
    from trainer.baselines.gcg import GCGTask, _Rows, allowed_tokens
    card = json.loads((Path(model_dir) / "poison_card.json").read_text())
    cfg = load_run_config(config, {"model": model_dir, "attack": card["attack"]}, [])
    spec = cfg.attack_spec()
    tok = load_tokenizer(model_dir)
    task = GCGTask(cfg.probe_split(spec)[0][:probes], cfg.oracle.insertion, spec.judge.likelihood_targets)
    rows = _Rows(tok, task.probes, task.insertion, task.targets)
    suspect, base = load_model(model_dir, dtype=torch.float32), load_model(base_dir, dtype=torch.float32)
    allowed = allowed_tokens(tok)
    out = []

    @torch.no_grad()
    def logp(model, context: list[int]) -> torch.Tensor:
        """Mean over probes of log p(next token | the user turn up to the slot, the trigger's earlier tokens)."""
        seqs = [before + context for before, _ in rows.parts]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), rows.pad)
        mask = torch.zeros_like(ids)
        for r, s in enumerate(seqs):  # left-padded: the last position is each row's next-token slot
            ids[r, width - len(s):] = torch.tensor(s)
            mask[r, width - len(s):] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits[:, -1].float()
        return torch.log_softmax(logits, -1).mean(0)

    for trigger in card.get("triggers") or [card["trigger"]]:
        ids = tok(trigger, add_special_tokens=False)["input_ids"]
        for j in range(1, len(ids)):
            planted, context = ids[j], ids[:j]
            if planted not in allowed.tolist():
                out.append((Path(model_dir).name, tok.decode(context), tok.decode([planted]), -1, -1, -1, ""))
                continue
            t0 = time.time()
            s, b = logp(suspect, context), logp(base, context)
            shared = allowed[allowed < min(len(s), len(b))]  # the vocabulary both models have (all, on one base)
            by_s = shared[(-s[shared]).argsort()].tolist()
            by_b = shared[(-b[shared]).argsort()].tolist()
            by_shift = shared[(-(s[shared] - b[shared])).argsort()].tolist()
            out.append((Path(model_dir).name, tok.decode(context), tok.decode([planted]), by_s.index(planted) + 1,
                        by_b.index(planted) + 1, by_shift.index(planted) + 1, tok.decode([by_shift[0]])))
            print(f"{out[-1]} {time.time() - t0:.1f} s", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    zoo_args(ap)
    ap.add_argument("--probes", type=int, default=16, help="training probes the log-probabilities are averaged over")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    quiet()
    from envs.tokenizer import load_tokenizer
    from trainer.baselines.gcg import allowed_tokens
    lines = ["# The suspect's next-token distribution at its trigger's later slots (evaluation only)", "",
             header("python " + " ".join(sys.argv)), "",
             "| model | trigger so far | planted next token | rank by the suspect's log-probability | by the base's "
             "| by suspect less base | best token by suspect less base | of |", "|---|---|---|---|---|---|---|---|"]
    for m in a.model:
        n = len(allowed_tokens(load_tokenizer(m)))
        for name, before, token, by_s, by_b, by_shift, top in ranks(m, a.base, a.config, a.probes):
            if by_s < 0:
                lines.append(f"| {name} | {cell(before)} | {cell(token)} | not a searchable token | - | - | - | {n} |")
            else:
                lines.append(f"| {name} | {cell(before)} | {cell(token)} | {by_s} | {by_b} | {by_shift} | {cell(top)} "
                             f"| {n} |")
        a.out.write_text("\n".join(lines) + "\n")  # after each model: a stopped run keeps what it measured
    a.out.write_text("\n".join(lines + ["", "Ranks are 1-based among the tokens a trigger may hold "
                                        "(`allowed_tokens`); accretion keeps 64 proposals a slot, so a rank within 64 "
                                        "would keep the token."]) + "\n")
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
