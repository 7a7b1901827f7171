//! Helpers shared by the CLI integration tests: run the real `moe` binary and check its exit code
//! and messages.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Run `moe args…` from the repository root.
pub fn moe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moe")).args(args).current_dir(repo()).env("RAYON_NUM_THREADS", "2").output().expect("run moe")
}

/// Run and expect success; returns stdout.
pub fn ok(args: &[&str]) -> String {
    let o = moe(args);
    let (out, err) = (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned());
    assert!(o.status.success(), "moe {args:?} failed ({:?})\nstdout:\n{out}\nstderr:\n{err}", o.status);
    out
}

/// Run and expect failure with exit code 2 and every `needles` string in stderr (no panic).
pub fn fails(args: &[&str], needles: &[&str]) {
    let o = moe(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "moe {args:?} should fail with exit 2; stderr:\n{err}");
    assert!(!err.contains("panicked"), "moe {args:?} panicked:\n{err}");
    for n in needles {
        assert!(err.contains(n), "moe {args:?}: stderr should mention {n:?}:\n{err}");
    }
}

/// A path as `&str` for argument lists.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// What `moe generate --run RUN --prompt PROMPT --max-tokens N --temperature 0 [--dtype int8]`
/// must print, computed in-process by the library: the greedy tokens of the reference engine
/// (`dtype` `None`) or of the fast engine with that weight format, detokenised after the echoed
/// prompt. Returns the expected stdout and the generated tokens.
pub fn library_greedy(run: &Path, prompt: &str, n: usize, dtype: Option<moe_kernels::quant::WeightDtype>) -> (String, Vec<u32>) {
    let r = moe_train::load_run(run).expect("load the run in-process");
    let ids = r.tokenizer.encode(prompt).unwrap();
    let stop: Vec<u32> = r.tokenizer.eos_token().into_iter().collect();
    let greedy = moe_infer::SamplerConfig::greedy();
    let out = match dtype {
        None => moe_infer::generate_until(&r.model, &ids, n, &greedy, &stop, |_| {}).unwrap(),
        Some(d) => {
            let mut e = moe_infer::Engine::new(&r.model, d).unwrap();
            moe_infer::generate_with_engine(&mut e, &ids, n, &greedy, &stop, |_| {}).unwrap()
        }
    };
    let mut detok = moe_data::Detokenizer::new(&r.tokenizer, &ids);
    let mut text = prompt.to_string();
    for &t in out.tokens.iter().filter(|t| !stop.contains(t)) {
        text.push_str(&detok.push(t).unwrap());
    }
    text.push_str(&detok.finish().unwrap());
    text.push('\n');
    (text, out.tokens)
}

/// Kills the child if the test fails before it exited.
pub struct Guard(pub std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`): (status, body).
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let status = resp.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not HTTP: {resp}"));
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Start `cmd` (a `moe serve`), wait for its ready line on stdout (bounded by the caller's
/// timeouts), and return the guard and `host:port`.
pub fn start_server(mut cmd: std::process::Command) -> (Guard, String) {
    use std::io::BufRead;
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("start moe serve");
    let mut g = Guard(child);
    let mut line = String::new();
    std::io::BufReader::new(g.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap_or_else(|| panic!("no URL in {line:?}"));
    let addr = url.trim_start_matches("http://").trim_end_matches("/v1").to_string();
    (g, addr)
}
