#!/usr/bin/env bash
# `moe serve` in one process vs expert-parallel over 2 ranks (mpirun), loaded by `moe bench serve`
# at concurrency 1/8/32, interleaved rounds. Needs an MPI build:
#   cargo build --release -p moe-cli --features mpi
# Usage: docs/results/distributed/serve.sh [ROUNDS] > docs/results/distributed/serve.txt
set -euo pipefail
cd "$(dirname "$0")/../../.."
MOE=${MOE:-target/release/moe}
ROUNDS=${1:-2}
CFG=docs/results/distributed/moe-dist.toml
OUT=$(mktemp -d)
PORT=${PORT:-18431}
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$OUT"' EXIT
export TMPDIR="$OUT"
echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
$MOE train --config $CFG --out "$OUT/run" --quiet --set train.steps=2 >/dev/null
# layout: name ranks threads-per-rank
layouts=("one-process-2-threads 1 2" "EP2 2 1")
for round in $(seq 1 "$ROUNDS"); do
  for l in "${layouts[@]}"; do
    read -r name np th <<<"$l"
    export RAYON_NUM_THREADS=$th
    if [ "$np" = 1 ]; then
      $MOE serve --run "$OUT/run" --port "$PORT" >"$OUT/s.out" 2>"$OUT/s.err" &
    else
      timeout 900 mpirun --oversubscribe --allow-run-as-root --bind-to none -x RAYON_NUM_THREADS -np "$np" \
        $MOE serve --run "$OUT/run" --port "$PORT" --expert-parallel "$np" >"$OUT/s.out" 2>"$OUT/s.err" &
    fi
    pid=$!
    for _ in $(seq 1 600); do grep -q "ready at" "$OUT/s.out" 2>/dev/null && break; sleep 0.1; done
    RAYON_NUM_THREADS=1 $MOE bench serve --url "http://127.0.0.1:$PORT" --concurrency 1,8,32 --rounds 1 >"$OUT/b.txt" 2>&1
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; sleep 3  # the ranks and the port let go
    echo "## round $round: $name (np $np, $th threads per rank)"
    grep -vE "^\s*$" "$OUT/b.txt" | tail -8
    grep "^communication" "$OUT/s.err" || true
  done
done
