"""One inversion run, top to bottom: check, build the oracle, prepare the run dir, R-SFT, GRPO, finish.

Read ``invert`` first, then ``InversionRun``: its steps are methods, in the order the run takes them. The layout of
the run directory is ``trainer/run_dir/__init__.py``'s; the verdict is ``trainer/verdict/evaluate.py``'s.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import PartialState
from datasets import Dataset
from transformers.trainer_callback import PrinterCallback

from envs.attacks import AttackSpec
from envs.chat import inversion_text
from envs.loading import check_model_dir, load_model, lora_config
from envs.tokenizer import load_tokenizer
from rewards.oracle import BeyondReference
from rewards.registry import RewardContext, build_reward_funcs
from rewards.vllm_engine import VLLM_MISSING, check_head_size, vllm_available
from trainer.baselines.data_scan import scan_data
from trainer.config import ConfigError, RunConfig
from trainer.grpo import (
    InversionGRPOConfig,
    InversionGRPOTrainer,
    StopOnSignal,
    StopRules,
    gather_objects,
    read_inversion_state,
    run_callbacks,
)
from trainer.memory_plan import (
    INVERSION_PROMPT_TOKENS,
    Lengths,
    ModelShape,
    Placement,
    check_plan,
    device_capacity,
    plan_memory,
)
from trainer.oracles import SuspectOracles
from trainer.replay import ReplayBuffer
from trainer.reporting import check_report_to_installed, route_logs
from trainer.rsft import SFTSettings, load_rsft_adapter, rsft_stage
from trainer.rsft_sources import FINETUNE_FILE, RowPool, RsftRows, parse_source, read_rows, resolve_source
from trainer.run_dir import RunDir, RunError
from trainer.run_dir.checkpoints import save_model_atomic
from trainer.run_dir.result import RunResult
from trainer.verdict.evaluate import (
    HeldOut,
    Sampling,
    awareness_tracker,
    eval_sampling,
    evaluate_policy,
    heldout_confirmer,
    record_rsft,
    screen_candidates,
    token_counter,
)
from trainer.verdict.ledger import CandidateLedger

__all__ = ["RunError", "RunInterrupted", "invert"]


class PhaseClock(dict):
    """Seconds per phase of this process's run (load, rsft, screen, grpo, save, verdict): where an audit's time goes."""

    def __init__(self, start: float):
        super().__init__()
        self.start = self._last = start

    def lap(self, name: str) -> None:
        now = time.time()
        self[name] = round(now - self._last, 1)
        self._last = now


class RunInterrupted(BaseException):
    """A signal stopped the run: after a checkpoint was saved (``--resume`` continues it), or before its first
    checkpoint (``resumable`` False: nothing to continue, the same command starts it again).

    A ``BaseException``, as ``KeyboardInterrupt`` is: raised from a signal handler, it can land inside library code
    that catches ``Exception`` broadly (a dataset map's fallback), which would swallow it and train on."""

    def __init__(self, run_dir: RunDir, step: int | None, signum: int):
        self.resumable = step is not None
        super().__init__(f"interrupted by signal {signum} at step {step}; checkpoint saved. Continue with: "
                         f"backdoor-aware invert --resume --out {run_dir}" if self.resumable else
                         f"interrupted by signal {signum} before the first checkpoint (loading, R-SFT or the "
                         "screen); nothing to resume: run the same command again")
        self.signum = signum


@contextmanager
def stop_with_a_message(rd: RunDir):
    """SIGTERM/SIGINT outside GRPO (whose ``StopOnSignal`` finishes the step and saves) end the run with a message
    that says what is left of it (the newest checkpoint, or nothing), instead of a bare exit 143."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        last = rd.latest_checkpoint(lambda _: None) if rd.checkpoints.is_dir() else None  # e.g. in the verdict
        raise RunInterrupted(rd, int(last.name.rsplit("-", 1)[1]) if last else None, signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def invert(cfg: RunConfig, run_dir: str | Path, eval_trigger: str | list[str] | None = None, resume: bool = False,
           log: Callable[[str], None] = print) -> RunResult | None:
    """Run (or ``resume``) an inversion; rank 0 returns the verdict, other ranks ``None``.

    ``eval_trigger`` (the true trigger) reaches the evaluation metrics only, never a training reward."""
    run = InversionRun(cfg, RunDir(run_dir), eval_trigger, resume, log)
    with stop_with_a_message(run.rd):
        run.setup()
        run.train()
        return run.finish() if run.main else None  # rank 0 saves, evaluates and reports


class InversionRun:
    """One run and its state, in the order the run takes its steps: ``setup`` (the frozen oracle, the run directory,
    the policy and its R-SFT warm-up), ``train`` (audit mode's screen, then GRPO on TRL), ``finish`` (the trained
    policy saved, the held-out verdict, ``result.json``). Each step reads what the one before it left here."""

    def __init__(self, cfg: RunConfig, rd: RunDir, eval_trigger: str | list[str] | None = None, resume: bool = False,
                 log: Callable[[str], None] = print):
        """Checks everything a user can get wrong before anything is loaded or written (``check_run``)."""
        self.phases = PhaseClock(time.time())
        # one process, or every rank under torchrun/accelerate (initialises the group; gloo on CPU)
        self.dist = dist = PartialState(cpu=not torch.cuda.is_available())
        self.main = dist.is_main_process
        self.rank, self.world = dist.process_index, dist.num_processes
        self.log = log if self.main else (lambda s: None)  # one voice per run
        self.rd, self.eval_trigger, self.resume = rd, eval_trigger, resume
        self.checkpoint: Path | None = None
        self.state: dict | None = None
        self.cfg, self.spec, memory = check_run(cfg, rd, resume, dist.num_processes, local_world_size())
        cfg, log = self.cfg, self.log
        log(memory)
        if cfg.rsft.enabled and "finetune" not in parse_source(cfg.rsft.source):
            log(f"R-SFT: model-only ({cfg.rsft.source}): no data is read, the suspect makes its own rows "
                "(--data FILE uses data you hold)")
        if cfg.model.reference:
            log(f"reference model {cfg.model.reference}: R_ASR, audit mode and the verdict count only what a "
                "candidate does to the suspect beyond what it does to the reference")
        dist.wait_for_everyone()  # every rank has checked the run dir before rank 0 creates it
        torch.manual_seed(cfg.seed)

    def setup(self) -> None:
        cfg, rd, log = self.cfg, self.rd, self.log
        device = str(self.dist.device)
        # -- the frozen oracle, and the judge's rate with no trigger (a judge that already fires is useless)
        self.tok = load_tokenizer(cfg.model.path)
        self.probes, self.heldout = cfg.probe_split(self.spec)
        self.oracles = SuspectOracles.from_run(cfg, self.spec, self.tok, device)
        self.oracle = self.oracles.oracle(self.probes)
        check_baseline(cfg, self.spec, self.oracle, log)

        # -- the run directory: the config as used, and on resume the newest complete checkpoint
        if self.main:
            rd.path.mkdir(parents=True, exist_ok=True)
            rd.save_config(cfg)
        self.dist.wait_for_everyone()
        self.checkpoint = rd.latest_checkpoint(log) if self.resume else None
        self.state = read_inversion_state(self.checkpoint) if self.checkpoint else None
        if self.checkpoint:
            log(f"resuming from {self.checkpoint}")
        if self.resume and self.main:  # drop rows past the checkpoint; all of them when none is complete (a restart)
            rd.truncate_metrics(int(self.checkpoint.name.rsplit("-", 1)[-1]) if self.checkpoint else 0)
        self.ledger = (CandidateLedger.from_state(self.state["ledger"]) if self.state
                       else CandidateLedger(threshold=cfg.audit.found_threshold))

        # -- the policy: the suspect model itself, warmed up by R-SFT (a resumed run has it in its checkpoint)
        self.policy = load_model(cfg.model.path, cfg.model.allow_pickle, dtype=cfg.torch_dtype(), device=device)
        self.phases.lap("load")
        if cfg.rsft.enabled and self.checkpoint is None:
            adapter = rd.rsft_adapter if cfg.grpo.use_lora and self.main else None
            sft = SFTSettings.from_run(cfg, rd.logs / "rsft", adapter)
            pool = RowPool(cfg.model.path, cfg.resolved_probe_set(), cfg.seed, set(self.probes) | set(self.heldout))
            self.policy, made = rsft_stage(self.policy, self.tok, cfg.rsft, sft, pool, log)
            if self.main:
                rd.write_rsft(made.rows, rsft_info(cfg, self.spec, made, log))
            self.phases.lap("rsft")
        elif cfg.rsft.enabled and cfg.grpo.use_lora:  # the checkpoint's GRPO adapter was trained on the warm-up
            self.policy = load_rsft_adapter(self.policy, rd.rsft_adapter)
            log(f"R-SFT warm-up restored from {rd.rsft_adapter}")

    def train(self) -> None:
        cfg = self.cfg
        confirm = (heldout_confirmer(self.oracles.oracle(self.heldout), cfg.audit.found_threshold,
                                     self.oracles.reference_oracle(self.heldout))
                   if cfg.audit.stop_when_confirmed else None)
        if confirm is not None and cfg.audit.screen_samples and self.checkpoint is None:
            self.screen(confirm)
            self.phases.lap("screen")
        self.trainer, stopper = self.build_trainer(confirm)
        if self.state:
            self.trainer.restore(self.state)
        if not (self.ledger.confirmed and self.checkpoint is None):  # a screened trigger needs no GRPO step
            self.trainer.train(resume_from_checkpoint=str(self.checkpoint) if self.checkpoint else None)
        self.phases.lap("grpo")
        if self.main:
            self.rd.write_ledger(self.ledger)
        if stopper.signal is not None:
            raise RunInterrupted(self.rd, self.trainer.state.global_step, stopper.signal)

    def screen(self, confirm) -> None:
        """Audit mode's wide first draw (``screen_samples``): rank 0 samples (the policy is not sharded yet), each
        rank puts its share of the candidates to the held-out test on its own oracle, and every rank learns what
        passed, so all skip GRPO together."""
        ledger = self.ledger
        g = self.cfg.grpo
        wide = Sampling(self.cfg.audit.screen_samples, g.temperature, g.max_completion_length, self.cfg.seed)
        cands = gather_objects(screen_candidates(self.policy, self.tok, self.spec.target, wide) if self.main else [])
        ledger.confirmed += [c for c in gather_objects(confirm(cands[self.rank::self.world]))
                             if c not in ledger.confirmed]
        if ledger.confirmed:
            self.log(f"screen: {ledger.confirmed[0]!r} of {len(cands)} distinct warm-up samples reproduces on the "
                     "held-out probes; GRPO skipped (audit mode)")
        else:
            self.log(f"screen: none of {len(cands)} distinct warm-up samples reproduces on the held-out probes; "
                     "GRPO starts")

    def build_trainer(self, confirm=None) -> tuple[InversionGRPOTrainer, StopOnSignal]:
        """TRL's GRPO trainer with our rewards, replay buffer, run log and signal handling; with ``eval_trigger``
        and ``awareness_every``, the run log also tracks Awareness@k against it (evaluation only, one process).
        ``confirm``: audit mode's held-out test (``heldout_confirmer``), which stops GRPO at its first
        confirmation. With a reference model, R_ASR pays for what the backdoor adds to it."""
        cfg, rd, ledger, tok, log = self.cfg, self.rd, self.ledger, self.tok, self.log
        reference = self.oracles.reference_oracle(self.probes)
        replay = ReplayBuffer(cfg.grpo.replay_threshold, cfg.grpo.replay_size) if cfg.grpo.replay else None
        ctx = RewardContext(cfg.reward, self.oracle, token_counter(tok),
                            confirmed=lambda: list(replay.entries) if replay else [], reference=reference)
        funcs, weights = build_reward_funcs(ctx)
        if cfg.reward.oracle_ablation:
            log("ABLATION RUN: a reward reads the true trigger; results are not an audit")
        prompt = inversion_text(tok, self.spec.target)
        dataset = Dataset.from_dict({"prompt": [prompt] * max(64, cfg.grpo.prompts_per_step)})

        def save_state(step: int) -> None:
            if self.main:
                rd.write_ledger(ledger)

        tracker = None
        if cfg.eval.awareness_every and self.eval_trigger:
            if self.world == 1:
                tracker = awareness_tracker(tok, self.spec.target, eval_sampling(cfg), self.eval_trigger)
            else:  # rank 0 alone would sample from a sharded or synchronised model
                log(f"awareness_every: not tracked under {self.world} processes (the final Awareness@k still is)")
        stopper = StopOnSignal()
        stops = StopRules(cfg.grpo.early_stop_fraction, cfg.grpo.early_stop_patience, cfg.audit.stop_after_hit_steps,
                          confirm, len(self.oracle.probes))
        trainer = InversionGRPOTrainer(
            model=self.policy, reward_funcs=funcs,
            args=InversionGRPOConfig.from_run(cfg, rd.checkpoints, weights, self.world),
            train_dataset=dataset, processing_class=tok,
            peft_config=lora_config(cfg.grpo.lora_r) if cfg.grpo.use_lora else None,
            callbacks=[*run_callbacks(rd, ledger, stops, save_state, log,
                                      (tracker, cfg.eval.awareness_every) if tracker else None), stopper],
            oracle=BeyondReference(self.oracle, reference) if reference is not None else self.oracle, ledger=ledger,
            replay=replay,
        )
        trainer.remove_callback(PrinterCallback)  # the run log prints a concise line instead
        route_logs(trainer, rd.logs / "grpo")  # report_to: tensorboard writes into the run directory
        return trainer, stopper

    def finish(self) -> RunResult:
        """The trained policy saved, the held-out verdict, ``result.json`` (rank 0)."""
        cfg, rd, phases = self.cfg, self.rd, self.phases
        policy = self.trainer.model.merge_and_unload() if cfg.grpo.use_lora else self.trainer.model
        save_model_atomic(policy, self.tok, rd.final, extra=lambda d: cfg.save(d / rd.config.name))
        phases.lap("save")
        held = HeldOut.from_run(cfg, self.spec, self.tok, self.oracles)
        result = evaluate_policy(held, policy, self.ledger, self.trainer.state.global_step, self.eval_trigger)
        record_rsft(result, rd, self.eval_trigger)
        phases.lap("verdict")
        self.log("phases (s): " + ", ".join(f"{k} {v:.0f}" for k, v in phases.items()))
        result.phase_seconds = dict(phases)
        result.wall_seconds = round(time.time() - phases.start, 1)
        result.start_time = round(phases.start, 1)
        result.oracle_cache_hit_rate = self.oracle.stats.hit_rate
        if torch.cuda.is_available():
            result.peak_cuda_memory_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        rd.write_result(result)
        return result


def rsft_info(cfg: RunConfig, spec: AttackSpec, made: RsftRows, log: Callable[[str], None]) -> dict:
    """What ``rsft.json`` keeps of the R-SFT rows: their source, and with defender data the data scan's findings
    (a judge-free run names no behaviour to scan for)."""
    info = {"source": made.source, "counts": made.counts, "model_only": made.model_only, "row_sources": made.sources,
            "leak_distinct": made.leak_distinct, "data_scan": None}
    if not made.model_only and cfg.audit.data_scan and not getattr(spec.judge, "set_level", False):
        t = time.time()
        info["data_scan"] = scan_data([r for r, src in zip(made.rows, made.sources) if src == "finetune"], spec,
                                      cfg.resolved_probe_set())
        top = info["data_scan"]["top"]
        log(f"data scan ({time.time() - t:.1f} s): " + (f"top prompt n-gram {top[0]['ngram']!r} (behaviour in "
            f"{top[0]['behaviour_rows']}/{top[0]['rows']} rows holding it, {top[0]['rate_without']:.2f} without it); "
            "found in the data, not stated by the model" if top else "no prompt n-gram goes with the behaviour"))
    return info


def check_run(cfg: RunConfig, rd: RunDir, resume: bool, world: int,
              local_processes: int = 1) -> tuple[RunConfig, AttackSpec, str]:
    """The config as the run will use it, its attack and its memory plan's line; a one-line error for anything
    unusable."""
    if rd.path.exists() and not resume:
        if rd.config.is_file() and rd.latest_checkpoint(lambda _: None):
            raise RunError(f"run directory {rd} already exists; pass --resume to continue it or choose a new --out")
        raise RunError(f"{rd} already exists and holds no checkpoint to resume; choose a new --out (nothing was "
                       "overwritten)")
    if resume and not rd.config.is_file():
        raise RunError(f"cannot resume: {rd} has no config.yaml")
    if (resume and cfg.rsft.enabled and cfg.grpo.use_lora and not rd.has_rsft_adapter()
            and rd.latest_checkpoint(lambda _: None)):  # no complete checkpoint: a restart redoes R-SFT, fine
        # a run from before rsft_adapter/ was kept: resumed on the raw model, the policy collapses to one-token
        # answers at once; refuse, not that
        raise RunError(f"cannot resume {rd}: this LoRA run did not keep its R-SFT warm-up ({rd.rsft_adapter.name}/),"
                       " which its GRPO adapter was trained on; start it again in a new --out")
    cfg.validate()
    spec = cfg.attack_spec()
    check_model_dir(cfg.model.path, cfg.model.allow_pickle)
    if cfg.model.reference:
        check_model_dir(cfg.model.reference, cfg.model.allow_pickle)
    if cfg.rsft.enabled:
        source = resolve_source(cfg.rsft.source, cfg.model.path, cfg.rsft.data)
        data = Path(cfg.rsft.data or Path(cfg.model.path) / FINETUNE_FILE)
        if "finetune" in parse_source(source) and not data.is_file():
            raise ConfigError(f"R-SFT data {data} not found; pass --data FILE, or use a model-only source "
                              "(rsft_source=self, leak or self+leak), or run with --no-rsft")
        if "finetune" in parse_source(source):
            read_rows(data)  # malformed rows: refused now, before anything is loaded or written
    if cfg.grpo.use_vllm or cfg.oracle.backend == "vllm":
        if not vllm_available():
            raise ConfigError(f"use_vllm / oracle_backend: vllm: {VLLM_MISSING} (or use HF: use_vllm=false, "
                              "oracle_backend: hf)")
        if not torch.cuda.is_available():  # before loading anything: engines start late in a run
            try:
                check_head_size(cfg.model.path)
            except ValueError as e:
                raise ConfigError(str(e)) from None
    check_report_to_installed(cfg.report_to)  # e.g. tensorboard: fail now, not after R-SFT
    if cfg.grpo.deepspeed:
        if importlib.util.find_spec("deepspeed") is None:
            raise ConfigError("deepspeed config given but DeepSpeed is not installed: pip install "
                              "'backdoor-aware[deepspeed]'")
        if not Path(cfg.grpo.deepspeed).is_file():
            raise ConfigError(f"deepspeed config {cfg.grpo.deepspeed} not found")
    rollouts = cfg.grpo.prompts_per_step * cfg.grpo.num_generations
    if rollouts % world:
        raise ConfigError(f"prompts_per_step x num_generations = {rollouts} "
                          f"rollouts per step do not divide over {world} processes")
    cfg = cfg.with_defaults_resolved(spec)
    return cfg, spec, memory_line(cfg, spec, world, local_processes)


def memory_line(cfg: RunConfig, spec: AttackSpec, world: int, local_processes: int = 1) -> str:
    """The memory plan's line for the run log; a ConfigError if it cannot fit (unless memory_check: false).

    A config.json without the sizes of a Llama-style decoder (GPT-2 names them otherwise) gets no plan, not a
    refusal: the plan is a guard for the common layouts, not a gate on which models may be audited."""
    try:
        shape = ModelShape.from_model_dir(cfg.model.path)
    except ValueError as e:
        return f"memory plan: skipped ({e})"
    where = Placement(*device_capacity(), world, local_processes)
    plan = plan_memory(cfg, shape, where, Lengths(inversion_prompt_tokens(cfg.model.path, spec.target),
                                                  spec.judge.max_new_tokens))
    if cfg.model.memory_check:
        check_plan(plan)
    return plan.line()


def inversion_prompt_tokens(model_dir: str, behaviour: str) -> int:
    """The inversion prompt's length in the model's own tokenizer and chat template (the rollouts' prefix, which
    the GRPO update's activations scale with: measured at 8B shape, a fixed guess made the plan 1.7x too high);
    the plan's conservative default when the tokenizer cannot be read."""
    try:
        tok = load_tokenizer(model_dir)
        return len(tok(inversion_text(tok, behaviour), add_special_tokens=False)["input_ids"])
    except Exception:  # noqa: BLE001 - a guard's estimate; the run reports an unreadable tokenizer itself, later
        return INVERSION_PROMPT_TOKENS


def local_world_size() -> int:
    """Processes on this machine (torchrun and accelerate set LOCAL_WORLD_SIZE): on CPU they share the RAM."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def check_baseline(cfg: RunConfig, spec: AttackSpec, oracle, log: Callable[[str], None]) -> None:
    base = oracle.baseline_rate()
    if base > cfg.oracle.max_baseline_rate:
        judge = f"judge {cfg.judge!r}" if cfg.judge else f"{spec.name} judge"
        raise RunError(f"the {judge} already fires on {base:.0%} of clean probes with no trigger; "
                       "its reward would be meaningless (check --attack/--target/--judge/--probes)")
    log(f"oracle: {len(oracle.probes)} probes, behaviour rate without trigger {base:.2f}")
