//! The HTTP side: OpenAI-shaped routes, validation, streaming, stop strings.

use crate::scheduler::{Event, Finish, GenParams, Job, Msg, TokenLogprob};
use crate::Shared;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use moe_data::{ChatMessage, Detokenizer, Tokenizer};
use moe_infer::SamplerConfig;
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedReceiver;

/// An OpenAI error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
}

impl ApiError {
    fn bad(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.into()),
            code: Some("invalid_value"),
        }
    }
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), kind, param: None, code: Some(code) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "message": self.message, "type": self.kind, "param": self.param, "code": self.code } });
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", "not_found", "unknown route") })
        .with_state(shared)
}

// ---- plumbing

fn check_key(sh: &Shared, headers: &HeaderMap) -> ApiResult<()> {
    let Some(want) = &sh.opts.api_key else { return Ok(()) };
    let got = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    if constant_time_eq(got.as_bytes(), want.as_bytes()) {
        Ok(())
    } else {
        let msg = if got.is_empty() { "missing API key: send `Authorization: Bearer KEY`" } else { "incorrect API key" };
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "authentication_error", "invalid_api_key", msg))
    }
}

/// Equal in time independent of where the bytes differ (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn loaded(sh: &Shared) -> ApiResult<&crate::Loaded> {
    if sh.shutting_down.load(Ordering::Relaxed) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "shutting_down", "the server is shutting down"));
    }
    sh.loaded.get().ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "loading", "the model is still loading"))
}

async fn read_json(sh: &Shared, body: Body) -> ApiResult<Map<String, Value>> {
    let limit = sh.opts.max_body_bytes;
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!("the request body is over the limit of {limit} bytes"),
        kind: "invalid_request_error",
        param: None,
        code: Some("request_too_large"),
    })?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError {
        status: StatusCode::BAD_REQUEST,
        message: format!("malformed JSON body: {e}"),
        kind: "invalid_request_error",
        param: None,
        code: Some("invalid_json"),
    })?;
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: "the body must be a JSON object".into(),
            kind: "invalid_request_error",
            param: None,
            code: Some("invalid_json"),
        }),
    }
}

fn present<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    m.get(k).filter(|v| !v.is_null())
}

fn f64_field(m: &Map<String, Value>, k: &str) -> ApiResult<Option<f64>> {
    match present(m, k) {
        None => Ok(None),
        Some(v) => v.as_f64().filter(|x| x.is_finite()).map(Some).ok_or_else(|| ApiError::bad(k, format!("`{k}` must be a number"))),
    }
}

fn int_field(m: &Map<String, Value>, k: &str) -> ApiResult<Option<i64>> {
    match present(m, k) {
        None => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| ApiError::bad(k, format!("`{k}` must be an integer"))),
    }
}

fn bool_field(m: &Map<String, Value>, k: &str) -> ApiResult<Option<bool>> {
    match present(m, k) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).ok_or_else(|| ApiError::bad(k, format!("`{k}` must be a boolean"))),
    }
}

fn in_range(k: &str, v: f64, ok: bool, what: &str) -> ApiResult<()> {
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(k, format!("`{k}` is {v}; it must be {what}")))
    }
}

/// Everything a generation request says, validated.
struct Request {
    prompt: Vec<u32>,
    params: GenParams,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
    model: String,
}

fn common(sh: &Shared, ld: &crate::Loaded, m: &Map<String, Value>, prompt: Vec<u32>, chat: bool, prompt_field: &str) -> ApiResult<Request> {
    let model = match present(m, "model") {
        None => sh.opts.served_model_name.clone(),
        Some(Value::String(s)) if *s == sh.opts.served_model_name => s.clone(),
        Some(Value::String(s)) => {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                message: format!("the model `{s}` does not exist; this server serves `{}`", sh.opts.served_model_name),
                kind: "invalid_request_error",
                param: Some("model".into()),
                code: Some("model_not_found"),
            })
        }
        Some(_) => return Err(ApiError::bad("model", "`model` must be a string")),
    };
    if let Some(n) = int_field(m, "n")? {
        if n != 1 {
            return Err(ApiError::bad("n", format!("`n` is {n}; only n = 1 is supported")));
        }
    }
    let mt = match (int_field(m, "max_completion_tokens")?, int_field(m, "max_tokens")?) {
        (Some(v), _) => Some(("max_completion_tokens", v)),
        (None, Some(v)) => Some(("max_tokens", v)),
        _ => None,
    };
    let max_tokens = match mt {
        Some((k, v)) => {
            in_range(k, v as f64, v >= 1, "at least 1")?;
            v as usize
        }
        None => sh.opts.max_tokens.min(ld.n_ctx.saturating_sub(prompt.len())).max(1),
    };
    let temperature = f64_field(m, "temperature")?.unwrap_or(1.0);
    in_range("temperature", temperature, temperature >= 0.0, "≥ 0 (0 = greedy)")?;
    let top_p = f64_field(m, "top_p")?.unwrap_or(1.0);
    in_range("top_p", top_p, top_p > 0.0 && top_p <= 1.0, "in (0, 1]")?;
    let top_k = int_field(m, "top_k")?.unwrap_or(0);
    in_range("top_k", top_k as f64, top_k >= -1, "≥ 0 (0 or -1 = off)")?;
    let min_p = f64_field(m, "min_p")?.unwrap_or(0.0);
    in_range("min_p", min_p, (0.0..=1.0).contains(&min_p), "in [0, 1]")?;
    let presence = f64_field(m, "presence_penalty")?.unwrap_or(0.0);
    in_range("presence_penalty", presence, (-2.0..=2.0).contains(&presence), "in [-2, 2]")?;
    let frequency = f64_field(m, "frequency_penalty")?.unwrap_or(0.0);
    in_range("frequency_penalty", frequency, (-2.0..=2.0).contains(&frequency), "in [-2, 2]")?;
    let seed = match present(m, "seed") {
        None => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0),
        Some(v) => v.as_i64().map(|s| s as u64).or_else(|| v.as_u64()).ok_or_else(|| ApiError::bad("seed", "`seed` must be an integer"))?,
    };
    let stop = match present(m, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| ApiError::bad("stop", "`stop` must be a string or an array of strings")))
            .collect::<ApiResult<_>>()?,
        Some(_) => return Err(ApiError::bad("stop", "`stop` must be a string or an array of strings")),
    };
    if stop.iter().any(|s| s.is_empty()) {
        return Err(ApiError::bad("stop", "stop strings must not be empty"));
    }
    let stream = bool_field(m, "stream")?.unwrap_or(false);
    let include_usage = match present(m, "stream_options") {
        None => false,
        Some(Value::Object(o)) => bool_field(o, "include_usage")
            .map_err(|_| ApiError::bad("stream_options.include_usage", "`stream_options.include_usage` must be a boolean"))?
            .unwrap_or(false),
        Some(_) => return Err(ApiError::bad("stream_options", "`stream_options` must be an object")),
    };
    let logprobs = if chat {
        let on = bool_field(m, "logprobs")?.unwrap_or(false);
        let top = int_field(m, "top_logprobs")?;
        if let Some(t) = top {
            in_range("top_logprobs", t as f64, (0..=20).contains(&t), "in [0, 20]")?;
            if !on {
                return Err(ApiError::bad("top_logprobs", "`top_logprobs` needs `logprobs: true`"));
            }
        }
        on.then_some(top.unwrap_or(0) as usize)
    } else {
        match int_field(m, "logprobs")? {
            None => None,
            Some(t) => {
                in_range("logprobs", t as f64, (0..=20).contains(&t), "in [0, 20]")?;
                Some(t as usize)
            }
        }
    };
    if prompt.is_empty() {
        return Err(ApiError::bad(prompt_field, format!("`{prompt_field}` encodes to no tokens")));
    }
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= ld.n_vocab) {
        return Err(ApiError::bad(prompt_field, format!("token id {bad} is outside the vocabulary ({})", ld.n_vocab)));
    }
    let mt_field = mt.map_or("max_tokens", |(k, _)| k);
    if prompt.len() >= ld.n_ctx || prompt.len() + max_tokens > ld.n_ctx {
        let (param, code) =
            if prompt.len() >= ld.n_ctx { (prompt_field, "context_length_exceeded") } else { (mt_field, "context_length_exceeded") };
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("this model's context is {} tokens; the prompt has {} and max_tokens is {max_tokens}", ld.n_ctx, prompt.len()),
            kind: "invalid_request_error",
            param: Some(param.into()),
            code: Some(code),
        });
    }
    if (prompt.len() + max_tokens) * ld.kv_bytes_per_token > sh.opts.kv_memory {
        return Err(ApiError::bad(
            mt_field,
            format!(
                "prompt + max_tokens need {} KV-cache bytes, over the server's --kv-memory {}",
                (prompt.len() + max_tokens) * ld.kv_bytes_per_token,
                sh.opts.kv_memory
            ),
        ));
    }
    // vLLM's and llama.cpp's extension: generate through end-of-sequence tokens (benchmarks)
    let ignore_eos = bool_field(m, "ignore_eos")?.unwrap_or(false);
    let sampler = SamplerConfig { temperature: temperature as f32, top_k: top_k.max(0) as usize, top_p: top_p as f32, seed };
    Ok(Request {
        prompt,
        params: GenParams {
            max_tokens,
            sampler,
            min_p: min_p as f32,
            presence_penalty: presence as f32,
            frequency_penalty: frequency as f32,
            logprobs,
            eos: if ignore_eos { Vec::new() } else { ld.eos.clone() },
        },
        stop,
        stream,
        include_usage,
        model,
    })
}

fn encode(tok: &Tokenizer, text: &str, field: &str) -> ApiResult<Vec<u32>> {
    tok.encode(text).map_err(|e| ApiError::bad(field, format!("cannot encode `{field}`: {e}")))
}

fn prompt_of(ld: &crate::Loaded, m: &Map<String, Value>) -> ApiResult<Vec<u32>> {
    let ids =
        |a: &[Value]| -> Option<Vec<u32>> { a.iter().map(|v| v.as_u64().filter(|&x| x <= u32::MAX as u64).map(|x| x as u32)).collect() };
    match present(m, "prompt") {
        None => Err(ApiError::bad("prompt", "`prompt` is required")),
        Some(Value::String(s)) => encode(ld.tokenizer, s, "prompt"),
        Some(Value::Array(a)) if a.iter().all(|v| v.is_u64()) && !a.is_empty() => {
            ids(a).ok_or_else(|| ApiError::bad("prompt", "token ids must be integers ≥ 0"))
        }
        Some(Value::Array(a)) if a.len() == 1 => match &a[0] {
            Value::String(s) => encode(ld.tokenizer, s, "prompt"),
            Value::Array(t) => ids(t).ok_or_else(|| ApiError::bad("prompt", "token ids must be integers ≥ 0")),
            _ => Err(ApiError::bad("prompt", "`prompt` must be a string, an array of token ids, or one of either in an array")),
        },
        Some(Value::Array(a)) if a.len() > 1 && a.iter().all(|v| v.is_string() || v.is_array()) => {
            Err(ApiError::bad("prompt", "several prompts in one request are not supported; send one request per prompt"))
        }
        Some(_) => Err(ApiError::bad("prompt", "`prompt` must be a string, an array of token ids, or one of either in an array")),
    }
}

fn messages_of(ld: &crate::Loaded, m: &Map<String, Value>) -> ApiResult<Vec<u32>> {
    let Some(Value::Array(a)) = present(m, "messages") else {
        return Err(ApiError::bad("messages", "`messages` must be an array of {role, content} objects"));
    };
    if a.is_empty() {
        return Err(ApiError::bad("messages", "`messages` must not be empty"));
    }
    let mut msgs = Vec::with_capacity(a.len());
    for (i, v) in a.iter().enumerate() {
        let role = v
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad(&format!("messages[{i}].role"), format!("`messages[{i}].role` must be a string")))?;
        let content = match v.get("content") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                let mut s = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => s.push_str(t),
                        _ => {
                            return Err(ApiError::bad(
                                &format!("messages[{i}].content[{j}]"),
                                "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported",
                            ))
                        }
                    }
                }
                s
            }
            Some(_) => {
                return Err(ApiError::bad(
                    &format!("messages[{i}].content"),
                    format!("`messages[{i}].content` must be a string or an array of text parts"),
                ))
            }
        };
        msgs.push(ChatMessage::new(role, &content));
    }
    let t =
        ld.chat_template.as_ref().ok_or_else(|| ApiError::bad("messages", "this checkpoint has no chat template; use /v1/completions"))?;
    let text = t.render(&msgs, true).map_err(|e| ApiError::bad("messages", format!("rendering the chat template: {e}")))?;
    encode(ld.tokenizer, &text, "messages")
}

// ---- submission and the token stream

/// Sets the cancel flag when dropped: a client that goes away cancels its sequence.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn submit(sh: &Shared, req: &Request) -> ApiResult<(UnboundedReceiver<Event>, CancelOnDrop)> {
    let waiting = sh.engine.waiting.load(Ordering::Relaxed);
    if waiting >= sh.opts.max_queue {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "queue_full",
            format!("the request queue is full ({waiting} waiting); retry later"),
        ));
    }
    let (etx, erx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let job = Job { prompt: req.prompt.clone(), params: req.params.clone(), events: etx, cancel: cancel.clone(), enqueued: Instant::now() };
    sh.engine.waiting.fetch_add(1, Ordering::Relaxed);
    let sent = sh.tx.lock().map(|t| t.send(Msg::Job(Box::new(job))).is_ok()).unwrap_or(false);
    if !sent {
        sh.engine.waiting.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", "engine_stopped", "the engine is not running"));
    }
    Ok((erx, CancelOnDrop(cancel)))
}

/// Text of the generated tokens with stop strings applied: what may be released now.
struct TextState<'t> {
    detok: Detokenizer<'t>,
    stop: Vec<String>,
    /// all text so far (before stop-string truncation)
    full: String,
    /// bytes of `full` released to the client
    sent: usize,
    stopped: bool,
}

impl<'t> TextState<'t> {
    fn new(tok: &'t Tokenizer, prompt: &[u32], stop: Vec<String>) -> Self {
        TextState { detok: Detokenizer::new(tok, prompt), stop, full: String::new(), sent: 0, stopped: false }
    }

    /// Add one token (or, with `None`, flush at the end); returns the newly released text.
    fn push(&mut self, id: Option<u32>) -> String {
        if self.stopped {
            return String::new();
        }
        let piece = match id {
            Some(id) => self.detok.push(id).unwrap_or_default(),
            None => self.detok.finish().unwrap_or_default(),
        };
        self.full.push_str(&piece);
        let longest = self.stop.iter().map(|s| s.len()).max().unwrap_or(0);
        // a stop string may end in the new text and start in held-back text
        let mut from = self.sent.saturating_sub(longest);
        while !self.full.is_char_boundary(from) {
            from -= 1;
        }
        let hit = self.stop.iter().filter_map(|s| self.full[from..].find(s.as_str()).map(|p| p + from)).min();
        let until = match hit {
            Some(p) => {
                self.stopped = true;
                p.max(self.sent)
            }
            None if id.is_none() => self.full.len(),
            None => {
                // hold back the longest tail that could still begin a stop string
                let mut keep = self.full.len();
                for (i, _) in self.full[self.sent..].char_indices() {
                    let tail = &self.full[self.sent + i..];
                    if self.stop.iter().any(|s| s.starts_with(tail)) {
                        keep = self.sent + i;
                        break;
                    }
                }
                keep
            }
        };
        let out = self.full[self.sent..until].to_string();
        self.sent = until;
        out
    }

    fn text(&self) -> &str {
        &self.full[..self.sent]
    }
}

fn token_text(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id]).unwrap_or_default()
}

fn chat_logprobs(tok: &Tokenizer, id: u32, lp: &TokenLogprob) -> Value {
    let entry = |id: u32, l: f32| {
        let t = token_text(tok, id);
        json!({ "token": t, "logprob": l, "bytes": t.as_bytes() })
    };
    let mut e = entry(id, lp.logprob);
    e["top_logprobs"] = Value::Array(lp.top.iter().map(|&(i, l)| entry(i, l)).collect());
    e
}

struct Usage {
    prompt: usize,
    completion: usize,
}

fn usage_json(u: &Usage) -> Value {
    json!({ "prompt_tokens": u.prompt, "completion_tokens": u.completion, "total_tokens": u.prompt + u.completion })
}

fn finish_str(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

/// Drive the events of one request: calls `on_token(text released, id, logprob)` per token and
/// returns the finish reason and usage. Stops early (cancelling the sequence) at a stop string.
async fn next_token(
    rx: &mut UnboundedReceiver<Event>,
    ts: &mut TextState<'_>,
    completion: &mut usize,
) -> Result<Option<(String, u32, Option<TokenLogprob>)>, Result<(Finish, usize), String>> {
    loop {
        match rx.recv().await {
            Some(Event::Started) => continue,
            Some(Event::Token { id, eos, logprob }) => {
                *completion += 1;
                let piece = if eos { String::new() } else { ts.push(Some(id)) };
                if ts.stopped {
                    return Err(Ok((Finish::Stop, 0)));
                }
                return Ok(Some((piece, id, logprob)));
            }
            Some(Event::Done { finish, prompt_tokens, .. }) => return Err(Ok((finish, prompt_tokens))),
            Some(Event::Error(e)) => return Err(Err(e)),
            None => return Err(Err("the engine stopped".into())),
        }
    }
}

async fn generate(sh: Arc<Shared>, headers: HeaderMap, body: Body, chat: bool) -> Response {
    match generate_inner(sh, headers, body, chat).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn generate_inner(sh: Arc<Shared>, headers: HeaderMap, body: Body, chat: bool) -> ApiResult<Response> {
    check_key(&sh, &headers)?;
    let ld = loaded(&sh)?;
    let m = read_json(&sh, body).await?;
    let (prompt, field) = if chat { (messages_of(ld, &m)?, "messages") } else { (prompt_of(ld, &m)?, "prompt") };
    let req = common(&sh, ld, &m, prompt, chat, field)?;
    let (rx, guard) = submit(&sh, &req)?;
    let id = format!("{}-{}", if chat { "chatcmpl" } else { "cmpl" }, sh.next_id.fetch_add(1, Ordering::Relaxed));
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if req.stream {
        Ok(stream_response(sh.clone(), req, rx, guard, id, created, chat))
    } else {
        whole_response(ld, req, rx, guard, id, created, chat).await
    }
}

async fn whole_response(
    ld: &crate::Loaded,
    req: Request,
    mut rx: UnboundedReceiver<Event>,
    _guard: CancelOnDrop,
    id: String,
    created: u64,
    chat: bool,
) -> ApiResult<Response> {
    let tok: &Tokenizer = ld.tokenizer;
    let mut ts = TextState::new(tok, &req.prompt, req.stop.clone());
    let mut completion = 0;
    let mut lps: Vec<(u32, TokenLogprob)> = Vec::new();
    let finish = loop {
        match next_token(&mut rx, &mut ts, &mut completion).await {
            Ok(Some((_, id, lp))) => {
                if let Some(lp) = lp {
                    lps.push((id, lp));
                }
            }
            Ok(None) => unreachable!("next_token returns Some or Err"),
            Err(Ok((f, _))) => break f,
            Err(Err(e)) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "engine_error", e)),
        }
    };
    ts.push(None);
    let usage = Usage { prompt: req.prompt.len(), completion };
    let text = ts.text().to_string();
    let body = if chat {
        let logprobs = if req.params.logprobs.is_some() {
            json!({ "content": lps.iter().map(|(i, l)| chat_logprobs(tok, *i, l)).collect::<Vec<_>>() })
        } else {
            Value::Null
        };
        json!({
            "id": id, "object": "chat.completion", "created": created, "model": req.model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "logprobs": logprobs, "finish_reason": finish_str(finish) }],
            "usage": usage_json(&usage),
        })
    } else {
        let logprobs = if req.params.logprobs.is_some() { completion_logprobs(tok, &lps) } else { Value::Null };
        json!({
            "id": id, "object": "text_completion", "created": created, "model": req.model,
            "choices": [{ "index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_str(finish) }],
            "usage": usage_json(&usage),
        })
    };
    Ok(axum::Json(body).into_response())
}

fn completion_logprobs(tok: &Tokenizer, lps: &[(u32, TokenLogprob)]) -> Value {
    json!({
        "tokens": lps.iter().map(|(i, _)| token_text(tok, *i)).collect::<Vec<_>>(),
        "token_logprobs": lps.iter().map(|(_, l)| l.logprob).collect::<Vec<_>>(),
        "top_logprobs": lps.iter().map(|(_, l)| l.top.iter().map(|&(i, p)| (token_text(tok, i), json!(p))).collect::<Map<String, Value>>()).collect::<Vec<_>>(),
    })
}

fn stream_response(
    sh: Arc<Shared>,
    req: Request,
    rx: UnboundedReceiver<Event>,
    guard: CancelOnDrop,
    id: String,
    created: u64,
    chat: bool,
) -> Response {
    struct St {
        sh: Arc<Shared>,
        req: Request,
        rx: UnboundedReceiver<Event>,
        _guard: CancelOnDrop,
        id: String,
        created: u64,
        chat: bool,
        phase: u8, // 0 = role chunk, 1 = tokens, 2 = done
        completion: usize,
        ts: TextState<'static>,
    }
    let tok: &'static Tokenizer = sh.loaded.get().expect("loaded").tokenizer;
    let ts = TextState::new(tok, &req.prompt, req.stop.clone());
    let st = St { sh, req, rx, _guard: guard, id, created, chat, phase: 0, completion: 0, ts };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        let obj = if st.chat { "chat.completion.chunk" } else { "text_completion" };
        let chunk = |st: &St, choice: Value| json!({ "id": st.id, "object": obj, "created": st.created, "model": st.req.model, "choices": [choice] });
        let mut out: Vec<SseEvent> = Vec::new();
        match st.phase {
            0 => {
                st.phase = 1;
                if st.chat {
                    out.push(SseEvent::default().data(chunk(&st, json!({ "index": 0, "delta": { "role": "assistant", "content": "" }, "logprobs": null, "finish_reason": null })).to_string()));
                    return Some((futures_util::stream::iter(out.into_iter().map(Ok::<_, Infallible>)), st));
                }
                st.phase = 1;
            }
            2 => return None,
            _ => {}
        }
        let tok: &'static Tokenizer = st.sh.loaded.get().expect("loaded").tokenizer;
        let r = next_token(&mut st.rx, &mut st.ts, &mut st.completion).await;
        match r {
            Ok(Some((piece, id, lp))) => {
                let lpv =
                    lp.map(
                        |l| if st.chat { json!({ "content": [chat_logprobs(tok, id, &l)] }) } else { completion_logprobs(tok, &[(id, l)]) },
                    );
                let c = if st.chat {
                    json!({ "index": 0, "delta": { "content": piece }, "logprobs": lpv, "finish_reason": null })
                } else {
                    json!({ "index": 0, "text": piece, "logprobs": lpv, "finish_reason": null })
                };
                out.push(SseEvent::default().data(chunk(&st, c).to_string()));
            }
            Ok(None) => unreachable!("next_token returns Some or Err"),
            Err(Ok((finish, _))) => {
                st.phase = 2;
                let rest = st.ts.push(None);
                let c = if st.chat {
                    json!({ "index": 0, "delta": if rest.is_empty() { json!({}) } else { json!({ "content": rest }) }, "logprobs": null, "finish_reason": finish_str(finish) })
                } else {
                    json!({ "index": 0, "text": rest, "logprobs": null, "finish_reason": finish_str(finish) })
                };
                out.push(SseEvent::default().data(chunk(&st, c).to_string()));
                if st.req.include_usage {
                    let u = Usage { prompt: st.req.prompt.len(), completion: st.completion };
                    out.push(SseEvent::default().data(json!({ "id": st.id, "object": obj, "created": st.created, "model": st.req.model, "choices": [], "usage": usage_json(&u) }).to_string()));
                }
                out.push(SseEvent::default().data("[DONE]"));
            }
            Err(Err(e)) => {
                st.phase = 2;
                out.push(
                    SseEvent::default().data(
                        json!({ "error": { "message": e, "type": "server_error", "param": null, "code": "engine_error" } }).to_string(),
                    ),
                );
                out.push(SseEvent::default().data("[DONE]"));
            }
        }
        Some((futures_util::stream::iter(out.into_iter().map(Ok::<_, Infallible>)), st))
    });
    use futures_util::StreamExt;
    Sse::new(stream.flatten()).into_response()
}

async fn chat(State(sh): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    generate(sh, headers, body, true).await
}

async fn completions(State(sh): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    generate(sh, headers, body, false).await
}

async fn models(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> ApiResult<Response> {
    check_key(&sh, &headers)?;
    let (n_ctx, n_vocab) = (sh.loaded.get().map(|l| l.n_ctx), sh.loaded.get().map(|l| l.n_vocab));
    Ok(axum::Json(json!({ "object": "list", "data": [{ "id": sh.opts.served_model_name, "object": "model", "created": sh.created, "owned_by": "moe", "max_model_len": n_ctx, "vocab_size": n_vocab }] })).into_response())
}

async fn health(State(sh): State<Arc<Shared>>) -> Response {
    if sh.shutting_down.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match (sh.loaded.get(), sh.load_error.get()) {
        (Some(_), _) => (StatusCode::OK, "ok\n").into_response(),
        (None, Some(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("loading failed: {e}\n")).into_response(),
        (None, None) => (StatusCode::SERVICE_UNAVAILABLE, "loading\n").into_response(),
    }
}

async fn metrics(State(sh): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], sh.metrics.render()).into_response()
}

async fn tokenize(State(sh): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    check_key(&sh, &headers)?;
    let ld = loaded(&sh)?;
    let m = read_json(&sh, body).await?;
    let tokens = if present(&m, "messages").is_some() {
        messages_of(ld, &m)?
    } else {
        match present(&m, "prompt") {
            Some(Value::String(s)) => encode(ld.tokenizer, s, "prompt")?,
            _ => return Err(ApiError::bad("prompt", "`prompt` must be a string (or send `messages`)")),
        }
    };
    Ok(axum::Json(json!({ "tokens": tokens, "count": tokens.len(), "max_model_len": ld.n_ctx })).into_response())
}

async fn detokenize(State(sh): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> ApiResult<Response> {
    check_key(&sh, &headers)?;
    let ld = loaded(&sh)?;
    let m = read_json(&sh, body).await?;
    let ids: Vec<u32> = match present(&m, "tokens") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_u64().filter(|&x| (x as usize) < ld.n_vocab).map(|x| x as u32))
            .collect::<Option<_>>()
            .ok_or_else(|| ApiError::bad("tokens", format!("`tokens` must be token ids in [0, {})", ld.n_vocab)))?,
        _ => return Err(ApiError::bad("tokens", "`tokens` must be an array of token ids")),
    };
    let text = ld.tokenizer.decode(&ids).map_err(|e| ApiError::bad("tokens", e.to_string()))?;
    Ok(axum::Json(json!({ "prompt": text })).into_response())
}
