//! What the apiserver does with a custom resource's body before storing it: prune the fields
//! its CRD's structural schema does not declare (or refuse them under `fieldValidation=Strict`),
//! then check it against the schema (types, required, enum, bounds, pattern, lengths, item and
//! property counts, and the `x-kubernetes-validations` CEL rules). Messages are spelled as the
//! apiserver spells them, each with its field path, so tests and kubectl see what a cluster
//! shows.
//!
//! Not copied: formats (`date-time`, ...), `oldSelf` transition rules, CEL cost limits, and the
//! Kubernetes CEL library beyond the standard macros and functions `cel-interpreter` has.

use std::collections::HashMap;
use std::sync::Arc;

use cel_interpreter::{Context, Program};
use serde_json::Value;

/// One refused field: its path (`spec.steps[0].setWeight`) and the apiserver's text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FieldError {
    pub field: String,
    pub reason: &'static str,
    pub message: String,
}

impl FieldError {
    fn new(field: &str, reason: &'static str, message: String) -> Self {
        FieldError {
            field: display_path(field),
            reason,
            message,
        }
    }

    /// `field: message`, as in a 422 Status message.
    pub fn line(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "<root>".into()
    } else {
        path.to_string()
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Removes undeclared fields in place and returns their paths. `metadata` below the root is
/// the apiserver's business and is left alone, as are `x-kubernetes-preserve-unknown-fields`
/// subtrees.
pub(crate) fn prune(schema: &Value, value: &mut Value, path: &str, unknown: &mut Vec<String>) {
    if schema
        .get("x-kubernetes-preserve-unknown-fields")
        .is_some_and(|p| p == true)
        && schema.get("properties").is_none()
    {
        return;
    }
    match value {
        Value::Object(map) => {
            if path == "metadata" {
                return;
            }
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                let preserve = schema
                    .get("x-kubernetes-preserve-unknown-fields")
                    .is_some_and(|p| p == true);
                let keys: Vec<String> = map.keys().cloned().collect();
                for k in keys {
                    let here = child(path, &k);
                    match props.get(&k) {
                        Some(s) => {
                            if let Some(v) = map.get_mut(&k) {
                                prune(s, v, &here, unknown);
                            }
                        }
                        None if preserve => {}
                        None if path.is_empty() && (k == "apiVersion" || k == "kind") => {}
                        None => {
                            map.remove(&k);
                            unknown.push(here);
                        }
                    }
                }
            } else if let Some(ap) = schema.get("additionalProperties") {
                for (k, v) in map.iter_mut() {
                    prune(ap, v, &child(path, k), unknown);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter_mut().enumerate() {
                    prune(s, v, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

/// Every way `value` breaks `schema`, in document order.
pub(crate) fn validate(schema: &Value, value: &Value) -> Vec<FieldError> {
    let mut out = Vec::new();
    check(schema, value, "", &mut out);
    out
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// How the apiserver quotes a value in `Invalid value: ...`.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) | Value::Array(_) | Value::Null => format!("\"{}\"", json_type(v)),
        other => other.to_string(),
    }
}

fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) => f.to_string(),
        None => v.to_string(),
    }
}

/// `maxItems`/`minItems` or `maxProperties`/`minProperties`, in the apiserver's wording (which
/// says "items" for both maxima).
fn check_count(
    len: usize,
    (max, min): (Option<&Value>, Option<&Value>),
    noun: &str,
    path: &str,
    here: &str,
    out: &mut Vec<FieldError>,
) {
    let n = len as u64;
    if let Some(max) = max.and_then(Value::as_u64)
        && n > max
    {
        out.push(FieldError::new(
            path,
            "FieldValueTooMany",
            format!("Too many: {n}: must have at most {max} items"),
        ));
    }
    if let Some(min) = min.and_then(Value::as_u64)
        && n < min
    {
        out.push(FieldError::new(
            path,
            "FieldValueInvalid",
            format!("Invalid value: {n}: {here} in body should have at least {min} {noun}"),
        ));
    }
}

fn check(schema: &Value, value: &Value, path: &str, out: &mut Vec<FieldError>) {
    let s = |k: &str| schema.get(k);
    let here = display_path(path);
    if value.is_null() {
        if !s("nullable").is_some_and(|n| n == true)
            && s("x-kubernetes-preserve-unknown-fields").is_none()
        {
            let ty = s("type").and_then(Value::as_str).unwrap_or("object");
            out.push(FieldError::new(
                path,
                "FieldValueInvalid",
                format!("Invalid value: \"null\": {here} in body must be of type {ty}: \"null\""),
            ));
        }
        return;
    }
    if s("x-kubernetes-int-or-string").is_some_and(|b| b == true) {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            out.push(FieldError::new(
                path,
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: {here} in body must be of type integer,string: {:?}",
                    shown(value),
                    json_type(value)
                ),
            ));
        }
        return;
    }
    if let Some(ty) = s("type").and_then(Value::as_str) {
        let actual = json_type(value);
        let ok = ty == actual || ty == "number" && actual == "integer";
        if !ok {
            out.push(FieldError::new(
                path,
                "FieldValueTypeInvalid",
                format!(
                    "Invalid value: {}: {here} in body must be of type {ty}: {actual:?}",
                    shown(value)
                ),
            ));
            return;
        }
    }
    if let Some(allowed) = s("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        out.push(FieldError::new(
            path,
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {}: supported values: {}",
                value,
                list.join(", ")
            ),
        ));
    }
    if let Some(v) = value.as_f64() {
        let exclusive = |k: &str| s(k).is_some_and(|e| e == true);
        if let Some(min) = s("minimum").and_then(Value::as_f64) {
            let (bad, word) = if exclusive("exclusiveMinimum") {
                (v <= min, "greater than")
            } else {
                (v < min, "greater than or equal to")
            };
            if bad {
                out.push(FieldError::new(
                    path,
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: {}: {here} in body should be {word} {}",
                        num(value),
                        num(&s("minimum").cloned().unwrap_or_default())
                    ),
                ));
            }
        }
        if let Some(max) = s("maximum").and_then(Value::as_f64) {
            let (bad, word) = if exclusive("exclusiveMaximum") {
                (v >= max, "less than")
            } else {
                (v > max, "less than or equal to")
            };
            if bad {
                out.push(FieldError::new(
                    path,
                    "FieldValueInvalid",
                    format!(
                        "Invalid value: {}: {here} in body should be {word} {}",
                        num(value),
                        num(&s("maximum").cloned().unwrap_or_default())
                    ),
                ));
            }
        }
    }
    if let Some(text) = value.as_str() {
        let chars = text.chars().count() as u64;
        if let Some(max) = s("maxLength").and_then(Value::as_u64)
            && chars > max
        {
            out.push(FieldError::new(
                path,
                "FieldValueTooLong",
                format!("Too long: may not be more than {max} bytes"),
            ));
        }
        if let Some(min) = s("minLength").and_then(Value::as_u64)
            && chars < min
        {
            out.push(FieldError::new(
                path,
                "FieldValueInvalid",
                format!(
                    "Invalid value: {text:?}: {here} in body should be at least {min} chars long"
                ),
            ));
        }
        if let Some(p) = s("pattern").and_then(Value::as_str) {
            match regex::Regex::new(p) {
                Ok(re) if re.is_match(text) => {}
                Ok(_) => out.push(FieldError::new(
                    path,
                    "FieldValueInvalid",
                    format!("Invalid value: {text:?}: {here} in body should match '{p}'"),
                )),
                Err(e) => out.push(FieldError::new(
                    path,
                    "InternalError",
                    format!("Internal error: the schema's pattern does not compile: {e}"),
                )),
            }
        }
    }
    if let Some(items) = value.as_array() {
        let bounds = (s("maxItems"), s("minItems"));
        check_count(items.len(), bounds, "items", path, &here, out);
        if let Some(item) = s("items") {
            for (i, v) in items.iter().enumerate() {
                check(item, v, &format!("{path}[{i}]"), out);
            }
        }
    }
    if let Some(map) = value.as_object() {
        let bounds = (s("maxProperties"), s("minProperties"));
        check_count(map.len(), bounds, "properties", path, &here, out);
        for r in s("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !map.contains_key(r) {
                out.push(FieldError::new(
                    &child(path, r),
                    "FieldValueRequired",
                    "Required value".into(),
                ));
            }
        }
        let props = s("properties").and_then(Value::as_object);
        for (k, v) in map {
            if path.is_empty() && k == "metadata" {
                continue;
            }
            match (props.and_then(|p| p.get(k)), s("additionalProperties")) {
                (Some(ps), _) => check(ps, v, &child(path, k), out),
                (None, Some(ap)) if ap.is_object() => check(ap, v, &child(path, k), out),
                _ => {}
            }
        }
    }
    for rule in s("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(e) = eval_rule(rule, value, path) {
            out.push(e);
        }
    }
}

/// Every CEL rule in a schema that does not compile, as `path: error` (the apiserver refuses
/// such a CRD).
pub(crate) fn uncompilable_rules(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else {
        return;
    };
    for rule in obj
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
        if let Err(e) = Program::compile(text) {
            out.push(format!(
                "{}.x-kubernetes-validations: Invalid value: {text:?}: compilation failed: {e}",
                display_path(path)
            ));
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            uncompilable_rules(v, &format!("{path}.properties[{k}]"), out);
        }
    }
    for k in ["items", "additionalProperties"] {
        if let Some(v) = obj.get(k) {
            uncompilable_rules(v, &format!("{path}.{k}"), out);
        }
    }
}

/// Evaluates one `x-kubernetes-validations` entry with `self` bound to `value`; a false result
/// or an evaluation error is a refusal.
fn eval_rule(rule: &Value, value: &Value, path: &str) -> Option<FieldError> {
    let text = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
    let field = match rule.get("fieldPath").and_then(Value::as_str) {
        Some(fp) if path.is_empty() => fp.trim_start_matches('.').to_string(),
        Some(fp) => format!("{path}{fp}"),
        None => path.to_string(),
    };
    let message = || {
        rule.get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("failed rule: {text}"))
    };
    let program = match Program::compile(text) {
        Ok(p) => p,
        Err(e) => {
            return Some(FieldError::new(
                &field,
                "InternalError",
                format!("Internal error: rule compile error: {e}"),
            ));
        }
    };
    let mut context = Context::default();
    context.add_variable_from_value("self", to_cel(value));
    match program.execute(&context) {
        Ok(cel_interpreter::Value::Bool(true)) => None,
        Ok(cel_interpreter::Value::Bool(false)) => Some(FieldError::new(
            &field,
            "FieldValueInvalid",
            format!("Invalid value: {}: {}", shown(value), message()),
        )),
        Ok(other) => Some(FieldError::new(
            &field,
            "InternalError",
            format!("Internal error: rule {text:?} returned {other:?}, not a bool"),
        )),
        Err(e) => Some(FieldError::new(
            &field,
            "InternalError",
            format!("Internal error: rule {text:?}: {e}"),
        )),
    }
}

/// JSON as CEL sees a structural object: integers are `int`, objects are maps.
fn to_cel(v: &Value) -> cel_interpreter::Value {
    use cel_interpreter::Value as C;
    match v {
        Value::Null => C::Null,
        Value::Bool(b) => C::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => C::Int(i),
            (None, Some(u)) => C::UInt(u),
            _ => C::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => C::String(Arc::new(s.clone())),
        Value::Array(items) => C::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => {
            let m: HashMap<String, C> = map.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            C::from(m)
        }
    }
}
