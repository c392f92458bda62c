//! Build: every object an OrderSystem owns, as a pure function of the OrderSystem and its plan.
//!
//! | object | name | what for |
//! |---|---|---|
//! | ConfigMap | `<name>-config` | `instruments.json` for the runtime |
//! | ServiceAccount | `<name>` | the pods' identity (no API token: the runtime never calls the API) |
//! | Deployment | `<name>-ingest` | the HTTP API |
//! | Service | `<name>` | the API endpoint (port 80) and metrics (9090) |
//! | HorizontalPodAutoscaler | `<name>-ingest` | only with `ingest.autoscaling` |
//! | StatefulSet | `<name>-funds` | the funds stage: accounts shard k = pod ordinal k |
//! | Service (headless) | `<name>-funds` | the StatefulSet's identities |
//! | StatefulSet | `<name>-processor` | the matching stage: symbols shard k = pod ordinal k |
//! | Service (headless) | `<name>-processor` | the StatefulSet's identities |
//! | Deployment | `<name>-projector` | events and the ledger into the read projection |
//! | PodDisruptionBudget | `<name>-ingest`, `<name>-funds`, `<name>-processor` | maxUnavailable 1 |
//! | NetworkPolicy | `<name>` | only the API and metrics ports are reachable |
//!
//! Every object carries an owner reference to the OrderSystem (garbage collection) and the
//! standard labels. Pod templates carry a hash of the configuration, so a configuration change
//! rolls the pods.

use crate::validate::Plan;
use crds::OrderSystem;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext, Service,
    ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Port of the order API in the pods.
pub const API_PORT: i32 = 8080;
/// Port of health and metrics in the pods.
pub const ADMIN_PORT: i32 = 9090;
/// The pod template annotation that rolls pods on a configuration change.
pub const CONFIG_HASH: &str = "oms.dev/config-hash";
const CONFIG_DIR: &str = "/etc/oms/config";
const KEYS_DIR: &str = "/etc/oms/keys";

/// Everything an OrderSystem owns.
#[derive(Clone, Debug)]
pub struct Children {
    /// Runtime configuration.
    pub config_map: ConfigMap,
    /// Pod identity.
    pub service_account: ServiceAccount,
    /// The API pods.
    pub ingest: Deployment,
    /// The API endpoint.
    pub ingest_service: Service,
    /// Autoscaling of the API pods, when wanted.
    pub ingest_autoscaler: Option<HorizontalPodAutoscaler>,
    /// The funds pods.
    pub funds: StatefulSet,
    /// Headless Service of the funds pods.
    pub funds_service: Service,
    /// The matching pods.
    pub processor: StatefulSet,
    /// Headless Service of the processors.
    pub processor_service: Service,
    /// The projection pods.
    pub projector: Deployment,
    /// Disruption budgets.
    pub disruption_budgets: Vec<PodDisruptionBudget>,
    /// Network policy.
    pub network_policy: NetworkPolicy,
}

/// One child of an OrderSystem, by kind: what rendering, applying and the orphan sweep go
/// through, so that none of them can leave a child out.
#[derive(Clone, Copy, Debug)]
pub enum Child<'a> {
    /// A ConfigMap.
    ConfigMap(&'a ConfigMap),
    /// A ServiceAccount.
    ServiceAccount(&'a ServiceAccount),
    /// A Service.
    Service(&'a Service),
    /// A Deployment.
    Deployment(&'a Deployment),
    /// A StatefulSet.
    StatefulSet(&'a StatefulSet),
    /// A HorizontalPodAutoscaler.
    HorizontalPodAutoscaler(&'a HorizontalPodAutoscaler),
    /// A PodDisruptionBudget.
    PodDisruptionBudget(&'a PodDisruptionBudget),
    /// A NetworkPolicy.
    NetworkPolicy(&'a NetworkPolicy),
}

/// The kinds of children: what the controller watches, and sweeps for orphans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// ConfigMap.
    ConfigMap,
    /// ServiceAccount.
    ServiceAccount,
    /// Service.
    Service,
    /// Deployment.
    Deployment,
    /// StatefulSet.
    StatefulSet,
    /// HorizontalPodAutoscaler.
    HorizontalPodAutoscaler,
    /// PodDisruptionBudget.
    PodDisruptionBudget,
    /// NetworkPolicy.
    NetworkPolicy,
}

impl Kind {
    /// Every kind (a test checks that none is missing).
    pub const ALL: [Kind; 8] = [
        Kind::ConfigMap,
        Kind::ServiceAccount,
        Kind::Service,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::HorizontalPodAutoscaler,
        Kind::PodDisruptionBudget,
        Kind::NetworkPolicy,
    ];
}

impl Child<'_> {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Child::ConfigMap(_) => Kind::ConfigMap,
            Child::ServiceAccount(_) => Kind::ServiceAccount,
            Child::Service(_) => Kind::Service,
            Child::Deployment(_) => Kind::Deployment,
            Child::StatefulSet(_) => Kind::StatefulSet,
            Child::HorizontalPodAutoscaler(_) => Kind::HorizontalPodAutoscaler,
            Child::PodDisruptionBudget(_) => Kind::PodDisruptionBudget,
            Child::NetworkPolicy(_) => Kind::NetworkPolicy,
        }
    }

    /// Its name.
    pub fn name(&self) -> Option<&str> {
        let meta = match self {
            Child::ConfigMap(o) => &o.metadata,
            Child::ServiceAccount(o) => &o.metadata,
            Child::Service(o) => &o.metadata,
            Child::Deployment(o) => &o.metadata,
            Child::StatefulSet(o) => &o.metadata,
            Child::HorizontalPodAutoscaler(o) => &o.metadata,
            Child::PodDisruptionBudget(o) => &o.metadata,
            Child::NetworkPolicy(o) => &o.metadata,
        };
        meta.name.as_deref()
    }

    /// As JSON with `apiVersion` and `kind`, as server-side apply and `render` need it.
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        fn typed<K: kube::Resource<DynamicType = ()> + serde::Serialize>(
            object: &K,
        ) -> Result<serde_json::Value, serde_json::Error> {
            let mut value = serde_json::to_value(object)?;
            value["apiVersion"] = K::api_version(&()).into();
            value["kind"] = K::kind(&()).into();
            if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                meta.remove("managedFields");
            }
            Ok(value)
        }
        match self {
            Child::ConfigMap(o) => typed(*o),
            Child::ServiceAccount(o) => typed(*o),
            Child::Service(o) => typed(*o),
            Child::Deployment(o) => typed(*o),
            Child::StatefulSet(o) => typed(*o),
            Child::HorizontalPodAutoscaler(o) => typed(*o),
            Child::PodDisruptionBudget(o) => typed(*o),
            Child::NetworkPolicy(o) => typed(*o),
        }
    }
}

impl Children {
    /// Every child, in stages to apply in order: an object only refers to objects of earlier
    /// stages (pods to their ServiceAccount and ConfigMap; budgets and autoscalers to their
    /// workloads). The struct is destructured field by field, so a new child that is not
    /// listed here does not compile.
    pub fn stages(&self) -> [Vec<Child<'_>>; 4] {
        let Children {
            config_map,
            service_account,
            ingest,
            ingest_service,
            ingest_autoscaler,
            funds,
            funds_service,
            processor,
            processor_service,
            projector,
            disruption_budgets,
            network_policy,
        } = self;
        [
            vec![
                Child::ServiceAccount(service_account),
                Child::ConfigMap(config_map),
            ],
            vec![
                Child::Service(ingest_service),
                Child::Service(funds_service),
                Child::Service(processor_service),
                Child::NetworkPolicy(network_policy),
            ],
            vec![
                Child::Deployment(ingest),
                Child::StatefulSet(funds),
                Child::StatefulSet(processor),
                Child::Deployment(projector),
            ],
            disruption_budgets
                .iter()
                .map(Child::PodDisruptionBudget)
                .chain(ingest_autoscaler.iter().map(Child::HorizontalPodAutoscaler))
                .collect(),
        ]
    }

    /// Every child, in apply order.
    pub fn all(&self) -> Vec<Child<'_>> {
        self.stages().into_iter().flatten().collect()
    }
}

/// The label selector of every child of the system named `name`.
pub fn children_selector(name: &str) -> String {
    format!("app.kubernetes.io/instance={name},app.kubernetes.io/managed-by=oms-operator")
}

/// Name of the ingest Deployment and autoscaler.
pub fn ingest_name(system: &str) -> String {
    format!("{system}-ingest")
}

/// Name of the funds StatefulSet and its headless Service.
pub fn funds_name(system: &str) -> String {
    format!("{system}-funds")
}

/// Name of the processor StatefulSet and its headless Service.
pub fn processor_name(system: &str) -> String {
    format!("{system}-processor")
}

/// Name of the projector Deployment.
pub fn projector_name(system: &str) -> String {
    format!("{system}-projector")
}

fn labels(plan: &Plan, component: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "oms".to_string()),
        ("app.kubernetes.io/instance".to_string(), plan.name.clone()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "oms-operator".to_string(),
        ),
    ]);
    if let Some(component) = component {
        labels.insert("app.kubernetes.io/component".into(), component.into());
    }
    labels
}

fn selector(plan: &Plan, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".to_string(), plan.name.clone()),
        (
            "app.kubernetes.io/component".to_string(),
            component.to_string(),
        ),
    ])
}

fn owner(system: &OrderSystem) -> Vec<OwnerReference> {
    system.controller_owner_ref(&()).into_iter().collect()
}

fn meta(system: &OrderSystem, plan: &Plan, name: String, component: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(plan.namespace.clone()),
        labels: Some(labels(plan, component)),
        owner_references: Some(owner(system)),
        ..ObjectMeta::default()
    }
}

fn value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn from_secret(name: &str, secret: &str, key: &str, optional: bool) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: optional.then_some(true),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// The environment of a role's container: every runtime flag has its `OMS_…` variable.
fn env(system: &OrderSystem, plan: &Plan, role: &str) -> Vec<EnvVar> {
    let spec = &system.spec;
    let mut env = vec![
        value("OMS_ROLE", role),
        value("OMS_KAFKA_BOOTSTRAP", &spec.kafka.bootstrap_servers),
        value("OMS_KAFKA_TOPIC_PREFIX", &plan.topic_prefix),
        value("OMS_MONGO_DATABASE", &plan.database),
        value(
            "OMS_INSTRUMENTS_FILE",
            format!("{CONFIG_DIR}/instruments.json"),
        ),
        value("OMS_API_ADDR", format!("0.0.0.0:{API_PORT}")),
        value("OMS_ADMIN_ADDR", format!("0.0.0.0:{ADMIN_PORT}")),
        value("OMS_LOG_FORMAT", "json"),
        from_secret(
            "OMS_MONGO_URL",
            &spec.mongodb.secret_ref.name,
            &spec.mongodb.secret_ref.key,
            false,
        ),
    ];
    if let Some(secret) = &spec.kafka.secret_ref {
        env.push(from_secret(
            "OMS_KAFKA_PROPERTIES",
            &secret.name,
            "kafka.properties",
            true,
        ));
    }
    match (&spec.redis.url, &spec.redis.secret_ref) {
        (Some(url), _) => env.push(value("OMS_REDIS_URL", url)),
        (None, Some(secret)) => env.push(from_secret(
            "OMS_REDIS_URL",
            &secret.name,
            &secret.key,
            false,
        )),
        (None, None) => {}
    }
    if let Some(notional) = &plan.limits.max_order_notional {
        env.push(value("OMS_MAX_ORDER_NOTIONAL", notional.to_string()));
    }
    if let Some(band) = &plan.limits.price_band_percent {
        env.push(value("OMS_PRICE_BAND_PERCENT", band.to_string()));
    }
    if let Some(open) = plan.limits.max_open_orders {
        env.push(value("OMS_MAX_OPEN_ORDERS", open.to_string()));
    }
    match role {
        "ingest" => {
            env.push(value(
                "OMS_API_KEYS_FILE",
                format!("{KEYS_DIR}/api-keys.json"),
            ));
            env.push(value(
                "OMS_BINANCE_API",
                spec.ingest.binance_api.to_string(),
            ));
        }
        "funds" => {
            env.push(value("OMS_SHARDS", plan.funds_shards.to_string()));
            if let Some(every) = spec.funds.snapshot_every {
                env.push(value("OMS_SNAPSHOT_EVERY", every.to_string()));
            }
        }
        "processor" => {
            env.push(value("OMS_SHARDS", plan.shards.to_string()));
            if let Some(every) = spec.processor.snapshot_every {
                env.push(value("OMS_SNAPSHOT_EVERY", every.to_string()));
            }
        }
        _ => {}
    }
    env
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// Liveness starts only after this probe passed once: up to 5 × 36 = 180 s for the process to
/// open its admin port. The runtime opens it before it waits for any dependency, so a slow
/// Kafka leaves a pod live and not ready rather than restarted.
fn startup_probe() -> Probe {
    http_probe("/healthz", 5, 36)
}

/// The pod of a role: restricted security settings, the config volume, probes on the admin port.
fn pod(
    system: &OrderSystem,
    plan: &Plan,
    role: &str,
    resources: Option<&ResourceRequirements>,
    config_hash: &str,
) -> PodTemplateSpec {
    let mut ports = vec![ContainerPort {
        name: Some("admin".into()),
        container_port: ADMIN_PORT,
        ..ContainerPort::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "config".into(),
        mount_path: CONFIG_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: format!("{}-config", plan.name),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    if role == "ingest" {
        ports.insert(
            0,
            ContainerPort {
                name: Some("http".into()),
                container_port: API_PORT,
                ..ContainerPort::default()
            },
        );
        mounts.push(VolumeMount {
            name: "api-keys".into(),
            mount_path: KEYS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "api-keys".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(system.spec.auth.api_keys_secret_ref.name.clone()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    let mut template_labels = labels(plan, Some(role));
    template_labels.extend(selector(plan, role));
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(template_labels),
            annotations: Some(BTreeMap::from([(
                CONFIG_HASH.to_string(),
                config_hash.to_string(),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(plan.name.clone()),
            automount_service_account_token: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65532),
                run_as_group: Some(65532),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..PodSecurityContext::default()
            }),
            termination_grace_period_seconds: Some(30),
            containers: vec![Container {
                name: "oms".into(),
                image: Some(system.spec.image.clone()),
                env: Some(env(system, plan, role)),
                ports: Some(ports),
                startup_probe: Some(startup_probe()),
                readiness_probe: Some(http_probe("/readyz", 5, 3)),
                liveness_probe: Some(http_probe("/healthz", 10, 3)),
                resources: resources.cloned(),
                volume_mounts: Some(mounts),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    read_only_root_filesystem: Some(true),
                    run_as_non_root: Some(true),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        add: None,
                    }),
                    ..SecurityContext::default()
                }),
                ..Container::default()
            }],
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
    }
}

fn port(name: &str, port: i32, target: &str) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(target.into())),
        ..ServicePort::default()
    }
}

fn budget(system: &OrderSystem, plan: &Plan, name: String, component: &str) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(system, plan, name, Some(component)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(plan, component)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// Builds every child of `system`.
pub fn build(system: &OrderSystem, plan: &Plan) -> Children {
    let spec = &system.spec;
    let name = &plan.name;
    let data = BTreeMap::from([(
        "instruments.json".to_string(),
        plan.instruments_json.clone(),
    )]);
    let config_hash = {
        let mut hash = Sha256::new();
        for (key, value) in &data {
            hash.update(key.as_bytes());
            hash.update([0]);
            hash.update(value.as_bytes());
            hash.update([0]);
        }
        hex::encode(hash.finalize())
    };

    let ingest = Deployment {
        metadata: meta(system, plan, ingest_name(name), Some("ingest")),
        spec: Some(DeploymentSpec {
            // With an autoscaler the replica count is the autoscaler's field, not ours.
            replicas: spec
                .ingest
                .autoscaling
                .is_none()
                .then_some(spec.ingest.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(plan, "ingest")),
                ..LabelSelector::default()
            },
            template: pod(
                system,
                plan,
                "ingest",
                spec.ingest.resources.as_ref(),
                &config_hash,
            ),
            ..DeploymentSpec::default()
        }),
        status: None,
    };
    let ingest_autoscaler = spec
        .ingest
        .autoscaling
        .as_ref()
        .map(|auto| HorizontalPodAutoscaler {
            metadata: meta(system, plan, ingest_name(name), Some("ingest")),
            spec: HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: "Deployment".into(),
                    name: ingest_name(name),
                },
                min_replicas: Some(auto.min_replicas),
                max_replicas: auto.max_replicas,
                metrics: Some(vec![MetricSpec {
                    type_: "Resource".into(),
                    resource: Some(ResourceMetricSource {
                        name: "cpu".into(),
                        target: MetricTarget {
                            type_: "Utilization".into(),
                            average_utilization: Some(auto.target_cpu_utilization),
                            ..MetricTarget::default()
                        },
                    }),
                    ..MetricSpec::default()
                }]),
                behavior: None,
            },
            status: None,
        });
    let stage = |component: &str, set: String, shards: i32, resources| StatefulSet {
        metadata: meta(system, plan, set.clone(), Some(component)),
        spec: Some(StatefulSetSpec {
            replicas: Some(shards),
            service_name: Some(set),
            // Shards are independent: start and stop them all at once.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector(plan, component)),
                ..LabelSelector::default()
            },
            template: pod(system, plan, component, resources, &config_hash),
            ..StatefulSetSpec::default()
        }),
        status: None,
    };
    let funds = stage(
        "funds",
        funds_name(name),
        plan.funds_shards,
        spec.funds.resources.as_ref(),
    );
    let processor = stage(
        "processor",
        processor_name(name),
        plan.shards,
        spec.processor.resources.as_ref(),
    );
    let headless = |component: &str, set: String| Service {
        metadata: meta(system, plan, set, Some(component)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector(plan, component)),
            ports: Some(vec![port("metrics", ADMIN_PORT, "admin")]),
            publish_not_ready_addresses: Some(true),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    let projector = Deployment {
        metadata: meta(system, plan, projector_name(name), Some("projector")),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.projector.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(plan, "projector")),
                ..LabelSelector::default()
            },
            template: pod(
                system,
                plan,
                "projector",
                spec.projector.resources.as_ref(),
                &config_hash,
            ),
            ..DeploymentSpec::default()
        }),
        status: None,
    };
    Children {
        config_map: ConfigMap {
            metadata: meta(system, plan, format!("{name}-config"), None),
            data: Some(data),
            ..ConfigMap::default()
        },
        service_account: ServiceAccount {
            metadata: meta(system, plan, name.clone(), None),
            automount_service_account_token: Some(false),
            ..ServiceAccount::default()
        },
        ingest,
        ingest_service: Service {
            metadata: meta(system, plan, name.clone(), Some("ingest")),
            spec: Some(ServiceSpec {
                selector: Some(selector(plan, "ingest")),
                ports: Some(vec![
                    port("http", 80, "http"),
                    port("metrics", ADMIN_PORT, "admin"),
                ]),
                ..ServiceSpec::default()
            }),
            status: None,
        },
        ingest_autoscaler,
        funds,
        funds_service: headless("funds", funds_name(name)),
        processor,
        processor_service: headless("processor", processor_name(name)),
        projector,
        disruption_budgets: vec![
            budget(system, plan, ingest_name(name), "ingest"),
            budget(system, plan, funds_name(name), "funds"),
            budget(system, plan, processor_name(name), "processor"),
        ],
        network_policy: NetworkPolicy {
            metadata: meta(system, plan, name.clone(), None),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/instance".to_string(),
                        name.clone(),
                    )])),
                    ..LabelSelector::default()
                }),
                policy_types: Some(vec!["Ingress".into()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: None,
                    ports: Some(vec![
                        NetworkPolicyPort {
                            port: Some(IntOrString::Int(API_PORT)),
                            protocol: Some("TCP".into()),
                            end_port: None,
                        },
                        NetworkPolicyPort {
                            port: Some(IntOrString::Int(ADMIN_PORT)),
                            protocol: Some("TCP".into()),
                            end_port: None,
                        },
                    ]),
                }]),
                ..NetworkPolicySpec::default()
            }),
        },
    }
}

/// The in-cluster URL of the order API.
pub fn endpoint(plan: &Plan) -> String {
    format!("http://{}.{}.svc:80", plan.name, plan.namespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::system;
    use crate::validate::validate;

    fn built(system: &OrderSystem) -> Children {
        build(system, &validate(system).unwrap())
    }

    fn container(template: &PodTemplateSpec) -> &Container {
        &template.spec.as_ref().unwrap().containers[0]
    }

    fn env_of(template: &PodTemplateSpec) -> BTreeMap<String, EnvVar> {
        container(template)
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect()
    }

    fn secret_ref(var: &EnvVar) -> (String, String) {
        let key = var
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        (key.name.clone(), key.key.clone())
    }

    #[test]
    fn every_child_is_owned_labelled_and_named() {
        let system = system();
        let c = built(&system);
        let metas = [
            &c.config_map.metadata,
            &c.service_account.metadata,
            &c.ingest.metadata,
            &c.ingest_service.metadata,
            &c.ingest_autoscaler.as_ref().unwrap().metadata,
            &c.processor.metadata,
            &c.processor_service.metadata,
            &c.projector.metadata,
            &c.disruption_budgets[0].metadata,
            &c.disruption_budgets[1].metadata,
            &c.network_policy.metadata,
        ];
        for meta in metas {
            assert_eq!(meta.namespace.as_deref(), Some("trading"));
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str()),
                ("OrderSystem", "btc-desk")
            );
            assert_eq!(owner.controller, Some(true));
            assert_eq!(
                meta.labels.as_ref().unwrap()["app.kubernetes.io/instance"],
                "btc-desk"
            );
        }
        assert_eq!(c.ingest.metadata.name.as_deref(), Some("btc-desk-ingest"));
        assert_eq!(
            c.processor.metadata.name.as_deref(),
            Some("btc-desk-processor")
        );
        assert_eq!(c.ingest_service.metadata.name.as_deref(), Some("btc-desk"));
    }

    #[test]
    fn image_kafka_redis_mongo_risk_and_keys_reach_the_pods() {
        let c = built(&system());
        for template in [
            &c.ingest.spec.as_ref().unwrap().template,
            &c.processor.spec.as_ref().unwrap().template,
        ] {
            assert_eq!(
                container(template).image.as_deref(),
                Some("ghcr.io/oms/oms-runtime:0.1.0")
            );
            let env = env_of(template);
            assert_eq!(
                env["OMS_KAFKA_BOOTSTRAP"].value.as_deref(),
                Some("b-1.msk:9094,b-2.msk:9094")
            );
            assert_eq!(
                env["OMS_KAFKA_TOPIC_PREFIX"].value.as_deref(),
                Some("trading.btc-desk")
            );
            assert_eq!(
                secret_ref(&env["OMS_KAFKA_PROPERTIES"]),
                ("kafka-auth".into(), "kafka.properties".into())
            );
            assert_eq!(
                secret_ref(&env["OMS_REDIS_URL"]),
                ("redis".into(), "url".into())
            );
            assert_eq!(
                secret_ref(&env["OMS_MONGO_URL"]),
                ("docdb".into(), "uri".into())
            );
            assert_eq!(env["OMS_MONGO_DATABASE"].value.as_deref(), Some("btc_desk"));
            assert_eq!(
                env["OMS_MAX_ORDER_NOTIONAL"].value.as_deref(),
                Some("1000000")
            );
            assert_eq!(env["OMS_PRICE_BAND_PERCENT"].value.as_deref(), Some("5"));
            assert_eq!(env["OMS_MAX_OPEN_ORDERS"].value.as_deref(), Some("200"));
        }
        let ingest = env_of(&c.ingest.spec.as_ref().unwrap().template);
        assert_eq!(ingest["OMS_ROLE"].value.as_deref(), Some("ingest"));
        assert!(ingest.contains_key("OMS_API_KEYS_FILE"));
        // The Binance-compatible API only when the OrderSystem asks for it.
        assert_eq!(ingest["OMS_BINANCE_API"].value.as_deref(), Some("false"));
        let mut asking = system();
        asking.spec.ingest.binance_api = true;
        let asked = built(&asking);
        let ingest = env_of(&asked.ingest.spec.as_ref().unwrap().template);
        assert_eq!(ingest["OMS_BINANCE_API"].value.as_deref(), Some("true"));
        let volumes = c
            .ingest
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .clone()
            .unwrap();
        let keys = volumes.iter().find(|v| v.name == "api-keys").unwrap();
        assert_eq!(
            keys.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("desk-keys")
        );
        let instruments = &c.config_map.data.as_ref().unwrap()["instruments.json"];
        let parsed: Vec<oms_core::InstrumentSpec> = serde_json::from_str(instruments).unwrap();
        assert_eq!(parsed[0].symbol, "BTC-USDT");
        assert_eq!(
            parsed[0].price_band_percent,
            Some(rust_decimal::Decimal::from(10))
        );
    }

    #[test]
    fn redis_url_may_be_plain() {
        let mut system = system();
        system.spec.redis.url = Some("rediss://cache:6379".into());
        system.spec.redis.secret_ref = None;
        system.spec.kafka.secret_ref = None;
        let c = built(&system);
        let env = env_of(&c.ingest.spec.as_ref().unwrap().template);
        assert_eq!(
            env["OMS_REDIS_URL"].value.as_deref(),
            Some("rediss://cache:6379")
        );
        assert!(!env.contains_key("OMS_KAFKA_PROPERTIES"));
    }

    #[test]
    fn ingest_replicas_or_autoscaler() {
        let c = built(&system());
        assert_eq!(
            c.ingest.spec.as_ref().unwrap().replicas,
            None,
            "the autoscaler owns replicas"
        );
        let hpa = c.ingest_autoscaler.unwrap().spec;
        assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 8));
        assert_eq!(
            hpa.metrics.unwrap()[0]
                .resource
                .as_ref()
                .unwrap()
                .target
                .average_utilization,
            Some(60)
        );
        let mut fixed = system();
        fixed.spec.ingest.autoscaling = None;
        let c = built(&fixed);
        assert_eq!(c.ingest.spec.as_ref().unwrap().replicas, Some(3));
        assert!(c.ingest_autoscaler.is_none());
    }

    #[test]
    fn processor_shards_projector_and_resources() {
        let c = built(&system());
        let set = c.processor.spec.as_ref().unwrap();
        assert_eq!(set.replicas, Some(4));
        assert_eq!(set.service_name.as_deref(), Some("btc-desk-processor"));
        assert_eq!(set.pod_management_policy.as_deref(), Some("Parallel"));
        let env = env_of(&set.template);
        assert_eq!(env["OMS_ROLE"].value.as_deref(), Some("processor"));
        assert_eq!(env["OMS_SHARDS"].value.as_deref(), Some("4"));
        assert_eq!(env["OMS_SNAPSHOT_EVERY"].value.as_deref(), Some("5000"));
        let limits = container(&set.template)
            .resources
            .clone()
            .unwrap()
            .limits
            .unwrap();
        assert_eq!(limits["memory"].0, "2Gi");
        let ingest = container(&c.ingest.spec.as_ref().unwrap().template)
            .resources
            .clone()
            .unwrap();
        assert_eq!(ingest.requests.unwrap()["cpu"].0, "500m");
        assert_eq!(c.projector.spec.as_ref().unwrap().replicas, Some(2));
        assert_eq!(
            env_of(&c.projector.spec.as_ref().unwrap().template)["OMS_ROLE"]
                .value
                .as_deref(),
            Some("projector")
        );
        assert_eq!(
            c.processor_service
                .spec
                .as_ref()
                .unwrap()
                .cluster_ip
                .as_deref(),
            Some("None")
        );
    }

    #[test]
    fn funds_shards_are_their_own_stateful_set() {
        let c = built(&system());
        let set = c.funds.spec.as_ref().unwrap();
        assert_eq!(set.replicas, Some(3));
        assert_eq!(set.service_name.as_deref(), Some("btc-desk-funds"));
        assert_eq!(set.pod_management_policy.as_deref(), Some("Parallel"));
        let env = env_of(&set.template);
        assert_eq!(env["OMS_ROLE"].value.as_deref(), Some("funds"));
        assert_eq!(env["OMS_SHARDS"].value.as_deref(), Some("3"));
        assert_eq!(env["OMS_SNAPSHOT_EVERY"].value.as_deref(), Some("2000"));
        let selector = c.funds_service.spec.as_ref().unwrap().selector.clone();
        assert_eq!(
            selector.unwrap()["app.kubernetes.io/component"],
            "funds",
            "the headless Service selects the funds pods only"
        );
        assert!(
            c.disruption_budgets
                .iter()
                .any(|b| b.metadata.name.as_deref() == Some("btc-desk-funds"))
        );
        // fees reach the runtime's instruments file
        let instruments: serde_json::Value =
            serde_json::from_str(&c.config_map.data.as_ref().unwrap()["instruments.json"]).unwrap();
        assert_eq!(instruments[0]["maker_fee_bps"], 10);
        assert_eq!(instruments[0]["taker_fee_bps"], 20);
    }

    /// Every kind is in `Kind::ALL` once (a new kind fails to compile in `index` until it is
    /// added there too), every child is in one stage, and nothing is applied before what it
    /// refers to.
    #[test]
    fn every_child_and_kind_is_in_the_typed_set() {
        fn index(kind: Kind) -> usize {
            match kind {
                Kind::ConfigMap => 0,
                Kind::ServiceAccount => 1,
                Kind::Service => 2,
                Kind::Deployment => 3,
                Kind::StatefulSet => 4,
                Kind::HorizontalPodAutoscaler => 5,
                Kind::PodDisruptionBudget => 6,
                Kind::NetworkPolicy => 7,
            }
        }
        let mut indexes: Vec<usize> = Kind::ALL.iter().map(|kind| index(*kind)).collect();
        indexes.sort_unstable();
        assert_eq!(indexes, (0..8).collect::<Vec<_>>());

        let mut system = system();
        system.spec.ingest.autoscaling = Some(crds::Autoscaling {
            min_replicas: 2,
            max_replicas: 4,
            target_cpu_utilization: 70,
        });
        let c = built(&system);
        let all = c.all();
        let mut names: Vec<(Kind, &str)> =
            all.iter().map(|c| (c.kind(), c.name().unwrap())).collect();
        let count = names.len();
        names.sort_by_key(|(kind, name)| (index(*kind), name.to_string()));
        names.dedup();
        assert_eq!(names.len(), count, "no child twice");
        assert_eq!(count, 11 + c.disruption_budgets.len());
        let stage_of = |kind: Kind| {
            c.stages()
                .iter()
                .position(|stage| stage.iter().any(|child| child.kind() == kind))
                .unwrap()
        };
        assert!(stage_of(Kind::ServiceAccount) < stage_of(Kind::Deployment));
        assert!(stage_of(Kind::ConfigMap) < stage_of(Kind::StatefulSet));
        assert!(stage_of(Kind::Deployment) < stage_of(Kind::HorizontalPodAutoscaler));
        assert!(stage_of(Kind::StatefulSet) < stage_of(Kind::PodDisruptionBudget));
        for child in &all {
            let value = child.to_value().unwrap();
            assert!(value["apiVersion"].is_string() && value["kind"].is_string());
        }
    }

    /// A dependency that is slow at start must not get a pod restarted: liveness waits for a
    /// startup probe with a long allowance, readiness tells the Service.
    #[test]
    fn pods_have_a_startup_allowance_before_liveness() {
        let c = built(&system());
        for template in [
            &c.ingest.spec.as_ref().unwrap().template,
            &c.processor.spec.as_ref().unwrap().template,
            &c.projector.spec.as_ref().unwrap().template,
        ] {
            let container = container(template);
            let startup = container.startup_probe.as_ref().expect("a startup probe");
            let path = |probe: &Probe| probe.http_get.as_ref().unwrap().path.clone().unwrap();
            assert_eq!(path(startup), "/healthz");
            let allowance = startup.period_seconds.unwrap() * startup.failure_threshold.unwrap();
            assert!(allowance >= 120, "{allowance} s");
            assert_eq!(path(container.readiness_probe.as_ref().unwrap()), "/readyz");
            assert_eq!(path(container.liveness_probe.as_ref().unwrap()), "/healthz");
        }
    }

    #[test]
    fn pods_run_restricted() {
        let c = built(&system());
        let template = &c.ingest.spec.as_ref().unwrap().template;
        let pod = template.spec.as_ref().unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(
            pod.security_context
                .as_ref()
                .unwrap()
                .seccomp_profile
                .as_ref()
                .unwrap()
                .type_,
            "RuntimeDefault"
        );
        let security = container(template).security_context.clone().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            security.capabilities.unwrap().drop.unwrap(),
            vec!["ALL".to_string()]
        );
        for budget in &c.disruption_budgets {
            assert_eq!(
                budget.spec.as_ref().unwrap().max_unavailable,
                Some(IntOrString::Int(1))
            );
        }
        let rule = &c
            .network_policy
            .spec
            .as_ref()
            .unwrap()
            .ingress
            .as_ref()
            .unwrap()[0];
        let ports: Vec<_> = rule
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.port.clone())
            .collect();
        assert_eq!(
            ports,
            vec![
                Some(IntOrString::Int(API_PORT)),
                Some(IntOrString::Int(ADMIN_PORT))
            ]
        );
    }

    #[test]
    fn a_configuration_change_rolls_the_pods() {
        let hash = |system: &OrderSystem| {
            let c = built(system);
            let meta = c.processor.spec.unwrap().template.metadata.unwrap();
            meta.annotations.unwrap()[CONFIG_HASH].clone()
        };
        let base = system();
        let mut scaled = system();
        scaled.spec.processor.shards = 2;
        assert_eq!(
            hash(&base),
            hash(&scaled),
            "scaling is not a configuration change"
        );
        let mut changed = system();
        changed.spec.instruments[0].max_quantity = "50".into();
        assert_ne!(hash(&base), hash(&changed));
    }
}
