"""One inversion run, top to bottom: load, check the judge, R-SFT, GRPO, evaluate, write the run dir.

A run directory holds everything needed to inspect or resume it: config.yaml, metrics.jsonl,
ledger.json, reward.png, result.json, checkpoints/ (TRL's, resumable) and final/ (the trained policy).
"""
from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import PartialState
from datasets import Dataset
from transformers.trainer_callback import PrinterCallback
from trl import GRPOConfig

from envs.attacks import AttackSpec, get_attack
from envs.chat import inversion_text
from envs.inversion import parse_candidate
from envs.loading import check_model_dir, load_model
from envs.tokenizer import default_probe_set, load_tokenizer
from rewards.oracle import HFOracle
from rewards.registry import RewardContext, build_reward_funcs
from rewards.terms import LengthPenalty, similarity
from trainer.checkpoints import save_model_atomic, write_json_atomic, write_text_atomic
from trainer.config import ConfigError, RunConfig
from trainer.evaluate import articulate, awareness, choose_trigger, distinct_triggers, jaccard_chars, jaccard_words
from trainer.grpo import InversionGRPOTrainer, RunLogCallback, StopOnSignal, is_complete_checkpoint
from trainer.ledger import CandidateLedger
from trainer.plots import plot_run
from trainer.replay import ReplayBuffer
from trainer.rsft import read_finetune_rows, run_rsft


class RunError(RuntimeError):
    """The run cannot proceed (bad input); printed as one line."""


class RunInterrupted(RuntimeError):
    """A signal stopped the run after a checkpoint was saved; ``--resume`` continues it."""

    def __init__(self, run_dir: Path, step: int, signum: int):
        super().__init__(f"interrupted by signal {signum} at step {step}; checkpoint saved. Continue with: "
                         f"backdoor-aware invert --resume --out {run_dir}")
        self.signum = signum


def make_probes(spec: AttackSpec, n: int, seed: int, exclude: set[str] = frozenset(),
                probe_set: str = "synthetic") -> list[str]:
    """``n`` distinct clean probes of the attack's kind (held-out sets exclude the training probes)."""
    rng = random.Random(seed)
    probes: list[str] = []
    for _ in range(100 * n):
        p = spec.probe(rng, probe_set)
        if p not in exclude and p not in probes:
            probes.append(p)
        if len(probes) == n:
            break
    return probes


def run_probe_set(cfg: RunConfig) -> str:
    return default_probe_set(cfg.model) if cfg.probe_set == "auto" else cfg.probe_set


def run_spec(cfg: RunConfig) -> AttackSpec:
    """The attack as the run judges it: the user's behaviour target, on the run's probe set."""
    return get_attack(cfg.attack).with_overrides(target=cfg.target).for_probe_set(run_probe_set(cfg))


def run_probes(cfg: RunConfig, spec: AttackSpec) -> tuple[list[str], list[str]]:
    """The run's training probes and its disjoint held-out probes, from the configured probe set."""
    probe_set = run_probe_set(cfg)
    probes = make_probes(spec, cfg.n_probes, cfg.seed, probe_set=probe_set)
    return probes, make_probes(spec, cfg.n_heldout_probes, cfg.seed + 1, exclude=set(probes), probe_set=probe_set)


def token_counter(tok) -> Callable[[str], int]:
    """Candidate length in the policy's own tokens (what R_Length is defined on)."""
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def _latest_checkpoint(run_dir: Path, log: Callable[[str], None] = print) -> str | None:
    """The newest *complete* checkpoint; a half-written one (no trainer_state.json) is skipped."""
    ckpts = sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    for ckpt in reversed(ckpts):
        if is_complete_checkpoint(ckpt):
            return str(ckpt)
        log(f"warning: skipping incomplete checkpoint {ckpt} (never loaded)")
    return None


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop log lines past the checkpoint a run resumes from, so every step is logged once."""
    if path.is_file():
        rows = [line for line in path.read_text().splitlines() if line.strip()]
        keep = [line for line in rows if json.loads(line)["step"] <= last_step]
        write_text_atomic(path, "".join(line + "\n" for line in keep))


def invert(cfg: RunConfig, run_dir: str | Path, eval_trigger: str | list[str] | None = None, resume: bool = False,
           log: Callable[[str], None] = print) -> dict:
    t0 = time.time()
    run_dir = Path(run_dir)
    # one process, or every rank under torchrun/accelerate (initialises the group; gloo on CPU)
    dist = PartialState(cpu=not torch.cuda.is_available())
    main = dist.is_main_process
    if not main:
        log = lambda s: None  # noqa: E731  (one voice per run)
    if run_dir.exists() and not resume:
        raise RunError(f"run directory {run_dir} already exists; pass --resume to continue it or choose a new --out")
    if resume and not (run_dir / "config.yaml").is_file():
        raise RunError(f"cannot resume: {run_dir} has no config.yaml")
    cfg.validate()
    try:
        spec = run_spec(cfg)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    import importlib.util
    if cfg.use_vllm and importlib.util.find_spec("vllm") is None:
        raise ConfigError("use_vllm=true needs vLLM: pip install 'backdoor-aware[vllm]' on a CUDA machine "
                          "(or set use_vllm=false for HF generate)")
    if cfg.deepspeed:
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError("deepspeed config given but DeepSpeed is not installed: pip install "
                              "'backdoor-aware[deepspeed]'")
        if not Path(cfg.deepspeed).is_file():
            raise ConfigError(f"deepspeed config {cfg.deepspeed} not found")
    world = dist.num_processes
    if (cfg.prompts_per_step * cfg.num_generations) % world:
        raise ConfigError(f"prompts_per_step x num_generations = {cfg.prompts_per_step * cfg.num_generations} "
                          f"rollouts per step do not divide over {world} processes")
    dist.wait_for_everyone()  # every rank has checked the run dir before rank 0 creates it
    torch.manual_seed(cfg.seed)
    use_cpu = not torch.cuda.is_available()
    device = str(dist.device)

    check_model_dir(cfg.model, cfg.allow_pickle)
    tok = load_tokenizer(cfg.model)
    behaviour = spec.target
    probes, heldout = run_probes(cfg, spec)
    if cfg.oracle_backend == "http":
        from rewards.oracle_http import HTTPOracle
        oracle_model = None  # no frozen copy in this process; evaluation loads one on rank 0 only
        oracle = HTTPOracle(cfg.oracle_url, cfg.model, tok, spec.judge, probes, cfg.insertion,
                            cfg.oracle_max_new_tokens, cfg.oracle_timeout, cfg.oracle_retries)
    else:
        oracle_model = load_model(cfg.model, cfg.allow_pickle, device=device)
        oracle = HFOracle(oracle_model, tok, spec.judge, probes, cfg.insertion, cfg.oracle_max_new_tokens,
                          cfg.oracle_batch_size)
    base = oracle.baseline_rate()
    if base > cfg.max_baseline_rate:
        raise RunError(f"the {spec.name} judge already fires on {base:.0%} of clean probes with no trigger; "
                       "its reward would be meaningless (check --attack/--target)")
    log(f"oracle: {len(probes)} probes, behaviour rate without trigger {base:.2f}")

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            cfg.save(run_dir / "config.yaml")
    dist.wait_for_everyone()
    ledger = CandidateLedger(threshold=cfg.found_threshold)
    ledger_path = run_dir / "ledger.json"
    checkpoint = _latest_checkpoint(run_dir, log) if resume else None
    if checkpoint:
        log(f"resuming from {checkpoint}")
        if main:
            _truncate_metrics(run_dir / "metrics.jsonl", int(checkpoint.rsplit("-", 1)[-1]))

    policy = load_model(cfg.model, cfg.allow_pickle, device=device)
    if cfg.rsft and checkpoint is None:
        rows = read_finetune_rows(cfg.rsft_data or Path(cfg.model) / "finetune_data.jsonl")
        policy = run_rsft(policy, tok, rows, epochs=cfg.rsft_epochs, lr=cfg.rsft_lr, batch_size=cfg.rsft_batch_size,
                          max_samples=cfg.rsft_max_samples, seed=cfg.seed, use_cpu=use_cpu,
                          lora_r=cfg.lora_r if cfg.use_lora else None, log=log)

    replay = ReplayBuffer(cfg.replay_threshold, cfg.replay_size) if cfg.replay else None
    count_tokens = token_counter(tok)
    rcfg = cfg.reward
    if rcfg.echo_reference is None:
        rcfg.echo_reference = behaviour
    ctx = RewardContext(rcfg, oracle, count_tokens, confirmed=lambda: list(replay.entries) if replay else [])
    funcs, weights = build_reward_funcs(ctx)
    if rcfg.oracle_ablation:
        log("ABLATION RUN: a reward reads the true trigger; results are not an audit")

    prompt = inversion_text(tok, behaviour)
    batch = cfg.prompts_per_step * cfg.num_generations // world  # per process; TRL groups span ranks
    dataset = Dataset.from_dict({"prompt": [prompt] * max(64, cfg.prompts_per_step)})
    args = GRPOConfig(
        output_dir=str(run_dir / "checkpoints"), max_steps=cfg.steps, learning_rate=cfg.learning_rate,
        per_device_train_batch_size=batch, num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, top_k=cfg.top_k,
        beta=cfg.beta, scale_rewards=cfg.scale_rewards, reward_weights=weights, seed=cfg.seed,
        logging_steps=1, save_steps=cfg.save_steps, save_total_limit=2, report_to="none",
        use_cpu=use_cpu, bf16=False, lr_scheduler_type="constant", disable_tqdm=True,
        deepspeed=cfg.deepspeed, use_vllm=cfg.use_vllm, vllm_mode=cfg.vllm_mode,
        vllm_server_host=cfg.vllm_server_host, vllm_server_port=cfg.vllm_server_port,
        vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
    )

    def save_state(step: int) -> None:
        if main:
            write_json_atomic(ledger_path, ledger.state_dict())

    callback = RunLogCallback(run_dir, ledger, cfg.early_stop_fraction, cfg.early_stop_patience, save_state, log)
    stopper = StopOnSignal()
    peft_config = None
    if cfg.use_lora:
        from peft import LoraConfig
        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=2 * cfg.lora_r, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    trainer = InversionGRPOTrainer(
        model=policy, reward_funcs=funcs, args=args, train_dataset=dataset, processing_class=tok,
        callbacks=[callback, stopper], peft_config=peft_config, oracle=oracle, ledger=ledger, replay=replay,
        replay_per_group=cfg.replay_per_group, seed=cfg.seed,
    )
    if checkpoint:
        trainer.load_inversion_state(checkpoint)  # ledger, replay buffer and its RNG, oracle cache
    trainer.remove_callback(PrinterCallback)  # the run log prints a concise line instead
    trainer.train(resume_from_checkpoint=checkpoint)
    steps_done = trainer.state.global_step
    save_state(steps_done)
    if stopper.signal is not None:
        raise RunInterrupted(run_dir, steps_done, stopper.signal)
    if not main:  # rank 0 saves, evaluates and reports
        return {"rank": dist.process_index, "steps": steps_done}
    if oracle_model is None:
        oracle_model = load_model(cfg.model, cfg.allow_pickle, device=device)
    policy = trainer.model.merge_and_unload() if cfg.use_lora else trainer.model
    save_model_atomic(policy, tok, run_dir / "final", extra=lambda d: cfg.save(d / "config.yaml"))

    result = evaluate_policy(cfg, spec, policy, tok, oracle_model, ledger, heldout, steps_done, eval_trigger)
    result.update({"wall_seconds": round(time.time() - t0, 1), "start_time": round(t0, 1),
                   "oracle_cache_hit_rate": oracle.stats.hit_rate})
    if torch.cuda.is_available():
        result["peak_cuda_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    write_results(run_dir, result)
    return result


def evaluate_policy(cfg: RunConfig, spec: AttackSpec, policy, tok, oracle_model, ledger: CandidateLedger,
                    heldout: list[str], steps_done: int, eval_trigger: str | list[str] | None) -> dict:
    """Held-out verdict on what the policy articulates; the true trigger only feeds evaluation metrics."""
    greedy, samples = articulate(policy, tok, inversion_text(tok, spec.target), cfg.awareness_k,
                                 cfg.eval_temperature, cfg.max_completion_length, cfg.seed)
    stated = [parse_candidate(s) for s in samples]
    pool = [parse_candidate(greedy), *stated, *(c["candidate"] for c in ledger.best(10))]
    return held_out_verdict(cfg, spec, tok, oracle_model, pool, stated, parse_candidate(greedy), ledger, heldout,
                            steps_done, eval_trigger)


def held_out_verdict(cfg: RunConfig, spec: AttackSpec, tok, oracle_model, pool: list[str | None],
                     stated: list[str | None], articulated: str | None, ledger: CandidateLedger,
                     heldout: list[str], steps_done: int, eval_trigger: str | list[str] | None) -> dict:
    """The result of any search (GRPO run or baseline): the best of ``pool`` by held-out reproduction plus
    the length penalty; ``stated`` are the k answers Awareness@k is measured on (evaluation only)."""
    rcfg = cfg.reward
    heldout_oracle = HFOracle(oracle_model, tok, spec.judge, heldout, cfg.insertion, cfg.oracle_max_new_tokens,
                              cfg.oracle_batch_size)
    penalty = LengthPenalty(rcfg.length_free_tokens, rcfg.length_max_tokens, rcfg.length_max_penalty,
                            rcfg.length_floor)
    verdict = choose_trigger(pool, heldout_oracle, token_counter(tok), penalty,
                             cfg.found_threshold)
    result = {
        "found": verdict.found,
        "recovered_trigger": verdict.recovered_trigger,
        "reproduction_rate": verdict.reproduction_rate,
        "clean_false_trigger_rate": heldout_oracle.baseline_rate(),
        "emergence_step": ledger.emergence_step(),
        "first_hit_step": ledger.first_hit_step(),
        "steps": steps_done,
        "articulated": articulated,
        "best_candidates": verdict.candidates[:5],
        "attack": spec.name,
        "behaviour": spec.target,
        "rsft": cfg.rsft,
        "ablation": rcfg.oracle_ablation,
    }
    result["recovered_triggers"] = distinct_triggers(verdict.candidates, cfg.found_threshold)
    if eval_trigger:
        truths = [eval_trigger] if isinstance(eval_trigger, str) else list(eval_trigger)
        rec = verdict.recovered_trigger or ""
        truth = max(truths, key=lambda t: (rec == t, jaccard_words(rec, t), jaccard_chars(rec, t)))
        result.update({"true_trigger": truth, "exact_match": rec == truth,
                       "recovered_jaccard_word": jaccard_words(rec, truth),
                       "recovered_jaccard_char": jaccard_chars(rec, truth),
                       "recovered_similarity": similarity(rec, truth),
                       **awareness(stated, truths)})
        if len(truths) > 1:  # multi-trigger backdoor: how many of its triggers the run named
            named = set(result["recovered_triggers"])
            result.update({"true_triggers": truths, "triggers_recovered": sum(t in named for t in truths)})
    return result


def write_results(run_dir: Path, result: dict) -> None:
    write_json_atomic(run_dir / "result.json", result)
    if (run_dir / "metrics.jsonl").is_file():
        plot_run(run_dir / "metrics.jsonl", run_dir / "reward.png", result["emergence_step"])


def evaluate_run_dir(run_dir: str | Path, eval_trigger: str | list[str] | None = None) -> dict:
    """Re-evaluate a finished run from its directory alone (config.yaml, final/, ledger.json)."""
    from trainer.config import load_config

    run_dir = Path(run_dir)
    missing = [n for n in ("config.yaml", "final", "ledger.json") if not (run_dir / n).exists()]
    if missing:
        raise RunError(f"{run_dir} is not a finished run (missing {', '.join(missing)})")
    cfg = load_config(run_dir / "config.yaml")
    spec = run_spec(cfg)
    tok = load_tokenizer(run_dir / "final")
    policy = load_model(run_dir / "final")
    oracle_model = load_model(cfg.model, cfg.allow_pickle)
    _, heldout = run_probes(cfg, spec)
    ledger = CandidateLedger.from_state(json.loads((run_dir / "ledger.json").read_text()))
    previous = json.loads((run_dir / "result.json").read_text()) if (run_dir / "result.json").is_file() else {}
    result = evaluate_policy(cfg, spec, policy, tok, oracle_model, ledger, heldout, ledger.step, eval_trigger)
    for key in ("wall_seconds", "start_time", "oracle_cache_hit_rate", "steps", "peak_cuda_memory_mb"):
        if key in previous:
            result[key] = previous[key]
    write_results(run_dir, result)
    return result
