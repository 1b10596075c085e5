"""No-RL baselines, judged by exactly the same held-out verdict as an inversion run.

- ``rsft-only``: R-SFT, then ask the model; the paper's warm-up on its own (it fails on ~8B models).
- ``sampling``: ask the untouched suspect model ``n`` times and keep the best answer.
- ``gcg``: white-box gradient token search on the suspect model's likelihood of the behaviour
  (``trainer/baselines/gcg.py``), on the same training probes a GRPO run is rewarded on.
All pick among their candidates (greedy answer and ``n`` samples; GCG's lowest-loss triggers) by held-out
reproduction, then length (``choose_trigger``), so a gap to a GRPO run is the RL's
contribution, not a kinder judge.
"""
from __future__ import annotations

import time
from dataclasses import asdict

import torch

from envs.loading import check_model_dir, load_model
from envs.tokenizer import load_tokenizer
from trainer.baselines.gcg import GCGConfig, gcg_search
from trainer.config import RunConfig
from trainer.oracles import SuspectOracles
from trainer.rsft import rsft_stage
from trainer.run_dir.result import RunResult
from trainer.verdict.evaluate import evaluate_policy, held_out_verdict
from trainer.verdict.ledger import CandidateLedger

BASELINES = ("rsft-only", "sampling", "gcg")


def run_baseline(cfg: RunConfig, kind: str, n_samples: int = 64, eval_trigger: str | list[str] | None = None,
                 log=print, gcg: GCGConfig | None = None) -> RunResult:
    if kind not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {kind!r}")
    t0 = time.time()
    cfg.validate()
    torch.manual_seed(cfg.seed)
    check_model_dir(cfg.model.path, cfg.model.allow_pickle)
    spec = cfg.attack_spec()
    tok = load_tokenizer(cfg.model.path)
    device = "cuda" if torch.cuda.is_available() else None  # as a run places its models: GCG is a GPU job
    oracles = SuspectOracles(cfg, spec, tok, device)
    if kind == "gcg":
        result = _run_gcg(cfg, spec, tok, oracles, gcg or GCGConfig(seed=cfg.seed), eval_trigger, log)
    else:
        policy = load_model(cfg.model.path, cfg.model.allow_pickle, dtype=cfg.torch_dtype(), device=device)
        probes, heldout = cfg.probe_split(spec)
        if kind == "rsft-only":
            policy, _ = rsft_stage(policy, tok, cfg, set(probes) | set(heldout), log)
        ledger = CandidateLedger(threshold=cfg.audit.found_threshold)
        result = evaluate_policy(cfg.replace(awareness_k=n_samples, rsft=kind == "rsft-only"), spec, policy, tok,
                                 oracles, ledger, heldout, 0, eval_trigger)
        result.samples = n_samples
    result.baseline = kind
    result.wall_seconds = round(time.time() - t0, 1)
    return result


def _run_gcg(cfg: RunConfig, spec, tok, oracles: SuspectOracles, gcfg: GCGConfig, eval_trigger,
             log) -> RunResult:
    probes, heldout = cfg.probe_split(spec)
    found = gcg_search(oracles.model, tok, probes, cfg.oracle.insertion, spec.judge.likelihood_targets, gcfg, log)
    pool = [f["candidate"] for f in found]
    result = held_out_verdict(cfg.replace(rsft=False), spec, tok, oracles, pool, pool[:cfg.eval.awareness_k],
                              pool[0] if pool else None, CandidateLedger(threshold=cfg.audit.found_threshold), heldout,
                              gcfg.steps, eval_trigger)
    result.samples = len(pool)
    result.gcg = asdict(gcfg)
    result.gcg_best = found
    return result
