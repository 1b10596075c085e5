"""``--model org/name[@revision]``: a Hugging Face Hub model resolved to a local snapshot directory.

Offline first: with ``HF_HUB_OFFLINE=1`` (the CLI's default) only the local cache is read; otherwise
``huggingface_hub.snapshot_download`` fetches the config, tokenizer, chat template and safetensors files
only (never ``*.bin`` or other pickles). A local path that exists always wins over a Hub id. A snapshot
without safetensors weights, or whose config needs remote code, is refused. Errors are one-line
``ModelDirError``s, which the CLI prints with exit code 2.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from envs.loading import ModelDirError, one_line

# what a snapshot may bring: config, tokenizer, chat template, safetensors weights (+ index), and this
# project's plain-text companions (poison card, fine-tuning set for R-SFT); top-level files only
ALLOW_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "merges.txt", "vocab.txt", "*.jinja",
                  "finetune_data.jsonl"]
IGNORE_PATTERNS = ["*/*"]

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_SNAPSHOT = re.compile(r"models--(?P<org>[\w.-]+?)--(?P<name>[\w.-]+)")


def split_hub_id(arg: str) -> tuple[str, str | None] | None:
    """``(repo_id, revision)`` if ``arg`` has the form ``org/name`` or ``org/name@revision``, else None."""
    repo, _, revision = str(arg).partition("@")
    if not _HUB_ID.fullmatch(repo) or "--" in repo or ".." in repo or repo.endswith((".", "-")):
        return None
    if "@" in str(arg) and not revision:
        return None
    return repo, revision or None


def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is None:
        from huggingface_hub import constants
        return constants.HF_HUB_OFFLINE
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _cache_dir() -> str:
    from huggingface_hub import constants
    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def resolve_model(arg: str) -> str:
    """The local model directory ``arg`` names: ``arg`` itself if that path exists (or is not a Hub id, so
    that ``check_model_dir`` reports it as before), else the snapshot of the Hub model ``org/name[@rev]``."""
    if not arg or Path(arg).expanduser().exists():
        return arg
    hub = split_hub_id(arg)
    if hub is None:
        return arg
    repo, revision = hub
    named = f"{repo}@{revision}" if revision else repo
    cache, offline = _cache_dir(), _offline()
    from huggingface_hub import errors, snapshot_download
    try:
        path = snapshot_download(repo, revision=revision, cache_dir=cache, local_files_only=offline,
                                 allow_patterns=ALLOW_PATTERNS, ignore_patterns=IGNORE_PATTERNS)
    except (errors.LocalEntryNotFoundError, errors.IncompleteSnapshotError) as e:
        if offline:
            rev_flag = f" --revision {revision}" if revision else ""
            raise ModelDirError(
                f"{arg} is not a local directory, and the Hub model {named} is not in the local cache {cache} "
                f"(HF_HUB_OFFLINE=1: no downloads): download it (hf download {repo}{rev_flag}) or rerun with "
                "HF_HUB_OFFLINE=0 to fetch its safetensors, config and tokenizer files") from None
        raise ModelDirError(f"cannot download the Hub model {named}: {one_line(e)}") from None
    except (errors.RepositoryNotFoundError, errors.GatedRepoError, errors.RevisionNotFoundError) as e:
        raise ModelDirError(f"{arg} is not a local directory, and the Hub has no model {named} you can "
                            f"read: {type(e).__name__}") from None
    except (errors.HfHubHTTPError, OSError) as e:
        raise ModelDirError(f"cannot download the Hub model {named}: {one_line(e)}") from None
    check_hub_snapshot(Path(path), named)
    return path


def check_hub_snapshot(path: Path, named: str) -> None:
    """A Hub snapshot is used only with safetensors weights and a config this transformers can build
    without running the repository's code (``trust_remote_code`` stays False)."""
    if not (path / "config.json").is_file():
        raise ModelDirError(f"the Hub model {named} has no config.json (not a transformers model?)")
    if not any(path.glob("*.safetensors")):
        raise ModelDirError(f"the Hub model {named} has no safetensors weights; pickle weights (.bin) can run "
                            "code when loaded and are never downloaded or loaded from the Hub")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelDirError(f"the Hub model {named} has an unreadable config.json: {one_line(e)}") from None
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in CONFIG_MAPPING:
        custom = " (its config.json auto_map names custom code)" if "auto_map" in config else ""
        raise ModelDirError(f"the Hub model {named} needs remote code: model_type {model_type!r} is not one "
                            f"transformers knows{custom}; backdoor-aware never runs a repository's code")


def hub_source(model_dir: str | Path) -> str:
    """``org/name@commit`` for a directory inside a Hub cache (``models--org--name/snapshots/<commit>``),
    else "" (a plain local directory)."""
    p = Path(model_dir)
    if p.parent.name != "snapshots":
        return ""
    m = _SNAPSHOT.fullmatch(p.parent.parent.name)
    return f"{m['org']}/{m['name']}@{p.name}" if m else ""
