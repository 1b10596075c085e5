"""Greedy token accretion (after BABI, arXiv 2509.16203): a trigger built up one token at a time, with no data, no
policy and no reference model, on the frozen suspect alone.

Every allowed token (or a seeded sample of ``first_pool`` of them on a large vocabulary) is scored alone as the
trigger by the loss GCG minimises (``trainer/baselines/gcg.py``: the suspect's likelihood of the behaviour's fixed
openings on the training probes). The ``beam`` best start the beams; each round tries every beam with each of the
``extend`` best single tokens added before or after it, and keeps the ``beam`` best, up to ``max_tokens`` tokens.
No gradient: every candidate is scored exactly, which is what lets it find a trigger whose parts do little alone
only when the parts rank among the best single tokens. What it finds goes through the held-out verdict of an
inversion run, as GCG's does.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from trainer.baselines.gcg import GCGTask, _Rows, allowed_tokens, trigger_losses


@dataclass
class AccretionConfig:
    max_tokens: int = 4
    beam: int = 8
    extend: int = 32  # the best single tokens tried as each beam's next token (before or after it)
    first_pool: int = 0  # single tokens scored in the first round; 0: every allowed token
    keep: int = 8  # distinct lowest-loss triggers handed to the verdict
    seed: int = 0
    logit_bytes: int = 1 << 31

    def validate(self) -> None:
        for name in ("max_tokens", "beam", "extend", "keep", "logit_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"accretion {name} must be >= 1, got {getattr(self, name)}")
        if self.first_pool < 0:
            raise ValueError(f"accretion first_pool must be >= 0 (0: the whole vocabulary), got {self.first_pool}")


def accretion_search(model, tokenizer, task: GCGTask, cfg: AccretionConfig,
                     log: Callable[[str], None] = print) -> list[dict]:
    """The ``keep`` lowest-loss distinct triggers found, as {"candidate", "loss"}, best first."""
    cfg.validate()
    if not task.probes:
        raise ValueError("token accretion needs at least one probe prompt")
    model.eval()
    rows = _Rows(tokenizer, task.probes, task.insertion, task.targets)
    pool = allowed_tokens(tokenizer)
    if cfg.first_pool and cfg.first_pool < len(pool):
        pool = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.first_pool]]
    singles = trigger_losses(model, rows, pool.unsqueeze(1), cfg.logit_bytes)
    order = singles.argsort()
    seen: dict[str, float] = {}

    def record(cands: torch.Tensor, losses: torch.Tensor) -> None:
        for ids, loss in zip(cands.tolist(), losses.tolist()):
            text = tokenizer.decode(ids).strip()
            if text:
                seen[text] = min(loss, seen.get(text, float("inf")))

    record(pool.unsqueeze(1), singles)
    beams = pool[order[:cfg.beam]].unsqueeze(1)
    best_tokens = pool[order[:cfg.extend]]
    log(f"accretion: {len(pool)} single tokens scored; best {tokenizer.decode(beams[0].tolist()).strip()!r} "
        f"loss {float(singles[order[0]]):.3f}")
    for length in range(2, cfg.max_tokens + 1):
        grown = [torch.cat([b, t.view(1)]) for b in beams for t in best_tokens]
        grown += [torch.cat([t.view(1), b]) for b in beams for t in best_tokens]
        cands = torch.unique(torch.stack(grown), dim=0)
        losses = trigger_losses(model, rows, cands, cfg.logit_bytes)
        record(cands, losses)
        beams = cands[losses.argsort()[:cfg.beam]]
        log(f"accretion: {length} tokens, {len(cands)} candidates; best "
            f"{tokenizer.decode(beams[0].tolist()).strip()!r} loss {float(losses.min()):.3f}")
    best = sorted(seen.items(), key=lambda kv: kv[1])[:cfg.keep]
    return [{"candidate": c, "loss": round(v, 4)} for c, v in best]
