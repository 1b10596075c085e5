"""``RunDir``: the one place that knows a run directory's layout and reads and writes its files.

A run directory holds everything needed to inspect, re-evaluate or resume a run without the command
that made it: ``config.yaml`` (the config the run used), ``metrics.jsonl`` (one row per step),
``ledger.json`` (every candidate the policy said), ``checkpoints/`` (TRL's, resumable; a checkpoint
counts only once its ``COMPLETE`` marker is written), ``final/`` (the trained policy), ``result.json``
(a ``RunResult``), ``reward.png``, ``report.md``, after the defenses ``defense.json``, and with
``report_to: tensorboard`` TensorBoard's event files in ``logs/rsft`` and ``logs/grpo``; a LoRA run keeps its
R-SFT adapter in ``rsft_adapter/`` (its checkpoints hold only the GRPO adapter that sits on top of it).
Every write is atomic, so a reader or a resumed run sees a whole file or the previous one.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.errors import RunError
from trainer.run_dir.checkpoints import write_json_atomic, write_text_atomic
from trainer.run_dir.result import RunResult
from trainer.verdict.ledger import CandidateLedger

INVERSION_STATE = "inversion_state.json"  # ledger, replay buffer, oracle cache inside each checkpoint
COMPLETE_MARKER = "COMPLETE"  # written last into a checkpoint


INVERSION_KEYS = ("ledger", "replay", "replay_rng", "oracle_cache")
NOT_LOADED = {"training_args.bin"}  # the Trainer writes it for the record; a resume never unpickles it


def is_complete_checkpoint(folder: Path) -> bool:
    """Whether a checkpoint can be resumed from, judged without loading it: its marker (written last); a Trainer
    state with an integer step; an inversion state holding the ledger, replay buffer and oracle cache (``{}``
    would resume with the ledger's first steps lost); every safetensors header readable and every torch file a
    whole zip archive (a truncated or overwritten file fails here, not in the middle of ``--resume``)."""
    if not (folder / COMPLETE_MARKER).is_file() or not folder.name.rsplit("-", 1)[-1].isdigit():
        return False
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
        inversion = json.loads((folder / INVERSION_STATE).read_text())
    except (OSError, ValueError, RecursionError):
        return False
    if not (isinstance(state, dict) and type(state.get("global_step")) is int and isinstance(inversion, dict)
            and all(k in inversion for k in INVERSION_KEYS) and isinstance(inversion["ledger"], dict)):
        return False
    return all(_whole(f) for f in folder.iterdir()
               if f.suffix in (".safetensors", ".pt", ".pth", ".bin") and f.name not in NOT_LOADED)


def _whole(f: Path) -> bool:
    """A weights or state file that is not cut short: a safetensors header that parses and whose tensors end within
    the file, or a zip archive (torch.save's format) whose directory is at its end and whose pickles name nothing a
    checkpoint never holds (``trainer/run_dir/pickle_scan.py``)."""
    import struct
    import zipfile
    try:
        if f.suffix == ".safetensors":
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                if n > 100_000_000:
                    return False
                header = json.loads(fh.read(n))
            end = max((e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"), default=0)
            return f.stat().st_size >= 8 + n + end
        if not zipfile.is_zipfile(f):
            return False
        from trainer.run_dir.pickle_scan import check_file  # weights_only refuses pickled code at load: skip it here
        check_file(f)
        return True
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error):  # PickleRefused is a ValueError
        return False


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.jsonl"
        self.ledger = self.path / "ledger.json"
        self.result = self.path / "result.json"
        self.report = self.path / "report.md"
        self.plot = self.path / "reward.png"
        self.defense = self.path / "defense.json"
        self.checkpoints = self.path / "checkpoints"
        self.final = self.path / "final"
        self.rsft_adapter = self.path / "rsft_adapter"  # a LoRA run's R-SFT warm-up, for --resume
        self.rsft_rows = self.path / "rsft_rows.jsonl"  # the rows R-SFT reversed (model-only: what the suspect made)
        self.rsft_info = self.path / "rsft.json"  # where they came from, and the data scan's findings
        self.logs = self.path / "logs"  # report_to integrations' files: TensorBoard's in logs/rsft, logs/grpo

    def __str__(self) -> str:
        return str(self.path)

    # -- config ------------------------------------------------------------------------------------------

    def save_config(self, cfg) -> None:
        write_text_atomic(self.config, cfg.to_yaml())

    def load_config(self):
        from trainer.config import load_config
        if not self.config.is_file():
            raise RunError(f"{self.path} is not a run directory (no config.yaml)")
        return load_config(self.config)

    # -- result ------------------------------------------------------------------------------------------

    def has_result(self) -> bool:
        return self.result.is_file()

    def read_result(self) -> RunResult:
        if not self.result.is_file():
            raise RunError(f"{self.path} has no result.json: finish or evaluate the run first")
        try:
            data = json.loads(self.result.read_text())
        except ValueError as e:
            raise RunError(f"{self.result} is not valid JSON ({e})") from None
        return RunResult.from_dict(data, str(self.result))

    def write_result(self, result: RunResult) -> None:
        """The result, then the reward plot (from the metrics, marked at the emergence step)."""
        from trainer.plots import plot_run
        write_json_atomic(self.result, result.to_dict())
        if self.metrics.is_file():
            model = (result.provenance or {}).get("model_source") or Path((result.provenance or {}).get("model")
                                                                            or self.path.name).name
            found = f"trigger {result.recovered_trigger!r}" if result.found else "no trigger found"
            plot_run(self.metric_rows(), self.plot, result.emergence_step, f"Trigger inversion of {model}: {found}")

    # -- ledger and metrics ------------------------------------------------------------------------------

    def read_ledger(self) -> CandidateLedger:
        return CandidateLedger.from_state(json.loads(self.ledger.read_text()))

    def write_ledger(self, ledger: CandidateLedger) -> None:
        write_json_atomic(self.ledger, ledger.state_dict())

    def metric_rows(self) -> list[dict[str, Any]]:
        """The logged steps; a line that is not a whole step row (the torn last line of a killed run, or anything
        else) is skipped: the checkpoint, not this log, is what a run resumes from."""
        if not self.metrics.is_file():
            return []
        rows = []
        for line in self.metrics.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(row, dict) and type(row.get("step")) is int:
                rows.append(row)
        return rows

    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.metrics, "a") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def truncate_metrics(self, last_step: int) -> None:
        """Drop rows past the checkpoint a run resumes from, so every step is logged once."""
        if self.metrics.is_file():
            keep = [r for r in self.metric_rows() if r["step"] <= last_step]
            write_text_atomic(self.metrics, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))

    # -- checkpoints -------------------------------------------------------------------------------------

    def checkpoint_dirs(self) -> list[Path]:
        """Every ``checkpoint-N`` folder, oldest first (complete or not)."""
        found = [p for p in self.checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
        return sorted(found, key=lambda p: int(p.name.split("-")[-1]))

    def latest_checkpoint(self, log: Callable[[str], None] = print) -> Path | None:
        """The newest *complete* checkpoint; a half-written one is skipped with a warning, never loaded."""
        for ckpt in reversed(self.checkpoint_dirs()):
            if is_complete_checkpoint(ckpt):
                return ckpt
            log(f"warning: skipping incomplete checkpoint {ckpt} (never loaded)")
        return None

    def has_rsft_adapter(self) -> bool:
        """A LoRA run's kept R-SFT adapter, whole (it is written atomically: its two files or nothing)."""
        return all((self.rsft_adapter / f).is_file() for f in ("adapter_config.json", "adapter_model.safetensors"))

    # -- finished runs and defenses ----------------------------------------------------------------------

    def require_finished(self) -> None:
        missing = [p.name for p in (self.config, self.final, self.ledger) if not p.exists()]
        if missing:
            raise RunError(f"{self.path} is not a finished run (missing {', '.join(missing)})")

    def write_rsft(self, rows: list[dict], info: dict[str, Any]) -> None:
        write_text_atomic(self.rsft_rows, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        write_json_atomic(self.rsft_info, info)

    def read_rsft_info(self) -> dict[str, Any] | None:
        return json.loads(self.rsft_info.read_text()) if self.rsft_info.is_file() else None

    def read_rsft_rows(self) -> list[dict]:
        if not self.rsft_rows.is_file():
            return []
        return [json.loads(line) for line in self.rsft_rows.read_text().splitlines() if line.strip()]

    def read_defense(self) -> dict[str, Any] | None:
        return json.loads(self.defense.read_text()) if self.defense.is_file() else None

    def write_defense(self, report: dict[str, Any]) -> None:
        write_json_atomic(self.defense, report)
