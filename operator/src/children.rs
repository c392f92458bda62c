//! Build: every object an OrderSystem owns, as a pure function of the OrderSystem and its plan.
//!
//! | object | name | what for |
//! |---|---|---|
//! | ConfigMap | `<name>-config` | `instruments.json` for the runtime |
//! | ServiceAccount | `<name>` | the pods' identity (no API token: the runtime never calls the API) |
//! | Deployment | `<name>-ingest` | the HTTP API |
//! | Service | `<name>` | the API endpoint (port 80) and metrics (9090) |
//! | HorizontalPodAutoscaler | `<name>-ingest` | only with `ingest.autoscaling` |
//! | StatefulSet | `<name>-processor` | shard k = pod ordinal k |
//! | Service (headless) | `<name>-processor` | the StatefulSet's identities |
//! | Deployment | `<name>-projector` | events into the read projection |
//! | PodDisruptionBudget | `<name>-ingest`, `<name>-processor` | maxUnavailable 1 |
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

/// Name of the ingest Deployment and autoscaler.
pub fn ingest_name(system: &str) -> String {
    format!("{system}-ingest")
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
        "ingest" => env.push(value(
            "OMS_API_KEYS_FILE",
            format!("{KEYS_DIR}/api-keys.json"),
        )),
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

fn http_probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    }
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
                readiness_probe: Some(http_probe("/readyz", 5)),
                liveness_probe: Some(http_probe("/healthz", 10)),
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
    let instruments = serde_json::to_string_pretty(&plan.instruments).unwrap_or_default();
    let data = BTreeMap::from([("instruments.json".to_string(), instruments)]);
    let config_hash = hex::encode(Sha256::digest(
        serde_json::to_vec(&data).unwrap_or_default(),
    ));

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
    let processor = StatefulSet {
        metadata: meta(system, plan, processor_name(name), Some("processor")),
        spec: Some(StatefulSetSpec {
            replicas: Some(plan.shards),
            service_name: Some(processor_name(name)),
            // Shards are independent: start and stop them all at once.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector(plan, "processor")),
                ..LabelSelector::default()
            },
            template: pod(
                system,
                plan,
                "processor",
                spec.processor.resources.as_ref(),
                &config_hash,
            ),
            ..StatefulSetSpec::default()
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
        processor,
        processor_service: Service {
            metadata: meta(system, plan, processor_name(name), Some("processor")),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                selector: Some(selector(plan, "processor")),
                ports: Some(vec![port("metrics", ADMIN_PORT, "admin")]),
                publish_not_ready_addresses: Some(true),
                ..ServiceSpec::default()
            }),
            status: None,
        },
        projector,
        disruption_budgets: vec![
            budget(system, plan, ingest_name(name), "ingest"),
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
