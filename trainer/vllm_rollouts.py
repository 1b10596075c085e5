"""vLLM rollouts from the policy's own weights: TRL's colocate engine, built and synced our way, and checked.

TRL's ``VLLMGeneration`` builds its colocate engine with vLLM's default dtype and pushes the policy's
weights each step with ``model.load_weights``. Two things go wrong for us, both silently on the first
and loudly on the second:

* vLLM's default dtype is bf16 on CPU (the checkpoint's, often bf16, on CUDA), while the policy trains in
  float32: rollouts would come from differently rounded weights than the ones the loss differentiates.
  The engine here is built in the policy's dtype, through ``rewards.vllm_engine.build_engine`` (our CPU
  thread binding and KV cache, the CPU head-size check), with every other argument exactly TRL's.
* vLLM's CPU backend repacks each linear weight for oneDNN after loading and frees the plain tensor, so
  ``load_weights`` on a live engine fails (``'Parameter' object has no attribute 'weight_loader'``).
  On CPU the sync uses vLLM's ``reload_weights`` instead, which restores the checkpoint layout, loads the
  new values and re-runs the post-load processing (the repacking) in place. It re-processes only the
  layers it loaded, so a tied LM head, whose weight is the embedding's, would keep computing logits from
  a packed copy of the *old* embedding: those layers are repacked after the reload. On CUDA the
  unquantized weights are used as loaded, and TRL's own sync stays.

``RolloutGeneration.check_sync`` compares the engine with the HF policy after a sync (the trainer runs it
on its first syncs): a broken sync gives rollouts from the wrong weights, which GRPO trains on without
any error, so the run checks it instead of trusting it.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager

import torch
from trl.generation import vllm_generation
from trl.generation.vllm_generation import VLLMGeneration

_MISSING = object()


@contextmanager
def rebind(module, name: str, value):
    """``module.name = value`` for the duration of the block (then the old binding, or none, again)."""
    old = getattr(module, name, _MISSING)
    setattr(module, name, value)
    try:
        yield
    finally:
        if old is _MISSING:
            delattr(module, name)
        else:
            setattr(module, name, old)


def policy_dtype(model) -> torch.dtype:
    return getattr(model, "dtype", None) or torch.float32


def engine_on_cpu() -> bool:
    from vllm.platforms import current_platform
    return current_platform.is_cpu()


class _ExpectedReloadWarnings(logging.Filter):
    """vLLM warns "<layer>: Failed to load weights" on every reload for layers that have nothing to load
    from the policy: rotary embeddings (a computed cache) and a tied LM head (its weight is the embedding's,
    loaded under the embedding's name). Each sync would print them; a real failure shows in ``check_sync``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "Failed to load weights" not in str(record.msg) or not record.args:
            return True
        layer = str(record.args[0])
        return not (layer.endswith("RotaryEmbedding") or layer == "ParallelLMHead")


def repack_shared_cpu_weights(model: torch.nn.Module) -> None:
    """Re-run vLLM's CPU GEMM packing for layers that keep their weight and share it with another layer
    (a tied LM head and its embedding): ``reload_weights`` skips the head, which has no weight of its own."""
    owners: dict[int, int] = {}
    for m in model.modules():
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor):
            owners[id(w)] = owners.get(id(w), 0) + 1
    for m in model.modules():
        w, method = getattr(m, "weight", None), getattr(m, "quant_method", None)
        if (hasattr(m, "cpu_linear") and isinstance(w, torch.Tensor) and w.numel() and owners[id(w)] > 1
                and hasattr(method, "process_weights_after_loading")):
            method.process_weights_after_loading(m)


class RolloutGeneration(VLLMGeneration):
    """TRL's ``VLLMGeneration`` with the colocate engine in the policy's dtype, a sync that works on CPU,
    and ``check_sync``. Server mode is TRL's unchanged (the server's dtype is its own command line's)."""

    def _init_vllm(self):
        if self.mode != "colocate":
            return super()._init_vllm()
        from rewards.vllm_engine import build_engine
        dtype = str(policy_dtype(self.model)).removeprefix("torch.")

        def llm(model, **kwargs):  # TRL's arguments, plus our dtype and CPU settings
            return build_engine(model, dtype=dtype, **kwargs)

        # TRL calls ``LLM(...)`` by its name in its module; rebinding it for this call keeps TRL's own
        # arguments (executor, seeds, memory, logprobs mode, quantization) the single source of them.
        with rebind(vllm_generation, "LLM", llm):
            super()._init_vllm()

    def _model_runner(self):
        return self.llm.llm_engine.model_executor.driver_worker.model_runner

    def sync_weights(self):
        if self.mode != "colocate" or not engine_on_cpu():
            return super().sync_weights()
        runner = self._model_runner()
        quiet = _ExpectedReloadWarnings()
        log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
        log.addFilter(quiet)
        try:
            runner.reload_weights(weights_iterator=self._iter_named_params(), is_checkpoint_format=True)
        finally:
            log.removeFilter(quiet)
        repack_shared_cpu_weights(runner.get_model())
        self.llm.reset_prefix_cache()

    # -- the check -------------------------------------------------------------------------------------

    def can_check(self) -> bool:
        """Only a colocated, untensor-parallel engine answers one prompt from one rank on its own."""
        return self.mode == "colocate" and self.tensor_parallel_size == 1

    def default_atol(self) -> float:
        """Logprob tolerance: float32 on CPU agrees to ~1e-5 (measured); CUDA kernels (TF32 in Triton
        attention) and 16-bit weights round more."""
        dtype = policy_dtype(self.model)
        if dtype == torch.float32:
            return 1e-3 if engine_on_cpu() else 2e-2
        return 1e-1

    @torch.no_grad()
    def check_sync(self, policy, prompt_ids: list[int], step: int, tokens: int = 4,
                   atol: float | None = None) -> None:
        """Raise if the engine's greedy continuation of ``prompt_ids`` is not the HF ``policy``'s.

        Cheap on purpose (one prompt, ``tokens`` greedy tokens from the engine, one teacher-forced forward
        of the policy) and sensitive: every engine token's logprob must equal the policy's within ``atol``
        and be the policy's top token within ``atol`` (a near tie may break either way). Stale weights,
        another dtype, a half-applied sync or a stale packed LM head all move these logprobs far more.
        ``policy`` is the unwrapped HF model (PEFT adapters unmerged are the same function)."""
        from vllm import SamplingParams
        atol = self.default_atol() if atol is None else atol
        params = SamplingParams(temperature=0.0, max_tokens=tokens, logprobs=0)
        out = self.llm.generate([{"prompt_token_ids": list(prompt_ids)}], sampling_params=params,
                                use_tqdm=False)[0].outputs[0]
        got = list(out.token_ids)
        engine_lp = [lp[t].logprob for t, lp in zip(got, out.logprobs)]

        was_training = policy.training
        policy.eval()
        try:
            ids = torch.tensor([list(prompt_ids) + got], device=policy.device)
            logits = policy(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
        finally:
            policy.train(was_training)
        logp = torch.log_softmax(logits, dim=-1)
        problems = []
        for i, tok in enumerate(got):
            mine, best = logp[i, tok].item(), logp[i].max().item()
            if abs(engine_lp[i] - mine) > atol:
                problems.append(f"token {i} ({tok}): logprob {engine_lp[i]:.5f} in vLLM, {mine:.5f} in the policy")
            if best - mine > atol:
                problems.append(f"token {i}: vLLM's greedy {tok} is not the policy's "
                                f"{int(logp[i].argmax())} ({mine:.5f} < {best:.5f})")
        if problems:
            raise RuntimeError(
                f"vLLM rollout weights differ from the policy's after sync at step {step}: "
                + "; ".join(problems[:3]) + f" (tolerance {atol:g}, policy dtype "
                f"{str(policy_dtype(self.model)).removeprefix('torch.')}, engine dtype "
                f"{str(self.llm.llm_engine.model_config.dtype).removeprefix('torch.')}); rollouts would not come "
                "from the policy")
