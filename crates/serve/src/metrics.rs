//! Prometheus metrics through the `metrics` crate and its Prometheus exporter. Each server has its
//! own recorder (not the process-global one, so that several servers can run in one process, as
//! in the tests); everything is recorded on the engine thread.

use metrics::{counter, gauge, histogram, with_local_recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use moe_infer::StepStats;
use std::sync::Arc;
use std::time::Instant;

const LATENCY_BUCKETS: [f64; 16] = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Distinct experts touched in one layer by one step: exact for small expert counts, then coarser.
const EXPERT_BUCKETS: [f64; 20] =
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 96.0, 128.0, 192.0, 256.0, 512.0];

/// The recorder, shared by the engine thread (writes) and `/metrics` (renders).
#[derive(Clone)]
pub struct EngineMetrics {
    rec: Arc<PrometheusRecorder>,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl EngineMetrics {
    pub fn new() -> Self {
        let experts = EXPERT_BUCKETS;
        let rec = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("moe:experts_touched_per_step".into()), &experts))
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("moe:batch_size".into()), &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full("moe:weight_bytes_read_per_step".into()), &[1e5, 1e6, 1e7, 1e8, 1e9, 1e10])
            })
            .expect("non-empty bucket lists")
            .build_recorder();
        let m = EngineMetrics { rec: Arc::new(rec) };
        m.with(|| {
            metrics::describe_counter!("moe:expert_tokens_total", "tokens routed to each (MoE layer, expert)");
            metrics::describe_counter!(
                "moe:engine_tokens_total",
                "tokens through the engine's forward (prompt tokens and fed-back generated tokens)"
            );
            metrics::describe_histogram!(
                "moe:experts_touched_per_step",
                "distinct experts touched by one step in one MoE layer, labelled by batch size bucket"
            );
            metrics::describe_gauge!(
                "moe:memory_bandwidth_bytes_per_second",
                "weight bytes read per second of engine step time, last step"
            );
            counter!("moe:prompt_tokens_total").absolute(0);
            counter!("moe:generation_tokens_total").absolute(0);
            counter!("moe:engine_tokens_total").absolute(0);
            counter!("moe:request_success_total").absolute(0);
            gauge!("moe:num_requests_running").set(0.0);
            gauge!("moe:num_requests_waiting").set(0.0);
            gauge!("moe:kv_cache_usage_ratio").set(0.0);
        });
        m
    }

    fn with(&self, f: impl FnOnce()) {
        with_local_recorder(&*self.rec, f)
    }

    /// The Prometheus text.
    pub fn render(&self) -> String {
        self.handle().render()
    }

    fn handle(&self) -> PrometheusHandle {
        self.rec.handle()
    }

    pub fn gauges(&self, running: usize, waiting: usize, kv_ratio: f64) {
        self.with(|| {
            gauge!("moe:num_requests_running").set(running as f64);
            gauge!("moe:num_requests_waiting").set(waiting as f64);
            gauge!("moe:kv_cache_usage_ratio").set(kv_ratio);
        })
    }

    pub fn queue_time(&self, s: f64) {
        self.with(|| histogram!("moe:request_queue_time_seconds").record(s))
    }

    pub fn ttft(&self, s: f64) {
        self.with(|| histogram!("moe:time_to_first_token_seconds").record(s))
    }

    pub fn itl(&self, s: f64) {
        self.with(|| histogram!("moe:inter_token_latency_seconds").record(s))
    }

    pub fn finished(&self, prompt: usize, completion: usize, e2e_s: f64, started: Instant) {
        self.with(|| {
            counter!("moe:prompt_tokens_total").increment(prompt as u64);
            counter!("moe:generation_tokens_total").increment(completion as u64);
            counter!("moe:request_success_total").increment(1);
            histogram!("moe:e2e_request_latency_seconds").record(e2e_s);
            histogram!("moe:request_inference_time_seconds").record(started.elapsed().as_secs_f64());
        })
    }

    /// One engine step over `n_seq` sequences that took `secs`.
    pub fn step(&self, st: &StepStats, n_seq: usize, secs: f64) {
        let bucket = n_seq.next_power_of_two().to_string();
        self.with(|| {
            counter!("moe:engine_tokens_total").increment(st.n_tok as u64);
            counter!("moe:engine_steps_total").increment(1);
            counter!("moe:weight_bytes_read_total").increment(st.weight_bytes);
            counter!("moe:engine_flops_total").increment(st.flops);
            histogram!("moe:engine_step_seconds").record(secs);
            histogram!("moe:batch_size").record(n_seq as f64);
            histogram!("moe:weight_bytes_read_per_step").record(st.weight_bytes as f64);
            if secs > 0.0 {
                gauge!("moe:memory_bandwidth_bytes_per_second").set(st.weight_bytes as f64 / secs);
            }
            for (layer, counts) in st.expert_counts.iter().enumerate() {
                let mut touched = 0;
                for (e, &c) in counts.iter().enumerate() {
                    if c > 0 {
                        touched += 1;
                        counter!("moe:expert_tokens_total", "moe_layer" => layer.to_string(), "expert" => e.to_string())
                            .increment(c as u64);
                    }
                }
                histogram!("moe:experts_touched_per_step", "batch" => bucket.clone()).record(touched as f64);
            }
        })
    }
}
