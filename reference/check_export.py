"""Load directories written by `moe export` in transformers and compare their logits with ours.

Ours come from `moe logits --model DIR` (our loader reads the export back bit for bit — pinned by
crates/model/tests/hf_export.rs — so these are the run's own logits). Usage, from the repository
root, after `cargo build -p moe-cli`:

    /root/refvenv/bin/python reference/check_export.py EXPORT_DIR [EXPORT_DIR ...] [--moe target/debug/moe]

For each directory: 2 random sequences of up to 32 tokens (seeded), f32, eager attention; prints
max |ours − hf| and max |ours − hf| / max |hf|, and exits 1 if the latter exceeds 1e-4.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

TOL = 1e-4


def ours(moe, d, tokens):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "logits.safetensors")
        subprocess.run([moe, "logits", "--model", d, "--tokens", ",".join(map(str, tokens)), "--out", out],
                       check=True, stdout=subprocess.DEVNULL)
        return load_file(out)["logits"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--moe", default="target/debug/moe")
    a = ap.parse_args()
    torch.set_num_threads(1)
    worst = 0.0
    for d in a.dirs:
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        cfg = model.config
        n = min(32, cfg.max_position_embeddings)
        gen = torch.Generator().manual_seed(0)
        for s in range(2):
            tokens = torch.randint(0, cfg.vocab_size, (n,), generator=gen).tolist()
            with torch.no_grad():
                hf = model(input_ids=torch.tensor([tokens])).logits[0].float()
            mine = ours(a.moe, d, tokens)
            diff = (mine - hf).abs().max().item()
            rel = diff / hf.abs().max().item()
            worst = max(worst, rel)
            print(f"{d} [{cfg.architectures[0]}] seq {s}: {n} tokens, max |ours - hf| = {diff:.3e}, max-abs-rel = {rel:.3e}")
    print(f"worst max-abs-rel {worst:.3e} (tolerance {TOL:g})")
    sys.exit(0 if worst <= TOL else 1)


if __name__ == "__main__":
    main()
