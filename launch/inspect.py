"""Checkpoint inspection: what a run directory holds, readable without loading any model."""
from __future__ import annotations

import json
from pathlib import Path

import yaml


def inspect_run(run_dir: str | Path) -> str:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    lines = [f"run: {run_dir}", f"model: {cfg.get('model')}  attack: {cfg.get('attack')}  "
             f"rsft: {cfg.get('rsft')}  seed: {cfg.get('seed')}"]
    ckpts = sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    def kind(p: Path) -> str:
        tags = ["DeepSpeed-sharded" if any(p.glob("global_step*")) else "plain"]
        if not (p / "COMPLETE").is_file():
            tags.append("INCOMPLETE")
        return f"{p.name} ({', '.join(tags)})"

    lines.append(f"checkpoints: {', '.join(kind(p) for p in ckpts) or 'none'}; "
                 f"final model: {'yes' if (run_dir / 'final').is_dir() else 'no'}")
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
        if rows:
            last = rows[-1]
            lines.append(f"last step {last['step']}: reward {last.get('reward', float('nan')):.3f}, "
                         f"reproducing share {last.get('hit_fraction', 0):.2f}, "
                         f"emergence step {last.get('emergence_step')}")
    ledger = run_dir / "ledger.json"
    if ledger.is_file():
        cands = json.loads(ledger.read_text())["candidates"]
        top = sorted(cands.items(), key=lambda kv: (-kv[1]["rate"], -kv[1]["count"]))[:5]
        lines.append("best candidates (training-probe rate, times said, first step):")
        lines += [f"  {c!r}: {v['rate']:.2f}, {v['count']}, {v['first_step']}" for c, v in top]
    result = run_dir / "result.json"
    if result.is_file():
        r = json.loads(result.read_text())
        verdict = f"recovered {r['recovered_trigger']!r}" if r.get("found") else "no trigger found"
        lines.append(f"result: {verdict}, held-out reproduction {r.get('reproduction_rate', 0):.2f}")
    return "\n".join(lines)
