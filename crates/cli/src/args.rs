//! Command-line arguments.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Train, evaluate, inspect and compare dense and Mixture-of-Experts Transformers on the CPU.
#[derive(Parser, Debug)]
#[command(name = "moe", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a model from an experiment TOML.
    Train(TrainArgs),
    /// Validation loss and perplexity of a run's latest checkpoint.
    Eval(EvalArgs),
    /// Parameters (total, active), FLOPs per token, sparsity and a per-layer table.
    Info(InfoArgs),
    /// Tokenizer tools.
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Generate text from a trained run (KV-cached).
    Generate(GenerateArgs),
    /// Full logits of a token sequence under a Hugging Face checkpoint or GGUF file, to a safetensors file.
    Logits(LogitsArgs),
    /// Write a run's latest checkpoint as a Hugging Face directory (Llama or Mixtral).
    Export(ExportArgs),
    /// Dense vs MoE at equal training compute, with a report.
    Compare(CompareArgs),
    /// Sparsity ladder and dense compute ladder: compute multiplier vs n_expert.
    Sweep(SweepArgs),
    /// An OpenAI-compatible HTTP server (chat and text completions, streaming, continuous
    /// batching, Prometheus metrics with MoE routing counters); binds 127.0.0.1 by default.
    Serve(ServeArgs),
    /// Roofline prediction of decode latency, throughput, memory and cost per token on a
    /// machine described by a hardware file (or this one), on one or several nodes.
    Plan(PlanArgs),
    /// Check the job's communicator (run under `mpirun`): every collective and the MoE token
    /// exchange against values computed independently on each rank; prints one line per rank.
    #[command(hide = true)]
    DebugDist,
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Experiment TOML ([model], [train], [data]).
    #[arg(long)]
    pub config: PathBuf,
    /// Override a config key, e.g. `--set train.lr=1e-3` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub cfg: ConfigArgs,
    /// Run directory (default: runs/<config name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from the run directory's latest checkpoint (written at any expert-parallel size).
    #[arg(long)]
    pub resume: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Under `mpirun -np N`: shard every MoE layer's experts over groups of this many ranks
    /// (it must divide N and every layer's expert count); the N / P groups are data-parallel.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(usize))]
    pub expert_parallel: usize,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run directory.
    #[arg(long)]
    pub run: PathBuf,
    /// Evaluate on this text file / directory / JSONL instead of the run's validation split.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// At most this many batches.
    #[arg(long)]
    pub max_batches: Option<usize>,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Experiment TOML.
    #[arg(long, conflicts_with_all = ["run", "model"], required_unless_present_any = ["run", "model"])]
    pub config: Option<PathBuf>,
    /// Run directory.
    #[arg(long, conflicts_with = "model")]
    pub run: Option<PathBuf>,
    /// Hugging Face checkpoint directory (config.json is read) or llama.cpp GGUF file (its metadata is
    /// read); weights are not loaded.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Context length for the attention FLOPs (default: the model's n_ctx).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Override a config key (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum TokenizerCommand {
    /// Train a byte-level BPE tokenizer (HF tokenizer.json).
    Train {
        /// Text file, directory or JSONL.
        #[arg(long)]
        data: PathBuf,
        /// How the files' bytes become text: auto or utf-8-lossy (invalid UTF-8 replaced, with a
        /// warning), utf-8 (strict), latin-1, cp1252.
        #[arg(long, default_value = "auto")]
        data_encoding: moe_data::TextEncoding,
        /// Vocabulary size.
        #[arg(long)]
        vocab: usize,
        /// Output tokenizer.json.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Training throughput against this machine's f32 GEMM peak.
    Train {
        #[command(flatten)]
        cfg: ConfigArgs,
        /// Timed steps (after one warm-up step).
        #[arg(long, default_value_t = 5)]
        steps: usize,
    },
    /// Inference throughput per batch size: prefill and decode tokens/s, latency, weight bytes
    /// read per decode step, GB/s, GFLOP/s and the fraction of the measured roofline; CSV + plot.
    Infer(BenchInferArgs),
    /// Load generator for an OpenAI-compatible server (`--url`), or for `moe serve` started in
    /// this process (`--model`/`--run`/`--config`), interleaved with the engine at the same batch:
    /// throughput, TTFT, TPOT, ITL and end-to-end latency per concurrency; CSV + plots.
    Serve(BenchServeArgs),
    /// Quality cost of bf16/int8/q4/q4k weights: perplexity and KL divergence from f32 on validation
    /// text; with --gguf, also of the same checkpoint as llama.cpp quantised it.
    Quality {
        /// Run directory (its latest checkpoint and validation split).
        #[arg(long)]
        run: PathBuf,
        /// Formats to compare with f32 (comma-separated: bf16, int8, q4, q4k).
        #[arg(long, value_delimiter = ',', default_value = "bf16,int8,q4,q4k")]
        dtype: Vec<DtypeArg>,
        /// A GGUF file of the same checkpoint (e.g. `moe export`, llama.cpp's `convert_hf_to_gguf.py`
        /// and `llama-quantize`), compared with the run's f32 weights on the same windows: its
        /// weights dequantised exactly to f32 and run by the f32 engine (repeatable;
        /// `reference/quality_vs_llama.sh` makes the files).
        #[arg(long)]
        gguf: Vec<PathBuf>,
        /// Tokens per window (default: the run's seq_len, capped at n_ctx).
        #[arg(long)]
        seq_len: Option<usize>,
        /// At most this many windows.
        #[arg(long, default_value_t = 16)]
        windows: usize,
        /// Use the activation-quantising kernels (int8: VNNI, bf16: vdpbf16ps).
        #[arg(long)]
        fast_dot: bool,
    },
}

/// Weight storage format at inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    F32,
    Bf16,
    Int8,
    /// 4-bit blocks of 32 weights with an f16 scale (GGUF `Q4_0`); the LM head int8
    Q4,
    /// 4-bit super-blocks of 256 weights with a 6-bit scale and min per 32 (GGUF `Q4_K`); the LM head int8
    Q4k,
}

/// Which forward runs inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineArg {
    /// the fast engine (moe_infer::Engine)
    Fast,
    /// the plainly correct reference path (moe_infer::forward_step)
    Reference,
}

/// Where a model comes from: a run, a config (random weights), a Hugging Face directory or a GGUF file.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct ModelSource {
    /// Run directory (latest checkpoint).
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Experiment TOML: the [model] is built with random weights (seed --seed).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Hugging Face checkpoint directory or llama.cpp GGUF file.
    #[arg(long)]
    pub model: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchInferArgs {
    #[command(flatten)]
    pub source: ModelSource,
    /// Override a config key with --config (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Batch sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
    pub batch: Vec<usize>,
    /// Random prompt tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub prompt_len: usize,
    /// Timed decode steps.
    #[arg(long, default_value_t = 32)]
    pub n_decode: usize,
    /// Weight formats (comma-separated: f32, bf16, int8, q4, q4k) [default: the checkpoint's: bf16 for a
    /// bf16 one, q4k for a Q4_K GGUF file, q4 for Q4_0, int8 for a 5- to 8-bit one, else f32].
    #[arg(long, value_delimiter = ',')]
    pub dtype: Vec<DtypeArg>,
    /// fast (default) or reference.
    #[arg(long, value_enum, default_value_t = EngineArg::Fast)]
    pub engine: EngineArg,
    /// Dot-product kernels that quantise the activations too (int8: VNNI, bf16: vdpbf16ps), as
    /// llama.cpp does; costs accuracy (see `moe bench quality --fast-dot`).
    #[arg(long)]
    pub fast_dot: bool,
    /// Timed passes per batch size (the fastest kept), after one warm-up pass.
    #[arg(long, default_value_t = 2)]
    pub reps: usize,
    /// Write bench_infer.csv and the plot (bench_infer.png/.svg) into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Run directory.
    #[arg(long, conflicts_with = "model", required_unless_present = "model")]
    pub run: Option<PathBuf>,
    /// Hugging Face checkpoint directory (needs its tokenizer.json; see --chat for its chat template)
    /// or llama.cpp GGUF file (tokenizer and chat template from its metadata).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Prepend the checkpoint's bos_token_id (--model only; tokenizer post-processors are not run).
    #[arg(long, requires = "model")]
    pub add_bos: bool,
    /// Wrap the prompt as a user message in the checkpoint's chat template (chat_template.jinja or
    /// tokenizer_config.json) with the generation prompt; only the reply is printed (--model only).
    #[arg(long, requires = "model")]
    pub chat: bool,
    /// System message placed before the prompt (with --chat).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 200)]
    pub max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// 1.0 = off.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// fast (default) or reference.
    #[arg(long, value_enum, default_value_t = EngineArg::Fast)]
    pub engine: EngineArg,
    /// Weight format of the fast engine [default: bf16 for a bf16 checkpoint, q4k/q4 for a Q4_K/Q4_0 GGUF
    /// file, int8 for a 5- to 8-bit one, else f32].
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
}

#[derive(Args, Debug)]
pub struct LogitsArgs {
    /// Hugging Face checkpoint directory or llama.cpp GGUF file.
    #[arg(long)]
    pub model: PathBuf,
    /// Token ids, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub tokens: Vec<u32>,
    /// Output safetensors file: `logits` [n_tok, n_vocab] f32 (written atomically).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Run directory (its latest checkpoint is exported).
    #[arg(long)]
    pub run: PathBuf,
    /// Output directory: config.json, generation_config.json, model.safetensors, tokenizer.json.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Text file, directory or JSONL (default: the built-in synthetic corpus).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// How the corpus files' bytes become text: auto (the byte tokenizer takes the bytes as they
    /// are, BPE reads lossy UTF-8 with a warning), utf-8 (strict), utf-8-lossy, latin-1, cp1252, bytes.
    #[arg(long)]
    pub data_encoding: Option<moe_data::TextEncoding>,
    /// Training FLOPs per model.
    #[arg(long, conflicts_with = "budget_minutes")]
    pub budget_flops: Option<f64>,
    /// Wall-clock minutes for all training of the command (every model × seed), turned into one
    /// per-run FLOP budget by a short throughput probe of each model.
    #[arg(long)]
    pub budget_minutes: Option<f64>,
    /// Dense experiment TOML (default: built in).
    #[arg(long)]
    pub dense: Option<PathBuf>,
    /// MoE experiment TOML (repeatable; default: 8 experts top-2 matched on active parameters).
    #[arg(long)]
    pub moe: Vec<PathBuf>,
    /// Repeat each model with this many seeds.
    #[arg(long, default_value_t = 1)]
    pub seeds: usize,
    /// Output directory.
    #[arg(long, default_value = "runs/compare")]
    pub out: PathBuf,
    /// Size of the built-in models and default budget: `default` (≈ 9 min on 2 cores) or `tiny` (seconds).
    #[arg(long, default_value = "default")]
    pub scale: moe_compare::Scale,
    /// Leave out the dense model widened to the MoE's total parameters.
    #[arg(long)]
    pub no_wide: bool,
    /// Also measure decode in this weight format on the engine (f32 is always measured); the
    /// deployment-scale models are measured in it instead of f32.
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Leave out the deployment-scale measurement (the architectures scaled up to d_model 1024 with
    /// random weights, decoded at batch 1…256 beside the roofline: ≈ 2 min on 2 cores).
    #[arg(long)]
    pub no_deploy: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Text file, directory or JSONL (default: the built-in synthetic corpus).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// How the corpus files' bytes become text: auto (the byte tokenizer takes the bytes as they
    /// are, BPE reads lossy UTF-8 with a warning), utf-8 (strict), utf-8-lossy, latin-1, cp1252, bytes.
    #[arg(long)]
    pub data_encoding: Option<moe_data::TextEncoding>,
    /// Training FLOPs of each MoE rung (dense rungs get multiples of it).
    #[arg(long, conflicts_with = "budget_minutes")]
    pub budget_flops: Option<f64>,
    /// Wall-clock budget for all training of the sweep.
    #[arg(long)]
    pub budget_minutes: Option<f64>,
    /// Dense experiment TOML the ladders derive from (default: built in).
    #[arg(long)]
    pub dense: Option<PathBuf>,
    /// Experts per token of the MoE rungs (top-1 rungs weight by the softmax probability, Switch-style;
    /// top-2 renormalises the pair).
    #[arg(long, default_value_t = 2)]
    pub top_k: usize,
    /// The sparsity ladder (comma-separated; default 1,2,4,8,16,32).
    #[arg(long, value_delimiter = ',')]
    pub n_experts: Vec<usize>,
    /// Seeds per point.
    #[arg(long, default_value_t = 1)]
    pub seeds: usize,
    /// Output directory.
    #[arg(long, default_value = "runs/sweep")]
    pub out: PathBuf,
    /// Size of the built-in models and default budget: `default` or `tiny`.
    #[arg(long, default_value = "default")]
    pub scale: moe_compare::Scale,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Experiment TOML whose [model] is planned.
    #[arg(long, conflicts_with = "model", required_unless_present_any = ["model", "calibrate"])]
    pub config: Option<PathBuf>,
    /// Hugging Face model directory (only config.json is read).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Hardware TOML (default: measure this machine now); see configs/hardware/.
    #[arg(long)]
    pub hardware: Option<PathBuf>,
    /// Batch sizes (sequences decoding together, all nodes).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128,512,1024")]
    pub batch: Vec<usize>,
    /// Nodes.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Expert-parallel degree of an MoE (default: all nodes).
    #[arg(long)]
    pub expert_parallel: Option<usize>,
    /// Weight format.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub dtype: DtypeArg,
    /// Tokens in each sequence's KV cache.
    #[arg(long, default_value_t = 512)]
    pub context: usize,
    /// A second model (experiment TOML or HF directory) to compare cost per token with.
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// Measure this machine and write a hardware file to --out (default: stdout).
    #[arg(long)]
    pub calibrate: bool,
    /// With --calibrate: the hardware file; otherwise a JSON file of the predictions.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Hugging Face checkpoint directory (config.json, safetensors, tokenizer.json; its chat
    /// template and generation_config.json when present), or a llama.cpp GGUF file (its
    /// tokenizer and chat template from its metadata; quantised matrices kept as stored).
    #[arg(long, conflicts_with = "run", required_unless_present = "run")]
    pub model: Option<PathBuf>,
    /// `moe train` run directory (latest checkpoint, the run's tokenizer; no chat template).
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Weight format [default: bf16 for a bf16 checkpoint, q4k/q4 for a Q4_K/Q4_0 GGUF file, int8 for a
    /// 5- to 8-bit one, else f32].
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Address to listen on (0.0.0.0 listens on every interface).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: an ephemeral one, printed when ready).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on the API routes (/health and /metrics stay open).
    #[arg(long, conflicts_with = "api_key_file", env = "MOE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Read the API key from this file (its first line).
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// Most sequences in the running batch.
    #[arg(long, default_value_t = 64)]
    pub max_seqs: usize,
    /// Most requests waiting for admission; beyond, 503 with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Tokens per engine step (decode tokens plus prefill chunks).
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// KV-cache memory of the running sequences (bytes; suffixes K, M, G, KiB, MiB, GiB).
    #[arg(long, default_value = "4GiB", value_parser = parse_bytes)]
    pub kv_memory: usize,
    /// max_tokens of a request that sends none (capped by the context).
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// The model id clients send [default: the directory's name].
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Under `mpirun -np N`: shard every MoE layer's experts over the N ranks (N here); rank 0
    /// serves HTTP and schedules, every rank steps the same batches.
    #[arg(long, default_value_t = 1)]
    pub expert_parallel: usize,
}

#[derive(Args, Debug)]
pub struct BenchServeArgs {
    /// Base URL of a running OpenAI-compatible server (e.g. http://127.0.0.1:8080).
    #[arg(long, conflicts_with_all = ["model", "run", "config"])]
    pub url: Option<String>,
    /// Start `moe serve` in this process on this Hugging Face directory or GGUF file.
    #[arg(long, conflicts_with_all = ["run", "config"])]
    pub model: Option<PathBuf>,
    /// Start `moe serve` in this process on this run.
    #[arg(long, conflicts_with = "config")]
    pub run: Option<PathBuf>,
    /// Start `moe serve` in this process on this experiment's [model] with random weights
    /// (seed --seed) and the byte tokenizer (text is meaningless; throughput is not).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override a config key with --config (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Weight format of the in-process server and engine [default: the checkpoint's, as `moe serve`].
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Concurrent clients per level (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub concurrency: Vec<usize>,
    /// Requests per level [default: 2 × concurrency, at least 8].
    #[arg(long)]
    pub requests: Option<usize>,
    /// Random prompt tokens per request.
    #[arg(long, default_value_t = 32)]
    pub prompt_len: usize,
    /// Tokens generated per request (greedy, ignore_eos).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Stream (SSE): needed for TTFT, TPOT and ITL.
    #[arg(long)]
    pub stream: bool,
    /// API key sent as `Authorization: Bearer KEY`.
    #[arg(long, env = "MOE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Rounds per level (in-process: server and engine interleaved, the median paired ratio).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_s: u64,
    /// Write bench_serve.csv, metrics.jsonl and the plots into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `4096`, `512M`, `4GiB`, `1.5G` → bytes (K/M/G are powers of 1000, KiB/MiB/GiB of 1024).
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.trim().parse().map_err(|_| format!("`{s}` is not a byte count (e.g. 4096, 512M, 4GiB)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        u => return Err(format!("unknown unit `{u}` in `{s}` (use K, M, G, KiB, MiB or GiB)")),
    };
    if !(v.is_finite() && v > 0.0) {
        return Err(format!("`{s}` must be a positive byte count"));
    }
    Ok((v * mult) as usize)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_parse_with_units() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("512M"), Ok(512_000_000));
        assert_eq!(parse_bytes("4GiB"), Ok(4 << 30));
        assert_eq!(parse_bytes("1.5 kib"), Ok(1536));
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("4XB").is_err());
        assert!(parse_bytes("lots").is_err());
    }
}
