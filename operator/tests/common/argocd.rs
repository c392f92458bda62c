//! The Argo CD health check of OrderSystems, run by `lua5.1` as Argo CD runs it.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `examples/argocd/health/oms.dev/OrderSystem`: the script, its cases and their inputs.
pub fn check_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/argocd/health/oms.dev/OrderSystem")
}

/// A JSON value as a Lua expression, as Argo CD converts objects for its scripts.
fn lua(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(key, value)| format!("[{}] = {}", quote(key), lua(value)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
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

/// The check's verdict on one object: (status, message).
pub fn health(object: &Value) -> (String, String) {
    let script = check_dir().join("health.lua");
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
