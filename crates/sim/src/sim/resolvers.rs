//! Query root resolvers. They take JSON arguments and return JSON trees that
//! the schema's child fields read from; `Err` carries the full GraphQL error text.

use base64::Engine as _;
use serde_json::{Map, Value as Json, json};

use super::Inner;
use super::duration::{self, Points};
use super::faults::Fault;
use super::mqe::{self, FetchError, Selector, Series, Source};
use super::store::{Label, MetricKind, SimEntity, sample, service_id};

type Args = Map<String, Json>;

/// Dispatches a root field; `key` is the response key (alias) used in error paths.
pub fn root(inner: &Inner, field: &str, args: &Args, key: &str) -> Result<Json, String> {
    let fail = |e: String| format!("Exception while fetching data (/{key}) : {e}");
    let p = inner.config.profile;
    match field {
        "version" => Ok(json!(p.version_string())),
        "checkHealth" => Ok(json!({"score": 0, "details": null})),
        "getTimeInfo" => {
            let zone = match inner.faults().take(|f| matches!(f, Fault::TimeZone(_))) {
                Some(Fault::TimeZone(None)) => return Ok(Json::Null),
                Some(Fault::TimeZone(Some(z))) => z,
                _ => duration::tz_string(inner.config.server_tz),
            };
            Ok(json!({
                "timezone": zone,
                "currentTimestamp": (inner.config.clock)().timestamp_millis(),
            }))
        }
        "typeOfMetrics" => {
            let name = str_arg(args, "name");
            let kind = match inner.store().metric_kind(name) {
                MetricKind::Unknown => "UNKNOWN",
                MetricKind::Regular => "REGULAR_VALUE",
                MetricKind::Labeled => "LABELED_VALUE",
            };
            Ok(json!(kind))
        }
        "listMetrics" => list_metrics(inner, args).map_err(fail),
        "findService" | "searchService" => {
            let name = str_arg(
                args,
                if field == "findService" {
                    "serviceName"
                } else {
                    "serviceCode"
                },
            );
            if !inner.store().knows_service(name) {
                return Ok(Json::Null);
            }
            let (group, short) = name.split_once("::").unwrap_or(("", name));
            Ok(
                json!({"id": service_id(name), "name": name, "group": group, "shortName": short,
                      "layers": ["MESH"], "normal": true}),
            )
        }
        "listInstances" | "getServiceInstances" => {
            points(inner, args).map_err(fail)?;
            let sid = str_arg(args, "serviceId");
            let store = inner.store();
            let list: Vec<Json> = store
                .instances
                .iter()
                .filter(|(svc, _)| service_id(svc) == sid)
                .map(|(svc, inst)| {
                    let id = SimEntity::instance(svc.as_str(), inst.as_str()).id();
                    json!({"id": id, "name": inst, "attributes": [], "language": "UNKNOWN", "instanceUUID": id})
                })
                .collect();
            Ok(Json::Array(list))
        }
        "readMetricsValues" => {
            let pts = points(inner, args).map_err(fail)?;
            storage_fault(inner).map_err(fail)?;
            Ok(json!({"label": null, "values": {"values": v2_values(inner, args, &pts)}}))
        }
        "readMetricsValue" | "readNullableMetricsValue" => {
            let pts = points(inner, args).map_err(fail)?;
            storage_fault(inner).map_err(fail)?;
            let present: Vec<f64> = v2_raw(inner, args, &pts).into_iter().flatten().collect();
            let value = if present.is_empty() {
                0
            } else {
                (present.iter().sum::<f64>() / present.len() as f64) as i64
            };
            if field == "readMetricsValue" {
                Ok(json!(value))
            } else {
                Ok(json!({"value": value, "isEmptyValue": present.is_empty()}))
            }
        }
        "readLabeledMetricsValues" => {
            let pts = points(inner, args).map_err(fail)?;
            storage_fault(inner).map_err(fail)?;
            Ok(labeled_v2(inner, args, &pts))
        }
        "execExpression" => {
            let pts = points(inner, args).map_err(fail)?;
            let fault = inner
                .faults()
                .take(|f| matches!(f, Fault::MqeError(_) | Fault::StorageError));
            match fault {
                Some(Fault::MqeError(msg)) => {
                    return Ok(
                        json!({"type": "UNKNOWN", "results": [], "error": msg, "debuggingTrace": null}),
                    );
                }
                Some(_) => {
                    return Ok(
                        json!({"type": "UNKNOWN", "results": [], "error": FetchError::Storage.to_string(),
                                     "debuggingTrace": null}),
                    );
                }
                None => {}
            }
            let src = MqeSource {
                inner,
                entity: args.get("entity"),
                pts: &pts,
            };
            Ok(mqe::execute(
                str_arg(args, "expression"),
                &src,
                !p.at_least(10, 0),
            ))
        }
        "getAlarm" => get_alarm(inner, args).map_err(fail),
        "getAlarmTrend" => {
            let pts = points(inner, args).map_err(fail)?;
            let store = inner.store();
            let counts: Vec<usize> = pts
                .points
                .iter()
                .enumerate()
                .map(|(i, pt)| {
                    let end = pts
                        .points
                        .get(i + 1)
                        .map(|n| n.start)
                        .unwrap_or(pt.start + step_len(&pts));
                    store
                        .alarms
                        .iter()
                        .filter(|a| a.start_time >= pt.start && a.start_time < end)
                        .count()
                })
                .collect();
            Ok(json!({"numOfAlarm": counts}))
        }
        other => Err(fail(format!(
            "java.lang.UnsupportedOperationException: {other} is not simulated"
        ))),
    }
}

fn str_arg<'a>(args: &'a Args, name: &str) -> &'a str {
    args.get(name).and_then(Json::as_str).unwrap_or("")
}

fn points(inner: &Inner, args: &Args) -> Result<Points, String> {
    duration::points(
        inner.config.profile,
        inner.config.server_tz,
        args.get("duration"),
    )
}

fn step_len(pts: &Points) -> chrono::Duration {
    match pts.step.minutes() {
        0 => chrono::Duration::seconds(1),
        m => chrono::Duration::minutes(m),
    }
}

fn storage_fault(inner: &Inner) -> Result<(), String> {
    match inner.faults().take(|f| *f == Fault::StorageError) {
        Some(_) => {
            Err("java.io.IOException: Internal IO exception, query metrics error.".to_string())
        }
        None => Ok(()),
    }
}

fn list_metrics(inner: &Inner, args: &Args) -> Result<Json, String> {
    let re = match args.get("regex").and_then(Json::as_str) {
        Some(r) => Some(
            regex::Regex::new(r)
                .map_err(|e| format!("java.util.regex.PatternSyntaxException: {e}"))?,
        ),
        None => None,
    };
    let list: Vec<Json> = inner
        .store()
        .metric_names()
        .into_iter()
        .filter(|(n, _)| re.as_ref().is_none_or(|r| r.is_match(n)))
        .map(|(n, k)| {
            let ty = if k == MetricKind::Labeled {
                "LABELED_VALUE"
            } else {
                "REGULAR_VALUE"
            };
            json!({"name": n, "type": ty, "catalog": catalog(&n)})
        })
        .collect();
    Ok(Json::Array(list))
}

fn catalog(metric: &str) -> &'static str {
    if metric.starts_with("service_instance_") {
        "SERVICE_INSTANCE"
    } else if metric.starts_with("endpoint_") {
        "ENDPOINT"
    } else {
        "SERVICE"
    }
}

/// Resolves a GraphQL `Entity` to an entity id; `None` when OAP would call it invalid.
fn entity_id(inner: &Inner, metric: &str, e: Option<&Json>) -> Option<String> {
    let e = e?.as_object()?;
    let s = |k: &str| e.get(k).and_then(Json::as_str).filter(|v| !v.is_empty());
    let normal = e.get("normal").and_then(Json::as_bool)?;
    let svc = s("serviceName")?;
    let scope = if inner.config.profile.at_least(9, 4) {
        catalog(metric)
    } else {
        match e.get("scope").and_then(Json::as_str) {
            Some("ServiceInstance") => "SERVICE_INSTANCE",
            Some("Endpoint") => "ENDPOINT",
            Some("Service") => "SERVICE",
            _ => return None,
        }
    };
    let b64 = |x: &str| base64::engine::general_purpose::STANDARD.encode(x.as_bytes());
    let sid = format!("{}.{}", b64(svc), if normal { 1 } else { 0 });
    Some(match scope {
        "SERVICE_INSTANCE" => format!("{sid}_{}", b64(s("serviceInstanceName")?)),
        "ENDPOINT" => format!("{sid}_{}", b64(s("endpointName")?)),
        _ => sid,
    })
}

fn condition(args: &Args) -> (&str, Option<&Json>) {
    let c = args.get("condition");
    let name = c
        .and_then(|c| c.get("name"))
        .and_then(Json::as_str)
        .unwrap_or("");
    (name, c.and_then(|c| c.get("entity")))
}

/// Raw sampled values of a v2 condition (`None` everywhere when unknown or invalid).
fn v2_raw(inner: &Inner, args: &Args, pts: &Points) -> Vec<Option<f64>> {
    let (metric, entity) = condition(args);
    let f = entity_id(inner, metric, entity).and_then(|id| inner.store().find_series(metric, &id));
    sample(f.as_ref(), pts, (inner.config.clock)())
}

fn v2_values(inner: &Inner, args: &Args, pts: &Points) -> Vec<Json> {
    let p = inner.config.profile;
    let (metric, entity) = condition(args);
    let known = inner.store().metric_kind(metric) != MetricKind::Unknown;
    let id = entity_id(inner, metric, entity);
    let suffix = match (&id, known) {
        (_, false) if p.has_empty_flag() => "UNKNOWN_METRIC_NAME".to_string(),
        (None, _) => "ILLEGAL_ENTITY".to_string(),
        (Some(id), _) => id.clone(),
    };
    let values = if known {
        v2_raw(inner, args, pts)
    } else {
        vec![None; pts.points.len()]
    };
    pts.points
        .iter()
        .zip(values)
        .map(|(pt, v)| {
            json!({"id": format!("{}_{suffix}", pt.bucket), "value": v.map(|x| x as i64).unwrap_or(0),
                   "isEmptyValue": v.is_none()})
        })
        .collect()
}

fn labeled_v2(inner: &Inner, args: &Args, pts: &Points) -> Json {
    let (metric, entity) = condition(args);
    let mut labels: Vec<String> = args
        .get("labels")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    labels.sort();
    labels.dedup();
    let id = entity_id(inner, metric, entity);
    let stored = id
        .as_ref()
        .map(|id| inner.store().find_labeled(metric, id))
        .unwrap_or_default();
    let now = (inner.config.clock)();
    let suffix = id.unwrap_or_else(|| "ILLEGAL_ENTITY".to_string());
    let out: Vec<Json> = labels
        .into_iter()
        .filter_map(|l| {
            let want = Label { key: "_".to_string(), value: l.clone() };
            let f = stored.iter().find(|(x, _)| *x == want).map(|(_, f)| f.clone());
            // 10.x builds the condition `_=<v>`, which percentile2 (`p=`) never matches.
            if f.is_none() && inner.config.profile.at_least(10, 0) {
                return None;
            }
            let vals: Vec<Json> = pts
                .points
                .iter()
                .zip(sample(f.as_ref(), pts, now))
                .map(|(pt, v)| {
                    json!({"id": format!("{}_{suffix}", pt.bucket), "value": v.map(|x| x as i64).unwrap_or(0),
                           "isEmptyValue": v.is_none()})
                })
                .collect();
            Some(json!({"label": l, "values": {"values": vals}}))
        })
        .collect();
    Json::Array(out)
}

struct MqeSource<'a> {
    inner: &'a Inner,
    entity: Option<&'a Json>,
    pts: &'a Points,
}

impl Source for MqeSource<'_> {
    fn fetch(&self, metric: &str, selector: Option<&Selector>) -> Result<Vec<Series>, FetchError> {
        let kind = self.inner.store().metric_kind(metric);
        if kind == MetricKind::Unknown {
            return Err(FetchError::UnknownMetric(metric.to_string()));
        }
        let id = entity_id(self.inner, metric, self.entity).ok_or(FetchError::InvalidEntity)?;
        let now = (self.inner.config.clock)();
        let ids: Vec<Option<String>> = self
            .pts
            .points
            .iter()
            .map(|p| Some(p.start.timestamp_millis().to_string()))
            .collect();
        let series = |labels: Vec<(String, String)>, f: Option<&super::store::SeriesFn>| Series {
            labels,
            points: ids.iter().cloned().zip(sample(f, self.pts, now)).collect(),
        };
        if kind == MetricKind::Regular {
            let f = self.inner.store().find_series(metric, &id);
            return Ok(vec![series(vec![], f.as_ref())]);
        }
        let stored = self.inner.store().find_labeled(metric, &id);
        Ok(match selector {
            Some((key, values)) => values
                .iter()
                .map(|v| {
                    let f = stored
                        .iter()
                        .find(|(l, _)| l.key == *key && l.value == *v)
                        .map(|(_, f)| f);
                    series(vec![(key.clone(), v.clone())], f)
                })
                .collect(),
            None => stored
                .iter()
                .map(|(l, f)| series(vec![(l.key.clone(), l.value.clone())], Some(f)))
                .collect(),
        })
    }
}

fn get_alarm(inner: &Inner, args: &Args) -> Result<Json, String> {
    let p = inner.config.profile;
    let pts = points(inner, args)?;
    let from = pts.points.first().map(|x| x.start);
    let to = pts.points.last().map(|x| x.start + step_len(&pts));
    let scope = args.get("scope").and_then(Json::as_str);
    let keyword = args
        .get("keyword")
        .and_then(Json::as_str)
        .filter(|k| !k.is_empty());
    let tags: Vec<(String, Option<String>)> = args
        .get("tags")
        .and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    let k = t.get("key")?.as_str()?.to_string();
                    Some((k, t.get("value").and_then(Json::as_str).map(str::to_string)))
                })
                .collect()
        })
        .unwrap_or_default();
    let paging = args.get("paging");
    let page_size = paging
        .and_then(|x| x.get("pageSize"))
        .and_then(Json::as_u64)
        .unwrap_or(20) as usize;
    let page_num = paging
        .and_then(|x| x.get("pageNum"))
        .and_then(Json::as_u64)
        .unwrap_or(1)
        .max(1) as usize;
    let store = inner.store();
    let mut hits: Vec<_> = store
        .alarms
        .iter()
        .filter(|a| from.is_some_and(|f| a.start_time >= f) && to.is_some_and(|t| a.start_time < t))
        .filter(|a| scope.is_none_or(|s| s == a.entity.scope()))
        .filter(|a| keyword.is_none_or(|k| a.message.contains(k)))
        .filter(|a| {
            tags.iter().all(|(k, v)| {
                a.tags
                    .iter()
                    .any(|(tk, tv)| tk == k && v.as_ref().is_none_or(|v| v == tv))
            })
        })
        .collect();
    hits.sort_by_key(|a| std::cmp::Reverse(a.start_time));
    let total = hits.len();
    let msgs: Vec<Json> = hits
        .into_iter()
        .skip((page_num - 1).saturating_mul(page_size))
        .take(page_size)
        .map(|a| {
            let tags: Vec<Json> = a
                .tags
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            json!({
                "startTime": a.start_time.timestamp_millis(),
                "recoveryTime": a.recovery_time.map(|t| t.timestamp_millis()),
                "scope": a.entity.scope(),
                "id": a.entity.id(),
                "name": a.entity.display_name(),
                "message": a.message,
                "events": [],
                "tags": tags,
                "snapshot": {"expression": a.expression, "metrics": []},
            })
        })
        .collect();
    let mut out = json!({"msgs": msgs});
    if !p.at_least(9, 1) {
        out["total"] = json!(total);
    }
    Ok(out)
}
