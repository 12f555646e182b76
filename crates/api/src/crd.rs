//! CustomResourceDefinitions generated from the Rust types (DESIGN §2, §7).
//!
//! The serde types are the single source: schemars derives a JSON Schema from them, and
//! [`structural`] rewrites it into the structural OpenAPI v3 subset Kubernetes requires:
//! every `$ref` inlined, a `type` on every node, `nullable` instead of `null` branches,
//! enums of documented variants collapsed into `enum`, externally or internally tagged enums
//! merged into one object (exactly one key via `minProperties`/`maxProperties` for the
//! externally tagged ones), `x-kubernetes-int-or-string` for [`IntOrString`], and
//! `x-kubernetes-preserve-unknown-fields` only for the string-or-object `window`, which has no
//! structural form. A tuple (`prefixItems`) is refused: the API types use structs instead.
//! Defaults are left out on purpose: the daemon applies them, so the API server never
//! rewrites what a user stored.
//!
//! `skycanary crds` prints the result; `deploy/crds/` holds the same text and a test of the
//! root package (`resources::crd`, which re-exports this module) fails when the two drift.

use std::borrow::Cow;
use std::collections::BTreeSet;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value, json};

use crate::canary::CanaryStatus;
use crate::resources::canary::CanarySpec;
use crate::resources::scheduled::ScheduledAnalysisSpec;
use crate::resources::template::{AnalysisTemplateSpec, IntOrString, WindowDef};
use crate::scheduled::ScheduledAnalysisStatus;

/// API group of every skycanary resource.
pub const GROUP: &str = "skycanary.io";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
/// Category shared by every CRD: `kubectl get skycanary` lists them all.
pub const CATEGORY: &str = "skycanary";
/// The directory, relative to the repository root, that holds the generated files.
pub const CRD_DIR: &str = "deploy/crds";

/// What `parse_duration` accepts, as a schema pattern: whole seconds (`30`), or Go duration
/// terms (`1h30m`, `1.5s`, `250ms`), optionally signed `+`. The loader gives the precise
/// message (range, unit); the pattern lets `kubectl apply` refuse `5x` or `-1m` up front.
pub const DURATION_PATTERN: &str =
    r"^\s*([0-9]+|\+?(([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)\s*$";

/// Most steps a Canary schema admits. Far above any real release; it exists because the API
/// server estimates the cost of the spec's CEL rule (which walks `steps`) from list bounds
/// and refuses a CRD whose unbounded lists make that estimate too high.
pub const MAX_STEPS: usize = 1000;

/// Labels on every CRD, as the Kubernetes recommended labels say (`app.kubernetes.io/*`).
pub const CRD_LABELS: &[(&str, &str)] = &[
    ("app.kubernetes.io/name", "skycanary"),
    ("app.kubernetes.io/part-of", "skycanary"),
    ("app.kubernetes.io/component", "crd"),
];

/// Kubernetes' own int-or-string: the API server accepts `3` and `"3"` alike.
impl JsonSchema for IntOrString {
    fn schema_name() -> Cow<'static, str> {
        "IntOrString".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "x-kubernetes-int-or-string": true })
    }
}

/// A duration string or an object has no structural form: the API server keeps the value as
/// written and the loader checks it (field by field, with file and line).
impl JsonSchema for WindowDef {
    fn schema_name() -> Cow<'static, str> {
        "WindowDef".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Query window: a Go duration (`5m`), or `{duration: 5m, alignToStep: false}` to let the window reach back before the last routing change.",
            "nullable": true,
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

/// An `additionalPrinterColumns` entry.
#[derive(Debug, Clone, Copy)]
pub struct PrinterColumn {
    /// Column header (kubectl upper-cases it).
    pub name: &'static str,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: &'static str,
    /// JSONPath into the object.
    pub json_path: &'static str,
    /// 0 = always shown, 1 = only with `-o wide`.
    pub priority: u8,
    /// Shown by `kubectl explain`-like tools.
    pub description: &'static str,
}

/// What a CRD is made of; the schemas come from the Rust types.
#[derive(Debug, Clone)]
pub struct CrdSource {
    /// The CRD's kind (`Canary`), as `spec.names.kind`.
    pub kind: &'static str,
    /// The plural resource name (`canaries`); with the group it names the CRD.
    pub plural: &'static str,
    /// Short names; chosen not to clash with Argo Rollouts (`ro`, `at`, `cat`, `ar`) or Flagger.
    pub short_names: &'static [&'static str],
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// One-line description of the resource (the root schema's description).
    pub description: &'static str,
    /// Raw schemars schema of `.spec`.
    pub spec: Value,
    /// Raw schemars schema of `.status`, if the resource has a status subresource.
    pub status: Option<Value>,
    /// Extra `kubectl get` columns.
    pub columns: &'static [PrinterColumn],
}

/// One generated CRD.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedCrd {
    /// `canaries.skycanary.io`.
    pub name: String,
    /// `skycanary.io_canaries.yaml`, the file in [`CRD_DIR`].
    pub file_name: String,
    /// The CRD object.
    pub value: Value,
    /// The CRD as one YAML document (starting with `---`).
    pub yaml: String,
}

/// The schema of a type could not be made structural.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CRD {kind}: schema at {path}: {message}")]
pub struct CrdError {
    /// Resource kind.
    pub kind: String,
    /// JSON-pointer-like path inside the schema.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// The raw schemars schema of `T` (draft 2020-12, deserialization contract, `$defs` kept).
pub fn raw_schema<T: JsonSchema>() -> Value {
    SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

const CANARY_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn {
        name: "Phase",
        type_: "string",
        json_path: ".status.phase",
        priority: 0,
        description: "Lifecycle phase",
    },
    PrinterColumn {
        name: "Step",
        type_: "string",
        json_path: ".status.step",
        priority: 0,
        description: "Current step of all steps, 1-based (3/7), as skycanary status shows it",
    },
    PrinterColumn {
        name: "Weight",
        type_: "integer",
        json_path: ".status.desiredWeight",
        priority: 0,
        description: "Canary weight the controller wants now",
    },
    PrinterColumn {
        name: "Revision",
        type_: "string",
        json_path: ".status.revision",
        priority: 1,
        description: "Revision of the current release run",
    },
    PrinterColumn {
        name: "Message",
        type_: "string",
        json_path: ".status.message",
        priority: 0,
        description: "Last human-readable message (why an Invalid canary was refused)",
    },
    PrinterColumn {
        name: "Age",
        type_: "date",
        json_path: ".metadata.creationTimestamp",
        priority: 0,
        description: "",
    },
];

const SCHEDULED_COLUMNS: &[PrinterColumn] = &[
    PrinterColumn {
        name: "Phase",
        type_: "string",
        json_path: ".status.phase",
        priority: 0,
        description: "Lifecycle phase (Invalid when the spec was refused)",
    },
    PrinterColumn {
        name: "Schedule",
        type_: "string",
        json_path: ".spec.schedule",
        priority: 0,
        description: "Cron schedule",
    },
    PrinterColumn {
        name: "Zone",
        type_: "string",
        json_path: ".spec.timeZone",
        priority: 1,
        description: "IANA time zone of the schedule",
    },
    PrinterColumn {
        name: "Suspend",
        type_: "boolean",
        json_path: ".spec.suspend",
        priority: 0,
        description: "Scheduled runs are off",
    },
    PrinterColumn {
        name: "Last",
        type_: "date",
        json_path: ".status.lastScheduleTime",
        priority: 0,
        description: "Latest fire time dealt with",
    },
    PrinterColumn {
        name: "Next",
        type_: "string",
        json_path: ".status.nextScheduleTime",
        priority: 0,
        description: "Next fire time",
    },
    PrinterColumn {
        name: "Message",
        type_: "string",
        json_path: ".status.message",
        priority: 1,
        description: "Last human-readable message",
    },
    PrinterColumn {
        name: "Age",
        type_: "date",
        json_path: ".metadata.creationTimestamp",
        priority: 0,
        description: "",
    },
];

/// Every resource that has a CRD, in file-name order (so `cat deploy/crds/*.yaml` equals
/// `skycanary crds`).
pub fn sources() -> Vec<CrdSource> {
    let template_spec = raw_schema::<AnalysisTemplateSpec>();
    vec![
        CrdSource {
            kind: "AnalysisTemplate",
            plural: "analysistemplates",
            short_names: &["skat"],
            namespaced: true,
            description: "AnalysisTemplate: metrics, conditions and limits of an analysis (Argo's shape, SkyWalking provider).",
            spec: template_spec.clone(),
            status: None,
            columns: &[],
        },
        CrdSource {
            kind: "Canary",
            plural: "canaries",
            short_names: &["skc"],
            namespaced: true,
            description: "Canary: a release of one workload on Istio, driven step by step and judged by SkyWalking metrics.",
            spec: raw_schema::<CanarySpec>(),
            status: Some(raw_schema::<CanaryStatus>()),
            columns: CANARY_COLUMNS,
        },
        CrdSource {
            kind: "ClusterAnalysisTemplate",
            plural: "clusteranalysistemplates",
            short_names: &["skcat"],
            namespaced: false,
            description: "ClusterAnalysisTemplate: a cluster-scoped AnalysisTemplate.",
            spec: template_spec,
            status: None,
            columns: &[],
        },
        CrdSource {
            kind: "ScheduledAnalysis",
            plural: "scheduledanalyses",
            short_names: &["sksa"],
            namespaced: true,
            description: "ScheduledAnalysis: analysis templates run on a cron schedule, with rollback and webhook actions on the result.",
            spec: raw_schema::<ScheduledAnalysisSpec>(),
            status: Some(raw_schema::<ScheduledAnalysisStatus>()),
            columns: SCHEDULED_COLUMNS,
        },
    ]
}

/// Generates every CRD.
pub fn generate() -> Result<Vec<GeneratedCrd>, CrdError> {
    sources().iter().map(build).collect()
}

/// All CRDs as one multi-document YAML stream.
pub fn render_all(crds: &[GeneratedCrd]) -> String {
    crds.iter().map(|c| c.yaml.as_str()).collect()
}

/// `status.conditions` is a list keyed by `type` (as `metav1.Condition` lists are): server-side
/// apply and `kubectl wait --for=condition=…` treat each type as one entry; `status` is one of
/// the three condition values.
fn conditions_as_list_map(status: &mut Value) {
    let Some(c) = status.pointer_mut("/properties/conditions") else {
        return;
    };
    c["x-kubernetes-list-type"] = json!("map");
    c["x-kubernetes-list-map-keys"] = json!(["type"]);
    if let Some(s) = c.pointer_mut("/items/properties/status") {
        s["enum"] = json!(["True", "False", "Unknown"]);
    }
}

/// Builds one CRD from its source.
pub fn build(src: &CrdSource) -> Result<GeneratedCrd, CrdError> {
    let err = |path: String, message: String| CrdError {
        kind: src.kind.to_string(),
        path,
        message,
    };
    let spec = structural(&src.spec).map_err(|(p, m)| err(format!("spec{p}"), m))?;
    let mut properties = Map::new();
    properties.insert(
        "apiVersion".into(),
        json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}),
    );
    properties.insert(
        "kind".into(),
        json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}),
    );
    properties.insert("metadata".into(), json!({"type": "object"}));
    properties.insert("spec".into(), spec);
    if let Some(status) = &src.status {
        let mut status = structural(status).map_err(|(p, m)| err(format!("status{p}"), m))?;
        conditions_as_list_map(&mut status);
        properties.insert("status".into(), status);
    }
    let mut version = Map::new();
    version.insert("name".into(), json!(VERSION));
    version.insert("served".into(), json!(true));
    version.insert("storage".into(), json!(true));
    version.insert(
        "schema".into(),
        json!({"openAPIV3Schema": {
            "description": src.description,
            "type": "object",
            "required": ["spec"],
            "properties": properties,
        }}),
    );
    if src.status.is_some() {
        version.insert("subresources".into(), json!({"status": {}}));
    }
    if !src.columns.is_empty() {
        let cols: Vec<Value> = src
            .columns
            .iter()
            .map(|c| {
                let mut col = json!({"name": c.name, "type": c.type_, "jsonPath": c.json_path});
                if c.priority > 0 {
                    col["priority"] = json!(c.priority);
                }
                if !c.description.is_empty() {
                    col["description"] = json!(c.description);
                }
                col
            })
            .collect();
        version.insert("additionalPrinterColumns".into(), Value::Array(cols));
    }
    let singular = src.kind.to_ascii_lowercase();
    let labels: Map<String, Value> = CRD_LABELS
        .iter()
        .map(|(k, v)| ((*k).to_string(), json!(v)))
        .collect();
    let name = format!("{}.{GROUP}", src.plural);
    let value = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": src.kind,
                "listKind": format!("{}List", src.kind),
                "plural": src.plural,
                "singular": singular,
                "shortNames": src.short_names,
                "categories": [CATEGORY],
            },
            "scope": if src.namespaced { "Namespaced" } else { "Cluster" },
            "versions": [Value::Object(version)],
        },
    });
    let yaml = format!(
        "---\n# Generated from the Rust types by `skycanary crds`; do not edit.\n{}",
        to_yaml(&value)
    );
    Ok(GeneratedCrd {
        file_name: format!("{GROUP}_{}.yaml", src.plural),
        name,
        value,
        yaml,
    })
}

// ---------------------------------------------------------------------------------------------
// Structural rewrite

type Fail = (String, String);

/// Keywords a structural schema may carry after the rewrite.
const ALLOWED: &[&str] = &[
    "type",
    "format",
    "description",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "nullable",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
];

/// Keywords dropped silently: annotations Kubernetes does not need, and `default` (see the
/// module docs).
const DROPPED: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Formats Kubernetes knows; others (`uint32`, ...) are dropped (`minimum: 0` stays).
const FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "date",
    "date-time",
];

/// Rewrites a schemars root schema (with `$defs`) into a structural schema.
/// Errors carry the path inside the schema and what could not be rewritten.
pub fn structural(root: &Value) -> Result<Value, Fail> {
    let defs = root
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut cx = Rewriter {
        defs,
        stack: Vec::new(),
    };
    // schemars titles the root with the type's name; the description is what matters.
    let mut root = root.clone();
    if let Some(o) = root.as_object_mut() {
        o.remove("title");
    }
    let mut out = cx.node(&root, "")?;
    append_variant_docs(&mut out);
    Ok(out)
}

/// Working key: the docs of an enum's variants, kept apart while descriptions are
/// overridden (a field's description wins over its type's) and appended at the end.
const VARIANT_DOCS: &str = "x-skycanary-variant-docs";

fn append_variant_docs(node: &mut Value) {
    match node {
        Value::Object(o) => {
            if let Some(Value::String(docs)) = o.remove(VARIANT_DOCS) {
                append_description(o, &docs);
            }
            o.values_mut().for_each(append_variant_docs);
        }
        Value::Array(a) => a.iter_mut().for_each(append_variant_docs),
        _ => {}
    }
}

struct Rewriter {
    defs: Map<String, Value>,
    stack: Vec<String>,
}

impl Rewriter {
    fn node(&mut self, node: &Value, path: &str) -> Result<Value, Fail> {
        let fail = |m: String| Err((path_or_root(path), m));
        let obj = match node {
            Value::Object(o) => o,
            Value::Bool(true) => return Ok(json!({"x-kubernetes-preserve-unknown-fields": true})),
            other => return fail(format!("unsupported schema {other}")),
        };
        if let Some(r) = obj.get("$ref") {
            return self.reference(obj, r, path);
        }
        let mut out = Map::new();
        let mut nullable = false;
        for (k, v) in obj {
            match k.as_str() {
                "type" => match v {
                    Value::String(_) => {
                        out.insert(k.clone(), v.clone());
                    }
                    Value::Array(types) => {
                        let mut rest: Vec<&Value> = Vec::new();
                        for t in types {
                            if t == "null" {
                                nullable = true;
                            } else {
                                rest.push(t);
                            }
                        }
                        match rest.as_slice() {
                            [t] => {
                                out.insert(k.clone(), (*t).clone());
                            }
                            _ => return fail(format!("several types {v}")),
                        }
                    }
                    _ => return fail(format!("bad type {v}")),
                },
                "const" => {
                    out.insert("enum".into(), json!([v]));
                }
                "title" => {}
                "properties" => {
                    let Some(props) = v.as_object() else {
                        return fail("properties is not an object".into());
                    };
                    let mut new = Map::new();
                    for (name, p) in props {
                        new.insert(name.clone(), self.node(p, &format!("{path}.{name}"))?);
                    }
                    out.insert(k.clone(), Value::Object(new));
                }
                "items" if v == &Value::Bool(false) => {}
                "items" => {
                    out.insert(k.clone(), self.node(v, &format!("{path}[]"))?);
                }
                "prefixItems" => {
                    // A tuple: Kubernetes has no positional item schemas, so it could only be
                    // an unchecked `x-kubernetes-preserve-unknown-fields` list that `kubectl
                    // describe` prints as `[a map[..]]`. A struct says the same with names.
                    return fail(
                        "a tuple has no structural schema (the API server could not check it \
                         and `kubectl describe` prints it without field names): use a struct"
                            .into(),
                    );
                }
                "additionalProperties" => match v {
                    Value::Bool(false) => {}
                    Value::Bool(true) => {
                        out.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
                    }
                    _ => {
                        out.insert(k.clone(), self.node(v, &format!("{path}.*"))?);
                    }
                },
                "anyOf" | "oneOf" => {
                    let Some(branches) = v.as_array() else {
                        return fail(format!("{k} is not an array"));
                    };
                    let (merged, null) = self.union(branches, path)?;
                    nullable |= null;
                    merge_into(&mut out, merged);
                }
                "format" => {
                    if v.as_str().is_some_and(|f| FORMATS.contains(&f)) {
                        out.insert(k.clone(), v.clone());
                    }
                }
                "exclusiveMinimum" | "exclusiveMaximum" if v.is_number() => {
                    // Draft 2020-12 numbers become OpenAPI v3.0's bound + flag.
                    let bound = if k == "exclusiveMinimum" {
                        "minimum"
                    } else {
                        "maximum"
                    };
                    out.insert(bound.into(), v.clone());
                    out.insert(k.clone(), json!(true));
                }
                key if DROPPED.contains(&key) => {}
                key if ALLOWED.contains(&key) => {
                    out.insert(k.clone(), v.clone());
                }
                key => return fail(format!("keyword {key:?} has no structural form")),
            }
        }
        // The first paragraph of a doc comment may land in `title`.
        if let Some(title) = obj.get("title").and_then(Value::as_str) {
            let desc = out.get("description").and_then(Value::as_str).unwrap_or("");
            let joined = if desc.is_empty() {
                title.to_string()
            } else {
                format!("{title}\n\n{desc}")
            };
            out.insert("description".into(), json!(joined));
        }
        if nullable {
            out.insert("nullable".into(), json!(true));
        }
        infer_type(&mut out);
        if !out.contains_key("type")
            && !out.contains_key("x-kubernetes-int-or-string")
            && !out.contains_key("x-kubernetes-preserve-unknown-fields")
        {
            return fail("no type".into());
        }
        Ok(Value::Object(out))
    }

    fn reference(
        &mut self,
        obj: &Map<String, Value>,
        r: &Value,
        path: &str,
    ) -> Result<Value, Fail> {
        let name = r
            .as_str()
            .and_then(|s| s.strip_prefix("#/$defs/"))
            .ok_or_else(|| (path_or_root(path), format!("unsupported $ref {r}")))?
            .to_string();
        if self.stack.contains(&name) {
            return Err((
                path_or_root(path),
                format!("recursive type {name}: a structural schema cannot express it"),
            ));
        }
        let target = self
            .defs
            .get(&name)
            .cloned()
            .ok_or_else(|| (path_or_root(path), format!("missing definition {name}")))?;
        self.stack.push(name);
        let resolved = self.node(&target, path);
        self.stack.pop();
        let mut resolved = match resolved? {
            Value::Object(o) => o,
            _ => return Err((path_or_root(path), "definition is not an object".into())),
        };
        // Siblings of `$ref` (the field's own description) win over the type's.
        for (k, v) in obj {
            match k.as_str() {
                "$ref" => {}
                "description" | "title" => {
                    resolved.insert("description".into(), v.clone());
                }
                key if DROPPED.contains(&key) => {}
                key => {
                    return Err((
                        path_or_root(path),
                        format!("keyword {key:?} next to $ref is not supported"),
                    ));
                }
            }
        }
        Ok(Value::Object(resolved))
    }

    /// Merges `anyOf`/`oneOf` branches into one structural node; the flag says a `null`
    /// branch was present.
    fn union(
        &mut self,
        branches: &[Value],
        path: &str,
    ) -> Result<(Map<String, Value>, bool), Fail> {
        let fail = |m: String| Err((path_or_root(path), m));
        let mut nullable = false;
        let mut rest: Vec<Map<String, Value>> = Vec::new();
        for (i, b) in branches.iter().enumerate() {
            if is_null_schema(b) {
                nullable = true;
                continue;
            }
            match self.node(b, &format!("{path}<{i}>"))? {
                Value::Object(o) => rest.push(o),
                _ => return fail("branch is not an object".into()),
            }
        }
        if let [only] = rest.as_slice() {
            let mut only = only.clone();
            only.remove("nullable");
            return Ok((only, nullable));
        }
        let types: BTreeSet<&str> = rest
            .iter()
            .map(|b| b.get("type").and_then(Value::as_str).unwrap_or("?"))
            .collect();
        let mut out = Map::new();
        match types.into_iter().collect::<Vec<_>>().as_slice() {
            ["string"] => {
                // Unit variants with docs: one `const` per branch.
                let mut values = Vec::new();
                let mut docs = Vec::new();
                for b in &rest {
                    let Some(vals) = b.get("enum").and_then(Value::as_array) else {
                        return fail("string branch without enum".into());
                    };
                    values.extend(vals.iter().cloned());
                    if let (Some(d), [v]) = (
                        b.get("description").and_then(Value::as_str),
                        vals.as_slice(),
                    ) {
                        docs.push(format!("`{}`: {d}", v.as_str().unwrap_or_default()));
                    }
                }
                out.insert("type".into(), json!("string"));
                out.insert("enum".into(), Value::Array(values));
                if !docs.is_empty() {
                    out.insert(VARIANT_DOCS.into(), json!(docs.join("\n")));
                }
            }
            ["object"] => {
                let externally_tagged = is_externally_tagged(&rest);
                let mut props = Map::new();
                let mut required: Option<BTreeSet<String>> = None;
                for b in &rest {
                    let branch_doc = b.get("description").and_then(Value::as_str);
                    let branch_props = b
                        .get("properties")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default();
                    for (k, mut v) in branch_props {
                        if externally_tagged
                            && let (Some(doc), Some(o)) = (branch_doc, v.as_object_mut())
                        {
                            // The variant's doc is the field's doc; it wins over the type's.
                            o.insert("description".into(), json!(doc));
                        }
                        match props.get_mut(&k) {
                            None => {
                                props.insert(k, v);
                            }
                            Some(existing) => {
                                merge_property(existing, &v)
                                    .map_err(|m| (format!("{path}.{k}"), m))?;
                            }
                        }
                    }
                    let req: BTreeSet<String> = b
                        .get("required")
                        .and_then(Value::as_array)
                        .map(|r| {
                            r.iter()
                                .filter_map(|s| s.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    required = Some(match required {
                        None => req,
                        Some(prev) => prev.intersection(&req).cloned().collect(),
                    });
                }
                out.insert("type".into(), json!("object"));
                out.insert("properties".into(), Value::Object(props));
                if let Some(req) = required.filter(|r| !r.is_empty() && !externally_tagged) {
                    out.insert("required".into(), json!(req));
                }
                if externally_tagged {
                    out.insert("minProperties".into(), json!(1));
                    out.insert("maxProperties".into(), json!(1));
                }
            }
            other => return fail(format!("cannot merge branches of types {other:?}")),
        }
        Ok((out, nullable))
    }
}

fn path_or_root(path: &str) -> String {
    if path.is_empty() {
        "(root)".into()
    } else {
        path.to_string()
    }
}

fn is_null_schema(v: &Value) -> bool {
    v.get("type").is_some_and(|t| t == "null")
        || v.get("const").is_some_and(Value::is_null)
        || v.get("enum")
            .and_then(Value::as_array)
            .is_some_and(|e| e.len() == 1 && e[0].is_null())
}

/// Serde's externally tagged enums: each branch is an object with exactly one (required)
/// property, and the keys differ.
fn is_externally_tagged(branches: &[Map<String, Value>]) -> bool {
    let mut keys = BTreeSet::new();
    branches.iter().all(|b| {
        let props = b.get("properties").and_then(Value::as_object);
        let req = b.get("required").and_then(Value::as_array);
        match (props, req) {
            (Some(p), Some(r)) if p.len() == 1 && r.len() == 1 => p
                .keys()
                .next()
                .is_some_and(|k| r[0] == *k.as_str() && keys.insert(k.clone())),
            _ => false,
        }
    })
}

/// The same property in two branches: equal, or both string enums (a tag) whose values join.
fn merge_property(existing: &mut Value, other: &Value) -> Result<(), String> {
    let enum_of = |v: &Value| v.get("enum").and_then(Value::as_array).cloned();
    match (enum_of(existing), enum_of(other)) {
        (Some(mut a), Some(b)) if existing.get("type") == other.get("type") => {
            for v in b {
                if !a.contains(&v) {
                    a.push(v);
                }
            }
            existing["enum"] = Value::Array(a);
            Ok(())
        }
        _ if strip_docs(existing) == strip_docs(other) => Ok(()),
        _ => Err("conflicting schemas for the same property in two variants".into()),
    }
}

fn strip_docs(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("description");
    }
    v
}

fn merge_into(out: &mut Map<String, Value>, merged: Map<String, Value>) {
    for (k, v) in merged {
        // The outer node's own keys (its description) win.
        out.entry(k).or_insert(v);
    }
}

fn append_description(out: &mut Map<String, Value>, note: &str) {
    let desc = match out.get("description").and_then(Value::as_str) {
        Some(d) if !d.is_empty() => format!("{d}\n{note}"),
        _ => note.to_string(),
    };
    out.insert("description".into(), json!(desc));
}

fn infer_type(out: &mut Map<String, Value>) {
    if out.contains_key("type") {
        return;
    }
    let t = if out.contains_key("properties") || out.contains_key("additionalProperties") {
        "object"
    } else if out.contains_key("items") {
        "array"
    } else if let Some(e) = out.get("enum").and_then(Value::as_array) {
        match e.first() {
            Some(Value::String(_)) => "string",
            Some(Value::Bool(_)) => "boolean",
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => "integer",
            Some(Value::Number(_)) => "number",
            _ => return,
        }
    } else {
        return;
    };
    out.insert("type".into(), json!(t));
}

// ---------------------------------------------------------------------------------------------
// Checks shared by the tests and `skycanary crds --check`

/// Every way `schema` is not structural (empty when it is).
pub fn structural_violations(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check_structural(schema, "", &mut out);
    out
}

fn check_structural(node: &Value, path: &str, out: &mut Vec<String>) {
    let here = path_or_root(path);
    let Some(obj) = node.as_object() else {
        out.push(format!("{here}: schema is not an object"));
        return;
    };
    for k in obj.keys() {
        if !ALLOWED.contains(&k.as_str()) && k != "exclusiveMinimum" && k != "exclusiveMaximum" {
            out.push(format!("{here}: keyword {k:?} is not allowed"));
        }
    }
    let escape = obj.contains_key("x-kubernetes-int-or-string")
        || obj.contains_key("x-kubernetes-preserve-unknown-fields");
    match obj.get("type").and_then(Value::as_str) {
        Some("object" | "array" | "string" | "integer" | "number" | "boolean") => {}
        Some(t) => out.push(format!("{here}: unknown type {t:?}")),
        None if escape => {}
        None => out.push(format!("{here}: no type")),
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        out.push(format!(
            "{here}: properties and additionalProperties together"
        ));
    }
    if obj.get("type").is_some_and(|t| t == "array") && !obj.contains_key("items") {
        out.push(format!("{here}: array without items"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            check_structural(v, &format!("{path}.{k}"), out);
        }
        if let Some(req) = obj.get("required").and_then(Value::as_array) {
            for r in req {
                if !r.as_str().is_some_and(|r| props.contains_key(r)) {
                    out.push(format!("{here}: required {r} is not a property"));
                }
            }
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(items, &format!("{path}[]"), out);
    }
    if let Some(ap) = obj.get("additionalProperties") {
        check_structural(ap, &format!("{path}.*"), out);
    }
}

/// Validates `value` against a structural `schema` the way the API server would, for the
/// keywords the generated schemas use. Returns every problem as `path: message`.
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    validate_at(schema, value, "", &mut out);
    out
}

fn validate_at(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let here = path_or_root(path);
    let s = |k: &str| schema.get(k);
    if s("x-kubernetes-preserve-unknown-fields").is_some() && s("type").is_none() {
        return;
    }
    if value.is_null() {
        if !s("nullable").is_some_and(|n| n == true) {
            out.push(format!("{here}: null is not allowed"));
        }
        return;
    }
    if s("x-kubernetes-int-or-string").is_some() {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            out.push(format!(
                "{here}: expected an integer or a string, got {value}"
            ));
        }
        return;
    }
    let ty = s("type").and_then(Value::as_str).unwrap_or("");
    let ok = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => false,
    };
    if !ok {
        out.push(format!("{here}: expected {ty}, got {value}"));
        return;
    }
    if let Some(e) = s("enum").and_then(Value::as_array)
        && !e.contains(value)
    {
        out.push(format!(
            "{here}: {value} is not one of {}",
            Value::Array(e.clone())
        ));
    }
    if let Some(v) = value.as_f64() {
        if let Some(min) = s("minimum").and_then(Value::as_f64)
            && v < min
        {
            out.push(format!("{here}: {v} is below the minimum {min}"));
        }
        if let Some(max) = s("maximum").and_then(Value::as_f64)
            && v > max
        {
            out.push(format!("{here}: {v} is above the maximum {max}"));
        }
    }
    if let Some(items) = value.as_array() {
        let len = items.len() as u64;
        if s("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| len < m)
        {
            out.push(format!("{here}: too few items"));
        }
        if s("maxItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| len > m)
        {
            out.push(format!("{here}: too many items"));
        }
        if let Some(item_schema) = s("items") {
            for (i, item) in items.iter().enumerate() {
                validate_at(item_schema, item, &format!("{path}[{i}]"), out);
            }
        }
    }
    if let Some(obj) = value.as_object() {
        let len = obj.len() as u64;
        if let Some(m) = s("minProperties").and_then(Value::as_u64)
            && len < m
        {
            out.push(format!("{here}: needs at least {m} field(s)"));
        }
        if s("maxProperties")
            .and_then(Value::as_u64)
            .is_some_and(|m| len > m)
        {
            out.push(format!(
                "{here}: has {len} fields; at most one of them is allowed"
            ));
        }
        for r in s("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(r) = r.as_str()
                && !obj.contains_key(r)
            {
                out.push(format!("{here}: missing required field {r:?}"));
            }
        }
        let props = s("properties").and_then(Value::as_object);
        let extra = s("additionalProperties");
        let preserve = s("x-kubernetes-preserve-unknown-fields").is_some();
        for (k, v) in obj {
            let child = format!("{path}.{k}");
            match (props.and_then(|p| p.get(k)), extra) {
                (Some(ps), _) => validate_at(ps, v, &child, out),
                (None, Some(ap)) => validate_at(ap, v, &child, out),
                (None, None)
                    if preserve || props.is_none() && ty == "object" && path_is_meta(path) => {}
                (None, None) => out.push(format!("{child}: unknown field")),
            }
        }
    }
}

/// `metadata` is `{type: object}` with no properties: the API server owns its schema.
fn path_is_meta(path: &str) -> bool {
    path == ".metadata"
}

// ---------------------------------------------------------------------------------------------
// YAML output

/// Renders a JSON value as block YAML: keys sorted (deterministic whatever the map order),
/// plain scalars where unambiguous, JSON-quoted (valid YAML double-quoted) strings otherwise.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(o) if !o.is_empty() => write_block(&mut out, value, 0),
        Value::Array(a) if !a.is_empty() => write_block(&mut out, value, 0),
        other => {
            out.push_str(&flow(other));
            out.push('\n');
        }
    }
    out
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Object(o) => !o.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn write_block(out: &mut String, v: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            for k in keys {
                let val = &o[k.as_str()];
                out.push_str(&pad);
                out.push_str(&scalar_string(k));
                out.push(':');
                match val {
                    Value::Object(_) if is_block(val) => {
                        out.push('\n');
                        write_block(out, val, indent + 2);
                    }
                    Value::Array(_) if is_block(val) => {
                        out.push('\n');
                        write_block(out, val, indent);
                    }
                    _ => {
                        out.push(' ');
                        out.push_str(&flow(val));
                        out.push('\n');
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                if is_block(item) {
                    // Render the item one level deeper, then put the dash into the first
                    // line's indentation (same width).
                    let mut inner = String::new();
                    write_block(&mut inner, item, indent + 2);
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(inner.get(indent + 2..).unwrap_or_default());
                } else {
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(&flow(item));
                    out.push('\n');
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&flow(other));
            out.push('\n');
        }
    }
}

fn flow(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_string(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A string as a plain scalar when no YAML 1.1 or 1.2 reader could take it for anything else.
fn scalar_string(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_string()
    } else {
        // A JSON string is a valid YAML double-quoted scalar.
        Value::String(s.to_string()).to_string()
    }
}

fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    const RESERVED: &[&str] = &[
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", ".inf", ".nan",
    ];
    (first.is_ascii_alphabetic() || first == '.' && s.len() > 1)
        && s.chars().all(|c| (' '..='~').contains(&c))
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with([':', ' '])
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str())
        && !s.starts_with(".inf")
        && !s.starts_with(".nan")
        && s.parse::<f64>().is_err()
}

/// Name of the kustomization written beside the CRDs, so `deploy/` and its variants can include
/// the directory (kustomize only loads files outside a kustomization's root through one).
pub const KUSTOMIZATION_FILE: &str = "kustomization.yaml";

/// The `kustomization.yaml` of [`CRD_DIR`]: every generated CRD file, in file-name order.
pub fn kustomization(crds: &[GeneratedCrd]) -> String {
    let mut out = String::from(
        "# Generated by `skycanary crds --write deploy/crds`; do not edit.\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         resources:\n",
    );
    let mut files: Vec<&str> = crds.iter().map(|c| c.file_name.as_str()).collect();
    files.sort_unstable();
    for f in files {
        out.push_str("- ");
        out.push_str(f);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checker_finds_non_structural_nodes() {
        let bad = json!({"type": "object", "properties": {
            "a": {"description": "no type"},
            "b": {"$ref": "#/$defs/X"},
            "c": {"type": "array"},
            "d": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        }, "required": ["e"]});
        let v = structural_violations(&bad);
        for needle in [
            ".a: no type",
            ".b: keyword \"$ref\"",
            ".c: array without items",
            ".d: keyword \"anyOf\"",
            "required \"e\"",
        ] {
            assert!(
                v.iter().any(|m| m.contains(needle)),
                "{needle} not in {v:#?}"
            );
        }
    }

    #[test]
    fn rewrite_errors_name_the_path() {
        let recursive = json!({"$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}},
                               "$ref": "#/$defs/N"});
        let e = structural(&recursive).expect_err("recursive");
        assert_eq!(e.0, ".next");
        assert!(e.1.contains("recursive type N"), "{}", e.1);
        let mixed = json!({"type": "object", "properties": {"x": {"anyOf": [{"type": "string"}, {"type": "object"}]}}});
        let e = structural(&mixed).expect_err("mixed");
        assert_eq!(e.0, ".x");
        // A tuple has no structural form; it is refused rather than left unchecked.
        let tuple = json!({"type": "object", "properties": {"pair": {"type": "array", "items": {
            "type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]}}}});
        let e = structural(&tuple).expect_err("tuple");
        assert_eq!(e.0, ".pair[]");
        assert!(e.1.contains("use a struct"), "{}", e.1);
    }
}
