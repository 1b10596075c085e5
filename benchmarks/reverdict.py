"""Re-judge a finished token-search run (accretion or GCG) with the current held-out verdict: the search's saved
order (``result.json``'s ``gcg_best``, best first) goes through ``held_out_verdict`` again, without searching again
(hours on a CPU for a SmolLM2 audit). Prints what the run reported and what the verdict reports now. The true
trigger only measures.

    python benchmarks/reverdict.py --run RUN [--eval-trigger TRIGGER]
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import quiet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished accretion or GCG run directory")
    ap.add_argument("--eval-trigger", help="the planted trigger (evaluation only)")
    a = ap.parse_args()
    quiet()
    from envs.tokenizer import load_tokenizer
    from trainer.oracles import SuspectOracles
    from trainer.run_dir import RunDir, RunError
    from trainer.verdict.evaluate import HeldOut, Search, held_out_verdict
    from trainer.verdict.ledger import CandidateLedger
    try:
        rd = RunDir(a.run)
        cfg, old = rd.load_config(), asdict(rd.read_result())
    except (RunError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if not old.get("gcg_best"):
        print(f"error: {a.run}: no saved token-search order (gcg_best): not an accretion or GCG run", file=sys.stderr)
        sys.exit(2)
    spec, tok = cfg.attack_spec(), load_tokenizer(cfg.model.path)
    held = HeldOut.from_run(cfg, spec, tok, SuspectOracles.from_run(cfg, spec, tok, None))
    pool = [f["candidate"] for f in old["gcg_best"]]
    t0 = time.time()
    r = held_out_verdict(held, Search(pool, pool[:cfg.eval.awareness_k], pool[0],
                                      CandidateLedger(threshold=cfg.audit.found_threshold), 0), a.eval_trigger)
    print(f"search order: {pool}")
    print(f"reported then: {old['recovered_trigger']!r}; now: {r.recovered_trigger!r} "
          f"(held out {r.reproduction_rate:.2f}, "
          f"clean {r.clean_false_trigger_rate:.2f}" + (f", exact {r.exact_match}, word Jaccard "
                                                      f"{r.recovered_jaccard_word:.2f}" if a.eval_trigger else "")
          + f"); {time.time() - t0:.0f} s")
    for c in r.best_candidates:
        print(f"  {c['candidate']!r}: held out {c['heldout_rate']:.2f}, reference {c.get('reference_rate', '-')}")


if __name__ == "__main__":
    main()
