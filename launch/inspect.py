"""Checkpoint inspection: what a run directory holds, readable without loading any model."""
from __future__ import annotations

from pathlib import Path

import yaml

from trainer.run_dir import RunDir, is_complete_checkpoint


def inspect_run(run_dir: str | Path) -> str:
    rd = RunDir(run_dir)
    if not rd.config.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    cfg = yaml.safe_load(rd.config.read_text())  # as written: a config from an older release still shows
    source = f"Hub {cfg['model_source']} at " if cfg.get("model_source") else ""
    lines = [f"run: {rd}", f"model: {source}{cfg.get('model')}  attack: {cfg.get('attack')}  "
             f"rsft: {cfg.get('rsft')}  seed: {cfg.get('seed')}"]

    def kind(p: Path) -> str:
        tags = ["DeepSpeed-sharded" if any(p.glob("global_step*")) else "plain"]
        if not is_complete_checkpoint(p):
            tags.append("INCOMPLETE")
        return f"{p.name} ({', '.join(tags)})"

    lines.append(f"checkpoints: {', '.join(kind(p) for p in rd.checkpoint_dirs()) or 'none'}; "
                 f"final model: {'yes' if rd.final.is_dir() else 'no'}")
    rows = rd.metric_rows()
    if rows:
        last = rows[-1]
        lines.append(f"last step {last['step']}: reward {last.get('reward', float('nan')):.3f}, "
                     f"reproducing share {last.get('hit_fraction', 0):.2f}, "
                     f"emergence step {last.get('emergence_step')}")
    if rd.ledger.is_file():
        top = rd.read_ledger().best(5)
        lines.append("best candidates (training-probe rate, times said, first step):")
        lines += [f"  {c['candidate']!r}: {c['rate']:.2f}, {c['count']}, {c['first_step']}" for c in top]
    info = rd.read_rsft_info()
    if info is not None:
        kind = "model-only" if info["model_only"] else "defender data"
        lines.append(f"R-SFT rows: {info['source']} ({kind}): "
                     + ", ".join(f"{k} {v}" for k, v in info["counts"].items()))
        top = (info.get("data_scan") or {}).get("top") or []
        if top:
            lines.append(f"data scan (found in the data): {top[0]['ngram']!r}, behaviour in "
                         f"{top[0]['behaviour_rows']}/{top[0]['rows']} rows holding it")
    if rd.has_result():
        r = rd.read_result()
        verdict = f"recovered {r.recovered_trigger!r}" if r.found else "no trigger found"
        lines.append(f"result: {verdict}, held-out reproduction {r.reproduction_rate:.2f}")
    return "\n".join(lines)
