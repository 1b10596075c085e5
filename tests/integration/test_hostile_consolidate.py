"""`consolidate` hands a checkpoint to DeepSpeed, which unpickles it: a crafted shard is refused before that."""
from __future__ import annotations

import os

import pytest
import torch

from launch.cli import main
from trainer.run_dir.pickle_scan import PickleRefused, check_file


class Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _crafted_checkpoint(tmp_path, name: str, obj) -> object:
    ck = tmp_path / "checkpoint-1"
    (ck / "global_step1").mkdir(parents=True)
    (ck / "config.json").write_text('{"model_type": "llama"}')
    torch.save(obj, ck / "global_step1" / name)
    return ck


@pytest.mark.parametrize("name", ["mp_rank_00_model_states.pt", "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"])
def test_a_crafted_deepspeed_shard_is_refused_and_never_run(name, tmp_path, capsys):
    marker = tmp_path / "pwned"
    ck = _crafted_checkpoint(tmp_path, name, {"module": {"w": torch.zeros(2)}, "x": Payload(str(marker))})
    assert main(["consolidate", str(ck), "--out", str(tmp_path / "plain")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "system" in err and "--allow-pickle" in err
    assert not marker.exists() and not (tmp_path / "plain").exists()


def test_what_a_checkpoint_holds_passes(tmp_path):
    f = tmp_path / "ok.pt"
    torch.save({"module": {"w": torch.zeros(3, dtype=torch.bfloat16)}, "param_shapes": [{"w": torch.Size([3])}],
                "ds_version": "0.19.8", "dtype": torch.float32, "device": torch.device("cpu"),
                "lr": [1e-4], "buffer_names": set(), "skipped_steps": 0}, f)
    check_file(f)


@pytest.mark.parametrize("payload", [eval, exec, getattr, __import__])
def test_builtins_that_run_code_are_refused(payload, tmp_path):
    class Calls:
        def __reduce__(self):
            return payload, ("1",)

    f = tmp_path / "x.pt"
    torch.save({"x": Calls()}, f)
    with pytest.raises(PickleRefused):
        check_file(f)
