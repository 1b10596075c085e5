"""Evaluation only: is the planted trigger the one input its backdoor fires on, or one member of a family? For each
finished audit, the held-out reproduction rate (the verdict's own oracle and probes) on the suspect and on the
reference model of: the planted trigger (read from the model's card, after the audit), its token prefixes and
suffixes, one-character edits of it, and what the audit reported with its token prefixes.

Why: model-only audits of the SmolLM2 zoo report working triggers that are not the planted one (`x`, `xqq7` for
`xq7`; `§` for `§§`). If every near form reproduces as reliably as the planted trigger, no test on the model's
behaviour can single the planted string out, and "planted-trigger recall" measures luck; if the planted form stands
out (a higher rate, or near forms fail), a search that reports a near form is leaving signal unused.

    python benchmarks/trigger_family.py --run RUN [--run RUN ...] --out benchmarks/results/trigger_family.md

The sections of runs not named this time (an earlier call's) are kept, and so is the hand-written part from
``## Notes`` on, so the file grows run by run.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import cell, header, quiet, write_with_notes  # noqa: E402

NOTES = "## Notes"  # the hand-written part of --out, kept when the file is rebuilt

EDITS = 6  # one-character edits of the planted trigger measured per model (seeded sample)


def token_parts(tok, text: str) -> list[tuple[str, str]]:
    """The proper token prefixes and suffixes of ``text`` (how the search grows and a minimiser would cut)."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    parts = [(tok.decode(ids[:k]).strip(), f"prefix {k}/{len(ids)} tokens") for k in range(1, len(ids))]
    parts += [(tok.decode(ids[k:]).strip(), f"suffix {len(ids) - k}/{len(ids)} tokens") for k in range(1, len(ids))]
    return [(t, why) for t, why in parts if t]


def char_edits(text: str, n: int, seed: int) -> list[tuple[str, str]]:
    """A seeded sample of one-character edits: a deletion, a substitution by a letter or digit, a doubling."""
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    out: dict[str, str] = {}
    for _ in range(50 * n):
        if len(out) >= n:
            break
        i, kind = rng.randrange(len(text)), rng.choice(["delete", "substitute", "double"])
        new = {"delete": text[:i] + text[i + 1:], "substitute": text[:i] + rng.choice(alphabet) + text[i + 1:],
               "double": text[:i] + text[i] + text[i:]}[kind]
        if new.strip() and new != text:
            out.setdefault(new, f"{kind} at {i}")
    return list(out.items())


def family_rows(run: str) -> tuple[dict, list[dict]]:
    from envs.poison import card_triggers, read_card
    from envs.tokenizer import load_tokenizer
    from trainer.oracles import SuspectOracles
    from trainer.run_dir import RunDir
    from trainer.verdict.candidates import jaccard_chars
    rd = RunDir(run)
    cfg, result = rd.load_config(), rd.read_result()
    spec = cfg.attack_spec()
    tok = load_tokenizer(cfg.model.path)
    oracles = SuspectOracles.from_run(cfg, spec, tok)
    _, heldout = cfg.probe_split(spec)
    oracle, reference = oracles.oracle(heldout), oracles.reference_oracle(heldout)
    planted = card_triggers(read_card(Path(cfg.model.path)))
    found = result.recovered_trigger or (result.best_candidates[0]["candidate"] if result.best_candidates else "")
    asked: dict[str, str] = {}
    for p in planted:
        asked.setdefault(p, "planted")
        for t, why in token_parts(tok, p) + char_edits(p, EDITS, cfg.seed):
            asked.setdefault(t, f"planted, {why}")
    if found:
        asked.setdefault(found, "reported")
        for t, why in token_parts(tok, found):
            asked.setdefault(t, f"reported, {why}")
    texts = list(asked)
    rates = oracle.reproduction(texts)
    refs = reference.reproduction(texts) if reference is not None else [None] * len(texts)
    rows = [{"text": t, "what": asked[t], "tokens": len(tok(t, add_special_tokens=False)["input_ids"]),
             "rate": r, "reference": ref, "similarity": max(jaccard_chars(t, p) for p in planted)}
            for t, r, ref in zip(texts, rates, refs)]
    info = {"run": run, "model": Path(cfg.model.path).name, "planted": planted, "found": found,
            "clean": oracle.baseline_rate(), "probes": len(heldout), "threshold": cfg.audit.found_threshold,
            "tolerance": cfg.audit.verdict_tolerance}
    return info, rows


def table(info: dict, rows: list[dict]) -> list[str]:
    planted_rate = max(r["rate"] for r in rows if r["what"] == "planted")
    near = [r for r in rows if r["what"].startswith("planted,")]
    tied = [r for r in near if r["rate"] >= planted_rate - info["tolerance"]]
    lines = [f"### {info['model']}: planted {', '.join(map(cell, info['planted']))}, reported {cell(info['found'])}",
             "", f"run `{info['run']}`; {info['probes']} held-out probes, clean rate {info['clean']:.2f}; "
             f"{len(tied)} of {len(near)} near forms of the planted trigger reproduce within the verdict's tolerance "
             f"({info['tolerance']:g}) of its rate {planted_rate:.2f}.", "",
             "| input | what | tokens | held-out rate | reference model | char similarity to planted |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        ref = "-" if r["reference"] is None else f"{r['reference']:.2f}"
        lines.append(f"| {cell(r['text'])} | {r['what']} | {r['tokens']} | {r['rate']:.2f} | {ref} | "
                     f"{r['similarity']:.2f} |")
    return lines + [""]


def earlier_sections(old: str, runs: set[str]) -> list[str]:
    """The sections of an earlier file (from each ``### `` heading) for runs not measured again this time."""
    body = old.split(NOTES)[0]
    sections = ["### " + s for s in body.split("\n### ")[1:]]
    return [line for s in sections if not any(f"run `{r}`" in s for r in runs) for line in s.rstrip().splitlines()
            + [""]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, help="a finished audit of a zoo model (repeatable)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    quiet()
    out = Path(a.out)
    lines = ["# The planted trigger's family: which near forms fire", "",
             header("python benchmarks/trigger_family.py " + " ".join(f"--run {r}" for r in a.run)
                    + f" --out {a.out}"), "Evaluation only: the planted trigger is read from each model's card "
             "after its audit finished.", ""]
    lines += earlier_sections(out.read_text() if out.is_file() else "", set(a.run))
    for run in a.run:
        info, rows = family_rows(run)
        lines += table(info, rows)
        print("\n".join(table(info, rows)), flush=True)
        write_with_notes(out, lines, NOTES)  # each model as it is measured: a killed call keeps the ones done


if __name__ == "__main__":
    main()
