//! `moe bench serve`: a load generator for any OpenAI-compatible server (this one, llama.cpp's
//! `llama-server`, vLLM). C concurrent clients send N `/v1/completions` requests with random
//! token-id prompts of P tokens, `max_tokens` T, greedy, `ignore_eos` (so that every request
//! generates exactly T tokens where the server honours it), streamed or not; per level it reports
//! request and output-token throughput, time to first token, time per output token, inter-token
//! latency and end-to-end latency at p50 / p90 / p99, and failures.
//!
//! Only loopback or a URL the user names is ever contacted; every run is bounded by the request
//! count and a per-request timeout.

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One load level.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// base URL, e.g. `http://127.0.0.1:8080`
    pub url: String,
    pub api_key: Option<String>,
    pub concurrency: usize,
    pub requests: usize,
    pub prompt_len: usize,
    pub max_tokens: usize,
    pub stream: bool,
    pub seed: u64,
    /// per-request timeout
    pub timeout: Duration,
}

/// What `/v1/models` says about the served model.
#[derive(Clone, Debug)]
pub struct ServedModel {
    pub id: String,
    /// vocabulary size when the server says (ours: `vocab_size`; llama-server: `meta.n_vocab`)
    pub n_vocab: Option<usize>,
    pub max_model_len: Option<usize>,
}

/// p50 / p90 / p99 and the mean of a sample, in seconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Pcts {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
    pub n: usize,
}

impl Pcts {
    /// Nearest-rank percentiles; all zero for an empty sample.
    pub fn of(xs: &[f64]) -> Pcts {
        if xs.is_empty() {
            return Pcts::default();
        }
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Pcts { p50: at(0.50), p90: at(0.90), p99: at(0.99), mean: v.iter().sum::<f64>() / v.len() as f64, n: v.len() }
    }
}

/// The result of one level.
#[derive(Clone, Debug, Serialize)]
pub struct LevelReport {
    pub concurrency: usize,
    pub requests: usize,
    pub ok: usize,
    pub failures: usize,
    pub stream: bool,
    pub prompt_len: usize,
    pub max_tokens: usize,
    pub wall_s: f64,
    pub requests_per_s: f64,
    /// completion tokens of the successful requests per second of wall time
    pub output_tokens_per_s: f64,
    pub completion_tokens: usize,
    /// streamed only: request sent → first token received
    pub ttft_s: Pcts,
    /// streamed only: (e2e − ttft) / (tokens − 1), per request
    pub tpot_s: Pcts,
    /// streamed only: gaps between consecutive token chunks
    pub itl_s: Pcts,
    pub e2e_s: Pcts,
    /// the first failure's message, if any
    pub first_error: Option<String>,
}

struct Sample {
    e2e: f64,
    ttft: Option<f64>,
    itl: Vec<f64>,
    tokens: usize,
}

/// Ask `/v1/models` which model is served.
pub async fn served_model(client: &reqwest::Client, url: &str, api_key: Option<&str>) -> anyhow::Result<ServedModel> {
    let mut rq = client.get(format!("{}/v1/models", url.trim_end_matches('/')));
    if let Some(k) = api_key {
        rq = rq.bearer_auth(k);
    }
    let r = rq.send().await.map_err(|e| anyhow::anyhow!("GET {url}/v1/models: {e}"))?;
    let status = r.status();
    let v: Value = r.json().await.map_err(|e| anyhow::anyhow!("GET {url}/v1/models: not JSON ({e})"))?;
    if !status.is_success() {
        anyhow::bail!("GET {url}/v1/models: {status}: {v}");
    }
    let m = v["data"].get(0).ok_or_else(|| anyhow::anyhow!("GET {url}/v1/models: no model listed"))?;
    let num = |x: &Value| x.as_u64().map(|n| n as usize);
    Ok(ServedModel {
        id: m["id"].as_str().unwrap_or_default().to_string(),
        n_vocab: num(&m["vocab_size"]).or_else(|| num(&m["meta"]["n_vocab"])),
        max_model_len: num(&m["max_model_len"]).or_else(|| num(&m["meta"]["n_ctx_train"])),
    })
}

/// Wait until `GET /health` answers 200 (at most `timeout`).
pub async fn wait_healthy(client: &reqwest::Client, url: &str, timeout: Duration) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{}/health", url.trim_end_matches('/'))).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if t0.elapsed() > timeout {
            anyhow::bail!("{url}/health did not answer 200 within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A deterministic random prompt of `len` ids in `[lo, hi)` (splitmix64 of the seed and index).
pub fn random_prompt(seed: u64, index: usize, len: usize, lo: u32, hi: u32) -> Vec<u32> {
    let mut s = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let span = hi.saturating_sub(lo).max(1) as u64;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            lo + (z % span) as u32
        })
        .collect()
}

/// Run one level: `spec.concurrency` clients share `spec.requests` requests. `on_done` is called
/// after each request (for a progress bar).
pub async fn run_level(
    client: &reqwest::Client,
    spec: &LoadSpec,
    model: &ServedModel,
    on_done: Arc<dyn Fn() + Send + Sync>,
) -> LevelReport {
    let next = Arc::new(AtomicUsize::new(0));
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::new(Mutex::new(Vec::new()));
    let errors: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    // ids away from the ends of the vocabulary, where special tokens usually sit
    let n_vocab = model.n_vocab.unwrap_or(256).max(8) as u32;
    let (lo, hi) = (n_vocab.min(260) / 8, n_vocab - n_vocab / 16);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..spec.concurrency.max(1) {
        let (client, spec, model) = (client.clone(), spec.clone(), model.clone());
        let (next, samples, errors, on_done) = (next.clone(), samples.clone(), errors.clone(), on_done.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= spec.requests {
                    break;
                }
                let prompt = random_prompt(spec.seed, i, spec.prompt_len, lo, hi);
                match tokio::time::timeout(spec.timeout, one_request(&client, &spec, &model.id, &prompt)).await {
                    Ok(Ok(s)) => samples.lock().expect("samples").push(s),
                    Ok(Err(e)) => errors.lock().expect("errors").push(e),
                    Err(_) => errors.lock().expect("errors").push(format!("timed out after {:?}", spec.timeout)),
                }
                on_done();
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let samples = std::mem::take(&mut *samples.lock().expect("samples"));
    let errors = std::mem::take(&mut *errors.lock().expect("errors"));
    let tokens: usize = samples.iter().map(|s| s.tokens).sum();
    let e2e: Vec<f64> = samples.iter().map(|s| s.e2e).collect();
    let ttft: Vec<f64> = samples.iter().filter_map(|s| s.ttft).collect();
    let tpot: Vec<f64> =
        samples.iter().filter_map(|s| s.ttft.filter(|_| s.tokens > 1).map(|t| (s.e2e - t) / (s.tokens - 1) as f64)).collect();
    let itl: Vec<f64> = samples.iter().flat_map(|s| s.itl.iter().copied()).collect();
    LevelReport {
        concurrency: spec.concurrency,
        requests: spec.requests,
        ok: samples.len(),
        failures: errors.len(),
        stream: spec.stream,
        prompt_len: spec.prompt_len,
        max_tokens: spec.max_tokens,
        wall_s,
        requests_per_s: samples.len() as f64 / wall_s,
        output_tokens_per_s: tokens as f64 / wall_s,
        completion_tokens: tokens,
        ttft_s: Pcts::of(&ttft),
        tpot_s: Pcts::of(&tpot),
        itl_s: Pcts::of(&itl),
        e2e_s: Pcts::of(&e2e),
        first_error: errors.into_iter().next(),
    }
}

/// Run one level on a runtime of its own (for callers that are not async).
pub fn run_level_blocking(spec: &LoadSpec, on_done: Arc<dyn Fn() + Send + Sync>) -> anyhow::Result<(ServedModel, LevelReport)> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let client = client()?;
        let model = served_model(&client, &spec.url, spec.api_key.as_deref()).await?;
        let r = run_level(&client, spec, &model, on_done).await;
        Ok((model, r))
    })
}

/// An HTTP client for the load generator: no proxy (loopback traffic stays local) and a fresh
/// connection per request. Servers close kept-alive connections on their own schedule
/// (llama-server's HTTP library after a few requests or seconds), and a POST sent on a connection
/// the server is closing fails without ever reaching it; a new loopback connection costs far less
/// than the requests it carries.
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).tcp_nodelay(true).build()?)
}

async fn one_request(client: &reqwest::Client, spec: &LoadSpec, model: &str, prompt: &[u32]) -> Result<Sample, String> {
    let body = json!({
        "model": model, "prompt": prompt, "max_tokens": spec.max_tokens, "temperature": 0.0,
        "ignore_eos": true, "stream": spec.stream, "stream_options": if spec.stream { json!({ "include_usage": true }) } else { Value::Null },
    });
    let mut rq = client.post(format!("{}/v1/completions", spec.url.trim_end_matches('/'))).json(&body);
    if let Some(k) = &spec.api_key {
        rq = rq.bearer_auth(k);
    }
    let t0 = Instant::now();
    let r = rq.send().await.map_err(|e| format!("sending: {e}"))?;
    let status = r.status();
    if !status.is_success() {
        let text = r.text().await.unwrap_or_default();
        return Err(format!("{status}: {}", text.chars().take(300).collect::<String>()));
    }
    if !spec.stream {
        let v: Value = r.json().await.map_err(|e| format!("reading the response: {e}"))?;
        let tokens = v["usage"]["completion_tokens"].as_u64().ok_or_else(|| format!("no usage.completion_tokens in {v}"))? as usize;
        return Ok(Sample { e2e: t0.elapsed().as_secs_f64(), ttft: None, itl: Vec::new(), tokens });
    }
    let mut body = r.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let (mut ttft, mut last, mut itl, mut chunks, mut usage) = (None, None::<Instant>, Vec::new(), 0usize, None);
    let mut done = false;
    while let Some(b) = body.next().await {
        let b = b.map_err(|e| format!("reading the stream: {e}"))?;
        buf.extend_from_slice(&b);
        // one SSE event per blank-line-terminated block
        while let Some(end) = find_event_end(&buf) {
            let event: Vec<u8> = buf.drain(..end.1).collect();
            let text = String::from_utf8_lossy(&event[..end.0]).into_owned();
            for line in text.lines() {
                let Some(data) = line.strip_prefix("data:") else { continue };
                let data = data.trim();
                if data == "[DONE]" {
                    done = true;
                    continue;
                }
                let v: Value = serde_json::from_str(data).map_err(|e| format!("a stream event is not JSON ({e}): {data}"))?;
                if let Some(e) = v.get("error") {
                    return Err(format!("error event: {e}"));
                }
                if let Some(u) = v["usage"]["completion_tokens"].as_u64() {
                    usage = Some(u as usize);
                }
                if v["choices"].as_array().is_some_and(|c| !c.is_empty()) {
                    let now = Instant::now();
                    if ttft.is_none() {
                        ttft = Some(now.duration_since(t0).as_secs_f64());
                    }
                    if let Some(l) = last {
                        itl.push(now.duration_since(l).as_secs_f64());
                    }
                    last = Some(now);
                    chunks += 1;
                }
            }
        }
    }
    if !done {
        return Err("the stream ended without `data: [DONE]`".into());
    }
    Ok(Sample { e2e: t0.elapsed().as_secs_f64(), ttft, itl, tokens: usage.unwrap_or(chunks) })
}

/// `(end of the event's text, end including the blank line)` of the first complete SSE event.
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    for i in 0..buf.len() {
        if buf[i..].starts_with(b"\n\n") {
            return Some((i, i + 2));
        }
        if buf[i..].starts_with(b"\r\n\r\n") {
            return Some((i, i + 4));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Pcts::of(&xs);
        assert_eq!((p.p50, p.p90, p.p99, p.n), (50.0, 90.0, 99.0, 100));
        assert!((p.mean - 50.5).abs() < 1e-12);
        let one = Pcts::of(&[3.0]);
        assert_eq!((one.p50, one.p99), (3.0, 3.0));
        assert_eq!(Pcts::of(&[]).n, 0);
    }

    #[test]
    fn sse_events_split_on_blank_lines() {
        assert_eq!(find_event_end(b"data: 1\n\ndata: 2\n\n"), Some((7, 9)));
        assert_eq!(find_event_end(b"data: 1\r\n\r\n"), Some((7, 11)));
        assert_eq!(find_event_end(b"data: 1\n"), None);
    }

    #[test]
    fn random_prompts_are_deterministic_and_in_range() {
        let a = random_prompt(7, 3, 64, 10, 20);
        assert_eq!(a, random_prompt(7, 3, 64, 10, 20));
        assert_ne!(a, random_prompt(7, 4, 64, 10, 20));
        assert!(a.iter().all(|&t| (10..20).contains(&t)));
        assert!(a.iter().collect::<std::collections::HashSet<_>>().len() > 5);
    }
}
