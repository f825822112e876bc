#!/usr/bin/env bash
# The GPU benchmarks of docs/results/performance.md, in one call on a lent device machine (device time is
# scarce, so each step has its own limit and a failed step does not stop the next). Results land in $OUT.
#   device run, carry [".gpu"]:  bash benchmarks/gpu.sh
# .gpu is the overlay of ../shared/gpu/make_overlay.sh (add "voxtell positional-encodings" for step 3).
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
source .gpu/activate.sh && export PYTHONPATH=$PWD:$PYTHONPATH PYTHONUNBUFFERED=1
ln -sfn ../vocab nnunetv2_text/vocab 2>/dev/null || true   # package data, as an editable install sees it
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, nnunetv2, sys; print(sys.version.split()[0], torch.__version__)"; } > "$OUT/env.txt" 2>&1
STEPS=${STEPS:-train predict voxtell train_compile light light_case light_compile}   # a rerun names only what it needs
step() { local name=$1 limit=$2; shift 2; [[ " $STEPS " == *" $name "* ]] || return 0; echo "== $name" >> "$OUT/log.txt"
         timeout "$limit" "$@" >> "$OUT/log.txt" 2>&1; echo "== $name rc=$? $(date -u +%T)" >> "$OUT/log.txt"; }
step train 100 python3 benchmarks/train_step.py --device cuda --patch 128 --batch 2 --out "$OUT/train.json"
step predict 100 python3 benchmarks/predict_prompts.py --device cuda --patch 128 --image 160 --out "$OUT/predict.json"
step voxtell 170 python3 benchmarks/voxtell_decoding.py --device cuda --reps ${VT_REPS:-1} --patch 192 --case 256 256 200 \
     --out "$OUT/voxtell.md"
step train_compile ${COMPILE_LIMIT:-140} python3 benchmarks/train_step.py --device cuda --patch 128 --batch 2 --prompts 3 \
     --compile --out "$OUT/train_compile.json"
# issues #14 and #25: every stage per prompt against the light decoder (top 2 stages shared) and the shared
# decoder (the default since #25), side by side
step light 200 python3 benchmarks/train_step.py --device cuda --patch 128 --batch 2 --prompts 1 3 6 \
     --designs '{}' '{"light_stages": 2}' '{"shared_decoder": true}' --out "$OUT/light_train.json"
step light 100 python3 benchmarks/predict_prompts.py --device cuda --patch 128 --image 160 --prompts 1 10 30 \
     --no_loop --designs '{}' '{"light_stages": 2}' '{"shared_decoder": true}' --out "$OUT/light_predict.json"
step light_case 300 python3 benchmarks/predict_prompts.py --device cuda --patch 128 --case 200 256 256 \
     --prompts 1 10 30 --reps 1 --no_loop --designs '{}' '{"light_stages": 2}' '{"shared_decoder": true}' \
     --out "$OUT/light_case.json"
step light_compile 300 python3 benchmarks/train_step.py --device cuda --patch 128 --batch 2 --prompts 3 --compile \
     --designs '{"light_stages": 2}' '{"shared_decoder": true}' --out "$OUT/light_train_compile.json"
cat "$OUT/env.txt"; tail -n 60 "$OUT/log.txt"
