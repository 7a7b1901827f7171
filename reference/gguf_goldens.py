"""Golden files pinning the Rust GGUF loader to llama.cpp itself.

For each case this builds a tiny random Hugging Face model (transformers' own config and model
classes, float32, fixed seed) with a tiny tokenizer trained here (byte-level BPE with the
`tokenizers` library, or a SentencePiece BPE model for `llama_spm`), saves it into a temporary
directory, converts it with llama.cpp's own `convert_hf_to_gguf.py` (`--outtype f32`, `f16`,
`bf16`, `q8_0`) and `llama-quantize` (`Q4_0`; `Q4_K_M` and `Q6_K` for `mixtral_k`), and runs
llama.cpp on every file through `reference/gguf_logits` (see gguf_logits.c). It writes
`tests/golden_gguf/<case>/`:

- `<case>-<type>.gguf`     the converted / quantised files (only the ones listed in MANIFEST
                           `files`; the HF directory is not kept)
- `expected.safetensors`   `tokens` int32 [2, 8]; `logits.<type>` float32 [2, 8, vocab] —
                           llama.cpp's logits at every position of each sequence (each decoded
                           in one batch from an empty KV cache, CPU, 1 thread); `logits.hf`
                           float32 [2, 8, vocab] — transformers' logits of the f32 model
- `tokenize.json`          {"texts": [...], "ids": [[...]], "ids_reference": [[...]]} — ids
                           from llama_tokenize(add_special=false, parse_special=false) on the
                           f32 file, and from the original tokenizer (HF tokenizers /
                           sentencepiece) for comparison

and `tests/golden_gguf/quants/` (one GGUF with a [4, 512] tensor per GGML type, quantised from
N(0, 1) values, plus `expected.safetensors` with what gguf-py's `dequantize` gives), and
`tests/golden_gguf/MANIFEST.json`.

Needs: a built llama.cpp (`LLAMA_CPP`, default the copy vendored by llama-cpp-python 0.3.36 under
/work/llama: its `convert_hf_to_gguf.py`, `gguf-py`, `build/bin/llama-quantize`,
`build/bin/libllama.so`, `build/bin/libggml-base.so`), `reference/gguf_logits` built by
`reference/build_gguf_logits.sh`, and the Python packages in reference/requirements-gguf.txt.
Run from the repository root:

    sh reference/build_gguf_logits.sh
    /work/venv-gguf/bin/python reference/gguf_goldens.py             # every case + quants
    /work/venv-gguf/bin/python reference/gguf_goldens.py mixtral     # only these cases

CI does not run it; the Rust tests only read the committed fixtures. Fixtures are never edited by
hand. The converter refuses BPE pre-tokenizers whose hash it does not know; this script replaces
the converter's `TextModel.get_vocab_base_pre` (in its own process, llama.cpp is not edited) so
the trained byte-level BPE is written with `tokenizer.ggml.pre = "gpt-2"` — the GPT-2
pre-tokenizer regex is exactly what `tokenizers`' ByteLevel pre-tokenizer applies.
"""

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

LLAMA_CPP = os.environ.get("LLAMA_CPP", "/work/llama/llama_cpp_python-0.3.36/vendor/llama.cpp")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "tests", "golden_gguf")
GGUF_LOGITS = os.path.join(HERE, "gguf_logits")
QUANTIZE = os.path.join(LLAMA_CPP, "build", "bin", "llama-quantize")
sys.path.insert(0, os.path.join(LLAMA_CPP, "gguf-py"))

N_SEQ, SEQ_LEN = 2, 8
BPE_VOCAB = 300
SPM_VOCAB = 384
SPECIALS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2 in both tokenizers

CORPUS = """The quick brown fox jumps over the lazy dog. A mixture of experts routes every token to a
few of its feed-forward networks, chosen by a small router; the others stay idle.
In 1969, 3 astronauts flew 384,400 km to the Moon and back: 8 days, 3 hours, 18 minutes.
She said, "Don't worry -- it's only a test!" Then she asked: why? what's next? (nobody knew).
The naïve café served crème brûlée; the señor paid 12.50 euros, and left a tip of 2.
Attention reads keys and values; the cache keeps them, so each new token costs one step.
Numbers like 0, 1, 2, 10, 42, 100 and 2024 appear in text, as do tabs\tand new lines.
We tokenise, embed, normalise, attend, route, mix, and finally project onto the vocabulary.
"""

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  two leading spaces, and  double  spaces",
    "Numbers: 3 33 333 3333 and 3.14159!",
    "line one\nline two\n\nafter a blank line\ttab",
    "naïve café",
    "Don't stop -- it's (almost) done?!",
    "experts",
]


# ---------------------------------------------------------------------------------------------
# converter wrapper (runs in a child process: `gguf_goldens.py --convert HF_DIR OUT TYPE`)


def convert_main(hf_dir, out, outtype):
    sys.path.insert(0, LLAMA_CPP)
    import conversion.base as base  # llama.cpp's own converter package

    def gpt2_pre(self, tokenizer):  # the trained tokenizer's pre-tokenizer is GPT-2's regex
        return os.environ.get("GGUF_GOLDENS_PRE", "gpt-2")  # (a case may name another, below)

    base.TextModel.get_vocab_base_pre = gpt2_pre
    import convert_hf_to_gguf

    sys.argv = ["convert_hf_to_gguf.py", hf_dir, "--outfile", out, "--outtype", outtype]
    convert_hf_to_gguf.main()


def convert(hf_dir, out, outtype, log, pre="gpt-2"):
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--convert", hf_dir, out, outtype],
                       capture_output=True, text=True, env=dict(os.environ, GGUF_GOLDENS_PRE=pre))
    log.write(r.stdout + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"convert {outtype} failed:\n{r.stderr[-3000:]}")


def quantize(src, out, qtype, log):
    r = subprocess.run([QUANTIZE, src, out, qtype, "1"], capture_output=True, text=True)
    log.write(r.stdout + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"llama-quantize {qtype} failed:\n{r.stderr[-3000:]}")


# ---------------------------------------------------------------------------------------------
# llama.cpp through reference/gguf_logits


def escape(text):
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def run_gguf_logits(path, tokens=None, texts=None):
    import numpy as np

    args = [GGUF_LOGITS, path]
    tmp = None
    if tokens is not None:
        args += ["--tokens", ";".join(",".join(str(int(t)) for t in row) for row in tokens)]
    if texts is not None:
        tmp = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8")
        tmp.write("".join(escape(t) + "\n" for t in texts))
        tmp.close()
        args += ["--texts", tmp.name]
    r = subprocess.run(args, capture_output=True, text=True)
    if tmp is not None:
        os.unlink(tmp.name)
    if r.returncode != 0:
        raise RuntimeError(f"gguf_logits {path} failed:\n{r.stderr[-3000:]}")
    vocab = None
    logits = {}
    ids = {}
    for line in r.stdout.splitlines():
        f = line.split(" ")
        if f[0] == "vocab":
            vocab = int(f[1])
        elif f[0] == "logits":
            s, p = int(f[1]), int(f[2])
            row = np.array([float(x) for x in f[3:]], dtype=np.float32)
            assert row.shape == (vocab,), (path, row.shape)
            logits[(s, p)] = row
        elif f[0] == "tokens":
            k = int(f[2])
            ids[int(f[1])] = [int(x) for x in f[3:3 + k]]
            assert len(ids[int(f[1])]) == k
    out = {"vocab": vocab}
    if tokens is not None:
        n, t = len(tokens), len(tokens[0])
        out["logits"] = np.stack([np.stack([logits[(s, p)] for p in range(t)]) for s in range(n)])
    if texts is not None:
        out["ids"] = [ids[i] for i in range(len(texts))]
    return out


# ---------------------------------------------------------------------------------------------
# tokenizers


def train_bpe(tmp):
    """A GPT-2-style byte-level BPE with exactly BPE_VOCAB tokens (256 bytes, 3 specials, merges)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([CORPUS] * 4, trainer=trainer)
    assert tok.get_vocab_size() == BPE_VOCAB, tok.get_vocab_size()
    assert [tok.token_to_id(s) for s in SPECIALS] == [0, 1, 2]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<unk>")
    fast.save_pretrained(tmp)
    return BPE_VOCAB, lambda text: tok.encode(text, add_special_tokens=False).ids


def train_spm(tmp):
    """A SentencePiece BPE model (byte fallback) saved as tokenizer.model + tokenizer_config.json."""
    import sentencepiece as spm

    corpus = os.path.join(tmp, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write(CORPUS)
    prefix = os.path.join(tmp, "spm")
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=prefix, model_type="bpe", vocab_size=SPM_VOCAB, byte_fallback=True,
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, seed_sentencepiece_size=1000,
        minloglevel=2, hard_vocab_limit=True, split_digits=True, add_dummy_prefix=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity")
    os.replace(prefix + ".model", os.path.join(tmp, "tokenizer.model"))
    os.remove(prefix + ".vocab")
    os.remove(corpus)
    with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                   "add_bos_token": True, "add_eos_token": False}, f, indent=2)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(tmp, "tokenizer.model"))
    assert sp.get_piece_size() == SPM_VOCAB
    return SPM_VOCAB, lambda text: sp.encode(text)


# ---------------------------------------------------------------------------------------------
# cases

COMMON = dict(max_position_embeddings=64, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0,
              initializer_range=0.08)

SMALL = ["f32", "f16", "bf16", "q8_0", "q4_0"]


def cases():
    """name -> (config class name, model class name, config kwargs, tokenizer, file types, committed types, seed).

    Every file type is built and its llama.cpp logits recorded; only the committed types' GGUFs are
    kept, to hold tests/golden_gguf/ near 4 MB (+ ~1 MB for mixtral_k): F16/BF16 in `llama` only,
    Q8_0 in `llama` and `mixtral`, Q4_0 in `llama`, `mixtral` and `qwen3` (tied: token_embd is
    the Q8_0 fallback there), K-quants in `mixtral_k`; f32 everywhere else except `mixtral_k`."""
    return {
        "llama": ("LlamaConfig", "LlamaForCausalLM",
                  dict(COMMON, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                       tie_word_embeddings=False),
                  "bpe", SMALL, SMALL, 11),
        "llama_spm": ("LlamaConfig", "LlamaForCausalLM",
                      dict(COMMON, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                           tie_word_embeddings=False, rms_norm_eps=1e-5),
                      "spm", ["f32", "q8_0"], ["f32"], 12),
        "mixtral": ("MixtralConfig", "MixtralForCausalLM",
                    dict(COMMON, hidden_size=64, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, sliding_window=None,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                         tie_word_embeddings=False),
                    "bpe", SMALL, ["f32", "q8_0", "q4_0"], 13),
        "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM",
                      # llama.cpp's qwen2moe graph never renormalises the top-k weights (as Qwen1.5-MoE)
                      dict(COMMON, hidden_size=64, intermediate_size=64, moe_intermediate_size=32,
                           shared_expert_intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, norm_topk_prob=False,
                           decoder_sparse_step=1, mlp_only_layers=[], qkv_bias=True, use_sliding_window=False,
                           rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                           tie_word_embeddings=False),
                      "bpe", ["f32", "q8_0", "q4_0"], ["f32"], 14),
        "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM",
                      # llama.cpp's qwen3moe graph always renormalises the top-k weights
                      dict(COMMON, hidden_size=64, intermediate_size=64, moe_intermediate_size=32,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                           num_experts=4, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1,
                           mlp_only_layers=[], use_sliding_window=False,
                           rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                           tie_word_embeddings=False),
                      "bpe", ["f32", "q8_0", "q4_0"], ["f32"], 15),
        "olmoe": ("OlmoeConfig", "OlmoeForCausalLM",
                  # llama.cpp's olmoe graph never renormalises the top-k weights (as OLMoE-1B-7B), and it
                  # wants attn_k_norm over n_embd: OLMoE's q/k norm spans the whole projection, so n_kv_heads
                  # must equal n_heads (as in OLMoE-1B-7B; with 2 kv heads llama.cpp refuses the file)
                  dict(COMMON, hidden_size=64, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=4, num_experts=4, num_experts_per_tok=2, norm_topk_prob=False,
                       clip_qkv=None, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                       tie_word_embeddings=False, rms_norm_eps=1e-5),  # the converter writes 1e-5 for any OLMoE
                  "bpe", ["f32", "q8_0", "q4_0"], ["f32"], 16),
        "qwen3": ("Qwen3Config", "Qwen3ForCausalLM",
                  dict(COMMON, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, use_sliding_window=False,
                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                       tie_word_embeddings=True),
                  "bpe", ["f32", "q8_0", "q4_0"], ["f32", "q4_0"], 17),
        "mixtral_k": ("MixtralConfig", "MixtralForCausalLM",
                      # every matrix has rows of 256 so llama-quantize's K-quants apply everywhere
                      dict(COMMON, hidden_size=256, intermediate_size=256, num_hidden_layers=1,
                           num_attention_heads=4, num_key_value_heads=1, num_local_experts=2, num_experts_per_tok=2,
                           sliding_window=None, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                           tie_word_embeddings=False),
                      "bpe", ["f32", "q4_k_m", "q6_k"], ["q4_k_m", "q6_k"], 18),
        # --- second batch (deepseek2 / gpt-oss / llama4); an optional 8th item holds per-case extras.
        # Seeds 39 (deepseek_v3) and 31 (gpt_oss) were picked among a few so that no Q8_0 logit row
        # moves by more than ~0.1 from the f32 one (the others had a near-tie in the expert choice
        # that Q8_0 flips, which would make logits.q8_0 hypersensitive to rounding).
        "deepseek_v3": ("DeepseekV3Config", "DeepseekV3ForCausalLM", DEEPSEEK_V3, "bpe", ["f32", "q8_0", "q4_0"],
                        ["f32", "q8_0"], 39, dict(perturb=perturb_deepseek, notes=DEEPSEEK_NOTES)),
        "deepseek_v3_noq": ("DeepseekV3Config", "DeepseekV3ForCausalLM", dict(DEEPSEEK_V3, q_lora_rank=None), "bpe",
                            ["f32"], ["f32"], 20, dict(perturb=perturb_deepseek, notes=DEEPSEEK_NOTES + [
                                "q_lora_rank null: the converter writes attn_q (no attn_q_a/_b, no q_a_norm) and no "
                                "deepseek2.attention.q_lora_rank key; llama.cpp's deepseek2 loader requires that key "
                                "unless n_layer is 26 or 27 (or 48 with vocab 128256) -- the DeepSeek-V2-Lite style "
                                "'is_lite' test -- so a 3-layer file does not load: expected to be skipped"])),
        "gpt_oss": ("GptOssConfig", "GptOssForCausalLM", GPT_OSS, "bpe", ["f32", "q8_0", "mxfp4_moe"],
                    ["f32", "mxfp4_moe"], 31,
                    dict(perturb=perturb_gpt_oss, notes=GPT_OSS_NOTES)),
        "llama4": ("Llama4TextConfig", "Llama4ForCausalLM", LLAMA4, "bpe", ["f32", "q8_0"], ["f32"], 22,
                   dict(perturb=perturb, notes=LLAMA4_NOTES)),
        # --- third batch: Llama 3.1-style RoPE scaling, which the converter stores as `rope_freqs`
        # (one divisor per rotated pair) without the llama3 parameters; llama's q/k are permuted
        "llama3_rope": ("LlamaConfig", "LlamaForCausalLM",
                        dict(COMMON, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, tie_word_embeddings=False,
                             rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                              "original_max_position_embeddings": 16}),
                        "bpe", ["f32", "q8_0"], ["f32"], 23),
        # `tokenizer.ggml.pre = "llama4"` (Llama 4's files; llama.cpp's GPT-4o pre-tokenizer) over the
        # same trained vocabulary: llama.cpp splits the test texts with that regex, and so must we
        "llama_gpt4o_pre": ("LlamaConfig", "LlamaForCausalLM",
                            dict(COMMON, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2,
                                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                                 tie_word_embeddings=False),
                            "bpe", ["f32"], ["f32"], 24,
                            dict(perturb=perturb, pre="llama4", notes=[
                                "tokenizer.ggml.pre = llama4 (llama.cpp: the GPT-4o regex); the trained tokenizer "
                                "itself splits with GPT-2's, so ids_reference differs from ids by design"])),
    }


# DeepSeek-V3 style: MLA with q and kv LoRA, first layer dense, sigmoid routing with a (non-zero)
# e_score_correction_bias, grouped top-k, routed_scaling_factor != 1, one shared expert, renormalised
# top-k. `scoring_func` / `topk_method` are not DeepseekV3Config fields (transformers always routes
# with sigmoid + noaux_tc) but the converter reads `scoring_func` to write expert_gating_func, as
# DeepSeek-V3's own config.json has it; without it llama.cpp falls back to softmax (DeepSeek-V2).
DEEPSEEK_V3 = dict(COMMON, hidden_size=64, intermediate_size=64, moe_intermediate_size=16, num_hidden_layers=3,
                   num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8, n_shared_experts=1,
                   num_experts_per_tok=2, n_group=4, topk_group=2, routed_scaling_factor=2.5, norm_topk_prob=True,
                   first_k_dense_replace=1, q_lora_rank=24, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8,
                   v_head_dim=12, rope_interleave=True, num_nextn_predict_layers=0,
                   rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                   scoring_func="sigmoid", topk_method="noaux_tc", tie_word_embeddings=False)

DEEPSEEK_NOTES = [
    "e_score_correction_bias (a buffer, zero after init) is set to U(-0.5, 0.5) so it changes the expert choice; "
    "it is used for the choice only, the weights are the plain sigmoid scores",
    "rope_interleave=True: HF de-interleaves q_pe/k_pe before a NeoX rotation, i.e. llama.cpp's NORM (adjacent "
    "pairs) rope on the stored layout; the converter does not permute any DeepSeek weight",
]

# gpt-oss: SWA on even layers (llama.cpp's pattern 2), attention sinks, biases everywhere, interleaved
# gate/up with the clamped (limit 7, alpha 1.702: llama.cpp hard-codes both) SwiGLU, YaRN as gpt-oss.
# `truncate: True` makes HF floor/ceil the YaRN correction range as ggml always does (gpt-oss's own
# config has truncate false; see notes).
GPT_OSS = dict(COMMON, hidden_size=64, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2, sliding_window=4,
               layer_types=["sliding_attention", "full_attention"], attention_bias=True, swiglu_limit=7.0,
               rms_norm_eps=1e-5, max_position_embeddings=131072,
               rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0,
                                "original_max_position_embeddings": 4096, "beta_fast": 32.0, "beta_slow": 1.0,
                                "truncate": True},
               tie_word_embeddings=False)

GPT_OSS_NOTES = [
    "sinks set to U(-1, 1), every bias (q/k/v/o, router, expert gate_up/down) to U(-0.3, 0.3)",
    "rope_parameters.truncate=True for logits.hf: ggml_rope_yarn_corr_dims always floors/ceils the correction "
    "range, and the converter does not write `truncate`",
]

# Llama 4 text: the values llama.cpp hard-codes for the architecture (chunk 8192, NoPE every 4th layer,
# attention temperature floor 8192 / scale 0.1, 3 chunked : 1 full), MoE every 2nd layer with top-1
# sigmoid routing and a shared expert, L2 q/k norm on the RoPE layers, llama3 RoPE (rope_freqs).
LLAMA4 = dict(COMMON, hidden_size=64, intermediate_size=16, intermediate_size_mlp=32, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=1,
              interleave_moe_layer_step=2, use_qk_norm=True, attention_chunk_size=8192, no_rope_layer_interval=4,
              attn_temperature_tuning=True, floor_scale=8192, attn_scale=0.1, rms_norm_eps=1e-5,
              rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 8},
              tie_word_embeddings=False)

LLAMA4_NOTES = [
    "layers 0-2 chunked attention (chunk 8192, so causal here) with RoPE + L2 q/k norm, layer 3 full attention "
    "without RoPE (NoPE) and without q/k norm; layers 1 and 3 MoE (router sigmoid, top-1, the weight multiplies "
    "the expert input) + shared expert, layers 0 and 2 dense (intermediate_size_mlp)",
]


CONVERTER_TYPES = {"f32", "f16", "bf16", "q8_0"}
QUANTIZE_TYPES = {"q4_0": "Q4_0", "q4_k_m": "Q4_K_M", "q6_k": "Q6_K", "mxfp4_moe": "MXFP4_MOE"}


def perturb(model, gen):
    """Norm weights to 1 ± 0.3 and q/k/v biases to ±0.3, so a missing or misplaced one shows."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")):
                p.copy_(0.3 * (2 * torch.rand(p.shape, generator=gen) - 1))
            elif p.dim() == 1 and name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * (2 * torch.rand(p.shape, generator=gen) - 1))
            elif p.dim() == 1 or "bias" in name:
                raise AssertionError(f"unexpected vector or bias {name}")


def perturb_deepseek(model, gen):
    """perturb, then e_score_correction_bias (zero-initialised buffers) to U(-0.5, 0.5)."""
    import torch

    perturb(model, gen)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.5 * (2 * torch.rand(b.shape, generator=gen) - 1))


def perturb_gpt_oss(model, gen):
    """Norm weights to 1 ± 0.3, every bias to ±0.3, attention sinks to ±1."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("sinks"):
                p.copy_(2 * torch.rand(p.shape, generator=gen) - 1)
            elif name.endswith("bias"):
                p.copy_(0.3 * (2 * torch.rand(p.shape, generator=gen) - 1))
            elif p.dim() == 1 and name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * (2 * torch.rand(p.shape, generator=gen) - 1))
            elif p.dim() == 1:
                raise AssertionError(f"unexpected vector {name}")


def gguf_summary(path):
    """Metadata keys (arrays abbreviated) and tensors (name, type, ggml shape) of a GGUF."""
    import gguf

    r = gguf.GGUFReader(path)
    keys = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        t = f.types[0] if f.types else None
        if t == gguf.GGUFValueType.ARRAY:
            keys[k] = f"array[{len(f.data)}]"
        else:
            v = f.contents()
            keys[k] = v if not isinstance(v, float) else float(f"{v:.7g}")
    tensors = [[t.name, t.tensor_type.name, [int(x) for x in t.shape]] for t in r.tensors]
    return keys, tensors


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def make_case(name, spec):
    import numpy as np
    import torch
    import transformers
    from safetensors.numpy import save_file

    cfg_name, model_name, kw, tok_kind, types, keep, seed = spec[:7]
    extra = spec[7] if len(spec) > 7 else {}
    d = os.path.join(ROOT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    with tempfile.TemporaryDirectory(prefix=f"gguf_{name}_") as tmp:
        hf = os.path.join(tmp, "hf")
        os.makedirs(hf)
        vocab, ref_encode = (train_bpe if tok_kind == "bpe" else train_spm)(hf)

        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed + 1)
        cfg = getattr(transformers, cfg_name)(vocab_size=vocab, **kw)
        cfg._attn_implementation = "eager"
        model = getattr(transformers, model_name)(cfg).to(torch.float32).eval()
        extra.get("perturb", perturb)(model, gen)
        model.save_pretrained(hf, safe_serialization=True)
        tokens = torch.randint(3, vocab, (N_SEQ, SEQ_LEN), generator=gen)
        with torch.no_grad():
            hf_logits = model(input_ids=tokens).logits.float().numpy()

        log = open(os.path.join(tmp, "log.txt"), "w")
        paths = {}
        for t in types:
            out = os.path.join(tmp, f"{name}-{t}.gguf")
            if t in CONVERTER_TYPES:
                convert(hf, out, t, log, extra.get("pre", "gpt-2"))
            else:
                quantize(paths["f32"], out, QUANTIZE_TYPES[t], log)
            paths[t] = out

        expected = {"tokens": tokens.numpy().astype(np.int32), "logits.hf": hf_logits.astype(np.float32)}
        diffs = {}
        for t in types:
            res = run_gguf_logits(paths[t], tokens=tokens.tolist())
            assert res["vocab"] == vocab, (name, t, res["vocab"])
            expected[f"logits.{t}"] = res["logits"].astype(np.float32)
            diffs[t] = float(np.abs(res["logits"] - hf_logits).max())
        tok = run_gguf_logits(paths["f32"], texts=TEXTS)
        ids_ref = [list(ref_encode(t)) for t in TEXTS]

        keys, tensors = gguf_summary(paths["f32"])
        type_counts = {}
        for t in types:
            counts = {}
            for _, tt, _ in gguf_summary(paths[t])[1]:
                counts[tt] = counts.get(tt, 0) + 1
            type_counts[t] = counts

        files = []
        for t in keep:
            dst = os.path.join(d, f"{name}-{t}.gguf")
            shutil.copyfile(paths[t], dst)
            files.append(os.path.basename(dst))
        save_file(expected, os.path.join(d, "expected.safetensors"), metadata={"note": "llama.cpp logits per file type"})
        with open(os.path.join(d, "tokenize.json"), "w", encoding="utf-8") as f:
            json.dump({"texts": TEXTS, "ids": tok["ids"], "ids_reference": ids_ref}, f, ensure_ascii=False)
            f.write("\n")
        files += ["expected.safetensors", "tokenize.json"]

    hf_scale = float(np.abs(hf_logits).max())
    entry = {
        "architecture": model_name,
        "llama_arch": keys.get("general.architecture"),
        "tokenizer": tok_kind,
        "tokenizer_ggml_model": keys.get("tokenizer.ggml.model"),
        "tokenizer_ggml_pre": keys.get("tokenizer.ggml.pre"),
        "config": {k: v for k, v in kw.items()} | {"vocab_size": vocab},
        "seed": seed,
        "n_seq": N_SEQ,
        "seq_len": SEQ_LEN,
        "file_types": types,
        "committed_types": keep,
        "tensor_types": type_counts,
        "files": {f: {"bytes": os.path.getsize(os.path.join(d, f)), "sha256": sha256(os.path.join(d, f))}
                  for f in files},
        "max_abs_hf_logit": hf_scale,
        "max_abs_diff_vs_hf": diffs,
        "tokenize_matches_reference": tok["ids"] == ids_ref,
        "f32_metadata": keys,
        "f32_tensors": tensors,
    }
    if "notes" in extra:
        entry["notes"] = extra["notes"]
    return entry


# ---------------------------------------------------------------------------------------------
# dequantisation fixture

QUANT_TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"]


def ggml_quantize(values, qtype):
    """llama.cpp's own ggml_quantize_chunk (libggml-base) on f32 rows -> raw block bytes."""
    import gguf
    import numpy as np

    lib = ctypes.CDLL(os.path.join(LLAMA_CPP, "build", "bin", "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    src = np.ascontiguousarray(values, dtype=np.float32)
    nrows, n_per_row = src.shape
    block, tsize = gguf.GGML_QUANT_SIZES[qtype]
    dst = np.zeros((nrows, n_per_row // block * tsize), dtype=np.uint8)
    n = lib.ggml_quantize_chunk(int(qtype), src.ctypes.data, dst.ctypes.data, 0, nrows, n_per_row, None)
    assert n == dst.nbytes, (qtype, n, dst.nbytes)
    return dst


def make_quants():
    import gguf
    import numpy as np
    from safetensors.numpy import save_file

    d = os.path.join(ROOT, "quants")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    rng = np.random.default_rng(20240607)
    src = rng.standard_normal((4, 512)).astype(np.float32)
    path = os.path.join(d, "quants.gguf")
    w = gguf.GGUFWriter(path, arch="quants_fixture")
    w.add_description("one [4, 512] tensor per GGML type, quantised from the same N(0,1) values")
    expected = {"source": src}
    how = {}
    same_as_ggml = {}
    for name in QUANT_TYPES:
        qt = gguf.GGMLQuantizationType[name]
        try:
            data = gguf.quants.quantize(src, qt)
            how[name] = "gguf.quants.quantize"
            if name not in ("F32", "F16"):
                same_as_ggml[name] = bool(np.array_equal(data.view(np.uint8).reshape(4, -1),
                                                         ggml_quantize(src, qt)))
        except NotImplementedError:
            data = ggml_quantize(src, qt)
            how[name] = "ggml_quantize_chunk (libggml-base)"
        if name in ("F32", "F16"):
            stored = data  # float32 / float16 arrays
            w.add_tensor(name.lower(), stored)
        else:
            stored = data.view(np.uint8).reshape(4, -1)  # raw blocks, 4 rows
            w.add_tensor(name.lower(), stored, raw_dtype=qt)
        deq = gguf.quants.dequantize(stored, qt).reshape(4, 512)
        expected[name.lower()] = np.ascontiguousarray(deq, dtype=np.float32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    save_file(expected, os.path.join(d, "expected.safetensors"))

    # read back: every tensor's bytes dequantise to the expected values
    r = gguf.GGUFReader(path)
    summary = []
    for t in r.tensors:
        back = gguf.quants.dequantize(t.data, t.tensor_type).reshape(4, 512)
        assert np.array_equal(back, expected[t.name]), t.name
        summary.append([t.name, t.tensor_type.name, [int(x) for x in t.shape], int(t.n_bytes)])
    files = ["quants.gguf", "expected.safetensors"]
    return {
        "source": "numpy default_rng(20240607).standard_normal((4, 512)) as f32 (stored as `source`)",
        "quantised_with": how,
        "gguf_py_bytes_equal_ggml_quantize_chunk": same_as_ggml,
        "tensors": summary,
        "max_abs_err_vs_source": {n.lower(): float(np.abs(expected[n.lower()] - src).max()) for n in QUANT_TYPES},
        "files": {f: {"bytes": os.path.getsize(os.path.join(d, f)), "sha256": sha256(os.path.join(d, f))}
                  for f in files},
    }


# ---------------------------------------------------------------------------------------------


def llama_cpp_version():
    try:
        commit = subprocess.run(["git", "-C", LLAMA_CPP, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"commit": commit, "source": "llama-cpp-python 0.3.36 vendor/llama.cpp", "build_info_commit": "0c1e570"}


def main(argv):
    if argv and argv[0] == "--convert":
        return convert_main(*argv[1:4])
    import numpy as np
    import tokenizers
    import torch
    import transformers

    all_cases = cases()
    wanted = argv or list(all_cases) + ["quants"]
    os.makedirs(ROOT, exist_ok=True)
    manifest_path = os.path.join(ROOT, "MANIFEST.json")
    manifest = {"cases": {}}
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
    manifest.update({
        "generator": "reference/gguf_goldens.py",
        "llama_cpp": llama_cpp_version(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__, "numpy": np.__version__},
        "notes": [
            "logits.<type>: llama.cpp (CPU, 1 thread, flash attention off, no repacking) on <case>-<type>.gguf; "
            "each sequence decoded in one batch from an empty KV cache, logits at every position",
            "logits.hf: transformers float32 eager on the HF model the GGUFs were converted from",
            "files not committed (their logits still are): see file_types vs committed_types",
            "max_abs_diff_vs_hf: observed max |logits.<type> - logits.hf|; f32 agrees to ~1e-6 (llama.cpp with an "
            "f32 KV cache), so a Rust f32 path should match logits.f32 to ~1e-5 abs",
            "for F16/BF16/Q* weights llama.cpp's CPU matmul converts the activations to the weight's vec_dot type "
            "(F16, BF16, Q8_0 or Q8_K) before the dot products; an implementation that dequantises weights to f32 "
            "and keeps f32 activations will differ from logits.<type> by more than it does on f32 (compare with "
            "max_abs_diff_vs_hf for the scale)",
            "ggml shapes are [ne0, ne1, ...] (fastest first): a PyTorch [out, in] matrix is [in, out] here",
        ],
    })
    for name in wanted:
        print(f"== {name}", flush=True)
        try:
            entry = make_quants() if name == "quants" else make_case(name, all_cases[name])
        except Exception as e:  # recorded, not fatal: the manifest says why a case is missing
            print(f"{name} FAILED: {e}", flush=True)
            entry = {"skipped": str(e)[-2000:]}
            spec = all_cases.get(name, ())
            if len(spec) > 7 and "notes" in spec[7]:
                entry["notes"] = spec[7]["notes"]
            shutil.rmtree(os.path.join(ROOT, name), ignore_errors=True)
        manifest["cases"][name] = entry
        with open(manifest_path, "w") as f:
            json.dump(manifest, f, indent=1, ensure_ascii=False)
            f.write("\n")
        if "max_abs_diff_vs_hf" in entry:
            print(name, entry["max_abs_diff_vs_hf"], "scale", entry["max_abs_hf_logit"], flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
