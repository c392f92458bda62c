//! The command line without a cluster: `render` and `crd`.

use std::process::Command;

fn operator(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_oms-operator"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn render_prints_every_object_of_the_example() {
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/ordersystems/dev.yaml"
    );
    let (ok, out, err) = operator(&["render", "-f", manifest]);
    assert!(ok, "{err}");
    for kind in [
        "kind: ConfigMap",
        "kind: ServiceAccount",
        "kind: Deployment",
        "kind: Service",
        "kind: StatefulSet",
        "kind: PodDisruptionBudget",
        "kind: NetworkPolicy",
    ] {
        assert!(out.contains(kind), "{kind} missing from:\n{out}");
    }
    assert!(out.contains("name: dev-processor"));
    assert!(out.contains("name: dev-funds"));
    for topic in ["accounts", "commands", "events", "ledger"] {
        assert!(out.contains(&format!("# Kafka topic trading.dev.{topic}")));
    }
    // no autoscaler in the example: 13 objects, and a note per topic
    assert_eq!(out.matches("\n---\n").count() + 1, 13 + 4);
    assert!(!out.contains("HorizontalPodAutoscaler"));
}

#[test]
fn render_explains_an_invalid_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/ordersystems/dev.yaml"
    ))
    .unwrap()
    .replace("maxQuantity: \"100\"", "maxQuantity: \"0.000001\"");
    std::fs::write(&path, manifest).unwrap();
    let (ok, _, err) = operator(&["render", "-f", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("max_quantity"), "{err}");
}

#[test]
fn crd_matches_the_committed_yaml() {
    let (ok, out, _) = operator(&["crd"]);
    assert!(ok);
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/ordersystem.yaml"
    ))
    .unwrap();
    assert_eq!(
        out, committed,
        "crds/ordersystem.yaml is stale: cargo run -p operator -- crd > crds/ordersystem.yaml"
    );
}
