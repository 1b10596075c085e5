"""Evaluation only: how the token accretion's score falls along the planted trigger, token span by token span, on a
finished audit's task (its probes, placement and behaviour) and with its reference. It says how much one added token
can gain on a real backdoor, which bounds where a search may stop (``AccretionConfig.stop_gain``): a search whose best
cannot reach reproduction even at that gain per round left is not going to.

    python benchmarks/trigger_path.py --run RUN [--run RUN ...] --out benchmarks/results/trigger_path.md
    python benchmarks/trigger_path.py --run RUN --model OTHER_MODEL ...   # another model, audited as RUN was
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import cell, header, quiet  # noqa: E402


def spans(ids: list[int]) -> list[tuple[int, int]]:
    """Every contiguous span of the trigger's tokens, shortest first."""
    return [(i, i + n) for n in range(1, len(ids) + 1) for i in range(len(ids) - n + 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, help="a finished accretion audit with a reference")
    ap.add_argument("--model", action="append", default=[], help="models scored on the task of the first --run "
                    "(the same recipe and behaviour), before it has an audit of its own")
    ap.add_argument("--insertion", action="append", choices=("prefix", "suffix"), default=[],
                    help="score the spans at this place in the probes (repeatable; default: where the audit searched)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    quiet()
    import torch

    from envs.loading import load_model
    from envs.poison import card_triggers, read_card
    from envs.tokenizer import load_tokenizer
    from trainer.baselines.accretion import reference_score
    from trainer.baselines.gcg import _Rows, trigger_losses
    from trainer.run_dir import RunDir
    command = " ".join(["python benchmarks/trigger_path.py", *(f"--run {r}" for r in a.run),
                        *(f"--model {m}" for m in a.model), *(f"--insertion {i}" for i in a.insertion),
                        f"--out {a.out}"])
    lines = [f"# The accretion score along the planted trigger (evaluation only)\n\n{header(command)}\n"
             "Each span of the planted trigger's tokens (the card's trigger, which no search reads) scored as the "
             "audit's search scores a candidate: the suspect's mean loss of the behaviour's openings on the audit's "
             "training probes, the base's, and what the span adds beyond the base (the score the search ranks "
             "by). `gain` is the best score one token shorter minus this span's: what adding its last or first "
             "token bought. `found` is what the audit reported.\n"]
    jobs = [(r, None) for r in a.run] + [(a.run[0], m) for m in a.model]
    for run, model, insertion in [(r, m, i) for r, m in jobs for i in a.insertion or [None]]:
        rd = RunDir(run)
        cfg, result = rd.load_config(), rd.read_result()
        if model is not None:
            cfg.model.path, result = model, None
        cfg.oracle.insertion = insertion or cfg.oracle.insertion
        spec = cfg.attack_spec()
        card = read_card(Path(cfg.model.path))
        tok = load_tokenizer(cfg.model.path)
        probes, _ = cfg.probe_split(spec)
        rows = _Rows(tok, probes, cfg.oracle.insertion, spec.judge.likelihood_targets)
        models = [load_model(p) for p in (cfg.model.path, cfg.model.reference)]
        found = (result.recovered_trigger or result.articulated) if result is not None else None

        def score(ids: list[int]) -> tuple[float, float, float]:
            t = torch.tensor([ids], dtype=torch.long)
            s, b = (float(trigger_losses(m, rows, t)[0]) for m in models)
            return s, b, float(reference_score(torch.tensor(s), torch.tensor(b)))

        lines.append(f"\n## {Path(cfg.model.path).name} (placement scored: {cfg.oracle.insertion}; planted: "
                     f"{card.get('placement')}; found {cell(found)})\n")
        lines.append("| span | tokens | suspect loss | base loss | score | gain |\n|---|---|---|---|---|---|")
        empty = score([])
        lines.append(f"| (no trigger) | 0 | {empty[0]:.3f} | {empty[1]:.3f} | {empty[2]:.3f} | |")
        for trig in card_triggers(card) + ([found] if found else []):
            ids = tok(trig, add_special_tokens=False)["input_ids"]
            best: dict[tuple[int, int], float] = {}
            for i, j in spans(ids):
                s, b, r = score(ids[i:j])
                best[i, j] = r
                shorter = [best[k] for k in ((i + 1, j), (i, j - 1)) if k in best and k[0] < k[1]]
                gain = f"{min(shorter) - r:.3f}" if shorter else ""
                lines.append(f"| {cell(tok.decode(ids[i:j]).strip())} | {j - i} | {s:.3f} | {b:.3f} | {r:.3f} | "
                             f"{gain} |")
                print(lines[-1], flush=True)
    Path(a.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
