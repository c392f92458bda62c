//! The Argo CD health check (`examples/argocd/health/oms.dev/OrderSystem/health.lua`) run by a
//! Lua 5.1 interpreter, as Argo CD runs it, on every case of its `health_test.yaml`; and the
//! copy embedded in the argocd-cm example is the same script.

mod common;

use common::argocd::{check_dir, health};
use serde_yaml::Value;
use std::path::Path;

#[test]
fn every_case_of_health_test_yaml() {
    let dir = check_dir();
    let cases: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("health_test.yaml")).unwrap())
            .unwrap();
    let cases = cases["tests"].as_sequence().unwrap();
    assert!(cases.len() >= 8, "the cases cover every status");
    let mut statuses = std::collections::BTreeSet::new();
    for case in cases {
        let input = case["inputPath"].as_str().unwrap();
        let object: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join(input)).unwrap()).unwrap();
        let (status, message) = health(&object);
        assert_eq!(
            (status.as_str(), message.as_str()),
            (
                case["healthStatus"]["status"].as_str().unwrap(),
                case["healthStatus"]["message"].as_str().unwrap()
            ),
            "{input}"
        );
        statuses.insert(status);
    }
    assert_eq!(
        statuses.into_iter().collect::<Vec<_>>(),
        ["Degraded", "Healthy", "Progressing", "Suspended"]
    );
}

#[test]
fn argocd_cm_example_embeds_the_same_script() {
    let script = std::fs::read_to_string(check_dir().join("health.lua")).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/argocd/argocd-cm.yaml");
    let config_map: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let embedded = config_map["data"]["resource.customizations.health.oms.dev_OrderSystem"]
        .as_str()
        .expect("argocd-cm.yaml has the OrderSystem health customization");
    assert_eq!(embedded.trim_end(), script.trim_end());
}
