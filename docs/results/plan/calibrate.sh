#!/usr/bin/env bash
# The calibration check of README.md: `moe plan` against `moe bench infer` on this machine for
# bench-small-dense, bench-small-moe and an HF Mixtral checkpoint (bench-small-moe with 16 experts
# of width 512, trained one step and exported). Run it on a quiet machine (≈ 10 min on 2 cores).
# Usage: docs/results/plan/calibrate.sh [OUT_DIR] [path/to/moe]
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=${1:-/tmp/moe-calibration}; moe=${2:-target/release/moe}
mkdir -p "$out"
"$moe" plan --calibrate --out "$out/this-machine.toml"
if [ ! -f "$out/hf/config.json" ]; then
  "$moe" train --config configs/bench-small-moe.toml --out "$out/hf-run" \
    --set model.moe.n_expert=16 --set model.moe.d_expert=512 --set train.steps=1
  "$moe" export --run "$out/hf-run" --out "$out/hf"
fi
for m in "--config configs/bench-small-dense.toml" "--config configs/bench-small-moe.toml" "--model $out/hf"; do
  n=$(basename "${m##* }" .toml)
  "$moe" bench infer $m --batch 1,8,32,128 --prompt-len 32 --n-decode 16 --out "$out/bench-$n" > "$out/bench-$n.txt"
  "$moe" plan $m --hardware "$out/this-machine.toml" --batch 1,8,32,128 --context 40 --out "$out/plan-$n.json" > "$out/plan-$n.txt"
  python3 - "$out/bench-$n/bench_infer.csv" "$out/plan-$n.json" "$n" <<'PY'
import csv, json, sys
meas = {int(r["batch"]): float(r["decode_tok_s"]) for r in csv.DictReader(open(sys.argv[1]))}
pred = {p["batch"]: p["tokens_per_s"] for p in json.load(open(sys.argv[2]))["predictions"]}
print(sys.argv[3], "  ".join(f"@{b}: {meas[b]:.0f} tok/s, measured/predicted {meas[b] / pred[b]:.2f}" for b in sorted(pred)))
PY
done
