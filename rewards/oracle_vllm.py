"""Oracle backend on an in-process vLLM engine (``rewards.vllm_engine.build_engine``).

Same judgements as the HF oracle for the same model: each user text is rendered with the chat template
(``render_user``) and tokenised by the project's HF tokenizer exactly as ``greedy_completions`` does
(``add_special_tokens=False``: the template already holds any BOS), and vLLM gets those token ids, not text,
so its own tokenizer (which ``AutoTokenizer`` may load differently, tokenizer.py issue #2) never sees the
prompt. Answers are greedy and decoded from vLLM's token ids with the same tokenizer and
``skip_special_tokens=True``, so they are byte-identical to the HF decoding path; vLLM's detokenizer (which
puts a leading space before word-level answers) is switched off.

Several oracles (training probes, held-out probes) can share one engine: each holds a reference to it and
makes one synchronous ``generate`` call per step. Any failure of the engine is an ``OracleError``, never a
score of 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from envs.chat import answer_ids, render_user
from envs.judges import Judge
from rewards.oracle import CachedReproduction, OracleError, OracleStats


@dataclass
class VLLMOracle(CachedReproduction):
    """``llm`` is a ``vllm.LLM`` (shareable between oracles); the empty candidate "" is the baseline."""

    llm: Any
    tokenizer: PreTrainedTokenizerBase
    judge: Judge
    probes: list[str]
    insertion: str = "prefix"
    max_new_tokens: int | None = None
    stats: OracleStats = field(default_factory=OracleStats)
    _rates: dict[str, float] = field(default_factory=dict, repr=False)
    _gains: dict[str, float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.probes:
            raise ValueError("the oracle needs at least one probe prompt")

    def _prompt_ids(self, user_texts: list[str]) -> list[list[int]]:
        texts = [render_user(self.tokenizer, u) for u in user_texts]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def _run(self, prompt_ids: list[list[int]], **sampling: Any) -> list[Any]:
        """One batched ``llm.generate`` over token-id prompts; every failure becomes an ``OracleError``."""
        try:
            from vllm import SamplingParams
            params = SamplingParams(temperature=0.0, detokenize=False, **sampling)
            outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
        except Exception as e:  # noqa: BLE001 - whatever vLLM raises, the step must fail loudly
            raise OracleError(f"vLLM oracle failed on {len(prompt_ids)} prompts: {type(e).__name__}: {e}") from e
        if len(outputs) != len(prompt_ids) or any(not o.outputs for o in outputs):
            raise OracleError(f"vLLM oracle returned {len(outputs)} results for {len(prompt_ids)} prompts")
        return outputs

    def _generate(self, queries: list[str]) -> list[str]:
        outputs = self._run(self._prompt_ids(queries), max_tokens=self.max_new_tokens or self.judge.max_new_tokens)
        return [self.tokenizer.decode(list(o.outputs[0].token_ids), skip_special_tokens=True) for o in outputs]

    def _target_logprobs(self, candidates: list[str]) -> list[float]:
        """As ``HFOracle._target_logprobs``: per candidate, the mean over probes of the likeliest target's mean
        per-token log-prob, read from vLLM's prompt log-probs of prompt + target (one generate call)."""
        prompts = self._prompt_ids([q for c in candidates for q in self._queries(c)])
        targets = [answer_ids(self.tokenizer, t) for t in self.judge.likelihood_targets]
        outputs = self._run([p + t for p in prompts for t in targets], max_tokens=1, prompt_logprobs=0)
        best = []
        for i in range(len(prompts)):
            means = []
            for j, t in enumerate(targets):
                out = outputs[i * len(targets) + j]
                if out.prompt_logprobs is None:
                    raise OracleError("vLLM oracle returned no prompt log-probs")
                tail = out.prompt_logprobs[-len(t):]
                means.append(sum(step[tok].logprob for step, tok in zip(tail, t)) / len(t))
            best.append(max(means, default=-math.inf))
        n = len(self.probes)
        return [sum(best[k * n:(k + 1) * n]) / n for k in range(len(candidates))]
