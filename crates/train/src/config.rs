//! The experiment TOML: `[model]`, `[train]` and `[data]`, with `--set key=value` overrides.
//!
//! ```toml
//! [model]   # moe_model::ModelConfig
//! n_vocab = 256
//! # ...
//! [train]
//! steps = 1000
//! batch_size = 8      # sequences per micro-batch; a step sees batch_size · grad_accum sequences
//! seq_len = 256
//! lr = 3e-4
//! [data]
//! source = "synthetic"   # or a path: text file, directory, or .jsonl
//! tokenizer = "byte"     # or a path to tokenizer.json
//! encoding = "auto"      # corpus bytes → text: auto, utf-8, utf-8-lossy, latin-1, cp1252, bytes
//! ```
//!
//! Every `[train]` and `[data]` key has a default; unknown keys anywhere are errors. Relative
//! paths in `[data]` are taken relative to the working directory.

use crate::error::{Error, Result};
use moe_data::TextEncoding;
use moe_model::ModelConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The `[train]` table: optimisation, schedule, logging and checkpointing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// optimizer steps
    pub steps: usize,
    /// sequences per micro-batch
    pub batch_size: usize,
    /// tokens per sequence (≤ `model.n_ctx`)
    pub seq_len: usize,
    /// micro-batches accumulated per optimizer step
    pub grad_accum: usize,
    /// peak learning rate
    pub lr: f64,
    /// final learning rate as a fraction of `lr`
    pub min_lr_ratio: f64,
    /// steps of linear warmup from 0
    pub warmup_steps: usize,
    /// decoupled AdamW weight decay (matrices only)
    pub weight_decay: f64,
    /// AdamW β1
    pub beta1: f64,
    /// AdamW β2
    pub beta2: f64,
    /// AdamW ε
    pub eps: f64,
    /// global gradient-norm clip (0 = off)
    pub grad_clip: f64,
    /// seeds model init, synthetic corpus, split and batch order
    pub seed: u64,
    /// evaluate every this many steps (0 = only at the end)
    pub eval_every: usize,
    /// validation batches per evaluation
    pub eval_batches: usize,
    /// after the last step, also evaluate on this many validation batches (0 = no such extra
    /// evaluation) and record it as `final_val_loss`: a larger final evaluation makes the number
    /// runs are compared by less noisy at little cost, while the loss curve (`val_loss` of every
    /// evaluation) stays on the same `eval_batches` batches throughout
    pub final_eval_batches: usize,
    /// checkpoint every this many steps (0 = only at the end)
    pub checkpoint_every: usize,
    /// write a train line to `metrics.jsonl` every this many steps
    pub log_every: usize,
    /// also decay `tok_embeddings.weight` (norms never decay)
    pub decay_embeddings: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 1000,
            batch_size: 8,
            seq_len: 256,
            grad_accum: 1,
            lr: 3e-4,
            min_lr_ratio: 0.1,
            warmup_steps: 100,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip: 1.0,
            seed: 1,
            eval_every: 100,
            eval_batches: 20,
            final_eval_batches: 0,
            checkpoint_every: 500,
            log_every: 1,
            decay_embeddings: false,
        }
    }
}

/// The `[data]` table: corpus, tokenizer and split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `"synthetic"` or a path (text file, directory, or `.jsonl`)
    pub source: String,
    /// size of the synthetic corpus in bytes
    pub synthetic_bytes: usize,
    /// `"byte"` or a path to a Hugging Face `tokenizer.json`
    pub tokenizer: String,
    /// how corpus files' bytes become text: `"auto"` (the byte tokenizer takes the bytes as they
    /// are, BPE reads lossy UTF-8 with a warning), `"utf-8"` (strict: invalid bytes are an error),
    /// `"utf-8-lossy"`, `"latin-1"`, `"cp1252"` or `"bytes"` (byte tokenizer only)
    pub encoding: TextEncoding,
    /// fraction of tokens held out for validation, in (0, 1)
    pub val_fraction: f64,
    /// seed of the corpus itself: the synthetic corpus and the train/validation split. Kept apart
    /// from `train.seed` (model init and batch order) so that runs with different training seeds
    /// are evaluated on the same validation tokens.
    pub seed: u64,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            source: "synthetic".into(),
            synthetic_bytes: 4_000_000,
            tokenizer: "byte".into(),
            encoding: TextEncoding::Auto,
            val_fraction: 0.05,
            seed: 0,
        }
    }
}

impl DataConfig {
    /// True when the corpus is the built-in synthetic one.
    pub fn is_synthetic(&self) -> bool {
        self.source == "synthetic"
    }
    /// True when the tokenizer is the byte tokenizer.
    pub fn is_byte_tokenizer(&self) -> bool {
        self.tokenizer == "byte"
    }
    /// `encoding` with `"auto"` resolved for the tokenizer.
    pub fn text_encoding(&self) -> TextEncoding {
        self.encoding.resolve(self.is_byte_tokenizer())
    }
}

/// A whole experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// the architecture
    pub model: ModelConfig,
    /// optimisation
    #[serde(default)]
    pub train: TrainConfig,
    /// data
    #[serde(default)]
    pub data: DataConfig,
}

impl ExperimentConfig {
    /// Parse and validate an experiment from a TOML tree; `path` names the source in errors.
    pub fn from_toml_value(v: toml::Value, path: &Path) -> Result<Self> {
        let toml::Value::Table(mut t) = v else {
            return Err(Error::ConfigParse { path: path.to_path_buf(), message: "the file is not a TOML table".into() });
        };
        if let Some(k) = t.keys().find(|k| !["model", "train", "data"].contains(&k.as_str())) {
            return Err(Error::Config {
                path: path.to_path_buf(),
                field: k.clone(),
                reason: "unknown table (expected [model], [train] and [data])".into(),
            });
        }
        let model_v = t.remove("model").ok_or_else(|| Error::Config {
            path: path.to_path_buf(),
            field: "model".into(),
            reason: "the [model] table is missing".into(),
        })?;
        let model = match &model_v {
            toml::Value::Table(tab) => {
                let parse = |t: &toml::Table| {
                    toml::Value::Table(t.clone()).try_into::<ModelConfig>().map(|_| ()).map_err(|e| e.message().to_string())
                };
                if let Err(msg) = parse(tab) {
                    let field = error_field(tab, &parse, &msg, "model");
                    return Err(Error::Config { path: path.to_path_buf(), field, reason: msg });
                }
                ModelConfig::from_toml_value(model_v).map_err(|e| model_err(e, path))?
            }
            _ => return Err(Error::Config { path: path.to_path_buf(), field: "model".into(), reason: "must be a table".into() }),
        };
        let train: TrainConfig = section(&mut t, "train", path)?;
        let data: DataConfig = section(&mut t, "data", path)?;
        let cfg = ExperimentConfig { model, train, data };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Check every `[train]` and `[data]` invariant (the model is checked by `ModelConfig`).
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, reason: String| Err(Error::Config { path: path.to_path_buf(), field: field.into(), reason });
        self.model.validate().map_err(|e| model_err(e, path))?;
        let t = &self.train;
        for (f, v) in [
            ("train.steps", t.steps),
            ("train.batch_size", t.batch_size),
            ("train.seq_len", t.seq_len),
            ("train.grad_accum", t.grad_accum),
            ("train.eval_batches", t.eval_batches),
            ("train.log_every", t.log_every),
        ] {
            if v == 0 {
                return bad(f, "must be > 0".into());
            }
        }
        if t.seq_len > self.model.n_ctx {
            return bad("train.seq_len", format!("{} exceeds model.n_ctx {}", t.seq_len, self.model.n_ctx));
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return bad("train.lr", format!("{} must be a finite number > 0", t.lr));
        }
        if !(0.0..=1.0).contains(&t.min_lr_ratio) {
            return bad("train.min_lr_ratio", format!("{} must be in [0, 1]", t.min_lr_ratio));
        }
        if !(t.weight_decay >= 0.0 && t.weight_decay.is_finite()) {
            return bad("train.weight_decay", format!("{} must be a finite number ≥ 0", t.weight_decay));
        }
        for (f, v) in [("train.beta1", t.beta1), ("train.beta2", t.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return bad(f, format!("{v} must be in [0, 1)"));
            }
        }
        if !(t.eps > 0.0 && t.eps.is_finite()) {
            return bad("train.eps", format!("{} must be a finite number > 0", t.eps));
        }
        if !(t.grad_clip >= 0.0 && t.grad_clip.is_finite()) {
            return bad("train.grad_clip", format!("{} must be a finite number ≥ 0 (0 = no clipping)", t.grad_clip));
        }
        let d = &self.data;
        if d.source.is_empty() {
            return bad("data.source", "must be \"synthetic\" or a path".into());
        }
        if d.is_synthetic() && d.synthetic_bytes == 0 {
            return bad("data.synthetic_bytes", "must be > 0".into());
        }
        if d.tokenizer.is_empty() {
            return bad("data.tokenizer", "must be \"byte\" or a path to tokenizer.json".into());
        }
        if d.encoding == TextEncoding::Bytes && !d.is_byte_tokenizer() {
            return bad(
                "data.encoding",
                format!(
                    "\"bytes\" needs the byte tokenizer; data.tokenizer is {} (use \"utf-8-lossy\", \"cp1252\" or \"latin-1\")",
                    d.tokenizer
                ),
            );
        }
        if !(d.val_fraction > 0.0 && d.val_fraction < 1.0) {
            return bad("data.val_fraction", format!("{} must be strictly between 0 and 1", d.val_fraction));
        }
        if d.is_byte_tokenizer() && self.model.n_vocab < 256 {
            return bad("model.n_vocab", format!("{} is smaller than the byte tokenizer's 256 tokens", self.model.n_vocab));
        }
        Ok(())
    }

    /// The config as TOML with every default filled in (for `config.resolved.toml`).
    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot serialise config: {e}\n"))
    }
}

/// Deserialize one optional section; errors name the offending key as `section.key`.
fn section<T: DeserializeOwned + Default>(t: &mut toml::Table, name: &str, path: &Path) -> Result<T> {
    let Some(v) = t.remove(name) else { return Ok(T::default()) };
    let toml::Value::Table(tab) = v else {
        return Err(Error::Config { path: path.to_path_buf(), field: name.into(), reason: "must be a table".into() });
    };
    let parse = |t: &toml::Table| toml::Value::Table(t.clone()).try_into::<T>().map_err(|e| e.message().to_string());
    parse(&tab).map_err(|msg| {
        let field = error_field(&tab, &|t| parse(t).map(|_| ()), &msg, name);
        Error::Config { path: path.to_path_buf(), field, reason: msg }
    })
}

/// The dotted name of the key a deserialisation error `msg` of the table `tab` (the section
/// `name`) is about: the key named by an "unknown field" message, else the (nested) key whose
/// removal changes the error.
fn error_field(tab: &toml::Table, parse: &dyn Fn(&toml::Table) -> std::result::Result<(), String>, msg: &str, name: &str) -> String {
    if let Some(k) = quoted_field(msg, "unknown field `").or_else(|| quoted_field(msg, "missing field `")) {
        // the key may sit in a nested table (`model.moe.x`): find which one
        let path = locate(tab, parse, msg, &[], true);
        let mut parts = vec![name.to_string()];
        parts.extend(path);
        parts.push(k.to_string());
        return parts.join(".");
    }
    let path = locate(tab, parse, msg, &[], false);
    std::iter::once(name.to_string()).chain(path).collect::<Vec<_>>().join(".")
}

/// Walk down `prefix` (all tables) from `t`.
fn sub_table<'a>(mut t: &'a toml::Table, prefix: &[String]) -> Option<&'a toml::Table> {
    for p in prefix {
        t = t.get(p)?.as_table()?;
    }
    Some(t)
}

/// Find the key path under `prefix` whose removal changes the error `orig` of `parse` (only
/// through nested tables when `tables_only`).
fn locate(
    root: &toml::Table,
    parse: &dyn Fn(&toml::Table) -> std::result::Result<(), String>,
    orig: &str,
    prefix: &[String],
    tables_only: bool,
) -> Vec<String> {
    let Some(sub) = sub_table(root, prefix) else { return prefix.to_vec() };
    for (k, v) in sub {
        if tables_only && !v.is_table() {
            continue;
        }
        let mut r2 = root.clone();
        let mut t2 = &mut r2;
        for p in prefix {
            match t2.get_mut(p).and_then(|x| x.as_table_mut()) {
                Some(x) => t2 = x,
                None => return prefix.to_vec(),
            }
        }
        t2.remove(k);
        if parse(&r2).err().as_deref() != Some(orig) {
            let mut path = prefix.to_vec();
            path.push(k.clone());
            if v.is_table() {
                return locate(root, parse, orig, &path, tables_only);
            }
            return path;
        }
    }
    prefix.to_vec()
}

/// The key named in a serde message starting with `prefix`, e.g. "unknown field `x`".
fn quoted_field<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    msg.strip_prefix(prefix)?.split('`').next()
}

/// Attach the config file to a model config error.
fn model_err(e: moe_model::Error, path: &Path) -> Error {
    match e {
        moe_model::Error::InvalidConfig { field, reason } => Error::Config { path: path.to_path_buf(), field, reason },
        moe_model::Error::ConfigParse { message, .. } => {
            let msg = message.strip_prefix("[model]: ").unwrap_or(&message).to_string();
            Error::Config { path: path.to_path_buf(), field: "model".into(), reason: msg }
        }
        other => Error::Model(other),
    }
}

/// Apply one `key=value` override (dotted key, value a TOML literal or else a string) to a tree.
pub fn apply_override(root: &mut toml::Value, item: &str) -> Result<()> {
    let err = |reason: String| Error::Override { item: item.to_string(), reason };
    let (key, value) = item.split_once('=').ok_or_else(|| err("expected key=value, e.g. train.lr=1e-3".into()))?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').map(str::trim).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(err(format!("`{key}` is not a dotted key like train.lr")));
    }
    let value = parse_literal(value.trim());
    let mut cur = root;
    for (i, p) in parts.iter().enumerate() {
        let toml::Value::Table(t) = cur else {
            return Err(err(format!("`{}` is not a table", parts[..i].join("."))));
        };
        if i + 1 == parts.len() {
            t.insert(p.to_string(), value);
            return Ok(());
        }
        cur = t.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    unreachable!("the key has at least one part")
}

/// A TOML literal (`1e-3`, `true`, `[1, 2]`, `"x"`), or the text itself as a string.
fn parse_literal(s: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {s}")) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(s.to_string())),
        Err(_) => toml::Value::String(s.to_string()),
    }
}

/// Read an experiment TOML, apply `overrides` (`train.lr=1e-3`, `model.moe.n_expert=4`) and
/// validate it. Returns the config and the raw (overridden) TOML tree.
pub fn load_experiment(path: &Path, overrides: &[String]) -> Result<(ExperimentConfig, toml::Value)> {
    let text = std::fs::read_to_string(path).map_err(crate::error::io(path, "cannot read config"))?;
    parse_experiment(&text, path, overrides)
}

/// Like [`load_experiment`] from text; `path` only names the source in errors.
pub fn parse_experiment(text: &str, path: &Path, overrides: &[String]) -> Result<(ExperimentConfig, toml::Value)> {
    let mut v: toml::Value = toml::from_str(text)
        .map_err(|e: toml::de::Error| Error::ConfigParse { path: path.to_path_buf(), message: e.to_string().trim_end().to_string() })?;
    for o in overrides {
        apply_override(&mut v, o)?;
    }
    let cfg = ExperimentConfig::from_toml_value(v.clone(), path)?;
    Ok((cfg, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[model]\nn_vocab = 256\nn_ctx = 32\nn_layer = 2\nd_model = 32\nn_head = 4\nn_head_kv = 2\nd_ff = 64\n\n[train]\nsteps = 10\nseq_len = 16\n";

    fn parse(text: &str, ov: &[&str]) -> Result<ExperimentConfig> {
        let ov: Vec<String> = ov.iter().map(|s| s.to_string()).collect();
        parse_experiment(text, Path::new("configs/x.toml"), &ov).map(|(c, _)| c)
    }

    #[test]
    fn config_defaults_are_filled_in() {
        let c = parse(BASE, &[]).unwrap();
        assert_eq!(c.train.steps, 10);
        assert_eq!(c.train.batch_size, 8);
        assert_eq!(c.train.lr, 3e-4);
        assert_eq!(c.data, DataConfig::default());
        assert!(c.model.moe.is_none());
    }

    #[test]
    fn config_overrides_set_values_and_create_tables() {
        let c = parse(
            BASE,
            &[
                "train.lr=1e-3",
                "train.batch_size = 4",
                "data.source=some/dir",
                "model.moe.n_expert=4",
                "model.moe.n_expert_active=2",
                "model.moe.d_expert=16",
                "train.decay_embeddings=true",
            ],
        )
        .unwrap();
        assert_eq!(c.train.lr, 1e-3);
        assert_eq!(c.train.batch_size, 4);
        assert_eq!(c.data.source, "some/dir");
        assert!(c.train.decay_embeddings);
        let m = c.model.moe.unwrap();
        assert_eq!((m.n_expert, m.n_expert_active, m.d_expert), (4, 2, 16));
    }

    #[test]
    fn config_override_malformed_is_error() {
        let e = parse(BASE, &["train.lr"]).unwrap_err().to_string();
        assert!(e.contains("train.lr") && e.contains("key=value"), "{e}");
        let e = parse(BASE, &["train..lr=1"]).unwrap_err().to_string();
        assert!(e.contains("dotted"), "{e}");
        let e = parse(BASE, &["train.steps.x=1"]).unwrap_err().to_string();
        assert!(e.contains("train.steps") && e.contains("not a table"), "{e}");
    }

    #[test]
    fn config_unknown_keys_name_the_field() {
        let e = parse(BASE, &["train.lrr=1"]).unwrap_err().to_string();
        assert!(e.starts_with("configs/x.toml: train.lrr: unknown field"), "{e}");
        let e = parse(BASE, &["model.d_modle=3"]).unwrap_err().to_string();
        assert!(e.starts_with("configs/x.toml: model.d_modle"), "{e}");
        let e = parse(BASE, &["data.sauce=x"]).unwrap_err().to_string();
        assert!(e.contains("data.sauce"), "{e}");
        let e = parse(&format!("{BASE}[extra]\na = 1\n"), &[]).unwrap_err().to_string();
        assert!(e.contains("configs/x.toml: extra: unknown table"), "{e}");
    }

    #[test]
    fn config_bad_values_name_file_and_field() {
        let e = parse(BASE, &["train.seq_len=512"]).unwrap_err().to_string();
        assert_eq!(e, "configs/x.toml: train.seq_len: 512 exceeds model.n_ctx 32");
        for (o, field) in [
            ("train.batch_size=0", "train.batch_size"),
            ("train.steps=0", "train.steps"),
            ("train.lr=0", "train.lr"),
            ("train.lr=-1", "train.lr"),
            ("data.val_fraction=1.0", "data.val_fraction"),
            ("data.val_fraction=-0.1", "data.val_fraction"),
            ("train.beta2=1.0", "train.beta2"),
            ("model.n_head=5", "model.n_head"),
            ("model.n_vocab=64", "model.n_vocab"),
        ] {
            let e = parse(BASE, &[o]).unwrap_err().to_string();
            assert!(e.starts_with(&format!("configs/x.toml: {field}: ")), "{o}: {e}");
        }
        let e = parse(BASE, &["train.lr=\"fast\""]).unwrap_err().to_string();
        assert!(e.starts_with("configs/x.toml: train.lr: invalid type"), "{e}");
        let e = parse(BASE, &["data.encoding=\"bytes\"", "data.tokenizer=tok/tokenizer.json"]).unwrap_err().to_string();
        assert!(
            e.starts_with("configs/x.toml: data.encoding: \"bytes\" needs the byte tokenizer") && e.contains("tok/tokenizer.json"),
            "{e}"
        );
        assert_eq!(parse(BASE, &["data.encoding=\"bytes\""]).unwrap().data.text_encoding(), TextEncoding::Bytes);
        assert_eq!(parse(BASE, &["data.encoding=\"cp1252\""]).unwrap().data.text_encoding(), TextEncoding::Cp1252);
        assert_eq!(parse(BASE, &[]).unwrap().data.text_encoding(), TextEncoding::Bytes, "auto with the byte tokenizer");
        assert_eq!(parse(BASE, &["data.tokenizer=t.json"]).unwrap().data.text_encoding(), TextEncoding::Utf8Lossy, "auto with BPE");
        let e = parse(BASE, &["data.encoding=\"ebcdic\""]).unwrap_err().to_string();
        assert!(e.starts_with("configs/x.toml: data.encoding: unknown variant `ebcdic`") && e.contains("utf-8-lossy"), "{e}");
        let e = parse(BASE, &["data.val_fraction=[1]"]).unwrap_err().to_string();
        assert!(e.starts_with("configs/x.toml: data.val_fraction: invalid type"), "{e}");
        let e = parse(BASE, &["model.d_model=\"big\""]).unwrap_err().to_string();
        assert!(e.starts_with("configs/x.toml: model.d_model: invalid type"), "{e}");
        let e = parse(BASE, &["model.moe.n_expert=4", "model.moe.n_expert_active=2", "model.moe.d_expert=16", "model.moe.gating=\"max\""])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("configs/x.toml: model.moe.gating: unknown variant"), "{e}");
        let e = parse(BASE, &["model.moe.n_expert=4", "model.moe.n_expert_active=2"]).unwrap_err().to_string();
        assert!(e.starts_with("configs/x.toml: model.moe.d_expert: missing field"), "{e}");
        let e = parse(&BASE.replace("d_ff = 64\n", ""), &[]).unwrap_err().to_string();
        assert!(e.starts_with("configs/x.toml: model.d_ff: missing field"), "{e}");
        let e = parse(BASE, &["model.moe.n_expert=4", "model.moe.n_expert_active=2", "model.moe.d_expert=16", "model.moe.n_exprt=2"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("configs/x.toml: model.moe.n_exprt: unknown field"), "{e}");
        let e = parse("[model\n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("configs/x.toml: "), "{e}");
        let e = parse("[train]\nsteps = 1\n", &[]).unwrap_err().to_string();
        assert!(e.contains("model") && e.contains("missing"), "{e}");
    }

    #[test]
    fn config_resolved_toml_roundtrips() {
        let c = parse(BASE, &["model.moe.n_expert=4", "model.moe.n_expert_active=2", "model.moe.d_expert=16"]).unwrap();
        let s = c.to_toml_string();
        assert!(s.contains("synthetic_bytes") && s.contains("warmup_steps"), "{s}");
        let back = parse(&s, &[]).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn config_missing_file_names_it() {
        let e = load_experiment(Path::new("/nonexistent/x.toml"), &[]).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/x.toml"), "{e}");
    }
}
