"""Untrusted JSONL (guard input, probe files): one line and exit 2, the output untouched; never NaN written."""
from __future__ import annotations

import json

import pytest

from launch.cli import main

ROWS = {
    "nested-deep": "[" * 200_000 + "]" * 200_000,
    "nan": '{"prompt": "hello", "score": NaN}',
    "infinity": '{"prompt": "hello", "x": -Infinity}',
    "prompt-not-text": '{"prompt": {"a": 1}}',
    "not-an-object": '"just a string"',
}


@pytest.mark.parametrize("case", sorted(ROWS) + ["not-utf8"])
def test_guard_refuses_a_hostile_row_and_leaves_its_output(case, tmp_path, capsys):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    if case == "not-utf8":
        src.write_bytes(b'{"prompt": "ok"}\n{"prompt": "\xff\xfe"}\n')
    else:
        src.write_text('{"prompt": "fine"}\n' + ROWS[case] + "\n")
    dst.write_text("earlier output\n")
    assert main(["guard", "--trigger", "SUDO", "--in", str(src), "--out", str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 400
    assert dst.read_text() == "earlier output\n"


def test_guard_output_is_strict_json(tmp_path):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text('{"prompt": "please SUDO now", "n": 1e308}\n{"prompt": "hello"}\n')
    assert main(["guard", "--trigger", "SUDO", "--in", str(src), "--out", str(dst)]) == 0
    rows = [json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} written")) for line in dst.read_text()
            .splitlines()]
    assert [r["flagged"] for r in rows] == [True, False]


def test_a_deeply_nested_probe_line_is_one_line(tmp_path):
    from envs.attacks import ProbeFileError, read_probe_file
    probes = tmp_path / "probes.jsonl"
    probes.write_text('"a prompt"\n' + "[" * 200_000 + "\n")
    with pytest.raises(ProbeFileError, match="probes.jsonl:2: nested too deep"):
        read_probe_file(probes)
