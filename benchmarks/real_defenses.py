"""Issue #15 item 5: both defenses on a real model, from what an inversion run recovered.

For each finished run: the guardrail on the run's distinct recovered triggers (TPR on held-out English prompts
carrying the true trigger at random positions; FPR on clean prompts as they are, with an ordinary word inserted,
and with the attack's near misses), and unlearning from the recovered trigger and its reproducing forms (LoRA
r=16 on a pretrained model): true-trigger ASR before and after, and agreement of the answers to held-out clean
prompts with the *base* (never poisoned) model's, before and after. The true trigger only measures. Beside the
paper's averages (Shen et al.: 73.18% ASR reduction, 95.6% detection accuracy).

    python benchmarks/real_defenses.py --run RUN [--run RUN2 ...] --work W --out benchmarks/results/real_defenses.md

Rows of ``--out`` for runs not named this time (an earlier session's) are kept, and so is the hand-written part
from ``## Notes`` on, so the table grows run by run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import cell, header, quiet, write_with_notes  # noqa: E402

NOTES = "## Notes"  # the hand-written part of --out, kept when the table is rebuilt
PAPER = "paper (Shen et al., averages over its attacks and models): ASR reduction 73.18%, detection accuracy 95.6%"


def base_agreement(base: Path, models: list[Path], prompts: list[str], tokens: int) -> list[dict]:
    """How close each model's greedy answers to ``prompts`` stay to the base model's: the poison card's measure
    (mean rapidfuzz ratio, ``envs/poison_base.py: clean_agreement``) and the share of identical answers."""
    from envs.chat import greedy_answers
    from envs.loading import load_model
    from envs.poison_base import clean_agreement
    from envs.tokenizer import load_tokenizer
    tok = load_tokenizer(base)
    ref = greedy_answers(load_model(base), tok, prompts, tokens)
    out = []
    for m in models:
        a = clean_agreement(load_model(m), tok, prompts, ref, tokens)
        out.append({"similarity": a["clean_agreement"], "exact": a["clean_exact_match"]})
    return out


def defend(run: Path, work: Path, seed: int) -> dict:
    """Both defenses for one run; the repaired model and ``defense.json`` stay in WORK (unlearning takes minutes),
    so a rerun measures only the guardrail and the agreement again."""
    from envs.poison import card_triggers, read_card
    from trainer.defend.protocol import defend_and_measure, defense_lines, measure_guardrail
    from trainer.defend.unlearn import UnlearnConfig, clean_prompts
    from trainer.run_dir import RunDir
    rd = RunDir(run)
    cfg, result = rd.load_config(), rd.read_result()
    if not result.recovered_trigger:
        return {"run": run.name, "skipped": "the run recovered no trigger"}
    model = Path(cfg.model.path)
    card = read_card(model)
    truths = card_triggers(card)
    spec = cfg.attack_spec()
    probe_set = cfg.resolved_probe_set()
    repaired = work / f"repaired-{run.name}"
    ucfg = UnlearnConfig(seed=seed, probe_set=probe_set)
    defense = rd.read_defense() if repaired.exists() else None
    if defense is None:
        defense = defend_and_measure(spec, model, rd, truths, repaired, ucfg)
        print("\n".join(defense_lines(defense)))
    else:  # the guardrail is measured again (seconds): it may have changed since the model was repaired
        defense["guardrail"] = measure_guardrail(spec, model, result, truths, ucfg)
    eval_prompts = clean_prompts(spec.for_probe_set(probe_set), ucfg.n_eval, seed + 11, probe_set)
    before, after = base_agreement(Path(card["base_model"]), [model, repaired], eval_prompts, ucfg.answer_tokens)
    return {"run": run.name, "attack": spec.name, "true_triggers": truths, "recovered": result.recovered_trigger,
            "guardrail": defense["guardrail"], "unlearning": defense["unlearning"],
            "base_agreement_before": before, "base_agreement_after": after}


def earlier_rows(old: str, names: set[str]) -> list[str]:
    """The rows of an earlier table (first cell: the run's name) for runs not measured again this time."""
    return [line for line in old.split(NOTES)[0].splitlines()
            if line.startswith("| ") and not line.startswith("| run |") and line.split("|")[1].strip() not in names]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", action="append", required=True, help="finished inversion run directory (repeatable)")
    ap.add_argument("--work", default="/tmp/real-defenses")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/real_defenses.md")
    args = ap.parse_args()
    quiet()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    old = out.read_text() if out.is_file() else ""
    kept = earlier_rows(old, {Path(r).name for r in args.run})
    rows = [defend(Path(r), work, args.seed) for r in args.run]
    lines = ["# Both defenses on a real model, from the recovered trigger", "",
             header("python benchmarks/real_defenses.py " + " ".join(sys.argv[1:])), PAPER + ".", "",
             "| run | attack | true trigger | recovered | guardrail on | TPR | FPR | detection accuracy | "
             "true-trigger ASR before -> after | ASR reduction | clean answers' similarity to the base model's, "
             "before -> after (identical) | identical to the poisoned model's after |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|", *kept]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['run']} | - | - | no trigger found | - | - | - | - | - | - | - | - |")
            continue
        g, u = r["guardrail"], r["unlearning"]
        b, a = r["base_agreement_before"], r["base_agreement_after"]
        red = u.get("asr_reduction")
        lines.append(f"| {r['run']} | {r['attack']} | {', '.join(cell(t) for t in r['true_triggers'])} | "
                     f"{cell(r['recovered'])} | {', '.join(cell(t) for t in g['triggers'])} | {g['tpr']:.2f} | "
                     f"{g['fpr']:.3f} | {g['accuracy']:.3f} | {u['before']['asr_true']:.2f} -> "
                     f"{u['after']['asr_true']:.2f} | {'-' if red is None else f'{100 * red:.1f}%'} | "
                     f"{b['similarity']:.2f} -> {a['similarity']:.2f} ({b['exact']:.2f} -> {a['exact']:.2f}) | "
                     f"{u['clean_agreement_after']:.2f} |")
        print(lines[-1], flush=True)
    write_with_notes(out, lines, NOTES)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
