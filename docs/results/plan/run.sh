#!/usr/bin/env bash
# Regenerates the tables of docs/results/plan/README.md: `moe plan` for Mixtral-8x7B against
# Llama-2-70B and DeepSeek-V3 against Llama-3-405B (each MoE's dense model of equal quality),
# bf16, context 2048, on one and on eight nodes of each public hardware file.
# Usage: docs/results/plan/run.sh [path/to/moe]   (default: target/release/moe)
set -euo pipefail
cd "$(dirname "$0")/../../.."
moe=${1:-target/release/moe}
out=docs/results/plan
for hw in dgx-h100 epyc-9654-2s; do
  for pair in "mixtral-8x7b llama2-70b" "deepseek-v3 llama3-405b"; do
    set -- $pair
    for n in 1 8; do
      f=$out/$1-vs-$2-$hw-n$n
      "$moe" plan --config configs/plan/$1.toml --against configs/plan/$2.toml --hardware configs/hardware/$hw.toml \
        --dtype bf16 --nodes $n --batch 1,4,16,64,256,1024,4096 --context 2048 --out $f.json > $f.txt
      tail -n 1 $f.txt
    done
  done
done
