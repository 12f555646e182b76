//! Scripted failures: gateway/transport faults and resolver (storage/MQE) faults.

use std::time::Duration;

/// A failure the simulator injects into upcoming requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this HTTP status and a short text body (e.g. 503).
    Status(u16),
    /// A gateway's 502 HTML error page.
    HtmlGateway,
    /// Sleep this long before answering normally (slow OAP / client timeout).
    Delay(Duration),
    /// A valid 200 response cut in half.
    TruncatedJson,
    /// A resolver exception: HTTP 200 with `errors` and `data: null`.
    GraphqlError(String),
    /// `execExpression` answers `{"type":"UNKNOWN","results":[],"error":<msg>}`.
    MqeError(String),
    /// The storage fails: MQE error text, or a resolver error for v2 queries.
    StorageError,
    /// Every bucket id in the answer is moved by this many seconds (MQE epoch-ms ids and
    /// v2 `yyyyMMddHHmm_…` ids): data from another time, as a stale cache or a skewed
    /// store would serve it.
    ShiftBuckets(i64),
    /// `getTimeInfo` reports this zone text, or is null with `None` (OAP < 6.5, a proxy
    /// stripping it): the client must not guess.
    TimeZone(Option<String>),
}

impl Fault {
    /// Transport faults apply to a whole HTTP request; the others to resolver calls.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            Fault::Status(_)
                | Fault::HtmlGateway
                | Fault::Delay(_)
                | Fault::TruncatedJson
                | Fault::GraphqlError(_)
                | Fault::ShiftBuckets(_)
        )
    }
}

/// Injected faults in order; `remaining: None` means until cleared.
#[derive(Debug, Default)]
pub struct FaultQueue {
    entries: Vec<(Fault, Option<usize>)>,
}

impl FaultQueue {
    pub fn push(&mut self, fault: Fault, times: Option<usize>) {
        if times != Some(0) {
            self.entries.push((fault, times));
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Consumes one use of the first fault matching `pred`.
    pub fn take(&mut self, pred: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let idx = self.entries.iter().position(|(f, _)| pred(f))?;
        let fault = self.entries[idx].0.clone();
        if let Some(n) = &mut self.entries[idx].1 {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.entries.remove(idx);
            }
        }
        Some(fault)
    }
}
