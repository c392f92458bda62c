//! The reconciler of OrderSystems.
//!
//! ```text
//! // dereference (client required): the Kafka properties Secret
//! // validate (no client required): validate::validate
//! // build (no client required): children::build, topics::wanted
//! // apply (client required): topics, children by server-side apply, status
//! ```
//! The finalizer exists only with `deletionPolicy: Delete` (topics to remove). With `Retain`
//! there is nothing to clean up, so deleting never waits for the operator; with `Delete`, a
//! cleanup that cannot reach Kafka gives up after [`CLEANUP_DEADLINE`] with a Warning event
//! rather than leave the namespace stuck.

use crate::children::{self, Child, Children, Kind};
use crate::metrics::Metrics;
use crate::status::{self, Observed};
use crate::topics::{self, Topics};
use crate::validate::{self, Plan};
use crds::{DeletionPolicy, OrderSystem, OrderSystemStatus, TopicStatus};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::PredicateConfig;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The field manager of every server-side apply.
pub const MANAGER: &str = "oms-operator";
/// The finalizer that deletes topics.
pub const FINALIZER: &str = "oms.dev/topics";
/// The annotation that pauses reconciliation.
pub const PAUSED: &str = "oms.dev/paused";
/// How long a cached Kafka admin client may go unused (ready systems are requeued every 300 s).
pub const ADMIN_IDLE: Duration = Duration::from_secs(900);
/// How long a topic cleanup may fail before the finalizer is removed anyway.
pub const CLEANUP_DEADLINE: Duration = Duration::from_secs(300);

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] topics::Error),
    /// The Kafka Secret named by the spec is missing, lacks its key or does not parse.
    #[error("kafka secret: {0}")]
    Secret(String),
    /// A child could not be encoded (a bug, never the spec).
    #[error("cannot encode a child: {0}")]
    Encode(#[from] serde_json::Error),
    /// The object is missing what every object has.
    #[error("object without {0}")]
    Incomplete(&'static str),
}

impl Error {
    /// A fixed label for metrics and events.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kubernetes",
            Error::Kafka(_) => "kafka",
            Error::Secret(_) => "secret",
            Error::Encode(_) => "encode",
            Error::Incomplete(_) => "incomplete",
        }
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Kubernetes Events.
    pub recorder: Recorder,
    /// Bound on Kafka calls.
    pub kafka_timeout: Duration,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The generation each object (by uid) was last swept for orphans at: one small entry per
    /// OrderSystem this process has reconciled.
    swept: Mutex<HashMap<String, i64>>,
    /// Admin clients by a hash of bootstrap servers and properties, with their last use.
    admins: Mutex<HashMap<String, (Arc<Topics>, tokio::time::Instant)>>,
}

impl Context {
    /// A context for `client`.
    pub fn new(client: Client, metrics: Arc<Metrics>, kafka_timeout: Duration) -> Context {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            kafka_timeout,
            failures: Mutex::default(),
            swept: Mutex::default(),
            admins: Mutex::default(),
        }
    }

    fn swept_generation(&self, uid: &str) -> Option<i64> {
        let swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        swept.get(uid).copied()
    }

    fn swept(&self, uid: &str, generation: i64) {
        let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        swept.insert(uid.to_string(), generation);
    }

    /// The cache key of an admin client: a hash, so that no password sits in the map or in a
    /// debug dump of it.
    fn admin_key(bootstrap: &str, properties: &[(String, String)]) -> String {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(bootstrap.as_bytes());
        for (key, value) in properties {
            hash.update([0]);
            hash.update(key.as_bytes());
            hash.update([0]);
            hash.update(value.as_bytes());
        }
        hex::encode(hash.finalize())
    }

    /// Drops a cached admin client (a deleted system's); the next user connects again.
    fn forget_admin(&self, bootstrap: &str, properties: &[(String, String)]) {
        let key = Self::admin_key(bootstrap, properties);
        self.admins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    /// The admin client for these servers and properties. Clients unused for [`ADMIN_IDLE`]
    /// are dropped: every live system is reconciled more often than that, and a system deleted
    /// without a finalizer is never seen again.
    fn topics(&self, bootstrap: &str, properties: &[(String, String)]) -> Result<Arc<Topics>> {
        let key = Self::admin_key(bootstrap, properties);
        let now = tokio::time::Instant::now();
        let mut admins = self.admins.lock().unwrap_or_else(|e| e.into_inner());
        admins.retain(|_, (_, used)| now.duration_since(*used) < ADMIN_IDLE);
        if let Some((admin, used)) = admins.get_mut(&key) {
            *used = now;
            return Ok(admin.clone());
        }
        let admin = Arc::new(Topics::connect(bootstrap, properties, self.kafka_timeout)?);
        admins.insert(key, (admin.clone(), now));
        Ok(admin)
    }

    /// Creates or fixes the topics. A Kafka error drops the cached admin client, so the next
    /// reconcile connects afresh: librdkafka can strand a client without any broker after a
    /// broker restart, and such a client fails every call from then on (the runtime's
    /// `store/kafka/rebootstrap.rs` explains how).
    async fn ensure_topics(
        &self,
        bootstrap: &str,
        properties: &[(String, String)],
        wanted: &[topics::WantedTopic],
    ) -> Result<Vec<topics::TopicReport>> {
        let ensured = self.topics(bootstrap, properties)?.ensure(wanted).await;
        if ensured.is_err() {
            self.forget_admin(bootstrap, properties);
        }
        Ok(ensured?)
    }

    async fn event(
        &self,
        system: &OrderSystem,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &system.object_ref(&())).await {
            tracing::warn!(%error, "could not publish an event");
        }
    }
}

/// Applies a child with the operator's field manager, taking ownership of its fields.
async fn apply(client: &Client, namespace: &str, child: Child<'_>) -> Result<()> {
    let name = child.name().ok_or(Error::Incomplete("name"))?.to_string();
    let value = child.to_value()?;
    let params = PatchParams::apply(MANAGER).force();
    let patch = Patch::Apply(&value);
    match child {
        Child::ConfigMap(_) => {
            patch_as::<ConfigMap>(client, namespace, &name, &params, &patch).await
        }
        Child::ServiceAccount(_) => {
            patch_as::<ServiceAccount>(client, namespace, &name, &params, &patch).await
        }
        Child::Service(_) => patch_as::<Service>(client, namespace, &name, &params, &patch).await,
        Child::Deployment(_) => {
            patch_as::<Deployment>(client, namespace, &name, &params, &patch).await
        }
        Child::StatefulSet(_) => {
            patch_as::<StatefulSet>(client, namespace, &name, &params, &patch).await
        }
        Child::HorizontalPodAutoscaler(_) => {
            patch_as::<HorizontalPodAutoscaler>(client, namespace, &name, &params, &patch).await
        }
        Child::PodDisruptionBudget(_) => {
            patch_as::<PodDisruptionBudget>(client, namespace, &name, &params, &patch).await
        }
        Child::NetworkPolicy(_) => {
            patch_as::<NetworkPolicy>(client, namespace, &name, &params, &patch).await
        }
    }
}

async fn patch_as<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    params: &PatchParams,
    patch: &Patch<&serde_json::Value>,
) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.patch(name, params, patch).await?;
    Ok(())
}

/// Applies every child, stage after stage (the objects of one stage at once).
async fn apply_children(client: &Client, ns: &str, children: &Children) -> Result<()> {
    for stage in children.stages() {
        futures::future::try_join_all(stage.into_iter().map(|child| apply(client, ns, child)))
            .await?;
    }
    Ok(())
}

/// Deletes the system's children, of every kind, that the spec no longer wants (an autoscaler
/// after autoscaling was turned off, say): those with its labels and its owner reference whose
/// name is not among the wanted ones.
async fn delete_orphans(
    client: &Client,
    ns: &str,
    system: &OrderSystem,
    children: &Children,
) -> Result<()> {
    let uid = system.uid().ok_or(Error::Incomplete("uid"))?;
    let selector = children::children_selector(&system.name_any());
    let wanted: std::collections::HashSet<(Kind, String)> = children
        .all()
        .iter()
        .filter_map(|child| Some((child.kind(), child.name()?.to_string())))
        .collect();
    let sweeps = Kind::ALL.map(|kind| {
        let (selector, uid, wanted) = (&selector, &uid, &wanted);
        async move {
            let sweep = Sweep {
                client,
                ns,
                selector,
                uid,
            };
            let keep = |name: &str| wanted.contains(&(kind, name.to_string()));
            match kind {
                Kind::ConfigMap => sweep.run::<ConfigMap>(keep).await,
                Kind::ServiceAccount => sweep.run::<ServiceAccount>(keep).await,
                Kind::Service => sweep.run::<Service>(keep).await,
                Kind::Deployment => sweep.run::<Deployment>(keep).await,
                Kind::StatefulSet => sweep.run::<StatefulSet>(keep).await,
                Kind::HorizontalPodAutoscaler => sweep.run::<HorizontalPodAutoscaler>(keep).await,
                Kind::PodDisruptionBudget => sweep.run::<PodDisruptionBudget>(keep).await,
                Kind::NetworkPolicy => sweep.run::<NetworkPolicy>(keep).await,
            }
        }
    });
    futures::future::try_join_all(sweeps).await?;
    Ok(())
}

/// One kind's orphan sweep in one namespace.
struct Sweep<'a> {
    client: &'a Client,
    ns: &'a str,
    selector: &'a str,
    uid: &'a str,
}

impl Sweep<'_> {
    async fn run<K>(&self, keep: impl Fn(&str) -> bool) -> Result<()>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.ns);
        let found = api
            .list_metadata(&kube::api::ListParams::default().labels(self.selector))
            .await?;
        for object in found.items {
            let name = object.name_any();
            let owned = object
                .owner_references()
                .iter()
                .any(|owner| owner.uid == self.uid);
            if !owned || keep(&name) {
                continue;
            }
            tracing::info!(kind = K::kind(&()).as_ref(), %name, "deleting a child the spec no longer wants");
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }
}

/// `(ready, wanted)` pods of each workload.
struct Pods {
    ingest: (i32, i32),
    funds: (i32, i32),
    processor: (i32, i32),
    projector: (i32, i32),
}

/// Reads the ready and wanted pods of the ingest and projector Deployments and the funds and
/// processor StatefulSets.
async fn observe_pods(client: &Client, ns: &str, plan: &Plan) -> Result<Pods> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let names = (
        children::ingest_name(&plan.name),
        children::projector_name(&plan.name),
        children::processor_name(&plan.name),
        children::funds_name(&plan.name),
    );
    let (ingest, projector, processor, funds) = futures::try_join!(
        deployments.get_opt(&names.0),
        deployments.get_opt(&names.1),
        sets.get_opt(&names.2),
        sets.get_opt(&names.3),
    )?;
    let deployment = |d: Option<Deployment>| {
        d.map_or((0, 0), |d| {
            let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            (ready, wanted)
        })
    };
    let set = |s: Option<StatefulSet>| {
        s.map_or((0, 0), |s| {
            let wanted = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ready = s.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            (ready, wanted)
        })
    };
    Ok(Pods {
        ingest: deployment(ingest),
        funds: set(funds),
        processor: set(processor),
        projector: deployment(projector),
    })
}

/// The key of the Kafka Secret that holds the properties.
pub const KAFKA_PROPERTIES_KEY: &str = "kafka.properties";

/// librdkafka properties from the Secret named by `kafka.secretRef` (key `kafka.properties`),
/// parsed as the runtime parses them. A Secret that is missing, lacks the key or does not parse
/// is an error: connecting without the credentials would only fail later and less clearly.
async fn kafka_properties(
    client: &Client,
    ns: &str,
    system: &OrderSystem,
) -> Result<Vec<(String, String)>> {
    let Some(secret) = &system.spec.kafka.secret_ref else {
        return Ok(Vec::new());
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let found = secrets
        .get_opt(&secret.name)
        .await?
        .ok_or_else(|| Error::Secret(format!("Secret {ns}/{} does not exist", secret.name)))?;
    properties_of(&found, &secret.name)
}

/// The parsed `kafka.properties` of a Secret.
pub fn properties_of(secret: &Secret, name: &str) -> Result<Vec<(String, String)>> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(KAFKA_PROPERTIES_KEY))
        .map(|bytes| bytes.0.clone())
        .or_else(|| {
            // stringData only exists on objects not yet stored (tests, dry runs)
            secret
                .string_data
                .as_ref()
                .and_then(|data| data.get(KAFKA_PROPERTIES_KEY))
                .map(|text| text.clone().into_bytes())
        })
        .ok_or_else(|| Error::Secret(format!("Secret {name} has no key {KAFKA_PROPERTIES_KEY}")))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        Error::Secret(format!(
            "Secret {name}: {KAFKA_PROPERTIES_KEY} is not UTF-8"
        ))
    })?;
    oms_core::properties::parse_properties(&text)
        .map_err(|error| Error::Secret(format!("Secret {name}: {error}")))
}

async fn patch_status(
    client: &Client,
    system: &OrderSystem,
    status: OrderSystemStatus,
) -> Result<()> {
    let ns = system.namespace().ok_or(Error::Incomplete("namespace"))?;
    let api: Api<OrderSystem> = Api::namespaced(client.clone(), &ns);
    let body = serde_json::json!({
        "apiVersion": OrderSystem::api_version(&()),
        "kind": OrderSystem::kind(&()),
        "status": status,
    });
    api.patch_status(
        &system.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

async fn set_finalizer(client: &Client, system: &OrderSystem, wanted: bool) -> Result<()> {
    let has = system.finalizers().iter().any(|f| f == FINALIZER);
    if has == wanted {
        return Ok(());
    }
    let ns = system.namespace().ok_or(Error::Incomplete("namespace"))?;
    let api: Api<OrderSystem> = Api::namespaced(client.clone(), &ns);
    let mut finalizers: Vec<String> = system
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if wanted {
        finalizers.push(FINALIZER.into());
    }
    // A merge patch with the resource version: refused if someone else changed them meanwhile.
    let patch = serde_json::json!({
        "metadata": {"finalizers": finalizers, "resourceVersion": system.resource_version()}
    });
    api.patch(
        &system.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Deletes the topics if the policy says so, then lets the object go.
async fn cleanup(system: &OrderSystem, ctx: &Context) -> Result<Action> {
    if let Ok(plan) = validate::validate(system) {
        let names = plan.topics();
        let ns = plan.namespace.clone();
        let deleted = async {
            let properties = kafka_properties(&ctx.client, &ns, system).await?;
            let bootstrap = &system.spec.kafka.bootstrap_servers;
            ctx.topics(bootstrap, &properties)?.delete(&names).await?;
            ctx.forget_admin(bootstrap, &properties);
            Ok::<(), Error>(())
        }
        .await;
        match deleted {
            Ok(()) => {
                ctx.event(
                    system,
                    EventType::Normal,
                    "TopicsDeleted",
                    "Delete",
                    format!("deleted {}", names.join(", ")),
                )
                .await;
            }
            Err(error) => {
                let since =
                    system
                        .metadata
                        .deletion_timestamp
                        .as_ref()
                        .map_or(Duration::ZERO, |t| {
                            let elapsed = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
                            Duration::try_from(elapsed).unwrap_or(Duration::ZERO)
                        });
                if since < CLEANUP_DEADLINE {
                    return Err(error);
                }
                ctx.event(
                    system,
                    EventType::Warning,
                    "TopicsNotDeleted",
                    "Delete",
                    format!(
                        "gave up deleting {} after {:?}: {error}",
                        names.join(", "),
                        CLEANUP_DEADLINE
                    ),
                )
                .await;
            }
        }
    }
    set_finalizer(&ctx.client, system, false).await?;
    Ok(Action::await_change())
}

/// One reconcile of one OrderSystem.
pub async fn reconcile(system: Arc<OrderSystem>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile.timer();
    ctx.metrics.reconcile.runs.inc();
    let ns = system.namespace().ok_or(Error::Incomplete("namespace"))?;
    let generation = system.metadata.generation.unwrap_or(0);
    if system.metadata.deletion_timestamp.is_some() {
        return if system.finalizers().iter().any(|f| f == FINALIZER) {
            cleanup(&system, &ctx).await
        } else {
            Ok(Action::await_change())
        };
    }
    if system
        .annotations()
        .get(PAUSED)
        .is_some_and(|v| v == "true")
    {
        let status = status::paused(system.status.as_ref(), generation, now());
        if system.status.as_ref() != Some(&status) {
            patch_status(&ctx.client, &system, status).await?;
            ctx.event(
                &system,
                EventType::Normal,
                "Paused",
                "Reconcile",
                "reconciliation paused by annotation".into(),
            )
            .await;
        }
        return Ok(Action::await_change());
    }

    // validate
    let plan = match validate::validate(&system) {
        Ok(plan) => plan,
        Err(invalid) => {
            let observed = Observed {
                generation,
                invalid: Some(invalid.0.clone()),
                ..Observed::default()
            };
            patch_status(
                &ctx.client,
                &system,
                status::compute(&observed, system.status.as_ref(), now()),
            )
            .await?;
            ctx.event(
                &system,
                EventType::Warning,
                "InvalidSpec",
                "Validate",
                invalid.0,
            )
            .await;
            return Ok(Action::await_change());
        }
    };
    set_finalizer(
        &ctx.client,
        &system,
        plan.deletion_policy == DeletionPolicy::Delete,
    )
    .await?;

    // topics: dereference the Kafka secret, then apply the wanted topics
    let mut observed = Observed {
        generation,
        endpoint: Some(children::endpoint(&plan)),
        ..Observed::default()
    };
    let wanted = topics::wanted(
        &plan.topic_prefix,
        plan.partitions,
        system.spec.kafka.replication_factor,
        system.spec.kafka.min_in_sync_replicas,
    );
    // The first failure of this reconcile, returned (and counted once, by the error policy)
    // after the status is written.
    let mut failure: Option<Error> = None;
    let reports = async {
        let properties = kafka_properties(&ctx.client, &ns, &system).await?;
        ctx.ensure_topics(&system.spec.kafka.bootstrap_servers, &properties, &wanted)
            .await
    }
    .await;
    match reports {
        Ok(reports) => {
            for report in &reports {
                for action in &report.actions {
                    ctx.event(
                        &system,
                        EventType::Normal,
                        "Topic",
                        "Apply",
                        format!("{}: {action}", report.name),
                    )
                    .await;
                }
                if let Some(problem) = &report.not_supported {
                    observed.not_supported = Some(problem.clone());
                }
            }
            observed.topics = reports
                .iter()
                .map(|r| TopicStatus {
                    name: r.name.clone(),
                    partitions: r.partitions,
                })
                .collect();
        }
        Err(error) => {
            match &error {
                Error::Secret(_) => observed.secret_error = Some(error.to_string()),
                _ => observed.topics_error = Some(error.to_string()),
            }
            failure = Some(error);
        }
    }
    if let Some(problem) = &observed.not_supported
        && system
            .status
            .as_ref()
            .is_none_or(|s| !s.conditions.iter().any(|c| c.reason == "NotSupported"))
    {
        ctx.event(
            &system,
            EventType::Warning,
            "NotSupported",
            "Apply",
            problem.clone(),
        )
        .await;
    }

    // build, apply
    let children = children::build(&system, &plan);
    // Only a spec this operator has not swept for can have left unwanted children: a new
    // system has none, and after a restart every existing one is swept once.
    let uid = system.uid().unwrap_or_default();
    let new_system = system
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .is_none();
    let sweep = !new_system && ctx.swept_generation(&uid) != Some(generation);
    let applied = async {
        apply_children(&ctx.client, &ns, &children).await?;
        if sweep {
            delete_orphans(&ctx.client, &ns, &system, &children).await?;
        }
        // A failed apply or sweep is tried again: the generation is recorded only now.
        ctx.swept(&uid, generation);
        Ok::<(), Error>(())
    }
    .await;
    if let Err(error) = applied {
        observed.apply_error = Some(error.to_string());
        failure.get_or_insert(error);
    }
    let pods = observe_pods(&ctx.client, &ns, &plan).await?;
    observed.ingest = Some(pods.ingest);
    observed.shards = Some(pods.processor);
    observed.funds = Some(pods.funds);
    observed.projector = Some(pods.projector);
    let status = status::compute(&observed, system.status.as_ref(), now());
    let first_time = system.status.as_ref().and_then(|s| s.observed_generation) != Some(generation);
    if system.status.as_ref() != Some(&status) {
        patch_status(&ctx.client, &system, status.clone()).await?;
    }
    if let Some(error) = failure {
        ctx.event(
            &system,
            EventType::Warning,
            "ReconcileFailed",
            "Apply",
            error.to_string(),
        )
        .await;
        // the error policy counts it and applies the backoff
        return Err(error);
    }
    if first_time {
        ctx.event(
            &system,
            EventType::Normal,
            "Reconciled",
            "Apply",
            format!("generation {generation} applied"),
        )
        .await;
    }
    ctx.failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&failure_key(&system));
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    // Pods becoming ready change their Deployment or StatefulSet, whose events trigger a
    // reconcile; the requeue is only a safety net (and the topic drift check).
    Ok(Action::requeue(if ready {
        Duration::from_secs(300)
    } else {
        Duration::from_secs(60)
    }))
}

/// The key of an object's failure count: namespace/name.
fn failure_key(system: &OrderSystem) -> String {
    format!(
        "{}/{}",
        system.namespace().unwrap_or_default(),
        system.name_any()
    )
}

/// Per-object exponential backoff: 1 s, 2 s, 4 s, ... up to 5 minutes.
pub fn error_policy(system: Arc<OrderSystem>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile.failed(error.label());
    let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
    let count = failures.entry(failure_key(&system)).or_insert(0);
    *count = (*count + 1).min(9);
    let delay = Duration::from_secs(1 << *count).min(Duration::from_secs(300));
    tracing::warn!(name = %system.name_any(), error = %error, ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Reconciles running at once.
pub const RECONCILE_CONCURRENCY: u16 = 16;

/// How long triggers for one object are gathered into one reconcile: creating a system's
/// children sends a burst of their events.
pub const DEBOUNCE: Duration = Duration::from_millis(500);

/// What about an OrderSystem calls for a reconcile: its spec (generation), annotations (pause),
/// finalizers and deletion; not its status, which the operator writes itself and which would
/// otherwise trigger a second, idle reconcile after every one.
fn trigger(system: &OrderSystem) -> Option<u64> {
    let meta = &system.metadata;
    let mut hasher = DefaultHasher::new();
    meta.uid.hash(&mut hasher);
    meta.generation.hash(&mut hasher);
    meta.annotations.hash(&mut hasher);
    meta.finalizers.hash(&mut hasher);
    meta.deletion_timestamp
        .as_ref()
        .map(|time| time.0.to_string())
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// Changes to children of kind `K`, as metadata only: the owner reference is all the controller
/// needs, and decoding whole objects for every event cost most of the operator's memory.
fn children<K>(
    client: &Client,
    namespace: Option<&str>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    // An Api over PartialObjectMeta makes metadata-only requests.
    let api: Api<PartialObjectMeta<K>> = scoped(client, namespace);
    watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .touched_objects()
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller, over `namespace` or all of them, until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let systems: Api<OrderSystem> = scoped(&client, namespace);
    let started = Instant::now();
    tracing::info!(?namespace, "controller starting");
    let (reader, writer) = reflector::store();
    let triggers = watcher::watcher(systems, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(trigger, PredicateConfig::default());
    let controller = Controller::for_stream(triggers, reader)
        // Bounded, so hundreds of systems do not all hit Kafka's admin API at once.
        .with_config(
            ControllerConfig::default()
                .concurrency(RECONCILE_CONCURRENCY)
                .debounce(DEBOUNCE),
        );
    // Every kind of child is watched (metadata only); the match fails to compile for a new one.
    let mut controller = controller;
    for kind in Kind::ALL {
        controller = match kind {
            Kind::ConfigMap => controller.owns_stream(children::<ConfigMap>(&client, namespace)),
            Kind::ServiceAccount => {
                controller.owns_stream(children::<ServiceAccount>(&client, namespace))
            }
            Kind::Service => controller.owns_stream(children::<Service>(&client, namespace)),
            Kind::Deployment => controller.owns_stream(children::<Deployment>(&client, namespace)),
            Kind::StatefulSet => {
                controller.owns_stream(children::<StatefulSet>(&client, namespace))
            }
            Kind::HorizontalPodAutoscaler => {
                controller.owns_stream(children::<HorizontalPodAutoscaler>(&client, namespace))
            }
            Kind::PodDisruptionBudget => {
                controller.owns_stream(children::<PodDisruptionBudget>(&client, namespace))
            }
            Kind::NetworkPolicy => {
                controller.owns_stream(children::<NetworkPolicy>(&client, namespace))
            }
        };
    }
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile error");
            }
        })
        .await;
    tracing::info!(uptime = ?started.elapsed(), "controller stopped");
}

#[cfg(test)]
mod tests {
    use super::trigger;
    use crate::fixtures::system;
    use crds::OrderSystemStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn status_writes_do_not_trigger_but_spec_pause_and_deletion_do() {
        let mut before = system();
        before.metadata.generation = Some(3);
        let mut status_only = before.clone();
        status_only.status = Some(OrderSystemStatus {
            observed_generation: Some(3),
            ..OrderSystemStatus::default()
        });
        assert_eq!(trigger(&before), trigger(&status_only));

        let mut spec = before.clone();
        spec.metadata.generation = Some(4);
        let mut paused = before.clone();
        paused.metadata.annotations =
            Some([("oms.dev/paused".to_string(), "true".to_string())].into());
        let mut deleted = before.clone();
        deleted.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        let mut finalized = before.clone();
        finalized.metadata.finalizers = Some(vec!["oms.dev/topics".into()]);
        for changed in [spec, paused, deleted, finalized] {
            assert_ne!(trigger(&before), trigger(&changed));
        }
    }

    /// A context whose Kubernetes API is unreachable, with this Kafka timeout.
    fn offline_context(kafka_timeout: std::time::Duration) -> super::Context {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        super::Context::new(
            client,
            std::sync::Arc::new(crate::metrics::Metrics::new()),
            kafka_timeout,
        )
    }

    /// Admin clients are cached by a hash (no password in the key) and dropped when unused.
    #[tokio::test(start_paused = true)]
    async fn admin_clients_are_cached_by_hash_and_dropped_when_idle() {
        use super::ADMIN_IDLE;
        let ctx = offline_context(std::time::Duration::from_secs(1));
        let secret = [("sasl.password".to_string(), "hunter2".to_string())];
        let first = ctx.topics("127.0.0.1:1", &secret).unwrap();
        let again = ctx.topics("127.0.0.1:1", &secret).unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &again), "cached");
        let keys: Vec<String> = ctx.admins.lock().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 1);
        assert!(!keys[0].contains("hunter2") && keys[0].len() == 64);
        tokio::time::advance(ADMIN_IDLE).await;
        ctx.topics("127.0.0.1:2", &[]).unwrap();
        assert_eq!(
            ctx.admins.lock().unwrap().len(),
            1,
            "the idle client is gone"
        );
    }

    /// A failed topic call drops the admin client: the next reconcile connects afresh.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_kafka_error_drops_the_cached_admin_client() {
        let ctx = offline_context(std::time::Duration::from_millis(200));
        let wanted = crate::topics::wanted("t", 1, 1, 1);
        // nothing listens there: the call fails
        let ensured = ctx.ensure_topics("127.0.0.1:1", &[], &wanted).await;
        assert!(ensured.is_err());
        assert!(ctx.admins.lock().unwrap().is_empty(), "the client was kept");
    }

    /// The example Secret of the deployment guide gives the four pairs the runtime reads from
    /// the same text (`oms-runtime`'s config test), and a broken one is an error, not nothing.
    #[test]
    fn kafka_properties_of_the_example_secret() {
        use super::{Error, properties_of};
        use k8s_openapi::api::core::v1::Secret;
        use serde::Deserialize;
        let text = include_str!("../../examples/ordersystems/secrets.example.yaml");
        let secret = serde_yaml::Deserializer::from_str(text)
            .map(|document| Secret::deserialize(document).unwrap())
            .find(|s| s.metadata.name.as_deref() == Some("oms-prod-kafka"))
            .unwrap();
        let pairs = properties_of(&secret, "oms-prod-kafka").unwrap();
        assert_eq!(
            pairs,
            [
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanisms", "SCRAM-SHA-512"),
                ("sasl.username", "oms"),
                ("sasl.password", "REPLACE_ME"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let mut broken = secret.clone();
        broken.string_data = Some([("kafka.properties".into(), "a=1\nb".into())].into());
        assert!(
            matches!(properties_of(&broken, "x"), Err(Error::Secret(m)) if m.contains("line 2"))
        );
        let mut empty = secret;
        empty.string_data = None;
        assert!(matches!(properties_of(&empty, "x"), Err(Error::Secret(_))));
    }
}
