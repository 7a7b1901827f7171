//! Golden tests: our forward/backward against the PyTorch peer (`reference/gen_golden.py`).
//! Fixtures live in `tests/golden/<case>/` with tolerances in `tests/golden/MANIFEST.json`.

use moe_model::checkpoint::tensor_f32;
use moe_model::{ModelConfig, Transformer};
use safetensors::SafeTensors;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden")
}

struct Case {
    name: String,
    dir: PathBuf,
    cfg: ModelConfig,
    batch: usize,
    seq: usize,
    tol: Value,
    min_margin: f64,
}

fn cases() -> Vec<Case> {
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(golden_dir().join("MANIFEST.json")).unwrap()).unwrap();
    manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap().to_string();
            let dir = golden_dir().join(&name);
            let text = std::fs::read_to_string(dir.join("config.toml")).unwrap();
            let v: toml::Value = toml::from_str(&text).unwrap();
            let cfg = ModelConfig::from_toml_value(v["model"].clone()).unwrap();
            let batch = v["golden"]["batch_size"].as_integer().unwrap() as usize;
            let seq = v["golden"]["seq_len"].as_integer().unwrap() as usize;
            Case { name, dir, cfg, batch, seq, tol: c["tolerances"].clone(), min_margin: c["min_margin"].as_f64().unwrap() }
        })
        .collect()
}

fn read_i64(st: &SafeTensors<'_>, name: &str) -> Vec<i64> {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("missing {name}"));
    t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
}

fn f(st: &SafeTensors<'_>, name: &str, path: &Path) -> Vec<f32> {
    tensor_f32(st, name, path).unwrap_or_else(|e| panic!("{e}")).1
}

/// `|got_i − want_i| ≤ atol + rtol·|want_i|` for every `i`; a non-finite value fails (`moe_testutil::assert_close_elem`).
#[track_caller]
fn assert_close(case: &str, what: &str, got: &[f64], want: &[f32], atol: f64, rtol: f64) {
    moe_testutil::assert_close_elem(&format!("{case}: {what}"), got, want, atol, rtol);
}

fn tol(c: &Case, key: &str) -> (f64, f64) {
    (c.tol[key]["atol"].as_f64().unwrap(), c.tol[key]["rtol"].as_f64().unwrap())
}

#[test]
fn golden_forward_backward_matches_pytorch() {
    let cs = cases();
    assert!(cs.len() >= 4, "expected at least 4 golden cases");
    for c in cs {
        let wpath = c.dir.join("weights.safetensors");
        let model: Transformer<f32> = Transformer::load(c.cfg.clone(), &wpath).unwrap();
        let ibytes = std::fs::read(c.dir.join("inputs.safetensors")).unwrap();
        let ist = SafeTensors::deserialize(&ibytes).unwrap();
        let inputs: Vec<u32> = read_i64(&ist, "inputs").iter().map(|&v| v as u32).collect();
        let targets: Vec<u32> = read_i64(&ist, "targets").iter().map(|&v| v as u32).collect();
        let epath = c.dir.join("expected.safetensors");
        let ebytes = std::fs::read(&epath).unwrap();
        let est = SafeTensors::deserialize(&ebytes).unwrap();

        // logits and routing
        let out = model.forward(&inputs, c.batch, c.seq).unwrap();
        let (la, lr) = tol(&c, "logits");
        let logits: Vec<f64> = out.logits.iter().map(|&v| v as f64).collect();
        assert_close(&c.name, "logits", &logits, &f(&est, "logits", &epath), la, lr);
        let (ra, rr) = tol(&c, "routing");
        for r in &out.routing {
            let i = r.layer;
            let k = r.routing.settings.k;
            let idx = read_i64(&est, &format!("router.{i}.topk_idx"));
            let margin = f(&est, &format!("router.{i}.margin"), &epath);
            let kept = f(&est, &format!("router.{i}.kept"), &epath);
            let w = f(&est, &format!("router.{i}.topk_weight"), &epath);
            let mut compared = 0;
            assert_eq!(margin.len(), r.routing.n_tok, "{}: layer {i}: one margin per token", c.name);
            for (t, &mg) in margin.iter().enumerate() {
                if (mg as f64) < c.min_margin {
                    continue;
                }
                compared += 1;
                for s in 0..k {
                    let a = t * k + s;
                    assert_eq!(r.routing.idx[a] as i64, idx[a], "{}: layer {i} token {t} slot {s}: expert", c.name);
                    assert_eq!(r.routing.kept[a], kept[a] > 0.5, "{}: layer {i} token {t} slot {s}: kept", c.name);
                    let (g, want) = (r.routing.weight[a] as f64, w[a] as f64);
                    assert!((g - want).abs() <= ra + rr * want.abs(), "{}: layer {i} token {t} slot {s}: weight {g} vs {want}", c.name);
                }
            }
            assert!(compared > 0, "{}: every token skipped as a near-tie", c.name);
            let counts = f(&est, &format!("router.{i}.counts"), &epath);
            let ours: Vec<f32> = r.routing.counts.iter().map(|&v| v as f32).collect();
            assert_eq!(ours, counts, "{}: layer {i}: counts", c.name);
        }

        // losses and gradients
        let mut grads = vec![0.0f32; model.params.len()];
        let rep = model.forward_backward(&inputs, &targets, c.batch, c.seq, &mut grads, 1.0).unwrap();
        let (a, r) = tol(&c, "loss");
        assert_close(&c.name, "loss", &[rep.loss], &f(&est, "loss", &epath), a, r);
        assert_close(&c.name, "ce", &[rep.ce], &f(&est, "ce", &epath), a, r);
        for m in &rep.moe {
            assert_close(&c.name, &format!("aux.{}", m.layer), &[m.aux.aux], &f(&est, &format!("aux.{}", m.layer), &epath), a, r);
            assert_close(&c.name, &format!("z.{}", m.layer), &[m.aux.z], &f(&est, &format!("z.{}", m.layer), &epath), a, r);
        }
        let grtol = c.tol["grads"]["rtol"].as_f64().unwrap();
        for e in &model.table.entries {
            let want = f(&est, &format!("grad.{}", e.name), &epath);
            let got = &grads[e.range()];
            let d = moe_testutil::checked_diff(&format!("{}: grad.{}", c.name, e.name), got, &want);
            let (max_ref, max_err) = (d.scale, d.max_abs);
            assert!(max_err <= grtol * max_ref + 1e-12, "{}: grad.{}: max error {max_err} vs max |ref| {max_ref}", c.name, e.name);
        }
    }
}
