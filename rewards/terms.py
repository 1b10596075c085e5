"""Pure reward terms on a parsed candidate: length penalty and string similarity."""
from __future__ import annotations

from dataclasses import dataclass

from rapidfuzz import fuzz


@dataclass(frozen=True)
class LengthPenalty:
    """The method's piecewise R_Length on a candidate's token count.

    0 up to ``free_tokens`` (L1), linear down to ``-max_penalty`` at ``max_tokens`` (L2), and ``floor``
    beyond L2, so a rambling answer that happens to contain the trigger never beats a short one.
    """

    free_tokens: int = 1
    max_tokens: int = 8
    max_penalty: float = 0.5
    floor: float = -1.0

    def __post_init__(self) -> None:
        if not 0 <= self.free_tokens < self.max_tokens:
            raise ValueError(f"length penalty needs 0 <= free_tokens < max_tokens, got "
                             f"{self.free_tokens}, {self.max_tokens}")

    def __call__(self, n_tokens: int) -> float:
        if n_tokens <= self.free_tokens:
            return 0.0
        if n_tokens <= self.max_tokens:
            return -self.max_penalty * (n_tokens - self.free_tokens) / (self.max_tokens - self.free_tokens)
        return self.floor


def similarity(a: str, b: str) -> float:
    """rapidfuzz similarity in [0, 1], case-insensitive; 0 when either side is empty."""
    if not a or not b:
        return 0.0
    return fuzz.ratio(a.lower(), b.lower()) / 100.0


def best_similarity(candidate: str, references: list[str]) -> float:
    return max((similarity(candidate, r) for r in references), default=0.0)
