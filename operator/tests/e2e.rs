//! The operator as a process against the real cluster of `scripts/services`, real Kafka topics.
//! Its OrderSystems name an image no registry serves here, so their pods never start and
//! readiness conditions stay False by design; `oms-runtime/tests/kubernetes.rs` runs real pods.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn admin(env: &Env) -> AdminClient<DefaultClientContext> {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &env.kafka)
        .create()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_yields_every_child_topics_and_status() {
    let Some(env) = env() else { return };
    let client = client(&env).await;
    install_crd(&client).await;
    let ns = namespace(&client, "apply").await;
    let _operator = Operator::start(&env, &ns);
    let system = create(&client, &ns, &manifest(&env, "desk", 4, 2)).await;
    let uid = system.metadata.uid.clone().unwrap();

    let owned = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        meta.owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o.uid == uid && o.controller == Some(true)))
    };
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let set = wait(WAIT, "the processor StatefulSet", || async {
        sets.get_opt("desk-processor").await.ok().flatten()
    })
    .await;
    assert!(owned(&set.metadata));
    assert_eq!(set.spec.as_ref().unwrap().replicas, Some(2));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let ingest = deployments.get("desk-ingest").await.unwrap();
    assert!(owned(&ingest.metadata));
    assert_eq!(
        ingest.spec.as_ref().unwrap().replicas,
        Some(2),
        "ingest.replicas defaults to 2"
    );
    let managers: Vec<_> = ingest
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"oms-operator".to_string()),
        "server-side applied by oms-operator: {managers:?}"
    );
    assert!(owned(
        &deployments.get("desk-projector").await.unwrap().metadata
    ));
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    assert!(owned(&services.get("desk").await.unwrap().metadata));
    let headless = services.get("desk-processor").await.unwrap();
    assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    // the funds stage: its own StatefulSet (one shard by default), headless Service, budget
    let funds = sets.get("desk-funds").await.unwrap();
    assert!(owned(&funds.metadata));
    assert_eq!(funds.spec.as_ref().unwrap().replicas, Some(1));
    let headless = services.get("desk-funds").await.unwrap();
    assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    let config: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let data = config.get("desk-config").await.unwrap().data.unwrap();
    assert!(data["instruments.json"].contains("BTC-USDT"));
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    assert!(owned(&accounts.get("desk").await.unwrap().metadata));
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    assert!(owned(&budgets.get("desk-ingest").await.unwrap().metadata));
    assert!(owned(
        &budgets.get("desk-processor").await.unwrap().metadata
    ));
    assert!(owned(&budgets.get("desk-funds").await.unwrap().metadata));
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
    assert!(owned(&policies.get("desk").await.unwrap().metadata));

    // the topics exist in the real broker
    let prefix = format!("{ns}.desk");
    for topic in ["accounts", "commands", "events", "ledger"] {
        assert_eq!(
            partitions(&env, &format!("{prefix}.{topic}")),
            Some(4),
            "{topic}"
        );
    }
    // status for this generation: topics ready, waiting for pods (their image is not served)
    let topics = wait(WAIT, "TopicsReady", || {
        condition(&client, &ns, "desk", "TopicsReady")
    })
    .await;
    assert_eq!(topics.0, "True");
    let progressing = wait(WAIT, "Progressing", || {
        condition(&client, &ns, "desk", "Progressing")
    })
    .await;
    assert_eq!(
        (progressing.0.as_str(), progressing.1.as_str()),
        ("True", "WaitingForPods")
    );
    let status = systems(&client, &ns)
        .get("desk")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.shards.unwrap().summary, "0/2");
    assert_eq!(status.funds.unwrap().summary, "0/1");
    assert_eq!(status.topics.len(), 4, "{:?}", status.topics);
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("http://desk.{ns}.svc:80").as_str())
    );
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(1))
    );
    // kubectl shows the printer columns
    let out = kubectl(&env, &["get", "omsys", "desk", "-n", &ns]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("READY") && text.contains("SHARDS") && text.contains("0/2"),
        "{text}"
    );
    // an Event says what happened
    let events = kubectl(&env, &["get", "events", "-n", &ns]);
    assert!(
        String::from_utf8_lossy(&events.stdout).contains("created"),
        "no topic event"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_and_configuration_changes() {
    let Some(env) = env() else { return };
    let client = client(&env).await;
    install_crd(&client).await;
    let ns = namespace(&client, "scale").await;
    let _operator = Operator::start(&env, &ns);
    create(&client, &ns, &manifest(&env, "desk", 6, 2)).await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let hash = |set: &StatefulSet| {
        set.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["oms.dev/config-hash"]
            .clone()
    };
    let before = wait(WAIT, "the StatefulSet", || async {
        sets.get_opt("desk-processor").await.ok().flatten()
    })
    .await;

    // shards 2 -> 3 through the spec
    let patch = json!({"spec": {"processor": {"shards": 3}}});
    systems(&client, &ns)
        .patch("desk", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let scaled = wait(WAIT, "3 shards", || async {
        let set = sets.get("desk-processor").await.ok()?;
        (set.spec.as_ref()?.replicas == Some(3)).then_some(set)
    })
    .await;
    let env_var = |set: &StatefulSet, name: &str| {
        set.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(env_var(&scaled, "OMS_SHARDS").as_deref(), Some("3"));
    // the funds stage scales on its own: 1 -> 2
    let patch = json!({"spec": {"funds": {"shards": 2}}});
    systems(&client, &ns)
        .patch("desk", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let funds = wait(WAIT, "2 funds shards", || async {
        let set = sets.get("desk-funds").await.ok()?;
        (set.spec.as_ref()?.replicas == Some(2)).then_some(set)
    })
    .await;
    assert_eq!(env_var(&funds, "OMS_SHARDS").as_deref(), Some("2"));
    assert_eq!(
        sets.get("desk-processor")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(3),
        "the processors are left alone"
    );
    assert_eq!(
        hash(&scaled),
        hash(&before),
        "scaling is not a configuration change"
    );

    // ingest replicas through `kubectl scale` (the scale subresource)
    let out = kubectl(&env, &["scale", "omsys", "desk", "-n", &ns, "--replicas=4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait(WAIT, "4 ingest replicas", || async {
        let d = deployments.get("desk-ingest").await.ok()?;
        (d.spec?.replicas == Some(4)).then_some(())
    })
    .await;

    // a configuration change rolls the pods
    let patch = json!({"spec": {"instruments": [{"symbol": "BTC-USDT", "base": "BTC", "quote": "USDT",
        "tickSize": "0.01", "lotSize": "0.00001", "minQuantity": "0.00001", "maxQuantity": "50"}]}});
    systems(&client, &ns)
        .patch("desk", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait(WAIT, "a new config hash", || async {
        let set = sets.get("desk-processor").await.ok()?;
        (hash(&set) != hash(&before)).then_some(())
    })
    .await;

    // A child the spec no longer wants, of any kind, goes with the next spec change (here a
    // ConfigMap an earlier version made); one with the labels but another owner stays.
    let system = systems(&client, &ns).get("desk").await.unwrap();
    let configs: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let labelled = |name: &str, owned: bool| {
        let mut meta = json!({
            "name": name,
            "labels": {"app.kubernetes.io/instance": "desk",
                       "app.kubernetes.io/managed-by": "oms-operator"},
        });
        if owned {
            meta["ownerReferences"] = json!([{
                "apiVersion": "oms.dev/v1alpha1", "kind": "OrderSystem", "name": "desk",
                "uid": system.metadata.uid.clone().unwrap(), "controller": true,
            }]);
        }
        serde_json::from_value::<ConfigMap>(json!({"metadata": meta})).unwrap()
    };
    for (name, owned) in [("desk-old-config", true), ("desk-someone-elses", false)] {
        configs
            .create(&Default::default(), &labelled(name, owned))
            .await
            .unwrap();
    }

    // autoscaling on: an HPA appears and owns the replica count; off: it goes away
    let patch = json!({"spec": {"ingest": {"autoscaling": {"minReplicas": 2, "maxReplicas": 5}}}});
    systems(&client, &ns)
        .patch("desk", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let autoscalers: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    let hpa = wait(WAIT, "the autoscaler", || async {
        autoscalers.get_opt("desk-ingest").await.ok().flatten()
    })
    .await;
    assert_eq!(hpa.spec.max_replicas, 5);
    let patch = json!({"spec": {"ingest": {"autoscaling": null}}});
    systems(&client, &ns)
        .patch("desk", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait(WAIT, "the autoscaler to go", || async {
        autoscalers
            .get_opt("desk-ingest")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    wait(WAIT, "the orphaned ConfigMap to go", || async {
        configs
            .get_opt("desk-old-config")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        configs
            .get_opt("desk-someone-elses")
            .await
            .unwrap()
            .is_some(),
        "an object the system does not own is never deleted"
    );
    assert!(configs.get_opt("desk-config").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_refused_by_the_api_server_with_their_messages() {
    let Some(env) = env() else { return };
    let client = client(&env).await;
    install_crd(&client).await;
    let ns = namespace(&client, "invalid").await;
    let apply = |manifest: serde_json::Value| {
        let path = std::env::temp_dir().join(format!("{ns}-{}.json", rand_suffix()));
        std::fs::write(&path, manifest.to_string()).unwrap();
        let out = kubectl(&env, &["apply", "-n", &ns, "-f", path.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let too_many_shards = manifest(&env, "a", 2, 3);
    assert!(
        apply(too_many_shards).contains("processor.shards must be between 1 and kafka.partitions")
    );
    let mut both = manifest(&env, "b", 2, 1);
    both["spec"]["redis"]["secretRef"] = json!({"name": "r", "key": "url"});
    assert!(apply(both).contains("redis needs exactly one of url and secretRef"));
    let mut zero = manifest(&env, "c", 2, 1);
    zero["spec"]["processor"]["shards"] = json!(0);
    assert!(apply(zero).contains("processor.shards"));
    let mut funds = manifest(&env, "g", 2, 1);
    funds["spec"]["funds"] = json!({"shards": 3});
    assert!(apply(funds).contains("funds.shards must be between 1 and kafka.partitions"));
    let mut fee = manifest(&env, "h", 2, 1);
    fee["spec"]["instruments"][0]["takerFeeBps"] = json!(5000);
    assert!(apply(fee).contains("takerFeeBps"));
    let mut bad_decimal = manifest(&env, "d", 2, 1);
    bad_decimal["spec"]["instruments"][0]["tickSize"] = json!("1e-2");
    assert!(apply(bad_decimal).contains("tickSize"));
    let mut twice = manifest(&env, "e", 2, 1);
    let first = twice["spec"]["instruments"][0].clone();
    twice["spec"]["instruments"] = json!([first.clone(), first]);
    assert!(apply(twice).contains("Duplicate value"));
    // partitions are immutable
    let ok = manifest(&env, "f", 2, 1);
    assert_eq!(apply(ok.clone()), "");
    let mut fewer = ok;
    fewer["spec"]["kafka"]["partitions"] = json!(1);
    assert!(apply(fewer).contains("kafka.partitions is immutable"));
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_grow_but_never_shrink_and_drift_is_reverted() {
    let Some(env) = env() else { return };
    let client = client(&env).await;
    install_crd(&client).await;
    let ns = namespace(&client, "topics").await;
    let admin = admin(&env);
    let options = AdminOptions::new();
    // an existing commands topic with fewer partitions, an events topic with more
    let commands = format!("{ns}.grow.commands");
    let events = format!("{ns}.grow.events");
    admin
        .create_topics(
            [
                &NewTopic::new(&commands, 2, TopicReplication::Fixed(1)),
                &NewTopic::new(&events, 8, TopicReplication::Fixed(1)),
            ],
            &options,
        )
        .await
        .unwrap();
    let _operator = Operator::start(&env, &ns);
    create(&client, &ns, &manifest(&env, "grow", 4, 1)).await;
    wait(WAIT, "the commands topic to grow", || async {
        (partitions(&env, &commands) == Some(4)).then_some(())
    })
    .await;
    let topics = wait(WAIT, "TopicsReady", || {
        condition(&client, &ns, "grow", "TopicsReady")
    })
    .await;
    assert_eq!(
        (topics.0.as_str(), topics.1.as_str()),
        ("False", "NotSupported"),
        "{topics:?}"
    );
    assert!(topics.2.contains("never shrink"), "{}", topics.2);
    assert_eq!(partitions(&env, &events), Some(8), "never shrunk");
    let degraded = condition(&client, &ns, "grow", "Degraded").await.unwrap();
    assert_eq!(
        (degraded.0.as_str(), degraded.1.as_str()),
        ("True", "NotSupported")
    );

    // configuration drift on a healthy system is reverted
    create(&client, &ns, &manifest(&env, "drift", 2, 1)).await;
    let topic = format!("{ns}.drift.events");
    wait(WAIT, "the drift topic", || async {
        partitions(&env, &topic).map(|_| ())
    })
    .await;
    let alter = AlterConfig::new(ResourceSpecifier::Topic(&topic)).set("retention.ms", "1000");
    admin.alter_configs([&alter], &options).await.unwrap();
    // any change of the object triggers a reconcile; a label does not bump the generation
    let touch = json!({"metadata": {"labels": {"touched": "yes"}}});
    systems(&client, &ns)
        .patch("drift", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    wait(WAIT, "retention.ms reverted", || async {
        let described = admin
            .describe_configs([&ResourceSpecifier::Topic(&topic)], &options)
            .await
            .ok()?;
        let resource = described.into_iter().next()?.ok()?;
        let retention = resource
            .entries
            .iter()
            .find(|e| e.name == "retention.ms")?
            .value
            .clone()?;
        (retention == "604800000").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_changes_nothing_until_resumed() {
    let Some(env) = env() else { return };
    let client = client(&env).await;
    install_crd(&client).await;
    let ns = namespace(&client, "pause").await;
    let _operator = Operator::start(&env, &ns);
    create(&client, &ns, &manifest(&env, "desk", 4, 1)).await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    wait(WAIT, "the StatefulSet", || async {
        sets.get_opt("desk-processor").await.ok().flatten()
    })
    .await;
    let pause = json!({"metadata": {"annotations": {"oms.dev/paused": "true"}}, "spec": {"processor": {"shards": 2}}});
    systems(&client, &ns)
        .patch("desk", &PatchParams::default(), &Patch::Merge(&pause))
        .await
        .unwrap();
    wait(WAIT, "ReconciliationPaused", || async {
        let system = systems(&client, &ns).get("desk").await.ok()?;
        let paused = system
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "ReconciliationPaused")?;
        (paused.status == "True").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let set = sets.get("desk-processor").await.unwrap();
    assert_eq!(
        set.spec.unwrap().replicas,
        Some(1),
        "nothing changes while paused"
    );
    let resume = json!({"metadata": {"annotations": {"oms.dev/paused": null}}});
    systems(&client, &ns)
        .patch("desk", &PatchParams::default(), &Patch::Merge(&resume))
        .await
        .unwrap();
    wait(WAIT, "2 shards after resuming", || async {
        let set = sets.get("desk-processor").await.ok()?;
        (set.spec?.replicas == Some(2)).then_some(())
    })
    .await;
    let paused = wait(WAIT, "resumed", || {
        condition(&client, &ns, "desk", "ReconciliationPaused")
    })
    .await;
    assert_eq!(paused.0, "False");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_honours_the_policy_and_children_are_collected() {
    let Some(env) = env() else { return };
    let client = client(&env).await;
    install_crd(&client).await;
    let ns = namespace(&client, "delete").await;
    let _operator = Operator::start(&env, &ns);
    let mut delete = manifest(&env, "gone", 2, 1);
    delete["spec"]["deletionPolicy"] = json!("Delete");
    create(&client, &ns, &delete).await;
    create(&client, &ns, &manifest(&env, "kept", 2, 1)).await;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    for name in ["gone", "kept"] {
        wait(WAIT, "topics", || async {
            partitions(&env, &format!("{ns}.{name}.commands")).map(|_| ())
        })
        .await;
        wait(WAIT, "children", || async {
            sets.get_opt(&format!("{name}-processor"))
                .await
                .ok()
                .flatten()
        })
        .await;
    }
    let finalizers = |name: &str| {
        let systems = systems(&client, &ns);
        let name = name.to_string();
        async move {
            systems
                .get(&name)
                .await
                .unwrap()
                .metadata
                .finalizers
                .unwrap_or_default()
        }
    };
    wait(WAIT, "the finalizer on the Delete system", || async {
        finalizers("gone")
            .await
            .contains(&"oms.dev/topics".to_string())
            .then_some(())
    })
    .await;
    assert!(
        finalizers("kept").await.is_empty(),
        "Retain needs no finalizer"
    );

    for name in ["gone", "kept"] {
        systems(&client, &ns)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    for name in ["gone", "kept"] {
        wait(WAIT, "the OrderSystem to go", || async {
            systems(&client, &ns)
                .get_opt(name)
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
        // garbage collection by kube-controller-manager follows the owner references
        wait(WAIT, "children collected", || async {
            sets.get_opt(&format!("{name}-processor"))
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
    }
    assert_eq!(
        partitions(&env, &format!("{ns}.gone.commands")),
        None,
        "Delete removes the topics"
    );
    assert_eq!(
        partitions(&env, &format!("{ns}.kept.commands")),
        Some(2),
        "Retain keeps them"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_operator_converges_and_a_bad_object_stops_nothing() {
    let Some(env) = env() else { return };
    let client = client(&env).await;
    install_crd(&client).await;
    let ns = namespace(&client, "restart").await;
    let mut operator = Operator::start(&env, &ns);
    // semantically invalid (passes the schema, fails the operator's checks)
    let mut bad = manifest(&env, "bad", 2, 1);
    bad["spec"]["instruments"][0]["minQuantity"] = json!("1000");
    create(&client, &ns, &bad).await;
    for i in 0..5 {
        create(&client, &ns, &manifest(&env, &format!("s{i}"), 2, 1)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    operator.kill9(); // mid-reconcile
    let _operator = Operator::start(&env, &ns);
    for i in 0..5 {
        let name = format!("s{i}");
        let topics = wait(WAIT, "convergence", || {
            condition(&client, &ns, &name, "TopicsReady")
        })
        .await;
        assert_eq!(topics.0, "True");
    }
    let degraded = wait(WAIT, "the bad object's status", || {
        condition(&client, &ns, "bad", "Degraded")
    })
    .await;
    assert_eq!(
        (degraded.0.as_str(), degraded.1.as_str()),
        ("True", "InvalidSpec")
    );
    assert!(
        degraded.2.contains("min_quantity is above max_quantity"),
        "{}",
        degraded.2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_fail_over() {
    let Some(env) = env() else { return };
    let client = client(&env).await;
    install_crd(&client).await;
    let ns = namespace(&client, "leader").await;
    let mut first = Operator::start(&env, &ns);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = Operator::start(&env, &ns);
    wait(WAIT, "one leader", || async {
        first.leads().await.then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!second.leads().await, "only one leader");
    create(&client, &ns, &manifest(&env, "one", 2, 1)).await;
    wait(WAIT, "the leader reconciles", || {
        condition(&client, &ns, "one", "TopicsReady")
    })
    .await;
    first.kill9();
    // the standby takes over once the lease expires
    wait(Duration::from_secs(60), "the standby to lead", || async {
        second.leads().await.then_some(())
    })
    .await;
    create(&client, &ns, &manifest(&env, "two", 2, 1)).await;
    wait(WAIT, "the new leader reconciles", || {
        condition(&client, &ns, "two", "TopicsReady")
    })
    .await;
}

/// The Kafka Secret an OrderSystem names: missing is `Degraded` with its reason (not "no
/// properties"); once it exists in the Secret format of the deployment guide (one property per
/// line, a comment), the operator reaches Kafka with it and the topics are made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_kafka_secret_is_degraded_until_it_exists() {
    let Some(env) = env() else { return };
    let client = client(&env).await;
    install_crd(&client).await;
    let ns = namespace(&client, "secret").await;
    let operator = Operator::start(&env, &ns);
    let mut system = manifest(&env, "sasl", 2, 1);
    system["spec"]["kafka"]["secretRef"] = json!({"name": "kafka-auth"});
    create(&client, &ns, &system).await;
    let degraded = wait(WAIT, "Degraded for the missing Secret", || async {
        let degraded = condition(&client, &ns, "sasl", "Degraded").await?;
        (degraded.0 == "True").then_some(degraded)
    })
    .await;
    assert_eq!(degraded.1, "KafkaSecretInvalid", "{degraded:?}");
    assert!(degraded.2.contains("kafka-auth"), "{degraded:?}");
    assert_eq!(
        condition(&client, &ns, "sasl", "TopicsReady")
            .await
            .unwrap()
            .0,
        "False"
    );
    // each failed reconcile is counted once, under its own label, not as a Kafka failure
    // (failures first: a failure is counted after its reconcile started)
    let failures = operator
        .metric("oms_operator_reconcile_failures_total{error=\"secret\"}")
        .await;
    let runs = operator.metric("oms_operator_reconciles_total").await;
    assert!(
        failures >= 1.0 && failures <= runs,
        "{failures} failures in {runs} reconciles"
    );
    let kafka = "oms_operator_reconcile_failures_total{error=\"kafka\"}";
    assert_eq!(operator.metric(kafka).await, 0.0);

    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "kafka-auth"},
        "stringData": {"kafka.properties":
            "# the test broker has no SASL\nsecurity.protocol=PLAINTEXT\nclient.id=oms-operator-test\n"}
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .create(&Default::default(), &secret)
        .await
        .unwrap();
    // the failure's backoff (or the Secret's arrival) brings the next reconcile
    let topics = wait(
        Duration::from_secs(120),
        "topics with the Secret's properties",
        || async {
            let topics = condition(&client, &ns, "sasl", "TopicsReady").await?;
            (topics.0 == "True").then_some(topics)
        },
    )
    .await;
    assert_eq!(topics.1, "TopicsMatch");
    assert_eq!(
        condition(&client, &ns, "sasl", "Degraded").await.unwrap().0,
        "False"
    );
}
