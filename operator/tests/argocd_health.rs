//! The Argo CD health check (`examples/argocd/health/oms.dev/OrderSystem/health.lua`) run by a
//! Lua 5.1 interpreter, as Argo CD runs it, on every case of its `health_test.yaml`; and the
//! copy embedded in the argocd-cm example is the same script.

use serde_yaml::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn check_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/argocd/health/oms.dev/OrderSystem")
}

/// A YAML value as a Lua expression; keys are always strings, as Argo CD's conversion makes them.
fn lua(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Sequence(items) => {
            let items: Vec<String> = items.iter().map(lua).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Mapping(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(key, value)| {
                    let key = match key {
                        Value::String(s) => s.clone(),
                        other => serde_yaml::to_string(other).unwrap().trim().to_string(),
                    };
                    format!("[{}] = {}", quote(&key), lua(value))
                })
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        Value::Tagged(tagged) => lua(&tagged.value),
    }
}

fn quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs the check on one object: (status, message).
fn health(script: &Path, object: &Value) -> (String, String) {
    let program = format!(
        "obj = {}\nlocal hs = dofile({})\nio.write(hs.status, \"\\n\", hs.message or \"\")",
        lua(object),
        quote(&script.display().to_string())
    );
    let output = Command::new("lua5.1")
        .args(["-e", &program])
        .output()
        .expect("lua5.1 (Debian package lua5.1; scripts/deps installs it)");
    assert!(
        output.status.success(),
        "lua5.1 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let (status, message) = text.split_once('\n').unwrap();
    (status.into(), message.into())
}

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
        let object: Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join(input)).unwrap()).unwrap();
        let (status, message) = health(&dir.join("health.lua"), &object);
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
