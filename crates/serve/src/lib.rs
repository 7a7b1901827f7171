//! `moe serve`: an OpenAI-compatible HTTP server over the fast engine.
//!
//! - [`scheduler`]: the engine thread — continuous batching with chunked prefill under a per-step
//!   token budget, admission by KV bytes and sequence count, cancellation within one step.
//! - [`api`]: the axum routes (`/v1/chat/completions`, `/v1/completions`, `/v1/models`,
//!   `/health`, `/metrics`, `/tokenize`, `/detokenize`), request validation with OpenAI error
//!   objects, SSE streaming, stop strings and incremental detokenisation
//!   ([`moe_data::Detokenizer`]).
//! - [`metrics`]: Prometheus metrics, MoE routing counters included.
//!
//! The engine and model crates stay free of tokio: the engine thread is a plain thread that
//! talks to the HTTP side over channels.

pub mod api;
pub mod bench;
pub mod load;
pub mod metrics;
pub mod scheduler;

use moe_data::{ChatTemplate, Tokenizer};
use moe_kernels::quant::WeightDtype;
use moe_model::Transformer;
use scheduler::{EngineState, Msg};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A loaded model and what the server needs around it.
pub struct ServeModel {
    pub model: Transformer<f32>,
    pub tokenizer: Tokenizer,
    /// every end-of-sequence id the checkpoint declares
    pub eos_token_ids: Vec<u32>,
    pub chat_template: Option<ChatTemplate>,
}

/// Server settings (the `moe serve` options).
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    pub api_key: Option<String>,
    /// weight format; `None`: the checkpoint's own when the engine has it (bf16), else f32
    pub dtype: Option<WeightDtype>,
    pub max_seqs: usize,
    pub max_queue: usize,
    pub max_batch_tokens: usize,
    /// KV-cache bytes the running sequences may hold
    pub kv_memory: usize,
    /// `max_tokens` of a request that sends none
    pub max_tokens: usize,
    pub served_model_name: String,
    pub max_body_bytes: usize,
    /// how long running requests may go on after a shutdown signal
    pub grace: Duration,
    /// expert-parallel serving: this is rank 0 of these ranks, which hold the model's experts
    /// sharded (the others run [`scheduler::worker`])
    pub expert_parallel: Option<ExpertParallel>,
}

/// The ranks of an expert-parallel server.
#[derive(Clone)]
pub struct ExpertParallel(pub Arc<dyn moe_dist::Comm>);

impl std::fmt::Debug for ExpertParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExpertParallel({} ranks, {})", self.0.size(), self.0.backend())
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            host: "127.0.0.1".into(),
            port: 8080,
            api_key: None,
            dtype: None,
            max_seqs: 64,
            max_queue: 256,
            max_batch_tokens: 512,
            kv_memory: 4 << 30,
            max_tokens: 256,
            served_model_name: "moe".into(),
            max_body_bytes: 2 << 20,
            grace: Duration::from_secs(5),
            expert_parallel: None,
        }
    }
}

/// What the HTTP side knows once the model is loaded.
pub struct Loaded {
    /// leaked once per server start, so that response streams can borrow it for their lifetime
    pub tokenizer: &'static Tokenizer,
    pub eos: Vec<u32>,
    pub chat_template: Option<ChatTemplate>,
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub kv_bytes_per_token: usize,
}

/// State shared by the handlers.
pub struct Shared {
    pub opts: ServeOptions,
    pub loaded: OnceLock<Loaded>,
    pub load_error: OnceLock<String>,
    /// set when the engine thread ended with an error after loading (requests then get 503)
    pub engine_error: OnceLock<String>,
    pub tx: Mutex<std::sync::mpsc::Sender<Msg>>,
    pub engine: Arc<EngineState>,
    pub metrics: metrics::EngineMetrics,
    pub shutting_down: AtomicBool,
    pub created: u64,
    pub next_id: AtomicUsize,
}

/// A started server.
pub struct Server {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    http: Option<std::thread::JoinHandle<()>>,
    engine: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Bind `opts.host:opts.port` (port 0: an ephemeral one), start the HTTP side and the engine
    /// thread, which calls `load` (`/health` answers 503 until it returns) and then serves.
    pub fn start(opts: ServeOptions, load: impl FnOnce() -> anyhow::Result<ServeModel> + Send + 'static) -> anyhow::Result<Server> {
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        let state = Arc::new(EngineState { waiting: AtomicUsize::new(0), running: AtomicUsize::new(0) });
        let metrics = metrics::EngineMetrics::new();
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let shared = Arc::new(Shared {
            opts: opts.clone(),
            loaded: OnceLock::new(),
            load_error: OnceLock::new(),
            engine_error: OnceLock::new(),
            tx: Mutex::new(tx),
            engine: state.clone(),
            metrics: metrics.clone(),
            shutting_down: AtomicBool::new(false),
            created,
            next_id: AtomicUsize::new(0),
        });
        let std_listener = std::net::TcpListener::bind((opts.host.as_str(), opts.port))
            .map_err(|e| anyhow::anyhow!("cannot listen on {}:{}: {e}", opts.host, opts.port))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;

        let sh = shared.clone();
        let engine = std::thread::Builder::new().name("moe-engine".into()).spawn(move || {
            let mut m = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(load)) {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    let _ = sh.load_error.set(format!("{e:#}"));
                    return;
                }
                Err(p) => {
                    let _ = sh.load_error.set(format!("loading panicked: {}", panic_message(&p)));
                    return;
                }
            };
            let _ = sh.loaded.set(Loaded {
                tokenizer: Box::leak(Box::new(m.tokenizer)),
                eos: m.eos_token_ids,
                chat_template: m.chat_template,
                n_ctx: m.model.cfg.n_ctx,
                n_vocab: m.model.cfg.n_vocab,
                kv_bytes_per_token: scheduler::kv_bytes_per_token(&m.model),
            });
            if let Err(e) = scheduler::run(&mut m.model, &sh.opts, rx, state, metrics) {
                tracing::error!("the engine stopped: {e:#}");
                let _ = sh.engine_error.set(format!("{e:#}"));
            }
        })?;

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sh = shared.clone();
        let http = std::thread::Builder::new().name("moe-http".into()).spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                let app = api::router(sh.clone());
                let sh2 = sh.clone();
                let shutdown = async move {
                    let _ = stop_rx.await;
                    sh2.shutting_down.store(true, Ordering::SeqCst);
                    // running requests get the grace period, then the engine cancels them
                    let sh3 = sh2.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(sh3.opts.grace).await;
                        let _ = sh3.tx.lock().map(|t| t.send(Msg::Shutdown));
                    });
                };
                let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown);
                let _ = serve.await;
                let _ = sh.tx.lock().map(|t| t.send(Msg::Shutdown));
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        })?;
        Ok(Server { addr, shared, stop: Some(stop_tx), http: Some(http), engine: Some(engine) })
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Block until the model is loaded (or failed to load).
    pub fn wait_ready(&self) -> anyhow::Result<()> {
        loop {
            if self.shared.loaded.get().is_some() {
                return Ok(());
            }
            if let Some(e) = self.shared.load_error.get() {
                anyhow::bail!("loading the model: {e}");
            }
            if self.engine.as_ref().is_none_or(|h| h.is_finished()) {
                anyhow::bail!("the engine thread ended before the model was loaded");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Refuse new requests, give running ones the grace period, cancel the rest, and join.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    /// Wait for the HTTP thread to end (after [`Server::trigger_shutdown`] or a signal).
    fn stop_and_join(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.http.take() {
            let _ = h.join();
        }
        let _ = self.shared.tx.lock().map(|t| t.send(Msg::Shutdown));
        if let Some(h) = self.engine.take() {
            let _ = h.join();
        }
    }

    /// Serve until SIGINT or SIGTERM, then shut down cleanly. `ready` runs once the signal
    /// handlers are in place (so a signal sent after it is always a clean shutdown).
    pub fn run_until_signal(mut self, ready: impl FnOnce()) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            #[cfg(unix)]
            {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
                ready();
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            {
                ready();
                tokio::signal::ctrl_c().await?;
            }
            anyhow::Ok(())
        })?;
        eprintln!("shutting down: refusing new requests, {}s grace for running ones", self.shared.opts.grace.as_secs_f32());
        self.stop_and_join();
        Ok(())
    }
}

/// The text of a caught panic.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "(no message)".into())
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
