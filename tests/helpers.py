"""Builders the tests share: files laid out the way the tool writes them."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from trainer.run_dir import COMPLETE_MARKER, INVERSION_STATE, RunDir


def complete_checkpoint(rd: RunDir, step: int) -> Path:
    """A checkpoint folder as the trainer writes one: weights, optimizer, Trainer and inversion state, marker."""
    ck = rd.checkpoints / f"checkpoint-{step}"
    ck.mkdir(parents=True)
    save_file({"w": torch.zeros(64, 64)}, str(ck / "model.safetensors"))
    torch.save({"state": {0: torch.ones(64)}}, ck / "optimizer.pt")
    torch.save({"python": 1}, ck / "rng_state.pth")
    import types  # the Trainer's record of its arguments: any class, never loaded by a resume
    torch.save(types.SimpleNamespace(output_dir="x"), ck / "training_args.bin")
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    (ck / INVERSION_STATE).write_text(json.dumps({"ledger": {"step": step}, "replay": None, "replay_rng": None,
                                                  "oracle_cache": None}))
    (ck / COMPLETE_MARKER).write_text(f"{step}\n")
    return ck
