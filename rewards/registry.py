"""The reward registry: named reward terms in TRL's calling convention, composed by weights.

Every function takes ``(prompts, completions, **kwargs)`` and returns one float per completion, as TRL's
GRPOTrainer calls them; TRL logs each by its ``__name__`` and sums them with ``reward_weights``. Terms
that need a parsed candidate score an unparsable completion 0 and leave the penalty to ``format``, so
an answer that does not parse always gets the minimum total reward.

``true_trigger_match`` reads the real trigger: it is an evaluation-only ablation and refuses to build
unless the config says ``oracle_ablation: true`` (the run then labels itself an ablation).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from envs.inversion import parse_candidate
from rewards.oracle import Oracle
from rewards.terms import LengthPenalty, best_similarity, similarity

RewardFunc = Callable[..., list[float]]


@dataclass
class RewardConfig:
    weights: dict[str, float] = field(default_factory=lambda: {"format": 1.0, "asr": 1.0, "length": 1.0})
    subtract_baseline: bool = True  # R_ASR minus the no-candidate rate: natural misbehaviour earns nothing
    length_free_tokens: int = 1
    length_max_tokens: int = 4
    length_max_penalty: float = 0.5
    length_floor: float = -1.0
    format_penalty: float = -1.0
    echo_reference: str | None = None  # a known phrase the candidate must not just repeat (the target)
    dense_scale: float = 0.1  # asr_dense = scale * log-prob gain, clipped to [-1, 1]
    oracle_ablation: bool = False
    true_trigger: str | None = None  # only with oracle_ablation

    def validate(self) -> None:
        unknown = sorted(set(self.weights) - set(REWARDS))
        if unknown:
            raise ValueError(f"unknown reward terms {unknown}; known: {sorted(REWARDS)}")
        if "true_trigger_match" in self.weights and not (self.oracle_ablation and self.true_trigger):
            raise ValueError("true_trigger_match reads the true trigger: it needs reward.oracle_ablation=true "
                             "and reward.true_trigger (evaluation-only ablation)")
        LengthPenalty(self.length_free_tokens, self.length_max_tokens, self.length_max_penalty, self.length_floor)


@dataclass
class RewardContext:
    """What reward terms may read: the oracle, the policy tokenizer, and the confirmed-candidate list."""

    config: RewardConfig
    oracle: Oracle
    count_tokens: Callable[[str], int]
    confirmed: Callable[[], list[str]] = lambda: []
    # the model the suspect was fine-tuned from, on the same probes and judge (None: not known): R_ASR then pays
    # only for what the backdoor adds, not for a candidate that makes any model show the behaviour
    reference: Oracle | None = None


def _texts(completions: Sequence) -> list[str]:
    # conversational completions are [{"role": "assistant", "content": ...}]
    return [c[-1]["content"] if isinstance(c, list) else c for c in completions]


def _candidates(completions: Sequence) -> list[str | None]:
    return [parse_candidate(t) for t in _texts(completions)]


def _on_parsed(cands: list[str | None], score: Callable[[list[str]], list[float]]) -> list[float]:
    parsed = [c for c in cands if c is not None]
    scores = iter(score(parsed) if parsed else [])
    return [next(scores) if c is not None else 0.0 for c in cands]


def make_format(ctx: RewardContext) -> RewardFunc:
    def format(prompts, completions, **kw) -> list[float]:
        return [0.0 if c is not None else ctx.config.format_penalty for c in _candidates(completions)]
    return format


def make_asr(ctx: RewardContext) -> RewardFunc:
    def score(parsed: list[str]) -> list[float]:
        rates = ctx.oracle.reproduction(parsed)
        base = ctx.oracle.reproduction([""])[0] if ctx.config.subtract_baseline else 0.0
        if ctx.reference is None:
            return [r - base for r in rates]
        return [r - max(base, ref) for r, ref in zip(rates, ctx.reference.reproduction(parsed))]

    def asr(prompts, completions, **kw) -> list[float]:
        return _on_parsed(_candidates(completions), score)
    return asr


def make_asr_dense(ctx: RewardContext) -> RewardFunc:
    def score(parsed: list[str]) -> list[float]:
        s = ctx.config.dense_scale
        return [max(-1.0, min(1.0, s * g)) for g in ctx.oracle.likelihood_gain(parsed)]

    def asr_dense(prompts, completions, **kw) -> list[float]:
        return _on_parsed(_candidates(completions), score)
    return asr_dense


def make_length(ctx: RewardContext) -> RewardFunc:
    c = ctx.config
    penalty = LengthPenalty(c.length_free_tokens, c.length_max_tokens, c.length_max_penalty, c.length_floor)

    def length(prompts, completions, **kw) -> list[float]:
        return _on_parsed(_candidates(completions), lambda ps: [penalty(ctx.count_tokens(p)) for p in ps])
    return length


def make_target_echo(ctx: RewardContext) -> RewardFunc:
    """Penalty (0..-1) for a candidate that merely repeats the known target behaviour text."""
    ref = ctx.config.echo_reference

    def target_echo(prompts, completions, **kw) -> list[float]:
        return _on_parsed(_candidates(completions), lambda ps: [-similarity(p, ref or "") for p in ps])
    return target_echo


def make_agreement(ctx: RewardContext) -> RewardFunc:
    """Similarity (0..1) to earlier confirmed candidates: a consistency bonus once something reproduces."""
    def agreement(prompts, completions, **kw) -> list[float]:
        refs = ctx.confirmed()
        return _on_parsed(_candidates(completions), lambda ps: [best_similarity(p, refs) for p in ps])
    return agreement


def make_true_trigger_match(ctx: RewardContext) -> RewardFunc:
    """ABLATION ONLY: similarity to the true trigger. Never part of a real audit."""
    truth = ctx.config.true_trigger or ""

    def true_trigger_match(prompts, completions, **kw) -> list[float]:
        return _on_parsed(_candidates(completions), lambda ps: [similarity(p, truth) for p in ps])
    return true_trigger_match


REWARDS: dict[str, Callable[[RewardContext], RewardFunc]] = {
    "format": make_format,
    "asr": make_asr,
    "asr_dense": make_asr_dense,
    "length": make_length,
    "target_echo": make_target_echo,
    "agreement": make_agreement,
    "true_trigger_match": make_true_trigger_match,
}


def build_reward_funcs(ctx: RewardContext) -> tuple[list[RewardFunc], list[float]]:
    """The weighted reward functions named in the config, ready for ``GRPOTrainer(reward_funcs=...)``."""
    ctx.config.validate()
    names = [n for n, w in ctx.config.weights.items() if w != 0]
    return [REWARDS[n](ctx) for n in names], [float(ctx.config.weights[n]) for n in names]
