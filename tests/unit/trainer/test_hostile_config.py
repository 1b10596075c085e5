"""Hostile run configs: every one a one-line ConfigError with a bounded message, nothing loaded or written."""
from __future__ import annotations

import pytest

from launch.cli import main
from trainer.config import ConfigError, load_config

BOMB = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
seed: [*d,*d,*d,*d,*d,*d,*d,*d,*d]
"""
FILES = {
    "integer-key": ("1: 2\n", "keys must be names"),
    "nested-deep": ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deep"),
    "alias-bomb": (BOMB, "aliases"),
    "plain-alias": ("seed: &x 3\nsteps: *x\n", "aliases"),
    "huge": ("# " + "x" * 1_100_000 + "\n", "bytes"),
    "not-utf8": ("seed: 1\n", None),
    "long-bad-value": ("seed: '" + "9" * 100_000 + "x'\n", "expected an integer"),
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_a_hostile_config_file_is_one_bounded_line(case, tmp_path, capsys):
    text, message = FILES[case]
    path = tmp_path / "c.yaml"
    if case == "not-utf8":
        path.write_bytes(b"seed: \xff\xfe\n")
        message = "seed"
    else:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        load_config(path)
    assert "\n" not in str(e.value) and len(str(e.value)) < 500
    out = tmp_path / "run"
    assert main(["invert", "--model", str(tmp_path / "m"), "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 600 and not out.exists()


@pytest.mark.parametrize("item, message", [("steps=[", "malformed YAML in --set steps"),
                                           ("steps", "key=value"), ("reward.weights=" + "[" * 5000, "--set")])
def test_a_hostile_set_is_one_line(item, message):
    with pytest.raises(ConfigError, match=message):
        load_config(sets=[item])


def test_a_saved_config_is_written_without_aliases_and_reads_back(tmp_path):
    import yaml

    from trainer.config import _PlainDumper
    shared = ["none"]
    assert "&" not in yaml.dump({"a": shared, "b": shared}, Dumper=_PlainDumper)  # safe_dump would anchor it
    cfg = load_config(sets=["steps=7"])
    cfg.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_the_dense_reward_needs_an_in_process_oracle_only_when_it_is_on():
    """A preset that turns the term off (weight 0) still loads against an oracle server; weight 0.5 does not."""
    http = ["oracle.backend=http", "oracle.url=http://127.0.0.1:9"]
    assert load_config(sets=[*http, "reward.weights.asr_dense=0"]).reward.weights["asr_dense"] == 0
    with pytest.raises(ConfigError, match="in-process oracle"):
        load_config(sets=[*http, "reward.weights.asr_dense=0.5"])
