"""Write a GGUF of random weights in the shape of an moe experiment config, for benchmarking
llama.cpp's `llama-server` against `moe bench serve --config CFG` on the same shapes and precision.

Throughput does not depend on the weight values (only on shapes, precision and how evenly the
router spreads tokens; random weights route close to uniformly in both), so both sides use
random weights of identical shape; no conversion from safetensors (which would need torch) is
involved.

    python3 reference/bench_gguf.py --config configs/bench-small-moe.toml --dtype f32 --out /tmp/m-f32.gguf

Needs numpy and llama.cpp's gguf-py (`vendor/llama.cpp/gguf-py` of the llama-cpp-python sdist;
pass it with --gguf-py or put it on PYTHONPATH). Not used by the tests.
"""

import argparse
import sys
import tomllib

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--dtype", choices=["f32", "bf16", "q8_0"], default="f32")
    ap.add_argument("--out", required=True)
    ap.add_argument("--gguf-py", default=None, help="path of llama.cpp's gguf-py")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--n-ctx",
        type=int,
        default=None,
        help="context length written to the file [default: the config's]; llama-server splits it over its slots (-np), so "
        "serving benchmarks need it larger than the config's per-sequence context",
    )
    a = ap.parse_args()
    if a.gguf_py:
        sys.path.insert(0, a.gguf_py)
    import gguf  # noqa: E402
    from gguf.constants import GGMLQuantizationType as Q  # noqa: E402

    with open(a.config, "rb") as f:
        m = tomllib.load(f)["model"]
    moe = m.get("moe")
    if moe is None or moe.get("every", 1) != 1 or moe.get("first_dense", 0) != 0 or moe.get("n_shared_expert", 0):
        sys.exit(f"{a.config}: only Mixtral-shaped configs (MoE in every layer, no shared expert) map onto llama.cpp's llama arch")
    if m.get("activation", "swiglu") != "swiglu":
        sys.exit(f"{a.config}: model.activation must be swiglu")
    n_vocab, n_ctx, n_layer, d = m["n_vocab"], m["n_ctx"], m["n_layer"], m["d_model"]
    n_head, n_kv = m["n_head"], m.get("n_head_kv", m["n_head"])
    d_head = m.get("d_head", d // n_head)
    n_exp, k, d_exp = moe["n_expert"], moe["n_expert_active"], moe.get("d_expert", m["d_ff"])
    rng = np.random.default_rng(a.seed)
    qt = {"f32": Q.F32, "bf16": Q.BF16, "q8_0": Q.Q8_0}[a.dtype]
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[a.dtype]

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name(f"random {a.config}")
    w.add_context_length(a.n_ctx or n_ctx)
    w.add_embedding_length(d)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(d_exp)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_key_length(d_head)
    w.add_value_length(d_head)
    w.add_rope_dimension_count(d_head)
    w.add_rope_freq_base(float(m.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(m.get("norm_eps", 1e-5)))
    w.add_expert_count(n_exp)
    w.add_expert_used_count(k)
    w.add_vocab_size(n_vocab)
    w.add_file_type(ftype)
    # a SentencePiece-type vocabulary of plain pieces; ids 0-2 are unk/bos/eos
    tokens = ["<unk>", "<s>", "</s>"] + [f"\u2581t{i}" for i in range(3, n_vocab)]
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types([2, 3, 3] + [1] * (n_vocab - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)

    def tensor(name: str, shape: tuple, scale: float, quant: bool = True) -> None:
        x = (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32)
        if quant and qt != Q.F32:
            w.add_tensor(name, gguf.quants.quantize(x, qt), raw_dtype=qt)
        else:
            w.add_tensor(name, x)

    s = 0.02
    tensor("token_embd.weight", (n_vocab, d), s)
    for i in range(n_layer):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(d, dtype=np.float32))
        tensor(p + "attn_q.weight", (n_head * d_head, d), s)
        tensor(p + "attn_k.weight", (n_kv * d_head, d), s)
        tensor(p + "attn_v.weight", (n_kv * d_head, d), s)
        tensor(p + "attn_output.weight", (d, n_head * d_head), s)
        w.add_tensor(p + "ffn_norm.weight", np.ones(d, dtype=np.float32))
        tensor(p + "ffn_gate_inp.weight", (n_exp, d), s, quant=False)
        tensor(p + "ffn_gate_exps.weight", (n_exp, d_exp, d), s)
        tensor(p + "ffn_up_exps.weight", (n_exp, d_exp, d), s)
        tensor(p + "ffn_down_exps.weight", (n_exp, d, d_exp), s)
    w.add_tensor("output_norm.weight", np.ones(d, dtype=np.float32))
    tensor("output.weight", (n_vocab, d), s)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {a.out}: {n_layer} layers, {n_exp} experts top-{k}, d_model {d}, d_expert {d_exp}, vocab {n_vocab}, {a.dtype}")


if __name__ == "__main__":
    main()
