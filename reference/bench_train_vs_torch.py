"""Training throughput of `moe bench train` against PyTorch eager f32 on the same model, interleaved.

Both sides train the model of one experiment TOML (`[model]` and `[train]`: batch_size × seq_len
random tokens per step) with the same work per step: forward, cross-entropy + aux/z losses,
backward, global-norm clipping and AdamW. The PyTorch side is `reference/model.py` — the spec in
plain PyTorch (the peer the golden files come from), eager mode, f32, `torch.set_num_threads` = the
same thread count. Rounds alternate A B A B (moe, PyTorch); each round times `--steps` steps after
one warm-up step; the script prints each round's tokens/s, the paired ratios and their median,
beside the bandwidth-free figure `moe bench train` prints for this machine (its f32 GEMM peak).

    /work/venv-gguf/bin/python reference/bench_train_vs_torch.py \
        --moe target/release/moe --config configs/bench-small-moe.toml --rounds 3 --steps 3

Needs torch (reference/requirements.txt). Not run by CI: a benchmark, not a test.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
import tomllib

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as ref  # noqa: E402


def torch_round(cfg, train, steps, threads, seed):
    """tokens/s of `steps` PyTorch steps after one warm-up step."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    params, buffers = ref.init_params(cfg, gen, std=0.02, emb_std=0.02, router_std=0.02)
    params = {n: t.requires_grad_(True) for n, t in params.items()}
    decay = [t for n, t in params.items() if ref.decays(cfg, n, t)]
    no_decay = [t for n, t in params.items() if not ref.decays(cfg, n, t)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": train.get("weight_decay", 0.1)},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=train.get("lr", 3e-4), betas=(0.9, 0.95), eps=1e-8)
    B, T = train["batch_size"], train["seq_len"]

    def step():
        tokens = torch.randint(0, cfg.n_vocab, (B, T + 1), generator=gen)
        opt.zero_grad(set_to_none=True)
        out = ref.forward(cfg, params, buffers, tokens[:, :-1], tokens[:, 1:])
        out.loss.backward()
        ref.clip_grad_norm([t.grad for t in params.values() if t.grad is not None], train.get("grad_clip", 1.0))
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return B * T * steps / (time.perf_counter() - t0)


def moe_round(binary, config, steps):
    """(tokens/s, GEMM peak GFLOP/s, % of peak) from `moe bench train`."""
    out = subprocess.run([binary, "bench", "train", "--config", config, "--steps", str(steps)],
                         check=True, capture_output=True, text=True).stdout
    tok = float(re.search(r"training tokens/s\s+([\d.]+)", out).group(1))
    peak = float(re.search(r"f32 GEMM peak GFLOP/s\s+([\d.]+)", out).group(1))
    frac = float(re.search(r"ratio\s+([\d.]+)%", out).group(1))
    return tok, peak, frac


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--moe", default="target/release/moe")
    ap.add_argument("--config", default="configs/bench-small-moe.toml")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    with open(args.config, "rb") as f:
        doc = tomllib.load(f)
    cfg = ref.ModelConfig.from_dict(doc["model"])  # a key model.py lacks is an error, not skipped
    train = doc.get("train", {})
    print(f"config {args.config}: batch {train['batch_size']} × {train['seq_len']}, threads {args.threads}, "
          f"torch {torch.__version__}, {args.rounds} rounds of {args.steps} steps (A = moe, B = PyTorch eager f32)")
    ratios = []
    for r in range(args.rounds):
        a, peak, frac = moe_round(args.moe, args.config, args.steps)
        b = torch_round(cfg, train, args.steps, args.threads, seed=r)
        ratios.append(a / b)
        print(f"round {r + 1}: moe {a:.0f} tok/s ({frac:.1f}% of the {peak:.1f} GFLOP/s f32 GEMM peak), "
              f"PyTorch {b:.0f} tok/s, ratio {a / b:.2f}", flush=True)
    print(f"median paired ratio moe / PyTorch: {statistics.median(ratios):.2f} "
          f"(range {min(ratios):.2f}–{max(ratios):.2f})")


if __name__ == "__main__":
    main()
