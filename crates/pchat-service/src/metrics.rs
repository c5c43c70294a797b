//! Prometheus metrics of the service: connections, posts, commit latency (the durable write as the service waits
//! for it), delivery latency (commit to the frame being written to a client's socket), slow-consumer drops and
//! refused posts. One registry per service, passed explicitly: no global state.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::time::now_micros;

pub struct Metrics {
    registry: Registry,
    pub(crate) posts: Counter,
    pub(crate) rate_limited: Counter,
    pub(crate) compliance_archived: Counter,
    pub(crate) compliance_exported: Counter,
    pub(crate) compliance_export_failures: Counter,
    pub(crate) compliance_export_failing: Gauge,
    pub(crate) commit_seconds: Histogram,
    delivery_seconds: Histogram,
    pub(crate) slow_consumer_drops: Counter,
    connections: Gauge,
    connections_refused: Counter,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("pchat");
        let posts = Counter::default();
        let rate_limited = Counter::default();
        let compliance_archived = Counter::default();
        let compliance_exported = Counter::default();
        let compliance_export_failures = Counter::default();
        let compliance_export_failing = Gauge::default();
        // 50 µs to ~3.3 s.
        let commit_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 17));
        let delivery_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 17));
        let slow_consumer_drops = Counter::default();
        let connections = Gauge::default();
        let connections_refused = Counter::default();
        registry.register("posts", "Messages posted and durably committed", posts.clone());
        registry.register("posts_rate_limited", "Posts refused by the per-user rate limit", rate_limited.clone());
        registry.register(
            "commit_latency_seconds",
            "Time to durably commit a post, queueing included",
            commit_seconds.clone(),
        );
        registry.register(
            "delivery_latency_seconds",
            "Time from a message's commit to its frame being written to a subscriber's socket",
            delivery_seconds.clone(),
        );
        registry.register(
            "slow_consumer_drops",
            "Connections dropped from a room because their queue was full",
            slow_consumer_drops.clone(),
        );
        registry.register("connections", "Open live (WebSocket) connections", connections.clone());
        registry.register(
            "connections_refused",
            "TCP connections closed at accept because the open-files limit was reached",
            connections_refused.clone(),
        );
        registry.register(
            "compliance_archived",
            "Compliance events moved from the outbox into the archive by this server",
            compliance_archived.clone(),
        );
        registry.register(
            "compliance_exported",
            "Compliance events written to the output directory by this server's periodic export",
            compliance_exported.clone(),
        );
        registry.register(
            "compliance_export_failures",
            "Periodic compliance exports that failed (and are retried)",
            compliance_export_failures.clone(),
        );
        registry.register(
            "compliance_export_failing",
            "1 while this server's last compliance export failed, 0 once one succeeds",
            compliance_export_failing.clone(),
        );
        Self {
            registry,
            posts,
            rate_limited,
            compliance_archived,
            compliance_exported,
            compliance_export_failures,
            compliance_export_failing,
            commit_seconds,
            delivery_seconds,
            slow_consumer_drops,
            connections,
            connections_refused,
        }
    }

    /// Counts a connection closed at accept for want of descriptors.
    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    /// Records that a message committed at `ts` (server time, µs) has just been written to a subscriber.
    pub fn delivered(&self, ts: i64) {
        self.delivery_seconds.observe((now_micros() - ts).max(0) as f64 / 1_000_000.0);
    }

    /// The metrics in the Prometheus/OpenMetrics text format.
    pub fn encode(&self, connections: usize) -> String {
        self.connections.set(connections as i64);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
