import pytest

from trainer.config import ConfigError, RunConfig, load_config


def test_yaml_roundtrip(tmp_path):
    cfg = load_config(overrides={"model": "m", "steps": 7}, sets=["reward.weights={asr: 2.0, format: 1}",
                                                                     "temperature=2"])
    cfg.save(tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg
    assert again.steps == 7 and again.temperature == 2.0 and again.reward.weights == {"asr": 2.0, "format": 1.0}


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
    presets = sorted((Path(__file__).parents[1] / "launch" / "configs").glob("*.yaml"))
    assert presets
    for p in presets:
        load_config(p, overrides={"model": "m"})
