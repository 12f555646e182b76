//! What goes on the wire: the generic webhook's JSON body and its HMAC signature, and the
//! Slack incoming-webhook message (`text` plus Block Kit `blocks`).

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{Notification, NotifyEvent};

/// Header with `sha256=<hex HMAC-SHA256 of the body>` under the sink's secret.
pub const SIGNATURE_HEADER: &str = "X-Skycanary-Signature";
/// Header with the notification id (the idempotency key), header-safe (see [`delivery_id`]).
pub const DELIVERY_HEADER: &str = "X-Skycanary-Delivery";
/// Header with the event (`aborted`).
pub const EVENT_HEADER: &str = "X-Skycanary-Event";
/// Header with the attempt's Unix time in seconds.
pub const TIMESTAMP_HEADER: &str = "X-Skycanary-Timestamp";

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// The webhook body: the notification as JSON (its `schema` field names the version). The
/// same bytes go out on every attempt, so the signature and the id stay the same.
pub fn webhook_body(n: &Notification) -> Vec<u8> {
    // A struct of strings, numbers and options: serialising cannot fail.
    serde_json::to_vec(n).unwrap_or_default()
}

/// `sha256=<hex>`: HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// Whether `signature` (`sha256=<hex>`) is `body`'s under `secret`, compared in constant
/// time: what a receiver does (tests and the docs' example use it).
pub fn verify(secret: &[u8], body: &[u8], signature: &str) -> bool {
    use subtle::ConstantTimeEq;
    let expected = sign(secret, body);
    expected.as_bytes().ct_eq(signature.as_bytes()).into()
}

/// The id as a header value: bytes outside visible ASCII (and `%`) percent-encoded, so any
/// revision string gives a valid, still unique header.
pub fn delivery_id(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Slack's limits: header text 150 characters, section text 3000, field text 2000.
const SLACK_HEADER_MAX: usize = 150;
const SLACK_TEXT_MAX: usize = 3000;
const SLACK_FIELD_MAX: usize = 2000;

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Slack mrkdwn: `&`, `<` and `>` are control characters there.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn emoji(e: NotifyEvent) -> &'static str {
    match e {
        NotifyEvent::Started => ":rocket:",
        NotifyEvent::StepReached => ":arrow_forward:",
        NotifyEvent::Paused => ":double_vertical_bar:",
        NotifyEvent::WaitingForPromotion => ":hourglass:",
        NotifyEvent::Aborted | NotifyEvent::RolledBack => ":rewind:",
        NotifyEvent::Promoted | NotifyEvent::RunSucceeded => ":white_check_mark:",
        NotifyEvent::InvalidSpec | NotifyEvent::RunError => ":warning:",
        NotifyEvent::RunFailed => ":x:",
        NotifyEvent::RunInconclusive => ":grey_question:",
    }
}

/// A Slack incoming-webhook message: `text` (notifications and clients without blocks) and
/// `blocks` with the evidence as fields.
pub fn slack_message(n: &Notification) -> Value {
    let title = format!("{} {}/{}: {}", n.kind, n.namespace, n.name, n.event);
    let mut fields = vec![format!("*Phase*\n{}", escape(&n.phase))];
    if let (Some(step), Some(steps)) = (n.step, n.steps) {
        fields.push(format!("*Step*\n{step}/{steps}"));
    }
    if let Some(w) = n.weight {
        fields.push(format!("*Canary weight*\n{w}"));
    }
    if let Some(run) = &n.run {
        fields.push(format!("*Run*\n{}", escape(run)));
    }
    if let Some(ev) = &n.evidence {
        if let Some(m) = &ev.metric {
            fields.push(format!("*Metric*\n{}", escape(m)));
        }
        if let Some(v) = &ev.value {
            fields.push(format!("*Measured*\n{}", escape(v)));
        }
        if let Some(c) = &ev.condition {
            fields.push(format!("*Condition*\n`{}`", escape(c)));
        }
        if let Some(t) = ev.threshold_text() {
            fields.push(format!("*Threshold*\n{}", escape(&t)));
        }
        if let Some(a) = &ev.alarm {
            fields.push(format!("*Alarm*\n{}", escape(a)));
        }
    }
    fields.truncate(10);
    let fields: Vec<Value> = fields
        .iter()
        .map(|f| json!({"type": "mrkdwn", "text": cut(f, SLACK_FIELD_MAX)}))
        .collect();
    json!({
        "text": cut(&format!("{} {}", emoji(n.event), n.message), SLACK_TEXT_MAX),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": cut(&title, SLACK_HEADER_MAX), "emoji": true}},
            {"type": "section", "text": {"type": "mrkdwn", "text": cut(&format!("{} {}", emoji(n.event), escape(&n.message)), SLACK_TEXT_MAX)}},
            {"type": "section", "fields": fields},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": cut(&format!("id `{}` · {}", escape(&n.id), n.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)), SLACK_TEXT_MAX)}
            ]}
        ]
    })
}
