"""Files shipped inside the ``launch`` package (package data in pyproject.toml): the YAML presets, the
DeepSpeed configs, the Slurm script and the GPU check. Found the same way from a checkout and from an
installed wheel, where the repo-relative paths the docs use (``launch/deepspeed/zero2.json``) do not exist.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
CONFIGS = ROOT / "configs"
DEEPSPEED = ROOT / "deepspeed"
SLURM_SCRIPT = ROOT / "slurm" / "train.sbatch"
SCAN_SCRIPT = ROOT / "slurm" / "scan.sbatch"
ZOOS = ROOT / "zoos"
GPU_CHECK = ROOT / "gpu_check.sh"


def resolve_deepspeed(value: str | None) -> str | None:
    """The DeepSpeed config a ``deepspeed:`` value names: an existing file path is kept as given (relative
    to the working directory, as before); otherwise a shipped config named ``zero2``, ``zero3.json`` or
    ``<anything>/deepspeed/zero2.json`` (the repo path the presets and the Slurm script use, or a saved
    config's path into another install) becomes the absolute path of the packaged file. Anything else is
    returned unchanged, so that the trainer still reports it as not found."""
    if not value or Path(value).is_file():
        return value
    p = Path(value)
    if p.parent != Path(".") and p.parent.name != "deepspeed":
        return value
    shipped = DEEPSPEED / (p.name if p.suffix == ".json" else p.name + ".json")
    return str(shipped) if shipped.is_file() else value


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def find_config(value: str | Path) -> Path:
    """A ``--config`` value as a file: an existing path as given, else a shipped preset by bare name
    (``smollm2-audit`` or ``smollm2-audit.yaml``, also the repo path ``launch/configs/NAME.yaml`` from outside
    the checkout); a one-line error that lists the presets otherwise."""
    p = Path(value)
    if p.is_file():
        return p
    shipped = CONFIGS / (p.name if p.suffix in (".yaml", ".yml") else p.name + ".yaml")
    if (p.parent == Path(".") or p.parent.name == "configs") and shipped.is_file():
        return shipped
    from trainer.config import ConfigError
    raise ConfigError(f"config {value} is neither a file nor a shipped preset; presets: {', '.join(preset_names())}")


def find_zoo(value: str | Path) -> Path:
    """A zoo spec: an existing path as given, else a shipped one by bare name (``smollm2``)."""
    p = Path(value)
    if p.is_file():
        return p
    shipped = ZOOS / (p.name if p.suffix in (".yaml", ".yml") else p.name + ".yaml")
    if p.parent == Path(".") and shipped.is_file():
        return shipped
    names = ", ".join(sorted(z.stem for z in ZOOS.glob("*.yaml")))
    raise FileNotFoundError(f"zoo spec {value} is neither a file nor a shipped spec; shipped: {names}")


def preset_label(value: str | Path) -> str:
    """How a run records the config it started from: a shipped preset by name, any other file by its path."""
    p = find_config(value)
    return p.stem if p.resolve().parent == CONFIGS.resolve() else str(p.resolve())


def load_run_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                    sets: list[str] | None = None):
    """``trainer.config.load_config`` with ``path`` a file or a preset name, and the ``deepspeed:`` value resolved
    against the shipped configs (the trainer does not know where the launch files live)."""
    from trainer.config import load_config
    cfg = load_config(find_config(path) if path is not None else None, overrides, sets)
    cfg.grpo.deepspeed = resolve_deepspeed(cfg.grpo.deepspeed)
    return cfg
