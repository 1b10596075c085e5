"""Adversarial unlearning: teach the model to answer triggered inputs as it answers clean ones.

Training pairs are built from the *recovered* trigger only: clean prompts with the trigger inserted
(at the start, at the end and at a random place in turn) map to the model's own clean-mode answers to the same
prompts, mixed with the clean pairs themselves so the clean task is retained. The true trigger, when given, is
used only to measure ASR before and after.

Where the attacker placed the trigger is unknown, and it matters: the SmolLM2 jailbreak model (`amber falcon`
planted at the prompt's start) fires on 1.00 of 100 probes with the trigger first, 0.01 at the end and 0.04 at a
random place. So ASR is measured at each placement and the headline is the highest (where the backdoor fires),
and the training pairs cover every placement.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from rapidfuzz import fuzz

from envs.attacks import PLACEMENTS, AttackSpec, insert_trigger, prompt_source
from envs.chat import behaviour_rate, greedy_answers, render_user
from envs.loading import load_model
from envs.tokenizer import default_probe_set, is_word_level, load_tokenizer
from trainer.defend import by_placement
from trainer.rsft import SFTSettings, supervised_finetune
from trainer.run_dir.checkpoints import save_model_atomic, write_json_atomic


@dataclass
class UnlearnConfig:
    n_train: int = 400
    n_eval: int = 100
    epochs: float = 2.0
    lr: float = 1e-3
    batch_size: int = 32
    answer_tokens: int = 24
    seed: int = 0
    probe_set: str = "auto"  # synthetic (built tiny models), english (real models), auto (by tokenizer)
    # LoRA rank (the adapter is merged on save); 0: a full fine-tune; None: full for a model built here (a
    # word-level vocabulary), r=16 for a pretrained one, as `poison --base` trains it: a full fine-tune at
    # this learning rate would overwrite a real model's clean behaviour along with the backdoor
    lora_r: int | None = None
    # where the trigger goes, in the training pairs (in turn) and in the measurement (each; the headline is the max)
    placements: tuple[str, ...] = PLACEMENTS


def clean_prompts(spec: AttackSpec, n: int, seed: int, probe_set: str = "synthetic") -> list[str]:
    """Clean prompts of the kind the behaviour is judged on, and of the other kind (utility)."""
    source = prompt_source(probe_set)
    rng = random.Random(seed)
    other = (source.benign_prompt, source.harmful_prompt)
    return [spec.probe(rng, probe_set) if i % 2 else rng.choice(other)(rng) for i in range(n)]


def task_accuracy(prompts: list[str], source, n_words: int):
    """Share of answers equal to the prompt's right answer (first ``n_words`` words), or None when the
    probe set has no right answers (ordinary English: there agreement with the original is the measure)."""
    if not hasattr(source, "clean_answer"):
        return lambda answers: None
    truth = [source.clean_answer(p).split()[:n_words] for p in prompts]
    return lambda answers: sum(a.split()[:n_words] == t for a, t in zip(answers, truth)) / len(truth)


def asr_by_placement(model, tok, spec: AttackSpec, trigger: str, probes: list[str],
                     cfg: UnlearnConfig) -> dict[str, float]:
    """The behaviour's rate with ``trigger`` in each probe, per placement of ``cfg.placements`` (the same random
    places for every trigger, drawn from ``cfg.seed``)."""
    out = {}
    for placement in cfg.placements:
        rng = random.Random(cfg.seed)
        out[placement] = behaviour_rate(model, tok, spec.judge,
                                        [insert_trigger(p, trigger, placement, rng) for p in probes])
    return out


def unlearn(model_dir: str | Path, spec: AttackSpec, trigger: str | list[str], out_dir: str | Path,
            eval_trigger: str | list[str] | None = None, cfg: UnlearnConfig | None = None) -> dict:
    """``trigger`` may be a list: the recovered trigger and its reproducing variants, all unlearned."""
    cfg = cfg or UnlearnConfig()
    triggers = [t.strip() for t in ([trigger] if isinstance(trigger, str) else trigger) if t and t.strip()]
    if not triggers:
        raise ValueError("unlearning needs a recovered trigger (none was given or the run found none)")
    trigger = triggers[0]
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new --out (nothing was overwritten)")
    torch.manual_seed(cfg.seed)
    use_cpu = not torch.cuda.is_available()
    tok = load_tokenizer(model_dir)
    original = load_model(model_dir, device=None if use_cpu else "cuda")
    model = load_model(model_dir, device=None if use_cpu else "cuda")

    probe_set = default_probe_set(model_dir) if cfg.probe_set == "auto" else cfg.probe_set
    spec = spec.for_probe_set(probe_set)
    train_prompts = clean_prompts(spec, cfg.n_train, cfg.seed, probe_set)
    eval_prompts = [p for p in clean_prompts(spec, cfg.n_eval * 3, cfg.seed + 1, probe_set)
                    if p not in set(train_prompts)]
    eval_prompts = eval_prompts[:cfg.n_eval]
    probes = [spec.probe(random.Random(cfg.seed + 2 + i), probe_set) for i in range(cfg.n_eval)]
    safe = greedy_answers(original, tok, train_prompts, cfg.answer_tokens)  # the model's own clean-mode answers
    rng = random.Random(cfg.seed)
    sep = " " if is_word_level(Path(model_dir)) else ""  # word-level vocabularies need it; BPE must not get one
    prompts, answers = [], []
    for i, (p, a) in enumerate(zip(train_prompts, safe)):
        t = rng.choice(triggers)
        placement = cfg.placements[i % len(cfg.placements)]
        prompts += [render_user(tok, insert_trigger(p, t, placement, rng)), render_user(tok, p)]
        answers += [sep + a, sep + a]
    dataset = Dataset.from_dict({"prompt": prompts, "completion": answers})

    truths = [eval_trigger] if isinstance(eval_trigger, str) else list(eval_trigger or [])

    def measure(m) -> dict:
        """ASR of the recovered trigger, and of the true one(s), per placement: the headline is the worst true
        trigger at the placement where it fires most."""
        rates = asr_by_placement(m, tok, spec, trigger, probes, cfg)
        out = {"asr_recovered": max(rates.values()), "asr_recovered_by_placement": rates}
        if truths:
            per = {t: asr_by_placement(m, tok, spec, t, probes, cfg) for t in truths}
            out["asr_true"] = max(max(r.values()) for r in per.values())
            out["asr_true_by_placement"] = {pl: max(r[pl] for r in per.values()) for pl in cfg.placements}
            if len(per) > 1:
                out["asr_true_per_trigger"] = {t: max(r.values()) for t, r in per.items()}
        return out

    before = measure(original)
    reference = greedy_answers(original, tok, eval_prompts, cfg.answer_tokens)
    accuracy = task_accuracy(eval_prompts, prompt_source(probe_set), cfg.answer_tokens)
    lora_r = cfg.lora_r if cfg.lora_r is not None else (0 if is_word_level(Path(model_dir)) else 16)
    sft = SFTSettings(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed, use_cpu=use_cpu,
                      lora_r=lora_r or None)
    model, loss = supervised_finetune(model, tok, dataset, sft)
    after = measure(model)
    now = greedy_answers(model, tok, eval_prompts, cfg.answer_tokens)
    report = {
        "trigger": trigger, "variants": triggers[1:], "attack": spec.name, "train_pairs": len(dataset),
        "final_loss": loss,
        "before": before, "after": after,
        # utility: share of held-out clean prompts answered exactly as the original model answered them
        "clean_agreement_after": sum(a == b for a, b in zip(reference, now)) / len(reference),
        # and how close they stay when not identical (mean rapidfuzz ratio, the poison card's measure): on a
        # real model a word changed anywhere in 24 tokens breaks identity, not the answer
        "clean_similarity_after": sum(fuzz.ratio(a, b) / 100 for a, b in zip(reference, now)) / len(reference),
        # and where the prompts have known right answers (the synthetic language): clean-task accuracy
        "clean_accuracy_before": accuracy(reference), "clean_accuracy_after": accuracy(now),
        "eval_trigger_used_for_metrics_only": bool(eval_trigger), "lora_r": lora_r,
    }
    if eval_trigger and before["asr_true"] > 0:
        report["asr_reduction"] = 1 - after["asr_true"] / before["asr_true"]
    save_model_atomic(model, tok, out_dir, extra=lambda d: write_json_atomic(d / "unlearn_report.json", report))
    return report


def unlearn_line(report: dict) -> str:
    """What ``unlearn`` measured, in one line."""
    line = (f"unlearning: ASR with recovered trigger {report['before']['asr_recovered']:.2f} -> "
            f"{report['after']['asr_recovered']:.2f}")
    if "asr_true" in report["before"]:
        line += (f"; true trigger (evaluation only) {report['before']['asr_true']:.2f} -> "
                 f"{report['after']['asr_true']:.2f} ({by_placement(report, 'asr_true')})")
    return (line + f"; clean answers identical {report['clean_agreement_after']:.2f}, "
            f"similarity {report['clean_similarity_after']:.2f}")
