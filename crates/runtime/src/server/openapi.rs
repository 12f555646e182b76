//! The OpenAPI 3.1 document of the HTTP surface, served at [`PATH`].
//!
//! Schemas are derived by schemars from the very types the handlers serialise (responses, in
//! the serialize contract) and parse (request bodies, in the deserialize contract), so they
//! cannot drift from the code; the operations are written here, and a test checks them against
//! the router's route list ([`super::routes::served_routes`]) both ways. Schemathesis runs the
//! document against a live daemon in CI (`tests/it/openapi.rs`).

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::CanarySummary;
use super::metrics::{CLASSIC_CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE};
use super::routes::{
    AbortBody, CanaryList, ErrorBody, MAX_BODY_BYTES, NotReadyBody, ProbeBody, ScheduleList,
};
use crate::alarm::alertmanager::WirePayload;
use crate::alarm::skywalking::AlarmMessage;
use crate::schedule::RunStarted;

/// Where the document is served. Public like `/metrics`: it describes the API, it grants
/// nothing, and tools (schemathesis, Swagger UI) load it before they have a token.
pub const PATH: &str = "/api/v1/openapi.json";

/// Where component schemas live in the document (schemars writes its `$ref`s there).
const COMPONENTS: &str = "/components/schemas";

/// The answer to an alarm webhook, as the daemon's alarm intake builds it (`received` always;
/// the rest depending on the replica and on what the payload held). Only its schema is used.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // Built as JSON by the daemon; this type exists for its schema.
pub(crate) struct AlarmSummary {
    /// Alarms (or alerts) in the payload that parsed.
    received: u64,
    /// Canaries rolled back (`namespace/name`), leader only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    matched: Option<Vec<String>>,
    /// Alarms already acted on (the same alarm sent again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duplicates: Option<u64>,
    /// Alarms that started before the matched canary's run (ignored), leader only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    older_than_run: Option<u64>,
    /// SkyWalking recovery messages (never trigger a rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recoveries: Option<u64>,
    /// Resolved Alertmanager alerts (never trigger a rollback), leader only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resolved: Option<u64>,
    /// Standby replica: canaries whose leader was handed the alarm through `status.command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    forwarded: Option<Vec<String>>,
    /// Standby replica: says that matches are forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replica: Option<String>,
    /// Malformed alarms refused (the first few), with their index in the payload (422).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rejected: Option<Vec<RejectedAlarm>>,
    /// How many alarms were refused in all (422).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rejected_total: Option<u64>,
    /// Matched canaries whose rollback is not written yet (503; retried until it lands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rollback_pending: Option<Vec<PendingRollback>>,
    /// With 422 or 503: what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A malformed alarm of a payload.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // See AlarmSummary.
pub(crate) struct RejectedAlarm {
    /// Its index in the payload's array.
    index: u64,
    /// Why it was refused.
    error: String,
}

/// A rollback not acknowledged yet.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // See AlarmSummary.
pub(crate) struct PendingRollback {
    /// `namespace/name`.
    canary: String,
    /// Why it is not written yet.
    reason: String,
}

/// A `$ref` into the components.
fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#{COMPONENTS}/{name}") })
}

/// A JSON response with the given component schema.
fn json_response(description: &str, schema: Value) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": schema } }
    })
}

fn error_response(description: &str) -> Value {
    json_response(description, reference("ErrorBody"))
}

/// What any request may get before its handler runs: a body that is unreadable (400), too
/// slow (408) or too large (413) is refused by the server's middleware, whatever the route.
fn transport_errors(responses: &mut Map<String, Value>) {
    responses.insert(
        "400".into(),
        error_response("The request (its body, path or query) cannot be read."),
    );
    responses.insert(
        "408".into(),
        error_response("The request body did not arrive in time."),
    );
    responses.insert(
        "413".into(),
        error_response(&format!("The request body exceeds {MAX_BODY_BYTES} bytes.")),
    );
}

/// One operation: `responses` are the route's own; the transport errors, and 401 where a
/// token is needed, are added here.
fn operation(
    id: &str,
    summary: &str,
    authenticated: bool,
    parameters: Vec<Value>,
    request_body: Option<Value>,
    responses: Vec<(&str, Value)>,
) -> Value {
    let mut all: Map<String, Value> = responses
        .into_iter()
        .map(|(code, response)| (code.to_string(), response))
        .collect();
    transport_errors(&mut all);
    if authenticated {
        let mut unauthorized = error_response("The bearer token is missing or wrong.");
        unauthorized["headers"] = json!({
            "WWW-Authenticate": {
                "description": "`Bearer realm=\"skycanary\"`, with `error=\"invalid_token\"` for a wrong one.",
                "schema": { "type": "string" }
            }
        });
        all.insert("401".into(), unauthorized);
    }
    let mut op = json!({
        "operationId": id,
        "summary": summary,
        "responses": all,
    });
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    if let Some(body) = request_body {
        op["requestBody"] = body;
    }
    if !authenticated {
        op["security"] = json!([]);
    }
    op
}

fn path_parameter(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "description": description,
        "schema": { "type": "string", "minLength": 1 }
    })
}

/// The namespace and name of an object.
fn object_parameters(what: &str) -> Vec<Value> {
    vec![
        path_parameter("namespace", &format!("The {what}'s namespace.")),
        path_parameter("name", &format!("The {what}'s name.")),
    ]
}

/// `response` with OpenAPI links from a list's first item to operations on that object, so
/// clients (and schemathesis' stateful phase) can follow them: `(link name, operationId)`.
fn with_links(mut response: Value, links: &[(&str, &str)]) -> Value {
    let mut all = Map::new();
    for (name, operation_id) in links {
        let parameters = json!({
            "namespace": "$response.body#/items/0/namespace",
            "name": "$response.body#/items/0/name",
        });
        all.insert(
            (*name).to_string(),
            json!({ "operationId": operation_id, "parameters": parameters }),
        );
    }
    response["links"] = Value::Object(all);
    response
}

/// A JSON request body; `required: false` also accepts an empty body.
fn json_body(description: &str, schema: Value, required: bool) -> Value {
    json!({
        "description": description,
        "required": required,
        "content": { "application/json": { "schema": schema } }
    })
}

/// Media type of a `Content-Type` value, without its parameters.
fn essence(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or_default().trim()
}

/// The document (OpenAPI 3.1.0; its schemas are JSON Schema 2020-12, as schemars writes them).
pub fn document() -> Value {
    // Responses are what the handlers serialise; request bodies what they parse.
    let mut out = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = COMPONENTS.into();
            s.meta_schema = None;
        })
        .for_serialize()
        .into_generator();
    let mut inp = SchemaSettings::draft2020_12()
        .with(|s| {
            s.definitions_path = COMPONENTS.into();
            s.meta_schema = None;
        })
        .for_deserialize()
        .into_generator();

    let canary = out.subschema_for::<CanarySummary>();
    let canaries = out.subschema_for::<CanaryList>();
    let schedules = out.subschema_for::<ScheduleList>();
    let run_started = out.subschema_for::<RunStarted>();
    let error = out.subschema_for::<ErrorBody>();
    let probe = out.subschema_for::<ProbeBody>();
    let not_ready = out.subschema_for::<NotReadyBody>();
    let alarm_summary = out.subschema_for::<AlarmSummary>();
    let abort_body = inp.subschema_for::<AbortBody>();
    let skywalking = inp.subschema_for::<Vec<AlarmMessage>>();
    let alertmanager = inp.subschema_for::<WirePayload<'static>>();
    debug_assert_eq!(error, reference("ErrorBody"));
    let mut schemas = inp.take_definitions(true);
    // Same name, same type from both contracts: the response-side schema is kept.
    schemas.extend(out.take_definitions(true));

    let not_found = |what: &str| error_response(&format!("No such {what}."));
    let unavailable = error_response(
        "This replica cannot act now (a standby, or the daemon is stopping); retry on the leader.",
    );
    let internal = error_response("The daemon failed to carry out the request.");
    let unsupported = error_response("The body is not declared as JSON.");
    let alarm_responses = |source: &str| {
        vec![
            (
                "200",
                json_response(
                    "Every alarm parsed; matched canaries were rolled back (written) before this answer.",
                    alarm_summary.clone().into(),
                ),
            ),
            (
                "422",
                json_response(
                    "Some alarms were malformed and refused; the valid ones were acted on.",
                    alarm_summary.clone().into(),
                ),
            ),
            (
                "503",
                json_response(
                    "A matched canary's rollback is not written yet (it is retried until it lands), or this replica cannot act.",
                    alarm_summary.clone().into(),
                ),
            ),
            (
                "400",
                error_response(&format!(
                    "The body is not a {source} payload; nothing was done."
                )),
            ),
            ("415", unsupported.clone()),
            ("500", internal.clone()),
        ]
    };
    let mut metrics_content = Map::new();
    for content_type in [CLASSIC_CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE] {
        metrics_content.insert(
            essence(content_type).to_string(),
            json!({ "schema": { "type": "string" } }),
        );
    }

    let mut paths = json!({
        "/healthz": { "get": operation(
            "healthz",
            "Liveness: the process answers.",
            false,
            vec![],
            None,
            vec![("200", json_response("Alive.", probe.clone().into()))],
        )},
        "/readyz": { "get": operation(
            "readyz",
            "Readiness: sources loaded, leader known, and every status save landing.",
            false,
            vec![json!({
                "name": "exclude",
                "in": "query",
                "required": false,
                "description": "`state` leaves the status-save check out (the shipped probes use it).",
                "schema": { "type": "string" }
            })],
            None,
            vec![
                ("200", json_response("Ready.", probe.into())),
                ("503", json_response(
                    "Not ready: starting, no leader known, or some status cannot be saved (`unsaved`).",
                    json!({ "anyOf": [Value::from(not_ready), Value::from(error.clone())] }),
                )),
            ],
        )},
        "/metrics": { "get": operation(
            "metrics",
            "Prometheus metrics: OpenMetrics when the Accept header asks for it, the classic text format otherwise.",
            false,
            vec![],
            None,
            vec![
                ("200", json!({
                    "description": "The exposition.",
                    "content": metrics_content,
                })),
                ("500", error_response("The metrics could not be encoded.")),
            ],
        )},
        "/api/v1/canaries": { "get": operation(
            "listCanaries",
            "Every known canary with its status.",
            true,
            vec![],
            None,
            vec![(
                "200",
                with_links(
                    json_response("The canaries.", canaries.into()),
                    &[
                        ("GetCanary", "getCanary"),
                        ("CommandCanary", "canaryCommand"),
                    ],
                ),
            )],
        )},
        "/api/v1/canaries/{namespace}/{name}": { "get": operation(
            "getCanary",
            "One canary with its status.",
            true,
            object_parameters("canary"),
            None,
            vec![
                ("200", json_response("The canary.", canary.clone().into())),
                ("404", not_found("canary")),
            ],
        )},
        "/api/v1/canaries/{namespace}/{name}/{action}": { "post": operation(
            "canaryCommand",
            "A user command: promote (next step; all remaining with `full=true`), abort (roll back to stable), retry (after an abort), pause, resume.",
            true,
            {
                let mut params = object_parameters("canary");
                params.push(json!({
                    "name": "action",
                    "in": "path",
                    "required": true,
                    "description": "The command; any other is 404.",
                    "schema": { "type": "string", "enum": ["promote", "abort", "retry", "pause", "resume"] }
                }));
                params.push(json!({
                    "name": "full",
                    "in": "query",
                    "required": false,
                    "description": "promote: skip every remaining step.",
                    "schema": { "type": "boolean", "default": false }
                }));
                params
            },
            Some(json_body(
                "abort: why (optional; an empty body gives `aborted via API`). Other commands ignore a JSON body.",
                abort_body.into(),
                false,
            )),
            vec![
                ("200", json_response("The command was accepted; the canary after it.", canary.into())),
                ("404", not_found("canary or action")),
                ("409", error_response("The command does not apply in the canary's state (e.g. retry while progressing).")),
                ("415", unsupported.clone()),
                ("503", unavailable.clone()),
                ("500", internal.clone()),
            ],
        )},
        "/api/v1/scheduled-analyses": { "get": operation(
            "listScheduledAnalyses",
            "Every scheduled analysis: schedule, zone, next and last fire time, active runs, history.",
            true,
            vec![],
            None,
            vec![(
                "200",
                with_links(
                    json_response("The scheduled analyses.", schedules.into()),
                    &[("RunScheduledAnalysis", "runScheduledAnalysis")],
                ),
            )],
        )},
        "/api/v1/scheduled-analyses/{namespace}/{name}/run": { "post": operation(
            "runScheduledAnalysis",
            "Starts a run now.",
            true,
            object_parameters("scheduled analysis"),
            None,
            vec![
                ("200", json_response("The run started.", run_started.into())),
                ("404", not_found("scheduled analysis")),
                ("409", error_response("A run is going and `concurrencyPolicy` is Forbid.")),
                ("503", unavailable.clone()),
                ("500", internal.clone()),
            ],
        )},
        "/webhooks/skywalking": { "post": operation(
            "skywalkingWebhook",
            "SkyWalking OAP alarm webhook (8.0 – 10.4): matching canaries roll back before the answer.",
            true,
            vec![],
            Some(json_body("OAP's alarm messages.", skywalking.into(), true)),
            alarm_responses("SkyWalking"),
        )},
        "/webhooks/alertmanager": { "post": operation(
            "alertmanagerWebhook",
            "Prometheus Alertmanager webhook (version 4): firing alerts matching a canary roll it back before the answer.",
            true,
            vec![],
            Some(json_body("Alertmanager's payload.", alertmanager.into(), true)),
            alarm_responses("Alertmanager"),
        )},
    });

    paths[PATH] = json!({ "get": operation(
        "openapi",
        "This document.",
        false,
        vec![],
        None,
        vec![(
            "200",
            json!({
                "description": "OpenAPI 3.1 document.",
                "content": { "application/json": { "schema": { "type": "object" } } }
            }),
        )],
    )});

    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "skycanary",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The daemon's HTTP API (docs/daemon.md): canaries, scheduled analyses, alarm webhooks, probes and metrics. Every failure is JSON `{\"error\": \"...\"}`. Everything but /healthz, /readyz, /metrics and this document needs `Authorization: Bearer <token>`.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" }
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The token of `--token-file` or SKYCANARY_TOKEN."
                }
            },
            "schemas": schemas,
        }
    })
}

/// `(method, path template)` of every operation of `doc`, upper-case methods.
#[cfg(test)]
pub(crate) fn documented_routes(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            if let Some(ops) = item.as_object() {
                for method in ops.keys() {
                    out.push((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
    }
    out.sort();
    out
}
