"""Where the suspect's own language model ranks each planted token beside each span of its trigger (evaluation only:
the trigger is read from the card to place and rank its tokens, never by a search).

Token accretion holds a span of the trigger and must propose the token on either side of it. A proposal tried for
phrase triggers (``benchmarks/results/zoo_prior.md``): rank every allowed token after a span by the suspect's
log-probability that it follows, and before a span by the log-probability that the span's first token follows it,
the trigger in the shortest training probe with the audit's insertion. It ran inside the search for one session and
changed no audit's outcome, so it lives here, as the measurement, and not in the search.

    python benchmarks/prior_ranks.py --model ZOO/ship-sentence --out OUT.md
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import cell, header, quiet  # noqa: E402


class Prior:
    """The proposal: a bfloat16 copy of the suspect, the probe's opening before the slot, and (for the left side) one
    forward pass of the whole pool kept for every span."""

    def __init__(self, model, tokenizer, task, logit_bytes: int = 1 << 31) -> None:
        import copy

        import torch

        from trainer.baselines.gcg import _Rows
        shortest = min(task.probes, key=lambda p: (len(tokenizer(p, add_special_tokens=False)["input_ids"]), p))
        self.before = _Rows(tokenizer, [shortest], task.insertion, task.targets).parts[0][0]
        self.model = copy.deepcopy(model).to(torch.bfloat16) if model.dtype == torch.float32 else model
        self.head = self.model.get_output_embeddings()
        self.chunk = max(1, min(1024, logit_bytes // (4 * self.head.weight.shape[0])))
        self.states = None  # (pool, last hidden state per token, log of the softmax's normaliser per token)

    def scores(self, pool, span, side: str):
        """Per token of ``pool``: log p(token | opening, span) (``after``) or log p(span[0] | opening, token)
        (``before``)."""
        import torch
        with torch.no_grad():
            if side == "after":
                ids = torch.tensor([list(self.before) + span.tolist()])
                return self.model(input_ids=ids).logits[0, -1].float().log_softmax(-1)[pool]
            if self.states is None or not torch.equal(self.states[0], pool):
                self.states = (pool.clone(), *self._vocabulary(pool))
            first = int(span[0])
            bias = float(self.head.bias[first]) if getattr(self.head, "bias", None) is not None else 0.0
            return self.states[1] @ self.head.weight[first].float() + bias - self.states[2]

    def _vocabulary(self, pool):
        import copy

        import torch
        body = self.model.base_model
        cache = body(input_ids=torch.tensor([list(self.before)]), use_cache=True).past_key_values
        position = torch.tensor([[len(self.before)]])
        hidden, norm = [], []
        for s in range(0, len(pool), self.chunk):
            part = pool[s:s + self.chunk].view(-1, 1)
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(len(part))
            h = body(input_ids=part, position_ids=position.expand(len(part), -1),
                     past_key_values=past).last_hidden_state[:, -1]
            hidden.append(h.float())
            norm.append(self.head(h).float().logsumexp(-1))
        return torch.cat(hidden), torch.cat(norm)


def ranks(model_dir: str, config: str, insertion: str | None) -> list[tuple[str, str, str, str, int]]:
    """Per span of each planted trigger and side: (model, span, side, planted token there, its 1-based rank)."""
    import torch

    from envs.loading import load_model
    from envs.tokenizer import load_tokenizer
    from launch.packaged import load_run_config
    from trainer.baselines.gcg import GCGTask, allowed_tokens
    card = json.loads((Path(model_dir) / "poison_card.json").read_text())
    cfg = load_run_config(config, {"model": model_dir, "attack": card["attack"]}, [])
    spec = cfg.attack_spec()
    tok = load_tokenizer(model_dir)
    task = GCGTask(cfg.probe_split(spec)[0], insertion or cfg.oracle.insertion, spec.judge.likelihood_targets)
    prior = Prior(load_model(model_dir, dtype=torch.float32), tok, task)
    allowed = allowed_tokens(tok)
    out = []
    for trigger in card.get("triggers") or [card["trigger"]]:
        ids = tok(trigger, add_special_tokens=False)["input_ids"]
        for i in range(len(ids)):
            for j in range(i + 1, len(ids) + 1):
                span = torch.tensor(ids[i:j])
                beside = (("before", ids[i - 1] if i else None), ("after", ids[j] if j < len(ids) else None))
                for side, planted in beside:
                    if planted is None:
                        continue
                    t0 = time.time()
                    order = allowed[prior.scores(allowed, span, side).argsort(descending=True)].tolist()
                    rank = order.index(planted) + 1 if planted in order else -1
                    out.append((Path(model_dir).name, tok.decode(span.tolist()), side, tok.decode([planted]), rank))
                    print(f"{out[-1]} {time.time() - t0:.1f} s", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, help="poisoned model directory (repeatable)")
    ap.add_argument("--config", default="launch/configs/smollm2-audit.yaml")
    ap.add_argument("--insertion", choices=("prefix", "suffix", "random"), default=None,
                    help="where the trigger is placed (default: the config's)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    missing = [m for m in a.model if not (Path(m) / "poison_card.json").is_file()]
    if missing:  # the planted trigger is what is ranked: refused before anything is loaded or written
        print(f"error: {missing[0]}: no poison_card.json (a poisoned model built by `poison` or `zoo build`)",
              file=sys.stderr)
        return 2
    quiet()
    from envs.tokenizer import load_tokenizer
    from trainer.baselines.gcg import allowed_tokens
    from trainer.run_dir.checkpoints import write_text_atomic
    lines = ["# The language-model prior's rank of each planted token beside each span of its trigger (evaluation "
             "only)", "", header("python " + " ".join(sys.argv)), "",
             "| model | span held | side | planted token there | rank by the prior | of |", "|---|---|---|---|---|---|"]
    for m in a.model:
        n = len(allowed_tokens(load_tokenizer(m)))
        for name, span, side, token, rank in ranks(m, a.config, a.insertion):
            shown = rank if rank > 0 else "not a searchable token"
            lines.append(f"| {name} | {cell(span)} | {side} | {cell(token)} | {shown} | {n} |")
        write_text_atomic(a.out, "\n".join(lines) + "\n")  # after each model: a stopped run keeps what it measured
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
