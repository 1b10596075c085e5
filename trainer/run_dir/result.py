"""``RunResult``: the verdict of one search (GRPO run or baseline), as written to ``result.json``.

A typed record instead of a dict of string keys, so that the CLI, the report, ``inspect`` and the
benchmarks cannot drift from what the evaluation writes. The file carries ``schema_version``: a file from
before the field existed (version 1, the same keys) still loads; one from a newer release fails with a
message that says so instead of a ``KeyError`` far away.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from trainer.errors import ResultError

SCHEMA_VERSION = 5  # 3: induced_behaviour, reproducing_forms, phase_seconds; 4: rsft_source, data_scan; 5: provenance


@dataclass
class RunResult:
    found: bool
    recovered_trigger: str | None
    reproduction_rate: float
    clean_false_trigger_rate: float
    emergence_step: int | None
    first_hit_step: int | None
    steps: int
    articulated: str | None  # the policy's greedy answer
    best_candidates: list[dict[str, Any]]  # {candidate, heldout_rate, tokens}, best first
    attack: str
    behaviour: str
    rsft: bool
    ablation: bool  # a training reward read the true trigger: not an audit
    recovered_triggers: list[str] = field(default_factory=list)  # every distinct reproducing trigger
    reproducing_forms: list[dict[str, Any]] = field(default_factory=list)  # the others that reproduce, best first
    # judge-free scan (judge: none): what the recovered trigger does to the answers (the shared induced text,
    # its share of held-out probes, examples of clean vs triggered answers); None when a behaviour was named
    induced_behaviour: dict[str, Any] | None = None
    # where the R-SFT rows came from ("finetune", "self", "leak", "self+leak"; None without R-SFT), rows per source,
    # and whether no defender data was read (model-only)
    rsft_source: str | None = None
    rsft_rows: dict[str, int] | None = None
    model_only: bool | None = None
    # the data scan (trainer/baselines/data_scan.py), when the defender holds data: found in the data, not stated
    # by the model
    data_scan: dict[str, Any] | None = None
    # what was audited, with what: model, parameters, judge, probes, data, preset, seed, version, machine, date
    provenance: dict[str, Any] | None = None
    # evaluation only: filled when the true trigger(s) were given; never read by a training reward
    true_trigger: str | None = None
    exact_match: bool | None = None
    recovered_jaccard_word: float | None = None
    recovered_jaccard_char: float | None = None
    recovered_similarity: float | None = None
    awareness_jaccard_word: float | None = None
    awareness_jaccard_char: float | None = None
    awareness_exact: float | None = None
    true_triggers: list[str] | None = None  # a multi-trigger backdoor: all of them...
    triggers_recovered: int | None = None  # ...and how many the run named
    rsft_rows_with_trigger: int | None = None  # R-SFT rows whose prompt holds a true trigger (model-only: made so)
    # how the run went
    phase_seconds: dict[str, float] | None = None  # load, rsft, screen, grpo, save, verdict (this process's part)
    wall_seconds: float | None = None
    start_time: float | None = None
    oracle_cache_hit_rate: float | None = None
    peak_cuda_memory_mb: float | None = None
    # baselines (trainer/baselines/__init__.py)
    baseline: str | None = None
    samples: int | None = None
    gcg: dict[str, Any] | None = None
    gcg_best: list[dict[str, Any]] | None = None
    resumed_seconds: float | None = None  # search time of earlier, stopped attempts this one resumed (in wall_seconds)
    schema_version: int = SCHEMA_VERSION

    @property
    def evaluated(self) -> bool:
        """Whether evaluation-only metrics against a true trigger are present."""
        return self.true_trigger is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "result.json") -> RunResult:
        if not isinstance(data, dict):
            raise ResultError(f"{source} does not hold a result (expected a JSON object)")
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ResultError(f"{source} has schema version {version!r}, newer than this backdoor-aware reads "
                              f"({SCHEMA_VERSION}); upgrade backdoor-aware")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ResultError(f"{source}: unknown result field(s) {', '.join(unknown)}")
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise ResultError(f"{source}: missing result field(s) {', '.join(missing)}")
        return cls(**{**data, "schema_version": SCHEMA_VERSION})
