"""The [vllm] extra is a set of pins that resolve together, so a cluster install never swaps torch.

Runs pip's real resolver (``--dry-run``, metadata only) against the package index; needs network
access to it, which this project's CI has.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, vendored by pip
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_vllm_extra_resolves_with_the_core_pins(tmp_path):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["vllm"]
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--report", str(report), *reqs]
    for _ in range(2):  # one retry for a flaky index connection
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if proc.returncode == 0:
            break
    assert proc.returncode == 0, proc.stderr[-2000:]
    versions = {i["metadata"]["name"].lower(): i["metadata"]["version"]
                for i in json.loads(report.read_text())["install"]}
    assert versions["vllm"] == "0.31.0"
    assert versions["torch"].split("+")[0] == "2.13.0"
    assert versions["transformers"].startswith("5.17.")
    assert versions["trl"].startswith("1.16.")
