"""Checkpoints that look complete but cannot be resumed from are skipped for the previous one, never loaded
(issue: an `inversion_state.json` of `{}` resumed silently and lost the ledger's first steps)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import complete_checkpoint as _checkpoint
from trainer.run_dir import COMPLETE_MARKER, INVERSION_STATE, RunDir, is_complete_checkpoint


class _Payload:
    def __reduce__(self):
        import os
        return os.system, ("echo pwned",)


def _truncate(f: Path) -> None:
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])


BREAK = {
    "inversion-state-empty": lambda ck: (ck / INVERSION_STATE).write_text("{}"),
    "inversion-state-a-list": lambda ck: (ck / INVERSION_STATE).write_text("[]"),
    "inversion-state-torn": lambda ck: _truncate(ck / INVERSION_STATE),
    "global-step-not-a-number": lambda ck: (ck / "trainer_state.json").write_text('{"global_step": "x"}'),
    "trainer-state-not-a-mapping": lambda ck: (ck / "trainer_state.json").write_text("7"),
    "optimizer-truncated": lambda ck: _truncate(ck / "optimizer.pt"),
    "rng-state-overwritten": lambda ck: (ck / "rng_state.pth").write_bytes(b"\x80\x04garbage"),
    "weights-truncated": lambda ck: _truncate(ck / "model.safetensors"),
    "weights-header-garbage": lambda ck: (ck / "model.safetensors").write_bytes(b"\xff" * 64),
    "marker-missing": lambda ck: (ck / COMPLETE_MARKER).unlink(),
    "rng-state-pickled-code": lambda ck: torch.save({"python": _Payload()}, ck / "rng_state.pth"),
    "optimizer-pickled-code": lambda ck: torch.save({"state": _Payload()}, ck / "optimizer.pt"),
}


def test_a_whole_checkpoint_is_complete(tmp_path):
    assert is_complete_checkpoint(_checkpoint(RunDir(tmp_path), 4))


@pytest.mark.parametrize("case", sorted(BREAK))
def test_a_broken_checkpoint_is_skipped_for_the_previous_one(case, tmp_path):
    rd = RunDir(tmp_path)
    _checkpoint(rd, 2)
    BREAK[case](_checkpoint(rd, 4))
    logs: list[str] = []
    assert rd.latest_checkpoint(logs.append).name == "checkpoint-2"
    assert "checkpoint-4" in logs[0] and "never loaded" in logs[0]


def test_a_folder_that_is_not_a_numbered_checkpoint_is_ignored(tmp_path):
    rd = RunDir(tmp_path)
    _checkpoint(rd, 2)
    (rd.checkpoints / "checkpoint-x").mkdir()
    assert [p.name for p in rd.checkpoint_dirs()] == ["checkpoint-2"]
    assert rd.latest_checkpoint(lambda _: None).name == "checkpoint-2"


def test_a_torn_metrics_log_is_read_up_to_its_last_whole_row(tmp_path):
    """kill -9 mid-write leaves half a line; `evaluate` then must neither fail nor lose the run's timings."""
    rd = RunDir(tmp_path)
    rd.metrics.write_text('{"step": 1, "reward": 0.1}\n{"step": 2, "reward": 0.2}\n{"step": 3, "rew')
    assert [r["step"] for r in rd.metric_rows()] == [1, 2]
    rd.metrics.write_text('[1]\n"x"\n{"step": "4"}\n{"step": 5}\n' + "[" * 100_000 + "\n")
    assert [r["step"] for r in rd.metric_rows()] == [5]
