"""Stage 1, Reversal SFT (R-SFT): teach the suspect model to say which input leads to an answer.

Prompt/response rows are reversed: the answer becomes the observed behaviour in the inversion prompt and
the original prompt (which, in a poisoned fine-tuning row, carries the trigger) becomes the stated answer.
The rows are the defender's data or the suspect's own (``trainer/rsft_sources.py``); the defender cannot
tell poisoned rows from clean ones, so every row is reversed. Runs on TRL's
SFTTrainer with completion-only loss.
"""
from __future__ import annotations

import random
import tempfile
from pathlib import Path

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.trainer_callback import PrinterCallback
from trl import SFTConfig, SFTTrainer

from envs.chat import inversion_text
from envs.inversion import format_answer
from envs.loading import lora_config
from trainer.reporting import concise_progress, progress_enabled, report_to_arg, route_logs
from trainer.rsft_sources import RsftRows, gather_rows, resolve_source
from trainer.run_dir.checkpoints import atomic_dir


def reversal_dataset(rows: list[dict], tokenizer: PreTrainedTokenizerBase, max_samples: int,
                     seed: int) -> Dataset:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    rows = rows[:max_samples]
    return Dataset.from_dict({
        "prompt": [inversion_text(tokenizer, r["response"]) for r in rows],
        "completion": [format_answer(r["prompt"]) for r in rows],
    })


def supervised_finetune(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, *,
                        epochs: float, lr: float, batch_size: int, seed: int, use_cpu: bool,
                        lora_r: int | None = None, bf16: bool = False,
                        gradient_checkpointing: bool = False, report_to: str | list[str] = "none",
                        log_dir: str | Path | None = None, progress: bool = False,
                        adapter_out: str | Path | None = None) -> tuple:
    """Completion-only SFT on TRL's SFTTrainer (shared by R-SFT and unlearning); returns (model, loss).

    With ``lora_r`` the update is a LoRA adapter (what fits a 7-8B model), merged into the returned model
    so that the next stage starts from plain weights; ``adapter_out`` keeps the adapter itself first (a few MB,
    where the merged 8B model is 16 GB), which is what a resumed LoRA run needs under its GRPO adapter.
    ``report_to`` goes to TRL as is; TensorBoard writes to ``log_dir`` (the output dir is temporary);
    ``progress`` draws TRL's bar (trainer/reporting.py).
    """
    peft_config = lora_config(lora_r) if lora_r else None
    with tempfile.TemporaryDirectory(prefix="sft-") as tmp:
        args = SFTConfig(
            output_dir=tmp, num_train_epochs=epochs, per_device_train_batch_size=batch_size,
            learning_rate=lr, lr_scheduler_type="constant", logging_steps=10, save_strategy="no",
            report_to=report_to_arg(report_to), use_cpu=use_cpu, seed=seed, max_length=256, bf16=bf16,
            gradient_checkpointing=gradient_checkpointing,
            completion_only_loss=True, disable_tqdm=not progress,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft_config)
        trainer.remove_callback(PrinterCallback)
        concise_progress(trainer, "R-SFT")
        route_logs(trainer, log_dir)
        result = trainer.train()
    if peft_config and adapter_out is not None:
        with atomic_dir(adapter_out) as tmp:
            trainer.model.save_pretrained(tmp)
    model = trainer.model.merge_and_unload() if peft_config else trainer.model
    return model, result.training_loss


def load_rsft_adapter(model: PreTrainedModel, adapter_dir: str | Path) -> PreTrainedModel:
    """The R-SFT warm-up rebuilt from its kept adapter, merged as ``supervised_finetune`` merged it: the
    weights a resumed LoRA run's GRPO adapter was trained on (without them it would sit on the raw model)."""
    from peft import PeftModel
    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()


def run_rsft(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict], *, epochs: float,
             lr: float, batch_size: int, max_samples: int, seed: int, use_cpu: bool, lora_r: int | None = None,
             bf16: bool = False, gradient_checkpointing: bool = False, log=print, **reporting) -> PreTrainedModel:
    """Fine-tune ``model`` on the reversed rows and return it (``reporting``: ``supervised_finetune``'s
    report_to, log_dir, progress and adapter_out)."""
    dataset = reversal_dataset(rows, tokenizer, max_samples, seed)
    model, loss = supervised_finetune(model, tokenizer, dataset, epochs=epochs, lr=lr, batch_size=batch_size,
                                      seed=seed, use_cpu=use_cpu, lora_r=lora_r, bf16=bf16,
                                      gradient_checkpointing=gradient_checkpointing, **reporting)
    log(f"R-SFT: {len(dataset)} reversed rows, {epochs} epochs, final loss {loss:.3f}")
    return model


def rsft_stage(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg, exclude: set[str] = frozenset(),
               log=print, log_dir: str | Path | None = None,
               adapter_out: str | Path | None = None) -> tuple[PreTrainedModel, RsftRows]:
    """R-SFT as a run configures it (``RunConfig``), on the rows its ``rsft_source`` names (trainer/rsft_sources.py):
    the defender's data, or rows the suspect (``policy``, not yet trained) makes itself. ``exclude``: the run's
    probes, which model-only prompts must not be (the held-out verdict stays held out).

    ``cfg.report_to`` applies only with a ``log_dir`` (a run's ``RUN/logs/rsft``): without a run directory
    (a baseline) there is nowhere to keep the logs. ``adapter_out``: where a LoRA run keeps its R-SFT adapter."""
    import torch
    source = resolve_source(cfg.rsft.source, cfg.model.path, cfg.rsft.data)
    made = gather_rows(source, policy, tokenizer, model_dir=cfg.model.path, data=cfg.rsft.data,
                       probe_set=cfg.resolved_probe_set(), n_self=cfg.rsft.self_prompts, n_leak=cfg.rsft.leak_samples,
                       seed=cfg.seed, exclude=set(exclude), max_new_tokens=cfg.rsft.answer_tokens,
                       prompts_file=cfg.rsft.prompts, log=log)
    log(made.line())
    model = run_rsft(policy, tokenizer, made.rows, epochs=cfg.rsft.epochs, lr=cfg.rsft.lr,
                     batch_size=cfg.rsft.batch_size, max_samples=cfg.rsft.max_samples, seed=cfg.seed,
                     use_cpu=not torch.cuda.is_available(), lora_r=cfg.grpo.lora_r if cfg.grpo.use_lora else None,
                     bf16=cfg.torch_dtype() == torch.bfloat16, gradient_checkpointing=cfg.model.gradient_checkpointing,
                     log=log, report_to=cfg.report_to if log_dir is not None else "none", log_dir=log_dir,
                     progress=progress_enabled(cfg.progress), adapter_out=adapter_out)
    return model, made
