#!/usr/bin/env bash
# `moe serve` against llama.cpp's `llama-server` on the same random Mixtral-shaped model, the same
# precision and the same load, interleaved (moe, llama, moe, llama, ...), ROUNDS rounds; prints the
# median of the paired ratios per concurrency. Not used by the tests.
#
#   LLAMA_BIN=/path/to/llama.cpp/build/bin GGUF_DIR=/tmp/gguf reference/bench_serve_vs_llama.sh
#
# GGUF_DIR holds moe-f32.gguf, moe-bf16.gguf, moe-q8_0.gguf written by
#   python3 reference/bench_gguf.py --config configs/bench-small-moe.toml --dtype D --n-ctx 4096 --out $GGUF_DIR/moe-D.gguf
# (llama-server splits the file's context over its -np slots; 4096 / 32 = 128 per slot).
# Both sides: 2 threads, random token-id prompts, greedy, ignore_eos, streamed.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LLAMA_BIN:?the directory of llama-server}"
: "${GGUF_DIR:?the directory of the GGUF files}"
ROUNDS=${ROUNDS:-3}
CONC=${CONC:-1,8,32}
PAIRS=${PAIRS:-"f32:f32 bf16:bf16 int8:q8_0"}
PROMPT=${PROMPT:-32}
TOKENS=${TOKENS:-64}
OUT=${OUT:-runs/bench-serve-vs-llama}
MOE=${MOE:-target/release/moe}
PORT=${PORT:-8091}
mkdir -p "$OUT"
export RAYON_NUM_THREADS=2
for pair in $PAIRS; do
  ours=${pair%%:*}
  theirs=${pair##*:}
  LD_LIBRARY_PATH="$LLAMA_BIN" timeout 3600 "$LLAMA_BIN/llama-server" -m "$GGUF_DIR/moe-$theirs.gguf" -t 2 -tb 2 -np 32 -c 4096 \
    --host 127.0.0.1 --port "$PORT" >"$OUT/llama-server-$theirs.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
    sleep 0.1
  done
  for r in $(seq 1 "$ROUNDS"); do
    # a seed per round: prompts never repeat, so llama-server's slot prompt cache never hits
    common=(--concurrency "$CONC" --prompt-len "$PROMPT" --max-tokens "$TOKENS" --stream --rounds 1 --timeout-s 300 --seed "$r")
    "$MOE" bench serve --config configs/bench-small-moe.toml --dtype "$ours" "${common[@]}" --out "$OUT/moe-$ours-r$r" >"$OUT/moe-$ours-r$r.txt"
    "$MOE" bench serve --url "http://127.0.0.1:$PORT" "${common[@]}" --out "$OUT/llama-$theirs-r$r" >"$OUT/llama-$theirs-r$r.txt"
  done
  kill "$pid"
  wait "$pid" 2>/dev/null || true
done
head -n 1 "$OUT/moe-f32-r1.txt" 2>/dev/null || true
python3 - "$OUT" "$PAIRS" "$ROUNDS" <<'EOF'
import csv, statistics, sys
out, pairs, rounds = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
def rows(path):
    with open(path) as f:
        return {int(r["concurrency"]): r for r in csv.DictReader(f)}
print("| ours vs llama-server | concurrency | moe out tok/s | llama out tok/s | ratio (median of paired) [min–max] | TTFT p50 ms moe / llama | moe serve ÷ engine |")
print("|---|---|---|---|---|---|---|")
for pair in pairs:
    ours, theirs = pair.split(":")
    per = [(rows(f"{out}/moe-{ours}-r{r}/bench_serve.csv"), rows(f"{out}/llama-{theirs}-r{r}/bench_serve.csv")) for r in range(1, rounds + 1)]
    for c in sorted(per[0][0]):
        m = [float(a[c]["output_tokens_per_s"]) for a, _ in per]
        l = [float(b[c]["output_tokens_per_s"]) for _, b in per]
        q = [x / y for x, y in zip(m, l)]
        tm = statistics.median(float(a[c]["ttft_p50_ms"]) for a, _ in per)
        tl = statistics.median(float(b[c]["ttft_p50_ms"]) for _, b in per)
        eff = statistics.median(float(a[c]["ratio"]) for a, _ in per if a[c]["ratio"])
        print(f"| {ours} vs {theirs} | {c} | {statistics.median(m):.1f} | {statistics.median(l):.1f} | {statistics.median(q):.2f} [{min(q):.2f}–{max(q):.2f}] | {tm:.0f} / {tl:.0f} | {eff:.2f} |")
EOF
