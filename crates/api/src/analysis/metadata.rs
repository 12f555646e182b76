//! A measurement's `metadata` (Argo's string map): a short list sorted by key. Every
//! measurement kept in status has one (three to six entries), and a `BTreeMap` gives each a
//! node of room for eleven plus an allocation per key; this keeps the entries and nothing
//! more, with the keys the daemon writes borrowed from the binary. In JSON and in the CRD's
//! schema it is the same string map.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Index;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// String keys to string values, each key once, in key order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MeasurementMetadata(Vec<(Cow<'static, str>, String)>);

impl MeasurementMetadata {
    /// No entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, returning the value it replaces.
    pub fn insert(&mut self, key: impl Into<Cow<'static, str>>, value: String) -> Option<String> {
        let key = key.into();
        match self
            .0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key.as_ref()))
        {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.position(key).map(|i| self.0[i].1.as_str())
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_str()))
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(key)).ok()
    }
}

impl Index<&str> for MeasurementMetadata {
    type Output = String;

    /// The value of `key`; panics when there is none, as a map's index does.
    fn index(&self, key: &str) -> &String {
        match self.position(key) {
            Some(i) => &self.0[i].1,
            None => panic!("no metadata entry {key:?}"),
        }
    }
}

impl<K: Into<Cow<'static, str>>> FromIterator<(K, String)> for MeasurementMetadata {
    /// Later entries win over earlier ones with the same key, as in a map.
    fn from_iter<I: IntoIterator<Item = (K, String)>>(iter: I) -> Self {
        let mut m = MeasurementMetadata::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

impl From<MeasurementMetadata> for BTreeMap<String, String> {
    fn from(m: MeasurementMetadata) -> Self {
        m.0.into_iter().map(|(k, v)| (k.into_owned(), v)).collect()
    }
}

impl Serialize for MeasurementMetadata {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k.as_ref(), v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for MeasurementMetadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = MeasurementMetadata;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of strings to strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut m = MeasurementMetadata::new();
                while let Some((k, v)) = access.next_entry::<String, String>()? {
                    m.insert(k, v);
                }
                m.0.shrink_to_fit();
                Ok(m)
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// The schema of a string map, as before this type existed: the CRDs do not change.
impl JsonSchema for MeasurementMetadata {
    fn schema_name() -> Cow<'static, str> {
        <BTreeMap<String, String>>::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        <BTreeMap<String, String>>::schema_id()
    }

    fn inline_schema() -> bool {
        <BTreeMap<String, String>>::inline_schema()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        <BTreeMap<String, String>>::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_kept_in_key_order_and_a_key_once() {
        let mut m = MeasurementMetadata::new();
        assert_eq!(m.insert("windowStart", "a".into()), None);
        assert_eq!(m.insert("droppedPoints", "0".into()), None);
        assert_eq!(m.insert(String::from("windowEnd"), "b".into()), None);
        assert_eq!(m.insert("windowStart", "c".into()), Some("a".into()));
        let entries: Vec<_> = m.iter().collect();
        assert_eq!(
            entries,
            [
                ("droppedPoints", "0"),
                ("windowEnd", "b"),
                ("windowStart", "c")
            ]
        );
        assert_eq!(m.get("windowEnd"), Some("b"));
        assert_eq!(m.get("nope"), None);
        assert_eq!(m["droppedPoints"], "0");
    }

    #[test]
    fn json_is_the_string_map_a_btree_map_writes_and_reads() {
        let m: MeasurementMetadata = [("b", "2".to_string()), ("a", "1".to_string())]
            .into_iter()
            .collect();
        let as_map: BTreeMap<String, String> = m.clone().into();
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            serde_json::to_string(&as_map).unwrap()
        );
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"a":"1","b":"2"}"#);
        // Read back in key order whatever the order written; a repeated key keeps the last.
        let back: MeasurementMetadata =
            serde_json::from_str(r#"{"b":"2","a":"1","b":"3"}"#).unwrap();
        assert_eq!(back.iter().collect::<Vec<_>>(), [("a", "1"), ("b", "3")]);
        assert!(serde_json::from_str::<MeasurementMetadata>(r#"{"a":1}"#).is_err());
        assert!(serde_json::from_str::<MeasurementMetadata>("[]").is_err());
    }

    #[test]
    fn the_schema_is_a_string_map_s() {
        let ours = schemars::schema_for!(MeasurementMetadata);
        let map = schemars::schema_for!(BTreeMap<String, String>);
        assert_eq!(ours, map);
    }
}
