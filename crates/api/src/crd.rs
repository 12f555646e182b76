//! What the resource types declare for their CustomResourceDefinitions: the bounds in their
//! schemas, and the schemas of the two types with no structural form of their own.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::resources::template::{IntOrString, WindowDef};

/// What `parse_duration` accepts, as a schema pattern: whole seconds (`30`), or Go duration
/// terms (`1h30m`, `1.5s`, `250ms`), optionally signed `+`. The loader gives the precise
/// message (range, unit); the pattern lets `kubectl apply` refuse `5x` or `-1m` up front.
pub const DURATION_PATTERN: &str =
    r"^\s*([0-9]+|\+?(([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)\s*$";

/// Most steps a Canary schema admits. Far above any real release; it exists because the API
/// server estimates the cost of the spec's CEL rule (which walks `steps`) from list bounds
/// and refuses a CRD whose unbounded lists make that estimate too high.
pub const MAX_STEPS: usize = 1000;

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
