//! Turns the per-profile SDL into an async-graphql dynamic schema, and checks
//! request variables the way graphql-java coerces them (exact OAP messages).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dynamic::{
    Enum, Field, FieldFuture, FieldValue, InputObject, InputValue, Object, Scalar, Schema, TypeRef,
};
use async_graphql::parser::types::{
    BaseType, ExecutableDocument, OperationDefinition, Type, TypeKind, TypeSystemDefinition,
};
use async_graphql::{ErrorExtensions, Name, Positioned, Value as GqlValue};

/// Private extension key carrying a resolver error's response key.
pub const RESOLVER_PATH_EXT: &str = "x-sim-path";
use serde_json::Value as Json;

use super::Inner;
use super::profile::OapProfile;
use super::resolvers;

/// Input-side view of the schema, used to coerce variables ourselves.
#[derive(Debug, Default)]
pub struct TypeModel {
    inputs: HashMap<String, Vec<(String, Type)>>,
    enums: HashMap<String, Vec<String>>,
}

/// The schema could not be assembled (a bug in our SDL, surfaced instead of panicking).
#[derive(Debug, thiserror::Error)]
#[error("simulator schema error: {0}")]
pub struct SchemaBuildError(pub String);

fn to_type_ref(t: &Type) -> TypeRef {
    let base = match &t.base {
        BaseType::Named(n) => TypeRef::Named(n.to_string().into()),
        BaseType::List(inner) => TypeRef::List(Box::new(to_type_ref(inner))),
    };
    if t.nullable {
        base
    } else {
        TypeRef::NonNull(Box::new(base))
    }
}

/// Builds the dynamic schema and the input model for `profile`.
pub fn build(profile: OapProfile) -> Result<(Schema, TypeModel), SchemaBuildError> {
    let text = super::sdl::sdl(profile);
    let doc =
        async_graphql::parser::parse_schema(&text).map_err(|e| SchemaBuildError(e.to_string()))?;
    let mut builder = Schema::build("Query", None, None).disable_suggestions();
    let mut model = TypeModel::default();
    for def in doc.definitions {
        let TypeSystemDefinition::Type(td) = def else {
            continue;
        };
        let td = td.node;
        let name = td.name.node.to_string();
        match td.kind {
            TypeKind::Scalar => {
                builder = builder.register(Scalar::new(name));
            }
            TypeKind::Enum(e) => {
                let items: Vec<String> = e
                    .values
                    .iter()
                    .map(|v| v.node.value.node.to_string())
                    .collect();
                builder = builder.register(Enum::new(name.clone()).items(items.clone()));
                model.enums.insert(name, items);
            }
            TypeKind::InputObject(io) => {
                let mut obj = InputObject::new(name.clone());
                let mut fields = Vec::new();
                for f in io.fields {
                    let f = f.node;
                    obj = obj.field(InputValue::new(
                        f.name.node.to_string(),
                        to_type_ref(&f.ty.node),
                    ));
                    fields.push((f.name.node.to_string(), f.ty.node));
                }
                builder = builder.register(obj);
                model.inputs.insert(name, fields);
            }
            TypeKind::Object(o) => {
                let is_query = name == "Query";
                let mut obj = Object::new(name);
                for f in o.fields {
                    let f = f.node;
                    let fname = f.name.node.to_string();
                    let ty = to_type_ref(&f.ty.node);
                    let mut field = if is_query {
                        root_field(fname, ty)
                    } else {
                        child_field(fname, ty)
                    };
                    for a in f.arguments {
                        let a = a.node;
                        field = field.argument(InputValue::new(
                            a.name.node.to_string(),
                            to_type_ref(&a.ty.node),
                        ));
                    }
                    obj = obj.field(field);
                }
                builder = builder.register(obj);
            }
            _ => {}
        }
    }
    let schema = builder
        .finish()
        .map_err(|e| SchemaBuildError(e.to_string()))?;
    Ok((schema, model))
}

/// Query fields dispatch to the resolvers with JSON arguments.
fn root_field(name: String, ty: TypeRef) -> Field {
    let fname = name.clone();
    Field::new(name, ty, move |ctx| {
        let fname = fname.clone();
        FieldFuture::new(async move {
            let inner = ctx.data::<Arc<Inner>>()?;
            let mut args = serde_json::Map::new();
            for (k, v) in ctx.args.as_index_map() {
                args.insert(k.to_string(), v.clone().into_json().unwrap_or(Json::Null));
            }
            let key = ctx.ctx.item.node.response_key().node.to_string();
            match resolvers::root(inner, &fname, &args, &key) {
                Ok(Json::Null) => Ok(None),
                Ok(v) => Ok(Some(FieldValue::value(
                    GqlValue::from_json(v).unwrap_or(GqlValue::Null),
                ))),
                // Dynamic resolvers get no error path; tag the error so the
                // transport can tell it from validation errors and add the path.
                Err(msg) => Err(async_graphql::Error::new(msg).extend_with(|_, e| {
                    e.set("classification", "DataFetchingException");
                    e.set(RESOLVER_PATH_EXT, key.as_str());
                })),
            }
        })
    })
}

/// Non-root fields read their value out of the parent's JSON-like value.
fn child_field(name: String, ty: TypeRef) -> Field {
    let fname = name.clone();
    Field::new(name, ty, move |ctx| {
        let v = match ctx.parent_value.as_value() {
            Some(GqlValue::Object(m)) => m.get(fname.as_str()).cloned(),
            _ => None,
        };
        FieldFuture::from_value(match v {
            None | Some(GqlValue::Null) => None,
            Some(v) => Some(v),
        })
    })
}

/// Picks the operation a request executes, as graphql-java does.
pub fn select_operation<'d>(
    doc: &'d ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<&'d Positioned<OperationDefinition>> {
    let mut ops = doc.operations.iter();
    match operation_name {
        Some(n) => ops
            .find(|(name, _)| name.map(|x| x.as_str()) == Some(n))
            .map(|(_, op)| op),
        None => ops.next().map(|(_, op)| op),
    }
}

fn type_string(t: &Type) -> String {
    t.to_string()
}

impl TypeModel {
    /// Coerces the request variables; returns graphql-java style messages on failure.
    pub fn check_variables(
        &self,
        op: &OperationDefinition,
        vars: &serde_json::Map<String, Json>,
    ) -> Result<(), String> {
        for def in &op.variable_definitions {
            let def = &def.node;
            let vname = def.name.node.as_str();
            let value = vars.get(vname);
            match value {
                None | Some(Json::Null) => {
                    if !def.var_type.node.nullable && def.default_value.is_none() {
                        return Err(format!(
                            "Variable '{vname}' has coerced Null value for NonNull type '{}'",
                            type_string(&def.var_type.node)
                        ));
                    }
                }
                Some(v) => self.check_value(vname, &def.var_type.node, v)?,
            }
        }
        Ok(())
    }

    fn check_value(&self, var: &str, ty: &Type, v: &Json) -> Result<(), String> {
        if v.is_null() {
            return Ok(());
        }
        match &ty.base {
            BaseType::List(item) => match v {
                Json::Array(items) => {
                    for it in items {
                        self.check_item(var, item, it)?;
                    }
                    Ok(())
                }
                other => self.check_item(var, item, other),
            },
            BaseType::Named(n) => self.check_named(var, n, v),
        }
    }

    fn check_item(&self, var: &str, ty: &Type, v: &Json) -> Result<(), String> {
        if v.is_null() && !ty.nullable {
            return Err(format!(
                "Variable '{var}' has an invalid value: Expected non-null value for type '{}'",
                type_string(ty)
            ));
        }
        self.check_value(var, ty, v)
    }

    fn check_named(&self, var: &str, name: &Name, v: &Json) -> Result<(), String> {
        let invalid = |what: &str| format!("Variable '{var}' has an invalid value: {what}");
        let kind = json_kind(v);
        let bad_scalar = || {
            Err(invalid(&format!(
                "Expected a value that can be converted to type '{name}' but it was a '{kind}'"
            )))
        };
        match name.as_str() {
            "String" => {
                if v.is_string() {
                    Ok(())
                } else {
                    bad_scalar()
                }
            }
            "ID" => {
                if v.is_string() || v.is_i64() || v.is_u64() {
                    Ok(())
                } else {
                    bad_scalar()
                }
            }
            "Boolean" => {
                if v.is_boolean() {
                    Ok(())
                } else {
                    bad_scalar()
                }
            }
            "Int" => match v.as_i64() {
                Some(i) if i32::try_from(i).is_ok() => Ok(()),
                _ => bad_scalar(),
            },
            "Long" => {
                let ok = v.is_i64()
                    || v.as_str()
                        .map(|s| s.parse::<i64>().is_ok())
                        .unwrap_or(false);
                if ok { Ok(()) } else { bad_scalar() }
            }
            "Float" => {
                if v.is_number() {
                    Ok(())
                } else {
                    bad_scalar()
                }
            }
            other => {
                if let Some(items) = self.enums.get(other) {
                    return match v.as_str() {
                        Some(s) if items.iter().any(|i| i == s) => Ok(()),
                        Some(s) => Err(invalid(&format!(
                            "Invalid input for enum '{other}'. No value found for name '{s}'"
                        ))),
                        None => Err(invalid(&format!(
                            "Invalid input for enum '{other}'. Unexpected value type '{kind}'"
                        ))),
                    };
                }
                if let Some(fields) = self.inputs.get(other) {
                    let Json::Object(obj) = v else {
                        return Err(invalid(&format!(
                            "Expected type 'Map' but was '{kind}'. Variables for input objects must be an instance of type 'Map'."
                        )));
                    };
                    for key in obj.keys() {
                        if !fields.iter().any(|(f, _)| f == key) {
                            return Err(format!(
                                "The variables input contains a field name '{key}' that is not defined for input object type '{other}' "
                            ));
                        }
                    }
                    for (fname, fty) in fields {
                        match obj.get(fname) {
                            None | Some(Json::Null) if !fty.nullable => {
                                return Err(format!(
                                    "Field '{fname}' of variable '{var}' has coerced Null value for NonNull type '{}'",
                                    type_string(fty)
                                ));
                            }
                            Some(fv) => self.check_value(var, fty, fv)?,
                            None => {}
                        }
                    }
                }
                // Unknown type names are reported by query validation.
                Ok(())
            }
        }
    }
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "Boolean",
        Json::Number(n) if n.is_f64() => "Double",
        Json::Number(_) => "Integer",
        Json::String(_) => "String",
        Json::Array(_) => "ArrayList",
        Json::Object(_) => "LinkedHashMap",
    }
}
