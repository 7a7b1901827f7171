//! Times forward+backward of one training step on a config's model (random tokens) and prints
//! a breakdown against the machine's f32 GEMM peak. `cargo run --release -p moe-model --example
//! step_timing -- configs/bench-small-moe.toml 8 256`
use moe_model::{accounting::account, ModelConfig, Transformer};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let text = std::fs::read_to_string(&args[1]).expect("config file");
    let v: toml::Value = toml::from_str(&text).expect("toml");
    let cfg = ModelConfig::from_toml_value(v["model"].clone()).expect("model config");
    let b: usize = args.get(2).map_or(8, |s| s.parse().unwrap());
    let t: usize = args.get(3).map_or(256, |s| s.parse().unwrap());
    let model: Transformer = Transformer::new(cfg.clone(), 1).unwrap();
    let n = b * t;
    let inputs: Vec<u32> = (0..n).map(|i| ((i * 7919) % cfg.n_vocab) as u32).collect();
    let targets: Vec<u32> = (0..n).map(|i| ((i * 104729 + 3) % cfg.n_vocab) as u32).collect();
    let mut grads = vec![0.0f32; model.params.len()];
    let peak = moe_kernels::peak::gemm_peak_gflops(2048, 3);
    let acc = account(&cfg, t);
    for it in 0..4 {
        let t0 = Instant::now();
        let rep = model.forward_backward(&inputs, &targets, b, t, &mut grads, 1.0).unwrap();
        let dt = t0.elapsed().as_secs_f64();
        let gf = acc.flops_train * n as f64 / dt / 1e9;
        println!("iter {it}: {dt:.3}s loss {:.4} tok/s {:.0} GFLOP/s {gf:.1} ({:.0}% of GEMM peak {peak:.1})", rep.loss, n as f64 / dt, 100.0 * gf / peak);
    }
    let t0 = Instant::now();
    let _ = model.forward(&inputs, b, t).unwrap();
    println!("forward only: {:.3}s", t0.elapsed().as_secs_f64());
}
