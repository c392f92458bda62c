//! Prometheus metrics of the operator: reconciles, failures by error label, duration.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Instant;

/// Labels of a failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The error's fixed label.
    pub error: &'static str,
}

/// Reconcile metrics.
pub struct ReconcileMetrics {
    /// Reconciles started.
    pub runs: Counter,
    /// Failures by error label.
    pub failures: Family<ErrorLabels, Counter>,
    /// Reconcile duration.
    pub duration: Histogram,
}

impl ReconcileMetrics {
    /// Counts a failure.
    pub fn failed(&self, error: &'static str) {
        self.failures.get_or_create(&ErrorLabels { error }).inc();
    }

    /// A timer that records the reconcile's duration when dropped.
    pub fn timer(&self) -> Timer<'_> {
        Timer {
            started: Instant::now(),
            histogram: &self.duration,
        }
    }
}

/// Records on drop, so every way out of a reconcile is measured.
pub struct Timer<'a> {
    started: Instant,
    histogram: &'a Histogram,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

/// Every metric of the operator.
pub struct Metrics {
    /// For `/metrics`.
    pub registry: Registry,
    /// Reconciles.
    pub reconcile: ReconcileMetrics,
    /// 1 while this replica leads.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers the metrics under `oms_operator`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("oms_operator");
        let reconcile = ReconcileMetrics {
            runs: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        };
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles started", reconcile.runs.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles failed, by error",
            reconcile.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            reconcile.duration.clone(),
        );
        registry.register("leader", "1 while this replica leads", leader.clone());
        Metrics {
            registry,
            reconcile,
            leader,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
