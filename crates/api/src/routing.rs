//! The routing a Canary wants and the weights read back from its VirtualServices, as status
//! holds them (`applied`, `routingWrite`, `weights`). Plain data: the Istio transforms that
//! realise a [`DesiredRouting`] are `skycanary_core::traffic::istio`, which re-exports these
//! types as `skycanary_core::traffic::*`.

use serde::{Deserialize, Serialize};

/// How a header value is matched (Istio `StringMatch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    /// Exact value.
    Exact(String),
    /// The value starts with this string.
    #[schemars(description = "Prefix.")]
    Prefix(String),
    /// RE2 regex.
    Regex(String),
}

/// One header matcher: `{name: end-user, match: {exact: jason}}`.
// A struct, not a `[name, match]` pair, so the CRD schema is structural and `kubectl describe`
// prints field names. Statuses and state files written before issue 18 hold the pair; the
// deserialiser reads both so a restarted daemon resumes from them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct HeaderMatch {
    /// Header name.
    pub name: String,
    /// How its value is matched.
    #[serde(rename = "match")]
    pub value: StringMatch,
}

impl HeaderMatch {
    /// Header `name` matched by `value`.
    pub fn new(name: impl Into<String>, value: StringMatch) -> Self {
        HeaderMatch {
            name: name.into(),
            value,
        }
    }
}

impl<'de> Deserialize<'de> for HeaderMatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PairOrStruct::<StringMatch>::new("name", "match"))
            .map(|(name, value)| HeaderMatch { name, value })
    }
}

/// The weight of an additional destination on a route: `{destination: reviews/v3, weight: 10}`.
// Reads the `[destination, weight]` pair older statuses hold, as `HeaderMatch` does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct DestinationWeight {
    /// `host[/subset]`, as the VirtualService names it.
    pub destination: String,
    /// Its weight.
    pub weight: i64,
}

impl DestinationWeight {
    /// `destination` with `weight`.
    pub fn new(destination: impl Into<String>, weight: i64) -> Self {
        DestinationWeight {
            destination: destination.into(),
            weight,
        }
    }
}

impl<'de> Deserialize<'de> for DestinationWeight {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PairOrStruct::<i64>::new("destination", "weight"))
            .map(|(destination, weight)| DestinationWeight {
                destination,
                weight,
            })
    }
}

/// Reads a named pair either as the struct `{key: .., value_key: ..}` (current form) or as
/// the two-element array `[key, value]` (the form written before issue 18), so one field
/// type accepts both without an untagged enum's "did not match any variant" error.
struct PairOrStruct<V> {
    key: &'static str,
    value_key: &'static str,
    value: std::marker::PhantomData<V>,
}

impl<V> PairOrStruct<V> {
    fn new(key: &'static str, value_key: &'static str) -> Self {
        PairOrStruct {
            key,
            value_key,
            value: std::marker::PhantomData,
        }
    }
}

impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for PairOrStruct<V> {
    type Value = (String, V);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "an object with `{}` and `{}`, or a [{}, {}] pair",
            self.key, self.value_key, self.key, self.value_key
        )
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let key: String = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(0, &self))?;
        let value: V = seq
            .next_element()?
            .ok_or_else(|| A::Error::invalid_length(1, &self))?;
        if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            return Err(A::Error::invalid_length(3, &self));
        }
        Ok((key, value))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error;
        let mut key: Option<String> = None;
        let mut value: Option<V> = None;
        while let Some(k) = map.next_key::<String>()? {
            if k == self.key {
                if key.is_some() {
                    return Err(A::Error::custom(format_args!(
                        "duplicate field `{}`",
                        self.key
                    )));
                }
                key = Some(map.next_value()?);
            } else if k == self.value_key {
                if value.is_some() {
                    return Err(A::Error::custom(format_args!(
                        "duplicate field `{}`",
                        self.value_key
                    )));
                }
                value = Some(map.next_value()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        let key = key.ok_or_else(|| A::Error::missing_field(self.key))?;
        let value = value.ok_or_else(|| A::Error::missing_field(self.value_key))?;
        Ok((key, value))
    }
}

/// A header route: requests whose headers match go 100 % to the canary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderRoute {
    /// Route name; must be listed in `managed_routes`.
    pub name: String,
    /// Header matchers, ORed (each is one Istio match entry, as Argo writes setHeaderRoute).
    pub headers: Vec<HeaderMatch>,
}

/// One match entry of a mirror route (Argo `RouteMatch`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorMatch {
    /// HTTP method.
    pub method: Option<StringMatch>,
    /// URI path.
    pub path: Option<StringMatch>,
    /// Headers (all must match).
    pub headers: Vec<HeaderMatch>,
}

/// A mirror route: matching requests follow the weighted route and are also mirrored to the
/// canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorRoute {
    /// Route name; must be listed in `managed_routes`.
    pub name: String,
    /// Percentage of matching requests mirrored (default 100).
    pub percentage: Option<f64>,
    /// Match entries (OR).
    pub matches: Vec<MirrorMatch>,
}

/// The complete routing state a Canary wants. Applying it is idempotent: managed routes not
/// listed here are removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DesiredRouting {
    /// Canary weight on every selected route (0..=max_weight).
    pub canary_weight: i64,
    /// Header routes wanted now.
    pub header_routes: Vec<HeaderRoute>,
    /// Mirror routes wanted now.
    pub mirror_routes: Vec<MirrorRoute>,
}

impl DesiredRouting {
    /// Whether this routing exposes the canary at all (weight, header or mirror routes): only
    /// such a write can leave the routes ahead of what a restarted daemon would resume from.
    pub fn exposes_canary(&self) -> bool {
        self.canary_weight > 0 || !self.header_routes.is_empty() || !self.mirror_routes.is_empty()
    }

    /// Only weights; no header or mirror routes.
    pub fn weight(canary_weight: i64) -> Self {
        DesiredRouting {
            canary_weight,
            header_routes: Vec::new(),
            mirror_routes: Vec::new(),
        }
    }
}

/// Kind of a route in a VirtualService.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum RouteKind {
    /// `spec.http[]`
    Http,
    /// `spec.tls[]`
    Tls,
    /// `spec.tcp[]`
    Tcp,
}

/// Weights read from one selected route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteWeights {
    /// VirtualService name.
    pub virtual_service: String,
    /// Route kind.
    pub kind: RouteKind,
    /// Route name, or `#index` for unnamed routes.
    pub route: String,
    /// Stable weight.
    pub stable: i64,
    /// Canary weight.
    pub canary: i64,
    /// Additional destinations and their weights.
    pub others: Vec<DestinationWeight>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn header_matchers_and_destination_weights_are_written_as_named_fields() {
        let h = HeaderMatch::new("end-user", StringMatch::Exact("jason".into()));
        assert_eq!(
            serde_json::to_value(&h).unwrap(),
            json!({"name": "end-user", "match": {"exact": "jason"}})
        );
        let d = DestinationWeight::new("reviews/v3", 10);
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            json!({"destination": "reviews/v3", "weight": 10})
        );
    }

    /// Statuses and state files written before issue 18 hold `[name, match]` and
    /// `[destination, weight]` pairs; both forms read the same.
    #[test]
    fn the_pair_form_of_older_statuses_still_reads() {
        let h = HeaderMatch::new("end-user", StringMatch::Prefix("ja".into()));
        for v in [
            json!(["end-user", {"prefix": "ja"}]),
            json!({"name": "end-user", "match": {"prefix": "ja"}}),
        ] {
            assert_eq!(serde_json::from_value::<HeaderMatch>(v).unwrap(), h);
        }
        let d = DestinationWeight::new("reviews/v3", 10);
        for v in [
            json!(["reviews/v3", 10]),
            json!({"destination": "reviews/v3", "weight": 10}),
        ] {
            assert_eq!(serde_json::from_value::<DestinationWeight>(v).unwrap(), d);
        }
        // Mixed in one list, as a route half rewritten never is, still reads.
        let route: HeaderRoute = serde_json::from_value(json!({"name": "beta", "headers": [
            ["x-beta", {"regex": ".*"}], {"name": "y", "match": {"exact": "1"}}]}))
        .unwrap();
        assert_eq!(
            route.headers,
            vec![
                HeaderMatch::new("x-beta", StringMatch::Regex(".*".into())),
                HeaderMatch::new("y", StringMatch::Exact("1".into())),
            ]
        );
    }

    #[test]
    fn malformed_matchers_and_weights_are_errors_that_say_what_was_expected() {
        let err = |v: serde_json::Value| {
            serde_json::from_value::<HeaderMatch>(v)
                .expect_err("refused")
                .to_string()
        };
        assert!(err(json!(["end-user"])).contains("[name, match] pair"));
        assert!(err(json!(["a", {"exact": "b"}, 3])).contains("invalid length 3"));
        assert!(err(json!({"name": "a"})).contains("missing field `match`"));
        assert!(err(json!({"match": {"exact": "b"}})).contains("missing field `name`"));
        assert!(err(json!("end-user")).contains("an object with `name` and `match`"));
        let dup = serde_json::from_str::<HeaderMatch>(
            r#"{"name": "a", "match": {"exact": "c"}, "name": "b"}"#,
        )
        .expect_err("refused")
        .to_string();
        assert!(dup.contains("duplicate field `name`"), "{dup}");
        let e = serde_json::from_value::<DestinationWeight>(json!(["reviews/v3", "ten"]))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("invalid type"), "{e}");
        let e = serde_json::from_value::<DestinationWeight>(json!({"destination": "x"}))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("missing field `weight`"), "{e}");
    }

    #[test]
    fn only_a_routing_without_weight_header_or_mirror_routes_hides_the_canary() {
        assert!(!DesiredRouting::weight(0).exposes_canary());
        assert!(DesiredRouting::weight(1).exposes_canary());
        assert!(DesiredRouting::weight(100).exposes_canary());
        let header = DesiredRouting {
            header_routes: vec![HeaderRoute {
                name: "beta".into(),
                headers: Vec::new(),
            }],
            ..DesiredRouting::weight(0)
        };
        assert!(header.exposes_canary());
        let mirror = DesiredRouting {
            mirror_routes: vec![MirrorRoute {
                name: "shadow".into(),
                percentage: None,
                matches: Vec::new(),
            }],
            ..DesiredRouting::weight(0)
        };
        assert!(mirror.exposes_canary());
    }
}
