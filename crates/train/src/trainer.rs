//! The training loop: data, model and optimizer from an [`ExperimentConfig`], steps with gradient
//! accumulation, clipping, AdamW and aux-loss-free bias updates, metrics, evaluation,
//! checkpoints and exact resume.
//!
//! One optimizer step draws `grad_accum` micro-batches of `batch_size × seq_len` tokens from the
//! seeded batcher, accumulates `1/grad_accum`-scaled gradients, clips them to the global norm,
//! applies AdamW at the scheduled learning rate, and then moves each MoE layer's selection bias
//! by the step's routing counts (`docs/model-spec.md`). Steps in `metrics.jsonl` are 1-based:
//! the record of step `s` carries the loss computed during the `s`-th update.

use crate::config::ExperimentConfig;
use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalStats};
use crate::optimizer::{grad_norm, AdamW, AdamWConfig};
use crate::parallel::{check_same_config, global_grad_norm, reduce_grads, reduce_stats, share};
use crate::run_data::{build_dataset, check_tokenizer_fits, load_tokenizer};
use crate::run_dir::{read_state, MetricsWriter, RunDir, TrainState, MODEL_FILE, OPTIMIZER_FILE};
use crate::schedule::Schedule;
use indicatif::{ProgressBar, ProgressStyle};
use moe_data::{Batch, Batcher};
use moe_dist::Groups;
use moe_model::moe::stats::RoutingStats;
use moe_model::Transformer;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;
use std::time::Instant;

/// How to run [`train`].
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// continue from `checkpoints/latest` of the output directory when there is one
    pub resume: bool,
    /// show a progress bar on stderr
    pub progress: bool,
    /// this process's place in a data- and expert-parallel job (`None`: one process). Every rank
    /// calls [`train`] with the same experiment; rank 0 alone writes the run directory, which the
    /// others read when resuming (a shared filesystem on a cluster).
    pub dist: Option<Groups>,
}

/// What a finished [`train`] call reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// optimizer steps completed (over all sessions)
    pub steps: usize,
    /// train loss of the last step
    pub final_train_loss: f64,
    /// validation CE of the last evaluation (`None` when a stopped session did not evaluate)
    pub final_val_loss: Option<f64>,
    /// training tokens seen
    pub tokens: u64,
    /// training FLOPs spent
    pub flops: f64,
    /// training throughput of this session (tokens per second of step time)
    pub tokens_per_s: f64,
    /// wall-clock seconds over all sessions
    pub elapsed_s: f64,
}

/// Losses and statistics of one optimizer step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// mean over micro-batches of `ce + aux + z`
    pub loss: f64,
    /// mean token cross-entropy
    pub ce: f64,
    /// load-balancing loss (summed over layers)
    pub aux: f64,
    /// router z-loss (summed over layers)
    pub z: f64,
    /// global gradient norm before clipping
    pub grad_norm: f64,
    /// learning rate used
    pub lr: f64,
    /// routing statistics per MoE layer, merged over micro-batches
    pub moe: Vec<RoutingStats>,
}

/// One optimizer step on the micro-batches `micro` (gradients accumulated with scale
/// `1/micro.len()`): zero `grads`, forward/backward each, clip, AdamW at `lr`, then the
/// aux-loss-free selection-bias update from the step's routing counts.
///
/// With `model.dist` the micro-batches are the job's and this process takes its share of each
/// ([`share`]); gradients, losses, statistics and the norm are summed over the job, so every rank
/// takes the step one process would take on the whole batch (collective).
///
/// A NaN or infinite loss or gradient (or router gate) is [`Error::Diverged`], naming the
/// optimizer's step (`opt.t + 1`), and leaves the model and optimizer as they were.
pub fn train_step(model: &mut Transformer<f32>, opt: &mut AdamW, grads: &mut [f32], micro: &[Batch], lr: f64) -> Result<StepReport> {
    if micro.is_empty() {
        return Err(Error::Model(moe_model::Error::BadInput("a step needs at least one micro-batch".into())));
    }
    let step = opt.t as usize + 1;
    grads.fill(0.0);
    let scale = 1.0 / micro.len() as f64;
    let mut r = StepReport { lr, ..Default::default() };
    let dist = model.dist.clone();
    for b in micro {
        let part = dist.as_ref().map(|g| share(b, g.world.rank(), g.world.size()));
        let mine = part.as_ref().unwrap_or(b);
        let rep =
            model.forward_backward(&mine.inputs, &mine.targets, mine.batch_size, mine.seq_len, grads, scale).map_err(|e| match e {
                moe_model::Error::Diverged { what } => Error::Diverged { step, what },
                e => Error::Model(e),
            })?;
        // a share's CE is the mean over its tokens: weight it by its part of the batch
        let w = mine.inputs.len() as f64 / b.inputs.len() as f64;
        r.loss += rep.loss * scale;
        r.ce += rep.ce * scale * w;
        r.aux += rep.aux * scale;
        r.z += rep.z * scale;
        if r.moe.is_empty() {
            r.moe = vec![RoutingStats::default(); rep.moe.len()];
        }
        for (acc, m) in r.moe.iter_mut().zip(&rep.moe) {
            acc.merge(&m.stats);
            acc.layer = m.layer;
        }
    }
    if let Some(g) = &dist {
        let mut v = [r.ce, r.aux, r.z];
        g.world.all_reduce_sum_f64(&mut v);
        [r.ce, r.aux, r.z] = v;
        r.loss = r.ce + r.aux + r.z;
        reduce_stats(g.world.as_ref(), &mut r.moe);
        reduce_grads(model, g, grads);
    }
    if !r.loss.is_finite() {
        return Err(Error::Diverged { step, what: format!("the loss is {} (ce {}, aux {}, z {})", r.loss, r.ce, r.aux, r.z) });
    }
    let norm = match &dist {
        Some(g) => global_grad_norm(model, g, grads),
        None => grad_norm(grads),
    };
    r.grad_norm = opt.step_with_norm(&mut model.params, grads, lr, norm)?;
    let counts: Vec<(usize, Vec<u64>)> = r.moe.iter().map(|s| (s.layer, s.counts.clone())).collect();
    model.update_selection_bias(&counts);
    Ok(r)
}

/// The `metrics.jsonl` record of a training step.
fn train_record(step: usize, r: &StepReport, st: &TrainState, tokens_per_s: f64) -> serde_json::Value {
    let moe: Vec<serde_json::Value> = r
        .moe
        .iter()
        .map(|s| json!({"layer": s.layer, "load": s.load_fraction(), "entropy": s.entropy(), "drop_rate": s.drop_rate(), "max_over_mean": s.max_over_mean()}))
        .collect();
    json!({
        "type": "train", "step": step, "loss": r.loss, "ce": r.ce, "aux": r.aux, "z": r.z, "lr": r.lr,
        "grad_norm": r.grad_norm, "tokens": st.tokens, "flops": st.flops, "tokens_per_s": tokens_per_s,
        "elapsed_s": st.elapsed_s, "moe": moe,
    })
}

/// The `metrics.jsonl` record of an evaluation.
fn eval_record(st: &TrainState, e: &EvalStats) -> serde_json::Value {
    json!({"type": "eval", "step": st.step, "tokens": st.tokens, "flops": st.flops, "val_loss": e.ce, "val_ppl": e.ppl(), "val_ce": e.ce, "val_total_loss": e.loss, "val_tokens": e.n_tokens})
}

/// The whole model and optimizer state of an expert-sharded job, gathered from every
/// expert-parallel rank (collective).
fn whole_model(model: &Transformer<f32>, opt: &AdamW) -> Result<(Transformer<f32>, AdamW)> {
    let mut full = Transformer::zeros(model.cfg.clone())?;
    full.params = model.gather_full(&model.params);
    full.selection_bias = model.selection_bias.clone();
    let mut o = AdamW::new(&full.table, opt.cfg);
    o.m = model.gather_full(&opt.m);
    o.v = model.gather_full(&opt.v);
    o.t = opt.t;
    Ok((full, o))
}

/// The first NaN or infinite parameter or selection bias of `model`, described.
fn non_finite_param(model: &Transformer<f32>) -> Option<String> {
    let bad = |name: &str, v: &[f32]| v.iter().position(|x| !x.is_finite()).map(|i| format!("parameter `{name}` element {i} is {}", v[i]));
    model
        .table
        .entries
        .iter()
        .find_map(|e| bad(&e.name, &model.params[e.range()]))
        .or_else(|| model.selection_bias.iter().enumerate().find_map(|(i, b)| bad(&moe_model::checkpoint::selection_bias_name(i), b)))
}

fn progress_bar(opts: &TrainOptions, steps: usize, done: usize) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(steps as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]") {
        pb.set_style(style);
    }
    pb.set_position(done as u64);
    pb
}

/// Train the experiment `cfg` into the run directory `out` (see [`crate::run_dir`]).
///
/// A fresh run refuses a directory that already holds one (use `resume` or another directory).
/// With `opts.resume` and an existing checkpoint, model, optimizer, batcher and counters are
/// restored and the run continues exactly as if it had not stopped; `metrics.jsonl` records after
/// the checkpoint are dropped first.
pub fn train(cfg: &ExperimentConfig, out: &Path, opts: &TrainOptions) -> Result<TrainSummary> {
    train_until(cfg, out, opts, None)
}

/// Like [`train`], but stop (with a checkpoint) once `stop_at` steps are complete, if that is
/// before `train.steps` — to split a run into time-limited sessions that `resume` continues.
pub fn train_until(cfg: &ExperimentConfig, out: &Path, opts: &TrainOptions, stop_at: Option<usize>) -> Result<TrainSummary> {
    let rd = RunDir::new(out);
    let dist = opts.dist.clone().filter(|g| !g.is_single());
    // rank 0 alone writes the run directory; the others only read a checkpoint to resume from
    let lead = dist.as_ref().is_none_or(|g| g.world.rank() == 0);
    if let Some(g) = &dist {
        check_same_config(g.world.as_ref(), &cfg.to_toml_string(), &rd.config_path())?;
        let n = g.world.size();
        if !cfg.train.batch_size.is_multiple_of(n) {
            return Err(Error::Config {
                path: rd.config_path(),
                field: "train.batch_size".into(),
                reason: format!(
                    "{} sequences cannot be shared equally by the {n} ranks of the job; use a multiple of {n}",
                    cfg.train.batch_size
                ),
            });
        }
    }
    let resume_from = if opts.resume {
        rd.latest()?
    } else if lead && rd.has_run() {
        return Err(Error::RunDir {
            path: out.to_path_buf(),
            message: "already holds a run; use --resume to continue it or another --out".into(),
        });
    } else {
        None
    };
    let cfg_file = rd.config_path();
    let t = &cfg.train;
    cfg.validate(&cfg_file)?;
    if lead {
        rd.prepare()?;
    }
    if let Some(m) = &cfg.model.moe {
        if m.n_expert_active == 1 && m.n_expert > 1 && m.renormalize && m.gating == moe_model::Gating::Softmax {
            tracing::warn!("model.moe: softmax top-1 with renormalize = true weights every token's expert by exactly 1, so the router learns only from the aux and z losses; set renormalize = false (Switch) or use sigmoid gating");
        }
    }

    // data
    let tok = load_tokenizer(cfg)?;
    check_tokenizer_fits(&tok, &cfg.data.tokenizer, cfg.model.n_vocab, &cfg_file)?;
    let ds = build_dataset(cfg, &tok)?;
    if ds.val.len() < t.seq_len + 1 {
        return Err(Error::Config {
            path: cfg_file,
            field: "data.val_fraction".into(),
            reason: format!(
                "the validation split has {} tokens, fewer than train.seq_len {} + 1; use more data or a larger fraction",
                ds.val.len(),
                t.seq_len
            ),
        });
    }
    let mut batcher = Batcher::new(ds.train.len(), t.batch_size, t.seq_len, t.seed).map_err(|e| Error::Config {
        path: cfg_file.clone(),
        field: "train.seq_len".into(),
        reason: format!("the training split is too small: {e}"),
    })?;

    // model, optimizer, state
    let opt_cfg = AdamWConfig::from_train(t);
    // checkpoints hold the whole model (experts by global id), whatever the layout that wrote
    // them: each process reads it whole and keeps its share
    let shard = |m: Transformer<f32>| match &dist {
        Some(g) => m.shard(g.clone()),
        None => Ok(m),
    };
    let (mut model, mut opt, mut state) = match &resume_from {
        Some(dir) => {
            let model = shard(Transformer::load(cfg.model.clone(), &dir.join(MODEL_FILE))?)?;
            let mut opt = AdamW::load(&model.full_table(), opt_cfg, &dir.join(OPTIMIZER_FILE))?;
            opt.m = model.shard_buffer(&opt.m);
            opt.v = model.shard_buffer(&opt.v);
            opt.table = model.table.clone();
            let state = read_state(dir)?;
            batcher.restore(&state.batcher);
            if lead {
                rd.truncate_metrics(state.step)?;
            }
            tracing::info!(checkpoint = %dir.display(), step = state.step, "resuming");
            (model, opt, state)
        }
        None => {
            let model = shard(Transformer::new(cfg.model.clone(), t.seed)?)?;
            let opt = AdamW::new(&model.table, opt_cfg);
            if lead {
                rd.truncate_metrics(0)?;
            }
            let state = TrainState {
                step: 0,
                batcher: batcher.state(),
                tokens: 0,
                flops: 0.0,
                elapsed_s: 0.0,
                pending_counts: Vec::new(),
                last_train_loss: None,
                last_val_loss: None,
            };
            (model, opt, state)
        }
    };
    let mut metrics: Option<MetricsWriter> = None;
    if lead {
        if resume_from.is_some() {
            if let Ok(old) = std::fs::read_to_string(&cfg_file) {
                if old != cfg.to_toml_string() {
                    tracing::warn!(file = %cfg_file.display(), "resuming with a config that differs from the run's; overwriting it");
                }
            }
        }
        rd.write_config(cfg)?;
        if tok.kind() == "bpe" {
            tok.save(&rd.tokenizer_path())?;
        }
        metrics = Some(rd.open_metrics()?);
    }
    let mut write_metrics = |rec: &serde_json::Value| -> Result<()> {
        match metrics.as_mut() {
            Some(m) => m.write(rec),
            None => Ok(()),
        }
    };

    let flops_per_token = moe_model::accounting::account(&cfg.model, t.seq_len).flops_train;
    let step_tokens = (t.batch_size * t.seq_len * t.grad_accum) as u64;
    let sched = Schedule::from_config(t);
    let end = stop_at.map_or(t.steps, |n| t.steps.min(n));
    tracing::info!(out = %out.display(), params = model.params.len(), steps = t.steps, start = state.step, train_tokens = ds.train.len(), val_tokens = ds.val.len(), "training");

    let session = Instant::now();
    let elapsed0 = state.elapsed_s;
    let (mut step_time, mut session_tokens) = (0.0f64, 0u64);
    let mut grads = vec![0.0f32; model.params.len()];
    let pb = if lead { progress_bar(opts, t.steps, state.step) } else { ProgressBar::hidden() };
    while state.step < end {
        let t0 = Instant::now();
        let micro: Vec<Batch> = (0..t.grad_accum).map(|_| batcher.next_batch(&ds.train)).collect();
        // a non-finite loss or gradient stops the run here: nothing of this step is logged or saved
        let r = train_step(&mut model, &mut opt, &mut grads, &micro, sched.lr_at(state.step)).map_err(|e| match e {
            Error::Diverged { what, .. } => Error::Diverged { step: state.step + 1, what },
            e => e,
        })?;
        step_time += t0.elapsed().as_secs_f64();
        state.step += 1;
        state.tokens += step_tokens;
        session_tokens += step_tokens;
        state.flops += step_tokens as f64 * flops_per_token;
        state.elapsed_s = elapsed0 + session.elapsed().as_secs_f64();
        state.batcher = batcher.state();
        state.last_train_loss = Some(r.loss);
        let tok_s = session_tokens as f64 / step_time.max(1e-9);
        if state.step % t.log_every == 0 || state.step == t.steps {
            write_metrics(&train_record(state.step, &r, &state, tok_s))?;
            tracing::debug!(step = state.step, loss = r.loss, lr = r.lr, grad_norm = r.grad_norm, "step");
        }
        pb.set_position(state.step as u64);
        pb.set_message(format!("loss {:.4} {:.0} tok/s", r.loss, tok_s));
        if (t.eval_every > 0 && state.step % t.eval_every == 0) || state.step == t.steps {
            let e = evaluate(&model, &ds.val, t.batch_size, t.seq_len, Some(t.eval_batches))?;
            let mut rec = eval_record(&state, &e);
            state.last_val_loss = Some(e.ce);
            if state.step == t.steps && t.final_eval_batches > 0 {
                // the curve stays on `eval_batches`; the number runs are compared by uses more
                let f = evaluate(&model, &ds.val, t.batch_size, t.seq_len, Some(t.final_eval_batches))?;
                rec["final_val_loss"] = json!(f.ce);
                rec["final_val_ppl"] = json!(f.ppl());
                rec["final_val_tokens"] = json!(f.n_tokens);
                state.last_val_loss = Some(f.ce);
            }
            write_metrics(&rec)?;
            pb.suspend(|| {
                tracing::info!(step = state.step, val_loss = state.last_val_loss, val_ppl = state.last_val_loss.map(f64::exp), "eval")
            });
        }
        if (t.checkpoint_every > 0 && state.step % t.checkpoint_every == 0) || state.step == end {
            // finite gradients can still overflow a weight: never let such a model replace the
            // last good checkpoint
            if let Some(what) = non_finite_param(&model) {
                return Err(Error::Diverged { step: state.step, what });
            }
            state.elapsed_s = elapsed0 + session.elapsed().as_secs_f64();
            if dist.as_ref().is_some_and(|g| g.ep.size() > 1) {
                // gather the experts (collective); rank 0 writes the whole model
                let full = whole_model(&model, &opt)?;
                if lead {
                    let dir = rd.save_checkpoint(&full.0, &full.1, &state)?;
                    pb.suspend(|| tracing::info!(step = state.step, dir = %dir.display(), "checkpoint"));
                }
            } else if lead {
                let dir = rd.save_checkpoint(&model, &opt, &state)?;
                pb.suspend(|| tracing::info!(step = state.step, dir = %dir.display(), "checkpoint"));
            }
        }
    }
    pb.finish_and_clear();
    state.elapsed_s = elapsed0 + session.elapsed().as_secs_f64();
    let summary = TrainSummary {
        steps: state.step,
        final_train_loss: state.last_train_loss.unwrap_or(f64::NAN),
        final_val_loss: state.last_val_loss,
        tokens: state.tokens,
        flops: state.flops,
        tokens_per_s: if step_time > 0.0 { session_tokens as f64 / step_time } else { 0.0 },
        elapsed_s: state.elapsed_s,
    };
    tracing::info!(steps = summary.steps, train_loss = summary.final_train_loss, val_loss = ?summary.final_val_loss, tokens_per_s = summary.tokens_per_s, "done");
    Ok(summary)
}
