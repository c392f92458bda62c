//! The Helm chart against the real kube-apiserver: every rendering accepted by a server-side
//! dry run, then a real install whose ServiceAccount, RBAC and container arguments run the
//! operator (this binary, as the chart's Deployment would start it) until it reconciles the dev
//! example OrderSystem and, on deletion, removes its finalizer and topics.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
const KUBE_VERSION: &str = "1.36.3";

struct Tools {
    helm: PathBuf,
    prometheus_crds: PathBuf,
}

fn tools() -> Tools {
    let get = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run `eval \"$(scripts/deploy-tools)\"` first (scripts/test does)")
        })
    };
    Tools {
        helm: get("OMS_HELM").into(),
        prometheus_crds: get("OMS_PROMETHEUS_CRDS").into(),
    }
}

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/oms-operator")
}

fn ok(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn helm(env: &Env, tools: &Tools, args: &[&str]) -> String {
    let output = Command::new(&tools.helm)
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(args)
        .output()
        .expect("run helm");
    ok(output, &format!("helm {}", args.join(" ")))
}

/// `kubectl apply --server-side` of `manifests` (YAML), dry run or not.
fn apply(env: &Env, manifests: &str, dry_run: bool) -> String {
    let mut args = vec![
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=chart-test",
        "-f",
        "-",
    ];
    if dry_run {
        args.push("--dry-run=server");
    }
    let mut child = Command::new(&env.kubectl)
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifests.as_bytes())
        .unwrap();
    ok(child.wait_with_output().unwrap(), "kubectl apply")
}

async fn install_monitoring_crds(env: &Env, tools: &Tools) {
    for kind in ["servicemonitors", "podmonitors", "prometheusrules"] {
        let path = tools
            .prometheus_crds
            .join(format!("monitoring.coreos.com_{kind}.yaml"));
        apply(env, &std::fs::read_to_string(path).unwrap(), false);
        ok(
            kubectl(
                env,
                &[
                    "wait",
                    "--for=condition=Established",
                    "--timeout=30s",
                    &format!("crd/{kind}.monitoring.coreos.com"),
                ],
            ),
            "waiting for the monitoring CRDs",
        );
    }
}

/// A kubeconfig that authenticates as `service_account` with a fresh token.
fn service_account_kubeconfig(
    env: &Env,
    namespace: &str,
    service_account: &str,
    dir: &Path,
) -> PathBuf {
    let token = ok(
        kubectl(
            env,
            &[
                "create",
                "token",
                service_account,
                "-n",
                namespace,
                "--duration=1h",
            ],
        ),
        "kubectl create token",
    );
    let mut config: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&env.kubeconfig).unwrap()).unwrap();
    for user in config["users"].as_array_mut().unwrap() {
        user["user"] = serde_json::json!({"token": token.trim()});
    }
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

/// Sets (`key=value`) or removes (`key-`) an annotation of an OrderSystem.
fn annotate(env: &Env, namespace: &str, name: &str, annotation: &str) {
    ok(
        kubectl(
            env,
            &["annotate", "-n", namespace, "omsys", name, annotation],
        ),
        "kubectl annotate",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendering_passes_a_server_side_dry_run() {
    let Some(env) = env() else { return };
    let tools = tools();
    let client = client(&env).await;
    install_crd(&client).await;
    install_monitoring_crds(&env, &tools).await;
    let ns = namespace(&client, "chart-dry").await;
    let chart = chart();
    let everything = "metrics.serviceMonitor.enabled=true,metrics.runtimePodMonitor.enabled=true,\
                      prometheusRule.enabled=true,grafanaDashboard.enabled=true";
    let watch_one = format!("watchNamespace={ns},replicaCount=1,networkPolicy.enabled=false");
    for values in [
        "",
        everything,
        &watch_one,
        "crds.install=false,rbac.create=false,serviceAccount.create=false,serviceAccount.name=x",
    ] {
        let mut args = vec![
            "template",
            "oms",
            chart.to_str().unwrap(),
            "--namespace",
            &ns,
            "--kube-version",
            KUBE_VERSION,
        ];
        if !values.is_empty() {
            args.extend(["--set", values]);
        }
        let rendered = helm(&env, &tools, &args);
        let kinds = rendered.matches("\nkind: ").count();
        let applied = apply(&env, &rendered, true);
        assert_eq!(
            applied.matches("(server dry run)").count(),
            kinds,
            "every object of --set {values:?} is accepted:\n{applied}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_chart_runs_an_operator_that_reconciles_the_example() {
    let Some(env) = env() else { return };
    let tools = tools();
    let client = client(&env).await;
    install_crd(&client).await;
    install_monitoring_crds(&env, &tools).await;
    let release_ns = namespace(&client, "chart-op").await;
    let apps_ns = namespace(&client, "chart-apps").await;

    // The release, watching one namespace so that it leaves the other tests' objects alone.
    helm(
        &env,
        &tools,
        &[
            "install",
            "oms",
            chart().to_str().unwrap(),
            "--namespace",
            &release_ns,
            "--take-ownership",
            "--set",
            &format!(
                "watchNamespace={apps_ns},metrics.serviceMonitor.enabled=true,\
                 metrics.runtimePodMonitor.enabled=true,prometheusRule.enabled=true,\
                 grafanaDashboard.enabled=true"
            ),
        ],
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &release_ns);
    let deployment = deployments.get("oms-oms-operator").await.unwrap();
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    let container = &pod.containers[0];
    let service_account = pod.service_account_name.unwrap();

    // The operator as the Deployment starts it: its arguments, its service account's token.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig(&env, &release_ns, &service_account, dir.path());
    let port = free_port();
    let args: Vec<String> = container
        .args
        .clone()
        .unwrap()
        .into_iter()
        .map(|arg| {
            if arg.starts_with("--metrics-addr=") {
                format!("--metrics-addr=127.0.0.1:{port}")
            } else {
                arg
            }
        })
        .collect();
    let mut operator = Command::new(env!("CARGO_BIN_EXE_oms-operator"))
        .args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", &release_ns)
        .env("HOSTNAME", "oms-oms-operator-0")
        .env("OMS_LOG", "warn,kube_client=error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();

    // The dev example, pointed at the test Kafka.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ordersystems/dev.yaml");
    let mut manifest: Value =
        serde_yaml::from_str(&std::fs::read_to_string(example).unwrap()).unwrap();
    manifest["metadata"]["namespace"] = apps_ns.clone().into();
    manifest["spec"]["kafka"]["bootstrapServers"] = env.kafka.clone().into();
    let name = manifest["metadata"]["name"].as_str().unwrap().to_string();
    create(&client, &apps_ns, &manifest).await;

    let (status, reason, message) = wait(WAIT, "TopicsReady for the current generation", || {
        condition(&client, &apps_ns, &name, "TopicsReady")
    })
    .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "TopicsMatch"),
        "{message}"
    );
    let (degraded, reason, message) = condition(&client, &apps_ns, &name, "Degraded")
        .await
        .unwrap();
    assert_eq!(degraded, "False", "{reason}: {message}");
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &apps_ns);
    let processor = sets.get(&format!("{name}-processor")).await.unwrap();
    assert_eq!(processor.spec.unwrap().replicas, Some(2));
    let funds = sets.get(&format!("{name}-funds")).await.unwrap();
    assert_eq!(funds.spec.unwrap().replicas, Some(2));
    let prefix = format!("{apps_ns}.{name}");
    assert_eq!(partitions(&env, &format!("{prefix}.commands")), Some(6));

    // Argo CD's view of the real status: the image is not served, so pods never become ready.
    let live = || async {
        serde_json::to_value(systems(&client, &apps_ns).get(&name).await.unwrap()).unwrap()
    };
    assert_eq!(
        argocd::health(&live().await),
        (
            "Progressing".to_string(),
            "children are applied; waiting for pods".to_string()
        )
    );
    annotate(&env, &apps_ns, &name, "oms.dev/paused=true");
    wait(WAIT, "the paused condition", || async {
        condition(&client, &apps_ns, &name, "ReconciliationPaused")
            .await
            .filter(|(status, _, _)| status == "True")
    })
    .await;
    assert_eq!(argocd::health(&live().await).0, "Suspended");
    annotate(&env, &apps_ns, &name, "oms.dev/paused-");

    // deletionPolicy Delete: the operator may remove its finalizer and the topics.
    systems(&client, &apps_ns)
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait(WAIT, "the OrderSystem to be gone", || async {
        let gone = systems(&client, &apps_ns).get_opt(&name).await.unwrap();
        gone.is_none().then_some(())
    })
    .await;
    wait(WAIT, "the topics to be deleted", || async {
        partitions(&env, &format!("{prefix}.commands"))
            .is_none()
            .then_some(())
    })
    .await;
    let _ = operator.kill();
    let _ = operator.wait();

    // Uninstalling keeps the CRD, and with it every OrderSystem.
    helm(
        &env,
        &tools,
        &["uninstall", "oms", "--namespace", &release_ns],
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    assert!(
        crds.get_opt("ordersystems.oms.dev")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        deployments
            .get_opt("oms-oms-operator")
            .await
            .unwrap()
            .is_none()
    );
}
