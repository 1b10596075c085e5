"""Buffer replay: keep successful articulations and replay them into groups with no reward variance.

Early in training every rollout of a group usually scores the same (nothing reproduces), so GRPO's
group-normalised advantage is zero and the step teaches nothing. Replacing a few rollouts of such a
group with earlier successes restores a gradient towards what worked (the method's stage 2).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class ReplayBuffer:
    threshold: float = 0.5
    capacity: int = 32
    entries: dict[str, float] = field(default_factory=dict)  # candidate -> reproduction rate

    def add(self, candidates: list[str], rates: list[float]) -> None:
        for c, r in zip(candidates, rates):
            if r >= self.threshold:
                self.entries[c] = max(r, self.entries.get(c, 0.0))
        if len(self.entries) > self.capacity:
            keep = sorted(self.entries.items(), key=lambda kv: (-kv[1], len(kv[0])))[:self.capacity]
            self.entries = dict(keep)

    def sample(self, n: int, rng: random.Random) -> list[str]:
        """``n`` candidates, weighted by reproduction rate."""
        if not self.entries:
            return []
        cands = list(self.entries)
        return rng.choices(cands, weights=[self.entries[c] for c in cands], k=n)

    def __len__(self) -> int:
        return len(self.entries)
