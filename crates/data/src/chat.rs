//! Chat templates of Hugging Face checkpoints: the Jinja template in `chat_template.jinja` or in
//! `tokenizer_config.json` (`chat_template`: a string, or a list of `{name, template}` of which
//! `default` is used), rendered like transformers' `apply_chat_template`.
//!
//! The engine is `minijinja` configured as transformers configures jinja2: `trim_blocks`,
//! `lstrip_blocks`, loop controls, Python string/list/dict methods (`.strip()`, `.startswith()`,
//! `.items()` …, from `minijinja-contrib`), `raise_exception(msg)`, `strftime_now(fmt)`, and a
//! `tojson` that writes like Python's `json.dumps(ensure_ascii=False)` (`", "` and `": "`
//! separators, keys in insertion order). The template sees `messages`, `add_generation_prompt`,
//! `bos_token`, `eos_token` and `tools = documents = none`. Pinned by
//! `tests/chat_templates/cases.json` (`reference/chat_template_goldens.py`).

use crate::error::{Error, Result};
use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, ErrorKind};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One chat turn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`
    pub role: String,
    /// the text
    pub content: String,
}

impl ChatMessage {
    /// A message with this role and text.
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage { role: role.to_string(), content: content.to_string() }
    }
}

/// A compiled chat template with the special-token strings it may use.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    path: PathBuf,
    /// `bos_token` of tokenizer_config.json (empty when absent)
    pub bos_token: String,
    /// `eos_token` of tokenizer_config.json (empty when absent)
    pub eos_token: String,
}

/// A special token given as a string or as an `AddedToken` object `{"content": …}`.
fn token_str(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Object(o)) => o.get("content").and_then(|c| c.as_str()).unwrap_or_default().to_string(),
        _ => String::new(),
    }
}

fn py_json(v: &Value, indent: Option<usize>, depth: usize, out: &mut String) {
    let nl = |out: &mut String, d: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * d));
        }
    };
    let (item_sep, key_sep) = (if indent.is_some() { "," } else { ", " }, ": ");
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&v.to_string()),
        ValueKind::String => {
            out.push('"');
            for c in v.as_str().unwrap_or_default().chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter().map(|it| it.collect()).unwrap_or_default();
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                nl(out, depth + 1);
                py_json(x, indent, depth + 1, out);
            }
            if !items.is_empty() {
                nl(out, depth);
            }
            out.push(']');
        }
        ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter().map(|it| it.collect()).unwrap_or_default();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                nl(out, depth + 1);
                py_json(&Value::from(k.to_string()), None, 0, out);
                out.push_str(key_sep);
                py_json(&v.get_item(k).unwrap_or_default(), indent, depth + 1, out);
            }
            if !keys.is_empty() {
                nl(out, depth);
            }
            out.push('}');
        }
        _ => py_json(&Value::from(v.to_string()), indent, depth, out),
    }
}

/// `tojson` as transformers defines it (`json.dumps(x, ensure_ascii=False, indent=indent)`).
fn tojson(v: Value, kwargs: Kwargs) -> std::result::Result<String, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    py_json(&v, indent, 0, &mut out);
    Ok(out)
}

/// Days since 1970-01-01 → (year, month 1..=12, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `strftime_now(fmt)`: today's UTC date with `%d %m %Y %y %b %B %H %M %S %%`.
fn strftime_now(fmt: &str) -> String {
    const MONTHS: [&str; 12] =
        ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400);
    let mut out = String::new();
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y % 100)),
            Some('b') => out.push_str(&MONTHS[m as usize - 1][..3]),
            Some('B') => out.push_str(MONTHS[m as usize - 1]),
            Some('H') => out.push_str(&format!("{:02}", tod / 3600)),
            Some('M') => out.push_str(&format!("{:02}", tod / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", tod % 60)),
            Some(o) => {
                out.push('%');
                if o != '%' {
                    out.push(o);
                }
            }
            None => out.push('%'),
        }
    }
    out
}

impl ChatTemplate {
    /// Compile `source`; `path` names the file in errors.
    pub fn new(source: &str, path: &Path, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |fmt: String| strftime_now(&fmt));
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::ChatTemplate { path: path.to_path_buf(), message: e.to_string() })?;
        Ok(ChatTemplate { env, path: path.to_path_buf(), bos_token: bos_token.to_string(), eos_token: eos_token.to_string() })
    }

    /// The template of checkpoint directory `dir`: `chat_template.jinja`, else `chat_template` in
    /// `tokenizer_config.json`; `Ok(None)` when there is none. Special tokens come from
    /// `tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Option<Self>> {
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = if cfg_path.is_file() {
            let text =
                std::fs::read_to_string(&cfg_path).map_err(|source| Error::Io { path: cfg_path.clone(), action: "cannot read", source })?;
            serde_json::from_str(&text)
                .map_err(|e| Error::ChatTemplate { path: cfg_path.clone(), message: format!("not valid JSON: {e}") })?
        } else {
            serde_json::Value::Null
        };
        let (bos, eos) = (token_str(cfg.get("bos_token")), token_str(cfg.get("eos_token")));
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let text =
                std::fs::read_to_string(&jinja).map_err(|source| Error::Io { path: jinja.clone(), action: "cannot read", source })?;
            return Self::new(&text, &jinja, &bos, &eos).map(Some);
        }
        let source = match cfg.get("chat_template") {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(list)) => {
                let named = |n: &str| {
                    list.iter()
                        .find(|t| t.get("name").and_then(|x| x.as_str()) == Some(n))
                        .and_then(|t| t.get("template"))
                        .and_then(|t| t.as_str())
                };
                named("default")
                    .ok_or_else(|| Error::ChatTemplate {
                        path: cfg_path.clone(),
                        message: "field `chat_template` is a list without a `default` template".into(),
                    })?
                    .to_string()
            }
            Some(v) => {
                return Err(Error::ChatTemplate {
                    path: cfg_path,
                    message: format!("field `chat_template`: expected a string or a list, got {v}"),
                })
            }
        };
        Self::new(&source, &cfg_path, &bos, &eos).map(Some)
    }

    /// Render `messages`; with `add_generation_prompt` the text ends where the assistant's reply starts.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let t = self.env.get_template("chat").map_err(|e| Error::ChatTemplate { path: self.path.clone(), message: e.to_string() })?;
        let ctx = minijinja::context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone(),
            eos_token => self.eos_token.clone(),
            tools => Value::from(()),
            documents => Value::from(()),
        };
        t.render(ctx).map_err(|e| {
            let message = match e.kind() {
                ErrorKind::InvalidOperation => e.detail().unwrap_or("invalid operation").to_string(),
                _ => e.to_string(),
            };
            Error::ChatTemplate { path: self.path.clone(), message }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_dates_and_json_are_python_like() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        let mut s = String::new();
        py_json(&Value::from_serialize(serde_json::json!({"a": [1, "x\n"], "b": null})), None, 0, &mut s);
        assert_eq!(s, r#"{"a": [1, "x\n"], "b": null}"#);
    }
}
