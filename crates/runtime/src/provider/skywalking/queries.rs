//! Typed query documents (validated by graphql_client at compile time) and the
//! templating that turns each one into an aliased root field of a batch.
//!
//! The batch text is derived from the very `QUERY` constants graphql_client
//! generated from `queries/*.graphql`, so the selection sets that were
//! validated against `schema.graphql` are the ones sent: they cannot diverge.

use graphql_client::GraphQLQuery;

/// `Long` in the OAP schema is a JSON number (graphql-java `GraphQLLong`).
pub type Long = i64;

/// MQE `execExpression`, OAP >= 9.5.
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "src/provider/skywalking/schema.graphql",
    query_path = "src/provider/skywalking/queries/exec_expression.graphql",
    response_derives = "Debug, Clone, PartialEq",
    variables_derives = "Debug, Clone",
    skip_serializing_none
)]
#[allow(dead_code)] // marker for the derive; only the generated module is used
pub struct ExecExpression;

/// Legacy v2 `readMetricsValues` without `isEmptyValue` (OAP < 9.5 lacks it).
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "src/provider/skywalking/schema.graphql",
    query_path = "src/provider/skywalking/queries/read_metrics_values.graphql",
    response_derives = "Debug, Clone, PartialEq",
    variables_derives = "Debug, Clone",
    skip_serializing_none
)]
#[allow(dead_code)] // marker for the derive; only the generated module is used
pub struct ReadMetricsValues;

/// Legacy v2 `readMetricsValues` with `isEmptyValue` (OAP >= 9.5).
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "src/provider/skywalking/schema.graphql",
    query_path = "src/provider/skywalking/queries/read_metrics_values_empty.graphql",
    response_derives = "Debug, Clone, PartialEq",
    variables_derives = "Debug, Clone",
    skip_serializing_none
)]
#[allow(dead_code)] // marker for the derive; only the generated module is used
pub struct ReadMetricsValuesEmpty;

/// metadata-v2 `listInstances`, OAP >= 9.0.
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "src/provider/skywalking/schema.graphql",
    query_path = "src/provider/skywalking/queries/list_instances.graphql",
    response_derives = "Debug, Clone, PartialEq",
    variables_derives = "Debug, Clone",
    skip_serializing_none
)]
#[allow(dead_code)] // marker for the derive; only the generated module is used
pub struct ListInstances;

/// metadata v1 `getServiceInstances`, for OAP 8.x.
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "src/provider/skywalking/schema.graphql",
    query_path = "src/provider/skywalking/queries/get_service_instances.graphql",
    response_derives = "Debug, Clone, PartialEq",
    variables_derives = "Debug, Clone",
    skip_serializing_none
)]
#[allow(dead_code)] // marker for the derive; only the generated module is used
pub struct GetServiceInstances;

/// `version` + `getTimeInfo`, sent once per client.
#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "src/provider/skywalking/schema.graphql",
    query_path = "src/provider/skywalking/queries/server_info.graphql",
    response_derives = "Debug, Clone, PartialEq",
    variables_derives = "Debug, Clone",
    skip_serializing_none
)]
#[allow(dead_code)] // marker for the derive; only the generated module is used
pub struct ServerInfoQuery;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::duration::Window;
use super::{EntitySpec, ProviderError, Scope, Step};

/// Builds a module's generated `Entity`/`Duration` inputs from ours. Every
/// graphql_client module has its own copies of the input types.
macro_rules! inputs {
    ($m:ident, entity) => {
        impl $m::Entity {
            pub(crate) fn from_spec(e: &EntitySpec, scope: Scope, instance: Option<&str>) -> Self {
                $m::Entity {
                    scope: Some(match scope {
                        Scope::Service => $m::Scope::Service,
                        Scope::ServiceInstance => $m::Scope::ServiceInstance,
                        Scope::Endpoint => $m::Scope::Endpoint,
                    }),
                    service_name: Some(e.service_name.clone()),
                    normal: Some(e.normal),
                    service_instance_name: instance
                        .map(str::to_string)
                        .or_else(|| e.service_instance_name.clone()),
                    endpoint_name: e.endpoint_name.clone(),
                    dest_service_name: None,
                    dest_normal: None,
                    dest_service_instance_name: None,
                    dest_endpoint_name: None,
                }
            }
        }
        inputs!($m, duration);
    };
    ($m:ident, duration) => {
        impl $m::Duration {
            pub(crate) fn from_window(w: &Window) -> Self {
                $m::Duration {
                    start: w.start.clone(),
                    end: w.end.clone(),
                    step: match w.step {
                        Step::Second => $m::Step::SECOND,
                        Step::Minute => $m::Step::MINUTE,
                        Step::Hour => $m::Step::HOUR,
                        Step::Day => $m::Step::DAY,
                    },
                }
            }
        }
    };
}

inputs!(exec_expression, entity);
inputs!(read_metrics_values, entity);
inputs!(read_metrics_values_empty, entity);
inputs!(list_instances, duration);
inputs!(get_service_instances, duration);

/// One validated operation reduced to its single root field, ready to be
/// re-emitted under another alias with renamed variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldTemplate {
    /// `(variable name, GraphQL type)` in declaration order.
    pub vars: Vec<(String, String)>,
    /// The root field without its alias, `$var` references intact, whitespace collapsed.
    pub field: String,
}

impl FieldTemplate {
    /// Splits `query Name($a: T!, ...) { alias: field(...) { ... } }`.
    pub fn parse(query: &str) -> Result<Self, ProviderError> {
        let bad = |why: &str| ProviderError::Internal(format!("query template: {why}"));
        let open = query.find('(').ok_or_else(|| bad("no variables"))?;
        let close = query[open..]
            .find(')')
            .ok_or_else(|| bad("unclosed variables"))?
            + open;
        let mut vars = Vec::new();
        for def in query[open + 1..close].split(',') {
            let (name, ty) = def
                .split_once(':')
                .ok_or_else(|| bad("variable without type"))?;
            let name = name
                .trim()
                .strip_prefix('$')
                .ok_or_else(|| bad("variable without $"))?;
            vars.push((name.to_string(), ty.trim().to_string()));
        }
        let body_open = query[close..].find('{').ok_or_else(|| bad("no body"))? + close;
        let body_close = query.rfind('}').ok_or_else(|| bad("unclosed body"))?;
        if body_close <= body_open {
            return Err(bad("empty body"));
        }
        let body = query[body_open + 1..body_close].trim();
        let body = match body.split_once(':') {
            Some((alias, rest))
                if alias
                    .trim()
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_') =>
            {
                rest.trim()
            }
            _ => body,
        };
        let field = body.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok(FieldTemplate { vars, field })
    }

    /// `alias: field` with each `$var` renamed through `rename`.
    pub fn render(
        &self,
        alias: &str,
        rename: &BTreeMap<String, String>,
    ) -> Result<String, ProviderError> {
        let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let mut out = format!("{alias}: ");
        let mut rest = self.field.as_str();
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            let len = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
            let name = &after[..len];
            let new = rename.get(name).ok_or_else(|| {
                ProviderError::Internal(format!("template variable ${name} not bound"))
            })?;
            out.push('$');
            out.push_str(new);
            rest = &after[len..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// Templates of the typed operations, parsed once.
pub(crate) struct Templates {
    pub mqe: FieldTemplate,
    pub v2: FieldTemplate,
    pub v2_empty: FieldTemplate,
    pub list_instances: FieldTemplate,
    pub get_service_instances: FieldTemplate,
}

/// All templates; errors only if a checked-in query file is malformed (unit-tested).
pub(crate) fn templates() -> Result<&'static Templates, ProviderError> {
    static T: OnceLock<Result<Templates, ProviderError>> = OnceLock::new();
    T.get_or_init(|| {
        Ok(Templates {
            mqe: FieldTemplate::parse(exec_expression::QUERY)?,
            v2: FieldTemplate::parse(read_metrics_values::QUERY)?,
            v2_empty: FieldTemplate::parse(read_metrics_values_empty::QUERY)?,
            list_instances: FieldTemplate::parse(list_instances::QUERY)?,
            get_service_instances: FieldTemplate::parse(get_service_instances::QUERY)?,
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Accumulates aliased root fields and their variables into one document.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    var_defs: Vec<String>,
    fields: Vec<String>,
    variables: Map<String, Value>,
    /// Shared variables (durations) by value, so equal windows share one `$dN`.
    shared: Vec<(Value, String)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Adds `alias: <template>` with the values of the generated `Variables`
    /// struct. `Duration!` values are shared across fields; others get a
    /// per-field name (`$ex0`, `$e0`, `$c0`, `$s0`).
    pub fn add<V: serde::Serialize>(
        &mut self,
        alias: &str,
        template: &FieldTemplate,
        variables: &V,
    ) -> Result<(), ProviderError> {
        let values = match serde_json::to_value(variables) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(ProviderError::Internal(
                    "variables are not an object".into(),
                ));
            }
            Err(e) => return Err(ProviderError::Internal(format!("serialize variables: {e}"))),
        };
        let index = self.fields.len();
        let mut rename = BTreeMap::new();
        for (name, ty) in &template.vars {
            let value = values.get(name).cloned().unwrap_or(Value::Null);
            let new = if ty == "Duration!" {
                match self.shared.iter().find(|(v, _)| *v == value) {
                    Some((_, n)) => n.clone(),
                    None => {
                        let n = format!("d{}", self.shared.len());
                        self.shared.push((value.clone(), n.clone()));
                        self.declare(&n, ty, value);
                        n
                    }
                }
            } else {
                let prefix = match name.as_str() {
                    "expression" => "ex",
                    "entity" => "e",
                    "condition" => "c",
                    "serviceId" => "s",
                    other => other,
                };
                let n = format!("{prefix}{index}");
                self.declare(&n, ty, value);
                n
            };
            rename.insert(name.clone(), new);
        }
        self.fields.push(template.render(alias, &rename)?);
        Ok(())
    }

    fn declare(&mut self, name: &str, ty: &str, value: Value) {
        self.var_defs.push(format!("${name}: {ty}"));
        self.variables.insert(name.to_string(), value);
    }

    /// The document text and the variables object.
    pub fn finish(self, operation: &str) -> (String, Value) {
        let doc = format!(
            "query {operation}({}) {{\n  {}\n}}",
            self.var_defs.join(", "),
            self.fields.join("\n  ")
        );
        (doc, Value::Object(self.variables))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let t = templates().expect("templates");
        assert_eq!(
            t.mqe.vars,
            vec![
                ("expression".to_string(), "String!".to_string()),
                ("entity".to_string(), "Entity!".to_string()),
                ("duration".to_string(), "Duration!".to_string())
            ]
        );
        assert!(t.mqe.field.starts_with(
            "execExpression(expression: $expression, entity: $entity, duration: $duration) { type error results"
        ));
        assert!(!t.v2.field.contains("isEmptyValue"));
        assert!(t.v2_empty.field.contains("isEmptyValue"));
        assert!(t.list_instances.field.starts_with("listInstances("));
        assert!(
            t.get_service_instances
                .field
                .starts_with("getServiceInstances(")
        );
        for f in [&t.mqe, &t.v2, &t.v2_empty] {
            assert!(!f.field.contains("owner") && !f.field.contains("debuggingTrace"));
        }
    }

    #[test]
    fn render_renames_every_variable() {
        let t = FieldTemplate::parse(
            "query Q($a: String!, $ab: Duration!) { x: f(a: $a, b: $ab) { y } }",
        )
        .expect("parse");
        let mut rename = BTreeMap::new();
        rename.insert("a".to_string(), "a7".to_string());
        rename.insert("ab".to_string(), "d0".to_string());
        assert_eq!(
            t.render("m7", &rename),
            Ok("m7: f(a: $a7, b: $d0) { y }".to_string())
        );
        rename.remove("ab");
        assert!(matches!(
            t.render("m7", &rename),
            Err(ProviderError::Internal(_))
        ));
    }

    #[test]
    fn batch_shares_durations_and_names_variables() {
        let t = templates().expect("templates");
        let w = Window {
            start: "2024-07-01 1200".into(),
            end: "2024-07-01 1204".into(),
            step: Step::Minute,
            points: 5,
            clamped: false,
            start_local: 1_719_835_200,
            offset_secs: 0,
        };
        let spec = EntitySpec::service("reviews.bookinfo");
        let mut b = Batch::default();
        for (i, metric) in ["service_apdex", "service_sla"].iter().enumerate() {
            let vars = exec_expression::Variables {
                expression: metric.to_string(),
                entity: exec_expression::Entity::from_spec(&spec, Scope::Service, None),
                duration: exec_expression::Duration::from_window(&w),
            };
            b.add(&format!("m{i}"), &t.mqe, &vars).expect("add");
        }
        let (doc, vars) = b.finish("SkycanaryBatch");
        assert!(doc.starts_with(
            "query SkycanaryBatch($ex0: String!, $e0: Entity!, $d0: Duration!, $ex1: String!, $e1: Entity!)"
        ));
        assert!(doc.contains("m0: execExpression(expression: $ex0, entity: $e0, duration: $d0)"));
        assert!(doc.contains("m1: execExpression(expression: $ex1, entity: $e1, duration: $d0)"));
        assert!(!doc.contains("reviews"));
        assert_eq!(vars["ex1"], "service_sla");
        assert_eq!(
            vars["e0"],
            serde_json::json!({"scope": "Service", "serviceName": "reviews.bookinfo", "normal": true})
        );
        assert_eq!(
            vars["d0"],
            serde_json::json!({"start": "2024-07-01 1200", "end": "2024-07-01 1204", "step": "MINUTE"})
        );
    }
}
