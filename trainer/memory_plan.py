"""What a run will need per GPU, estimated from the model's config.json before anything is loaded.

An 8B audit that runs out of memory after 20 minutes of loading and R-SFT wastes a GPU slot; the plan
says in one line what the run will hold (policy, oracle copy or engine, trainable state, the largest
working set) and refuses a plan that cannot fit, naming the setting that would make it fit.

The figures are estimates, deliberately on the high side: weights and optimizer state are exact counts
from the model's shape; working sets (KV cache, activations kept for the backward pass, logits) use the
standard per-token formulas with the run's batch sizes and an assumed prompt length. The GPU benchmark
(``benchmarks/results/gpu/shape_8b.md``) sets the estimate beside the measured peak.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from trainer.config import ConfigError

GiB = 2**30
# the inversion prompt in its chat template when the model's tokenizer cannot say (memory_line measures it;
# a real chat template's is about 50 tokens); the fallback errs high
INVERSION_PROMPT_TOKENS = 160
PROBE_TOKENS = 64  # a clean probe in a chat template, before the candidate is inserted
RSFT_MAX_LENGTH = 256  # trainer/rsft.py's SFT max_length
OVERHEAD = 1.10  # allocator fragmentation and the CUDA context, on top of everything counted
OVERHEAD_BYTES = 1 * GiB
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer (Llama/Qwen/Mistral layout) that memory depends on."""
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool

    @classmethod
    def from_config(cls, c: dict) -> ModelShape:
        try:
            hidden, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
            return cls(hidden=hidden, layers=int(c["num_hidden_layers"]), heads=heads,
                       kv_heads=int(c.get("num_key_value_heads") or heads),
                       head_dim=int(c.get("head_dim") or hidden // heads),
                       intermediate=int(c.get("intermediate_size") or 4 * hidden), vocab=int(c["vocab_size"]),
                       tied=bool(c.get("tie_word_embeddings", False)))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"config.json lacks the sizes a memory plan needs ({e})") from None

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> ModelShape:
        c = json.loads((Path(model_dir) / "config.json").read_text())
        return cls.from_config(c.get("text_config", c))

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of the linear layers in one block: what ``all-linear`` LoRA adapts."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    @property
    def n_params(self) -> int:
        block = sum(a * b for a, b in self.linear_shapes()) + 2 * self.hidden
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.layers * block + self.hidden

    def lora_params(self, r: int) -> int:
        return self.layers * sum(r * (a + b) for a, b in self.linear_shapes())

    def kv_bytes_per_token(self, b: int) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * b

    def activation_bytes_per_token_layer(self, b: int) -> int:
        """What one block keeps for its backward pass, per token (flash/SDPA attention, SwiGLU MLP): the
        inputs of the norms, projections and MLP (~12 hidden-sized tensors) and four intermediate-sized ones."""
        return b * (12 * self.hidden + 4 * self.intermediate)


@dataclass
class MemoryPlan:
    """Bytes per GPU (or, on CPU, per machine: all local processes together)."""
    device: str
    capacity: int
    resident: dict[str, int] = field(default_factory=dict)  # held for the whole run
    working: dict[str, int] = field(default_factory=dict)  # one at a time: the plan counts the largest
    fixes: list[str] = field(default_factory=list)  # settings that would shrink the plan, largest first

    @property
    def peak_working(self) -> tuple[str, int]:
        return max(self.working.items(), key=lambda kv: kv[1]) if self.working else ("none", 0)

    @property
    def total(self) -> int:
        return int((sum(self.resident.values()) + self.peak_working[1]) * OVERHEAD) + OVERHEAD_BYTES

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity

    def line(self) -> str:
        parts = " + ".join(f"{k} {v / GiB:.1f}" for k, v in self.resident.items() if v)
        name, peak = self.peak_working
        return (f"memory plan per {'GPU' if self.device != 'cpu' else 'machine'} (estimate): {parts} + "
                f"{name} {peak / GiB:.1f} + overhead = {self.total / GiB:.1f} GiB of "
                f"{self.capacity / GiB:.1f} GiB ({self.device})")


def zero_stage(deepspeed: str | None) -> int:
    if not deepspeed:
        return 0
    try:
        return int(json.loads(Path(deepspeed).read_text()).get("zero_optimization", {}).get("stage", 0))
    except (OSError, ValueError, AttributeError):
        return 0


def device_capacity() -> tuple[str, int]:
    """This machine's memory for one process's share of the run: the GPU's, else the RAM's."""
    import torch
    if torch.cuda.is_available():
        i = torch.cuda.current_device()
        return torch.cuda.get_device_name(i), torch.cuda.get_device_properties(i).total_memory
    return "cpu", os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass
class Placement:
    """Where a run's processes go: ``world`` processes in all, ``local_processes`` of them on this machine, each
    on a ``device`` of ``capacity`` bytes ("cpu": the machine's RAM, which the local processes share)."""
    device: str
    capacity: int
    world: int = 1
    local_processes: int = 1


@dataclass
class Lengths:
    """The sequence lengths the working sets scale with: the inversion prompt's tokens (the rollouts' prefix) and
    the judge's answer tokens per probe."""
    prompt_tokens: int = INVERSION_PROMPT_TOKENS
    judge_new_tokens: int = 16


def plan_memory(cfg, shape: ModelShape, where: Placement, lengths: Lengths | None = None) -> MemoryPlan:
    """The run's memory per GPU: ``cfg`` a resolved ``RunConfig`` (dtype not ``auto``; it reads the model, rsft,
    grpo and oracle sections: the plan is the whole run's)."""
    world, device, capacity, local_processes = where.world, where.device, where.capacity, where.local_processes
    lengths = lengths or Lengths()
    judge_new_tokens, prompt_tokens = lengths.judge_new_tokens, lengths.prompt_tokens
    b = DTYPE_BYTES[cfg.model.dtype]
    p = shape.n_params
    stage = zero_stage(cfg.grpo.deepspeed)
    shard = world if stage >= 1 else 1
    plan = MemoryPlan(device, capacity)
    gpu = device != "cpu"

    plan.resident["policy"] = p * b // (world if stage == 3 else 1)
    if cfg.grpo.use_lora:  # peft keeps adapters in float32: weights, gradients, Adam's two moments
        plan.resident["LoRA + optimizer"] = shape.lora_params(cfg.grpo.lora_r) * 16
    else:  # gradients in the training dtype, Adam's two moments like the parameters
        plan.resident["gradients + optimizer"] = p * 3 * b // shard
    # a vLLM engine takes its share of the GPU, and at least a whole copy of the weights (no tensor parallelism)
    if cfg.oracle.backend == "hf":
        plan.resident["oracle copy"] = p * b
    elif cfg.oracle.backend == "vllm" and gpu:
        plan.resident["oracle vLLM engine"] = max(int(cfg.oracle.gpu_memory_utilization * capacity), p * b)
    if cfg.grpo.use_vllm and cfg.grpo.vllm_mode == "colocate" and gpu:
        plan.resident["rollout vLLM engine"] = max(int(cfg.grpo.vllm_gpu_memory_utilization * capacity), p * b)

    rollouts = cfg.grpo.prompts_per_step * cfg.grpo.num_generations // world
    seq = prompt_tokens + cfg.grpo.max_completion_length
    if not cfg.grpo.use_vllm:
        plan.working["rollout KV cache"] = rollouts * seq * shape.kv_bytes_per_token(b)
    if cfg.oracle.backend == "hf":
        batch = min(cfg.oracle.batch_size, rollouts * cfg.oracle.n_probes)
        new_tokens = cfg.oracle.max_new_tokens or judge_new_tokens
        tokens = batch * (PROBE_TOKENS + cfg.grpo.max_completion_length + new_tokens)
        # KV cache, plus one block's prefill intermediates (gate, up, product) and the last-token logits
        plan.working["oracle batch"] = (tokens * shape.kv_bytes_per_token(b) + tokens * 3 * shape.intermediate * b
                                        + batch * shape.vocab * 4)
    plan.working["GRPO update"] = _training_bytes(shape, b, rollouts, seq, cfg.grpo.max_completion_length,
                                                  cfg.model.gradient_checkpointing)
    if cfg.rsft.enabled:
        plan.working["R-SFT batch"] = _training_bytes(shape, b, cfg.rsft.batch_size, RSFT_MAX_LENGTH,
                                                      RSFT_MAX_LENGTH, cfg.model.gradient_checkpointing)
    if not gpu:
        plan.resident = {k: v * local_processes for k, v in plan.resident.items()}
        plan.working = {k: v * local_processes for k, v in plan.working.items()}
    plan.fixes = _fixes(cfg, plan, world, stage)
    return plan


def _training_bytes(shape: ModelShape, b: int, batch: int, seq: int, logit_tokens: int, checkpointing: bool) -> int:
    tokens = batch * seq
    per_layer = shape.activation_bytes_per_token_layer(b)
    if checkpointing:  # each block keeps its input; one block at a time recomputes its internals
        acts = tokens * (shape.layers * shape.hidden * b + per_layer)
    else:
        acts = tokens * shape.layers * per_layer
    logits = batch * logit_tokens * shape.vocab * (b + 4)  # the logits and their float32 log-softmax
    return acts + logits


def _fixes(cfg, plan: MemoryPlan, world: int, stage: int) -> list[str]:
    """Settings that would shrink this plan, the largest saving first."""
    out: list[tuple[int, str]] = []
    name, peak = plan.peak_working
    if name in ("GRPO update", "R-SFT batch") and not cfg.model.gradient_checkpointing:
        out.append((peak * 3 // 4, "model.gradient_checkpointing: true"))
    if name == "GRPO update":
        out.append((peak // 2, "fewer rollouts per GPU (grpo.prompts_per_step x grpo.num_generations, or more GPUs)"))
    if name == "oracle batch":
        out.append((peak // 2, "oracle.batch_size (smaller)"))
    if "gradients + optimizer" in plan.resident:
        out.append((plan.resident["gradients + optimizer"], "grpo.use_lora: true"))
    if "oracle copy" in plan.resident:
        out.append((plan.resident["oracle copy"], "oracle.backend: http (a `vllm serve` oracle on its own GPU)"))
    engines = {"rollout vLLM engine": "grpo.vllm_mode: server (rollouts on their own GPUs)",
               "oracle vLLM engine": "oracle.gpu_memory_utilization (smaller) or oracle.backend: http"}
    out += [(plan.resident[k] // 2, fix) for k, fix in engines.items() if k in plan.resident]
    if stage < 3 and world > 1:
        out.append((plan.resident["policy"] * (world - 1) // world, "grpo.deepspeed: zero3"))
    if cfg.model.dtype == "float32" and plan.device != "cpu":
        out.append((plan.resident["policy"] // 2, "model.dtype: bfloat16"))
    return [msg for _, msg in sorted(out, key=lambda t: -t[0])]


def check_plan(plan: MemoryPlan) -> None:
    """A one-line error for a plan that cannot fit, naming what to change (``model.memory_check: false`` overrides)."""
    if plan.fits:
        return
    fixes = "; ".join(plan.fixes[:3] + ["or model.memory_check: false to try anyway"])
    raise ConfigError(f"the run needs about {plan.total / GiB:.1f} GiB per "
                      f"{'GPU' if plan.device != 'cpu' else 'machine'} but {plan.device} has "
                      f"{plan.capacity / GiB:.1f} GiB ({plan.peak_working[0]} is the largest part). Change: {fixes}")
