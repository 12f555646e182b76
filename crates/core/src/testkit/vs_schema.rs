//! Istio's CRD schema for VirtualServices, applied strictly: every VirtualService a test writes
//! (route transforms, the `route` CLI, the daemon's manifests) must be one the API server
//! would admit, and carry no field Istio does not define.
//!
//! The schema is the `openAPIV3Schema` of `virtualservices.networking.istio.io`, vendored
//! unchanged (Apache-2.0, provenance in its `$comment`) in `tests/data/istio/` so a clean clone
//! checks against it (override with `SKYCANARY_VS_SCHEMA`). A structural schema
//! leaves unknown fields to the API server's pruning; here they are errors instead, so every
//! object schema with `properties` gets `additionalProperties: false` (unless it preserves
//! unknown fields). CEL rules (`x-kubernetes-validations`) are not evaluated.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

/// Environment variable naming another copy of the schema file.
pub const SCHEMA_ENV: &str = "SKYCANARY_VS_SCHEMA";

/// Where the schema is read from: `$SKYCANARY_VS_SCHEMA`, else
/// `<repository>/tests/data/istio/virtualservice.schema.json`.
pub fn schema_path() -> PathBuf {
    match std::env::var_os(SCHEMA_ENV) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data/istio/virtualservice.schema.json"),
    }
}

/// Compiled once per test binary; a missing or unreadable schema fails the calling test with
/// the path, so a check can never pass by being skipped.
fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let path = schema_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read Istio's VirtualService schema at {} ({e}); set {SCHEMA_ENV}",
                path.display()
            )
        });
        let file: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let crd = file
            .get("openAPIV3Schema")
            .unwrap_or_else(|| panic!("{} has no openAPIV3Schema", path.display()));
        let schema = object_schema(strict(crd.clone()));
        jsonschema::draft4::new(&schema)
            .unwrap_or_else(|e| panic!("{} does not compile: {e}", path.display()))
    })
}

/// Adds `additionalProperties: false` to every object schema that lists `properties`, walking
/// only schema positions (so a field that happens to be called `items` is not mistaken for one).
fn strict(mut schema: Value) -> Value {
    let Some(o) = schema.as_object_mut() else {
        return schema;
    };
    if let Some(Value::Object(props)) = o.get_mut("properties") {
        for v in props.values_mut() {
            *v = strict(v.take());
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(v) = o.get_mut(key)
            && v.is_object()
        {
            *v = strict(v.take());
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(a)) = o.get_mut(key) {
            for v in a.iter_mut() {
                *v = strict(v.take());
            }
        }
    }
    let preserves = o
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    if o.contains_key("properties") && !o.contains_key("additionalProperties") && !preserves {
        o.insert("additionalProperties".into(), Value::Bool(false));
    }
    schema
}

/// The whole object: the CRD's `spec`/`status` plus what the API server itself checks of the
/// envelope (group, kind, name, string-valued annotations and labels).
fn object_schema(crd: Value) -> Value {
    let mut props = crd
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_else(Map::new);
    props.insert(
        "apiVersion".into(),
        json!({"type": "string", "pattern": "^networking\\.istio\\.io/(v1|v1beta1|v1alpha3)$"}),
    );
    props.insert("kind".into(), json!({"enum": ["VirtualService"]}));
    let string_map =
        json!({"type": ["object", "null"], "additionalProperties": {"type": "string"}});
    props.insert(
        "metadata".into(),
        json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "namespace": {"type": "string"},
                "annotations": string_map,
                "labels": string_map,
            },
        }),
    );
    json!({
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": props,
        "additionalProperties": false,
    })
}

/// Every way `vs` breaks the schema, as `path: message` lines; empty when it is valid.
pub fn virtual_service_violations(vs: &Value) -> Vec<String> {
    validator()
        .iter_errors(vs)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Panics, listing every violation and the object, unless `vs` is a VirtualService the API
/// server would admit with no unknown field.
#[track_caller]
pub fn assert_valid_virtual_service(vs: &Value) {
    let errs = virtual_service_violations(vs);
    assert!(
        errs.is_empty(),
        "VirtualService is not valid against Istio's CRD schema:\n  {}\nobject: {}",
        errs.join("\n  "),
        serde_json::to_string_pretty(vs).unwrap_or_default()
    );
}

/// [`assert_valid_virtual_service`] for every VirtualService document of a YAML manifest file
/// (other kinds are skipped); returns how many were checked.
#[track_caller]
pub fn assert_valid_virtual_services_in(text: &str) -> usize {
    let docs = crate::resources::yaml::parse_documents(text)
        .unwrap_or_else(|e| panic!("manifest does not parse: {e}"));
    let mut n = 0;
    for d in docs {
        if d.value.get("kind").and_then(Value::as_str) == Some("VirtualService") {
            assert_valid_virtual_service(&d.value);
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs(spec: Value) -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": spec,
        })
    }

    #[test]
    fn a_plain_weighted_split_is_valid() {
        assert_valid_virtual_service(&vs(json!({
            "hosts": ["reviews"],
            "http": [{"name": "primary", "route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                {"destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}}, "weight": 10},
            ]}],
        })));
    }

    #[test]
    fn unknown_fields_wrong_types_and_bad_unions_are_reported_with_their_path() {
        let errs = virtual_service_violations(&vs(json!({
            "http": [{"route": [{"destination": {"host": "a", "hots": "b"}, "weight": "10"}]}],
        })));
        assert!(
            errs.iter()
                .any(|e| e.contains("/spec/http/0/route/0/destination") && e.contains("hots")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("/spec/http/0/route/0/weight")),
            "{errs:?}"
        );
        let errs = virtual_service_violations(&vs(json!({
            "http": [{"match": [{"headers": {"x": {"exact": "a", "prefix": "b"}}}],
                      "route": [{"destination": {"host": "a"}}]}],
        })));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("/spec/http/0/match/0/headers/x")),
            "exact and prefix together: {errs:?}"
        );
        let errs = virtual_service_violations(
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {}, "spec": {}, "extra": 1}),
        );
        assert!(errs.len() >= 4, "{errs:?}");
        let mut bad_meta = vs(json!({}));
        bad_meta["metadata"]["annotations"] = json!({"a": 1});
        assert!(!virtual_service_violations(&bad_meta).is_empty());
    }

    #[test]
    fn manifests_are_checked_per_document() {
        let text = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec: {host: x, bogus: 1}\n---\n\
                    apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: v}\nspec: {hosts: [x]}\n";
        assert_eq!(assert_valid_virtual_services_in(text), 1);
        let bad = text.replace("spec: {hosts: [x]}", "spec: {hosts: [x], htp: []}");
        let r = std::panic::catch_unwind(|| assert_valid_virtual_services_in(&bad));
        assert!(r.is_err(), "an unknown spec field fails the check");
    }
}
