//! Prometheus metrics: one registry, a sub-registry per subsystem.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// HTTP method, one of [`method_label`]'s.
    pub method: &'static str,
    /// The route template, such as `/v1/orders/{order_id}`.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// A method as a label value: the standard ones by name, anything a client made up as `other`,
/// so that no client can add series.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or("other")
}

/// Label naming a listening port: `api` or `admin`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// Which port.
    pub port: &'static str,
}

/// Connections of the listening ports (see [`crate::server`]).
#[derive(Clone, Default)]
pub struct ConnectionMetrics {
    /// Open connections.
    pub open: Family<ConnectionLabels, Gauge>,
    /// Connections answered 503 and closed because the port was at its cap.
    pub refused: Family<ConnectionLabels, Counter>,
    /// Connections closed by a header, idle or write timeout.
    pub timed_out: Family<ConnectionLabels, Counter>,
}

/// Label naming a consumer group.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    /// Which consumer group: processor, funds or projector.
    pub consumer: &'static str,
}

/// Label naming a role of the process (processor, projector) or a dependency it waits for.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    /// Which role.
    pub role: &'static str,
}

/// Labels naming an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// What happened.
    pub outcome: &'static str,
}

fn seconds() -> Histogram {
    // 50 µs to about 13 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// HTTP API metrics.
pub struct HttpMetrics {
    /// Requests by route and status.
    pub requests: Family<RouteLabels, Counter>,
    /// Latency by route and status.
    pub seconds: Family<RouteLabels, Histogram>,
    /// Connections.
    pub connections: ConnectionMetrics,
}

/// Journal and idempotency metrics of the write path.
pub struct IngestMetrics {
    /// Time from append to durable acknowledgement.
    pub append_seconds: Histogram,
    /// Idempotency reservations by outcome (reserved, replayed, in_flight, mismatch).
    pub idempotency: Family<OutcomeLabels, Counter>,
    /// Dependency failures answered with 503, by dependency.
    pub unavailable: Family<OutcomeLabels, Counter>,
    /// Requests refused with 429, by class (reads, writes).
    pub rate_limited: Family<OutcomeLabels, Counter>,
    /// Changes of the keys file seen, by outcome (reloaded, invalid).
    pub key_reloads: Family<OutcomeLabels, Counter>,
    /// Cancel-after deadlines that lapsed and were fired (a mass cancel journaled).
    pub cancel_after_fired: Counter,
}

/// Embedded store writer metrics.
#[derive(Clone)]
pub struct StoreMetrics {
    /// Journal batches written (single-node journal writer).
    pub commits: Counter,
    /// Of those, fsynced.
    pub fsyncs: Counter,
    /// Operations per batch.
    pub batch_size: Histogram,
    /// Time to write one batch, fsync included: the journal writer's busy time.
    pub commit_seconds: Histogram,
    /// Journal entries appended.
    pub appended: Counter,
    /// Bytes the journal writer appended (records with their headers).
    pub bytes: Counter,
    /// Time to write one projection transaction (the projection's own writer).
    pub projection_commit_seconds: Histogram,
    /// The last journal position written.
    pub head: Gauge,
}

/// Processing metrics.
pub struct ProcessingMetrics {
    /// Commands applied to books.
    pub commands: Counter,
    /// Events produced.
    pub events: Counter,
    /// Accounts-topic records (clients' commands, settlements) applied by the funds stage.
    pub funds_records: Counter,
    /// Ledger entries written (balance changes).
    pub ledger_entries: Counter,
    /// Kafka transactions committed, by stage (funds, processor).
    pub transactions: Family<RoleLabels, Counter>,
    /// Time the broker took to commit a transaction, by stage.
    pub commit_seconds: Family<RoleLabels, Histogram>,
    /// Order states written to the projection.
    pub projected_orders: Counter,
    /// Time to write one projection batch.
    pub projection_seconds: Histogram,
    /// Last journal position read.
    pub read_position: Gauge,
    /// Last journal position whose outputs the projection holds (single-node).
    pub projected_position: Gauge,
    /// Records behind the end of the log, by consumer (processor, projector).
    pub consumer_lag: Family<ConsumerLabels, Gauge>,
    /// Failures retried.
    pub errors: Counter,
    /// Log records that could not be decoded and were skipped (a version skew or corruption;
    /// any increase needs a person).
    pub undecodable: Counter,
}

/// Health of the roles this process runs (see [`crate::health`]).
pub struct RoleMetrics {
    /// 1 while the role works, 0 while it starts or fails.
    pub up: Family<RoleLabels, Gauge>,
    /// Restarts after a failure.
    pub restarts: Family<RoleLabels, Counter>,
}

/// WebSocket streams (see [`crate::streams`]).
pub struct StreamMetrics {
    /// Open stream connections.
    pub connections: Gauge,
    /// Subscriptions of the open connections.
    pub subscriptions: Gauge,
    /// Frames written to clients, by channel (and `control` for the server's own messages).
    pub sent: Family<OutcomeLabels, Counter>,
    /// Frames not delivered, by reason (`slow_consumer`: the connection was cut off).
    pub dropped: Family<OutcomeLabels, Counter>,
    /// Connections closed, by reason.
    pub disconnects: Family<OutcomeLabels, Counter>,
    /// Time from a source's commit to its frame being written to a client.
    pub delay_seconds: Histogram,
}

/// Every metric of the runtime, and the registry that exposes them.
pub struct Metrics {
    /// For `/metrics`.
    pub registry: Registry,
    /// HTTP.
    pub http: HttpMetrics,
    /// Write path.
    pub ingest: IngestMetrics,
    /// Embedded store.
    pub store: StoreMetrics,
    /// Processing.
    pub processing: ProcessingMetrics,
    /// Role health.
    pub roles: RoleMetrics,
    /// Streams.
    pub streams: StreamMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `oms` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("oms");
        let http = HttpMetrics {
            requests: Family::default(),
            seconds: Family::new_with_constructor(seconds),
            connections: ConnectionMetrics::default(),
        };
        let sub = registry.sub_registry_with_prefix("http");
        sub.register(
            "requests",
            "HTTP requests by route and status",
            http.requests.clone(),
        );
        sub.register(
            "request_duration_seconds",
            "HTTP request latency",
            http.seconds.clone(),
        );
        sub.register(
            "connections_open",
            "Open connections, by port",
            http.connections.open.clone(),
        );
        sub.register(
            "connections_refused",
            "Connections answered 503 and closed at the port's connection cap",
            http.connections.refused.clone(),
        );
        sub.register(
            "connections_timed_out",
            "Connections closed by a header, idle or write timeout",
            http.connections.timed_out.clone(),
        );

        let ingest = IngestMetrics {
            append_seconds: seconds(),
            idempotency: Family::default(),
            unavailable: Family::default(),
            rate_limited: Family::default(),
            key_reloads: Family::default(),
            cancel_after_fired: Counter::default(),
        };
        let sub = registry.sub_registry_with_prefix("ingest");
        sub.register(
            "journal_append_seconds",
            "Time until a command is durable",
            ingest.append_seconds.clone(),
        );
        sub.register(
            "idempotency_reservations",
            "Idempotency key reservations by outcome",
            ingest.idempotency.clone(),
        );
        sub.register(
            "unavailable",
            "Requests answered 503, by failing dependency",
            ingest.unavailable.clone(),
        );
        sub.register(
            "rate_limited",
            "Requests answered 429, by class (reads, writes)",
            ingest.rate_limited.clone(),
        );
        sub.register(
            "api_key_reloads",
            "Changes of the API keys file, by outcome (reloaded, invalid)",
            ingest.key_reloads.clone(),
        );
        sub.register(
            "cancel_after_fired",
            "Cancel-after deadlines that lapsed: mass cancels journaled",
            ingest.cancel_after_fired.clone(),
        );

        let store = StoreMetrics {
            commits: Counter::default(),
            fsyncs: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            commit_seconds: seconds(),
            appended: Counter::default(),
            bytes: Counter::default(),
            projection_commit_seconds: seconds(),
            head: Gauge::default(),
        };
        let sub = registry.sub_registry_with_prefix("store");
        sub.register(
            "commits",
            "Single-node journal batches written",
            store.commits.clone(),
        );
        sub.register(
            "fsyncs",
            "Single-node journal batches fsynced",
            store.fsyncs.clone(),
        );
        sub.register(
            "batch_operations",
            "Operations per journal batch (group commit)",
            store.batch_size.clone(),
        );
        sub.register(
            "commit_seconds",
            "Time to write one journal batch, fsync included (the journal writer's busy time)",
            store.commit_seconds.clone(),
        );
        sub.register(
            "appended",
            "Single-node journal entries appended",
            store.appended.clone(),
        );
        sub.register(
            "written_bytes",
            "Bytes the single-node journal writer appended (records with their headers)",
            store.bytes.clone(),
        );
        sub.register(
            "journal_head",
            "The last single-node journal position written",
            store.head.clone(),
        );
        sub.register(
            "projection_commit_seconds",
            "Time to write one single-node projection transaction",
            store.projection_commit_seconds.clone(),
        );

        let processing = ProcessingMetrics {
            commands: Counter::default(),
            events: Counter::default(),
            funds_records: Counter::default(),
            ledger_entries: Counter::default(),
            transactions: Family::default(),
            commit_seconds: Family::new_with_constructor(seconds),
            projected_orders: Counter::default(),
            projection_seconds: seconds(),
            read_position: Gauge::default(),
            projected_position: Gauge::default(),
            consumer_lag: Family::default(),
            errors: Counter::default(),
            undecodable: Counter::default(),
        };
        let sub = registry.sub_registry_with_prefix("processing");
        sub.register(
            "commands",
            "Commands applied to books",
            processing.commands.clone(),
        );
        sub.register(
            "events",
            "Events produced by books",
            processing.events.clone(),
        );
        sub.register(
            "funds_records",
            "Accounts-topic records (clients' commands, settlements) applied by the funds stage",
            processing.funds_records.clone(),
        );
        sub.register(
            "ledger_entries",
            "Ledger entries written (balance changes)",
            processing.ledger_entries.clone(),
        );
        sub.register(
            "transactions",
            "Kafka transactions committed, by stage",
            processing.transactions.clone(),
        );
        sub.register(
            "transaction_commit_seconds",
            "Time the broker took to commit a transaction, by stage",
            processing.commit_seconds.clone(),
        );
        sub.register(
            "projected_orders",
            "Order states written to the projection",
            processing.projected_orders.clone(),
        );
        sub.register(
            "projection_write_seconds",
            "Time to write one projection batch",
            processing.projection_seconds.clone(),
        );
        sub.register(
            "journal_read_position",
            "Last journal position read",
            processing.read_position.clone(),
        );
        sub.register(
            "journal_projected_position",
            "Last journal position whose outputs the projection holds (single-node)",
            processing.projected_position.clone(),
        );
        sub.register(
            "consumer_lag",
            "Records behind the end of the log (librdkafka statistics; -1 until known), by consumer",
            processing.consumer_lag.clone(),
        );
        sub.register(
            "errors",
            "Processing failures that were retried",
            processing.errors.clone(),
        );
        sub.register(
            "undecodable_records",
            "Command or event records that could not be decoded and were skipped",
            processing.undecodable.clone(),
        );

        let roles = RoleMetrics {
            up: Family::default(),
            restarts: Family::default(),
        };
        let sub = registry.sub_registry_with_prefix("role");
        sub.register(
            "up",
            "1 while a role (or a dependency being waited for) works, 0 while it starts or fails",
            roles.up.clone(),
        );
        sub.register(
            "restarts",
            "Restarts of a role after a failure",
            roles.restarts.clone(),
        );

        let streams = StreamMetrics {
            connections: Gauge::default(),
            subscriptions: Gauge::default(),
            sent: Family::default(),
            dropped: Family::default(),
            disconnects: Family::default(),
            delay_seconds: seconds(),
        };
        let sub = registry.sub_registry_with_prefix("stream");
        sub.register(
            "connections",
            "Open WebSocket stream connections",
            streams.connections.clone(),
        );
        sub.register(
            "subscriptions",
            "Subscriptions of the open stream connections",
            streams.subscriptions.clone(),
        );
        sub.register(
            "messages_sent",
            "Frames written to stream clients, by channel",
            streams.sent.clone(),
        );
        sub.register(
            "messages_dropped",
            "Frames not delivered, by reason",
            streams.dropped.clone(),
        );
        sub.register(
            "disconnects",
            "Stream connections closed, by reason",
            streams.disconnects.clone(),
        );
        sub.register(
            "delay_seconds",
            "Time from an update's commit to its frame being written",
            streams.delay_seconds.clone(),
        );

        Metrics {
            registry,
            http,
            ingest,
            store,
            processing,
            roles,
            streams,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
