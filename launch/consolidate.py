"""Consolidate a DeepSpeed ZeRO (2 or 3) checkpoint of a run into a plain Hugging Face model folder.

Under ZeRO-3 the weights of a checkpoint live in per-rank shards; this gathers them (DeepSpeed's own
``zero_to_fp32``) into one fp32 state dict and writes safetensors with the checkpoint's config and
tokenizer. The shards are this run's own files (DeepSpeed stores them with torch.save).
"""
from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM

from envs.tokenizer import load_tokenizer
from trainer.checkpoints import save_model_atomic


def consolidate(checkpoint: str | Path, out_dir: str | Path) -> Path:
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if not any(checkpoint.glob("global_step*")):
        raise ValueError(f"{checkpoint} is not a DeepSpeed checkpoint (no global_step* folder)")
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new --out (nothing was overwritten)")
    try:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    except ImportError:
        raise ValueError("consolidating needs DeepSpeed: pip install 'backdoor-aware[deepspeed]'") from None
    state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(checkpoint))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {k for k in missing if getattr(model.config, "tie_word_embeddings", False) and "lm_head" in k}
    if set(missing) - tied or unexpected:
        raise ValueError(f"checkpoint does not match its config: missing {sorted(set(missing) - tied)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    save_model_atomic(model, load_tokenizer(checkpoint), out_dir)
    return out_dir
