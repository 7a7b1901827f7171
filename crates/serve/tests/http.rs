//! The server over real HTTP on an ephemeral loopback port, with the tiny golden checkpoints of
//! `tests/golden_hf/` (outputs pinned to transformers) and a tiny trained run. No mocks and no
//! timing assertions: every wait is bounded and polls a condition.

use moe_infer::{generate_until, SamplerConfig};
use moe_model::{ModelConfig, Transformer};
use moe_serve::{ServeModel, ServeOptions, Server};
use safetensors::SafeTensors;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn golden(case: &str) -> PathBuf {
    repo().join("tests/golden_hf").join(case)
}

/// A WordLevel tokenizer.json whose token `i` is the word `w{i}`: any id sequence is text.
fn word_tokenizer(n_vocab: usize) -> String {
    let vocab: serde_json::Map<String, Value> = (0..n_vocab).map(|i| (format!("w{i}"), json!(i))).collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": { "type": "WhitespaceSplit" }, "post_processor": null, "decoder": null,
        "model": { "type": "WordLevel", "vocab": vocab, "unk_token": "w0" }
    })
    .to_string()
}

/// A SentencePiece-style tokenizer: even ids are `▁a{i}` (a word that starts with a space), odd
/// ids `b{i}` (a continuation piece), decoded by the Metaspace decoder.
fn metaspace_tokenizer(n_vocab: usize) -> String {
    let piece = |i: usize| if i.is_multiple_of(2) { format!("▁a{i}") } else { format!("b{i}") };
    let vocab: serde_json::Map<String, Value> = (0..n_vocab).map(|i| (piece(i), json!(i))).collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": { "type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true },
        "post_processor": null,
        "decoder": { "type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true },
        "model": { "type": "WordLevel", "vocab": vocab, "unk_token": "▁a0" }
    })
    .to_string()
}

/// A copy of a golden checkpoint with `tokenizer` as its tokenizer.json.
fn checkpoint(case: &str, tokenizer: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(golden(case)).unwrap() {
        let p = f.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer).unwrap();
    dir
}

fn i64s(st: &SafeTensors<'_>, name: &str) -> Vec<u32> {
    st.tensor(name).unwrap().data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect()
}

/// (first sequence's prompt tokens, transformers' greedy continuation)
fn expected(case: &str) -> (Vec<u32>, Vec<u32>) {
    let bytes = std::fs::read(golden(case).join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let seq_len = st.tensor("logits").unwrap().shape()[1];
    (i64s(&st, "tokens")[..seq_len].to_vec(), i64s(&st, "greedy"))
}

fn words(ids: &[u32]) -> String {
    ids.iter().map(|t| format!(" w{t}")).collect()
}

fn start(dir: &Path, opts: ServeOptions) -> Server {
    let dir = dir.to_path_buf();
    let s = Server::start(ServeOptions { port: 0, ..opts }, move || ServeModel::from_checkpoint(&dir)).unwrap();
    s.wait_ready().unwrap();
    s
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn post(c: &reqwest::Client, url: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = c.post(format!("{url}{path}")).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")))
}

/// The `data:` payloads of an SSE response, `[DONE]` included as a string.
async fn sse(c: &reqwest::Client, url: &str, path: &str, body: &Value) -> Vec<Value> {
    let r = c.post(format!("{url}{path}")).json(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let d = e.trim().strip_prefix("data:").unwrap_or_else(|| panic!("not a data event: {e:?}")).trim();
            if d == "[DONE]" {
                Value::String(d.into())
            } else {
                serde_json::from_str(d).unwrap()
            }
        })
        .collect()
}

/// Text, finish reason and usage of a streamed completion (chat or text); checks the framing.
fn streamed(events: &[Value], chat: bool) -> (String, String, Option<Value>) {
    assert_eq!(events.last().unwrap(), "[DONE]", "the stream ends with [DONE]");
    let mut text = String::new();
    let mut finish = None;
    let mut usage = None;
    for e in &events[..events.len() - 1] {
        assert_eq!(e["object"], if chat { "chat.completion.chunk" } else { "text_completion" }, "{e}");
        let choices = e["choices"].as_array().unwrap();
        if choices.is_empty() {
            usage = Some(e["usage"].clone());
            continue;
        }
        assert!(finish.is_none(), "nothing after the finish chunk but usage: {e}");
        let piece = if chat { e["choices"][0]["delta"]["content"].as_str() } else { e["choices"][0]["text"].as_str() };
        text.push_str(piece.unwrap_or(""));
        if let Some(f) = e["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    (text, finish.expect("a finish chunk"), usage)
}

/// `(completion text, finish_reason, usage)` of a non-streamed response.
fn whole(v: &Value, chat: bool) -> (String, String, Value) {
    let c = &v["choices"][0];
    let text = if chat { c["message"]["content"].as_str() } else { c["text"].as_str() };
    (text.unwrap_or_else(|| panic!("{v}")).to_string(), c["finish_reason"].as_str().unwrap().to_string(), v["usage"].clone())
}

#[test]
fn completions_equal_transformers_greedy_streamed_and_not() {
    let rt = rt();
    for case in ["llama", "qwen2_moe", "mixtral"] {
        let dir = checkpoint(case, &word_tokenizer(128));
        let s = start(dir.path(), ServeOptions::default());
        let (prompt, greedy) = expected(case);
        // eos 2 ends transformers' continuation too; it is not part of the text
        let n = greedy.iter().position(|&t| t == 2).unwrap_or(greedy.len());
        let (want, want_finish) = (words(&greedy[..n]), if n < greedy.len() { "stop" } else { "length" });
        let c = client();
        rt.block_on(async {
            let url = s.url();
            let text_prompt = prompt.iter().map(|t| format!("w{t}")).collect::<Vec<_>>().join(" ");
            for p in [json!(prompt), json!(text_prompt)] {
                let body = json!({ "prompt": p, "max_tokens": greedy.len(), "temperature": 0, "user": "ignored" });
                let (st, v) = post(&c, &url, "/v1/completions", &body).await;
                assert_eq!(st, 200, "{v}");
                let (text, finish, usage) = whole(&v, false);
                assert_eq!((text.as_str(), finish.as_str()), (want.as_str(), want_finish), "{case}");
                assert_eq!(usage["prompt_tokens"], prompt.len());
                assert_eq!(usage["completion_tokens"], n + (n < greedy.len()) as usize, "the eos token counts as generated");
                let mut sbody = body.clone();
                sbody["stream"] = json!(true);
                sbody["stream_options"] = json!({ "include_usage": true });
                let (stext, sfinish, susage) = streamed(&sse(&c, &url, "/v1/completions", &sbody).await, false);
                assert_eq!((stext, sfinish), (text, finish), "{case}: streamed = not streamed");
                assert_eq!(susage.unwrap(), usage);
            }
        });
        s.shutdown();
    }
}

#[test]
fn chat_renders_the_checkpoint_template() {
    let dir = checkpoint("gpt_oss", &word_tokenizer(128));
    let rt = rt();
    let c = client();
    let msgs = json!([{ "role": "system", "content": "w4" }, { "role": "user", "content": [{ "type": "text", "text": " w9 w10 " }] }]);
    {
        let s = start(dir.path(), ServeOptions::default());
        let (st, v) = rt.block_on(post(&c, &s.url(), "/v1/chat/completions", &json!({ "messages": msgs })));
        assert_eq!((st, v["error"]["param"].as_str()), (400, Some("messages")), "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("chat template"));
    }
    let template = "{% for m in messages %}{{ m['content'].strip() }} {% endfor %}{% if add_generation_prompt %}w7{% endif %}";
    std::fs::write(dir.path().join("tokenizer_config.json"), json!({ "chat_template": template }).to_string()).unwrap();
    let s = start(dir.path(), ServeOptions { served_model_name: "tiny".into(), ..Default::default() });
    rt.block_on(async {
        let url = s.url();
        let body = json!({ "model": "tiny", "messages": msgs, "max_tokens": 5, "temperature": 0, "seed": 3 });
        let (st, v) = post(&c, &url, "/v1/chat/completions", &body).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!((v["object"].as_str(), v["model"].as_str()), (Some("chat.completion"), Some("tiny")));
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        let (chat, finish, _) = whole(&v, true);
        // equal to completing the rendered conversation
        let (st, p) = post(&c, &url, "/v1/completions", &json!({ "prompt": "w4 w9 w10 w7", "max_tokens": 5, "temperature": 0 })).await;
        assert_eq!(st, 200);
        assert_eq!((chat.clone(), finish.clone()), {
            let w = whole(&p, false);
            (w.0, w.1)
        });
        let mut sb = body.clone();
        sb["stream"] = json!(true);
        let ev = sse(&c, &url, "/v1/chat/completions", &sb).await;
        assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant", "the first chunk carries the role");
        let (stext, sfinish, usage) = streamed(&ev, true);
        assert_eq!((stext, sfinish), (chat, finish));
        assert!(usage.is_none(), "no usage chunk without stream_options.include_usage");
        // /tokenize renders the same conversation
        let (st, t) = post(&c, &url, "/tokenize", &json!({ "messages": msgs })).await;
        assert_eq!(st, 200);
        assert_eq!(t["tokens"], json!([4, 9, 10, 7]));
    });
}

#[test]
fn metaspace_pieces_keep_their_spaces_streamed_and_not() {
    let tok = metaspace_tokenizer(128);
    let dir = checkpoint("llama", &tok);
    let hf = tokenizers::Tokenizer::from_bytes(tok.as_bytes()).unwrap();
    let model = moe_model::hf::load_hf_dir(dir.path()).unwrap().model;
    let greedy = SamplerConfig { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 };
    let s = start(dir.path(), ServeOptions::default());
    let rt = rt();
    let c = client();
    let mut spaces = 0;
    rt.block_on(async {
        for prompt in [vec![4u32, 9, 12], vec![3, 5], vec![20], vec![7, 8, 9, 10, 11]] {
            let ids = generate_until(&model, &prompt, 12, &greedy, &[], |_| {}).unwrap().tokens;
            let body = json!({ "prompt": prompt, "max_tokens": 12, "temperature": 0, "ignore_eos": true });
            let (st, v) = post(&c, &s.url(), "/v1/completions", &body).await;
            assert_eq!(st, 200, "{v}");
            let (text, _, usage) = whole(&v, false);
            assert_eq!(usage["completion_tokens"], 12, "ignore_eos generates max_tokens");
            let mut sb = body.clone();
            sb["stream"] = json!(true);
            let (stext, _, _) = streamed(&sse(&c, &s.url(), "/v1/completions", &sb).await, false);
            assert_eq!(stext, text, "streamed pieces = the whole text");
            // prompt text + completion text = decode(prompt ++ completion)
            let all: Vec<u32> = prompt.iter().chain(&ids).copied().collect();
            assert_eq!(format!("{}{text}", hf.decode(&prompt, false).unwrap()), hf.decode(&all, false).unwrap(), "{ids:?}");
            spaces += text.matches(' ').count();
        }
    });
    assert!(spaces > 0, "the continuations contain word pieces, whose spaces are kept");
}

#[test]
fn concurrent_requests_equal_their_output_alone() {
    let dir = checkpoint("mixtral", &word_tokenizer(128));
    // a small step budget forces chunked prefill; fewer slots than requests forces join/leave
    let s = start(dir.path(), ServeOptions { max_seqs: 12, max_batch_tokens: 24, ..Default::default() });
    let rt = rt();
    let c = client();
    let reqs: Vec<Value> = (0..64u32)
        .map(|i| {
            let len = 1 + (i * 7 % 40) as usize;
            let prompt: Vec<u32> = (0..len as u32).map(|j| 3 + (i * 31 + j * 17) % 120).collect();
            json!({ "prompt": prompt, "max_tokens": 1 + (i * 5 % 20), "temperature": 0, "ignore_eos": true, "stream": i % 3 == 0 })
        })
        .collect();
    let url = s.url();
    let run = |r: Value| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            if r["stream"] == true {
                let (t, f, _) = streamed(&sse(&c, &url, "/v1/completions", &r).await, false);
                (t, f)
            } else {
                let (st, v) = post(&c, &url, "/v1/completions", &r).await;
                assert_eq!(st, 200, "{v}");
                let (t, f, _) = whole(&v, false);
                (t, f)
            }
        }
    };
    let alone: Vec<(String, String)> = rt.block_on(async {
        let mut out = Vec::new();
        for r in &reqs {
            out.push(run(r.clone()).await);
        }
        out
    });
    let together: Vec<(String, String)> = rt.block_on(async {
        let hs: Vec<_> = reqs.iter().map(|r| tokio::spawn(run(r.clone()))).collect();
        let mut out = Vec::new();
        for h in hs {
            out.push(h.await.unwrap());
        }
        out
    });
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, t, "request {i}: alone vs with 63 others");
        assert_eq!(a.1, "length");
        assert_eq!(a.0.split_whitespace().count(), 1 + (i * 5 % 20), "request {i}");
    }
    let m = rt.block_on(async { c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap() });
    assert!(value(&m, "moe:request_success_total") >= 128.0);
    assert!(count(&m, "moe:batch_size") > 0.0);
}

#[test]
fn every_stop_rule() {
    let (prompt, greedy) = expected("llama");
    let n = greedy.iter().position(|&t| t == 2).unwrap_or(greedy.len());
    assert!(n >= 4, "the llama golden continuation is long enough for these cases: {greedy:?}");
    let dir = checkpoint("llama", &word_tokenizer(128));
    let rt = rt();
    let c = client();
    // several end-of-sequence ids: the second one listed is the first token of the continuation
    // that did not come earlier in it (generated at position `e`)
    let e = (1..n).find(|&j| !greedy[..j].contains(&greedy[j])).expect("a token that is new in the continuation");
    assert!(!greedy[..=e.max(3)].contains(&127), "{greedy:?}");
    let gen = json!({ "bos_token_id": 1, "eos_token_id": [127, greedy[e]] });
    std::fs::write(dir.path().join("generation_config.json"), gen.to_string()).unwrap();
    let s = start(dir.path(), ServeOptions::default());
    let url = s.url();
    rt.block_on(async {
        let body = json!({ "prompt": prompt, "max_tokens": 8, "temperature": 0 });
        let (_, v) = post(&c, &url, "/v1/completions", &body).await;
        assert_eq!(whole(&v, false).0, words(&greedy[..e]));
        assert_eq!((whole(&v, false).1.as_str(), v["usage"]["completion_tokens"].as_u64()), ("stop", Some(e as u64 + 1)));
        // ignore_eos goes through it
        let (_, v) =
            post(&c, &url, "/v1/completions", &json!({ "prompt": prompt, "max_tokens": 4, "temperature": 0, "ignore_eos": true })).await;
        assert_eq!(whole(&v, false).0, words(&greedy[..4]));
        // max_tokens
        let (_, v) = post(&c, &url, "/v1/completions", &json!({ "prompt": prompt, "max_tokens": 1, "temperature": 0 })).await;
        assert_eq!((whole(&v, false).0, whole(&v, false).1), (words(&greedy[..1]), "length".into()));
        // a stop string that spans two tokens: the last digit of one word, the space, the next `w`
        let full = words(&greedy[..2]);
        let cut = format!(" w{}", greedy[0]).len() - 1;
        let stop = full[cut..cut + 3].to_string();
        assert!(!full[..cut].contains(&stop));
        for stream in [false, true] {
            let body =
                json!({ "prompt": prompt, "max_tokens": 8, "temperature": 0, "stop": ["zzz", stop], "stream": stream, "ignore_eos": true });
            let (text, finish) = if stream {
                let (t, f, _) = streamed(&sse(&c, &url, "/v1/completions", &body).await, false);
                (t, f)
            } else {
                let (_, v) = post(&c, &url, "/v1/completions", &body).await;
                let (t, f, _) = whole(&v, false);
                (t, f)
            };
            assert_eq!((text.as_str(), finish.as_str()), (&full[..cut], "stop"), "stream {stream}, stop {stop:?}");
        }
        // the context end: the prompt fills the context but for 3 tokens
        let long: Vec<u32> = (0..61).map(|i| 3 + i % 100).collect();
        let (st, v) = post(&c, &url, "/v1/completions", &json!({ "prompt": long, "temperature": 0, "ignore_eos": true })).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!((whole(&v, false).1.as_str(), v["usage"]["completion_tokens"].as_u64()), ("length", Some(3)));
    });
}

/// The value of an unlabelled Prometheus sample.
fn value(text: &str, name: &str) -> f64 {
    samples(text).into_iter().find(|(n, l, _)| n == name && l.is_empty()).map(|s| s.2).unwrap_or_else(|| panic!("{name} missing:\n{text}"))
}

/// The total `_count` of a histogram over its label sets.
fn count(text: &str, name: &str) -> f64 {
    samples(text).into_iter().filter(|(n, _, _)| *n == format!("{name}_count")).map(|s| s.2).sum()
}

/// Parse Prometheus text exposition: `(name, labels, value)` per sample; panics on a bad line.
fn samples(text: &str) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            assert!(rest.starts_with("TYPE ") || rest.starts_with("HELP "), "bad comment line: {line}");
            continue;
        }
        let (series, v) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line: {line}"));
        let value: f64 = match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                assert!(l.ends_with('}'), "bad labels: {line}");
                (n.to_string(), l[..l.len() - 1].to_string())
            }
            None => (series.to_string(), String::new()),
        };
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "bad metric name: {line}");
        out.push((name, labels, value));
    }
    out
}

#[test]
fn metrics_parse_and_expert_counters_add_up() {
    let dir = checkpoint("mixtral", &word_tokenizer(128));
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    let (layers, k, n_expert) = (
        cfg["num_hidden_layers"].as_u64().unwrap(),
        cfg["num_experts_per_tok"].as_u64().unwrap(),
        cfg["num_local_experts"].as_u64().unwrap(),
    );
    let s = start(dir.path(), ServeOptions { max_batch_tokens: 16, ..Default::default() });
    let rt = rt();
    let c = client();
    let url = s.url();
    let text = rt.block_on(async {
        assert_eq!(c.get(format!("{url}/health")).send().await.unwrap().status(), 200);
        let models: Value = c.get(format!("{url}/v1/models")).send().await.unwrap().json().await.unwrap();
        assert_eq!((models["object"].as_str(), models["data"][0]["id"].as_str()), (Some("list"), Some("moe")));
        assert_eq!(models["data"][0]["vocab_size"], 128);
        let (_, d) = post(&c, &url, "/detokenize", &json!({ "tokens": [5, 6] })).await;
        assert_eq!(d["prompt"], "w5 w6");
        let (_, t) = post(&c, &url, "/tokenize", &json!({ "prompt": "w5 w6" })).await;
        assert_eq!((t["tokens"].clone(), t["count"].clone()), (json!([5, 6]), json!(2)));
        let hs: Vec<_> = (0..6u32)
            .map(|i| {
                let (c, url) = (c.clone(), url.clone());
                tokio::spawn(async move {
                    let prompt: Vec<u32> = (0..10 + 3 * i).map(|j| 3 + (j * 13 + i) % 120).collect();
                    post(&c, &url, "/v1/completions", &json!({ "prompt": prompt, "max_tokens": 6, "temperature": 0, "ignore_eos": true }))
                        .await
                })
            })
            .collect();
        for h in hs {
            assert_eq!(h.await.unwrap().0, 200);
        }
        // the gauges follow the engine's next loop turn
        let get = async || c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
        wait_for("the engine to go idle", async || value(&get().await, "moe:num_requests_running") == 0.0).await;
        get().await
    });
    let all = samples(&text);
    let engine_tokens = value(&text, "moe:engine_tokens_total");
    // 6 prompts of 10 + 3i tokens, 6 tokens each (the last is not fed back)
    assert_eq!(engine_tokens, (0..6).map(|i| 10.0 + 3.0 * i as f64 + 5.0).sum::<f64>());
    assert_eq!(value(&text, "moe:generation_tokens_total"), 36.0);
    assert_eq!(value(&text, "moe:prompt_tokens_total"), (0..6).map(|i| 10.0 + 3.0 * i as f64).sum::<f64>());
    let routed: Vec<&(String, String, f64)> = all.iter().filter(|(n, _, _)| n == "moe:expert_tokens_total").collect();
    let sum: f64 = routed.iter().map(|s| s.2).sum();
    assert_eq!(sum, layers as f64 * engine_tokens * k as f64, "routed tokens = layers × tokens × k");
    assert!(routed.iter().all(|(_, l, _)| l.contains("moe_layer=\"") && l.contains("expert=\"")));
    assert!(routed.len() as u64 <= layers * n_expert && routed.len() > 1);
    for h in [
        "moe:time_to_first_token_seconds",
        "moe:inter_token_latency_seconds",
        "moe:e2e_request_latency_seconds",
        "moe:request_queue_time_seconds",
    ] {
        assert_eq!(count(&text, h), if h.contains("inter_token") { 30.0 } else { 6.0 }, "{h}");
    }
    assert!(count(&text, "moe:experts_touched_per_step") > 0.0);
    assert!(value(&text, "moe:weight_bytes_read_total") > 0.0);
    assert!(value(&text, "moe:memory_bandwidth_bytes_per_second") > 0.0);
    for g in ["moe:num_requests_running", "moe:num_requests_waiting", "moe:kv_cache_usage_ratio"] {
        assert_eq!(value(&text, g), 0.0, "{g} after every request finished");
    }
}

/// A random-weights model with a long context and the byte tokenizer: long enough generations
/// that a request is still running when its client goes away.
fn long_context_model() -> ServeModel {
    let cfg = ModelConfig::from_toml_value(
        toml::from_str(
            "n_vocab = 256\nn_ctx = 8192\nn_layer = 2\nd_model = 64\nn_head = 4\nn_head_kv = 2\nd_ff = 128\nactivation = \"swiglu\"",
        )
        .unwrap(),
    )
    .unwrap();
    ServeModel {
        model: Transformer::new(cfg, 5).unwrap(),
        tokenizer: moe_data::Tokenizer::byte(),
        eos_token_ids: vec![],
        chat_template: None,
    }
}

async fn wait_for(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let t0 = Instant::now();
    while !cond().await {
        assert!(t0.elapsed() < Duration::from_secs(60), "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_client_that_disconnects_frees_its_slot() {
    let s = Server::start(ServeOptions { port: 0, max_seqs: 1, ..Default::default() }, || Ok(long_context_model())).unwrap();
    s.wait_ready().unwrap();
    let rt = rt();
    let c = client();
    let url = s.url();
    rt.block_on(async {
        let metric = |name: &'static str| {
            let (c, url) = (c.clone(), url.clone());
            async move { value(&c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap(), name) }
        };
        let long = json!({ "prompt": "hi", "max_tokens": 8000, "temperature": 0, "stream": true });
        for stream in [true, false] {
            let mut body = long.clone();
            body["stream"] = json!(stream);
            let before = metric("moe:engine_tokens_total").await;
            if stream {
                // read the first chunk, then hang up
                let mut r = c.post(format!("{url}/v1/completions")).json(&body).send().await.unwrap();
                assert!(r.chunk().await.unwrap().is_some());
                drop(r);
            } else {
                // give up once the request runs
                let (c2, url2) = (c.clone(), url.clone());
                let h = tokio::spawn(async move { c2.post(format!("{url2}/v1/completions")).json(&body).send().await });
                wait_for("the request to run", async || metric("moe:num_requests_running").await == 1.0).await;
                h.abort();
            }
            wait_for("the slot to be freed", async || metric("moe:num_requests_running").await == 0.0).await;
            let used = metric("moe:engine_tokens_total").await - before;
            assert!(used < 7000.0, "stream {stream}: the sequence was cancelled, not run to the end ({used} tokens)");
            // the one slot admits the next request
            let (st, v) = post(&c, &url, "/v1/completions", &json!({ "prompt": "ok", "max_tokens": 3, "temperature": 0 })).await;
            assert_eq!((st, v["usage"]["completion_tokens"].as_u64()), (200, Some(3)), "{v}");
        }
        assert_eq!(metric("moe:request_success_total").await, 2.0, "cancelled requests are not successes");
    });
}

#[test]
fn bad_requests_get_openai_errors_naming_the_field() {
    let dir = checkpoint("llama", &word_tokenizer(128));
    // a chat template, so that chat requests get as far as their sampling fields
    let template = "{% for m in messages %}{{ m['content'] }} {% endfor %}";
    std::fs::write(dir.path().join("tokenizer_config.json"), json!({ "chat_template": template }).to_string()).unwrap();
    let s = start(dir.path(), ServeOptions { api_key: Some("sekrit".into()), max_body_bytes: 1 << 20, ..Default::default() });
    let rt = rt();
    let c = client();
    let url = s.url();
    let ok = json!({ "prompt": [5, 6, 7], "max_tokens": 2, "temperature": 0 });
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b.to_string()
    };
    // (path, body, status, param, code)
    let cases: Vec<(&str, String, u16, Option<&str>, &str)> = vec![
        ("/v1/completions", "{\"prompt\": [1,".into(), 400, None, "invalid_json"),
        ("/v1/completions", "[1, 2]".into(), 400, None, "invalid_json"),
        ("/v1/completions", with("max_tokens", json!("8")), 400, Some("max_tokens"), "invalid_value"),
        ("/v1/completions", with("max_tokens", json!(0)), 400, Some("max_tokens"), "invalid_value"),
        ("/v1/completions", with("max_completion_tokens", json!(-3)), 400, Some("max_completion_tokens"), "invalid_value"),
        ("/v1/completions", with("temperature", json!(-0.5)), 400, Some("temperature"), "invalid_value"),
        ("/v1/completions", with("temperature", json!("hot")), 400, Some("temperature"), "invalid_value"),
        ("/v1/completions", with("top_p", json!(0)), 400, Some("top_p"), "invalid_value"),
        ("/v1/completions", with("top_p", json!(1.5)), 400, Some("top_p"), "invalid_value"),
        ("/v1/completions", with("top_k", json!(-2)), 400, Some("top_k"), "invalid_value"),
        ("/v1/completions", with("min_p", json!(2)), 400, Some("min_p"), "invalid_value"),
        ("/v1/completions", with("presence_penalty", json!(3)), 400, Some("presence_penalty"), "invalid_value"),
        ("/v1/completions", with("frequency_penalty", json!(-9)), 400, Some("frequency_penalty"), "invalid_value"),
        ("/v1/completions", with("n", json!(2)), 400, Some("n"), "invalid_value"),
        ("/v1/completions", with("stop", json!(5)), 400, Some("stop"), "invalid_value"),
        ("/v1/completions", with("stop", json!([""])), 400, Some("stop"), "invalid_value"),
        ("/v1/completions", with("stream", json!("yes")), 400, Some("stream"), "invalid_value"),
        ("/v1/completions", with("seed", json!("x")), 400, Some("seed"), "invalid_value"),
        ("/v1/completions", with("logprobs", json!(99)), 400, Some("logprobs"), "invalid_value"),
        ("/v1/completions", with("ignore_eos", json!(1)), 400, Some("ignore_eos"), "invalid_value"),
        (
            "/v1/completions",
            with("stream_options", json!({ "include_usage": "y" })),
            400,
            Some("stream_options.include_usage"),
            "invalid_value",
        ),
        ("/v1/completions", with("prompt", json!([1, 500])), 400, Some("prompt"), "invalid_value"),
        ("/v1/completions", with("prompt", json!([])), 400, Some("prompt"), "invalid_value"),
        ("/v1/completions", with("prompt", json!(["a", "b"])), 400, Some("prompt"), "invalid_value"),
        ("/v1/completions", json!({ "max_tokens": 2 }).to_string(), 400, Some("prompt"), "invalid_value"),
        ("/v1/completions", with("prompt", json!(vec![5; 64])), 400, Some("prompt"), "context_length_exceeded"),
        ("/v1/completions", with("max_tokens", json!(62)), 400, Some("max_tokens"), "context_length_exceeded"),
        ("/v1/completions", with("model", json!("gpt-4")), 404, Some("model"), "model_not_found"),
        ("/v1/completions", with("model", json!(7)), 400, Some("model"), "invalid_value"),
        ("/v1/chat/completions", json!({ "messages": "hi" }).to_string(), 400, Some("messages"), "invalid_value"),
        ("/v1/chat/completions", json!({ "messages": [{ "content": "hi" }] }).to_string(), 400, Some("messages[0].role"), "invalid_value"),
        (
            "/v1/chat/completions",
            json!({ "messages": [{ "role": "user", "content": 5 }] }).to_string(),
            400,
            Some("messages[0].content"),
            "invalid_value",
        ),
        (
            "/v1/chat/completions",
            json!({ "messages": [{ "role": "user", "content": "w5" }], "top_logprobs": 3 }).to_string(),
            400,
            Some("top_logprobs"),
            "invalid_value",
        ),
        ("/detokenize", json!({ "tokens": [1, 999] }).to_string(), 400, Some("tokens"), "invalid_value"),
        ("/tokenize", json!({ "prompt": 3 }).to_string(), 400, Some("prompt"), "invalid_value"),
        ("/v1/nope", "{}".into(), 404, None, "not_found"),
    ];
    rt.block_on(async {
        let send = |path: &str, body: String, key: Option<&str>| {
            let mut rq = c.post(format!("{url}{path}")).header("content-type", "application/json").body(body);
            if let Some(k) = key {
                rq = rq.bearer_auth(k);
            }
            rq.send()
        };
        for (path, body, status, param, code) in &cases {
            let r = send(path, body.clone(), Some("sekrit")).await.unwrap();
            let st = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            assert_eq!(st, *status, "{path} {body}: {v}");
            let e = &v["error"];
            assert_eq!((e["param"].as_str(), e["code"].as_str()), (*param, Some(*code)), "{path} {body}: {v}");
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()) && e["type"].is_string(), "{v}");
        }
        // oversized body
        let big = format!("{{\"prompt\": \"{}\"}}", "w5 ".repeat(400_000));
        let r = send("/v1/completions", big, Some("sekrit")).await.unwrap();
        assert_eq!(r.status(), 413);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "request_too_large");
        // keys: missing and wrong are 401; /health and /metrics stay open
        for key in [None, Some("sekrit2"), Some("sekri")] {
            let r = send("/v1/completions", ok.to_string(), key).await.unwrap();
            assert_eq!(r.status(), 401, "{key:?}");
            let v: Value = r.json().await.unwrap();
            assert_eq!((v["error"]["type"].as_str(), v["error"]["code"].as_str()), (Some("authentication_error"), Some("invalid_api_key")));
        }
        assert_eq!(c.get(format!("{url}/v1/models")).send().await.unwrap().status(), 401);
        assert_eq!(c.get(format!("{url}/health")).send().await.unwrap().status(), 200);
        assert_eq!(c.get(format!("{url}/metrics")).send().await.unwrap().status(), 200);
        // and the server still answers a good request
        let r = send("/v1/completions", ok.to_string(), Some("sekrit")).await.unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["usage"]["completion_tokens"], 2);
    });
    s.shutdown();
    // a full queue: 503 with Retry-After
    let s = start(dir.path(), ServeOptions { max_queue: 0, ..Default::default() });
    rt.block_on(async {
        let r = c.post(format!("{}/v1/completions", s.url())).json(&ok).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "queue_full");
    });
}

#[test]
fn health_is_503_until_loaded_and_load_errors_are_reported() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let dir = checkpoint("llama", &word_tokenizer(128));
    let d = dir.path().to_path_buf();
    let s = Server::start(ServeOptions { port: 0, ..Default::default() }, move || {
        let _ = rx.recv_timeout(Duration::from_secs(60));
        ServeModel::from_checkpoint(&d)
    })
    .unwrap();
    let rt = rt();
    let c = client();
    rt.block_on(async {
        let r = c.get(format!("{}/health", s.url())).send().await.unwrap();
        assert_eq!(r.status(), 503);
        let (st, v) = post(&c, &s.url(), "/v1/completions", &json!({ "prompt": "w5" })).await;
        assert_eq!((st, v["error"]["code"].as_str()), (503, Some("loading")));
    });
    tx.send(()).unwrap();
    s.wait_ready().unwrap();
    assert_eq!(rt.block_on(async { c.get(format!("{}/health", s.url())).send().await.unwrap().status() }), 200);
    s.shutdown();
    // no tokenizer.json: the error names the file
    let empty = tempfile::tempdir().unwrap();
    let e = ServeModel::from_checkpoint(empty.path()).err().unwrap().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    let p = empty.path().to_path_buf();
    let s = Server::start(ServeOptions { port: 0, ..Default::default() }, move || ServeModel::from_checkpoint(&p)).unwrap();
    let e = s.wait_ready().unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
}

#[test]
fn a_trained_run_serves_what_the_reference_decoder_generates() {
    let text = r#"
[model]
n_vocab = 256
n_ctx = 64
n_layer = 2
d_model = 32
n_head = 4
n_head_kv = 2
d_ff = 64

[model.moe]
n_expert = 4
n_expert_active = 2
d_expert = 16

[train]
steps = 3
batch_size = 2
seq_len = 16
lr = 3e-3
checkpoint_every = 0

[data]
synthetic_bytes = 50000
"#;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let (cfg, _) = moe_train::parse_experiment(text, Path::new("run.toml"), &[]).unwrap();
    moe_train::train(&cfg, &out, &moe_train::TrainOptions::default()).unwrap();
    let run = moe_train::load_run(&out).unwrap();
    let prompt = run.tokenizer.encode("the cat").unwrap();
    let greedy = SamplerConfig { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 };
    let want = generate_until(&run.model, &prompt, 10, &greedy, &[], |_| {}).unwrap();
    let o = out.clone();
    let s = Server::start(ServeOptions { port: 0, ..Default::default() }, move || ServeModel::from_run(&o)).unwrap();
    s.wait_ready().unwrap();
    let rt = rt();
    let c = client();
    let (st, v) = rt.block_on(post(
        &c,
        &s.url(),
        "/v1/completions",
        &json!({ "prompt": "the cat", "max_tokens": 10, "temperature": 0, "ignore_eos": true, "logprobs": 0 }),
    ));
    assert_eq!(st, 200, "{v}");
    let got_text = whole(&v, false).0;
    assert_eq!(got_text, run.tokenizer.decode(&want.tokens).unwrap());
    assert_eq!(v["usage"]["completion_tokens"], 10);
}
