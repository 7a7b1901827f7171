#!/usr/bin/env bash
# Training tokens/s and communication of `moe train` under mpirun, one process vs 2 and 4 ranks,
# interleaved rounds (every layout once per round). Needs an MPI build:
#   cargo build --release -p moe-cli --features mpi
# Usage: docs/results/distributed/run.sh [ROUNDS] > docs/results/distributed/train.txt
set -euo pipefail
cd "$(dirname "$0")/../../.."
MOE=${MOE:-target/release/moe}
ROUNDS=${1:-3}
CFG=docs/results/distributed/moe-dist.toml
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
export TMPDIR="$OUT"
mpi() { timeout 600 mpirun --oversubscribe --allow-run-as-root --bind-to none -x RAYON_NUM_THREADS "$@"; }
echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
$MOE plan --calibrate --out "$OUT/hw.toml" >/dev/null 2>&1 && echo "# measured: $(grep -E '^(bandwidth_gbs|peak_gflops_f32) ' "$OUT/hw.toml" | tr '\n' ' ')"
# layout: name ranks expert-parallel threads-per-rank
layouts=("one-process-2-threads 1 1 2" "one-process-1-thread 1 1 1" "EP2 2 2 1" "DP2 2 1 1" "EP4 4 4 1" "EP2xDP2 4 2 1")
for round in $(seq 1 "$ROUNDS"); do
  for l in "${layouts[@]}"; do
    read -r name np ep th <<<"$l"
    rm -rf "$OUT/run"
    export RAYON_NUM_THREADS=$th
    if [ "$np" = 1 ]; then
      res=$($MOE train --config $CFG --out "$OUT/run" --quiet)
    else
      res=$(mpi -np "$np" $MOE train --config $CFG --out "$OUT/run" --quiet --expert-parallel "$ep")
    fi
    tps=$(grep -o '[0-9]* tokens/s' <<<"$res" | cut -d' ' -f1)
    comm=$(grep '^communication' <<<"$res" || echo "-")
    echo "round $round | $name | np $np | ep $ep | threads/rank $th | $tps tokens/s | $comm"
  done
done
