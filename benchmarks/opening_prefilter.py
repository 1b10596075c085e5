"""Token accretion's one-opening prefilter (``audit.accretion_opening_shortlist``) against scoring every candidate on
every opening, for a behaviour of several openings (the code recipe's seven).

Per model, two rounds as the audit's search meets them: the first (``--pool`` single tokens, the divergence
proposal's best, as accretion with a reference ranks them) and the second (the round's best single token with each
of the same tokens after it). Each round is scored the plain way (every candidate on every opening, with the base as
reference where the search has one) and with the prefilter at each ``--shortlist``: seconds, the speed-up, and how
many of the plain way's ``--need`` best the prefiltered round keeps (the beams and the verdict's candidates come
from them), whether its best is the same.

    python benchmarks/opening_prefilter.py --model ZOO/code-year-phrase --base MODELS/smollm2 --out OUT.md
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import frozen_pair, header, quiet, zoo_args, zoo_task  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    zoo_args(ap)
    ap.add_argument("--pool", type=int, default=128, help="candidates a round (the search: 256, then ~214)")
    ap.add_argument("--need", type=int, default=16, help="the round's need (the search: 16, then 8)")
    ap.add_argument("--shortlist", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--layers", type=int, default=8, help="the divergence proposal's layers (the audit's: 8)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    quiet()
    import torch

    from trainer.baselines.accretion import _Divergence, _Objective
    from trainer.baselines.gcg import _Rows, allowed_tokens

    lines = ["# Token accretion's one-opening prefilter against every candidate on every opening", "",
             header("python benchmarks/opening_prefilter.py " + shlex.join(sys.argv[1:])),
             f"torch threads {torch.get_num_threads()}; a round's need {a.need}, {a.pool} candidates a round.", "",
             "| model | openings | round | way | seconds | speed-up | of the plain best | same best | best |",
             "|---|---|---|---|---|---|---|---|---|"]
    for path in a.model:
        tok, task = zoo_task(path, a.config)
        model, base = frozen_pair(path, a.base)
        rows = _Rows(tok, task.probes, task.insertion, task.targets)
        objective = _Objective(model, rows, base, 1 << 31)
        allowed = allowed_tokens(tok)
        pool = _Divergence(model, base, tok, task, 1 << 31, a.layers).best(
            allowed, torch.empty(0, dtype=torch.long), "alone", a.pool)
        rounds = [("1", pool.unsqueeze(1), torch.empty(0, dtype=torch.long))]
        name = Path(path).name
        for label, cands, opener in rounds:
            t0 = time.perf_counter()
            plain = objective.losses(cands, a.need)
            plain_s = time.perf_counter() - t0
            top = set(plain.argsort()[:a.need].tolist())
            best = int(plain.argmin())
            show = lambda i: tok.decode(cands[i]).strip()  # noqa: E731
            lines.append(f"| {name} | {len(task.targets)} | {label} | every opening | {plain_s:.0f} | 1.00 | "
                         f"{a.need} of {a.need} | - | `{show(best)}` {float(plain[best]):.3f} |")
            for n in a.shortlist:
                t0 = time.perf_counter()
                short = objective.shortlisted(cands, a.need, n, opener)
                s = time.perf_counter() - t0
                kept = len(top & set(short.argsort()[:a.need].tolist()))
                sb = int(short.argmin())
                lines.append(f"| {name} | {len(task.targets)} | {label} | shortlist {n} x need | {s:.0f} | "
                             f"{plain_s / s:.2f} | {kept} of {a.need} | {'yes' if sb == best else 'no'} | "
                             f"`{show(sb)}` {float(short[sb]):.3f} |")
            print("\n".join(lines[-1 - len(a.shortlist):]), flush=True)
            if label == "1":  # the second round: the best single with each pool token after it
                rounds.append(("2", torch.cat([cands[best].expand(len(pool), 1), pool.unsqueeze(1)], 1),
                               cands[best]))
    lines += ["", "The plain way scores every candidate on every opening (with the base as reference, only those "
              "that can enter the need best are put to it, as the search does); the prefilter scores every candidate "
              "on one opening per probe (the likeliest after the round's opener: no trigger in the first round, the "
              "best single in the second) and the best shortlist x need on every opening. 'of the plain best': how "
              "many of the plain way's need best the prefiltered round's need best hold."]
    a.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
