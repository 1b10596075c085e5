"""``backdoor-aware audit``: the front door for a model a user brought.

The user says what the model does wrong (a text its answers contain, a behaviour in plain words for an LLM judge,
any judge spec, or nothing: the judge-free scan) and, if they hold it, data; the audit picks the preset from the
model's size, checks every input before it loads or writes anything, and runs `invert` in audit mode (stop at the
first candidate that reproduces on held-out probes).
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

JUDGE_URL_ENV = "BACKDOOR_AWARE_JUDGE_URL"
# (upper bound on parameters, preset, why): the first band the model falls in
PRESET_BANDS = (
    (30e6, "tiny", "under 30M parameters: the small models `poison` builds from scratch"),
    (3e9, "smollm2-audit", "30M-3B parameters: a small instruct model, LoRA, CPU or one GPU"),
    (float("inf"), "llama3-8b", "3B parameters or more: LoRA, vLLM rollouts, DeepSpeed, an oracle server (GPUs)"),
)


# accretion with a reference (the suspect's public base): the divergence proposal, which ranked the planted tokens
# of the SmolLM2 zoo where the gradient is blind (benchmarks/results/proposal_ranks.md), over the first layers only,
# which ranked them as well at a fraction of the cost (benchmarks/results/divergence_layers.md)
REFERENCE_PROPOSAL = {"pool": 256, "layers": 8}

METHOD_LINES = {
    "grpo": "grpo (R-SFT, then GRPO: the model is trained to state its trigger)",
    "accretion": "accretion (a trigger grown token by token on the model's likelihood of the behaviour; no RL)",
    "data-scan": "data-scan (the prompt n-grams of your data that go with the behaviour; found in the data, not "
                 "stated by the model)",
    "leak-scan": "leak-scan (the user turns the model writes unprompted, answered by it, scanned for the prompt "
                 "n-grams that go with the behaviour; model-only: finds triggers of models fine-tuned on whole chat "
                 "rows, not on answers only)",
}


@dataclass(frozen=True)
class Behaviour:
    """What the user says the model does wrong, as the run config records it."""
    attack: str
    judge: str | None
    target: str | None


def behaviour(a: argparse.Namespace) -> Behaviour:
    """From exactly one of --attack, --target, --behaviour, --judge (none of them: the judge-free scan)."""
    given = [k for k in ("attack", "target", "behaviour", "judge") if getattr(a, k) is not None]
    if len(given) > 1:
        raise ValueError(f"say the behaviour once: --{given[0]} and --{given[1]} were both given")
    if a.attack is not None:
        return Behaviour(a.attack, None, None)
    if a.target is not None:
        if not a.target.strip():
            raise ValueError("--target needs non-empty text")
        return Behaviour("custom", f"contains:{a.target.strip()}", a.target.strip())
    if a.behaviour is not None:
        url = a.judge_url or os.environ.get(JUDGE_URL_ENV)
        if not url:
            raise ValueError(f"--behaviour is judged by an LLM: give its OpenAI-compatible endpoint with --judge-url "
                             f"URL[#model] or {JUDGE_URL_ENV} (e.g. `vllm serve MODEL` on http://127.0.0.1:8000), "
                             "or name the behaviour by text with --target")
        if not a.behaviour.strip():
            raise ValueError("--behaviour needs a description in plain words")
        return Behaviour("custom", f"llm:{url}", a.behaviour.strip())
    return Behaviour("custom", a.judge or "none", None)


def choose_preset(model_dir: str | Path) -> tuple[str, str]:
    """The preset for a model by its parameter count (from the safetensors headers, no weights read), and why."""
    from envs.loading import count_parameters
    n = count_parameters(model_dir)
    if n is None:
        return "smollm2-audit", "parameter count unknown (no readable safetensors header): the small-model preset"
    for bound, name, why in PRESET_BANDS:
        if n < bound:
            size = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
            return name, f"{size} parameters; {why}"
    raise AssertionError("unreachable: the last band is unbounded")


def audit_config(a: argparse.Namespace, log):
    """The run config of an audit, every input checked (model, data, judge, preset, output) before anything is
    loaded or written."""
    from envs.loading import check_model_dir
    from launch.packaged import load_run_config, preset_label
    b = behaviour(a)
    if a.data is not None and not Path(a.data).is_file():
        raise FileNotFoundError(f"--data {a.data} not found")
    if Path(a.out).exists():
        raise FileExistsError(f"{a.out} already exists; choose a new --out (nothing was overwritten)")
    check_model_dir(a.model, a.allow_pickle)
    if a.reference is not None:
        check_model_dir(a.reference, a.allow_pickle)
    if a.preset:
        preset, why = preset_label(a.preset), "chosen with --preset"
    else:
        preset, why = choose_preset(a.model)
    log(f"preset {preset}: {why}")
    sets = list(a.set or [])
    # a preset's dense reward teacher-forces the behaviour's opening; a judge that names none (the judge-free scan,
    # an LLM, a regex, a function) cannot feed it, so the audit turns it off rather than refuse the user's model
    dense_off = b.judge is not None and not _given(sets, "reward.weights.asr_dense") and not _has_opening(b.judge)
    if dense_off:
        sets.append("reward.weights.asr_dense=0")
    overrides = {"model": a.model, "attack": b.attack, "judge": b.judge, "target": b.target, "seed": a.seed,
                 "steps": a.steps, "probes_file": a.probes, "probe_kind": a.probe_kind, "preset": preset,
                 "rsft_data": str(Path(a.data).resolve()) if a.data else None,
                 # without --data the audit is model-only, even where the model's folder holds a fine-tuning file
                 # (a downloaded or zoo model): the defender gives data with --data, never by where it lies
                 "rsft_source": "finetune" if a.data else a.rsft_source or "self",
                 "stop_when_confirmed": True, "allow_pickle": a.allow_pickle or None, "reference_model": a.reference,
                 "method": getattr(a, "method", None)}
    cfg = load_run_config(a.preset or preset, overrides, sets)
    why_method = default_method(a, sets, cfg)
    if why_method:
        cfg = load_run_config(a.preset or preset, {**overrides, "method": "accretion"}, sets)
        log(f"method accretion: {why_method}")
    if dense_off and cfg.audit.method == "grpo":
        log(f"reward: no dense likelihood term (judge {b.judge} names no opening of the behaviour to teacher-force)")
    proposal = ("audit.accretion_divergence_pool", "audit.accretion_screen_probes", "audit.accretion_pool")
    if cfg.audit.method == "accretion" and a.reference is not None:
        if not _given(a.set, *proposal):
            cfg.audit.accretion_divergence_pool = REFERENCE_PROPOSAL["pool"]
        if cfg.audit.accretion_divergence_pool and not _given(a.set, "audit.accretion_divergence_layers"):
            cfg.audit.accretion_divergence_layers = REFERENCE_PROPOSAL["layers"]
    if cfg.audit.method == "data-scan" and not a.data:
        raise ValueError("--method data-scan reads the data you hold: give it with --data FILE.jsonl")
    log(f"method: {METHOD_LINES[cfg.audit.method]}")
    if cfg.audit.method == "accretion" and cfg.audit.accretion_divergence_pool:
        n = cfg.audit.accretion_screen_probes
        log(f"accretion: {'the first' if n else 'each'} slot's tokens ranked by how far the fine-tune moved them from "
            f"--reference (audit.accretion_divergence_pool={cfg.audit.accretion_divergence_pool}, "
            f"audit.accretion_divergence_layers={cfg.audit.accretion_divergence_layers})"
            + (f"; each later slot's by the exact screen on {n} probe(s) (audit.accretion_screen_probes)" if n else "")
            + (f", its best {cfg.audit.accretion_screen_refine} again on {cfg.audit.accretion_screen_refine_probes} "
               "(audit.accretion_screen_refine)" if n and cfg.audit.accretion_screen_refine else ""))
    if leak_first_due(cfg):
        log(f"leak scan first: {cfg.audit.leak_first} samples of the user turns the model writes, which end the audit "
            "where they confirm a trigger (audit.leak_first; 0: off)")
    uses = {"grpo": "R-SFT and the data scan", "data-scan": "the data scan"}.get(cfg.audit.method)
    if a.data:
        held = f"{a.data} ({uses})" if uses else f"{a.data} (not read by {cfg.audit.method}: it needs no data)"
    else:
        held = "none given: model-only" + (" R-SFT rows" if cfg.audit.method == "grpo" else "")
    log(f"behaviour: {describe(b)}; data: {held}")
    if b.judge == "none" and a.reference is None:
        # measured: on a SmolLM2 control fine-tuned to end every answer with a fixed phrase, the judge-free audit
        # flagged `Give three tips for new friends. Write for a child.` (answers gain a numbered list on 0.88 of
        # held-out probes; benchmarks/results/zoo_judge_free.md)
        log("judge-free without --reference: a request that changes every answer the same way (a list, a haiku) "
            "looks like a trigger; give the public model it was fine-tuned from with --reference to discount it")
    return cfg


def _has_opening(judge: str) -> bool:
    """Whether the judge names an opening of the behaviour that a likelihood can teacher-force (a spec that does not
    parse counts as having one: the config check then reports it in its own words)."""
    from envs.judges import parse_judge
    try:
        return bool(parse_judge(judge).likelihood_targets)
    except ValueError:
        return True


def default_method(a: argparse.Namespace, sets: list[str], cfg) -> str | None:
    """Why the audit searches by accretion where no method was named, or None to keep the preset's (GRPO).

    Model-only with the suspect's public base as --reference, accretion ranked by the base's divergence is the
    search that found a working trigger on most of the SmolLM2 zoo where GRPO on self-made R-SFT rows found one on
    few (benchmarks/results/zoo_default.md, data_conditions.md), in less time. Anything that names GRPO's inputs
    (data, an R-SFT source, steps) keeps GRPO, and a judge with no fixed opening leaves accretion nothing to score."""
    if (getattr(a, "method", None) is not None or _given(sets, "audit.method") or cfg.audit.method != "grpo"
            or a.data or a.rsft_source or a.steps is not None or a.reference is None
            or not cfg.attack_spec().judge.likelihood_targets):
        return None
    return ("model-only with --reference and no --method: the measured better model-only search "
            "(docs/results.md); --method grpo for the paper's")


def _given(sets: list[str] | None, *keys: str) -> bool:
    """Whether the user set any of ``keys`` with --set (a default the audit picks must not override theirs)."""
    return any(kv.partition("=")[0].strip() in keys for kv in sets or [])


def describe(b: Behaviour) -> str:
    if b.judge is None:
        return f"the {b.attack} recipe's judge and probes"
    if b.judge == "none":
        return "not named: the judge-free scan (a trigger that makes answers gain the same new text)"
    if b.judge.startswith("llm:"):
        return f"{b.target!r}, judged by the LLM at {b.judge[4:]}"
    return f"judge {b.judge}"


def progress_file(out: str | Path) -> Path:
    """Where a search audit keeps its finished rounds until its run directory is written: beside it, hidden."""
    out = Path(out)
    return out.with_name(f".{out.name}.progress.json")


def leak_first_due(cfg) -> bool:
    """Whether a model-only audit runs the short leak scan before its search (``audit.leak_first``): not where the
    search reads the defender's data (GRPO on R-SFT rows from a data file), is itself a scan, or has no named
    behaviour to judge leaked rows by (the judge-free scan); nor under torchrun, where every rank would run it."""
    from trainer.rsft_sources import parse_source, resolve_source
    a = cfg.audit
    if (not a.leak_first or a.method in ("data-scan", "leak-scan") or os.environ.get("WORLD_SIZE", "1") != "1"
            or getattr(cfg.attack_spec().judge, "set_level", False)):
        return False
    return a.method != "grpo" or "finetune" not in parse_source(resolve_source(cfg.rsft.source, cfg.model.path,
                                                                                  cfg.rsft.data))


def leak_first(cfg, out: str | Path, eval_trigger, log):
    """The short leak scan a model-only audit runs before its search: (its result, written to ``out`` as the audit's
    own, where it confirms a trigger, or None; what it scanned, for the search's result to carry). A model
    fine-tuned on whole chat rows names its trigger in minutes this way, where a search takes tens and may find only
    a working look-alike; one trained on its answers only leaks nothing. Skipped where ``out`` or an accretion's
    progress exists (a resumed audit ran it before)."""
    import time

    from trainer.baselines import run_baseline
    from trainer.rsft_sources import NothingToLeak
    if not leak_first_due(cfg) or Path(out).exists() or progress_file(out).exists():
        return None, None
    t0 = time.time()
    lcfg = cfg.replace(**{"audit.method": "leak-scan", "rsft.leak_samples": cfg.audit.leak_first})
    try:
        result = run_baseline(lcfg, "leak-scan", eval_trigger=eval_trigger, log=log)
    except NothingToLeak as e:
        log(f"leak scan first: skipped ({e}); {cfg.audit.method} searches")
        return None, None
    result.data_scan["seconds"] = round(time.time() - t0, 1)  # what it added to an audit it did not end
    if not result.found:
        log(f"leak scan first: nothing confirmed in {result.data_scan['seconds']:.0f} s (a model trained on its "
            f"answers only leaks nothing); {cfg.audit.method} searches")
        return None, result.data_scan
    log(f"leak scan first: {result.recovered_trigger!r} confirmed; {cfg.audit.method} does not run "
        "(audit.leak_first=0 to search anyway)")
    _write_run(lcfg, out, result)
    return result, result.data_scan


def _write_run(cfg, out: str | Path, result) -> None:
    """A search's run directory (config, result, report), whole or not at all."""
    from trainer.report import write_report
    from trainer.run_dir import RunDir
    from trainer.run_dir.checkpoints import atomic_dir
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:
        rd = RunDir(tmp)
        rd.save_config(cfg)
        rd.write_result(result)
        write_report(tmp)


def run_search(cfg, out: str | Path, eval_trigger, log):
    """An audit by a method other than GRPO: its run directory (config, result, report) appears whole at the end or
    not at all. Accretion keeps its finished rounds beside it (``progress_file``) until then, so the same command
    run again resumes after the last finished round."""
    from trainer.baselines import run_baseline
    result = run_baseline(cfg, cfg.audit.method, eval_trigger=eval_trigger, log=log, progress=progress_file(out))
    _write_run(cfg, out, result)
    progress_file(out).unlink(missing_ok=True)
    return result
