"""benchmarks/gpu/model_delta.py: a LoRA-poisoned model travels as low-rank factors and is rebuilt exactly enough;
anything else is refused rather than rebuilt wrong."""
from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file

from benchmarks.gpu.model_delta import main


def _model(path, weights, card=None):
    path.mkdir()
    save_file(weights, str(path / "model.safetensors"))
    (path / "config.json").write_text('{"model_type": "llama"}')
    if card:
        (path / "poison_card.json").write_text(json.dumps(card))
    return path


def _pair(tmp_path, rank_of_change=2):
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(24, 16, generator=g), "v": torch.randn(8, 24, generator=g), "norm": torch.ones(16)}
    poisoned = dict(base)
    r = rank_of_change
    poisoned["w"] = base["w"] + torch.randn(24, r, generator=g) @ torch.randn(r, 16, generator=g)
    return (_model(tmp_path / "base", base),
            _model(tmp_path / "poisoned", poisoned, card={"config": {"lora_r": 2}}), poisoned)


def test_pack_then_unpack_rebuilds_the_poisoned_model(tmp_path):
    base, poisoned, want = _pair(tmp_path)
    assert main(["pack", "--base", str(base), "--poisoned", str(poisoned), "--out", str(tmp_path / "d")]) == 0
    card = json.loads((tmp_path / "d" / "delta_card.json").read_text())
    assert card["rank"] == 2 and card["changed"] == 1  # the rank from the poison card; unchanged tensors stay home
    assert main(["unpack", "--base", str(base), "--delta", str(tmp_path / "d"), "--out", str(tmp_path / "m")]) == 0
    got = load_file(tmp_path / "m" / "model.safetensors")
    assert got.keys() == want.keys()
    assert torch.equal(got["v"], want["v"]) and torch.equal(got["norm"], want["norm"])
    assert (got["w"] - want["w"]).abs().max() < 1e-5
    assert (tmp_path / "m" / "poison_card.json").exists() and (tmp_path / "m" / "config.json").exists()


def test_a_full_rank_change_is_refused(tmp_path, capsys):
    base, poisoned, _ = _pair(tmp_path, rank_of_change=12)
    assert main(["pack", "--base", str(base), "--poisoned", str(poisoned), "--out", str(tmp_path / "d")]) == 2
    assert "rank-2 product misses" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "poisoned"]  # no --out, no partial one


def test_a_different_base_is_refused_and_an_existing_out_left_alone(tmp_path, capsys):
    base, poisoned, _ = _pair(tmp_path)
    assert main(["pack", "--base", str(base), "--poisoned", str(poisoned), "--out", str(tmp_path / "d")]) == 0
    other = _model(tmp_path / "other", {k: v + 1e-3 for k, v in load_file(base / "model.safetensors").items()})
    assert main(["unpack", "--base", str(other), "--delta", str(tmp_path / "d"), "--out", str(tmp_path / "m")]) == 2
    assert "base differs" in capsys.readouterr().err and not (tmp_path / "m").exists()
    before = (tmp_path / "d" / "delta_card.json").read_bytes()
    assert main(["pack", "--base", str(base), "--poisoned", str(poisoned), "--out", str(tmp_path / "d")]) == 2
    assert (tmp_path / "d" / "delta_card.json").read_bytes() == before
