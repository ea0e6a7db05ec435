//! Gateway metrics in Prometheus text: requests, cold starts (count and a duration
//! histogram per step), replicas by state, queue depth, scale events, crashes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::pool::ReplicaState;
use crate::replica::StartSteps;

const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    n: u64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (c, b) in self.counts.iter_mut().zip(BUCKETS) {
            if secs <= b {
                *c += 1;
            }
        }
        self.sum += secs;
        self.n += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (c, b) in self.counts.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.n);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.n);
    }
}

#[derive(Default)]
struct Inner {
    /// (deployment, status) → count.
    requests: BTreeMap<(String, u16), u64>,
    /// (deployment, step) → histogram; steps: spawn, ready, total, first_token.
    cold: BTreeMap<(String, &'static str), Histogram>,
    cold_starts: BTreeMap<String, u64>,
    start_failures: BTreeMap<String, u64>,
    crashes: BTreeMap<String, u64>,
    scale: BTreeMap<(String, &'static str), u64>,
    replicas: BTreeMap<(String, &'static str), usize>,
    waiting: BTreeMap<String, usize>,
    tokens: BTreeMap<(String, &'static str), u64>,
}

#[derive(Default)]
pub struct Metrics(Mutex<Inner>);

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn request(&self, deployment: &str, status: u16) {
        *self
            .lock()
            .requests
            .entry((deployment.into(), status))
            .or_default() += 1;
    }

    pub fn tokens(&self, deployment: &str, prompt: u64, completion: u64) {
        let mut m = self.lock();
        *m.tokens.entry((deployment.into(), "prompt")).or_default() += prompt;
        *m.tokens
            .entry((deployment.into(), "completion"))
            .or_default() += completion;
    }

    pub fn cold_start(&self, deployment: &str, steps: StartSteps) {
        let mut m = self.lock();
        *m.cold_starts.entry(deployment.into()).or_default() += 1;
        for (step, d) in [
            ("spawn", steps.spawn),
            ("ready", steps.ready),
            ("total", steps.spawn + steps.ready),
        ] {
            m.cold
                .entry((deployment.into(), step))
                .or_default()
                .observe(d.as_secs_f64());
        }
    }

    /// Arrival of a cold request to its first byte from the replica.
    pub fn cold_first_token(&self, deployment: &str, d: Duration) {
        self.lock()
            .cold
            .entry((deployment.into(), "first_token"))
            .or_default()
            .observe(d.as_secs_f64());
    }

    pub fn start_failure(&self, deployment: &str) {
        *self
            .lock()
            .start_failures
            .entry(deployment.into())
            .or_default() += 1;
    }

    pub fn crash(&self, deployment: &str) {
        *self.lock().crashes.entry(deployment.into()).or_default() += 1;
    }

    pub fn scale_event(&self, deployment: &str, direction: &'static str) {
        *self
            .lock()
            .scale
            .entry((deployment.into(), direction))
            .or_default() += 1;
    }

    pub fn set_replicas(&self, deployment: &str, counts: &[(ReplicaState, usize)]) {
        let mut m = self.lock();
        for (s, n) in counts {
            let label = match s {
                ReplicaState::Starting => "starting",
                ReplicaState::Ready => "ready",
                ReplicaState::Draining => "draining",
            };
            m.replicas.insert((deployment.into(), label), *n);
        }
    }

    pub fn set_waiting(&self, deployment: &str, n: usize) {
        self.lock().waiting.insert(deployment.into(), n);
    }

    /// Forget a deleted deployment's gauges.
    pub fn forget(&self, deployment: &str) {
        let mut m = self.lock();
        m.replicas.retain(|(d, _), _| d != deployment);
        m.waiting.remove(deployment);
    }

    pub fn render(&self) -> String {
        let m = self.lock();
        let mut o = String::new();
        let counter = |o: &mut String, name: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        };
        counter(
            &mut o,
            "thaw_gateway_requests_total",
            "Requests by deployment and HTTP status.",
        );
        for ((d, s), n) in &m.requests {
            let _ = writeln!(
                o,
                "thaw_gateway_requests_total{{deployment=\"{}\",status=\"{s}\"}} {n}",
                esc(d)
            );
        }
        counter(
            &mut o,
            "thaw_gateway_tokens_total",
            "Metered tokens by deployment and kind.",
        );
        for ((d, k), n) in &m.tokens {
            let _ = writeln!(
                o,
                "thaw_gateway_tokens_total{{deployment=\"{}\",kind=\"{k}\"}} {n}",
                esc(d)
            );
        }
        counter(
            &mut o,
            "thaw_cold_starts_total",
            "Replica starts by deployment.",
        );
        for (d, n) in &m.cold_starts {
            let _ = writeln!(o, "thaw_cold_starts_total{{deployment=\"{}\"}} {n}", esc(d));
        }
        let _ = writeln!(
            o,
            "# HELP thaw_cold_start_seconds Cold start duration by step (spawn, ready, total; first_token = request arrival to first byte).\n# TYPE thaw_cold_start_seconds histogram"
        );
        for ((d, step), h) in &m.cold {
            h.render(
                &mut o,
                "thaw_cold_start_seconds",
                &format!("deployment=\"{}\",step=\"{step}\"", esc(d)),
            );
        }
        counter(
            &mut o,
            "thaw_replica_start_failures_total",
            "Replica starts that failed.",
        );
        for (d, n) in &m.start_failures {
            let _ = writeln!(
                o,
                "thaw_replica_start_failures_total{{deployment=\"{}\"}} {n}",
                esc(d)
            );
        }
        counter(
            &mut o,
            "thaw_replica_crashes_total",
            "Replicas that exited unexpectedly.",
        );
        for (d, n) in &m.crashes {
            let _ = writeln!(
                o,
                "thaw_replica_crashes_total{{deployment=\"{}\"}} {n}",
                esc(d)
            );
        }
        counter(
            &mut o,
            "thaw_scale_events_total",
            "Replicas started (up) and stopped (down).",
        );
        for ((d, dir), n) in &m.scale {
            let _ = writeln!(
                o,
                "thaw_scale_events_total{{deployment=\"{}\",direction=\"{dir}\"}} {n}",
                esc(d)
            );
        }
        let _ = writeln!(
            o,
            "# HELP thaw_replicas Replicas by state.\n# TYPE thaw_replicas gauge"
        );
        for ((d, s), n) in &m.replicas {
            let _ = writeln!(
                o,
                "thaw_replicas{{deployment=\"{}\",state=\"{s}\"}} {n}",
                esc(d)
            );
        }
        let _ = writeln!(
            o,
            "# HELP thaw_gateway_queue_depth Requests waiting for a replica.\n# TYPE thaw_gateway_queue_depth gauge"
        );
        for (d, n) in &m.waiting {
            let _ = writeln!(
                o,
                "thaw_gateway_queue_depth{{deployment=\"{}\"}} {n}",
                esc(d)
            );
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.cold_start(
            "a",
            StartSteps {
                spawn: Duration::from_millis(2),
                ready: Duration::from_millis(30),
            },
        );
        let t = m.render();
        assert!(t.contains("thaw_cold_starts_total{deployment=\"a\"} 1"));
        assert!(t.contains(
            "thaw_cold_start_seconds_bucket{deployment=\"a\",step=\"spawn\",le=\"0.005\"} 1"
        ));
        assert!(t.contains(
            "thaw_cold_start_seconds_bucket{deployment=\"a\",step=\"total\",le=\"0.025\"} 0"
        ));
        assert!(t.contains(
            "thaw_cold_start_seconds_bucket{deployment=\"a\",step=\"total\",le=\"0.05\"} 1"
        ));
        assert!(t.contains("thaw_scale_events_total"));
    }
}
