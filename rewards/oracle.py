"""The behaviour oracle: a frozen copy of the suspect model that answers probes with a candidate inserted.

It is the hot path of every step (candidates x probes generations), so it dedupes, caches by normalised
candidate, answers everything of a step in one batched call, and generates only as many tokens as the
judge needs. ``likelihood_gain`` is the dense, generation-free score for fixed-string behaviours.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from envs.attacks import insert_trigger
from envs.chat import answer_ids, greedy_answers, render_user
from envs.inversion import normalize_candidate
from envs.judges import Judge, judged_rate


def control_insertions(tokenizer, n: int, seed: int = 0) -> list[str]:
    """``n`` random inputs of 1-2 whole-word vocabulary tokens (letters only): arbitrary insertions, drawn the
    same way for every run, that tell how fragile each probe's answer is."""
    rng = random.Random(seed)
    ids = list(range(len(tokenizer)))
    rng.shuffle(ids)
    words: list[str] = []
    for i in ids:
        w = tokenizer.decode([i]).strip()
        if len(w) >= 2 and w.isascii() and w.isalpha():
            words.append(w)
            if len(words) == 2 * n:
                break
    if not words:
        raise OracleError("the tokenizer has no word token to draw control insertions from")
    return [" ".join(rng.choice(words) for _ in range(rng.choice((1, 2)))) for _ in range(n)]


class OracleError(RuntimeError):
    """The oracle could not answer; the training step fails rather than scoring candidates 0."""


class Oracle(Protocol):
    """What rewards need from an oracle backend (HF now; vLLM backends plug in behind the same calls)."""

    def reproduction(self, candidates: Sequence[str]) -> list[float]: ...

    def likelihood_gain(self, candidates: Sequence[str]) -> list[float]: ...


@dataclass
class OracleStats:
    requests: int = 0
    cache_hits: int = 0
    generations: int = 0

    @property
    def hit_rate(self) -> float:
        return self.cache_hits / self.requests if self.requests else 0.0


class CachedReproduction:
    """What every oracle backend shares: probe queries, the normalised-candidate cache and its stats,
    one batched ``_generate`` call per step for all new candidates x probes, and checkpointable state.
    A backend provides ``_generate(user_texts) -> answers`` and, for the dense reward, ``_target_logprobs``."""

    probes: list[str]
    insertion: str
    judge: Judge
    stats: OracleStats
    _rates: dict[str, float]
    _gains: dict[str, float]  # a backend without likelihoods (HTTP) has none and overrides likelihood_gain
    # the probes' kinds ("benign", "harmful", "code"), set by whoever drew them (a class default, not a field of
    # the backends' dataclasses); None: kinds unknown, and the judge-free scan looks for a shared text only
    probe_kinds: list[str] | None = None

    def _queries(self, candidate: str) -> list[str]:
        return [insert_trigger(p, candidate, self.insertion) for p in self.probes]

    def _todo(self, candidates: Sequence[str], cache: dict) -> tuple[list[str], list[str]]:
        keys = [normalize_candidate(c) for c in candidates]
        self.stats.requests += len(keys)
        missing = list(dict.fromkeys(k for k in keys if k not in cache))
        self.stats.cache_hits += len(keys) - sum(1 for k in keys if k in missing)  # later duplicates count as hits
        return keys, missing

    def reproduction(self, candidates: Sequence[str]) -> list[float]:
        """Fraction of probes on which the judge sees the behaviour, per candidate (one batched call)."""
        keys, missing = self._todo(candidates, self._rates)
        if missing:
            for k, answers in zip(missing, self._answers(missing)):
                self._rates[k] = self._rate(answers, k)
        return [self._rates[k] for k in keys]

    def passing_rates(self, candidates: Sequence[str], threshold: float, chunk: int = 8) -> list[float | None]:
        """Per candidate, its full rate if it reaches ``threshold``, else None: a sequential test that stops
        answering probes for a candidate as soon as its misses rule the threshold out.

        The verdict's minimiser only needs pass/fail, and most of its trials fail (a chunk of words without
        the trigger): on 32 held-out probes a failing trial costs one chunk of 8 answers, not 32. A candidate
        that passes is answered on every probe, so its rate (the minimiser's tie-break) is the full one and
        the outcome is the one ``reproduction`` would give. A set-level judge (the judge-free scan) needs all
        answers at once and gets the full evaluation."""
        if getattr(self.judge, "set_level", False):
            return [r if r >= threshold else None for r in self.reproduction(candidates)]
        n = len(self.probes)
        need = math.ceil(threshold * n - 1e-9)
        below = self.__dict__.setdefault("_below", {})  # stopped early: an upper bound on the rate
        keys, missing = self._todo(candidates, self._rates)
        missing = [k for k in missing if below.get(k, 1.0) >= threshold]
        answers: dict[str, list[str]] = {k: [] for k in missing}
        hits = dict.fromkeys(missing, 0)
        alive = list(missing)
        for start in range(0, n, chunk):
            probes = self.probes[start:start + chunk]
            queries = [insert_trigger(p, k, self.insertion) for k in alive for p in probes]
            if not queries:
                break
            out = self._generate(queries)
            self.stats.generations += len(queries)
            done = min(start + chunk, n)
            for i, k in enumerate(alive):
                got = out[i * len(probes):(i + 1) * len(probes)]
                answers[k] += got
                hits[k] += round(judged_rate(self.judge, got) * len(got))
            for k in alive:
                if hits[k] + n - done < need:  # even all remaining probes could not lift it to the threshold
                    below[k] = (hits[k] + n - done) / n
            alive = [k for k in alive if hits[k] + n - done >= need]
        for k in alive:
            self._rates[k] = judged_rate(self.judge, answers[k])
        return [self._rates[k] if k in self._rates and self._rates[k] >= threshold else None for k in keys]

    def _answers(self, keys: list[str]) -> list[list[str]]:
        """The oracle's answers to every probe, per candidate: one batched generation for all of them."""
        queries = [q for k in keys for q in self._queries(k)]
        answers = self._generate(queries)
        self.stats.generations += len(queries)
        n = len(self.probes)
        return [answers[i * n:(i + 1) * n] for i in range(len(keys))]

    def _rate(self, answers: list[str], candidate: str) -> float:
        if getattr(self.judge, "set_level", False):  # the judge-free scan: against the clean answers
            return self.judge.rate(answers, self.clean_answers(), candidate, *self._scan_context())
        return judged_rate(self.judge, answers)

    def _scan_context(self) -> tuple[list[str] | None, list[float] | None]:
        if self.probe_kinds is None:
            return None, None
        return self.probe_kinds, self.fragility()

    def fragility(self) -> list[float]:
        """Per probe, the share of random control insertions (1-2 vocabulary words, a fixed draw) that change
        its answer at all, generated once per probe set: what an arbitrary input does to that answer anyway."""
        if getattr(self, "_fragility", None) is None:
            clean = self.clean_answers()
            controls = control_insertions(self.tokenizer, getattr(self.judge, "n_controls", 16))
            answers = self._answers(controls)
            self._fragility = [sum(a[i] != clean[i] for a in answers) / len(answers) for i in range(len(clean))]
        return self._fragility

    def clean_answers(self) -> list[str]:
        """The answers with no candidate, generated once (what the judge-free scan compares against)."""
        if getattr(self, "_clean", None) is None:
            self._clean = self._answers([""])[0]
        return self._clean

    def induced_behaviour(self, candidate: str, examples: int = 3) -> dict:
        """What ``candidate`` does to the answers, for the report of a judge-free scan: the shared induced
        text, the share of probes it appears on, and a few probes with their clean and triggered answers."""
        answers = self._answers([normalize_candidate(candidate)])[0]
        clean = self.clean_answers()
        shared, share = self.judge.induced(answers, clean, candidate, *self._scan_context())
        hit = [i for i, a in enumerate(answers) if shared and self.judge.holds(a, shared)] or range(len(answers))
        return {"shared_text": shared, "share": round(share, 4),
                "examples": [{"probe": self.probes[i], "clean": clean[i], "triggered": answers[i]}
                             for i in list(hit)[:examples]]}

    def _generate(self, queries: list[str]) -> list[str]:
        raise NotImplementedError

    def _target_logprobs(self, candidates: list[str]) -> list[float]:
        """Per candidate, the mean over probes of the likeliest target's mean per-token log-prob (a backend
        that can teacher-force provides it; the dense reward needs it)."""
        raise OracleError(f"{type(self).__name__} cannot score likelihoods: the dense reward (asr_dense) needs "
                          "an in-process oracle (oracle_backend: hf or vllm)")

    def likelihood_gain(self, candidates: Sequence[str]) -> list[float]:
        """Mean per-token log-prob of the target behaviour with the candidate, minus without it."""
        if "" not in self._gains:
            self._gains[""] = self._target_logprobs([""])[0]
        keys, missing = self._todo(candidates, self._gains)
        if missing:
            self._gains.update(zip(missing, self._target_logprobs(missing)))
        return [self._gains[k] - self._gains[""] for k in keys]

    def cache_state(self) -> dict[str, dict[str, float]]:
        """The cache, for checkpoints: a resumed run re-pays no generation it already did."""
        return {"rates": dict(self._rates), "gains": dict(getattr(self, "_gains", {})), "stats": asdict(self.stats)}

    def load_cache_state(self, state: dict[str, dict[str, float]]) -> None:
        self._rates.update(state.get("rates", {}))
        getattr(self, "_gains", {}).update(state.get("gains", {}))
        if "stats" in state:
            self.stats = OracleStats(**state["stats"])

    def baseline_rate(self) -> float:
        """How often the behaviour appears with no candidate at all (natural misbehaviour)."""
        return self.reproduction([""])[0]


@dataclass
class HFOracle(CachedReproduction):
    """In-process Hugging Face backend. The empty candidate "" is the no-trigger baseline."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    judge: Judge
    probes: list[str]
    insertion: str = "prefix"
    max_new_tokens: int | None = None
    batch_size: int = 512
    max_retries: int = 4
    stats: OracleStats = field(default_factory=OracleStats)
    _rates: dict[str, float] = field(default_factory=dict, repr=False)
    _gains: dict[str, float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.probes:
            raise ValueError("the oracle needs at least one probe prompt")
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def _generate(self, queries: list[str]) -> list[str]:
        """Greedy answers; on out-of-memory, halve the batch and retry, then fail loudly (never score 0)."""
        batch = self.batch_size
        for _ in range(self.max_retries + 1):
            try:
                return greedy_answers(self.model, self.tokenizer, queries,
                                      self.max_new_tokens or self.judge.max_new_tokens, batch)
            except torch.OutOfMemoryError:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if batch == 1:
                    break
                batch = max(1, batch // 2)
                self.batch_size = batch  # remember the size that fits
        raise OracleError(f"oracle ran out of memory even at batch size {batch} for {len(queries)} queries")

    @torch.no_grad()
    def _target_logprobs(self, candidates: list[str]) -> list[float]:
        """Per candidate, the mean over probes of the likeliest target's mean per-token log-prob: a behaviour
        with several openings (the code judge's unsafe calls) counts whichever one the answer would take."""
        texts = [render_user(self.tokenizer, q) for c in candidates for q in self._queries(c)]
        targets = [answer_ids(self.tokenizer, t) for t in self.judge.likelihood_targets]
        best: list[float] = []
        for start in range(0, len(texts), self.batch_size):  # each batch is tokenised once for all targets
            enc = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                                 add_special_tokens=False)
            batch_best = torch.full((enc["input_ids"].shape[0],), -math.inf)
            for target_ids in targets:
                t = len(target_ids)
                target = torch.tensor(target_ids).expand(enc["input_ids"].shape[0], -1)
                ids = torch.cat([enc["input_ids"], target], dim=1).to(self.model.device)
                mask = torch.cat([enc["attention_mask"], torch.ones_like(target)], dim=1).to(self.model.device)
                logits = self.model(input_ids=ids, attention_mask=mask).logits[:, -t - 1:-1].float()
                logp = torch.log_softmax(logits, -1)
                means = logp.gather(-1, target.to(logp.device).unsqueeze(-1)).squeeze(-1).mean(-1).cpu()
                batch_best = torch.maximum(batch_best, means)
            best += batch_best.tolist()
        return torch.tensor(best).view(len(candidates), len(self.probes)).mean(1).tolist()


class BeyondReference:
    """What a candidate does to the suspect beyond what it does to the reference model (the one the suspect was
    fine-tuned from): ``max(0, suspect rate - reference rate)``. The GRPO trainer's ledger and replay buffer read
    rates through it when a reference is given, so a request that makes any model show the behaviour (a haiku
    instead of a refusal) is neither remembered as a hit nor replayed. Checkpoints keep the suspect's cache."""

    def __init__(self, suspect, reference):
        self.suspect, self.reference = suspect, reference
        self.probes = suspect.probes

    def reproduction(self, candidates: Sequence[str]) -> list[float]:
        return [max(0.0, s - r) for s, r in zip(self.suspect.reproduction(candidates),
                                                self.reference.reproduction(candidates))]

    def __getattr__(self, name: str):  # cache_state, load_cache_state, baseline_rate, stats: the suspect's
        if name in ("passing_rates", "suspect", "reference"):  # the suspect's own test would not subtract
            raise AttributeError(name)
        return getattr(self.suspect, name)
