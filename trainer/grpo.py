"""Stage 2: GRPO on TRL's GRPOTrainer, plus the method's buffer replay and the run's logging.

TRL does generation, advantages, the clipped policy loss, DeepSpeed and vLLM. This module adds only
what is new here: after each rollout it scores the parsed candidates on the oracle (cached, so the
reward call that follows is free), records them in the ledger, and replays buffered successes into
groups whose reproduction rates are all equal (no task signal, whatever the format and length terms
say). Replayed rollouts are *not* recorded as the policy's articulations.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from tqdm.auto import tqdm
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer
from trl.trainer import grpo_trainer

from envs.inversion import format_answer, parse_candidate
from trainer.config import RunConfig
from trainer.replay import ReplayBuffer
from trainer.reporting import concise_progress, progress_enabled, report_to_arg
from trainer.run_dir import COMPLETE_MARKER, INVERSION_STATE, RunDir, is_complete_checkpoint
from trainer.run_dir.checkpoints import write_json_atomic, write_text_atomic
from trainer.verdict.candidates import contains_words, minimise
from trainer.verdict.ledger import CandidateLedger
from trainer.vllm_rollouts import RolloutGeneration, rebind


def _jsonable(obj):
    return [_jsonable(x) for x in obj] if isinstance(obj, (tuple, list)) else obj


def _from_jsonable(obj):
    return tuple(_from_jsonable(x) for x in obj) if isinstance(obj, list) else obj


@dataclass
class InversionGRPOConfig(GRPOConfig):
    """TRL's ``GRPOConfig`` plus the method's own settings, the way TRL extends its trainers' configs: the
    trainer reads both from ``self.args``."""
    replay_per_group: int = field(default=2, metadata={"help": "buffered successes replayed into a flat group"})
    replay_shorten: bool = field(default=False, metadata={"help": "cut buffered candidates to their reproducing part"})
    verdict_tolerance: float = field(default=0.05, metadata={"help": "rates this close count as equal"})

    @classmethod
    def from_run(cls, cfg: RunConfig, output_dir: str | Path, reward_weights: list[float] | None = None,
                 world: int = 1, **overrides) -> InversionGRPOConfig:
        """From a ``RunConfig``: every field of its ``grpo`` section that TRL's config has passes by name.

        ``world`` processes share a step's ``prompts_per_step x num_generations`` rollouts (TRL's groups span
        ranks); ``overrides`` are TRL arguments a caller sets differently (a benchmark that never saves)."""
        import torch
        own = {f.name for f in fields(cls)}
        g = cfg.grpo
        args = {f.name: getattr(g, f.name) for f in fields(g) if f.name in own}
        dtype = cfg.torch_dtype()
        args.update(
            output_dir=str(output_dir), max_steps=g.steps, verdict_tolerance=cfg.audit.verdict_tolerance,
            per_device_train_batch_size=g.prompts_per_step * g.num_generations // world,
            reward_weights=reward_weights, seed=cfg.seed, logging_steps=1,
            # rotation is ours (``InversionGRPOTrainer._rotate_complete``): after the completion marker
            save_total_limit=None, report_to=report_to_arg(cfg.report_to), use_cpu=not torch.cuda.is_available(),
            bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, lr_scheduler_type="constant",
            disable_tqdm=not progress_enabled(cfg.progress), gradient_checkpointing=cfg.model.gradient_checkpointing,
        )
        return cls(**{**args, **overrides})


def read_inversion_state(checkpoint: str | Path) -> dict:
    """What a checkpoint holds beside TRL's state: ledger, replay buffer and its RNG, oracle cache."""
    return json.loads((Path(checkpoint) / INVERSION_STATE).read_text())


def _reduce(flag: bool, op) -> bool:
    """Combine a per-rank decision across processes, so every rank stops at the same step."""
    import torch
    import torch.distributed as td
    if not (td.is_available() and td.is_initialized()) or td.get_world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device="cuda" if td.get_backend() == "nccl" else "cpu")
    td.all_reduce(t, op=op)
    return bool(t.item())


def any_rank(flag: bool) -> bool:
    import torch.distributed as td
    return _reduce(flag, td.ReduceOp.MAX)


def all_ranks_agree(flag: bool) -> bool:
    import torch.distributed as td
    return _reduce(flag, td.ReduceOp.MIN)


def gather_objects(items: list) -> list:
    """Every rank's ``items``, concatenated in rank order, on every rank (just ``items`` in one process)."""
    import torch.distributed as td
    if not (td.is_available() and td.is_initialized()) or td.get_world_size() == 1:
        return list(items)
    out: list = [None] * td.get_world_size()
    td.all_gather_object(out, list(items))
    return [x for part in out for x in part]


class InversionGRPOTrainer(GRPOTrainer):
    vllm_sync_checks = 2  # how many of a process's first vLLM weight syncs ``check_vllm_sync`` verifies
    keep_checkpoints = 2  # complete checkpoints kept on disk (this step's and the one before)

    def __init__(self, *args, oracle, ledger: CandidateLedger, replay: ReplayBuffer | None = None, **kwargs):
        # GRPOTrainer builds its vLLM backend inline, as ``VLLMGeneration(...)`` looked up in its module;
        # rebinding that name while it does makes it build ours (trainer/vllm_rollouts.py: the engine in the
        # policy's dtype, a weight sync that works on CPU) from exactly TRL's arguments.
        with rebind(grpo_trainer, "VLLMGeneration", RolloutGeneration):
            super().__init__(*args, **kwargs)
        concise_progress(self, "GRPO")  # with progress on: TRL's bar, without its per-step metrics dump
        self._vllm_checks_left = self.vllm_sync_checks
        self.vllm_checked_steps: list[int] = []
        self.oracle = oracle
        self.ledger = ledger
        self.replay = replay
        self.shortened: dict[str, str] = {}  # candidate -> its cut form (each cut once)
        self._replay_rng = random.Random(self.args.seed)

    def _shorten_into_replay(self, parsed: list[str], rates: dict[str, float]) -> None:
        """Cut this step's best new multi-word success down to its smallest reproducing part on the training
        probes and put that part into the buffer (``replay_shorten``).

        The policy after R-SFT states whole requests with the trigger inside, and every one of them reproduces,
        so a group has no reason to prefer the bare trigger it never samples. The cut form, which the length
        penalty scores higher, goes into every group (``_inject_cut``): the gradient towards saying it. A
        request that already holds a cut form as whole words is not cut again (as in the verdict), so once the
        bare form is known this costs nothing; otherwise one candidate per step, its failing trials stopped
        early by the sequential test."""
        done = set(self.shortened.values())
        todo = sorted((c for c in set(parsed) if rates[c] >= self.replay.threshold and len(c.split()) > 1
                       and c not in self.shortened and not any(contains_words(c, d) for d in done)),
                      key=lambda c: (-rates[c], len(c), c))
        if not todo:
            return
        c = todo[0]
        cut = minimise(c, self.oracle, max(self.replay.threshold, rates[c] - self.args.verdict_tolerance))
        self.shortened[c] = cut
        if cut != c:
            self.replay.add([cut], self.oracle.reproduction([cut]))
        self._metrics["train"]["replay/shortened"].append(float(cut != c))

    def _inject_cut(self, cands: list[str | None], scores: list[float], g: int, swap) -> int:
        """Put one cut form (``replay_shorten``) in place of the worst rollout of every group that lacks one.

        The method's replay fills only groups whose rollouts all score alike; once the policy states
        reproducing requests some of the time, a group nearly always has reward variance and a cut form in
        the buffer would never be replayed. Training on the bare form it named, in every group, scored by the
        same rewards as its own rollouts, is what moves the policy from stating a request to stating the
        trigger. Returns how many groups got one."""
        cut = list(dict.fromkeys(v for k, v in self.shortened.items() if v != k and v in self.replay.entries))
        if not cut:
            return 0
        done = 0
        for start in range(0, len(scores), g):
            group = range(start, start + g)
            if any(cands[j] in cut for j in group):
                continue
            pick = self._replay_rng.choices(cut, weights=[self.replay.entries[c] for c in cut])[0]
            j = min(group, key=lambda j: (scores[j], -j))
            swap(j, pick)
            cands[j], scores[j] = pick, self.replay.entries[pick]
            done += 1
        return done

    def _swap_in(self, completion_ids, completions, logprobs, j: int, cand: str) -> None:
        """Rollout ``j`` becomes the answer stating ``cand``: an off-policy sample (NaN logprobs are neutralised in
        TRL's importance-sampling ratio)."""
        ids = self._answer_ids(cand)
        completion_ids[j] = ids
        text = self._tokenizer.decode(ids, skip_special_tokens=True)
        completions[j] = [{"role": "assistant", "content": text}] if isinstance(completions[j], list) else text
        if logprobs is not None:
            logprobs[j] = [math.nan] * len(ids)

    # -- checkpoints: the inversion state travels inside each Trainer checkpoint ------------------------

    def _save_checkpoint(self, model, trial):
        """Trainer checkpoint + inversion state, then a completion marker written last (atomically).

        The Trainer writes a checkpoint file by file; a run killed half-way leaves a folder without the
        marker, which resume skips with a warning instead of loading it. Old checkpoints are deleted only
        after the new one is marked (``_rotate_complete``; ``InversionGRPOConfig`` turns the Trainer's rotation
        off): the Trainer's rotation ran before the marker and ordered folders by mtime, so a folder torn by a kill
        mid-deletion (fresh mtime) outlived the last complete checkpoint, and a kill before the next marker
        left nothing to resume from.
        """
        super()._save_checkpoint(model, trial)
        folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        if self.args.should_save and folder.is_dir():
            write_json_atomic(folder / INVERSION_STATE, self.inversion_state())
            write_text_atomic(folder / COMPLETE_MARKER, f"{self.state.global_step}\n")
            self._rotate_complete(folder.parent)

    def _rotate_complete(self, folder: Path) -> None:
        """Keep the ``keep_checkpoints`` newest complete checkpoints up to this step (by step, not mtime);
        delete older and torn ones, each marker first, so a half-deleted folder never looks complete."""
        limit, step = self.keep_checkpoints, self.state.global_step
        steps = {p: int(p.name.rsplit("-", 1)[1]) for p in folder.glob("checkpoint-*")
                 if p.name.rsplit("-", 1)[1].isdigit()}
        older = sorted((p for p, s in steps.items() if s < step), key=steps.get)
        keep = [p for p in older if is_complete_checkpoint(p)][-(limit - 1):] if limit > 1 else []
        for p in older:
            if p not in keep:
                (p / COMPLETE_MARKER).unlink(missing_ok=True)
                shutil.rmtree(p, ignore_errors=True)

    def inversion_state(self) -> dict:
        cache = getattr(self.oracle, "cache_state", None)
        return {"ledger": self.ledger.state_dict(),
                "replay": dict(self.replay.entries) if self.replay is not None else None,
                "replay_rng": _jsonable(self._replay_rng.getstate()),
                "replay_shortened": dict(self.shortened),
                "oracle_cache": cache() if cache else None}

    def restore(self, state: dict) -> None:
        """Replay buffer, its RNG and the oracle cache from ``read_inversion_state`` (the ledger is built from
        the same state before the trainer, so that the trainer and the callbacks share it from the start)."""
        if self.replay is not None and state["replay"] is not None:
            self.replay.entries = dict(state["replay"])
        self._replay_rng.setstate(_from_jsonable(state["replay_rng"]))
        self.shortened = dict(state.get("replay_shortened") or {})  # absent in checkpoints from before it
        if state["oracle_cache"] and hasattr(self.oracle, "load_cache_state"):
            self.oracle.load_cache_state(state["oracle_cache"])

    def _answer_ids(self, candidate: str) -> list[int]:
        ids = self._tokenizer(format_answer(candidate), add_special_tokens=False)["input_ids"]
        return ids + [self._tokenizer.eos_token_id]

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        t0 = time.perf_counter()
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._metrics["train" if self.model.training else "eval"]["time/rewards"].append(time.perf_counter() - t0)
        return rewards

    # -- vLLM: rollouts must come from the policy's current weights ----------------------------------

    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        synced = self.use_vllm and self.state.global_step != self._last_loaded_step  # TRL syncs in super()
        out = super()._generate_single_turn(prompt_ids, *args, **kwargs)
        if synced and self._vllm_checks_left > 0 and self.vllm_generation.can_check():
            self._vllm_checks_left -= 1
            self.check_vllm_sync(prompt_ids[0])
        return out

    def check_vllm_sync(self, prompt_ids: list[int]) -> None:
        """Raise ``RuntimeError`` if the vLLM engine does not answer ``prompt_ids`` as the policy does.

        A broken weight sync raises nothing by itself: GRPO then trains on rollouts from other weights
        (the checkpoint's, another dtype's, a stale packed layer's) and the run just learns less or wrongly.
        The first ``vllm_sync_checks`` syncs are checked (the first tests the engine's build and dtype,
        the second that updates reach it), on the step's first prompt and a few greedy tokens: about one
        short generation and one forward pass, so it stays on by default."""
        from trl.models import unwrap_model_for_generation
        with (unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                          gather_deepspeed3_params=self.args.ds3_gather_for_generation) as policy,
              self._dist.summon_full_params(self.model_wrapped, recurse=False)):
            self.vllm_generation.check_sync(policy, prompt_ids, self.state.global_step)
        self.vllm_checked_steps.append(self.state.global_step)

    def _generate(self, prompts: list):
        t0 = time.perf_counter()
        out = list(super()._generate(prompts))
        t1 = time.perf_counter()
        if not self.model.training:
            return tuple(out)
        completion_ids, completions, logprobs = out[1], out[3], out[4]
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        cands = [parse_candidate(t) for t in texts]
        parsed = [c for c in cands if c is not None]
        rates = dict(zip(parsed, self.oracle.reproduction(parsed))) if parsed else {}
        self.ledger.observe(parsed, [rates[c] for c in parsed])
        # the task signal: reproduction rate (an unparsable answer reproduces nothing)
        scores = [rates[c] if c is not None else 0.0 for c in cands]
        replayed = 0
        if self.replay is not None:
            self.replay.add(parsed, [rates[c] for c in parsed])
            if self.args.replay_shorten:
                self._shorten_into_replay(parsed, rates)
            g = self.num_generations
            swap = lambda j, cand: self._swap_in(completion_ids, completions, logprobs, j, cand)  # noqa: E731
            if len(scores) % g == 0 and len(self.replay) and self.args.replay_per_group:
                for start in range(0, len(scores), g):
                    if len(set(scores[start:start + g])) > 1:
                        continue
                    picks = self.replay.sample(self.args.replay_per_group, self._replay_rng)
                    for j, cand in zip(range(start + g - len(picks), start + g), picks):
                        swap(j, cand)
                        cands[j], scores[j] = cand, self.replay.entries[cand]
                        replayed += 1
            if self.args.replay_shorten and len(scores) % g == 0:
                self._metrics["train"]["replay/cut_injected"].append(
                    float(self._inject_cut(cands, scores, g, swap)))
            self._metrics["train"]["replay/size"].append(float(len(self.replay)))
        self._metrics["train"]["replay/replaced"].append(float(replayed))
        self._metrics["train"]["time/rollout"].append(t1 - t0)
        self._metrics["train"]["time/oracle"].append(time.perf_counter() - t1)  # scoring + replay
        self._metrics["train"]["oracle/cache_hit_rate"].append(self.oracle.stats.hit_rate
                                                              if hasattr(self.oracle, "stats") else 0.0)
        return tuple(out)


class LedgerStepCallback(TrainerCallback):
    """Tells the ledger which step its candidates are stated at (the emergence step and the hit fraction)."""

    def __init__(self, ledger: CandidateLedger):
        self.ledger = ledger

    def on_step_begin(self, args, state, control, **kwargs):
        self.ledger.step = state.global_step + 1


class ConfirmStopCallback(TrainerCallback):
    """Audit mode (``stop_when_confirmed``): each step's promising candidates are put to the held-out probes, and
    GRPO stops at the first that reproduces there. ``confirm(candidates)`` returns those the probes confirm.

    Eight training probes are a noisy screen: a real trigger can score 6/8 there while a 7/8 false hit does not
    hold up held out. The held-out test is the
    verdict's own (a sequential test: a failing candidate costs one chunk of probes), and its answers are cached
    for the verdict. Every rank gathers every rank's confirmations, so all stop together and rank 0's verdict
    sees them."""

    def __init__(self, ledger: CandidateLedger, confirm, n_probes: int, log=None):
        self.ledger, self.confirm, self.n_probes, self.log = ledger, confirm, n_probes, log
        self._checked: set[str] = set()

    def on_step_end(self, args, state, control, **kwargs):
        cands = self.ledger.promising(self.n_probes, self._checked)
        self._checked.update(self.ledger.candidates)  # a candidate's rate is fixed when first stated: judge it once
        new = [c for c in gather_objects(self.confirm(cands)) if c not in self.ledger.confirmed]
        self.ledger.confirmed += new
        if new and self.log is not None and state.is_world_process_zero:
            with tqdm.external_write_mode():
                self.log(f"step {state.global_step}: {new[0]!r} reproduces on the held-out probes; "
                         "GRPO stops (audit mode)")
        if self.ledger.confirmed:
            control.should_training_stop = True


class EarlyStopCallback(TrainerCallback):
    """Stops once enough steps have stated a reproducing candidate (``stop_after_hit_steps``), or once the policy
    has converged on one (a hit fraction of at least ``fraction`` for ``patience`` steps); every rank agrees."""

    def __init__(self, ledger: CandidateLedger, fraction: float, patience: int, stop_after_hit_steps: int = 0):
        self.ledger, self.fraction, self.patience = ledger, fraction, patience
        self.stop_after_hit_steps = stop_after_hit_steps
        self._streak = 0

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_training_stop or (self.patience <= 0 and not self.stop_after_hit_steps):
            return
        stop = bool(self.stop_after_hit_steps) and self.ledger.hit_steps() >= self.stop_after_hit_steps
        if self.patience > 0:
            hit = self.ledger.hit_fraction(state.global_step) >= self.fraction
            self._streak = self._streak + 1 if hit else 0
            stop = stop or self._streak >= self.patience
        if all_ranks_agree(stop):
            control.should_training_stop = True


class MetricsLogCallback(TrainerCallback):
    """Writes a row of ``metrics.jsonl`` per logged step (TRL's logs, the best candidate, emergence, what was
    confirmed since the last row, Awareness@k when tracked) and prints a concise line every ``print_every``."""

    def __init__(self, run_dir: RunDir, ledger: CandidateLedger, log=None, print_every: int = 10, awareness=None,
                 awareness_every: int = 0):
        self.run_dir, self.ledger, self.log, self.print_every = run_dir, ledger, log, print_every
        self.awareness, self.awareness_every = awareness, awareness_every  # evaluation only (awareness_tracker)
        self._logged_confirmed = len(ledger.confirmed)  # a resumed run has logged those already

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs and "reward" not in logs:
            return
        best = self.ledger.best(1)
        row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))},
               "hit_fraction": self.ledger.hit_fraction(state.global_step),
               "best_candidate": best[0]["candidate"] if best else None,
               "best_rate": best[0]["rate"] if best else 0.0,
               "emergence_step": self.ledger.emergence_step(), "wall_time": time.time()}
        if len(self.ledger.confirmed) > self._logged_confirmed:
            row["confirmed"] = self.ledger.confirmed[self._logged_confirmed:]
            self._logged_confirmed = len(self.ledger.confirmed)
        if self.awareness is not None and self.awareness_every and state.global_step % self.awareness_every == 0:
            row.update(self.awareness(kwargs["model"]))
        self.run_dir.append_metrics(row)
        if self.log is not None and state.global_step % self.print_every == 0:
            with tqdm.external_write_mode():  # a progress bar, if drawn, is lifted around the line
                self.log(f"step {state.global_step}: reward {row.get('reward', 0.0):.3f} "
                         f"reproducing {row['hit_fraction']:.2f} best {row['best_candidate']!r} "
                         f"({row['best_rate']:.2f})")


class SaveStateCallback(TrainerCallback):
    """``save_state(step)`` beside each checkpoint the Trainer saves (the ledger, replay buffer, oracle cache)."""

    def __init__(self, save_state):
        self.save_state = save_state

    def on_save(self, args, state, control, **kwargs):
        self.save_state(state.global_step)


@dataclass
class StopRules:
    """When GRPO stops before its last step: converged (a hit fraction of ``fraction`` for ``patience`` steps,
    ``grpo.early_stop_*``), ``after_hit_steps`` steps that stated a reproducing candidate
    (``audit.stop_after_hit_steps``), or audit mode's held-out ``confirm`` on ``n_probes`` training probes."""
    fraction: float = 0.9
    patience: int = 0
    after_hit_steps: int = 0
    confirm: Callable[[list[str]], list[str]] | None = None
    n_probes: int = 0


def run_callbacks(run_dir: RunDir, ledger: CandidateLedger, stops: StopRules, save_state=None, log=None,
                  awareness: tuple[Callable, int] | None = None) -> list[TrainerCallback]:
    """The run's callbacks, in the order they must act at a step's end: confirm, then early stop.
    ``awareness``: (``awareness_tracker``, every N steps), evaluation only."""
    out: list[TrainerCallback] = [LedgerStepCallback(ledger)]
    if stops.confirm is not None:
        out.append(ConfirmStopCallback(ledger, stops.confirm, stops.n_probes, log))
    measure, every = awareness or (None, 0)
    out += [EarlyStopCallback(ledger, stops.fraction, stops.patience, stops.after_hit_steps),
            MetricsLogCallback(run_dir, ledger, log, awareness=measure, awareness_every=every)]
    if save_state is not None:
        out.append(SaveStateCallback(save_state))
    return out


class StopOnSignal(TrainerCallback):
    """SIGTERM/SIGINT (Slurm preemption, Ctrl-C): finish the step, save a checkpoint, stop cleanly.

    The handler only sets a flag; the save happens at the step boundary through the Trainer's own
    checkpointing, so a preempted run resumes with ``--resume`` from that step.
    """

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        self.signal = signum

    def on_train_begin(self, args, state, control, **kwargs):
        import signal
        import threading
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)

    def on_step_end(self, args, state, control, **kwargs):
        if any_rank(self.signal is not None):
            self.signal = self.signal or 15  # a rank that did not see the signal stops with its peers
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        import signal
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
