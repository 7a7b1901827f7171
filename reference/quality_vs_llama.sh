#!/usr/bin/env sh
# Quality of our 4-bit formats against llama.cpp's on the same trained checkpoint (issue 13).
#
#   sh reference/quality_vs_llama.sh [RUN] [OUT]
#
# RUN: a `moe train` run (default: trains configs/quality/mixtral-q.toml into OUT/run; ≈10–20
# minutes on 2 cores). The run's latest checkpoint goes through `moe export` (Hugging Face
# Mixtral directory), llama.cpp's own `convert_hf_to_gguf.py` (f32; via reference/gguf_goldens.py
# --convert, which only tells the converter that the byte-level tokenizer's pre-tokenizer is GPT-2's)
# and `llama-quantize` (Q4_0, Q4_K_S, Q4_K_M; each also with the token embedding kept f32).
# `moe bench quality` then runs every format on the same validation windows against the run's f32
# weights: ours quantised at load (int8, q4, q4k), and llama.cpp's files with their weights
# dequantised exactly to f32 (`--gguf`; the f32 file is the control: KL 0 up to summation order).
# Bits per weight count the same matrices on both sides. docs/inference.md has the table.
#
# Needs: a built llama.cpp (LLAMA_CPP, default the copy vendored by llama-cpp-python 0.3.36 under
# /work/llama; `cmake --build build --target llama-quantize`) and a Python with
# reference/requirements-gguf.txt (PYTHON, default /work/venv-gguf/bin/python). Not run by CI.
set -eu
cd "$(dirname "$0")/.."
LLAMA_CPP="${LLAMA_CPP:-/work/llama/llama_cpp_python-0.3.36/vendor/llama.cpp}"
PYTHON="${PYTHON:-/work/venv-gguf/bin/python}"
MOE="${MOE:-target/release/moe}"
OUT="${2:-/tmp/moe-quality-q4}"
QUANTIZE="$LLAMA_CPP/build/bin/llama-quantize"
[ -x "$QUANTIZE" ] || { echo "quality_vs_llama: $QUANTIZE not found (build llama.cpp first)" >&2; exit 1; }
[ -x "$MOE" ] || cargo build --release -p moe-cli
mkdir -p "$OUT"
RUN="${1:-$OUT/run}"
if [ ! -d "$RUN" ]; then
  "$MOE" train --config configs/quality/mixtral-q.toml --out "$RUN"
fi
rm -rf "$OUT/hf"
"$MOE" export --run "$RUN" --out "$OUT/hf"
LLAMA_CPP="$LLAMA_CPP" "$PYTHON" reference/gguf_goldens.py --convert "$OUT/hf" "$OUT/f32.gguf" f32 > "$OUT/convert.log" 2>&1 \
  || { tail -20 "$OUT/convert.log" >&2; exit 1; }
# llama-quantize's files as it makes them, and with the token embedding kept f32 as ours is
for q in Q4_0 Q4_K_S Q4_K_M; do
  lc="$(echo "$q" | tr 'A-Z' 'a-z')"
  "$QUANTIZE" "$OUT/f32.gguf" "$OUT/$lc.gguf" "$q" 1 > "$OUT/quantize-$q.log" 2>&1 \
    || { tail -20 "$OUT/quantize-$q.log" >&2; exit 1; }
  "$QUANTIZE" --token-embedding-type f32 "$OUT/f32.gguf" "$OUT/$lc-emb_f32.gguf" "$q" 1 > "$OUT/quantize-$q-emb_f32.log" 2>&1 \
    || { tail -20 "$OUT/quantize-$q-emb_f32.log" >&2; exit 1; }
done
# exact activations on both sides (the GGUF weights run dequantised in the f32 engine; ours are
# dequantised tile by tile): the weights' error alone
MOE_GEMM_MIN_ROWS=1 "$MOE" bench quality --run "$RUN" --dtype int8,q4,q4k --windows "${WINDOWS:-256}" \
  --gguf "$OUT/f32.gguf" --gguf "$OUT/q4_0.gguf" --gguf "$OUT/q4_k_s.gguf" --gguf "$OUT/q4_k_m.gguf" \
  --gguf "$OUT/q4_0-emb_f32.gguf" --gguf "$OUT/q4_k_m-emb_f32.gguf" | tee "$OUT/quality.txt"
