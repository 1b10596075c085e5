"""Greedy token accretion (after BABI, arXiv 2509.16203): a trigger built up one token at a time, with no data, no
policy and no reference model, on the frozen suspect alone.

Every allowed token (or a seeded sample of ``first_pool`` of them on a large vocabulary) is scored alone as the
trigger by the loss GCG minimises (``trainer/baselines/gcg.py``: the suspect's likelihood of the behaviour's fixed
openings on the training probes). The ``beam`` best start the beams; each round tries every beam with each of the
``extend`` best single tokens added before or after it, and keeps the ``beam`` best, up to ``max_tokens`` tokens.
Scored exactly, the first round on a real vocabulary (49k tokens) costs hours on a CPU. With ``gradient_pool`` the
one-hot gradient GCG uses ranks the whole vocabulary at a new slot in one backward pass per anchor token, and only
its best ``gradient_pool`` tokens (first round) or ``extend`` tokens (per beam and side, later rounds) are scored
exactly: a first-order guess of which tokens help, where exact scoring of a blind sample is a guess of another
kind. What it finds goes through the held-out verdict of an inversion run, as GCG's does.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from trainer.baselines.gcg import GCGTask, _Rows, allowed_tokens, one_hot_gradient, trigger_losses


@dataclass
class AccretionConfig:
    max_tokens: int = 4
    beam: int = 8
    extend: int = 32  # the best single tokens tried as each beam's next token (before or after it)
    first_pool: int = 0  # single tokens scored in the first round; 0: every allowed token
    # 0: no gradient (the first round scores first_pool tokens, later rounds the best single tokens); N: the N
    # tokens the one-hot gradient ranks best start the first round, and each beam tries its own extend best
    gradient_pool: int = 0
    anchors: int = 4  # placeholder tokens the first round's gradient is averaged over (a gradient is local)
    keep: int = 8  # distinct lowest-loss triggers handed to the verdict
    seed: int = 0
    logit_bytes: int = 1 << 31

    def validate(self) -> None:
        for name in ("max_tokens", "beam", "extend", "keep", "logit_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"accretion {name} must be >= 1, got {getattr(self, name)}")
        if self.gradient_pool < 0 or self.anchors < 1:
            raise ValueError(f"accretion gradient_pool must be >= 0 and anchors >= 1, got {self.gradient_pool} "
                             f"and {self.anchors}")
        if self.first_pool < 0:
            raise ValueError(f"accretion first_pool must be >= 0 (0: the whole vocabulary), got {self.first_pool}")


def accretion_search(model, tokenizer, task: GCGTask, cfg: AccretionConfig,
                     log: Callable[[str], None] = print) -> list[dict]:
    """The ``keep`` lowest-loss distinct triggers found, as {"candidate", "loss"}, best first."""
    cfg.validate()
    if not task.probes:
        raise ValueError("token accretion needs at least one probe prompt")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    rows = _Rows(tokenizer, task.probes, task.insertion, task.targets)
    allowed = allowed_tokens(tokenizer)
    gen = torch.Generator().manual_seed(cfg.seed)
    anchor_gen = torch.Generator().manual_seed(cfg.seed + 1)  # apart from gen: a first_pool sample stays as it was
    anchors = allowed[torch.randint(len(allowed), (cfg.anchors,), generator=anchor_gen)]
    if cfg.gradient_pool:
        pool = _gradient_best(model, rows, allowed, [a.view(1) for a in anchors], 0, cfg.gradient_pool)
    elif cfg.first_pool and cfg.first_pool < len(allowed):
        pool = allowed[torch.randperm(len(allowed), generator=gen)[:cfg.first_pool]]
    else:
        pool = allowed
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
    log(f"accretion: {len(pool)} single tokens scored{' (ranked by gradient)' if cfg.gradient_pool else ''}; best "
        f"{tokenizer.decode(beams[0].tolist()).strip()!r} loss {float(singles[order[0]]):.3f}")
    anchor = anchors[:1]
    for length in range(2, cfg.max_tokens + 1):
        grown = []
        for b in beams:
            after = _gradient_best(model, rows, allowed, [torch.cat([b, anchor])], -1, cfg.extend) \
                if cfg.gradient_pool else best_tokens
            before = _gradient_best(model, rows, allowed, [torch.cat([anchor, b])], 0, cfg.extend) \
                if cfg.gradient_pool else best_tokens
            grown += [torch.cat([b, t.view(1)]) for t in after] + [torch.cat([t.view(1), b]) for t in before]
        cands = torch.unique(torch.stack(grown), dim=0)
        losses = trigger_losses(model, rows, cands, cfg.logit_bytes)
        record(cands, losses)
        beams = cands[losses.argsort()[:cfg.beam]]
        log(f"accretion: {length} tokens, {len(cands)} candidates; best "
            f"{tokenizer.decode(beams[0].tolist()).strip()!r} loss {float(losses.min()):.3f}")
    best = sorted(seen.items(), key=lambda kv: kv[1])[:cfg.keep]
    return [{"candidate": c, "loss": round(v, 4)} for c, v in best]


def _gradient_best(model, rows: _Rows, allowed: torch.Tensor, triggers: list[torch.Tensor], slot: int,
                   n: int) -> torch.Tensor:
    """The ``n`` allowed tokens whose swap into ``slot`` lowers the loss most to first order, the gradient summed
    over ``triggers`` (the same slot filled with different anchor tokens)."""
    grad = sum(one_hot_gradient(model, rows, t)[0][slot] for t in triggers)
    scores = -grad[allowed.to(grad.device)].cpu()
    return allowed[scores.topk(min(n, len(allowed))).indices]
