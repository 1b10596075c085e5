"""The exact trigger loss for a behaviour of several openings (the code recipe's seven, the jailbreak's two): one row
per opening, each running the whole prompt (this project's way until 2026-12-06), against each prompt run once for
all openings (``trigger_losses`` now: ``gcg._shared_prompt_losses``).

On a run's own training probes and its judge's openings: ``--triggers`` random triggers of ``--n-tokens`` allowed
tokens, each way in the same process, best of ``--repeats``. The two must give the same losses (max difference
printed) and the same best trigger.

    python benchmarks/shared_prompt_speed.py --model ZOO/code-rate-20 --attack code --out OUT.md
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import best_of, header, loss_speed_args, quiet  # noqa: E402


def per_opening_rows(model, tok, probes, insertion, targets, triggers):
    """The earlier way: a row per (trigger, opening, probe), the text before the slot cached, the prompt run again
    for every opening; then, as ``_Rows.reduce``, each probe's likeliest opening, averaged over probes."""
    import torch

    from trainer.baselines.gcg import _Rows, trigger_losses
    per = torch.stack([torch.stack([trigger_losses(model, _Rows(tok, [p], insertion, (t,)), triggers)
                                    for p in probes]) for t in targets])  # opening x probe x trigger
    return per.min(0).values.mean(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--attack", action="append", required=True, help="each --model's recipe (its judge's openings)")
    loss_speed_args(ap)
    a = ap.parse_args()
    quiet()
    import torch

    from envs.loading import load_model
    from envs.tokenizer import load_tokenizer
    from trainer.baselines.gcg import _Rows, allowed_tokens, trigger_losses
    from trainer.config import load_config

    lines = ["# The exact trigger loss with several openings: a row per opening against one run of each prompt", "",
             header("python benchmarks/shared_prompt_speed.py " + shlex.join(sys.argv[1:])),
             f"{a.triggers} random triggers of {a.n_tokens} token(s) a model, prefix insertion, the run's training "
             f"probes; best of {a.repeats} rounds each way, same process, torch threads {torch.get_num_threads()}.",
             "", "| model | recipe | openings | probes | a row per opening (s) | shared prompt (s) | speed-up | "
             "max loss difference | same best trigger |", "|---|---|---|---|---|---|---|---|---|"]
    for path, attack in zip(a.model, a.attack):
        cfg = load_config(overrides={"model": path, "attack": attack})
        spec = cfg.attack_spec()
        probes, targets = cfg.probe_split(spec)[0], spec.judge.likelihood_targets
        model, tok = load_model(path), load_tokenizer(path)
        model.eval()
        allowed = allowed_tokens(tok)
        triggers = allowed[torch.randint(len(allowed), (a.triggers, a.n_tokens),
                                         generator=torch.Generator().manual_seed(0))]
        rows = _Rows(tok, probes, "prefix", targets)
        t_old, old = best_of(lambda: per_opening_rows(model, tok, probes, "prefix", targets, triggers), a.repeats)
        t_new, new = best_of(lambda: trigger_losses(model, rows, triggers), a.repeats)
        same = "yes" if int(old.argmin()) == int(new.argmin()) else "no"
        lines.append(f"| {Path(path).name} | {attack} | {len(targets)} | {len(probes)} | {t_old:.1f} | {t_new:.1f} | "
                     f"**{t_old / t_new:.2f}x** | {float((old - new).abs().max()):.1e} | {same} |")
        print(lines[-1], flush=True)
    a.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
