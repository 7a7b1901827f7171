#!/bin/sh
# Builds reference/gguf_logits (the llama.cpp logits/tokenisation tool used by
# reference/gguf_goldens.py) against an already built llama.cpp. Not run by CI.
#
#   LLAMA_CPP=/path/to/llama.cpp sh reference/build_gguf_logits.sh [OUT]
#
# LLAMA_CPP is a llama.cpp source tree with a cmake build in $LLAMA_CPP/build (shared libs in
# build/bin: libllama.so, libggml*.so); default: the copy vendored by llama-cpp-python 0.3.36
# under /work/llama. OUT defaults to reference/gguf_logits (git-ignored build output). The rpath
# points at $LLAMA_CPP/build/bin so the binary runs without LD_LIBRARY_PATH.
set -eu
L=${LLAMA_CPP:-/work/llama/llama_cpp_python-0.3.36/vendor/llama.cpp}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$HERE/gguf_logits}
LIB=$L/build/bin
cc -O2 -std=gnu11 -Wall -Wextra \
    -I"$L/include" -I"$L/ggml/include" \
    "$HERE/gguf_logits.c" -o "$OUT" \
    -L"$LIB" -Wl,-rpath,"$LIB" -lllama -lggml -lggml-base
echo "built $OUT"
