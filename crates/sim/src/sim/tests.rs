//! End-to-end tests over real HTTP on 127.0.0.1:0.

use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use serde_json::{Value as Json, json};

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 7, 1, 12, 10, 0)
        .single()
        .unwrap_or_default()
}

/// reqwest is built without a default TLS provider; plain http still needs one installed.
fn client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

fn client() -> reqwest::Client {
    client_builder().build().expect("client")
}

fn cfg(p: OapProfile) -> SimConfig {
    SimConfig::new(p).with_clock(now)
}

async fn start(config: SimConfig) -> (Simulator, RunningSim) {
    let sim = Simulator::new(config);
    let Ok(running) = sim.serve(([127, 0, 0, 1], 0).into()).await else {
        panic!("bind failed");
    };
    (sim, running)
}

async fn post(run: &RunningSim, body: Json) -> (u16, String) {
    post_with(run, body, &[]).await
}

async fn post_with(run: &RunningSim, body: Json, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = client()
        .post(run.graphql_url())
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

fn parse(s: &str) -> Json {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

const SVC: &str = "reviews.bookinfo";

fn entity() -> Json {
    json!({"serviceName": SVC, "normal": true})
}

fn minute_duration(start: &str, end: &str) -> Json {
    json!({"start": start, "end": end, "step": "MINUTE"})
}

const MQE: &str = "query($e: String!, $entity: Entity!, $d: Duration!) { result: execExpression(expression: $e, entity: $entity, duration: $d) { type error results { metric { labels { key value } } values { id value } } } }";

async fn mqe(run: &RunningSim, expr: &str, d: Json) -> Json {
    let (status, body) = post(
        run,
        json!({"query": MQE, "variables": {"e": expr, "entity": entity(), "d": d}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

#[tokio::test]
async fn every_profile_answers_version_and_introspection() {
    for p in OapProfile::ALL {
        let (_sim, run) = start(cfg(p)).await;
        let (status, body) = post(
            &run,
            json!({"query": "{ version getTimeInfo { timezone currentTimestamp } }"}),
        )
        .await;
        assert_eq!(status, 200);
        let v = parse(&body);
        assert_eq!(v["data"]["version"], json!(p.version_string()), "{p}");
        assert_eq!(v["data"]["getTimeInfo"]["timezone"], "+0000");
        assert_eq!(
            v["data"]["getTimeInfo"]["currentTimestamp"],
            json!(now().timestamp_millis())
        );
        let (status, body) = post(
            &run,
            json!({"query": "{ __type(name: \"Duration\") { inputFields { name } } }"}),
        )
        .await;
        assert_eq!(status, 200);
        let fields = parse(&body)["data"]["__type"]["inputFields"].to_string();
        assert_eq!(
            fields.contains("coldStage"),
            p.at_least(10, 3),
            "{p}: {fields}"
        );
    }
    assert_eq!("10.4".parse::<OapProfile>().ok(), Some(OapProfile::V10_4));
    assert_eq!(
        "v8.9.0-abc".parse::<OapProfile>().ok(),
        Some(OapProfile::V8_9)
    );
    assert!("7.0".parse::<OapProfile>().is_err());
}

#[tokio::test]
async fn too_new_fields_are_validation_errors() {
    let q = json!({"query": "query($d: Duration!) { readMetricsValues(condition: {name: \"service_sla\", entity: {scope: Service, serviceName: \"a\", normal: true}}, duration: $d) { values { values { id value isEmptyValue } } } }",
                   "variables": {"d": minute_duration("2024-07-01 1200", "2024-07-01 1205")}});
    let (_s, run) = start(cfg(OapProfile::V9_4)).await;
    let (status, body) = post(&run, q.clone()).await;
    assert_eq!(status, 400, "{body}");
    let v = parse(&body);
    assert!(v.get("data").is_none());
    assert_eq!(
        v["errors"][0]["message"],
        "Validation error (FieldUndefined@[readMetricsValues/values/values/isEmptyValue]) : Field 'isEmptyValue' in type 'KVInt' is undefined"
    );
    assert_eq!(
        v["errors"][0]["extensions"]["classification"],
        "ValidationError"
    );
    assert!(v["errors"][0]["locations"][0]["line"].is_number());

    // 8.9 (Jetty): same error but HTTP 200 and message only; scope is required there.
    let (_s, run) = start(cfg(OapProfile::V8_9)).await;
    let (status, body) = post(&run, q).await;
    assert_eq!(status, 200);
    let v = parse(&body);
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("FieldUndefined")
    );
    assert!(v["errors"][0].get("extensions").is_none());

    // owner on 9.7 → 400; fine on 10.2.
    let owner = json!({"query": "query($d: Duration!) { execExpression(expression: \"service_sla\", entity: {serviceName: \"a\", normal: true}, duration: $d) { results { values { owner { serviceName } } } } }",
                       "variables": {"d": minute_duration("2024-07-01 1200", "2024-07-01 1205")}});
    let (_s, run) = start(cfg(OapProfile::V9_7)).await;
    let (status, body) = post(&run, owner.clone()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        parse(&body)["errors"][0]["message"],
        "Validation error (FieldUndefined@[execExpression/results/values/owner]) : Field 'owner' in type 'MQEValue' is undefined"
    );
    let (_s, run) = start(cfg(OapProfile::V10_2)).await;
    let (status, body) = post(&run, owner).await;
    assert_eq!(status, 200, "{body}");

    // Unknown argument and missing argument.
    let (status, body) = post(
        &run,
        json!({"query": "{ typeOfMetrics(name: \"x\", bogus: 1) }"}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        parse(&body)["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("UnknownArgument@[typeOfMetrics]")
    );
    let (status, _) = post(&run, json!({"query": "{ typeOfMetrics }"})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn variable_coercion_errors_are_200_without_data() {
    let (_s, run) = start(cfg(OapProfile::V10_2)).await;
    let mut d = minute_duration("2024-07-01 1200", "2024-07-01 1205");
    d["coldStage"] = Json::Null;
    let (status, body) = post(
        &run,
        json!({"query": MQE, "variables": {"e": "service_sla", "entity": entity(), "d": d}}),
    )
    .await;
    assert_eq!(status, 200);
    let v = parse(&body);
    assert!(v.get("data").is_none(), "{body}");
    assert_eq!(
        v["errors"][0]["message"],
        "The variables input contains a field name 'coldStage' that is not defined for input object type 'Duration' "
    );
    assert_eq!(
        v["errors"][0]["extensions"]["classification"],
        "ValidationError"
    );

    // 10.4 knows coldStage.
    let (_s4, run4) = start(cfg(OapProfile::V10_4)).await;
    let mut d = minute_duration("2024-07-01 1200", "2024-07-01 1205");
    d["coldStage"] = json!(false);
    let (status, body) = post(
        &run4,
        json!({"query": MQE, "variables": {"e": "service_sla", "entity": entity(), "d": d}}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        parse(&body)["data"]["result"]["type"] == "TIME_SERIES_VALUES",
        "{body}"
    );

    // Bad enum and missing non-null variable.
    let bad = json!({"start": "2024-07-01 1200", "end": "2024-07-01 1205", "step": "MINUTES"});
    let (status, body) = post(
        &run,
        json!({"query": MQE, "variables": {"e": "service_sla", "entity": entity(), "d": bad}}),
    )
    .await;
    assert_eq!(status, 200);
    let v = parse(&body);
    assert!(v.get("data").is_none());
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("'MINUTES'"),
        "{body}"
    );
    let (status, body) = post(
        &run,
        json!({"query": MQE, "variables": {"e": "service_sla", "entity": entity()}}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        parse(&body)["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("NonNull type 'Duration!'")
    );
    // processName is unknown to 8.9.
    let (_s8, run8) = start(cfg(OapProfile::V8_9)).await;
    let q = "query($c: MetricsCondition!, $d: Duration!) { readMetricsValues(condition: $c, duration: $d) { values { values { value } } } }";
    let c = json!({"name": "service_sla", "entity": {"scope": "Service", "serviceName": SVC, "normal": true, "processName": null}});
    let (status, body) =
        post(&run8, json!({"query": q, "variables": {"c": c, "d": minute_duration("2024-07-01 1200", "2024-07-01 1205")}})).await;
    assert_eq!(status, 200);
    assert!(
        parse(&body)["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("'processName'")
    );
}

#[tokio::test]
async fn mqe_values_nulls_infinity_and_errors() {
    let (sim, run) = start(cfg(OapProfile::V10_4)).await;
    let e = SimEntity::service(SVC);
    sim.set_series("service_apdex", e.clone(), |_| Some(9950.0));
    let gap = Utc.with_ymd_and_hms(2024, 7, 1, 12, 2, 0).single();
    sim.set_series("service_cpm", e.clone(), move |t| {
        (Some(t) != gap).then_some(0.0)
    });
    sim.set_labeled_series("service_percentile", e.clone(), "p=99", |_| Some(250.0));
    sim.set_labeled_series("service_percentile", e, "p=50", |_| Some(40.0));
    let d = minute_duration("2024-07-01 1200", "2024-07-01 1204");

    let v = mqe(&run, "service_apdex / 10000", d.clone()).await;
    let r = &v["data"]["result"];
    assert_eq!(r["type"], "TIME_SERIES_VALUES");
    assert_eq!(r["error"], Json::Null);
    assert_eq!(r["results"][0]["metric"], json!({"labels": []}));
    assert_eq!(r["results"][0]["values"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        r["results"][0]["values"][0],
        json!({"id": "1719835200000", "value": "0.995"})
    );

    let v = mqe(&run, "avg(service_apdex)", d.clone()).await;
    assert_eq!(v["data"]["result"]["type"], "SINGLE_VALUE");
    assert_eq!(
        v["data"]["result"]["results"][0]["values"][0],
        json!({"id": null, "value": "9950"})
    );

    let v = mqe(&run, "service_apdex / service_cpm", d.clone()).await;
    let vals = &v["data"]["result"]["results"][0]["values"];
    assert_eq!(vals[0]["value"], "∞");
    assert_eq!(vals[2]["value"], Json::Null);
    let v = mqe(&run, "service_cpm / service_cpm", d.clone()).await;
    assert_eq!(
        v["data"]["result"]["results"][0]["values"][0]["value"],
        "NaN"
    );

    let v = mqe(&run, "service_resp_time", d.clone()).await;
    assert!(
        v["data"]["result"]["results"][0]["values"]
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x["value"].is_null()))
    );

    let v = mqe(&run, "service_percentile{p='50,99'} > 100", d.clone()).await;
    let res = &v["data"]["result"]["results"];
    assert_eq!(
        res[0]["metric"]["labels"],
        json!([{"key": "p", "value": "50"}])
    );
    assert_eq!(res[0]["values"][0]["value"], "0");
    assert_eq!(res[1]["values"][0]["value"], "1");

    let v = mqe(&run, "foo_bar", d.clone()).await;
    assert_eq!(
        v["data"]["result"],
        json!({"type": "UNKNOWN", "error": "Metric: [foo_bar] does not exist.", "results": []})
    );
    let v = mqe(&run, "avg(service_apdex", d.clone()).await;
    assert!(
        v["data"]["result"]["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("line 1:"),
        "{v}"
    );
    assert_eq!(v["data"]["result"]["type"], "UNKNOWN");

    // Missing `normal` → invalid entity: UNKNOWN, empty results, no error.
    let (_, body) = post(&run, json!({"query": MQE, "variables": {"e": "service_apdex", "entity": {"serviceName": SVC}, "d": d}})).await;
    assert_eq!(
        parse(&body)["data"]["result"],
        json!({"type": "UNKNOWN", "error": null, "results": []})
    );
}

#[tokio::test]
async fn mqe_on_9_7_has_null_metric_and_underscore_labels() {
    let (sim, run) = start(cfg(OapProfile::V9_7)).await;
    let e = SimEntity::service(SVC);
    sim.set_series("service_sla", e.clone(), |_| Some(10000.0));
    sim.set_labeled_series("service_percentile", e, "4", |_| Some(300.0));
    let d = minute_duration("2024-07-01 1200", "2024-07-01 1201");
    let v = mqe(&run, "service_sla", d.clone()).await;
    assert_eq!(v["data"]["result"]["results"][0]["metric"], Json::Null);
    let v = mqe(&run, "service_percentile{_='4'}", d).await;
    assert_eq!(
        v["data"]["result"]["results"][0]["values"][0]["value"],
        "300"
    );
}

#[tokio::test]
async fn duration_errors() {
    let (_s, run) = start(cfg(OapProfile::V10_4)).await;
    let check = |body: String, needle: &'static str| {
        let v = parse(&body);
        assert_eq!(v["data"], Json::Null, "{body}");
        let msg = v["errors"][0]["message"].as_str().unwrap_or("").to_string();
        assert!(msg.contains(needle), "{msg}");
        assert_eq!(v["errors"][0]["path"], json!(["result"]));
    };
    let (s, body) = post(&run, json!({"query": MQE, "variables": {"e": "service_sla", "entity": entity(), "d": {"start": "2024-07-01 12", "end": "2024-07-01 13", "step": "MINUTE"}}})).await;
    assert_eq!(s, 200);
    check(
        body,
        "Exception while fetching data (/result) : java.lang.IllegalArgumentException: Invalid format: \"2024-07-01 12\" is too short",
    );
    let (_, body) = post(&run, json!({"query": MQE, "variables": {"e": "service_sla", "entity": entity(), "d": minute_duration("2024-07-01 0000", "2024-07-01 1000")}})).await;
    check(
        body,
        "UnexpectedException: Duration data error, the range between the start time and the end time can't exceed 500 minutes",
    );
    let (_, body) = post(&run, json!({"query": MQE, "variables": {"e": "service_sla", "entity": entity(), "d": minute_duration("2024-07-01 1210", "2024-07-01 1200")}})).await;
    check(body, "can't exceed 500 minutes");
    let (_, body) = post(&run, json!({"query": MQE, "variables": {"e": "service_sla", "entity": entity(), "d": {"start": "2024-07-01", "end": "2024-07-02", "step": "DAY"}}})).await;
    assert!(
        parse(&body)["data"]["result"]["results"][0]["values"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
    );
    // start == end is fine on 9.4+, an error on 8.9.
    let (_, body) = post(&run, json!({"query": MQE, "variables": {"e": "service_sla", "entity": entity(), "d": minute_duration("2024-07-01 1200", "2024-07-01 1200")}})).await;
    assert!(parse(&body)["errors"].is_null(), "{body}");
    let (_s8, run8) = start(cfg(OapProfile::V8_9)).await;
    let q = "query($d: Duration!) { readMetricsValues(condition: {name: \"service_sla\", entity: {scope: Service, serviceName: \"a\", normal: true}}, duration: $d) { values { values { value } } } }";
    let (s, body) = post(&run8, json!({"query": q, "variables": {"d": minute_duration("2024-07-01 1200", "2024-07-01 1200")}})).await;
    assert_eq!(s, 200);
    assert!(
        parse(&body)["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("can't exceed 500 minutes")
    );
}

#[tokio::test]
async fn server_timezone_decides_which_buckets_hold_data() {
    let tz = FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| panic!("tz"));
    let (sim, run) = start(cfg(OapProfile::V10_4).with_tz(tz)).await;
    let t0 = Utc
        .with_ymd_and_hms(2024, 7, 1, 12, 0, 0)
        .single()
        .unwrap_or_default();
    sim.set_series("service_apdex", SimEntity::service(SVC), move |t| {
        (t >= t0).then_some(9950.0)
    });
    let (start_s, end_s) = (
        sim.format_time(t0, Step::Minute),
        sim.format_time(now(), Step::Minute),
    );
    assert_eq!(start_s, "2024-07-01 2000");
    let v = mqe(&run, "service_apdex", minute_duration(&start_s, &end_s)).await;
    let vals = &v["data"]["result"]["results"][0]["values"];
    assert_eq!(vals[0]["id"], json!(t0.timestamp_millis().to_string()));
    assert_eq!(vals[0]["value"], "9950");
    // A client formatting in UTC asks for 8 hours earlier: all null.
    let v = mqe(
        &run,
        "service_apdex",
        minute_duration("2024-07-01 1200", "2024-07-01 1210"),
    )
    .await;
    assert!(
        v["data"]["result"]["results"][0]["values"]
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x["value"].is_null()))
    );
    let (_, body) = post(&run, json!({"query": "{ getTimeInfo { timezone } }"})).await;
    assert_eq!(parse(&body)["data"]["getTimeInfo"]["timezone"], "+0800");
    assert_eq!(
        tz_string(FixedOffset::east_opt(5 * 3600 + 1800).unwrap_or(tz)),
        "+0530"
    );
}

#[tokio::test]
async fn v2_reads_per_profile() {
    let q = "query($c: MetricsCondition!, $d: Duration!) { a: readMetricsValues(condition: $c, duration: $d) { label values { values { id value } } } b: readMetricsValue(condition: $c, duration: $d) }";
    for p in [OapProfile::V8_9, OapProfile::V9_4, OapProfile::V10_4] {
        let (sim, run) = start(cfg(p)).await;
        sim.set_series("service_sla", SimEntity::service(SVC), |t| {
            (t.timestamp() % 120 == 0).then_some(9000.0)
        });
        let c = json!({"name": "service_sla", "entity": {"scope": "Service", "serviceName": SVC, "normal": true}});
        let (s, body) = post(&run, json!({"query": q, "variables": {"c": c, "d": minute_duration("2024-07-01 1200", "2024-07-01 1203")}})).await;
        assert_eq!(s, 200, "{p} {body}");
        let v = parse(&body);
        let vals = &v["data"]["a"]["values"]["values"];
        assert_eq!(
            vals[0],
            json!({"id": "202407011200_cmV2aWV3cy5ib29raW5mbw==.1", "value": 9000})
        );
        assert_eq!(vals[1]["value"], 0);
        assert_eq!(v["data"]["b"], 9000);
        let c = json!({"name": "nope", "entity": {"scope": "Service", "serviceName": SVC, "normal": true}});
        let (_, body) = post(&run, json!({"query": q, "variables": {"c": c, "d": minute_duration("2024-07-01 1200", "2024-07-01 1203")}})).await;
        let id = parse(&body)["data"]["a"]["values"]["values"][0]["id"].clone();
        let expect = if p.has_empty_flag() {
            "202407011200_UNKNOWN_METRIC_NAME"
        } else {
            "202407011200_cmV2aWV3cy5ib29raW5mbw==.1"
        };
        assert_eq!(id, expect);
    }
    let (sim, run) = start(cfg(OapProfile::V10_4)).await;
    sim.add_instance(SVC, "reviews-v2-abc");
    let (_, body) = post(&run, json!({"query": "{ findService(serviceName: \"reviews.bookinfo\") { id name } nope: findService(serviceName: \"x\") { id } listInstances(duration: {start: \"2024-07-01 1200\", end: \"2024-07-01 1201\", step: MINUTE}, serviceId: \"cmV2aWV3cy5ib29raW5mbw==.1\") { name } }"})).await;
    let v = parse(&body);
    assert_eq!(v["data"]["findService"]["id"], "cmV2aWV3cy5ib29raW5mbw==.1");
    assert_eq!(v["data"]["nope"], Json::Null);
    assert_eq!(v["data"]["listInstances"][0]["name"], "reviews-v2-abc");
}

#[tokio::test]
async fn alarms_follow_the_version_shape() {
    let (sim, run) = start(cfg(OapProfile::V10_4)).await;
    let mut a = SimAlarm::new(
        SimEntity::service(SVC),
        now() - chrono::Duration::minutes(3),
        "resp time too high",
    );
    a.recovery_time = Some(now());
    sim.add_alarm(a);
    sim.add_alarm(SimAlarm::new(
        SimEntity::service("other"),
        now() - chrono::Duration::minutes(5),
        "other",
    ));
    let q = "{ getAlarm(duration: {start: \"2024-07-01 1200\", end: \"2024-07-01 1210\", step: MINUTE}, paging: {pageNum: 1, pageSize: 10}) { msgs { id name startTime recoveryTime message } } }";
    let (s, body) = post(&run, json!({"query": q})).await;
    assert_eq!(s, 200, "{body}");
    let v = parse(&body);
    assert_eq!(
        v["data"]["getAlarm"]["msgs"][0]["id"],
        "cmV2aWV3cy5ib29raW5mbw==.1"
    );
    assert_eq!(
        v["data"]["getAlarm"]["msgs"][0]["recoveryTime"],
        json!(now().timestamp_millis())
    );
    assert_eq!(
        v["data"]["getAlarm"]["msgs"].as_array().map(Vec::len),
        Some(2)
    );
    let (_s, run2) = start(cfg(OapProfile::V10_2)).await;
    let (s, _) = post(&run2, json!({"query": q})).await;
    assert_eq!(s, 400, "recoveryTime is 10.4+");
}

#[tokio::test]
async fn transport_rules() {
    let (sim, run) = start(cfg(OapProfile::V10_4)).await;
    let client = client();
    let r = client.get(run.graphql_url()).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 405);
    let r = client
        .post(format!("{}/nope", run.url()))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 404);
    let r = client
        .post(run.graphql_url())
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 415);
    let r = client
        .post(run.graphql_url())
        .header("content-type", "application/json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.text().await.unwrap_or_default(), "Missing request body");
    let (s, body) = post(&run, json!({"variables": {}})).await;
    assert_eq!((s, body.as_str()), (400, "Missing query"));
    let r = client
        .post(run.graphql_url())
        .header("content-type", "application/json; charset=utf-8")
        .body("{oops")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let (s, _) = post_with(
        &run,
        json!({"query": "{ version }"}),
        &[("accept", "text/html")],
    )
    .await;
    assert_eq!(s, 406);
    let r = client
        .post(run.graphql_url())
        .header("content-type", "application/graphql")
        .body("{ version }")
        .send()
        .await
        .expect("post");
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert_eq!(
        parse(&r.text().await.unwrap_or_default())["data"]["version"],
        "10.4.0-sim"
    );
    let (s, body) = post(&run, json!({"query": "{ version "})).await;
    assert_eq!(s, 200);
    assert_eq!(
        parse(&body)["errors"][0]["extensions"]["classification"],
        "InvalidSyntax"
    );
    let log = sim.requests();
    assert_eq!(log.len(), 9);
    assert_eq!(log[8].query(), Some("{ version "));
    assert_eq!(log[7].query(), Some("{ version }"));
    assert_eq!(log[0].method, "GET");
}

#[tokio::test]
async fn bearer_gateway() {
    let (_s, run) = start(cfg(OapProfile::V9_4).with_bearer("s3cret")).await;
    let (s, body) = post(&run, json!({"query": "{ version }"})).await;
    assert_eq!(s, 401);
    assert!(serde_json::from_str::<Json>(&body).is_err());
    let (s, _) = post_with(
        &run,
        json!({"query": "{ version }"}),
        &[("authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = post_with(
        &run,
        json!({"query": "{ version }"}),
        &[("authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn faults() {
    let (sim, run) = start(cfg(OapProfile::V10_4)).await;
    sim.set_series("service_sla", SimEntity::service(SVC), |_| Some(10000.0));
    let d = minute_duration("2024-07-01 1200", "2024-07-01 1201");
    let q = json!({"query": MQE, "variables": {"e": "service_sla", "entity": entity(), "d": d}});

    sim.inject_fault(Fault::Status(503), Some(1));
    assert_eq!(post(&run, q.clone()).await.0, 503);
    assert_eq!(post(&run, q.clone()).await.0, 200, "consumed after one use");

    sim.inject_fault(Fault::HtmlGateway, Some(1));
    let (s, body) = post(&run, q.clone()).await;
    assert_eq!(s, 502);
    assert!(body.contains("<html>"));

    sim.inject_fault(Fault::TruncatedJson, Some(1));
    let (s, body) = post(&run, q.clone()).await;
    assert_eq!(s, 200);
    assert!(
        serde_json::from_str::<Json>(&body).is_err() && body.starts_with("{\"data\""),
        "{body}"
    );

    sim.inject_fault(Fault::GraphqlError("boom".into()), Some(1));
    let v = parse(&post(&run, q.clone()).await.1);
    assert_eq!(
        (v["errors"][0]["message"].clone(), v["data"].clone()),
        (json!("boom"), Json::Null)
    );

    sim.inject_fault(Fault::MqeError("bad things".into()), Some(1));
    assert_eq!(
        parse(&post(&run, q.clone()).await.1)["data"]["result"]["error"],
        "bad things"
    );

    sim.inject_fault(Fault::StorageError, None);
    assert_eq!(
        parse(&post(&run, q.clone()).await.1)["data"]["result"]["error"],
        "Internal IO exception, query metrics error."
    );
    assert_eq!(
        parse(&post(&run, q.clone()).await.1)["data"]["result"]["error"],
        "Internal IO exception, query metrics error."
    );
    sim.clear_faults();
    assert_eq!(
        parse(&post(&run, q.clone()).await.1)["data"]["result"]["error"],
        Json::Null
    );

    // A long delay for one request: the next one answering well before it shows the fault
    // was used up, without a tight timing bound that a loaded machine could miss.
    sim.inject_fault(Fault::Delay(Duration::from_secs(5)), Some(1));
    let client = client_builder()
        .timeout(Duration::from_millis(100))
        .build()
        .expect("client");
    let r = client
        .post(run.graphql_url())
        .header("content-type", "application/json")
        .body(q.to_string())
        .send()
        .await;
    assert!(r.is_err_and(|e| e.is_timeout()));
    let started = std::time::Instant::now();
    assert_eq!(post(&run, q).await.0, 200);
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn observer_sees_every_answered_request() {
    let (sim, run) = start(cfg(OapProfile::V10_4)).await;
    type Seen = (String, String, u16, bool);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let sink = seen.clone();
    sim.set_observer(move |x| {
        sink.lock().expect("lock").push((
            x.method.to_string(),
            String::from_utf8_lossy(x.body).into_owned(),
            x.status,
            x.answered >= x.received,
        ));
    });
    let (status, _) = post(&run, json!({"query": "{ version }"})).await;
    assert_eq!(status, 200);
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "POST");
    assert!(seen[0].1.contains("version"), "{}", seen[0].1);
    assert_eq!(seen[0].2, 200);
    assert!(seen[0].3);
}
