#!/usr/bin/env bash
# Cheap proxy for comparing training configurations (docs/benchmarks.md, "Tuning runs"):
# 261 steps of 32 pairs on debian-pkgs train, then nDCG@10 per dim on all dev queries over a
# 5,000-document corpus. Results are appended to runs/tune/results.txt.
#   benchmarks/tune_train.sh NAME [mrl train options...]
# e.g. benchmarks/tune_train.sh head-equal --head linear --dims 32,64,128,256,384
set -euo pipefail
name=$1; shift
data=${DATA:-../shared/data/debian-pkgs}
out=runs/tune/$name
mkdir -p runs/tune
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ ! -f "$out/mrl.json" ]; then
  mrl train --data "$data" -o "$out" --max-steps "${STEPS:-261}" --batch-size 32 "$@" > "$out.train.log" 2>&1
fi
mrl eval --model "$out" --data "$data" --split dev --max-docs 5000 --dims 32,64,128,256,384 \
  --json "$out.json" > "$out.eval.log" 2>&1
python -c "
import json, sys
r = json.load(open(sys.argv[1]))['dims']
print(sys.argv[2], ' '.join(f\"{d}:{v['ndcg@10']:.4f}\" for d, v in r.items()))" "$out.json" "$name" \
  | tee -a runs/tune/results.txt
