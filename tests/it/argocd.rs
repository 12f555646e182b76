//! The Argo CD health checks in `deploy/argocd/argocd-cm-health.yaml`, run by a Lua 5.4
//! interpreter the way Argo CD runs them (`obj` global, a `{status, message}` table back),
//! against the status fixtures in `tests/data/argocd/`: each fixture names the health it must
//! get in its `test.skycanary.io/expected-health` annotation.

use std::path::{Path, PathBuf};

use mlua::{Lua, Table, Value as LuaValue};
use serde_json::Value;
use skycanary::resources::yaml::parse_documents;

const EXPECTED: &str = "test.skycanary.io/expected-health";
const HEALTHS: &[&str] = &["Healthy", "Progressing", "Degraded", "Suspended", "Missing"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The health scripts by kind, read from the shipped ConfigMap.
fn scripts() -> Vec<(String, String)> {
    let path = repo().join("deploy/argocd/argocd-cm-health.yaml");
    let text = std::fs::read_to_string(&path).expect("read argocd-cm-health.yaml");
    let docs = parse_documents(&text).expect("parse argocd-cm-health.yaml");
    let cm = &docs[0].value;
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let data = cm["data"].as_object().expect("data");
    let mut out = Vec::new();
    for (k, v) in data {
        let kind = k
            .strip_prefix("resource.customizations.health.skycanary.io_")
            .unwrap_or_else(|| panic!("unexpected key {k}"));
        out.push((kind.to_string(), v.as_str().expect("script").to_string()));
    }
    out
}

fn to_lua(lua: &Lua, v: &Value) -> mlua::Result<LuaValue> {
    Ok(match v {
        Value::Null => LuaValue::Nil,
        Value::Bool(b) => LuaValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => LuaValue::Integer(i),
            None => LuaValue::Number(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => LuaValue::String(lua.create_string(s)?),
        Value::Array(items) => {
            let t = lua.create_table()?;
            for (i, item) in items.iter().enumerate() {
                t.set(i + 1, to_lua(lua, item)?)?;
            }
            LuaValue::Table(t)
        }
        Value::Object(map) => {
            let t = lua.create_table()?;
            for (k, item) in map {
                t.set(k.as_str(), to_lua(lua, item)?)?;
            }
            LuaValue::Table(t)
        }
    })
}

/// Runs one health script on one object: (status, message).
fn health(script: &str, obj: &Value) -> (String, String) {
    let lua = Lua::new();
    let value = to_lua(&lua, obj).expect("convert object");
    lua.globals().set("obj", value).expect("set obj");
    let hs: Table = lua
        .load(script)
        .eval()
        .unwrap_or_else(|e| panic!("health script failed on {obj}: {e}"));
    let status: String = hs.get("status").expect("hs.status");
    let message: Option<String> = hs.get("message").expect("hs.message");
    (status, message.unwrap_or_default())
}

fn fixtures() -> Vec<(PathBuf, Value)> {
    let dir = repo().join("tests/data/argocd");
    let mut out: Vec<(PathBuf, Value)> = std::fs::read_dir(&dir)
        .expect("read fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).expect("read"))
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn argocd_health_maps_every_phase() {
    let scripts = scripts();
    let kinds: Vec<&str> = scripts.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["Canary", "ScheduledAnalysis"]);
    let fixtures = fixtures();
    let mut seen = std::collections::BTreeSet::new();
    for (path, obj) in &fixtures {
        let kind = obj["kind"].as_str().expect("kind");
        let want = obj["metadata"]["annotations"][EXPECTED]
            .as_str()
            .unwrap_or_else(|| panic!("{} has no {EXPECTED}", name(path)));
        let (_, script) = scripts
            .iter()
            .find(|(k, _)| k == kind)
            .unwrap_or_else(|| panic!("no health check for {kind}"));
        let (got, message) = health(script, obj);
        assert!(HEALTHS.contains(&got.as_str()), "{}: {got}", name(path));
        assert_eq!(got, want, "{}: message {message:?}", name(path));
        if got == "Degraded" {
            assert!(
                !message.is_empty(),
                "{}: Degraded needs a reason",
                name(path)
            );
        }
        seen.insert((kind.to_string(), got));
    }
    // Every health an object of each kind can have is covered by some fixture.
    for (kind, health) in [
        ("Canary", "Healthy"),
        ("Canary", "Progressing"),
        ("Canary", "Degraded"),
        ("Canary", "Suspended"),
        ("ScheduledAnalysis", "Healthy"),
        ("ScheduledAnalysis", "Progressing"),
        ("ScheduledAnalysis", "Degraded"),
        ("ScheduledAnalysis", "Suspended"),
    ] {
        assert!(
            seen.contains(&(kind.to_string(), health.to_string())),
            "no fixture gives {kind} {health}"
        );
    }
}

#[test]
fn argocd_degraded_messages_carry_the_reason() {
    let scripts = scripts();
    let canary = &scripts[0].1;
    for (path, obj) in fixtures() {
        let file = name(&path);
        if !file.starts_with("canary-invalid") && !file.starts_with("canary-rollback-pending") {
            continue;
        }
        let reason = obj["status"]["conditions"][0]["message"]
            .as_str()
            .expect("condition message");
        let (_, message) = health(canary, &obj);
        assert!(message.contains(reason), "{file}: {message}");
    }
    let scheduled = &scripts[1].1;
    let failed: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/data/argocd/scheduled-failed.json"))
            .expect("read"),
    )
    .expect("json");
    let (_, message) = health(scheduled, &failed);
    assert!(
        message.contains("nightly-4") && message.contains("apdex 0.71 < 0.9"),
        "{message}"
    );
}
