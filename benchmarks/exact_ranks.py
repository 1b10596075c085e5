"""Evaluation only: where the planted trigger's single tokens rank by the search's own exact score, estimated from a
uniform sample of the vocabulary. It tests the premise of the wide search (a first round that scores every token
exactly, which takes a GPU): that search keeps the best ``beam`` single tokens, so it can only grow the planted trigger
if one of its tokens ranks within them. The proposals rank the first tokens of the missed triggers in the thousands
(``proposal_ranks_words.md``); this says whether the exact score would do better before a GPU is spent on it.

    python benchmarks/exact_ranks.py --run RUN [--run RUN ...] --sample 1024 --out benchmarks/results/exact_ranks.md

``--in-context`` ranks each later token of the planted trigger after its earlier ones instead (the slot a search
that holds the start of the trigger fills next): whether an exact screen of that slot would keep the next token
where the divergence proposal ranks it in the thousands (`` falcon`` 23,725th after ``amber``).

``--screen-probes N`` ranks by the cheap score of the search's exact screen instead (``audit.accretion_screen_probes``:
the suspect alone, on the N shortest training probes and their likeliest opening, in bfloat16): whether the screen
would keep the token within its ``screen_keep`` best, for the full exact score to take it from there.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import cell, header, quiet  # noqa: E402


def rank_interval(better: int, sample: int, vocab: int) -> tuple[int, int, int]:
    """The token's estimated rank among ``vocab`` tokens when ``better`` of a uniform ``sample`` score better, with
    a 95% Clopper-Pearson interval (ranks 1-based)."""
    from scipy.stats import beta
    lo = 0.0 if better == 0 else float(beta.ppf(0.025, better, sample - better + 1))
    hi = 1.0 if better == sample else float(beta.ppf(0.975, better + 1, sample - better))
    return 1 + round(vocab * better / sample), 1 + round(vocab * lo), 1 + round(vocab * hi)


def in_context_lines(run, cfg, card, tok, allowed, sample, scores, result, t0) -> list[str]:
    """Each later token of each planted trigger ranked against the sample at its slot, after the earlier ones."""
    import torch

    from envs.poison import card_triggers
    found = (result.recovered_trigger or result.articulated) if result is not None else None
    lines = [f"\n## {Path(cfg.model.path).name} in context (placement scored: {cfg.oracle.insertion}; audit found "
             f"{cell(found)})\n", "| trigger so far | next planted token | score | best of the sample there | "
             "better in sample | estimated rank (95% interval) | of | s |", "|---|---|---|---|---|---|---|---|"]
    searchable = set(allowed.tolist())
    for trig in card_triggers(card):
        ids = tok(trig, add_special_tokens=False)["input_ids"]
        for k in range(1, len(ids)):
            t1 = time.time()
            context, nxt = ids[:k], ids[k]
            sampled = scores(sample, context)
            own = float(scores(torch.tensor([nxt]), context)[0])
            best = int(sampled.argmin())
            so_far = cell(tok.decode(context))
            if nxt not in searchable:
                lines.append(f"| {so_far} | {cell(tok.decode([nxt]))} | {own:.3f} | - | not a searchable token | - | "
                             f"{len(allowed)} | - |")
                continue
            better = int((sampled < own).sum())
            rank, lo, hi = rank_interval(better, len(sample), len(allowed))
            top = f"{cell(tok.decode([int(sample[best])]))} {float(sampled[best]):.3f}"
            lines.append(f"| {so_far} | {cell(tok.decode([nxt]))} | {own:.3f} | {top} | {better} of {len(sample)} | "
                         f"{rank} ({lo}-{hi}) | "
                         f"{len(allowed)} | {time.time() - t1:.0f} |")
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, help="a finished accretion audit with a reference")
    ap.add_argument("--sample", type=int, default=1024, help="vocabulary tokens drawn uniformly (seeded)")
    ap.add_argument("--insertion", choices=("prefix", "suffix", "card"), default="card",
                    help="where the tokens are placed in the probes (default: where the card planted the trigger)")
    ap.add_argument("--batch", type=int, default=64, help="single-token triggers scored per call")
    ap.add_argument("--in-context", action="store_true", help="rank each later planted token after the earlier ones")
    ap.add_argument("--screen-probes", type=int, default=0,
                    help="rank by the exact screen's score on this many probes (0: the full exact score)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    quiet()
    import torch

    from envs.loading import load_model
    from envs.poison import card_triggers, read_card
    from envs.tokenizer import load_tokenizer
    from trainer.baselines.accretion import _Screen, reference_score
    from trainer.baselines.gcg import GCGTask, _Rows, allowed_tokens, trigger_losses
    from trainer.run_dir import RunDir
    command = " ".join(["python benchmarks/exact_ranks.py", *(f"--run {r}" for r in a.run), f"--sample {a.sample}",
                        f"--insertion {a.insertion}", *(["--in-context"] if a.in_context else []),
                        *([f"--screen-probes {a.screen_probes}"] if a.screen_probes else []), f"--out {a.out}"])
    what = "each next token, after its earlier ones," if a.in_context else "single tokens"
    by = f"the exact screen's score ({a.screen_probes} probe(s), bfloat16)" if a.screen_probes else "the exact score"
    lines = [f"# The planted trigger's {what} ranked by {by} (evaluation only)\n\n{header(command)}",
             "",
             "Each single token scored as the audit's search scores a candidate (its mean loss of the behaviour's "
             "openings on the audit's training probes, less what the base explains: `reference_score`; lower is "
             "better). A uniform sample of the allowed vocabulary gives each planted token's rank: `better` of the "
             "sample score lower, so its rank among all allowed tokens is about `better / sample` of them (95% "
             "interval). A first round that scored every token exactly and kept its best `beam` would keep the token "
             "only with a rank within the beam."
             + (f" Here the score is the screen's instead: the suspect's loss alone on the {a.screen_probes} shortest "
                "probe(s) and their likeliest opening, in bfloat16 (no reference)." if a.screen_probes else "")
             + "\n"]
    gen = torch.Generator().manual_seed(0)
    for run in a.run:
        t0 = time.time()
        rd = RunDir(run)
        cfg, result = rd.load_config(), rd.read_result()
        card = read_card(Path(cfg.model.path))
        cfg.oracle.insertion = card.get("placement") if a.insertion == "card" else a.insertion
        if cfg.oracle.insertion not in ("prefix", "suffix"):  # random placement: score it where a search starts
            cfg.oracle.insertion = "prefix"
        spec = cfg.attack_spec()
        tok = load_tokenizer(cfg.model.path)
        rows = _Rows(tok, cfg.probe_split(spec)[0], cfg.oracle.insertion, spec.judge.likelihood_targets)
        models = [load_model(p, dtype=torch.float32) for p in (cfg.model.path, cfg.model.reference)]
        allowed = allowed_tokens(tok)
        screen = _Screen(models[0], tok, GCGTask(list(cfg.probe_split(spec)[0]), cfg.oracle.insertion,
                                                 tuple(spec.judge.likelihood_targets)), a.screen_probes, 1 << 31) \
            if a.screen_probes else None

        def scores(ids: torch.Tensor, context: list[int] = ()) -> torch.Tensor:
            """Each token of ``ids`` scored as the trigger's next token after ``context`` (alone with none)."""
            out = []
            for s in range(0, len(ids), a.batch):
                t = ids[s:s + a.batch].view(-1, 1)
                t = torch.cat([torch.tensor(list(context), dtype=torch.long).expand(len(t), -1), t], 1)
                with torch.no_grad():
                    if screen is not None:
                        out.append(trigger_losses(screen.model, screen.rows, t).float())
                    else:
                        out.append(reference_score(*(trigger_losses(m, rows, t) for m in models)))
            return torch.cat(out)

        sample = allowed[torch.randperm(len(allowed), generator=gen)[:a.sample]]
        if a.in_context:
            lines += in_context_lines(run, cfg, card, tok, allowed, sample, scores, result, t0)
            Path(a.out).write_text("\n".join(lines) + "\n")
            continue
        sampled = scores(sample)
        order = sampled.argsort()
        none = float(reference_score(*(trigger_losses(m, rows, torch.empty(1, 0, dtype=torch.long))
                                       for m in models))[0])
        found = (result.recovered_trigger or result.articulated) if result is not None else None
        lines.append(f"\n## {Path(cfg.model.path).name} (placement scored: {cfg.oracle.insertion}; planted "
                     f"{card.get('placement')}; audit found {cell(found)})\n")
        lines.append(f"No trigger: {none:.3f}. Sample of {len(sample)} of {len(allowed)} allowed tokens: best "
                     + ", ".join(f"{cell(tok.decode([int(sample[i])]))} {float(sampled[i]):.3f}" for i in order[:8])
                     + f"; median {float(sampled.median()):.3f}. {time.time() - t0:.0f} s.\n")
        lines.append("| trigger | token | score | better in sample | estimated rank (95% interval) | of |\n"
                     "|---|---|---|---|---|---|")
        for trig in card_triggers(card):
            ids = tok(trig, add_special_tokens=False)["input_ids"]
            own = scores(torch.tensor(ids, dtype=torch.long))
            for i, s in zip(ids, own.tolist()):
                if i not in set(allowed.tolist()):
                    lines.append(f"| {cell(trig)} | {cell(tok.decode([i]))} | {s:.3f} | not a searchable token | - | "
                                 f"{len(allowed)} |")
                    continue
                better = int((sampled < s).sum())
                rank, lo, hi = rank_interval(better, len(sample), len(allowed))
                lines.append(f"| {cell(trig)} | {cell(tok.decode([i]))} | {s:.3f} | {better} of {len(sample)} | "
                             f"{rank} ({lo}-{hi}) | {len(allowed)} |")
                print(lines[-1], flush=True)
        Path(a.out).write_text("\n".join(lines) + "\n")  # after each run: a stopped job keeps what it measured


if __name__ == "__main__":
    main()
