//! The `OrderSystem` custom resource (`oms.dev/v1alpha1`): what a platform team declares, and
//! the status the operator reports.
//!
//! The schema is generated from these types (schemars) with its defaults and CEL validation
//! rules, so the API server refuses a bad spec with a clear message before the operator sees
//! it. `oms-operator crd` prints the CRD; `crds/ordersystem.yaml` is that output, committed.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group.
pub const GROUP: &str = "oms.dev";

/// A running order management system: its instruments, its Kafka topics, where its state lives,
/// and how many ingest, funds and processor pods run it.
#[allow(
    clippy::duplicated_attributes,
    reason = "each kube printcolumn(...) repeats the same keys"
)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "oms.dev",
    version = "v1alpha1",
    kind = "OrderSystem",
    plural = "ordersystems",
    shortname = "omsys",
    category = "oms",
    namespaced,
    status = "OrderSystemStatus",
    scale(
        spec_replicas_path = ".spec.ingest.replicas",
        status_replicas_path = ".status.ingest.replicas"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Shards",
        type_ = "string",
        json_path = ".status.shards.summary"
    ),
    printcolumn(
        name = "Ingest",
        type_ = "string",
        json_path = ".status.ingest.summary"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.processor.shards <= self.kafka.partitions").message("processor.shards must be between 1 and kafka.partitions: a shard owns at least one partition"))]
#[x_kube(validation = Rule::new("self.funds.shards <= self.kafka.partitions").message("funds.shards must be between 1 and kafka.partitions: a shard owns at least one partition"))]
#[x_kube(validation = Rule::new("!has(self.ingest.autoscaling) || self.ingest.autoscaling.minReplicas <= self.ingest.autoscaling.maxReplicas").message("ingest.autoscaling.minReplicas must not exceed maxReplicas"))]
#[x_kube(validation = Rule::new("self.kafka.minInSyncReplicas <= self.kafka.replicationFactor").message("kafka.minInSyncReplicas must not exceed kafka.replicationFactor"))]
#[serde(rename_all = "camelCase")]
pub struct OrderSystemSpec {
    /// The oms-runtime container image.
    #[x_kube(validation = Rule::new("self != ''").message("image is required"))]
    pub image: String,
    /// Tradable instruments (at least one; symbols unique: a list keyed by symbol).
    #[schemars(length(min = 1, max = 1000))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["symbol"]))]
    pub instruments: Vec<InstrumentSpec>,
    /// The command and event topics.
    pub kafka: KafkaSpec,
    /// Idempotency keys and published book depth.
    pub redis: RedisSpec,
    /// The read projection (MongoDB or DocumentDB).
    pub mongodb: MongoSpec,
    /// The HTTP API pods.
    #[serde(default)]
    pub ingest: IngestSpec,
    /// The funds pods: balances, holds and settlement, sharded by account.
    #[serde(default)]
    pub funds: FundsSpec,
    /// The matching pods, sharded by symbol.
    #[serde(default)]
    pub processor: ProcessorSpec,
    /// The pods that fold events into the read projection.
    #[serde(default)]
    pub projector: ProjectorSpec,
    /// Pre-trade risk limits for every instrument.
    #[serde(default)]
    pub risk: RiskSpec,
    /// API keys.
    pub auth: AuthSpec,
    /// What deleting the OrderSystem does to its Kafka topics.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// An instrument; decimals are strings, as in the order API.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstrumentSpec {
    /// Unique symbol, such as BTC-USDT.
    #[schemars(length(min = 1, max = 32), regex(pattern = r"^[A-Z0-9][A-Z0-9._-]*$"))]
    pub symbol: String,
    /// The asset bought or sold.
    pub base: String,
    /// The asset prices are quoted in.
    pub quote: String,
    /// Every price is a multiple of this.
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub tick_size: String,
    /// Every quantity is a multiple of this.
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub lot_size: String,
    /// Smallest quantity of one order.
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub min_quantity: String,
    /// Largest quantity of one order.
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub max_quantity: String,
    /// Smallest price × quantity of one order.
    #[serde(default = "zero")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub min_notional: String,
    /// Highest price an order may have (a fat-finger guard); no limit when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub max_price: Option<String>,
    /// Band around the last trade that prices must fall in, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub price_band_percent: Option<String>,
    /// Reference price for the band until the first trade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub reference_price: Option<String>,
    /// Fee of the resting side of a trade, in basis points of what it receives (0 to 1000).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub maker_fee_bps: i32,
    /// Fee of the incoming side of a trade, in basis points of what it receives (0 to 1000).
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub taker_fee_bps: i32,
    /// Trading or Halted (cancels only).
    #[serde(default)]
    pub status: InstrumentStatus,
}

fn zero() -> String {
    "0".into()
}

/// Whether an instrument takes new orders.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InstrumentStatus {
    /// Orders are accepted and matched.
    #[default]
    Trading,
    /// Cancels only.
    Halted,
}

/// The Kafka topics `<topicPrefix>.accounts`, `.commands`, `.events` and `.ledger`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    /// Bootstrap servers, host:port[,host:port].
    #[x_kube(validation = Rule::new("self != ''").message("kafka.bootstrapServers is required"))]
    pub bootstrap_servers: String,
    /// A Secret whose keys are librdkafka properties (security.protocol, sasl.username, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Topic prefix; default: `<namespace>.<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-zA-Z0-9._-]{1,200}$"))]
    pub topic_prefix: Option<String>,
    /// Partitions of every topic; fixed at creation (state is owned per partition).
    #[serde(default = "twelve")]
    #[schemars(range(min = 1, max = 1000))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("kafka.partitions is immutable: state is owned per partition; create a new OrderSystem to change it"))]
    pub partitions: i32,
    /// Replication factor of every topic.
    #[serde(default = "three")]
    #[schemars(range(min = 1, max = 7))]
    pub replication_factor: i32,
    /// `min.insync.replicas` of every topic.
    #[serde(default = "two")]
    #[schemars(range(min = 1, max = 7))]
    pub min_in_sync_replicas: i32,
}

fn twelve() -> i32 {
    12
}
fn three() -> i32 {
    3
}
fn two() -> i32 {
    2
}
fn one() -> i32 {
    1
}

/// Redis (ElastiCache): `url`, or a Secret key holding it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.url) != has(self.secretRef)").message("redis needs exactly one of url and secretRef"))]
pub struct RedisSpec {
    /// `redis://` or `rediss://` URL (without a password; use secretRef for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A Secret key holding the URL, password included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

/// MongoDB or DocumentDB.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MongoSpec {
    /// A Secret key holding the connection string (`retryWrites=false` for DocumentDB).
    pub secret_ref: SecretKeyRef,
    /// Database; default: the OrderSystem's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// A Secret in the OrderSystem's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Its name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// One key of a Secret in the OrderSystem's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Its name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The ingest Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngestSpec {
    /// Pods when autoscaling is off (the scale subresource sets it).
    #[serde(default = "two")]
    #[schemars(range(min = 0, max = 200))]
    pub replicas: i32,
    /// A HorizontalPodAutoscaler instead of a fixed count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// Container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Also serve the Binance-compatible API (`/api/v3` and its user data stream, see
    /// docs/binance.md) on the pods' API port, and so through the ingest Service. Only keys
    /// with Binance credentials (`oms-runtime keygen --binance`) can use it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub binance_api: bool,
}

impl Default for IngestSpec {
    fn default() -> Self {
        IngestSpec {
            replicas: 2,
            autoscaling: None,
            resources: None,
            binance_api: false,
        }
    }
}

/// CPU-based autoscaling of the ingest pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    /// Fewest pods.
    #[schemars(range(min = 1, max = 200))]
    pub min_replicas: i32,
    /// Most pods.
    #[schemars(range(min = 1, max = 200))]
    pub max_replicas: i32,
    /// Target average CPU utilisation, percent of the request.
    #[serde(default = "seventy", rename = "targetCPUUtilization")]
    #[schemars(range(min = 10, max = 100))]
    pub target_cpu_utilization: i32,
}

fn seventy() -> i32 {
    70
}

/// A stage's StatefulSet (the funds stage's or the processors'): pod `k` is shard `k`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StageSpec {
    /// Shards, 1 to kafka.partitions; shard k owns the input partitions p with p mod shards = k.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub shards: i32,
    /// Input records per partition between snapshots, at least: a partition whose state holds
    /// more records (resting orders; accounts and holds) snapshots every as many input records
    /// as it holds, so snapshots cost about one record per input whatever the state's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub snapshot_every: Option<i64>,
    /// Container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for StageSpec {
    fn default() -> Self {
        StageSpec {
            shards: 1,
            snapshot_every: None,
            resources: None,
        }
    }
}

/// The funds stage's pods: their input is the accounts topic.
pub type FundsSpec = StageSpec;

/// The processors (the matching stage): their input is the commands topic.
pub type ProcessorSpec = StageSpec;

/// The projector Deployment (a Kafka consumer group; replicas share the event partitions).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProjectorSpec {
    /// Pods.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: i32,
    /// Container resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for ProjectorSpec {
    fn default() -> Self {
        ProjectorSpec {
            replicas: 1,
            resources: None,
        }
    }
}

/// Pre-trade risk limits (decimals as strings). Unset, each takes the runtime's default (see
/// `oms-runtime --help`): they are fat-finger guards, loosened by setting larger values.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RiskSpec {
    /// Largest price × quantity of one order, in the quote asset (default 1000000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub max_order_notional: Option<String>,
    /// Band around the last trade that prices must fall in and market orders trade within,
    /// percent (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub price_band_percent: Option<String>,
    /// Most open orders of one account on one instrument (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_open_orders: Option<i32>,
}

/// API keys.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// A Secret with key `api-keys.json` (see `oms-runtime keygen`).
    pub api_keys_secret_ref: SecretRef,
}

/// What happens to the Kafka topics when the OrderSystem is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Keep the topics (and so every command and event).
    #[default]
    Retain,
    /// Delete the topics.
    Delete,
}

/// What the operator observed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OrderSystemStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, TopicsReady, IngestAvailable, FundsReady, ProcessorsReady, ProjectorReady, Progressing,
    /// Degraded, ReconciliationPaused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Processor shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<ReadyCount>,
    /// Funds shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funds: Option<ReadyCount>,
    /// Ingest pods (the scale subresource reads `replicas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest: Option<ReadyCount>,
    /// Projector pods: each is ready only while it writes the read projection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projector: Option<ReadyCount>,
    /// The topics and their partitions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<TopicStatus>,
    /// The in-cluster URL of the order API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Ready out of wanted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReadyCount {
    /// Ready.
    pub ready: i32,
    /// Wanted.
    pub replicas: i32,
    /// `ready/replicas`, for kubectl's columns.
    pub summary: String,
}

/// A Kafka topic of the system.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// Topic name.
    pub name: String,
    /// Partitions it has.
    pub partitions: i32,
}
