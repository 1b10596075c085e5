"""The run's frozen suspect model, loaded once, and the oracles on it (training probes, held-out probes).

Every oracle of a run (the reward's, the held-out verdict's, a baseline's) goes through ``SuspectOracles``,
so they all use the backend the config names: an HF copy in this process, a vLLM engine in this process,
or a shared server. A model or engine is built on first use only: a server run loads no copy at all.
"""
from __future__ import annotations

from collections.abc import Callable

from envs.attacks import AttackSpec, probe_kinds
from envs.loading import load_model
from rewards.oracle import HFOracle, Oracle
from trainer.config import ModelSection, OracleSection, RunConfig


class SuspectOracles:
    """``suspect``: the run's model section (where the suspect is, its dtype, the reference model); ``settings``:
    its oracle section (backend, probes' insertion, batch sizes); ``seed`` seeds a vLLM engine."""

    def __init__(self, suspect: ModelSection, settings: OracleSection, spec: AttackSpec, tokenizer,
                 device: str | None = None, seed: int = 0):
        if settings.backend not in ORACLE_BACKENDS:  # a backend a plugin registered is known too
            from trainer.errors import ConfigError
            raise ConfigError(f"unknown oracle.backend {settings.backend!r:.40}; known: {', '.join(ORACLE_BACKENDS)}")
        self.suspect, self.settings, self.seed = suspect, settings, seed
        self.spec, self.tokenizer, self.device = spec, tokenizer, device
        self._model = None
        self._engine = None
        self._reference = None  # (model, tokenizer) of model.reference, loaded on first use
        self._oracles: dict[tuple[str, ...], Oracle] = {}

    @classmethod
    def from_run(cls, cfg: RunConfig, spec: AttackSpec, tokenizer, device: str | None = None) -> SuspectOracles:
        return cls(cfg.model, cfg.oracle, spec, tokenizer, device, cfg.seed)

    @property
    def model(self):
        """The frozen HF copy (GCG needs its gradients whatever the oracle backend)."""
        if self._model is None:
            self._model = load_model(self.suspect.path, self.suspect.allow_pickle, dtype=self.suspect.torch_dtype(),
                                     device=self.device)
        return self._model

    @property
    def engine(self):
        if self._engine is None:
            import torch

            from rewards.vllm_engine import build_engine
            gpu_share = ({"gpu_memory_utilization": self.settings.gpu_memory_utilization}
                         if torch.cuda.is_available() else {})
            self._engine = build_engine(self.suspect.path, dtype=str(self.suspect.torch_dtype()).removeprefix("torch."),
                                        seed=self.seed, **gpu_share)
        return self._engine

    def reference_oracle(self, probes: list[str]) -> Oracle | None:
        """An HF oracle on ``model.reference`` (None without one): the same judge, probes and insertion as the
        suspect's, so a rate on it says what a candidate does to a model without the backdoor."""
        if not self.suspect.reference:
            return None
        key = ("reference", *probes)
        if key not in self._oracles:
            from envs.tokenizer import load_tokenizer
            if self._reference is None:
                self._reference = (load_model(self.suspect.reference, self.suspect.allow_pickle,
                                              dtype=self.suspect.torch_dtype(), device=self.device),
                                   load_tokenizer(self.suspect.reference))
            model, tok = self._reference
            self._oracles[key] = HFOracle(model, tok, self.spec.judge, list(probes), self.settings.insertion,
                                          self.settings.max_new_tokens, self.settings.batch_size)
        return self._oracles[key]

    def oracle(self, probes: list[str]) -> Oracle:
        """One oracle per probe set, kept: audit mode's held-out test during GRPO and the verdict after it share
        their cached answers."""
        key = tuple(probes)
        if key not in self._oracles:
            self._oracles[key] = self.new_oracle(list(probes))
        return self._oracles[key]

    def new_oracle(self, probes: list[str]) -> Oracle:
        """A fresh oracle with an empty cache (a benchmark that counts oracle calls)."""
        oracle = self._backend(probes)
        # the judge-free scan scores each kind of request apart; the user's own probes carry no kinds
        if getattr(self.spec.judge, "set_level", False) and self.settings.probes_file is None:
            oracle.probe_kinds = probe_kinds(probes, self.settings.resolved_probe_set(self.suspect.path))
        return oracle

    def _backend(self, probes: list[str]) -> Oracle:
        build = ORACLE_BACKENDS.get(self.settings.backend)
        if build is None:
            from trainer.errors import ConfigError
            raise ConfigError(f"unknown oracle.backend {self.settings.backend!r:.40}; known: "
                              f"{', '.join(ORACLE_BACKENDS)}")
        return build(self, probes)


OracleBuilder = Callable[[SuspectOracles, list[str]], Oracle]
ORACLE_BACKENDS: dict[str, OracleBuilder] = {}  # oracle.backend -> how a run builds that oracle


def register_oracle_backend(name: str) -> Callable[[OracleBuilder], OracleBuilder]:
    """Add an ``oracle.backend`` a run can name (the builder gets the run's ``SuspectOracles`` and the probes)."""
    def add(build: OracleBuilder) -> OracleBuilder:
        if name in ORACLE_BACKENDS:
            raise ValueError(f"oracle backend {name!r} is registered already")
        ORACLE_BACKENDS[name] = build
        return build
    return add


@register_oracle_backend("hf")
def _hf(s: SuspectOracles, probes: list[str]) -> Oracle:
    return HFOracle(s.model, s.tokenizer, s.spec.judge, probes, s.settings.insertion, s.settings.max_new_tokens,
                    s.settings.batch_size)


@register_oracle_backend("vllm")
def _vllm(s: SuspectOracles, probes: list[str]) -> Oracle:
    from rewards.oracle_vllm import VLLMOracle
    return VLLMOracle(s.engine, s.tokenizer, s.spec.judge, probes, s.settings.insertion, s.settings.max_new_tokens)


@register_oracle_backend("http")
def _http(s: SuspectOracles, probes: list[str]) -> Oracle:
    from rewards.oracle_http import HTTPOracle
    o = s.settings
    return HTTPOracle(o.url, s.suspect.path, s.tokenizer, s.spec.judge, probes, o.insertion, o.max_new_tokens,
                      o.timeout, o.retries, o.api_key_env)
