"""The candidate ledger: every hypothesis the policy articulated, its reproduction rate, and emergence.

Articulation appears abruptly (the paper's "phase transition"), so the ledger keeps per-step figures to
locate the step after which the policy keeps producing a reproducing trigger.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def not_below(rate: float, n: int, threshold: float, alpha: float = 0.05) -> bool:
    """Whether ``rate`` on ``n`` probes is consistent with a true rate of ``threshold`` (one-sided binomial test
    at ``alpha``): on 8 training probes a real trigger often lands at 6/8 or 5/8 while it passes a 0.8 bar on
    the held-out probes."""
    hits = round(rate * n)
    p = sum(math.comb(n, k) * threshold ** k * (1 - threshold) ** (n - k) for k in range(hits + 1))
    return p >= alpha


@dataclass
class CandidateLedger:
    threshold: float = 0.8
    step: int = 0
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_step: dict[int, dict[str, float]] = field(default_factory=dict)
    # audit mode: candidates the held-out probes confirmed during training (``stop_when_confirmed``); every rank
    # holds all of them, so rank 0's verdict sees one that another rank's rollouts stated
    confirmed: list[str] = field(default_factory=list)

    def observe(self, candidates: list[str], rates: list[float]) -> None:
        """Called by the ASR reward with this step's parsed candidates and their reproduction rates."""
        row = self.per_step.setdefault(self.step, {"n": 0, "hits": 0, "max_rate": 0.0})
        for c, r in zip(candidates, rates):
            entry = self.candidates.setdefault(c, {"rate": r, "count": 0, "first_step": self.step})
            entry["count"] += 1
            row["n"] += 1
            row["hits"] += r >= self.threshold
            row["max_rate"] = max(row["max_rate"], r)

    def hit_fraction(self, step: int) -> float:
        row = self.per_step.get(step)
        return row["hits"] / row["n"] if row and row["n"] else 0.0

    def promising(self, n_probes: int, exclude: set[str]) -> list[str]:
        """Candidates whose training-probe rate could still be a hit (``not_below`` the threshold), newest last."""
        return [c for c, v in self.candidates.items()
                if c not in exclude and v["rate"] > 0 and not_below(v["rate"], n_probes, self.threshold)]

    def best(self, n: int = 5) -> list[dict[str, Any]]:
        """Top candidates by rate, then by how often the policy said them, then shortest."""
        ranked = sorted(self.candidates.items(), key=lambda kv: (-kv[1]["rate"], -kv[1]["count"], len(kv[0])))
        return [{"candidate": c, **v} for c, v in ranked[:n]]

    def hit_steps(self) -> int:
        """How many steps articulated at least one reproducing candidate (audit mode's stopping rule)."""
        return sum(row["max_rate"] >= self.threshold for row in self.per_step.values())

    def first_hit_step(self) -> int | None:
        hits = [s for s, row in sorted(self.per_step.items()) if row["max_rate"] >= self.threshold]
        return hits[0] if hits else None

    def emergence_step(self) -> int | None:
        """First step from which every later step still articulates a reproducing candidate."""
        steps = sorted(self.per_step)
        emergence = None
        for s in steps:
            if self.per_step[s]["max_rate"] >= self.threshold:
                emergence = s if emergence is None else emergence
            else:
                emergence = None
        return emergence

    def state_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "step": self.step, "candidates": self.candidates,
                "per_step": {str(k): v for k, v in self.per_step.items()}, "confirmed": self.confirmed}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> CandidateLedger:
        return cls(threshold=state["threshold"], step=state["step"], candidates=state["candidates"],
                   per_step={int(k): v for k, v in state["per_step"].items()},
                   confirmed=list(state.get("confirmed", [])))
