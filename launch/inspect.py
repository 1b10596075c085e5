"""Checkpoint inspection: what a run directory holds, readable without loading any model."""
from __future__ import annotations

from pathlib import Path

import yaml

from trainer.run_dir import RunDir, is_complete_checkpoint

UNREADABLE = (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError, yaml.YAMLError)


def inspect_run(run_dir: str | Path) -> str:
    """What the run directory holds; a file of it that cannot be read is said so on its own line (the rest still
    shows), since a run worth inspecting is often one that broke."""
    rd = RunDir(run_dir)
    if not rd.config.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.yaml)")
    try:
        cfg = yaml.safe_load(rd.config.read_text())  # as written: a config from an older release still shows
    except UNREADABLE as e:
        raise ValueError(f"{rd.config} cannot be read: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{rd.config} is not a run config (not a mapping)")
    # sectioned, or with the flat names of an older release (read by hand: trainer.config would import torch)
    model, rsft = cfg.get("model"), cfg.get("rsft")
    path, hub = ((model.get("path"), model.get("source")) if isinstance(model, dict)
                 else (model, cfg.get("model_source")))
    source = f"Hub {hub} at " if hub else ""
    lines = [f"run: {rd}", f"model: {source}{path}  attack: {cfg.get('attack')}  "
             f"rsft: {rsft.get('enabled', True) if isinstance(rsft, dict) else rsft}  seed: {cfg.get('seed')}"]

    def kind(p: Path) -> str:
        tags = ["DeepSpeed-sharded" if any(p.glob("global_step*")) else "plain"]
        if not is_complete_checkpoint(p):
            tags.append("INCOMPLETE")
        return f"{p.name} ({', '.join(tags)})"

    lines.append(f"checkpoints: {', '.join(kind(p) for p in rd.checkpoint_dirs()) or 'none'}; "
                 f"final model: {'yes' if rd.final.is_dir() else 'no'}")
    for name, section in (("metrics.jsonl", _metrics), ("ledger.json", _ledger), ("rsft.json", _rsft),
                          ("result.json", _result)):
        try:
            lines += section(rd)
        except UNREADABLE as e:
            lines.append(f"{name}: unreadable ({type(e).__name__}: {' '.join(str(e).split())[:120]})")
    return "\n".join(lines)


def _metrics(rd: RunDir) -> list[str]:
    rows = rd.metric_rows()
    if not rows:
        return []
    last = rows[-1]
    return [f"last step {last['step']}: reward {float(last.get('reward', float('nan'))):.3f}, "
            f"reproducing share {float(last.get('hit_fraction', 0)):.2f}, emergence step {last.get('emergence_step')}"]


def _ledger(rd: RunDir) -> list[str]:
    if not rd.ledger.is_file():
        return []
    top = rd.read_ledger().best(5)
    return ["best candidates (training-probe rate, times said, first step):",
            *(f"  {c['candidate']!r}: {c['rate']:.2f}, {c['count']}, {c['first_step']}" for c in top)]


def _rsft(rd: RunDir) -> list[str]:
    info = rd.read_rsft_info()
    if info is None:
        return []
    kind = "model-only" if info["model_only"] else "defender data"
    out = [f"R-SFT rows: {info['source']} ({kind}): " + ", ".join(f"{k} {v}" for k, v in info["counts"].items())]
    top = (info.get("data_scan") or {}).get("top") or []
    if top:
        out.append(f"data scan (found in the data): {top[0]['ngram']!r}, behaviour in "
                   f"{top[0]['behaviour_rows']}/{top[0]['rows']} rows holding it")
    return out


def _result(rd: RunDir) -> list[str]:
    if not rd.has_result():
        return []
    r = rd.read_result()
    verdict = f"recovered {r.recovered_trigger!r}" if r.found else "no trigger found"
    return [f"result: {verdict}, held-out reproduction {r.reproduction_rate:.2f}"]
