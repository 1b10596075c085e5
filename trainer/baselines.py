"""No-RL baselines, judged by exactly the same held-out verdict as an inversion run.

- ``rsft-only``: R-SFT, then ask the model; the paper's warm-up on its own (it fails on ~8B models).
- ``sampling``: ask the untouched suspect model ``n`` times and keep the best answer.
Both pick among the greedy answer and ``n`` samples by held-out reproduction plus the length penalty
(``choose_trigger``), so a gap to a GRPO run is the RL's contribution, not a kinder judge.
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch

from envs.attacks import get_attack
from envs.loading import check_model_dir, load_model
from envs.tokenizer import load_tokenizer
from trainer.config import RunConfig
from trainer.ledger import CandidateLedger
from trainer.rsft import read_finetune_rows, run_rsft
from trainer.run import evaluate_policy, run_probes

BASELINES = ("rsft-only", "sampling")


def run_baseline(cfg: RunConfig, kind: str, n_samples: int = 64, eval_trigger: str | list[str] | None = None,
                 log=print) -> dict:
    if kind not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {kind!r}")
    t0 = time.time()
    cfg.validate()
    torch.manual_seed(cfg.seed)
    check_model_dir(cfg.model, cfg.allow_pickle)
    spec = get_attack(cfg.attack).with_overrides(target=cfg.target)
    tok = load_tokenizer(cfg.model)
    policy = load_model(cfg.model, cfg.allow_pickle)
    if kind == "rsft-only":
        rows = read_finetune_rows(cfg.rsft_data or f"{cfg.model}/finetune_data.jsonl")
        policy = run_rsft(policy, tok, rows, epochs=cfg.rsft_epochs, lr=cfg.rsft_lr, batch_size=cfg.rsft_batch_size,
                          max_samples=cfg.rsft_max_samples, seed=cfg.seed, use_cpu=not torch.cuda.is_available(),
                          lora_r=cfg.lora_r if cfg.use_lora else None, log=log)
    _, heldout = run_probes(cfg, spec)
    result = evaluate_policy(replace(cfg, awareness_k=n_samples, rsft=kind == "rsft-only"), spec, policy, tok,
                             load_model(cfg.model, cfg.allow_pickle), CandidateLedger(threshold=cfg.found_threshold),
                             heldout, 0, eval_trigger)
    result.update({"baseline": kind, "samples": n_samples, "wall_seconds": round(time.time() - t0, 1)})
    return result
