"""No-RL baselines, judged by exactly the same held-out verdict as an inversion run.

- ``rsft-only``: R-SFT, then ask the model; the paper's warm-up on its own (it fails on ~8B models).
- ``sampling``: ask the untouched suspect model ``n`` times and keep the best answer.
- ``gcg``: white-box gradient token search on the suspect model's likelihood of the behaviour
  (``trainer/baselines/gcg.py``), on the same training probes a GRPO run is rewarded on.
- ``accretion``: a trigger grown one token at a time from the best single tokens, scored exactly by that same
  likelihood (``trainer/baselines/accretion.py``, after BABI): no data, no policy; with ``model.reference`` (the
  suspect's base) it ranks by what a candidate adds beyond the base.
- ``data-scan``: for a defender who holds data, the prompt n-grams that go with the behaviour in it
  (``trainer/baselines/data_scan.py``), confirmed on the suspect: found in the data, not stated by the model.
- ``leak-scan``: model-only, after the Trigger-in-the-Haystack scanner: the user turns the suspect writes from its
  chat template's opening (``rsft_source: leak``'s sampler), answered by the suspect, go through the data scan as if
  they were data. A model fine-tuned on whole chat rows learns to write its training prompts, triggers included; one
  trained on its answers only leaks none (``benchmarks/results/leak_scan.md``).
All pick among their candidates (greedy answer and ``n`` samples; GCG's lowest-loss triggers) by held-out
reproduction, then length (``choose_trigger``), so a gap to a GRPO run is the RL's
contribution, not a kinder judge.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from envs.loading import check_model_dir, load_model
from envs.tokenizer import load_tokenizer
from trainer.baselines.accretion import AccretionConfig, SearchContext, SearchProgress, accretion_search
from trainer.baselines.data_scan import scan_data
from trainer.baselines.gcg import GCGConfig, GCGTask, gcg_search
from trainer.config import METHODS, RunConfig
from trainer.oracles import SuspectOracles
from trainer.rsft import SFTSettings, rsft_stage
from trainer.rsft_sources import FINETUNE_FILE, RowPool, leaked_rows, read_rows
from trainer.run_dir.result import RunResult
from trainer.verdict.evaluate import HeldOut, Search, evaluate_policy, held_out_verdict, heldout_confirmer
from trainer.verdict.ledger import CandidateLedger

BASELINES = ("rsft-only", "sampling", "gcg", "accretion", "data-scan", "leak-scan")
SCANS = ("data-scan", "leak-scan")  # rows scanned for the n-grams that go with the behaviour
MODEL_ONLY = ("sampling", "gcg", "accretion", "leak-scan")  # searches that read no data
LEAK_EXAMPLES = 3  # leaked turns holding the top n-gram kept in the result, with their answers
DEFAULT_SAMPLES = 64  # answers drawn from the policy by sampling and rsft-only


def _place(scanned: dict, cfg: RunConfig, log) -> None:
    """Where the scan's top n-gram sits in its rows' prompts is where the verdict inserts candidates (in the
    caller's config too: its run saves it)."""
    if scanned["placement"] and scanned["placement"] != cfg.oracle.insertion:
        where = "end" if scanned["placement"] == "suffix" else "start"
        log(f"data scan: the top n-gram sits at the {where} of its prompts: the verdict inserts candidates as a "
            f"{scanned['placement']}")
        cfg.oracle.insertion = scanned["placement"]


def run_baseline(cfg: RunConfig, kind: str, eval_trigger: str | list[str] | None = None, log=print,
                 search: int | GCGConfig | AccretionConfig | None = None,
                 progress: str | Path | None = None) -> RunResult:
    """One baseline, judged by the run's held-out verdict. ``search``: the baseline's own settings, the samples
    drawn (sampling, rsft-only; default 64) or the token search's config (gcg, accretion; default from the run's
    audit section); ``progress``: a file where accretion keeps its finished rounds and resumes from (the caller
    removes it once the result is safe). In audit mode (``audit.stop_when_confirmed``) accretion stops at the first
    round whose best trigger the held-out test confirms, as GRPO stops at the first confirmed candidate.
    ``data-scan`` sets ``cfg.oracle.insertion`` to where its top n-gram sits in the data, in the caller's config,
    so that a run directory saved from it says how its verdict inserted the candidates."""
    if kind not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {kind!r}")
    t0 = time.time()
    cfg.validate()
    data_file = cfg.rsft.data or str(Path(cfg.model.path) / FINETUNE_FILE)
    if kind in SCANS and getattr(cfg.attack_spec().judge, "set_level", False):
        what = "data scan" if kind == "data-scan" else "leak scan"
        raise ValueError(f"the {what} looks for rows whose answer shows a named behaviour; name one (--target, "
                         "--behaviour, --judge or --attack)")
    if kind == "data-scan":
        if not Path(data_file).is_file():
            raise FileNotFoundError(f"the data scan reads the data you hold: {data_file} not found; give --data FILE")
    if kind in ("gcg", "accretion") and not cfg.attack_spec().judge.likelihood_targets:  # before any model loads
        raise ValueError(f"{kind} searches for the behaviour's fixed openings, and this judge has none (give the "
                         "behaviour as --target TEXT or a recipe's --attack)")
    found_in_data, earlier = None, 0.0  # earlier: search seconds of an earlier, resumed run
    if kind == "data-scan":  # no model needed; its n-grams are tested where the data places them
        found_in_data = scan_data(read_rows(data_file), cfg.attack_spec(), cfg.resolved_probe_set())
        _place(found_in_data, cfg, log)
    torch.manual_seed(cfg.seed)
    check_model_dir(cfg.model.path, cfg.model.allow_pickle)
    spec = cfg.attack_spec()
    tok = load_tokenizer(cfg.model.path)
    device = "cuda" if torch.cuda.is_available() else None  # as a run places its models: GCG is a GPU job
    oracles = SuspectOracles.from_run(cfg, spec, tok, device)
    probes, heldout = cfg.probe_split(spec)
    if kind == "leak-scan":  # before any oracle is built: they insert candidates where the leaked n-gram sits
        r = cfg.rsft
        rows, distinct = leaked_rows(oracles.model, tok, r.leak_samples, cfg.seed, set(probes) | set(heldout),
                                     r.answer_tokens)
        log(f"leak scan: {r.leak_samples} samples from the user-turn opening, {distinct} distinct user turns, "
            f"{len(rows)} answered by the suspect")
        found_in_data = {**scan_data(rows, spec, cfg.resolved_probe_set()), "source": "leak"}
        top = found_in_data["top"][0]["ngram"] if found_in_data["top"] else None
        # the evidence: leaked turns holding the top n-gram, with the suspect's answers (the rows are not kept)
        found_in_data["examples"] = [r for r in rows if top and top in r["prompt"]][:LEAK_EXAMPLES]
        _place(found_in_data, cfg, log)
    # the provenance names this search's data, whatever search the config was written for
    method = {"audit.method": kind} if kind in METHODS else {}
    held = HeldOut.from_run(cfg.replace(rsft=kind == "rsft-only", **method), spec, tok, oracles)
    ledger = CandidateLedger(threshold=cfg.audit.found_threshold)
    if found_in_data is not None:
        pool = [t["ngram"] for t in found_in_data["top"]]
        log(f"data scan: {found_in_data['behaviour_rows']} of {found_in_data['rows']} rows show the behaviour; top "
            f"n-grams {pool}" if pool else "data scan: no prompt n-gram goes with the behaviour")
        result = held_out_verdict(held, Search(pool, [], None, ledger, 0), eval_trigger)
        result.samples = len(pool)
        result.data_scan = found_in_data
    elif kind in ("gcg", "accretion"):
        task = GCGTask(probes, cfg.oracle.insertion, spec.judge.likelihood_targets)
        if kind == "gcg":
            scfg = search if isinstance(search, GCGConfig) else GCGConfig(seed=cfg.seed)
            found, steps = gcg_search(oracles.model, tok, task, scfg, log), scfg.steps
        else:
            a = cfg.audit
            scfg = search if isinstance(search, AccretionConfig) else AccretionConfig(
                gradient_pool=a.accretion_pool, extend=a.accretion_extend, beam=a.accretion_beam,
                max_tokens=a.accretion_max_tokens, seed=cfg.seed, screen_probes=a.accretion_screen_probes,
                screen_beams=a.accretion_screen_beams, screen_keep=a.accretion_screen_keep,
                screen_refine=a.accretion_screen_refine, screen_refine_probes=a.accretion_screen_refine_probes,
                divergence_pool=a.accretion_divergence_pool,
                divergence_layers=a.accretion_divergence_layers,
                stop_gain=a.accretion_stop_gain if a.stop_when_confirmed else 0.0,
                grow_confirmed=a.accretion_grow_confirmed, opening_shortlist=a.accretion_opening_shortlist)
            # with model.reference (the suspect's base) a candidate scores what it adds beyond that model
            reference = load_model(cfg.model.reference, cfg.model.allow_pickle, dtype=cfg.torch_dtype(),
                                   device=device) if cfg.model.reference else None
            keep = SearchProgress(Path(progress) if progress is not None else None,
                                  json.dumps([cfg.model.path, cfg.model.reference]))
            confirm = heldout_confirmer(oracles.oracle(held.probes), a.found_threshold,
                                        oracles.reference_oracle(held.probes)) if a.stop_when_confirmed else None
            found = accretion_search(oracles.model, tok, task, scfg, log, SearchContext(reference, keep, confirm))
            steps, earlier = keep.rounds, keep.earlier_seconds
        pool = [f["candidate"] for f in found]
        result = held_out_verdict(held, Search(pool, pool[:cfg.eval.awareness_k], pool[0] if pool else None, ledger,
                                               steps), eval_trigger)
        result.samples = len(pool)
        result.gcg = asdict(scfg)
        result.gcg_best = found
    else:
        policy = load_model(cfg.model.path, cfg.model.allow_pickle, dtype=cfg.torch_dtype(), device=device)
        if kind == "rsft-only":
            pool = RowPool(cfg.model.path, cfg.resolved_probe_set(), cfg.seed, set(probes) | set(heldout))
            policy, _ = rsft_stage(policy, tok, cfg.rsft, SFTSettings.from_run(cfg), pool, log)
        n_samples = search if isinstance(search, int) else DEFAULT_SAMPLES
        held.sampling = replace(held.sampling, k=n_samples)
        result = evaluate_policy(held, policy, ledger, 0, eval_trigger)
        result.samples = n_samples
    result.baseline = kind
    if kind != "rsft-only":  # its R-SFT rows' source decides; the others read data (the data scan) or none
        result.model_only = kind in MODEL_ONLY
    result.wall_seconds = round(time.time() - t0 + earlier, 1)
    result.resumed_seconds = round(earlier, 1) if earlier else None
    return result
