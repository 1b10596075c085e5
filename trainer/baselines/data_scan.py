"""The data scan: for a defender who holds data, the baseline any method with data must beat.

Every row's answer is judged; every word n-gram of the prompts is scored by how much more often the rows
that hold it show the behaviour than the rows that do not. Where the data spells a trigger out (a poisoned
fine-tuning set), its n-gram tops the list in seconds, with no model at all. The report shows it apart from
what the model itself states ("found in the data" vs "stated by the model").
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from envs.attacks import AttackSpec, prompt_source


@dataclass
class NgramScore:
    ngram: str
    rows: int  # rows whose prompt holds it
    behaviour_rows: int  # ...of which the answer shows the behaviour
    rate_with: float
    rate_without: float

    @property
    def lift(self) -> float:
        return self.rate_with - self.rate_without


def _ngrams(prompt: str, n_max: int) -> set[str]:
    words = prompt.split()
    return {" ".join(words[i:i + n]) for n in range(1, n_max + 1) for i in range(len(words) - n + 1)}


def scan_rows(rows: list[dict], judge, n_max: int = 8, min_rows: int = 3, top: int = 5) -> dict:
    """The ``top`` prompt n-grams by lift (behaviour rate with it minus without it) over ``rows``; among n-grams
    that mark exactly the same rows, the longest is kept (``brutally Scottish``, not ``brutally``).

    ``judge`` is the run's behaviour judge, applied to each row's answer. Returns a JSON-ready dict:
    rows, behaviour rows and the top n-grams with their counts."""
    flags = [bool(judge(r["response"])) for r in rows]
    total, positive = len(rows), sum(flags)
    held: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        for g in _ngrams(r["prompt"], n_max):
            held.setdefault(g, []).append(i)
    scores = []
    for g, idx in held.items():
        a, b = sum(flags[i] for i in idx), len(idx)
        if b < min_rows or a == 0:
            continue
        rest = total - b
        scores.append(NgramScore(g, b, a, a / b, (positive - a) / rest if rest else 0.0))
    # one n-gram per set of rows: the longest of those that mark the same rows
    by_rows: dict[tuple[int, int], NgramScore] = {}
    signature = {g: (hash(tuple(idx)), len(idx)) for g, idx in held.items()}
    for s in scores:
        key = signature[s.ngram]
        if key not in by_rows or len(s.ngram.split()) > len(by_rows[key].ngram.split()):
            by_rows[key] = s
    best = sorted(by_rows.values(), key=lambda s: (-s.lift, -s.behaviour_rows, s.ngram))[:top]
    return {"rows": total, "behaviour_rows": positive,
            "placement": placement([rows[i]["prompt"] for i in held[best[0].ngram]], best[0].ngram) if best else None,
            "top": [{**asdict(s), "lift": round(s.lift, 3), "rate_with": round(s.rate_with, 3),
                     "rate_without": round(s.rate_without, 3)} for s in best]}



def placement(prompts: list[str], ngram: str) -> str:
    """Where ``ngram`` sits in the prompts holding it: ``suffix`` where it ends more of them than it starts,
    else ``prefix``. A trigger planted at the end of the prompt may not fire at its start (a SmolLM2 suffix
    trigger: 1.00 at the end, 0.78 in front), so the verdict tests it where the data puts it."""
    starts = sum(" ".join(p.split()).startswith(ngram) for p in prompts)
    ends = sum(" ".join(p.split()).endswith(ngram) for p in prompts)
    return "suffix" if ends > starts else "prefix"


def scan_data(rows: list[dict], spec: AttackSpec, probe_set: str) -> dict:
    """``scan_rows`` on the rows the behaviour is judged on: those of the attack's kind of request where the probe
    set can tell kinds apart (a jailbreak's judge calls every answer to a benign request "not a refusal", so over
    all rows the top n-gram was a benign template word). Rows of no recognised kind (a user's own data, for such
    an attack) leave all rows in."""
    kept = rows
    if spec.probe_kind != "mixed":
        kind_of = prompt_source(probe_set).kind_of
        kept = [r for r in rows if kind_of(r["prompt"]) == spec.probe_kind] or rows
    return {**scan_rows(kept, spec.judge), "kind": spec.probe_kind if kept is not rows else "all"}
