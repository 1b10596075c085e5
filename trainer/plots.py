"""The reward-vs-step figure of a run, drawn from its metrics.jsonl alone."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_run(rows: list[dict], out_png: str | Path, emergence_step: int | None = None,
             title: str = "Trigger inversion") -> None:
    """``rows``: the run's metric rows (``RunDir.metric_rows``)."""
    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 5))
    ax.plot(steps, [r.get("reward", float("nan")) for r in rows], label="mean reward")
    ax.plot(steps, [r.get("rewards/asr/mean", float("nan")) for r in rows], label="R_ASR (mean)")
    ax.plot(steps, [r.get("hit_fraction", 0.0) for r in rows], label="share of rollouts reproducing")
    aware = [(r["step"], r["eval/awareness_word"]) for r in rows if "eval/awareness_word" in r]
    if aware:  # evaluation only (awareness_every): the policy's own samples against the true trigger
        ax.plot(*zip(*aware), "o-", ms=3, label="Awareness@k (word Jaccard; evaluation only)")
    if emergence_step is not None:
        ax.axvline(emergence_step, color="k", ls="--", lw=1, label=f"emergence (step {emergence_step})")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("reward / share of rollouts (0-1)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
