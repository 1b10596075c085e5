"""Why a model-only token search misses the planted trigger: is the planted trigger better by the search's own
objective (a search failure: more budget or a better optimiser would reach it) or not (an objective failure: the
search reached a string the objective prefers, and a new signal is needed)?

For each model: the loss token accretion and GCG minimise (the suspect's likelihood of the behaviour's openings on
the training probes), for no trigger, for the planted trigger (read from the card: evaluation only, never by a
search) and for the triggers a search found; with the base model, the same loss there and the reference score
accretion ranks by (``trainer.baselines.accretion.reference_score``).

    python benchmarks/objective_gap.py --model M --base B --found NAME=RESULT.json ... --out OUT.md
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


def losses(model_dir: str, base_dir: str | None, config: str, candidates: list[str],
           insertion: str = "prefix") -> tuple[dict, dict]:
    """{candidate: suspect loss}, {candidate: base loss} ('' is no trigger), the candidate inserted as ``insertion``."""
    import torch

    from envs.loading import load_model
    from envs.tokenizer import load_tokenizer
    from launch.packaged import load_run_config
    from trainer.baselines.gcg import _Rows, trigger_losses
    card = json.loads((Path(model_dir) / "poison_card.json").read_text())
    cfg = load_run_config(config, {"model": model_dir, "attack": card["attack"]}, [])
    spec = cfg.attack_spec()
    tok = load_tokenizer(model_dir)
    rows = _Rows(tok, cfg.probe_split(spec)[0], insertion, spec.judge.likelihood_targets)
    out = []
    for path in [model_dir] + ([base_dir] if base_dir else []):
        model = load_model(path, dtype=torch.float32)
        model.eval()
        got = {}
        with torch.no_grad():
            for c in candidates:
                ids = torch.tensor([tok(c, add_special_tokens=False)["input_ids"]], dtype=torch.long) if c else \
                    torch.empty(1, 0, dtype=torch.long)
                got[c] = float(trigger_losses(model, rows, ids)[0])
        out.append(got)
        del model
    return out[0], (out[1] if base_dir else {})


def divergences(model_dir: str, base_dir: str, config: str, candidates: list[str]) -> dict[str, float]:
    """{candidate: the relative hidden-state distance of suspect and base over the whole candidate}, as the
    divergence proposal measures a slot (chat opening before it; no probe)."""
    import torch

    from envs.loading import load_model
    from trainer.baselines.accretion import _Divergence
    tok, task = zoo_task(model_dir, config)
    div = _Divergence(load_model(model_dir, dtype=torch.float32), load_model(base_dir, dtype=torch.float32), tok,
                      task, 1 << 31)
    return {c: float(div.distances(torch.tensor([tok(c, add_special_tokens=False)["input_ids"]]), 0)[0])
            for c in candidates}


def pieces(model_dir: str, config: str, trigger: str, anchors: int = 4) -> list[tuple[str, int, float, int | None]]:
    """Every contiguous piece of the planted trigger's tokens: (text, tokens, suspect loss, and for a single token
    its rank in the one-hot gradient ranking accretion's first round draws its pool from, 0 = best)."""
    import torch

    from envs.loading import load_model
    from envs.tokenizer import load_tokenizer
    from launch.packaged import load_run_config
    from trainer.baselines.gcg import _Rows, allowed_tokens, one_hot_gradient, trigger_losses
    card = json.loads((Path(model_dir) / "poison_card.json").read_text())
    cfg = load_run_config(config, {"model": model_dir, "attack": card["attack"]}, [])
    spec = cfg.attack_spec()
    tok = load_tokenizer(model_dir)
    rows = _Rows(tok, cfg.probe_split(spec)[0], cfg.oracle.insertion, spec.judge.likelihood_targets)
    model = load_model(model_dir, dtype=torch.float32)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    allowed = allowed_tokens(tok)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # accretion's anchors (trainer/baselines/accretion.py)
    picks = allowed[torch.randint(len(allowed), (anchors,), generator=gen)]
    grad = sum(one_hot_gradient(model, rows, a.view(1))[0][0] for a in picks)
    order = allowed[(-grad[allowed]).argsort()].tolist()
    ids = tok(trigger, add_special_tokens=False)["input_ids"]
    out = []
    with torch.no_grad():
        for n in range(1, len(ids) + 1):
            for i in range(len(ids) - n + 1):
                piece = ids[i:i + n]
                loss = float(trigger_losses(model, rows, torch.tensor([piece]))[0])
                rank = (order.index(piece[0]) if piece[0] in order else -1) if n == 1 else None
                out.append((tok.decode(piece), n, loss, rank))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    zoo_args(ap, base_required=False)
    ap.add_argument("--found", action="append", default=[], help="MODEL_NAME=RESULT.json of a search on it "
                    "(its gcg_best triggers, best first)")
    ap.add_argument("--top", type=int, default=3, help="found triggers per search")
    ap.add_argument("--pieces", action="append", default=[], help="a model whose planted trigger is taken apart: "
                    "each contiguous piece's loss, each token's gradient rank")
    ap.add_argument("--insertion", action="append", choices=("prefix", "suffix"), default=None,
                    help="where candidates are inserted into the probes (repeat for both; default prefix)")
    ap.add_argument("--divergence", action="store_true", help="with --base: each input's divergence from the base "
                    "(the proposal's measure over the whole input, accretion's _Divergence), beside its losses")
    ap.add_argument("--extra", action="append", default=[], help="another input to score (for example one a search's "
                    "log shows among its beams)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    quiet()
    import torch

    from trainer.baselines.accretion import reference_score
    found: dict[str, list[str]] = {}
    for item in a.found:
        name, path = item.split("=", 1)
        found.setdefault(name, []).extend(c["candidate"] for c in json.loads(Path(path).read_text())
                                          .get("gcg_best", [])[:a.top])
    lines = ["# The search objective at the planted trigger and at what the search found", "",
             header("python " + " ".join(sys.argv)), "",
             "| model | input | kind | inserted | suspect loss | base loss | reference score |"
             + (" divergence |" if a.divergence else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if a.divergence else "")]
    t0 = time.time()
    for m in a.model:
        card = json.loads((Path(m) / "poison_card.json").read_text())
        planted = card.get("triggers") or [card["trigger"]]
        name = Path(m).name
        cands = [("", "no trigger")] + [(t, "planted (evaluation only)") for t in planted] + \
            [(c, "found by the search") for c in found.get(name, [])] + [(c, "given") for c in a.extra]
        div = divergences(m, a.base, a.config, [c for c, _ in cands if c]) if a.divergence and a.base else {}
        for where in a.insertion or ["prefix"]:
            sus, base = losses(m, a.base, a.config, [c for c, _ in cands], where)
            for c, kind in cands:
                ref = f"{float(reference_score(torch.tensor(sus[c]), torch.tensor(base[c]))):.3f}" if base else "-"
                lines.append(f"| {name} | {cell(c) if c else '(none)'} | {kind} | {where} | {sus[c]:.3f} | "
                             + (f"{base[c]:.3f} | {ref} |" if base else "- | - |")
                             + (f" {div[c]:.4f} |" if c in div else " - |" if div else ""))
        print(f"{name}: done ({time.time() - t0:.0f} s)", flush=True)
    for m in a.pieces:
        card = json.loads((Path(m) / "poison_card.json").read_text())
        for t in card.get("triggers") or [card["trigger"]]:
            lines += ["", f"### The planted trigger of {Path(m).name} taken apart (evaluation only)", "",
                      "| piece | tokens | suspect loss | gradient rank of a single token (of the allowed vocabulary) |",
                      "|---|---|---|---|"]
            lines += [f"| {cell(p)} | {n} | {loss:.3f} | {'-' if rank is None else rank} |"
                      for p, n, loss, rank in pieces(m, a.config, t)]
            print(f"{Path(m).name}: pieces done ({time.time() - t0:.0f} s)", flush=True)
    lines += ["", "Lower is better for the search. The reference score is what accretion with a reference model "
              "ranks by: the suspect's loss, plus up to 4.6 nats where the base finds the behaviour about as likely."]
    a.out.write_text("\n".join(lines) + "\n")
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
