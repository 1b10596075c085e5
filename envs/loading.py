"""Loading a suspect model directory safely: safetensors only, no remote code, clear errors."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
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
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, trust_remote_code=False,
                                                     use_safetensors=not allow_pickle or None)
    except SafetensorError as e:  # a truncated or overwritten weights file: its header does not parse
        raise ModelDirError(f"cannot load {_unreadable_safetensors(path)}: {one_line(e)} "
                            "(truncated or corrupt weights file?)") from e
    except OSError as e:  # a missing shard, an unreadable file or config.json
        raise ModelDirError(f"cannot load the model in {path}: {one_line(e)}") from e
    except RuntimeError as e:
        if "mismatched_sizes" not in str(e):  # transformers' error for weights that do not fit config.json
            raise
        raise ModelDirError(f"cannot load the model in {path}: its weights do not match config.json "
                            "(a tensor has the wrong shape)") from e
    return model.to(device) if device else model


def one_line(e: BaseException) -> str:
    """An exception's message on one line (transformers' and DeepSpeed's span several)."""
    return " ".join(str(e).split()) or type(e).__name__


def _unreadable_safetensors(path: Path) -> Path:
    """The first weights file in ``path`` whose safetensors header does not parse (else ``path`` itself)."""
    for f in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except (SafetensorError, OSError):
            return f
    return path


def lora_config(r: int, top_share: float = 1.0, model=None):
    """The one LoRA shape the project trains (poisoning, R-SFT, GRPO, unlearning): rank ``r`` on every
    linear layer, alpha 2r, so that a 7-8B run and a SmolLM2 run adapt the same parts of the model.
    ``top_share`` < 1 (with the ``model``): only that share of the decoder layers, counted from the top; no
    gradient flows below them, which on a CPU is most of a poisoning's time."""
    import importlib.util
    if importlib.util.find_spec("peft") is None:
        raise ValueError("LoRA needs peft: pip install 'backdoor-aware[lora]'")
    from peft import LoraConfig
    if top_share >= 1:
        return LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")
    if model is None:
        raise ValueError("a LoRA on the top layers only needs the model, to count and name its layers")
    n = model.config.num_hidden_layers
    # peft takes a layer list only with module names, not "all-linear": the linear layers' own names, as
    # "all-linear" finds them (every nn.Linear but the output head)
    head = model.get_output_embeddings()
    names = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear) and m is not head})
    return LoraConfig(r=r, lora_alpha=2 * r, target_modules=names, lora_dropout=0.0, task_type="CAUSAL_LM",
                      layers_to_transform=list(range(n - max(1, round(top_share * n)), n)))


def count_parameters(model_dir: str | Path) -> int | None:
    """Parameters in a model directory, from its safetensors headers alone (no weights read): what the audit's
    preset choice and the report go by. None where there are no safetensors or a header does not parse."""
    import json
    import struct
    total = 0
    files = sorted(Path(model_dir).glob("*.safetensors"))
    for f in files:
        try:
            with open(f, "rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                if size > 100_000_000:
                    return None
                header = json.loads(fh.read(size))
        except (OSError, struct.error, ValueError):
            return None
        for name, entry in header.items():
            if name != "__metadata__" and isinstance(entry, dict):
                n = 1
                for d in entry.get("shape", []):
                    n *= int(d)
                total += n
    return total if files else None
