"""What a run audited and with what: the lines a report needs so that a reader can tell which model, judge,
probes and data a verdict is about, and which release, machine and date produced it."""
from __future__ import annotations

import datetime
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from envs.attacks import AttackSpec
from envs.loading import count_parameters
from trainer.config import RunConfig
from trainer.rsft_sources import FINETUNE_FILE, parse_source, resolve_source


def tool_version() -> str:
    try:
        return metadata.version("backdoor-aware")
    except metadata.PackageNotFoundError:  # a checkout on PYTHONPATH without `pip install -e .`
        return "unknown (not installed)"


def machine() -> str:
    import torch
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {device}, torch {torch.__version__}"


def data_used(cfg: RunConfig) -> str:
    method = cfg.audit.method
    if method == "data-scan":
        return f"{cfg.rsft.data or Path(cfg.model.path) / FINETUNE_FILE} (the data scan)"
    if method != "grpo":
        return f"none: model-only ({method} reads no data)"
    if not cfg.rsft.enabled:
        return "none (no R-SFT)"
    source = resolve_source(cfg.rsft.source, cfg.model.path, cfg.rsft.data)
    if "finetune" not in parse_source(source):
        return f"none: model-only R-SFT rows ({source})"
    return f"{cfg.rsft.data or Path(cfg.model.path) / FINETUNE_FILE} ({source})"


def provenance(cfg: RunConfig, spec: AttackSpec, n_train: int, n_heldout: int) -> dict[str, Any]:
    probes = (f"{cfg.oracle.probes_file} (the user's)" if cfg.oracle.probes_file else
              f"built-in {cfg.resolved_probe_set()} {spec.probe_kind} requests")
    return {
        "model": cfg.model.path, "model_source": cfg.model.source or None, "n_params": count_parameters(cfg.model.path),
        "reference_model": cfg.model.reference,
        "judge": cfg.judge or f"the {spec.name} recipe's", "behaviour": spec.target,
        "probes": f"{probes}: {n_train} training, {n_heldout} held out", "data": data_used(cfg),
        "preset": cfg.preset, "seed": cfg.seed, "tool_version": tool_version(), "machine": machine(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
