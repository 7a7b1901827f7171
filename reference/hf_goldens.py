"""Golden files pinning `moe_model::hf::load_hf_dir` to Hugging Face transformers.

For each architecture in scope this builds a tiny random model with transformers' own config and
model classes (float32, eager attention), perturbs every norm weight away from one, saves it with
`save_pretrained(safe_serialization=True)` into `tests/golden_hf/<case>/`, and writes
`expected.safetensors` next to it with

- `tokens`            [n_seq, seq_len] int64 — the fixed input batch
- `logits`            [n_seq, seq_len, vocab] float32 — full logits of the f32 model
- `router_logits.{i}` [n_seq·seq_len, n_expert] float32 — per MoE layer i (output_router_logits=True)
- `greedy`            [8] int64 — `generate(do_sample=False)` continuation of sequence 0
- `greedy_margin`     [8] float32 — top-1 minus top-2 logit at each greedy step

plus `tests/golden_hf/MANIFEST.json` (versions, tolerances, per-case details). Run from the
repository root:

    /root/refvenv/bin/python reference/hf_goldens.py            # every case
    /root/refvenv/bin/python reference/hf_goldens.py qwen2_moe  # only these cases

Deterministic: seeds are fixed; rerunning rewrites the same tensors. Fixtures are never edited
by hand. Exact versions: reference/requirements-hf.txt.
"""

import json
import os
import shutil
import sys

import numpy as np
import safetensors
import torch
import transformers
from safetensors.torch import save_file
from transformers import (
    DeepseekV3Config,
    DeepseekV3ForCausalLM,
    GenerationConfig,
    GptOssConfig,
    GptOssForCausalLM,
    Llama4Config,
    Llama4ForCausalLM,
    Llama4ForConditionalGeneration,
    Llama4TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    OlmoeConfig,
    OlmoeForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden_hf")
N_SEQ, SEQ_LEN, N_NEW = 2, 12, 8
LOGITS_RTOL = 1e-4  # max |ours − hf| / max |hf|
MIN_GREEDY_MARGIN = 1e-3

COMMON = dict(
    vocab_size=128,
    max_position_embeddings=64,
    rms_norm_eps=1e-6,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    initializer_range=0.08,
)


def cases():
    """(name, config class, model class, kwargs, save kwargs, MoE layer indices)."""
    return [
        (
            "llama",
            LlamaConfig,
            LlamaForCausalLM,
            dict(COMMON, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                 tie_word_embeddings=False),
            {},
            [],
        ),
        (
            "llama_tied",
            LlamaConfig,
            LlamaForCausalLM,
            dict(COMMON, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=1, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                 tie_word_embeddings=True, rms_norm_eps=1e-5),
            {},
            [],
        ),
        (
            "mixtral",
            MixtralConfig,
            MixtralForCausalLM,
            dict(COMMON, hidden_size=64, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, sliding_window=None),
            # several shards + model.safetensors.index.json
            dict(max_shard_size="150KB"),
            [0, 1],
        ),
        (
            "qwen3",
            Qwen3Config,
            Qwen3ForCausalLM,
            # head_dim 16 · 4 heads = 64 ≠ hidden 48; tied like Qwen3-0.6B
            dict(COMMON, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                 tie_word_embeddings=True, use_sliding_window=False),
            {},
            [],
        ),
        (
            "qwen3_moe",
            Qwen3MoeConfig,
            Qwen3MoeForCausalLM,
            # layer 0 dense (mlp_only_layers), layers 1, 2 MoE; top-2 of 6 without renormalisation
            dict(COMMON, hidden_size=48, intermediate_size=64, moe_intermediate_size=32, num_hidden_layers=3,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=6, num_experts_per_tok=2,
                 norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[0],
                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, use_sliding_window=False,
                 tie_word_embeddings=False),
            {},
            [1, 2],
        ),
        (
            "olmoe",
            OlmoeConfig,
            OlmoeForCausalLM,
            dict(COMMON, hidden_size=64, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, norm_topk_prob=False,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, clip_qkv=None),
            {},
            [0, 1],
        ),
        (
            "qwen2_moe",
            Qwen2MoeConfig,
            Qwen2MoeForCausalLM,
            # q/k/v biases; layer 0 dense; layers 1, 2: top-2 of 6 renormalised + a sigmoid-gated shared expert
            dict(COMMON, hidden_size=48, intermediate_size=64, moe_intermediate_size=32,
                 shared_expert_intermediate_size=40, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, num_experts=6, num_experts_per_tok=2, norm_topk_prob=True,
                 decoder_sparse_step=1, mlp_only_layers=[0], qkv_bias=True,
                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, use_sliding_window=False,
                 tie_word_embeddings=False),
            {},
            [1, 2],
        ),
        (
            "deepseek_v3",
            DeepseekV3Config,
            DeepseekV3ForCausalLM,
            # MLA with a q latent and interleaved RoPE; layer 0 dense; layers 1, 2: sigmoid top-2 of 8
            # in 4 groups (2 kept), e_score_correction_bias, renormalised, × 2.5, one shared expert
            dict(COMMON, hidden_size=48, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=3,
                 num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8, n_shared_experts=1,
                 num_experts_per_tok=2, n_group=4, topk_group=2, norm_topk_prob=True, routed_scaling_factor=2.5,
                 first_k_dense_replace=1, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8,
                 qk_rope_head_dim=8, v_head_dim=12, rope_interleave=True,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False),
            {},
            [1, 2],
        ),
        (
            "deepseek_v3_noq",
            DeepseekV3Config,
            DeepseekV3ForCausalLM,
            # no q latent (one q_proj), half-split RoPE, no groups, no renormalisation, two shared experts
            dict(COMMON, hidden_size=48, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4, n_routed_experts=6, n_shared_experts=2,
                 num_experts_per_tok=2, n_group=1, topk_group=1, norm_topk_prob=False, routed_scaling_factor=1.5,
                 first_k_dense_replace=0, q_lora_rank=None, kv_lora_rank=16, qk_nope_head_dim=8,
                 qk_rope_head_dim=4, v_head_dim=8, rope_interleave=False,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False),
            {},
            [0, 1],
        ),
        (
            "gpt_oss",
            GptOssConfig,
            GptOssForCausalLM,
            # sinks, sliding window 4 on layers 0 and 2, biases everywhere, top-2 of 4 biased experts with the
            # clamped SwiGLU (limit 1.5 so the clamp bites), YaRN RoPE (factor 4 over 16 original positions)
            dict(COMMON, hidden_size=48, intermediate_size=24, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
                 sliding_window=4, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                 swiglu_limit=1.5, attention_bias=True, rms_norm_eps=1e-5,
                 rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 4.0, "beta_fast": 32.0,
                                  "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 16},
                 tie_word_embeddings=False),
            {},
            [0, 1, 2],
        ),
        (
            "llama4",
            Llama4TextConfig,
            Llama4ForCausalLM,
            # MoE in layers 1, 3 (sigmoid top-2 scaling the expert inputs + shared expert), dense layers 0, 2;
            # layer 2 without RoPE and with temperature tuning (floor 4, scale 0.5); chunked attention of 5 on
            # the RoPE layers with L2 q/k norm; interleaved RoPE with llama3 scaling
            dict(COMMON, hidden_size=48, intermediate_size=16, intermediate_size_mlp=64, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=4,
                 num_experts_per_tok=2, interleave_moe_layer_step=2, no_rope_layer_interval=3,
                 attention_chunk_size=5, use_qk_norm=True, attn_temperature_tuning=True, floor_scale=4,
                 attn_scale=0.5, rms_norm_eps=1e-5,
                 rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8},
                 tie_word_embeddings=False),
            {},
            [1, 3],
        ),
        (
            "llama_rope_llama3",
            LlamaConfig,
            LlamaForCausalLM,
            # Llama 3.1-style RoPE scaling with a pretraining context of 16 so all three bands occur
            dict(COMMON, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=1, rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                 "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
                 tie_word_embeddings=True, rms_norm_eps=1e-5),
            {},
            [],
        ),
        (
            "llama_rope_linear",
            LlamaConfig,
            LlamaForCausalLM,
            dict(COMMON, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 3.0},
                 tie_word_embeddings=True, rms_norm_eps=1e-5),
            {},
            [],
        ),
        (
            "qwen3_rope_yarn",
            Qwen3Config,
            Qwen3ForCausalLM,
            # YaRN with the default truncation and the derived attention factor, per-head q/k norm
            dict(COMMON, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0,
                 "factor": 4.0, "original_max_position_embeddings": 16}, tie_word_embeddings=True,
                 use_sliding_window=False),
            {},
            [],
        ),
        (
            "mixtral_window",
            MixtralConfig,
            MixtralForCausalLM,
            # a sliding window of 6 < the 20 positions of the test, every layer
            dict(COMMON, hidden_size=32, intermediate_size=24, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, sliding_window=6,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
            {},
            [0, 1],
        ),
        (
            "qwen3_window",
            Qwen3Config,
            Qwen3ForCausalLM,
            # layer 0 full, layers 1, 2 with a window of 5 (max_window_layers 1)
            dict(COMMON, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8, use_sliding_window=True, sliding_window=5, max_window_layers=1,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=True),
            {},
            [],
        ),
        (
            "qwen2_moe_window",
            Qwen2MoeConfig,
            Qwen2MoeForCausalLM,
            # windows of 6 on layers 0 and 2 (odd-numbered below max_window_layers), biases, shared expert
            dict(COMMON, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
                 shared_expert_intermediate_size=24, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, norm_topk_prob=True,
                 use_sliding_window=True, sliding_window=6, max_window_layers=3,
                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=True),
            {},
            [0, 1, 2],
        ),
        (
            "llama4_multimodal",
            Llama4Config,
            Llama4ForConditionalGeneration,
            # the Hub's Llama 4 layout: text model under `language_model.`, a (tiny, unused) vision tower;
            # top-1 routing as released, every layer MoE, NoPE every 2nd layer, chunks of 7
            dict(text_config=dict(COMMON, hidden_size=32, intermediate_size=16, intermediate_size_mlp=48,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                  num_local_experts=4, num_experts_per_tok=1, no_rope_layer_interval=2,
                                  attention_chunk_size=7, floor_scale=4, attn_scale=0.5, rms_norm_eps=1e-5,
                                  rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                                  tie_word_embeddings=False),
                 vision_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                    image_size=28, patch_size=14, vision_output_dim=32, projector_input_dim=32,
                                    projector_output_dim=32),
                 tie_word_embeddings=False),
            {},
            [0, 1],
        ),
    ]


def perturb_norms(model, gen):
    """Every norm weight to 1 ± 0.3 and every q/k/v bias to ±0.3 so a missing or misplaced one shows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("vision_model.", "multi_modal_projector.", "model.vision_model.", "model.multi_modal_projector.")):
                continue  # Llama 4's vision tower: not part of the text model under test
            if name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")):
                p.copy_(0.3 * (2 * torch.rand(p.shape, generator=gen) - 1))
            elif p.dim() == 1 and name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * (2 * torch.rand(p.shape, generator=gen) - 1))
            elif name.endswith(("o_proj.bias", "router.bias", "experts.gate_up_proj_bias", "experts.down_proj_bias")):
                p.copy_(0.3 * (2 * torch.rand(p.shape, generator=gen) - 1))  # GPT-OSS
            elif name.endswith("self_attn.sinks"):
                p.copy_(2 * torch.rand(p.shape, generator=gen) - 0.5)  # GPT-OSS: some sinks dominate
            elif p.dim() == 1 or "bias" in name:
                raise AssertionError(f"unexpected vector or bias {name}")
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # DeepSeek-V3: shifts the choice, not the weights
                b.copy_(0.2 * (2 * torch.rand(b.shape, generator=gen) - 1))


def make_case(name, cfg_cls, model_cls, kw, save_kw, moe_layers, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    cfg = cfg_cls(**kw)
    cfg._attn_implementation = "eager"
    model = model_cls(cfg).to(torch.float32).eval()
    perturb_norms(model, gen)

    tcfg = getattr(cfg, "text_config", None) or cfg  # multimodal configs keep the text model's settings apart
    tokens = torch.randint(3, tcfg.vocab_size, (N_SEQ, SEQ_LEN), generator=gen)
    with torch.no_grad():
        kwargs = dict(output_router_logits=True) if moe_layers else {}
        out = model(input_ids=tokens, **kwargs)
        logits = out.logits.float()
        router = list(out.router_logits) if moe_layers else []
        assert len(router) == len(moe_layers), (name, len(router), moe_layers)

        gcfg = GenerationConfig(do_sample=False, max_new_tokens=N_NEW, min_new_tokens=N_NEW,
                                bos_token_id=tcfg.bos_token_id, eos_token_id=tcfg.eos_token_id,
                                pad_token_id=tcfg.pad_token_id)
        gen_out = model.generate(tokens[:1], generation_config=gcfg, output_scores=True,
                                 return_dict_in_generate=True)
        greedy = gen_out.sequences[0, SEQ_LEN:]
        assert greedy.numel() == N_NEW, greedy
        margins = []
        for sc in gen_out.scores:
            top2 = torch.topk(sc[0].float(), 2).values
            margins.append(float(top2[0] - top2[1]))
    # greedy continuation must also equal argmax of full recomputation (no KV cache)
    with torch.no_grad():
        seq = tokens[:1]
        for t in range(N_NEW):
            nxt = model(input_ids=seq).logits[0, -1].argmax()
            assert int(nxt) == int(greedy[t]), (name, t)
            seq = torch.cat([seq, nxt.view(1, 1)], dim=1)
    if min(margins) < MIN_GREEDY_MARGIN:
        raise SystemExit(f"{name}: greedy margin {min(margins)} too small; change the seed")

    d = os.path.join(ROOT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    model.save_pretrained(d, safe_serialization=True, **save_kw)
    model.generation_config.save_pretrained(d)
    expected = {
        "tokens": tokens.to(torch.int64).contiguous(),
        "logits": logits.contiguous(),
        "greedy": greedy.to(torch.int64).contiguous(),
        "greedy_margin": torch.tensor(margins, dtype=torch.float32),
    }
    for i, r in zip(moe_layers, router):
        expected[f"router_logits.{i}"] = r.float().reshape(N_SEQ * SEQ_LEN, -1).contiguous()
    save_file(expected, os.path.join(d, "expected.safetensors"), metadata={"dtype": "float32"})
    files = sorted(os.listdir(d))
    size = sum(os.path.getsize(os.path.join(d, f)) for f in files)
    return {
        "architecture": model_cls.__name__,
        "seed": seed,
        "model_dtype": "float32",
        "logits_dtype": "float32",
        "attn_implementation": "eager",
        "moe_layers": moe_layers,
        "n_seq": N_SEQ,
        "seq_len": SEQ_LEN,
        "n_new": N_NEW,
        "min_greedy_margin": min(margins),
        "files": files,
        "bytes": size,
        "save_kwargs": save_kw,
    }


def main():
    """`hf_goldens.py [CASE ...]`: regenerate the named cases (default: all) and update the manifest."""
    only = set(sys.argv[1:])
    unknown = only - {c[0] for c in cases()}
    if unknown:
        raise SystemExit(f"unknown case(s) {sorted(unknown)}")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(ROOT, exist_ok=True)
    manifest = {
        "generator": "reference/hf_goldens.py",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "tolerances": {
            "logits": {"max_abs_rel": LOGITS_RTOL, "what": "max |ours - hf| / max |hf| per case"},
            "router_logits": {"max_abs_rel": LOGITS_RTOL, "topk": "exact where the k-th/(k+1)-th gap > 1e-4"},
            "greedy": "exact, full-sequence recomputation",
        },
        "cases": {},
    }
    old = os.path.join(ROOT, "MANIFEST.json")
    if only and os.path.exists(old):
        with open(old) as f:
            manifest["cases"] = json.load(f)["cases"]
    for i, (name, cfg_cls, model_cls, kw, save_kw, moe_layers) in enumerate(cases()):
        if only and name not in only:
            continue
        manifest["cases"][name] = make_case(name, cfg_cls, model_cls, kw, save_kw, moe_layers, seed=1000 + i)
        print(name, manifest["cases"][name]["bytes"], "bytes", manifest["cases"][name]["files"])
    with open(os.path.join(ROOT, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
