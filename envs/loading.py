"""Loading a suspect model directory safely: safetensors only, no remote code, clear errors."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel


class ModelDirError(ValueError):
    """The model directory is missing or unusable (printed as one line by the CLI)."""


def check_model_dir(model_dir: str | Path, allow_pickle: bool = False) -> Path:
    path = Path(model_dir)
    if not str(model_dir):
        raise ModelDirError("no model directory given (--model)")
    if not path.is_dir():
        raise ModelDirError(f"model directory {path} does not exist")
    if not (path / "config.json").is_file():
        raise ModelDirError(f"{path} is not a Hugging Face model directory (no config.json)")
    has_st = any(path.glob("*.safetensors"))
    has_pickle = any(path.glob("*.bin")) or any(path.glob("*.pt"))
    if not has_st:
        if has_pickle and not allow_pickle:
            raise ModelDirError(f"{path} holds only pickle weights (.bin); they can run code when loaded. "
                                "Convert to safetensors or pass --allow-pickle if you trust the file")
        if not has_pickle:
            raise ModelDirError(f"{path} has no weights (*.safetensors)")
    return path


def load_model(model_dir: str | Path, allow_pickle: bool = False, dtype: torch.dtype = torch.float32,
               device: str | None = None) -> PreTrainedModel:
    path = check_model_dir(model_dir, allow_pickle)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, trust_remote_code=False,
                                                 use_safetensors=not allow_pickle or None)
    return model.to(device) if device else model
