//! The engine thread: owns the model and the [`Engine`], runs step after step (continuous
//! batching). Each step carries every decoding sequence's next token plus prefill chunks of
//! admitted requests under a token budget; requests join at the next step and leave when they
//! finish or their client goes away. Admission is by KV-cache bytes and a sequence count; the
//! rest wait in a FIFO (its bound is enforced by the HTTP side, see [`crate::Shared`]).

use crate::metrics::EngineMetrics;
use crate::ServeOptions;
use moe_dist::{bytes_of, from_bytes, Comm};
use moe_infer::{Engine, EngineWeights, KvCache, Sampler, SamplerConfig};
use moe_kernels::gemv::Kernel;
use moe_kernels::quant::WeightDtype;
use moe_model::Transformer;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// Sampling and stopping settings of one request (validated by the HTTP side).
#[derive(Clone, Debug)]
pub struct GenParams {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    pub min_p: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// top log-probabilities wanted per token (`Some(0)`: only the chosen token's)
    pub logprobs: Option<usize>,
    /// end-of-sequence ids: generation stops after one (it is not part of the text)
    pub eos: Vec<u32>,
}

/// A request handed to the engine thread.
pub struct Job {
    pub prompt: Vec<u32>,
    pub params: GenParams,
    pub events: UnboundedSender<Event>,
    /// set by the HTTP side when the client is gone or a stop string matched
    pub cancel: Arc<AtomicBool>,
    pub enqueued: Instant,
}

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// an end-of-sequence id (or, decided by the HTTP side, a stop string)
    Stop,
    /// `max_tokens` or the end of the context
    Length,
}

/// What the engine thread tells a request.
#[derive(Debug)]
pub enum Event {
    /// admitted into the running batch
    Started,
    /// one generated token (an end-of-sequence id is sent with `eos: true`)
    Token { id: u32, eos: bool, logprob: Option<TokenLogprob> },
    /// the sequence ended
    Done { finish: Finish, prompt_tokens: usize, completion_tokens: usize },
    /// the engine failed this request
    Error(String),
}

/// Log-probability of a chosen token and the most likely alternatives.
#[derive(Clone, Debug)]
pub struct TokenLogprob {
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// Messages to the engine thread.
pub enum Msg {
    Job(Box<Job>),
    /// cancel every request now and exit
    Shutdown,
}

struct Seq {
    /// identifies the sequence's KV cache on the other ranks of an expert-parallel server
    id: u64,
    job: Box<Job>,
    cache: KvCache<f32>,
    sampler: Sampler,
    /// prompt tokens already through the engine
    prefilled: usize,
    generated: Vec<u32>,
    /// the token to feed at the next decode step
    next: Option<u32>,
    kv_bytes: usize,
    started: Instant,
    last_token: Option<Instant>,
    counts: std::collections::HashMap<u32, u32>,
}

/// State the HTTP side reads.
pub struct EngineState {
    pub waiting: AtomicUsize,
    pub running: AtomicUsize,
}

/// The engine's weight format: `opts.dtype`, else the one a bf16 checkpoint already has (kept at
/// load), else exact f32.
pub fn engine_dtype(model: &Transformer<f32>, opts: &ServeOptions) -> WeightDtype {
    opts.dtype.unwrap_or_else(|| moe_infer::engine::weights::default_dtype(model))
}

/// Rank 0's side of an expert-parallel server: before each engine step it tells the other ranks
/// which caches to drop and create and which tokens to step ([`worker`]).
struct Mirror {
    comm: Arc<dyn Comm>,
    /// sequence ids whose caches the other ranks hold
    held: Vec<u64>,
}

/// Message tags of [`Mirror`] → [`worker`].
const MSG_STOP: u64 = 0;
const MSG_STEP: u64 = 1;

impl Mirror {
    fn step(&mut self, running: &[Seq], part: &[usize], toks: &[Vec<u32>]) {
        let live: Vec<u64> = running.iter().map(|s| s.id).collect();
        let freed: Vec<u64> = self.held.iter().copied().filter(|id| !live.contains(id)).collect();
        let mut msg = vec![MSG_STEP, freed.len() as u64];
        msg.extend(&freed);
        msg.push(part.len() as u64);
        for (&i, t) in part.iter().zip(toks) {
            msg.extend([running[i].id, running[i].cache.capacity() as u64, t.len() as u64]);
            msg.extend(t.iter().map(|&x| x as u64));
        }
        self.held = live;
        let mut b = bytes_of(&msg).to_vec();
        self.comm.broadcast_bytes_idle(&mut b, 0);
    }
}

/// Sends the stop message when the engine loop ends, however it ends.
struct MirrorGuard(Option<Mirror>);

impl Drop for MirrorGuard {
    fn drop(&mut self) {
        if let Some(m) = &self.0 {
            let mut b = bytes_of(&[MSG_STOP]).to_vec();
            m.comm.broadcast_bytes_idle(&mut b, 0);
        }
    }
}

/// A rank other than 0 of an expert-parallel server (`mpirun -np N moe serve --expert-parallel N`):
/// holds its share of the experts (`model` sharded over `comm`) and steps, on its own KV caches,
/// every batch rank 0's scheduler steps, until rank 0 stops. Waits sleeping, not spinning.
pub fn worker(model: &mut Transformer<f32>, opts: &ServeOptions, comm: Arc<dyn Comm>) -> anyhow::Result<()> {
    let dtype = engine_dtype(model, opts);
    let w = EngineWeights::new_taking(model, dtype);
    let model: &Transformer<f32> = model;
    let mut engine = Engine::with_weights(model, w, Kernel::Auto)?.with_expert_parallel(comm.clone())?;
    let mut caches: std::collections::HashMap<u64, KvCache<f32>> = Default::default();
    loop {
        let mut b = Vec::new();
        comm.broadcast_bytes_idle(&mut b, 0);
        let msg: Vec<u64> = from_bytes(&b);
        let bad = || anyhow::anyhow!("rank {}: a malformed step message from rank 0", comm.rank());
        let mut it = msg.into_iter();
        match it.next() {
            Some(MSG_STOP) => return Ok(()),
            Some(MSG_STEP) => {}
            _ => return Err(bad()),
        }
        let n_freed = it.next().ok_or_else(bad)?;
        for _ in 0..n_freed {
            caches.remove(&it.next().ok_or_else(bad)?);
        }
        let n_seq = it.next().ok_or_else(bad)? as usize;
        let mut ids = Vec::with_capacity(n_seq);
        let mut toks: Vec<Vec<u32>> = Vec::with_capacity(n_seq);
        let mut step_caches = Vec::with_capacity(n_seq);
        for _ in 0..n_seq {
            let (id, cap, n) = (it.next().ok_or_else(bad)?, it.next().ok_or_else(bad)? as usize, it.next().ok_or_else(bad)? as usize);
            let t: Vec<u32> = (0..n).map(|_| it.next().map(|x| x as u32).ok_or_else(bad)).collect::<anyhow::Result<_>>()?;
            step_caches.push(caches.remove(&id).unwrap_or_else(|| KvCache::with_capacity(&model.cfg, cap)));
            ids.push(id);
            toks.push(t);
        }
        {
            let mut refs: Vec<&mut KvCache<f32>> = step_caches.iter_mut().collect();
            // the same inputs as rank 0's step: an error there is the same error here, already
            // reported to the clients by rank 0
            let _ = engine.step(&mut refs, &toks);
        }
        caches.extend(ids.into_iter().zip(step_caches));
    }
}

/// KV bytes one token of context costs in f32 (keys and values of every layer).
pub fn kv_bytes_per_token(model: &Transformer<f32>) -> usize {
    KvCache::<f32>::with_capacity(&model.cfg, 1).memory_bytes()
}

/// Run the engine loop until [`Msg::Shutdown`] or until every sender is gone.
pub fn run(
    model: &mut Transformer<f32>,
    opts: &ServeOptions,
    rx: Receiver<Msg>,
    state: Arc<EngineState>,
    metrics: EngineMetrics,
) -> anyhow::Result<()> {
    // default format: the one a bf16 checkpoint already has (kept at load), else exact f32
    let dtype = engine_dtype(model, opts);
    let w = EngineWeights::new_taking(model, dtype);
    let model: &Transformer<f32> = model;
    let mut engine = Engine::with_weights(model, w, Kernel::Auto)?;
    // expert-parallel: the other ranks step the same batch on their own caches (see `worker`)
    let mirror = opts.expert_parallel.as_ref().map(|e| Mirror { comm: e.0.clone(), held: Vec::new() });
    if let Some(m) = &mirror {
        engine = engine.with_expert_parallel(m.comm.clone())?;
    }
    let mut mirror = MirrorGuard(mirror);
    let mut next_id = 0u64;
    let per_tok = kv_bytes_per_token(model);
    let kv_limit = opts.kv_memory;
    let n_vocab = model.cfg.n_vocab;
    let mut waiting: VecDeque<Box<Job>> = VecDeque::new();
    let mut running: Vec<Seq> = Vec::new();
    let mut kv_used = 0usize;
    let mut logits_buf: Vec<f32> = Vec::with_capacity(n_vocab);
    loop {
        // ---- receive: block only when there is nothing to do
        let mut shutdown = false;
        if running.is_empty() && waiting.is_empty() {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Msg::Job(j)) => waiting.push_back(j),
                Ok(Msg::Shutdown) => shutdown = true,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
        }
        while let Ok(m) = rx.try_recv() {
            match m {
                Msg::Job(j) => waiting.push_back(j),
                Msg::Shutdown => shutdown = true,
            }
        }
        if shutdown {
            for s in running.drain(..) {
                let _ = s.job.events.send(Event::Error("the server is shutting down".into()));
            }
            for j in waiting.drain(..) {
                let _ = j.events.send(Event::Error("the server is shutting down".into()));
            }
            state.waiting.store(0, Ordering::Relaxed);
            state.running.store(0, Ordering::Relaxed);
            return Ok(());
        }
        // ---- leave: cancelled or disconnected sequences free their memory before this step
        running.retain(|s| {
            let gone = s.job.cancel.load(Ordering::Relaxed) || s.job.events.is_closed();
            if gone {
                kv_used -= s.kv_bytes;
            }
            !gone
        });
        waiting.retain(|j| {
            let gone = j.cancel.load(Ordering::Relaxed) || j.events.is_closed();
            if gone {
                state.waiting.fetch_sub(1, Ordering::Relaxed);
            }
            !gone
        });
        // ---- join: FIFO admission by sequence count and KV bytes
        while running.len() < opts.max_seqs {
            let Some(j) = waiting.front() else { break };
            let cap = (j.prompt.len() + j.params.max_tokens).min(model.cfg.n_ctx);
            let need = cap * per_tok;
            if kv_used + need > kv_limit && !running.is_empty() {
                break;
            }
            let j = waiting.pop_front().expect("front exists");
            state.waiting.fetch_sub(1, Ordering::Relaxed);
            metrics.queue_time(j.enqueued.elapsed().as_secs_f64());
            let sampler = match Sampler::new(j.params.sampler) {
                Ok(s) => s,
                Err(e) => {
                    let _ = j.events.send(Event::Error(e.to_string()));
                    continue;
                }
            };
            let _ = j.events.send(Event::Started);
            kv_used += need;
            next_id += 1;
            running.push(Seq {
                id: next_id,
                cache: KvCache::with_capacity(&model.cfg, cap),
                sampler,
                prefilled: 0,
                generated: Vec::new(),
                next: None,
                kv_bytes: need,
                started: Instant::now(),
                last_token: None,
                counts: Default::default(),
                job: j,
            });
        }
        state.running.store(running.len(), Ordering::Relaxed);
        metrics.gauges(running.len(), state.waiting.load(Ordering::Relaxed), kv_used as f64 / kv_limit.max(1) as f64);
        if running.is_empty() {
            continue;
        }
        // ---- build the step: every decoding sequence's token, then prefill chunks in budget
        let n_decode = running.iter().filter(|s| s.next.is_some()).count();
        let mut budget = opts.max_batch_tokens.saturating_sub(n_decode);
        let mut part: Vec<usize> = Vec::new(); // indices of sequences in this step
        let mut toks: Vec<Vec<u32>> = Vec::new();
        for (i, s) in running.iter().enumerate() {
            if let Some(t) = s.next {
                part.push(i);
                toks.push(vec![t]);
            }
        }
        for (i, s) in running.iter().enumerate() {
            if s.next.is_none() && budget > 0 {
                let rest = s.job.prompt.len() - s.prefilled;
                let n = rest.min(budget);
                budget -= n;
                part.push(i);
                toks.push(s.job.prompt[s.prefilled..s.prefilled + n].to_vec());
            }
        }
        if part.is_empty() {
            continue;
        }
        let t0 = Instant::now();
        if let Some(m) = mirror.0.as_mut() {
            m.step(&running, &part, &toks);
        }
        let result = {
            let mut caches: Vec<&mut KvCache<f32>> = Vec::with_capacity(part.len());
            // disjoint mutable borrows of the participating caches, in `part` order
            let mut ptrs: Vec<Option<&mut Seq>> = running.iter_mut().map(Some).collect();
            for &i in &part {
                caches.push(&mut ptrs[i].take().expect("each sequence once").cache);
            }
            // an engine panic fails this step's requests, not the server
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.step(&mut caches, &toks).map(|l| l.to_vec()))) {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(p) => Err(format!("panicked: {}", crate::panic_message(&p))),
            }
        };
        let step_s = t0.elapsed().as_secs_f64();
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                // fail the sequences of this step only; the others go on
                tracing::error!("engine step failed: {e}");
                let msg = format!("engine error: {e}");
                let mut failed: Vec<usize> = part.clone();
                failed.sort_unstable();
                for &i in failed.iter().rev() {
                    let s = running.remove(i);
                    kv_used -= s.kv_bytes;
                    let _ = s.job.events.send(Event::Error(msg.clone()));
                }
                continue;
            }
        };
        metrics.step(engine.last_stats(), part.len(), step_s);
        // ---- sample: sequences whose prompt is done (or that decoded) get their next token
        let mut done: Vec<usize> = Vec::new();
        let now = Instant::now();
        for (j, &i) in part.iter().enumerate() {
            let s = &mut running[i];
            let n_in = toks[j].len();
            if s.next.is_none() {
                s.prefilled += n_in;
                if s.prefilled < s.job.prompt.len() {
                    continue; // more prompt chunks to come
                }
            }
            logits_buf.clear();
            logits_buf.extend_from_slice(&logits[j * n_vocab..(j + 1) * n_vocab]);
            let p = &s.job.params;
            apply_penalties(&mut logits_buf, &s.counts, p.presence_penalty, p.frequency_penalty);
            apply_min_p(&mut logits_buf, p.min_p, p.sampler.temperature);
            let lp = p.logprobs.map(|k| logprobs(&logits_buf, k));
            let tok = s.sampler.sample(&logits_buf);
            let logprob = lp.map(|(ls, top)| TokenLogprob { logprob: ls[tok as usize], top });
            s.generated.push(tok);
            *s.counts.entry(tok).or_insert(0) += 1;
            match s.last_token {
                None => metrics.ttft(s.job.enqueued.elapsed().as_secs_f64()),
                Some(t) => metrics.itl(now.duration_since(t).as_secs_f64()),
            }
            s.last_token = Some(now);
            let eos = p.eos.contains(&tok);
            let _ = s.job.events.send(Event::Token { id: tok, eos, logprob });
            let at_ctx_end = s.cache.len() + 1 > model.cfg.n_ctx || s.job.prompt.len() + s.generated.len() >= model.cfg.n_ctx;
            let finish = if eos {
                Some(Finish::Stop)
            } else if s.generated.len() >= p.max_tokens || at_ctx_end {
                Some(Finish::Length)
            } else {
                None
            };
            match finish {
                Some(f) => {
                    // counted before the client hears, so that /metrics after a response includes it
                    let completion = s.generated.len();
                    metrics.finished(s.job.prompt.len(), completion, s.job.enqueued.elapsed().as_secs_f64(), s.started);
                    let _ = s.job.events.send(Event::Done { finish: f, prompt_tokens: s.job.prompt.len(), completion_tokens: completion });
                    done.push(i);
                }
                None => s.next = Some(tok),
            }
        }
        done.sort_unstable();
        for &i in done.iter().rev() {
            let s = running.remove(i);
            kv_used -= s.kv_bytes;
        }
        if !done.is_empty() {
            state.running.store(running.len(), Ordering::Relaxed);
            metrics.gauges(running.len(), state.waiting.load(Ordering::Relaxed), kv_used as f64 / kv_limit.max(1) as f64);
        }
    }
}

/// OpenAI's penalties: `logit -= presence · [count > 0] + frequency · count` over generated tokens.
fn apply_penalties(logits: &mut [f32], counts: &std::collections::HashMap<u32, u32>, presence: f32, frequency: f32) {
    if presence == 0.0 && frequency == 0.0 {
        return;
    }
    for (&t, &c) in counts {
        if let Some(l) = logits.get_mut(t as usize) {
            *l -= presence + frequency * c as f32;
        }
    }
}

/// min-p: drop tokens whose probability (at this temperature) is below `min_p` × the largest.
fn apply_min_p(logits: &mut [f32], min_p: f32, temperature: f32) {
    if min_p <= 0.0 || temperature == 0.0 {
        return;
    }
    let m = logits.iter().copied().filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    let cut = m + temperature * min_p.ln();
    for l in logits.iter_mut() {
        if *l < cut {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// Log-softmax of `logits` and its `k` largest entries (ties to the lower id).
fn logprobs(logits: &[f32], k: usize) -> (Vec<f32>, Vec<(u32, f32)>) {
    let m = logits.iter().copied().filter(|v| v.is_finite()).fold(f32::NEG_INFINITY, f32::max);
    let lse = m + logits.iter().map(|&v| ((v - m) as f64).exp()).sum::<f64>().ln() as f32;
    let ls: Vec<f32> = logits.iter().map(|&v| v - lse).collect();
    let mut idx: Vec<u32> = (0..ls.len() as u32).collect();
    let k = k.min(idx.len());
    if k > 0 {
        let cmp = |a: &u32, b: &u32| ls[*b as usize].total_cmp(&ls[*a as usize]).then(a.cmp(b));
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
        idx.sort_unstable_by(cmp);
    } else {
        idx.clear();
    }
    let top = idx.into_iter().map(|i| (i, ls[i as usize])).collect();
    (ls, top)
}
