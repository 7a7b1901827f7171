"""`moe bench infer` against llama.cpp's `llama-batched-bench` on the same shapes, interleaved.

Each round runs, in order, every pair `OURS_DTYPE=GGUF` given with --pair: our engine on
`--config` (random weights of the GGUF's shape; decode speed does not depend on the values) at
batch 1/8/32 with a 128-token prompt and 32 decode steps, then llama-batched-bench on the GGUF
with the same prompt length, decode steps, batch sizes and threads. A dtype shared by several
pairs is measured once per round, right before its first GGUF. Per cell the paired ratio
(ours / llama.cpp, decode tokens/s; prefill: 1×128 prompt tokens/s) is taken per round and the
median over rounds printed, with the read bandwidth and f32 GEMM peak that `moe bench infer`
measured at the start of each of its runs.

    python3 reference/bench_vs_llama.py --moe target/release/moe --llama-bin .../build/bin \\
        --config configs/bench-small-moe.toml --rounds 3 \\
        --pair q4=/work/llama/moe-q4_0.gguf --pair q4=/work/llama/moe-q4_k_m.gguf --pair int8=/work/llama/moe-q8_0.gguf

With --same-file our engine loads each pair's GGUF itself (`moe bench infer --model GGUF --dtype D`:
the same weights, so the same expert routing, on both sides; a file whose type the engine does not
run is converted at load, e.g. Q4_K_M to q4) and is measured once per pair instead of once per dtype.

Not used by the tests.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys

BATCHES = [1, 8, 32]


def run(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout + p.stderr


def ours(a, dtype, gguf=None):
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    source = ["--model", gguf] if gguf else ["--config", a.config]
    out = run(
        [a.moe, "bench", "infer", *source, "--batch", ",".join(map(str, BATCHES)), "--prompt-len", "128",
         "--n-decode", "32", "--dtype", dtype],
        env,
    )
    m = re.search(r"read bandwidth ([\d.]+) GB/s.*f32 GEMM peak ([\d.]+) GFLOP/s", out)
    machine = (float(m.group(1)), float(m.group(2))) if m else (float("nan"), float("nan"))
    kernel = re.search(r"kernel (\S+)", out)
    rows = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 3 and f[0].isdigit() and int(f[0]) in BATCHES:
            rows[int(f[0])] = (float(f[1]), float(f[2]))  # prefill tok/s, decode tok/s
    return rows, machine, kernel.group(1) if kernel else "?"


def llama(a, gguf):
    out = run(
        [os.path.join(a.llama_bin, "llama-batched-bench"), "-m", gguf, "-c", "8192", "-b", "2048", "-ub", "512", "-npp", "128",
         "-ntg", "32", "-npl", ",".join(map(str, BATCHES)), "-t", str(a.threads)]
    )
    rows = {}
    for line in out.splitlines():
        f = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(f) == 10 and f[0] == "128" and f[2].isdigit():
            rows[int(f[2])] = (float(f[5]), float(f[7]))  # S_PP t/s, S_TG t/s
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moe", required=True)
    ap.add_argument("--llama-bin", required=True)
    ap.add_argument("--config", default="configs/bench-small-moe.toml")
    ap.add_argument("--pair", action="append", required=True, help="OURS_DTYPE=GGUF")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--same-file", action="store_true", help="our engine loads each pair's GGUF (not --config)")
    a = ap.parse_args()
    pairs = [p.split("=", 1) for p in a.pair]
    ratios = {(d, g): {b: [] for b in BATCHES + ["pp"]} for d, g in pairs}
    abs_ = {(d, g): [] for d, g in pairs}
    machines, kernels = [], {}
    for r in range(a.rounds):
        done = {}
        for d, g in pairs:
            key = (d, g) if a.same_file else d
            if key not in done:
                done[key], mach, kernels[d] = ours(a, d, g if a.same_file else None)
                machines.append(mach)
            o, l = done[key], llama(a, g)
            for b in BATCHES:
                ratios[(d, g)][b].append(o[b][1] / l[b][1])
            ratios[(d, g)]["pp"].append(o[1][0] / l[1][0])
            abs_[(d, g)].append((o, l))
            print(f"round {r + 1}: {d} vs {os.path.basename(g)}: "
                  + ", ".join(f"b{b} {o[b][1]:.0f}/{l[b][1]:.0f}" for b in BATCHES)
                  + f", prefill {o[1][0]:.0f}/{l[1][0]:.0f}", flush=True)
    bw = [m[0] for m in machines]
    pk = [m[1] for m in machines]
    print(f"\nmachine: read bandwidth {min(bw):.1f}–{max(bw):.1f} GB/s, f32 GEMM peak {min(pk):.0f}–{max(pk):.0f} GFLOP/s "
          f"(measured by each `moe bench infer` run); {a.rounds} interleaved rounds, median of paired ratios\n")
    print("| moe vs llama.cpp | kernel | batch 1 | batch 8 | batch 32 | prefill 1×128 | moe tok/s b1/b8/b32 (median) | llama.cpp tok/s |")
    print("|---|---|---|---|---|---|---|---|")
    for d, g in pairs:
        rr = ratios[(d, g)]
        ours_m = "/".join(f"{statistics.median(x[0][b][1] for x in abs_[(d, g)]):.0f}" for b in BATCHES)
        llama_m = "/".join(f"{statistics.median(x[1][b][1] for x in abs_[(d, g)]):.0f}" for b in BATCHES)
        print(f"| {d} vs {os.path.basename(g)} | {kernels[d]} | "
              + " | ".join(f"{statistics.median(rr[b]):.2f}" for b in BATCHES)
              + f" | {statistics.median(rr['pp']):.2f} | {ours_m} | {llama_m} |")


if __name__ == "__main__":
    main()
