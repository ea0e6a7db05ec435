//! Prometheus metrics, hand-written: counters and gauges are atomics, histograms are
//! fixed buckets of atomics, and `/metrics` renders the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Latency buckets in seconds (upper bounds).
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub struct Histogram {
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: LATENCY_BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| s <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in LATENCY_BUCKETS.iter().zip(&self.counts) {
            cum += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Everything `/metrics` reports.
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Requests accepted but not yet running (also the bound checked for 429).
    pub queue_depth: AtomicUsize,
    pub running: AtomicUsize,
    pub ttft: Histogram,
    pub itl: Histogram,
    pub prompt_tokens: AtomicU64,
    pub cached_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub scheduler_restarts: AtomicU64,
    /// Batched forward passes run, and the tokens they carried.
    pub batch_passes: AtomicU64,
    pub batch_tokens: AtomicU64,
    /// KV-cache memory held by sessions, and its configured limit.
    pub kv_bytes: AtomicU64,
    pub kv_limit_bytes: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            queue_depth: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            ttft: Histogram::new(),
            itl: Histogram::new(),
            prompt_tokens: AtomicU64::new(0),
            cached_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            scheduler_restarts: AtomicU64::new(0),
            batch_passes: AtomicU64::new(0),
            batch_tokens: AtomicU64::new(0),
            kv_bytes: AtomicU64::new(0),
            kv_limit_bytes: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn record_request(&self, route: &'static str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route, status)).or_insert(0) += 1;
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP thaw_http_requests_total HTTP requests by route and status.\n# TYPE thaw_http_requests_total counter"
        );
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "thaw_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "thaw_queue_depth",
            "Requests waiting to be scheduled.",
            self.queue_depth.load(Ordering::Relaxed) as f64,
        );
        gauge(
            &mut out,
            "thaw_running_sequences",
            "Sequences being prefilled or decoded.",
            self.running.load(Ordering::Relaxed) as f64,
        );
        self.ttft.render(
            &mut out,
            "thaw_time_to_first_token_seconds",
            "From request arrival to the first generated token.",
        );
        self.itl.render(
            &mut out,
            "thaw_inter_token_latency_seconds",
            "Time between consecutive generated tokens of one sequence.",
        );
        let prompt = self.prompt_tokens.load(Ordering::Relaxed);
        let cached = self.cached_tokens.load(Ordering::Relaxed);
        counter(
            &mut out,
            "thaw_prompt_tokens_total",
            "Prompt tokens of scheduled requests.",
            prompt,
        );
        counter(
            &mut out,
            "thaw_prompt_tokens_cached_total",
            "Prompt tokens whose KV state was reused from an earlier request.",
            cached,
        );
        counter(
            &mut out,
            "thaw_generated_tokens_total",
            "Generated tokens.",
            self.generated_tokens.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "thaw_prefix_cache_hit_ratio",
            "Cached prompt tokens / prompt tokens, since start.",
            if prompt == 0 {
                0.0
            } else {
                cached as f64 / prompt as f64
            },
        );
        counter(
            &mut out,
            "thaw_batch_passes_total",
            "Batched forward passes (one per scheduler step with work).",
            self.batch_passes.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "thaw_batch_tokens_total",
            "Tokens carried by batched forward passes (decode steps and prompt chunks).",
            self.batch_tokens.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "thaw_kv_cache_bytes",
            "KV-cache memory allocated to sessions.",
            self.kv_bytes.load(Ordering::Relaxed) as f64,
        );
        gauge(
            &mut out,
            "thaw_kv_cache_limit_bytes",
            "Configured KV-cache memory limit (--kv-memory).",
            self.kv_limit_bytes.load(Ordering::Relaxed) as f64,
        );
        counter(
            &mut out,
            "thaw_scheduler_restarts_total",
            "Times the scheduler thread recovered from a panic.",
            self.scheduler_restarts.load(Ordering::Relaxed),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.ttft.observe(Duration::from_millis(3));
        m.ttft.observe(Duration::from_millis(70));
        m.record_request("/v1/models", 200);
        let text = m.render();
        assert!(text.contains("thaw_time_to_first_token_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("thaw_time_to_first_token_seconds_bucket{le=\"0.1\"} 2"));
        assert!(text.contains("thaw_time_to_first_token_seconds_count 2"));
        assert!(text.contains("thaw_http_requests_total{route=\"/v1/models\",status=\"200\"} 1"));
    }
}
