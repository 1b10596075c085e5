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
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.trainer_callback import PrinterCallback
from trl import SFTConfig, SFTTrainer

from envs.chat import inversion_text
from envs.inversion import format_answer
from envs.loading import lora_config
from trainer.config import RsftSection, RunConfig
from trainer.reporting import concise_progress, progress_enabled, report_to_arg, route_logs
from trainer.rsft_sources import RowPool, RsftRows, gather_rows
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


@dataclass
class SFTSettings:
    """How one completion-only SFT trains (R-SFT and unlearning share it).

    With ``lora_r`` the update is a LoRA adapter (what fits a 7-8B model), merged into the returned model so
    that the next stage starts from plain weights; ``adapter_out`` keeps the adapter itself first (a few MB,
    where the merged 8B model is 16 GB), which is what a resumed LoRA run needs under its GRPO adapter.
    ``report_to`` goes to TRL as is; TensorBoard writes to ``log_dir`` (the output dir is temporary);
    ``progress`` draws TRL's bar (trainer/reporting.py)."""
    epochs: float
    lr: float
    batch_size: int
    seed: int = 0
    use_cpu: bool = True
    lora_r: int | None = None
    bf16: bool = False
    gradient_checkpointing: bool = False
    report_to: str | list[str] = "none"
    log_dir: str | Path | None = None
    progress: bool = False
    adapter_out: str | Path | None = None

    @classmethod
    def from_run(cls, cfg: RunConfig, log_dir: str | Path | None = None,
                 adapter_out: str | Path | None = None) -> SFTSettings:
        """R-SFT's settings in a run: its ``rsft`` section, trained as the policy is (LoRA, dtype, checkpointing).
        ``report_to`` applies only with a ``log_dir`` (a run's ``RUN/logs/rsft``): without a run directory (a
        baseline) there is nowhere to keep the logs."""
        import torch
        r = cfg.rsft
        return cls(epochs=r.epochs, lr=r.lr, batch_size=r.batch_size, seed=cfg.seed,
                   use_cpu=not torch.cuda.is_available(), lora_r=cfg.grpo.lora_r if cfg.grpo.use_lora else None,
                   bf16=cfg.torch_dtype() == torch.bfloat16, gradient_checkpointing=cfg.model.gradient_checkpointing,
                   report_to=cfg.report_to if log_dir is not None else "none", log_dir=log_dir,
                   progress=progress_enabled(cfg.progress), adapter_out=adapter_out)


def supervised_finetune(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: Dataset,
                        sft: SFTSettings) -> tuple:
    """Completion-only SFT on TRL's SFTTrainer; returns (model, loss)."""
    peft_config = lora_config(sft.lora_r) if sft.lora_r else None
    with tempfile.TemporaryDirectory(prefix="sft-") as tmp:
        args = SFTConfig(
            output_dir=tmp, num_train_epochs=sft.epochs, per_device_train_batch_size=sft.batch_size,
            learning_rate=sft.lr, lr_scheduler_type="constant", logging_steps=10, save_strategy="no",
            report_to=report_to_arg(sft.report_to), use_cpu=sft.use_cpu, seed=sft.seed, max_length=256,
            bf16=sft.bf16, gradient_checkpointing=sft.gradient_checkpointing,
            completion_only_loss=True, disable_tqdm=not sft.progress,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft_config)
        trainer.remove_callback(PrinterCallback)
        concise_progress(trainer, "R-SFT")
        route_logs(trainer, sft.log_dir)
        result = trainer.train()
    if peft_config and sft.adapter_out is not None:
        with atomic_dir(sft.adapter_out) as out:
            trainer.model.save_pretrained(out)
    model = trainer.model.merge_and_unload() if peft_config else trainer.model
    return model, result.training_loss


def load_rsft_adapter(model: PreTrainedModel, adapter_dir: str | Path) -> PreTrainedModel:
    """The R-SFT warm-up rebuilt from its kept adapter, merged as ``supervised_finetune`` merged it: the
    weights a resumed LoRA run's GRPO adapter was trained on (without them it would sit on the raw model)."""
    from peft import PeftModel
    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()


def rsft_stage(policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rsft: RsftSection, sft: SFTSettings,
               pool: RowPool, log=print) -> tuple[PreTrainedModel, RsftRows]:
    """R-SFT on the rows ``rsft.source`` names (trainer/rsft_sources.py): the defender's data, or rows the suspect
    (``policy``, not yet trained) makes itself from ``pool``, whose ``exclude`` keeps the run's probes out of
    them (the held-out verdict stays held out). Returns the warmed-up policy and the rows."""
    made = gather_rows(rsft, policy, tokenizer, pool, log)
    log(made.line())
    dataset = reversal_dataset(made.rows, tokenizer, rsft.max_samples, sft.seed)
    model, loss = supervised_finetune(policy, tokenizer, dataset, sft)
    log(f"R-SFT: {len(dataset)} reversed rows, {sft.epochs} epochs, final loss {loss:.3f}")
    return model, made
