"""Consolidate a DeepSpeed ZeRO (2 or 3) checkpoint of a run into a plain Hugging Face model folder.

Under ZeRO-3 the weights of a checkpoint live in per-rank shards; this gathers them (DeepSpeed's own
``zero_to_fp32``) into one fp32 state dict and writes safetensors with the checkpoint's config and
tokenizer. The shards are this run's own files (DeepSpeed stores them with torch.save).
"""
from __future__ import annotations

import pickle
from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM

from envs.loading import one_line
from envs.tokenizer import load_tokenizer
from trainer.run_dir.checkpoints import save_model_atomic


def consolidate(checkpoint: str | Path, out_dir: str | Path, allow_pickle: bool = False) -> Path:
    """Write ``out_dir`` (which must not exist) atomically: a failure leaves no folder, whole or partial. DeepSpeed
    unpickles the shards: unless ``allow_pickle``, every pickle in them is first checked for globals a checkpoint
    never holds (``trainer/run_dir/pickle_scan.py``)."""
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if not checkpoint.is_dir() or not any(p.is_dir() for p in checkpoint.glob("global_step*")):
        raise ValueError(f"{checkpoint} is not a DeepSpeed checkpoint (no global_step* folder)")
    if not (checkpoint / "config.json").is_file():
        raise ValueError(f"{checkpoint} has no config.json: give a checkpoint-N folder of a run")
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new --out (nothing was overwritten)")
    if not allow_pickle:
        from trainer.run_dir.pickle_scan import check_checkpoint
        check_checkpoint(checkpoint)
    try:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    except ImportError:
        raise ValueError("consolidating needs DeepSpeed: pip install 'backdoor-aware[deepspeed]'") from None
    try:
        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))
    except (ValueError, KeyError, OSError, EOFError, pickle.UnpicklingError) as e:  # missing or corrupt shards
        raise ValueError(f"cannot read the DeepSpeed checkpoint {checkpoint}: {one_line(e)}") from e
    except RuntimeError as e:
        if "PytorchStreamReader" not in str(e):  # torch.load's error for a truncated shard
            raise
        raise ValueError(f"cannot read the DeepSpeed checkpoint {checkpoint}: a shard is truncated or corrupt "
                         f"({one_line(e)})") from e
    try:
        config = AutoConfig.from_pretrained(checkpoint)
        tokenizer = load_tokenizer(checkpoint)
    except OSError as e:
        raise ValueError(f"cannot read the config or tokenizer of {checkpoint}: {one_line(e)}") from e
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if getattr(model.config, "tie_word_embeddings", False) and "lm_head" in k}
    if set(missing) - tied or unexpected:
        raise ValueError(f"checkpoint does not match its config: missing {sorted(set(missing) - tied)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    if out_dir.exists():  # made while gathering: still never overwritten
        raise FileExistsError(f"{out_dir} already exists; choose a new --out (nothing was overwritten)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    save_model_atomic(model, tokenizer, out_dir)
    return out_dir
