"""No-RL baselines, judged by exactly the same held-out verdict as an inversion run.

- ``rsft-only``: R-SFT, then ask the model; the paper's warm-up on its own (it fails on ~8B models).
- ``sampling``: ask the untouched suspect model ``n`` times and keep the best answer.
- ``gcg``: white-box gradient token search on the suspect model's likelihood of the behaviour
  (``trainer/gcg.py``), on the same training probes a GRPO run is rewarded on.
All pick among their candidates (greedy answer and ``n`` samples; GCG's lowest-loss triggers) by held-out
reproduction plus the length penalty (``choose_trigger``), so a gap to a GRPO run is the RL's
contribution, not a kinder judge.
"""
from __future__ import annotations

import time
from dataclasses import asdict, replace

import torch

from envs.loading import check_model_dir, load_model
from envs.tokenizer import load_tokenizer
from trainer.config import RunConfig
from trainer.gcg import GCGConfig, gcg_search
from trainer.ledger import CandidateLedger
from trainer.rsft import read_finetune_rows, run_rsft
from trainer.run import evaluate_policy, held_out_verdict, run_probes, run_spec

BASELINES = ("rsft-only", "sampling", "gcg")


def run_baseline(cfg: RunConfig, kind: str, n_samples: int = 64, eval_trigger: str | list[str] | None = None,
                 log=print, gcg: GCGConfig | None = None) -> dict:
    if kind not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {kind!r}")
    t0 = time.time()
    cfg.validate()
    torch.manual_seed(cfg.seed)
    check_model_dir(cfg.model, cfg.allow_pickle)
    spec = run_spec(cfg)
    tok = load_tokenizer(cfg.model)
    if kind == "gcg":
        result = _run_gcg(cfg, spec, tok, gcg or GCGConfig(seed=cfg.seed), eval_trigger, log)
        result.update({"baseline": kind, "wall_seconds": round(time.time() - t0, 1)})
        return result
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


def _run_gcg(cfg: RunConfig, spec, tok, gcfg: GCGConfig, eval_trigger, log) -> dict:
    oracle_model = load_model(cfg.model, cfg.allow_pickle)
    probes, heldout = run_probes(cfg, spec)
    found = gcg_search(oracle_model, tok, probes, cfg.insertion, spec.judge.likelihood_targets, gcfg, log)
    pool = [f["candidate"] for f in found]
    result = held_out_verdict(replace(cfg, rsft=False), spec, tok, oracle_model, pool, pool[:cfg.awareness_k],
                              pool[0] if pool else None, CandidateLedger(threshold=cfg.found_threshold), heldout,
                              gcfg.steps, eval_trigger)
    result.update({"samples": len(pool), "gcg": asdict(gcfg), "gcg_best": found})
    return result
