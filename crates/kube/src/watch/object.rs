//! [`SourceObject`]: one of the daemon's own objects as its list and watch decode it.
//!
//! A Canary's `.status` (every run, every measurement and its evidence) is most of the object
//! and changes with every measurement, so every status write comes back through the watch.
//! The daemon reads its status through the status store, never from the watch, except for
//! `status.command` (a command request written by `kubectl`-like clients). Decoding into
//! kube's `DynamicObject` built the whole status as a JSON tree for each of those events, to
//! be thrown away at once; this type skips it while parsing and keeps `command` alone.

use std::borrow::Cow;
use std::fmt;

use kube::Resource;
use kube::api::{ApiResource, ObjectMeta, TypeMeta};
use kube::core::DynamicResourceScope;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A source object: `apiVersion` and `kind`, `metadata`, every other top-level field as JSON
/// in `data`, where `status` holds at most `{"command": ...}` (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceObject {
    /// `apiVersion` and `kind` (list items may omit them).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub types: Option<TypeMeta>,
    /// The object's metadata.
    pub metadata: ObjectMeta,
    /// The other top-level fields (`spec`, ...), and `status.command` alone.
    #[serde(flatten)]
    pub data: Value,
}

impl Resource for SourceObject {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }

    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }

    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }

    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl<'de> Deserialize<'de> for SourceObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = SourceObject;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SourceObject, A::Error> {
        let (mut api_version, mut kind, mut metadata) = (None, None, None);
        let mut data = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "apiVersion" => api_version = Some(map.next_value::<String>()?),
                "kind" => kind = Some(map.next_value::<String>()?),
                "metadata" => metadata = Some(map.next_value::<ObjectMeta>()?),
                "status" => {
                    if let Some(command) = map.next_value::<CommandOnly>()?.0 {
                        let mut status = Map::new();
                        status.insert("command".into(), command);
                        data.insert(key, Value::Object(status));
                    }
                }
                _ => {
                    data.insert(key, map.next_value::<Value>()?);
                }
            }
        }
        let types = match (api_version, kind) {
            (Some(api_version), Some(kind)) => Some(TypeMeta { api_version, kind }),
            _ => None,
        };
        Ok(SourceObject {
            types,
            metadata: metadata.ok_or_else(|| de::Error::missing_field("metadata"))?,
            data: Value::Object(data),
        })
    }
}

/// A `.status` reduced to its `command` while parsing: the other fields are skipped, and a
/// status that is not an object has no command.
struct CommandOnly(Option<Value>);

impl<'de> Deserialize<'de> for CommandOnly {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CommandVisitor)
    }
}

struct CommandVisitor;

impl<'de> Visitor<'de> for CommandVisitor {
    type Value = CommandOnly;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a status")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CommandOnly, A::Error> {
        let mut command = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "command" {
                command = Some(map.next_value::<Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(CommandOnly(command))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<CommandOnly, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(CommandOnly(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<CommandOnly, E> {
        Ok(CommandOnly(None))
    }

    fn visit_none<E: de::Error>(self) -> Result<CommandOnly, E> {
        Ok(CommandOnly(None))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<CommandOnly, E> {
        Ok(CommandOnly(None))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<CommandOnly, E> {
        Ok(CommandOnly(None))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<CommandOnly, E> {
        Ok(CommandOnly(None))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<CommandOnly, E> {
        Ok(CommandOnly(None))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<CommandOnly, E> {
        Ok(CommandOnly(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_status_keeps_only_its_command_and_the_rest_is_as_written() {
        let text = json!({
            "apiVersion": "skycanary.io/v1alpha1",
            "kind": "Canary",
            "metadata": {"name": "web", "namespace": "shop", "generation": 3},
            "spec": {"steps": [{"setWeight": 20}]},
            "status": {
                "phase": "Progressing",
                "analysisRuns": [{"name": "r", "status": {"metricResults": [{"measurements": [1, 2, 3]}]}}],
                "command": {"id": "c1", "action": "promote"}
            }
        })
        .to_string();
        let o: SourceObject = serde_json::from_str(&text).expect("parsed");
        assert_eq!(o.metadata.name.as_deref(), Some("web"));
        assert_eq!(o.metadata.generation, Some(3));
        assert_eq!(
            o.types
                .as_ref()
                .map(|t| (t.api_version.as_str(), t.kind.as_str())),
            Some(("skycanary.io/v1alpha1", "Canary"))
        );
        assert_eq!(
            o.data,
            json!({
                "spec": {"steps": [{"setWeight": 20}]},
                "status": {"command": {"id": "c1", "action": "promote"}}
            })
        );
    }

    #[test]
    fn a_status_without_a_command_or_not_an_object_is_left_out() {
        for status in [
            json!({"phase": "Healthy"}),
            json!(null),
            json!("odd"),
            json!([1]),
        ] {
            let text = json!({"metadata": {"name": "t"}, "spec": {}, "status": status}).to_string();
            let o: SourceObject = serde_json::from_str(&text).expect("parsed");
            assert_eq!(o.data, json!({"spec": {}}), "status {status}");
            assert_eq!(o.types, None, "a list item without apiVersion and kind");
        }
    }

    #[test]
    fn an_object_without_metadata_is_an_error() {
        let err = serde_json::from_str::<SourceObject>(r#"{"spec": {}}"#).unwrap_err();
        assert!(err.to_string().contains("metadata"), "{err}");
    }
}
