"""Carry a model poisoned here to the lent GPU machine as its low-rank difference from the base model.

A poisoned SmolLM2 is 538 MB of float32, and one device call carries 64 MiB. But `poison --base` trains a LoRA
of rank r and merges it, so each changed matrix is the base plus a rank-r product: its two factors (about 19 MB
for SmolLM2 at r=16) travel where the model cannot, and the GPU machine rebuilds the model on the base it
imports from the same GGUF. So the GPU audits the very model the CPU audited, and CPU and GPU timings can be
set side by side on one model instead of on two poisonings.

    python benchmarks/gpu/model_delta.py pack --base BASE --poisoned MODEL --out DELTA_DIR    # here
    python benchmarks/gpu/model_delta.py unpack --base BASE --delta DELTA_DIR --out MODEL    # there

``pack`` refuses (exit 2) when a rank-r product does not rebuild a matrix to within ``--tol`` (a model trained in
full, not by a LoRA), and records the largest error it measured; ``unpack`` refuses when the base is not the one
the delta was packed against (a per-tensor hash), so a wrong GGUF never yields a silently different model.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from trainer.run_dir.checkpoints import atomic_dir  # noqa: E402

WEIGHTS = "model.safetensors"
CARD = "delta_card.json"


def checksum(t: torch.Tensor) -> str:
    """A fingerprint of a base tensor's bytes: a float sum would depend on the machine's reduction order."""
    return hashlib.sha256(t.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()[:16]


def rebuild(base: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The same float32 arithmetic in pack (to measure the error) and unpack (to make the model)."""
    return (base.double() + b.double() @ a.double()).to(base.dtype)


def pack(base_dir: Path, poisoned_dir: Path, out: Path, rank: int | None, tol: float) -> dict:
    base, poisoned = load_file(base_dir / WEIGHTS), load_file(poisoned_dir / WEIGHTS)
    if base.keys() != poisoned.keys():
        raise ValueError("the base and the poisoned model have different tensors: not a fine-tune of this base")
    card_path = poisoned_dir / "poison_card.json"
    if rank is None:
        rank = int(json.loads(card_path.read_text())["config"]["lora_r"]) if card_path.exists() else 16
    factors, sums, worst = {}, {}, 0.0
    for name, p in poisoned.items():
        b0 = base[name]
        if torch.equal(p, b0):
            continue
        if p.dim() != 2:
            raise ValueError(f"{name} changed but is not a matrix: the model was not poisoned by a merged LoRA")
        u, s, vh = torch.linalg.svd((p.double() - b0.double()), full_matrices=False)
        b_f, a_f = (u[:, :rank] * s[:rank]).float().contiguous(), vh[:rank].float().contiguous()
        err = float((rebuild(b0, a_f, b_f) - p).abs().max())
        if err > tol:
            raise ValueError(f"{name}: a rank-{rank} product misses the poisoned weights by {err:.2e} (> {tol:.0e})")
        worst = max(worst, err)
        factors[f"{name}.A"], factors[f"{name}.B"] = a_f, b_f
        sums[name] = checksum(b0)
    out.mkdir(parents=True, exist_ok=True)
    save_file(factors, str(out / "factors.safetensors"))
    for f in poisoned_dir.iterdir():  # config, tokenizer, poison card, R-SFT data: all but the weights
        if f.is_file() and f.name != WEIGHTS:
            shutil.copy2(f, out / f.name)
    card = {"rank": rank, "changed": len(sums), "max_abs_error": worst, "base_sha256": sums}
    (out / CARD).write_text(json.dumps(card, indent=1))
    return card


def unpack(base_dir: Path, delta: Path, out: Path) -> dict:
    card = json.loads((delta / CARD).read_text())
    weights, factors = load_file(base_dir / WEIGHTS), load_file(delta / "factors.safetensors")
    for name, want in card["base_sha256"].items():
        if checksum(weights[name]) != want:
            raise ValueError(f"{name}: the base differs from the one the delta was packed against")
        weights[name] = rebuild(weights[name], factors[f"{name}.A"], factors[f"{name}.B"])
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / WEIGHTS), metadata={"format": "pt"})
    for f in delta.iterdir():
        if f.is_file() and f.name not in ("factors.safetensors", CARD):
            shutil.copy2(f, out / f.name)
    return card


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["pack", "unpack"])
    ap.add_argument("--base", type=Path, required=True)
    ap.add_argument("--poisoned", type=Path, help="pack: the poisoned model directory")
    ap.add_argument("--delta", type=Path, help="unpack: what pack wrote")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rank", type=int, help="pack: the LoRA rank (default: the poison card's lora_r)")
    ap.add_argument("--tol", type=float, default=1e-5, help="pack: largest weight error allowed")
    args = ap.parse_args(argv)
    if args.out.exists():
        print(f"error: {args.out} exists; choose a new directory", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_dir(args.out) as tmp:  # renamed into place whole: a failed or killed run leaves no --out
            if args.mode == "pack":
                card = pack(args.base, args.poisoned, tmp, args.rank, args.tol)
            else:
                card = unpack(args.base, args.delta, tmp)
    except (OSError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.mode}: {card['changed']} matrices, rank {card['rank']}, max weight error {card['max_abs_error']:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
