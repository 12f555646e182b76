//! The fake API server's state and the apiserver semantics it copies, kept free of HTTP so the
//! rules (resourceVersion, generation, conflicts, patch types) read in one place.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

/// The collection a request addresses: API group (empty for core), version and plural.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceRef {
    /// API group, empty for the core group.
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Lower-case plural, e.g. `virtualservices`.
    pub plural: String,
}

impl ResourceRef {
    /// A resource in a named group.
    pub fn new(group: &str, version: &str, plural: &str) -> Self {
        ResourceRef {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
        }
    }

    /// `apiVersion` as written in objects (`v1` or `group/version`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kind served for this plural.
    pub fn kind(&self) -> String {
        kind_for_plural(&self.plural)
    }

    /// `plural.group`, the name apiserver messages use.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Kind.group`, the name 422 messages use.
    fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind()
        } else {
            format!("{}.{}", self.kind(), self.group)
        }
    }
}

const KNOWN_KINDS: &[(&str, &str)] = &[
    ("virtualservices", "VirtualService"),
    ("destinationrules", "DestinationRule"),
    ("gateways", "Gateway"),
    ("serviceentries", "ServiceEntry"),
    ("canaries", "Canary"),
    ("analysistemplates", "AnalysisTemplate"),
    ("clusteranalysistemplates", "ClusterAnalysisTemplate"),
    ("scheduledanalyses", "ScheduledAnalysis"),
    ("events", "Event"),
    ("namespaces", "Namespace"),
    ("configmaps", "ConfigMap"),
    ("secrets", "Secret"),
    ("services", "Service"),
    ("pods", "Pod"),
    ("leases", "Lease"),
    ("deployments", "Deployment"),
    ("statefulsets", "StatefulSet"),
    ("endpointslices", "EndpointSlice"),
    ("customresourcedefinitions", "CustomResourceDefinition"),
];

/// Group and plural of CustomResourceDefinitions.
pub(crate) const CRD_GROUP: &str = "apiextensions.k8s.io";
pub(crate) const CRD_PLURAL: &str = "customresourcedefinitions";

/// Kind for a plural: a table of the kinds we meet, else a capitalised singular guess.
pub fn kind_for_plural(plural: &str) -> String {
    if let Some((_, k)) = KNOWN_KINDS.iter().find(|(p, _)| *p == plural) {
        return (*k).to_string();
    }
    let singular = plural
        .strip_suffix("ies")
        .map(|s| format!("{s}y"))
        .or_else(|| plural.strip_suffix('s').map(str::to_string))
        .unwrap_or_else(|| plural.to_string());
    let mut chars = singular.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Plural for a kind: the same table, else lower case plus `s`/`ies`.
pub fn plural_for_kind(kind: &str) -> String {
    if let Some((p, _)) = KNOWN_KINDS.iter().find(|(_, k)| *k == kind) {
        return (*p).to_string();
    }
    let lower = kind.to_lowercase();
    if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

/// Storage key. The version is not part of it: every version of a group shares storage, as in
/// a real apiserver, and objects are served with the requested `apiVersion`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ObjKey {
    group: String,
    plural: String,
    namespace: String,
    name: String,
}

/// An apiserver error, rendered as a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub code: u16,
    /// `Status.reason`.
    pub reason: String,
    /// `Status.message`.
    pub message: String,
    details: Option<Value>,
}

impl ApiError {
    /// An error with the reason Kubernetes uses for `code`.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason_for(code).to_string(),
            message: message.into(),
            details: None,
        }
    }

    fn with_reason(mut self, reason: &str) -> Self {
        self.reason = reason.to_string();
        self
    }

    fn with_details(mut self, res: &ResourceRef, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": res.group, "kind": res.plural}));
        self
    }

    fn not_found(res: &ResourceRef, name: &str) -> Self {
        ApiError::new(404, format!("{} \"{name}\" not found", res.qualified()))
            .with_details(res, name)
    }

    fn conflict(res: &ResourceRef, name: &str) -> Self {
        ApiError::new(
            409,
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                res.qualified()
            ),
        )
        .with_details(res, name)
    }

    fn invalid(res: &ResourceRef, name: &str, field: &str, detail: &str) -> Self {
        let mut e = ApiError::new(
            422,
            format!(
                "{} \"{name}\" is invalid: {field}: {detail}",
                res.qualified_kind()
            ),
        );
        e.details = Some(json!({
            "name": name, "group": res.group, "kind": res.kind(),
            "causes": [{"reason": "FieldValueInvalid", "message": detail, "field": field}],
        }));
        e
    }

    /// 422 for several fields at once, as the apiserver words it (`[a: x, b: y]`).
    pub(crate) fn invalid_fields(
        res: &ResourceRef,
        name: &str,
        errors: &[super::schema::FieldError],
    ) -> Self {
        let lines: Vec<String> = errors.iter().map(|e| e.line()).collect();
        let joined = match lines.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let mut e = ApiError::new(
            422,
            format!("{} \"{name}\" is invalid: {joined}", res.qualified_kind()),
        );
        let causes: Vec<Value> = errors
            .iter()
            .map(|f| json!({"reason": f.reason, "message": f.message, "field": f.field}))
            .collect();
        e.details = Some(json!({
            "name": name, "group": res.group, "kind": res.kind(), "causes": causes,
        }));
        e
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let (Some(details), Some(obj)) = (&self.details, status.as_object_mut()) {
            obj.insert("details".into(), details.clone());
        }
        status
    }
}

/// `Status.reason` for an HTTP code, as the apiserver spells it.
pub fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// `Content-Type` header.
    pub content_type: Option<String>,
    /// Body as (lossy) UTF-8.
    pub body: String,
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultAction {
    /// Answer with this HTTP status and a matching `Status` body.
    Status(u16),
    /// Wait this long, then handle the request normally.
    Delay(Duration),
}

/// A fault for the next `remaining` requests whose method matches (None = any) and whose
/// `path?query` contains `path_contains`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fault {
    pub method: Option<String>,
    pub path_contains: String,
    pub remaining: usize,
    pub action: FaultAction,
}

/// One entry of the watch event log.
#[derive(Debug, Clone)]
pub(crate) struct WatchRecord {
    pub rv: u64,
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub event_type: &'static str,
    pub object: Value,
}

/// One committed change, as kept by the opt-in write log ([`crate::FakeApiServer::record_writes`]):
/// invariant checkers compare every stored version with the one it replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedWrite {
    /// The resourceVersion the change got.
    pub rv: u64,
    /// API group (`""` for core).
    pub group: String,
    /// Plural resource name.
    pub plural: String,
    /// Namespace (`""` for cluster-scoped objects).
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub event_type: &'static str,
    /// The stored object this change replaced (None for a creation or a deletion).
    pub before: Option<Value>,
    /// The stored object after the change (the deleted object for a deletion).
    pub after: Value,
}

/// What live watchers receive.
#[derive(Debug, Clone)]
pub(crate) enum Signal {
    Event(Box<WatchRecord>),
    DropWatches,
}

/// Default number of events kept for watch replay.
pub const DEFAULT_EVENT_LOG: usize = 1000;

/// All state behind the fake server's mutex.
pub(crate) struct Store {
    rv: u64,
    uid_seq: u64,
    objects: BTreeMap<ObjKey, Value>,
    log: VecDeque<WatchRecord>,
    log_capacity: usize,
    /// Highest RV whose event is no longer in the log; watches from below it get 410.
    compacted_rv: u64,
    pub requests: Vec<RecordedRequest>,
    pub faults: Vec<Fault>,
    pub latency: Duration,
    pub tx: broadcast::Sender<Signal>,
    /// Every committed change, when enabled (unbounded: for tests that inspect all writes).
    pub writes: Option<Vec<CommittedWrite>>,
    pub observer: Option<super::RequestObserver>,
    /// `fieldValidation` of the request being handled (`Strict` refuses unknown fields that
    /// are otherwise pruned); set by the HTTP edge under the same lock as the write.
    pub field_validation: Option<String>,
}

/// Parsed list/watch query parameters.
#[derive(Debug, Default, Clone)]
pub(crate) struct ListQuery {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    /// `resourceVersion`: empty for the most recent state, `0` for any, else a version.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`: `NotOlderThan` or `Exact`.
    pub resource_version_match: Option<String>,
}

impl ListQuery {
    /// The apiserver's checks of a LIST's version parameters
    /// (`ValidateListOptions`, and the storage's refusal of a version with `continue`).
    fn validate(&self) -> Result<(), ApiError> {
        let rv = self.resource_version.as_deref().unwrap_or_default();
        let has_continue = self
            .continue_token
            .as_deref()
            .is_some_and(|c| !c.is_empty());
        let invalid = |m: &str| Err(ApiError::new(422, format!("ListOptions is invalid: {m}")));
        match self.resource_version_match.as_deref().unwrap_or_default() {
            "" => {}
            _ if rv.is_empty() => {
                return invalid(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                );
            }
            _ if has_continue => {
                return invalid(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided",
                );
            }
            "Exact" if rv == "0" => {
                return invalid(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                );
            }
            "Exact" | "NotOlderThan" => {}
            other => {
                return invalid(&format!(
                    "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
                ));
            }
        }
        if has_continue && !rv.is_empty() && rv != "0" {
            return Err(ApiError::new(
                400,
                "specifying resource version is not allowed when using continue",
            ));
        }
        if !rv.is_empty() && rv.parse::<u64>().is_err() {
            return Err(ApiError::new(
                400,
                format!("invalid resource version: {rv:?}"),
            ));
        }
        Ok(())
    }
}

impl Store {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Store {
            rv: 1,
            uid_seq: 0,
            objects: BTreeMap::new(),
            log: VecDeque::new(),
            log_capacity: DEFAULT_EVENT_LOG,
            compacted_rv: 0,
            requests: Vec::new(),
            faults: Vec::new(),
            latency: Duration::ZERO,
            tx,
            writes: None,
            observer: None,
            field_validation: None,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Drops the event log so that any watch from an older RV gets 410 Expired.
    pub fn compact(&mut self) {
        self.log.clear();
        self.compacted_rv = self.rv;
    }

    pub fn set_log_capacity(&mut self, capacity: usize) {
        self.log_capacity = capacity.max(1);
        self.trim_log();
    }

    fn trim_log(&mut self) {
        while self.log.len() > self.log_capacity {
            if let Some(old) = self.log.pop_front() {
                self.compacted_rv = self.compacted_rv.max(old.rv);
            }
        }
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(
        &mut self,
        res: &ResourceRef,
        namespace: &str,
        event_type: &'static str,
        object: &Value,
        rv: u64,
    ) {
        if let Some(writes) = self.writes.as_mut() {
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let before = match event_type {
                "ADDED" => None,
                _ => self.objects.get(&Self::key(res, namespace, &name)).cloned(),
            };
            writes.push(CommittedWrite {
                rv,
                group: res.group.clone(),
                plural: res.plural.clone(),
                namespace: namespace.to_string(),
                name,
                event_type,
                before,
                after: object.clone(),
            });
        }
        let rec = WatchRecord {
            rv,
            group: res.group.clone(),
            plural: res.plural.clone(),
            namespace: namespace.to_string(),
            event_type,
            object: object.clone(),
        };
        self.log.push_back(rec.clone());
        self.trim_log();
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(Signal::Event(Box::new(rec)));
    }

    fn key(res: &ResourceRef, namespace: &str, name: &str) -> ObjKey {
        ObjKey {
            group: res.group.clone(),
            plural: res.plural.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn get(&self, res: &ResourceRef, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&Self::key(res, namespace, name))
            .map(|o| present(res, o))
            .ok_or_else(|| ApiError::not_found(res, name))
    }

    /// One object exactly as stored.
    pub fn stored(&self, group: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = ObjKey {
            group: group.to_string(),
            plural: plural.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.objects.get(&key).cloned()
    }

    /// Every object of a group/plural exactly as stored, in key order.
    pub fn stored_all(&self, group: &str, plural: &str) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(k, _)| k.group == group && k.plural == plural)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Every stored object of a collection (all namespaces when `namespace` is None). Core
    /// `v1` Events also list the `events.k8s.io/v1` ones, converted, as the apiserver serves
    /// one storage under both (`kubectl describe` reads the core view).
    pub fn all(&self, res: &ResourceRef, namespace: Option<&str>) -> Vec<Value> {
        let core_events = res.group.is_empty() && res.plural == "events";
        let mut out: Vec<Value> = self
            .objects
            .iter()
            .filter(|(k, _)| {
                (k.group == res.group || core_events && k.group == "events.k8s.io")
                    && k.plural == res.plural
                    && namespace.is_none_or(|ns| ns == k.namespace)
            })
            .map(|(k, o)| {
                if core_events && k.group == "events.k8s.io" {
                    core_event(o)
                } else {
                    present(res, o)
                }
            })
            .collect();
        if core_events {
            out.sort_by_key(object_sort_key);
        }
        out
    }

    pub fn list(
        &self,
        res: &ResourceRef,
        namespace: Option<&str>,
        q: &ListQuery,
    ) -> Result<Value, ApiError> {
        q.validate()?;
        // The version the list is at: the store's (it keeps no past states), or the first
        // page's for a continued list (its pages form one list, as the apiserver's do).
        let mut list_rv = self.rv;
        let rv = q.resource_version.as_deref().unwrap_or_default();
        if let Ok(wanted) = rv.parse::<u64>()
            && wanted > 0
        {
            if wanted > self.rv {
                return Err(ApiError::new(
                    504,
                    format!("Too large resource version: {wanted}, current: {}", self.rv),
                ));
            }
            if q.resource_version_match.as_deref() == Some("Exact") && wanted != self.rv {
                if wanted < self.compacted_rv {
                    return Err(ApiError::new(
                        410,
                        format!(
                            "too old resource version: {wanted} ({})",
                            self.compacted_rv + 1
                        ),
                    ));
                }
                return Err(ApiError::new(
                    500,
                    format!(
                        "the fake API server keeps no past states: an Exact list at {wanted} \
                         (current {}) is not served",
                        self.rv
                    ),
                ));
            }
        }
        let mut after = None;
        if let Some(token) = q.continue_token.as_deref().filter(|t| !t.is_empty()) {
            let (at, key) = decode_continue(token).ok_or_else(|| {
                ApiError::new(400, "invalid continue token").with_reason("BadRequest")
            })?;
            if at < self.compacted_rv {
                return Err(ApiError::new(
                    410,
                    "The provided continue parameter is too old to display a consistent list \
                     result. You can start a new list without the continue parameter.",
                ));
            }
            list_rv = at;
            after = Some(key);
        }
        let mut items = Vec::new();
        for obj in self.all(res, namespace) {
            if matches_selectors(
                &obj,
                q.label_selector.as_deref(),
                q.field_selector.as_deref(),
            )? {
                items.push(obj);
            }
        }
        let start = match &after {
            Some(after) => items
                .iter()
                .position(|o| object_sort_key(o) > *after)
                .unwrap_or(items.len()),
            None => 0,
        };
        let mut page: Vec<Value> = items.get(start..).unwrap_or_default().to_vec();
        let mut meta = Map::new();
        meta.insert("resourceVersion".into(), Value::String(list_rv.to_string()));
        if let Some(limit) = q.limit.filter(|l| *l > 0)
            && page.len() > limit
        {
            let remaining = page.len() - limit;
            page.truncate(limit);
            if let Some(last) = page.last() {
                meta.insert(
                    "continue".into(),
                    Value::String(encode_continue(list_rv, &object_sort_key(last))),
                );
                meta.insert("remainingItemCount".into(), json!(remaining));
            }
        }
        Ok(json!({
            "kind": format!("{}List", res.kind()),
            "apiVersion": res.api_version(),
            "metadata": meta,
            "items": page,
        }))
    }

    pub fn create(
        &mut self,
        res: &ResourceRef,
        namespace: &str,
        body: Value,
    ) -> Result<Value, ApiError> {
        let mut obj = expect_object(body)?;
        check_kind(res, &obj)?;
        let meta = metadata_mut(&mut obj).ok_or_else(no_metadata)?;
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            let prefix = meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if prefix.is_empty() {
                return Err(ApiError::invalid(
                    res,
                    "",
                    "metadata.name",
                    "Required value: name or generateName is required",
                ));
            }
            name = format!("{prefix}{:05x}", (self.uid_seq + 1) & 0xfffff);
        }
        validate_name(res, &name)?;
        check_namespace(meta, namespace)?;
        if self.objects.contains_key(&Self::key(res, namespace, &name)) {
            return Err(ApiError::new(
                409,
                format!("{} \"{name}\" already exists", res.qualified()),
            )
            .with_reason("AlreadyExists")
            .with_details(res, &name));
        }
        let mut checked = Value::Object(obj);
        self.admit(res, &name, &mut checked)?;
        let Value::Object(mut obj) = checked else {
            return Err(no_metadata());
        };
        let meta = metadata_mut(&mut obj).ok_or_else(no_metadata)?;
        self.uid_seq += 1;
        let rv = self.next_rv();
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.uid_seq);
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        meta.insert("name".into(), Value::String(name.clone()));
        if !namespace.is_empty() {
            meta.insert("namespace".into(), Value::String(namespace.to_string()));
        }
        meta.insert("uid".into(), Value::String(uid));
        meta.insert("creationTimestamp".into(), Value::String(now));
        meta.insert("generation".into(), json!(1));
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        obj.insert("apiVersion".into(), Value::String(res.api_version()));
        obj.insert("kind".into(), Value::String(res.kind()));
        let obj = Value::Object(obj);
        self.record(res, namespace, "ADDED", &obj, rv);
        self.objects
            .insert(Self::key(res, namespace, &name), obj.clone());
        Ok(present(res, &obj))
    }

    /// PUT: a full replacement guarded by `metadata.resourceVersion` (CRs refuse unconditional
    /// updates with 422). `status_only` is the `/status` subresource.
    pub fn replace(
        &mut self,
        res: &ResourceRef,
        namespace: &str,
        name: &str,
        body: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let mut obj = expect_object(body)?;
        check_kind(res, &obj)?;
        let meta = metadata_mut(&mut obj).ok_or_else(no_metadata)?;
        check_name(meta, name)?;
        check_namespace(meta, namespace)?;
        let rv = meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let old = self
            .objects
            .get(&Self::key(res, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))?;
        if rv.is_empty() {
            return Err(ApiError::invalid(
                res,
                name,
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            ));
        }
        if rv != current_rv(&old) {
            return Err(ApiError::conflict(res, name));
        }
        self.commit_update(res, namespace, name, old, Value::Object(obj), status_only)
    }

    /// PATCH with any supported content type. `apply-patch+yaml` creates when absent.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        res: &ResourceRef,
        namespace: &str,
        name: &str,
        content_type: &str,
        body: &[u8],
        field_manager: Option<&str>,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let existing = self.objects.get(&Self::key(res, namespace, name)).cloned();
        let patched = match media.as_str() {
            "application/json-patch+json" => {
                let old = existing
                    .clone()
                    .ok_or_else(|| ApiError::not_found(res, name))?;
                let ops: json_patch::Patch = serde_json::from_slice(body)
                    .map_err(|e| ApiError::new(400, format!("error decoding patch: {e}")))?;
                let mut doc = old;
                json_patch::patch(&mut doc, &ops).map_err(|e| {
                    ApiError::invalid(
                        res,
                        name,
                        "patch",
                        &format!("Invalid value: \"{}\": {e}", String::from_utf8_lossy(body)),
                    )
                })?;
                doc
            }
            "application/merge-patch+json" => {
                let old = existing
                    .clone()
                    .ok_or_else(|| ApiError::not_found(res, name))?;
                let patch: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::new(400, format!("error decoding patch: {e}")))?;
                let mut doc = old;
                json_patch::merge(&mut doc, &patch);
                doc
            }
            "application/strategic-merge-patch+json" => {
                if !res.group.is_empty() && res.group != CRD_GROUP {
                    return Err(unsupported_media(&media));
                }
                // Core kinds: approximated as a merge patch (no patch-merge keys).
                let old = existing
                    .clone()
                    .ok_or_else(|| ApiError::not_found(res, name))?;
                let patch: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::new(400, format!("error decoding patch: {e}")))?;
                let mut doc = old;
                json_patch::merge(&mut doc, &patch);
                doc
            }
            "application/apply-patch+yaml" => {
                if field_manager.is_none_or(str::is_empty) {
                    return Err(ApiError::new(
                        400,
                        "PATCH requests with apply content type must specify fieldManager",
                    ));
                }
                let patch: Value = serde_json::from_slice(body).map_err(|e| {
                    ApiError::new(
                        400,
                        format!("error decoding apply patch (the fake accepts JSON only): {e}"),
                    )
                })?;
                match existing.clone() {
                    None if status_only => return Err(ApiError::not_found(res, name)),
                    None => {
                        let mut obj = expect_object(patch)?;
                        check_name(metadata_mut(&mut obj).ok_or_else(no_metadata)?, name)?;
                        return self.create(res, namespace, Value::Object(obj));
                    }
                    Some(old) => {
                        let mut doc = old;
                        json_patch::merge(&mut doc, &patch);
                        doc
                    }
                }
            }
            _ => return Err(unsupported_media(&media)),
        };
        let old = existing.ok_or_else(|| ApiError::not_found(res, name))?;
        let mut obj = match patched {
            Value::Object(m) => m,
            _ => {
                return Err(ApiError::invalid(
                    res,
                    name,
                    "patch",
                    "the patched object is not a JSON object",
                ));
            }
        };
        let meta = metadata_mut(&mut obj).ok_or_else(no_metadata)?;
        check_name(meta, name)?;
        check_namespace(meta, namespace)?;
        let rv = meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !rv.is_empty() && rv != current_rv(&old) {
            return Err(ApiError::conflict(res, name));
        }
        self.commit_update(res, namespace, name, old, Value::Object(obj), status_only)
    }

    /// The common end of PUT and PATCH: keep server-owned fields, keep `.status` (or take only
    /// `.status` for the subresource), bump generation on spec change, skip no-op writes.
    fn commit_update(
        &mut self,
        res: &ResourceRef,
        namespace: &str,
        name: &str,
        old: Value,
        incoming: Value,
        status_only: bool,
    ) -> Result<Value, ApiError> {
        let mut new = if status_only {
            let mut n = old.clone();
            set_field(&mut n, "status", incoming.get("status").cloned());
            n
        } else {
            let mut n = incoming;
            set_field(&mut n, "status", old.get("status").cloned());
            n
        };
        // Storage keeps the apiVersion it was created with; other versions are conversions.
        set_field(&mut new, "apiVersion", old.get("apiVersion").cloned());
        set_field(&mut new, "kind", old.get("kind").cloned());
        let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
        let mut generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        if spec_part(&old) != spec_part(&new) {
            generation += 1;
        }
        if let Some(meta) = new.as_object_mut().and_then(metadata_mut) {
            for field in ["uid", "creationTimestamp", "name", "namespace"] {
                match old_meta.get(field) {
                    Some(v) => meta.insert(field.into(), v.clone()),
                    None => meta.remove(field),
                };
            }
            meta.insert("generation".into(), json!(generation));
            meta.insert("resourceVersion".into(), Value::String(current_rv(&old)));
        }
        self.admit(res, name, &mut new)?;
        if new == old {
            return Ok(present(res, &old));
        }
        let rv = self.next_rv();
        if let Some(meta) = new.as_object_mut().and_then(metadata_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        self.record(res, namespace, "MODIFIED", &new, rv);
        self.objects
            .insert(Self::key(res, namespace, name), new.clone());
        Ok(present(res, &new))
    }

    /// The CRD serving `res` (`{plural}.{group}`), if one is stored.
    pub fn crd(&self, res: &ResourceRef) -> Option<&Value> {
        let key = ObjKey {
            group: CRD_GROUP.into(),
            plural: CRD_PLURAL.into(),
            namespace: String::new(),
            name: format!("{}.{}", res.plural, res.group),
        };
        self.objects.get(&key)
    }

    /// The `openAPIV3Schema` of the served version of `res`'s CRD.
    fn schema(&self, res: &ResourceRef) -> Option<Value> {
        crd_version(self.crd(res)?, &res.version)?
            .pointer("/schema/openAPIV3Schema")
            .cloned()
    }

    /// The apiserver's checks of a body before it is stored: a CRD's CEL rules must compile;
    /// a custom resource is pruned to its schema (unknown fields refused under
    /// `fieldValidation=Strict`) and validated against it (422 `Invalid`, every field named).
    fn admit(&self, res: &ResourceRef, name: &str, obj: &mut Value) -> Result<(), ApiError> {
        if res.group == CRD_GROUP && res.plural == CRD_PLURAL {
            let mut bad = Vec::new();
            for (i, v) in obj
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                if let Some(s) = v.pointer("/schema/openAPIV3Schema") {
                    super::schema::uncompilable_rules(
                        s,
                        &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                        &mut bad,
                    );
                }
            }
            return match bad.first() {
                None => Ok(()),
                Some(first) => {
                    let (field, detail) = first.split_once(": ").unwrap_or(("spec", first));
                    Err(ApiError::invalid(res, name, field, detail))
                }
            };
        }
        let Some(schema) = self.schema(res) else {
            return Ok(());
        };
        let mut unknown = Vec::new();
        super::schema::prune(&schema, obj, "", &mut unknown);
        if !unknown.is_empty() && self.field_validation.as_deref() == Some("Strict") {
            let list: Vec<String> = unknown
                .iter()
                .map(|u| format!("unknown field \"{u}\""))
                .collect();
            return Err(ApiError::new(
                400,
                format!("strict decoding error: {}", list.join(", ")),
            ));
        }
        let errors = super::schema::validate(&schema, obj);
        if errors.is_empty() {
            return Ok(());
        }
        Err(ApiError::invalid_fields(res, name, &errors))
    }

    pub fn delete(
        &mut self,
        res: &ResourceRef,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let mut obj = self
            .objects
            .remove(&Self::key(res, namespace, name))
            .ok_or_else(|| ApiError::not_found(res, name))?;
        let rv = self.next_rv();
        if let Some(meta) = obj.as_object_mut().and_then(metadata_mut) {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        self.record(res, namespace, "DELETED", &obj, rv);
        Ok(present(res, &obj))
    }

    /// Events to replay for a watch from `since`, or 410 when the log no longer reaches back.
    pub fn replay(
        &self,
        res: &ResourceRef,
        namespace: Option<&str>,
        since: u64,
    ) -> Result<Vec<WatchRecord>, ApiError> {
        if since < self.compacted_rv {
            return Err(ApiError::new(
                410,
                format!(
                    "too old resource version: {since} ({})",
                    self.compacted_rv + 1
                ),
            ));
        }
        Ok(self
            .log
            .iter()
            .filter(|r| r.rv > since && record_matches(r, res, namespace))
            .cloned()
            .collect())
    }
}

/// The served version of a CRD named `version`.
pub(crate) fn crd_version<'a>(crd: &'a Value, version: &str) -> Option<&'a Value> {
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(version))
}

/// An `events.k8s.io/v1` Event as core `v1` shows it (the apiserver's conversion: `regarding`
/// is `involvedObject`, `note` is `message`, the series count is `count`).
pub(crate) fn core_event(ev: &Value) -> Value {
    let mut out = serde_json::Map::new();
    out.insert("apiVersion".into(), json!("v1"));
    out.insert("kind".into(), json!("Event"));
    let get = |p: &str| ev.pointer(p).cloned();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v.filter(|v| !v.is_null()) {
            out.insert(k.into(), v);
        }
    };
    put("metadata", get("/metadata"));
    put("involvedObject", get("/regarding"));
    put("related", get("/related"));
    put("reason", get("/reason"));
    put("message", get("/note"));
    put("type", get("/type"));
    put("action", get("/action"));
    put("eventTime", get("/eventTime"));
    put("reportingComponent", get("/reportingController"));
    put("reportingInstance", get("/reportingInstance"));
    put("source", get("/deprecatedSource"));
    let first = get("/deprecatedFirstTimestamp").or_else(|| get("/eventTime"));
    let last = get("/series/lastObservedTime")
        .or_else(|| get("/deprecatedLastTimestamp"))
        .or_else(|| get("/eventTime"));
    put("firstTimestamp", first);
    put("lastTimestamp", last);
    let count = get("/series/count")
        .or_else(|| get("/deprecatedCount"))
        .unwrap_or(json!(1));
    put("count", Some(count));
    Value::Object(out)
}

/// Whether a log record belongs to the watched collection.
pub(crate) fn record_matches(r: &WatchRecord, res: &ResourceRef, namespace: Option<&str>) -> bool {
    r.group == res.group && r.plural == res.plural && namespace.is_none_or(|ns| ns == r.namespace)
}

fn unsupported_media(media: &str) -> ApiError {
    ApiError::new(
        415,
        format!(
            "the body of the request was in an unknown format ({media}) - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        ),
    )
}

/// The object as served under `res` (its apiVersion converted to the requested version).
pub(crate) fn present(res: &ResourceRef, obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(map) = out.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(res.api_version()));
    }
    out
}

fn current_rv(obj: &Value) -> String {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Everything generation tracks: the object without metadata and status.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        for f in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(f);
        }
    }
    v
}

fn set_field(obj: &mut Value, field: &str, value: Option<Value>) {
    if let Some(m) = obj.as_object_mut() {
        match value {
            Some(v) => m.insert(field.into(), v),
            None => m.remove(field),
        };
    }
}

fn expect_object(body: Value) -> Result<Map<String, Value>, ApiError> {
    match body {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::new(400, "the request body is not a JSON object")),
    }
}

/// `metadata` as a map, created (or replaced if not an object) when needed. Always `Some`;
/// the Option only keeps this total without an unreachable branch.
fn metadata_mut(obj: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    let entry = obj.entry("metadata").or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut()
}

fn no_metadata() -> ApiError {
    ApiError::new(500, "metadata is not an object")
}

fn check_kind(res: &ResourceRef, obj: &Map<String, Value>) -> Result<(), ApiError> {
    let known = KNOWN_KINDS.iter().any(|(p, _)| *p == res.plural);
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && known
        && !kind.is_empty()
        && kind != res.kind()
    {
        return Err(ApiError::new(
            400,
            format!(
                "the kind {kind} does not match the resource {} ({})",
                res.qualified(),
                res.kind()
            ),
        ));
    }
    Ok(())
}

fn check_name(meta: &Map<String, Value>, url_name: &str) -> Result<(), ApiError> {
    match meta.get("name").and_then(Value::as_str) {
        Some(n) if n != url_name => Err(ApiError::new(
            400,
            format!("the name of the object ({n}) does not match the name on the URL ({url_name})"),
        )),
        _ => Ok(()),
    }
}

fn check_namespace(meta: &Map<String, Value>, url_ns: &str) -> Result<(), ApiError> {
    match meta.get("namespace").and_then(Value::as_str) {
        Some(n) if !n.is_empty() && n != url_ns => Err(ApiError::new(
            400,
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => Ok(()),
    }
}

fn validate_name(res: &ResourceRef, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            res,
            name,
            "metadata.name",
            &format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"
            ),
        ))
    }
}

fn object_sort_key(obj: &Value) -> String {
    let ns = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    format!("{ns}/{name}")
}

/// A continue token: the list's version and the last key served (opaque to clients).
fn encode_continue(rv: u64, key: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{rv}/{key}"))
}

fn decode_continue(token: &str) -> Option<(u64, String)> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (rv, key) = text.split_once('/')?;
    Some((rv.parse().ok()?, key.to_string()))
}

/// Equality-based label selectors (`a=b`, `a==b`, `a!=b`, `a`, `!a`) and field selectors on
/// dotted paths (`metadata.name=x`). Set-based label selectors answer 400.
pub(crate) fn matches_selectors(
    obj: &Value,
    labels: Option<&str>,
    fields: Option<&str>,
) -> Result<bool, ApiError> {
    if let Some(sel) = labels.filter(|s| !s.trim().is_empty()) {
        let lbls = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| lbls.and_then(|l| l.get(k)).and_then(Value::as_str);
        for term in sel.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if term.contains(" in ") || term.contains(" notin ") || term.contains('(') {
                return Err(ApiError::new(
                    400,
                    format!(
                        "unsupported label selector term {term:?} (the fake supports equality only)"
                    ),
                ));
            }
            let ok = if let Some((k, v)) = term.split_once("!=") {
                get(k.trim()) != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                get(k.trim()) == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                get(k.trim()).is_none()
            } else {
                get(term).is_some()
            };
            if !ok {
                return Ok(false);
            }
        }
    }
    if let Some(sel) = fields.filter(|s| !s.trim().is_empty()) {
        for term in sel.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, want, negate) = if let Some((k, v)) = term.split_once("!=") {
                (k, v, true)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, v, false)
            } else {
                return Err(ApiError::new(
                    400,
                    format!("invalid field selector term {term:?}"),
                ));
            };
            let pointer = format!("/{}", path.trim().replace('.', "/"));
            let actual = match obj.pointer(&pointer) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            if (actual == want.trim()) == negate {
                return Ok(false);
            }
        }
    }
    Ok(true)
}
