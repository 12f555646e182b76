//! Server-side printing: `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` answered with a
//! `meta.k8s.io/v1` Table whose columns are `Name` plus the CRD's `additionalPrinterColumns`,
//! the way `kubectl get` receives them from a cluster.
//!
//! JSONPath subset: dotted fields (`.status.phase`), indexes (`.a[0]`) and equality filters
//! (`.status.conditions[?(@.type=="Ready")].status`); the first match is printed.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// Whether the client asked for a Table (kubectl lists the Table first in `Accept`).
pub(crate) fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// The Table for `objects` under the printer columns of `crd_version` (one `versions[]`
/// entry), with rows carrying what `includeObject` asks for.
pub(crate) fn table(
    crd_version: &Value,
    objects: &[Value],
    include: Option<&str>,
    resource_version: &str,
    now: DateTime<Utc>,
) -> Value {
    let columns: Vec<Value> = crd_version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_else(|| {
            vec![json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})]
        });
    let mut defs = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    for c in &columns {
        defs.push(json!({
            "name": c.get("name").cloned().unwrap_or_default(),
            "type": c.get("type").cloned().unwrap_or(json!("string")),
            "format": c.get("format").cloned().unwrap_or(json!("")),
            "description": c.get("description").cloned().unwrap_or(json!("")),
            "priority": c.get("priority").cloned().unwrap_or(json!(0)),
        }));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or_default()];
            for c in &columns {
                let path = c.get("jsonPath").and_then(Value::as_str).unwrap_or("");
                let ty = c.get("type").and_then(Value::as_str).unwrap_or("string");
                cells.push(cell(lookup(o, path), ty, now));
            }
            let mut row = json!({"cells": cells});
            match include.unwrap_or("Metadata") {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o.get("metadata").cloned().unwrap_or_default(),
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

/// A cell as the apiserver fills it: dates as ages (`5m`), absent values as null.
fn cell(v: Option<&Value>, ty: &str, now: DateTime<Utc>) -> Value {
    match (v, ty) {
        (None, _) | (Some(Value::Null), _) => Value::Null,
        (Some(Value::String(s)), "date") => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => json!(age(now.signed_duration_since(t.with_timezone(&Utc)))),
            Err(_) => json!("<invalid>"),
        },
        (Some(v), _) => v.clone(),
    }
}

/// kubectl's short human duration (`45s`, `12m`, `5h`, `3d`).
fn age(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// The first value `path` selects in `obj`.
pub(crate) fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    rest = rest.strip_prefix('.').unwrap_or(rest);
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let inner = &after[..end];
            rest = &after[end + 1..];
            let items = cur.as_array()?;
            cur = if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')'))
            {
                let (field, want) = filter.split_once("==")?;
                let want = want.trim().trim_matches(|c| c == '"' || c == '\'');
                items.iter().find(|i| {
                    i.get(field.trim()).is_some_and(|v| match v {
                        Value::String(s) => s == want,
                        other => serde_json::from_str::<Value>(want).is_ok_and(|w| &w == other),
                    })
                })?
            } else {
                items.get(inner.trim().parse::<usize>().ok()?)?
            };
        } else {
            rest = rest.strip_prefix('.').unwrap_or(rest);
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            let key = &rest[..end];
            rest = &rest[end..];
            if key.is_empty() {
                continue;
            }
            cur = cur.get(key)?;
        }
    }
    Some(cur)
}
