//! Hostile input on the real daemon's HTTP surface (issue 8, part 3): bad tokens, bodies too big
//! (declared or not), too slow, too deep or of the wrong type, and alarms that must not count.
//! Every request gets its status, and afterwards the canary's status, its persisted state and
//! the VirtualService are byte-for-byte what they were.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use skycanary::sim::{OapProfile, SimConfig, SimEntity, Simulator};

const TOKEN: &str = "hostile-test-token-91c2";

const CONFIG: &str = r#"apiVersion: skycanary.io/v1alpha1
kind: Canary
metadata: {name: reviews, namespace: bookinfo}
spec:
  revision: v2
  trafficRouting:
    istio:
      virtualService: {name: reviews, routes: [primary]}
      stableService: reviews-stable
      canaryService: reviews-canary
  steps:
  - setWeight: 20
  - pause: {}
  rollbackOn:
    alarms: [{ruleName: "service_sla_rule", name: "^reviews\\.bookinfo$"}]
"#;

const VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - name: primary
    route:
    - destination: {host: reviews-stable}
      weight: 100
    - destination: {host: reviews-canary}
      weight: 0
"#;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything that is state: the API's view of the canary, the state directory and the
/// manifests, as text.
async fn snapshot(
    http: &reqwest::Client,
    url: &str,
    root: &Path,
) -> (Value, Vec<(String, String)>) {
    let status: Value = http
        .get(format!("{url}/api/v1/canaries/bookinfo/reviews"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut files = Vec::new();
    for dir in ["state", "istio"] {
        let mut entries: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            files.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap_or_default(),
            ));
        }
    }
    (status, files)
}

/// A raw HTTP/1.1 exchange: writes `head` and `body`, returns the status code the daemon
/// answered (or 0 when it closed the connection without an answer).
fn raw(addr: &str, head: &str, body: &[u8], stall: bool) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
    if !stall {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_change_nothing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
    sim.set_series(
        "service_apdex",
        SimEntity::service("reviews.bookinfo"),
        |_| Some(9950.0),
    );
    let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for d in ["config", "istio", "state"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("config/canary.yaml"), CONFIG).unwrap();
    std::fs::write(root.join("istio/reviews.yaml"), VS).unwrap();
    std::fs::write(root.join("token"), TOKEN).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let _daemon = Killed(
        Command::new(env!("CARGO_BIN_EXE_skycanary"))
            .args(["run", "--config"])
            .arg(root.join("config"))
            .arg("--manifests")
            .arg(root.join("istio"))
            .arg("--state-dir")
            .arg(root.join("state"))
            .arg("--token-file")
            .arg(root.join("token"))
            .args(["--skywalking", &running.url(), "--listen", &addr])
            .args(["--read-timeout", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let start = Instant::now();
    loop {
        let paused = match http
            .get(format!("{url}/api/v1/canaries/bookinfo/reviews"))
            .bearer_auth(TOKEN)
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => {
                let s: Value = r.json().await.unwrap();
                s["status"]["phase"] == "Paused" && s["status"]["desiredWeight"] == 20
            }
            _ => false,
        };
        if paused {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the canary never paused at 20 %"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = snapshot(&http, &url, root).await;

    let abort = format!("{url}/api/v1/canaries/bookinfo/reviews/abort");
    let promote = format!("{url}/api/v1/canaries/bookinfo/reviews/promote?full=true");
    let hook = format!("{url}/webhooks/skywalking");
    // An alarm that matches the canary: accepted, it would roll back.
    let alarm = format!(
        r#"[{{"scopeId":1,"scope":"SERVICE","name":"reviews.bookinfo","id0":"x","id1":"","ruleName":"service_sla_rule","alarmMessage":"sla","startTime":{}}}]"#,
        chrono::Utc::now().timestamp_millis() + 60_000
    );

    // Tokens: missing, wrong, prefix, suffix, other case, other scheme.
    for auth in [
        None,
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Bearer {TOKEN}0")),
        Some(format!("Bearer {}", TOKEN.to_uppercase())),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_string()),
    ] {
        for (target, body) in [
            (&abort, "{}".to_string()),
            (&promote, String::new()),
            (&hook, alarm.clone()),
        ] {
            let mut req = http
                .post(target)
                .header("content-type", "application/json")
                .body(body);
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            assert_eq!(req.send().await.unwrap().status(), 401, "{auth:?} {target}");
        }
    }
    // Wrong content type on a matching alarm: 415, no rollback.
    let r = http
        .post(&hook)
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body(alarm.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // Deeply nested JSON, and the alarm buried inside it: an array whose elements are not
    // alarms, each refused (422), nothing acted on.
    let depth = 100_000;
    for body in [
        format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        format!("{}{alarm}{}", "[".repeat(depth), "]".repeat(depth)),
        format!(
            r#"[{{"ruleName":"service_sla_rule","name":"reviews.bookinfo","tags":{}{}}}]"#,
            "[".repeat(depth),
            "]".repeat(depth)
        ),
    ] {
        let r = http
            .post(&hook)
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        let reply: Value = r.json().await.unwrap();
        assert_eq!(reply["matched"], serde_json::json!([]), "{reply}");
        assert_eq!(reply["rejectedTotal"], 1, "{reply}");
    }
    let r = http
        .post(&abort)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"reason": {}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Oversized: declared, and undeclared (chunked).
    let big = vec![b' '; 2 * 1024 * 1024];
    let head = format!(
        "POST /webhooks/skywalking HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        big.len()
    );
    assert_eq!(raw(&addr, &head, b"[", true), 413);
    let head = format!(
        "POST /api/v1/canaries/bookinfo/reviews/abort HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let mut chunked = Vec::new();
    for _ in 0..(big.len() / 65536) {
        chunked.extend_from_slice(b"10000\r\n");
        chunked.extend_from_slice(&vec![b' '; 65536]);
        chunked.extend_from_slice(b"\r\n");
    }
    let code = raw(&addr, &head, &chunked, true);
    // 413, or a reset before the answer could be read: never anything else.
    assert!(code == 413 || code == 0, "{code}");
    // Slow: a body that stops half-way (408), headers that never end (closed, no answer).
    let head = format!(
        "POST /webhooks/skywalking HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        alarm.len()
    );
    assert_eq!(
        raw(&addr, &head, &alarm.as_bytes()[..alarm.len() / 2], true),
        408
    );
    let partial = format!(
        "POST /api/v1/canaries/bookinfo/reviews/abort HTTP/1.1\r\nauthorization: Bearer {TOKEN}\r\n"
    );
    assert_eq!(raw(&addr, &partial, b"", true), 0);

    let after = snapshot(&http, &url, root).await;
    assert_eq!(before, after, "a hostile request changed state");

    // The same matching alarm, sent properly, does roll back: the cases above were refused
    // for what they were, not because alarms are ignored.
    let r = http
        .post(&hook)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(alarm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, _) = snapshot(&http, &url, root).await;
    assert_eq!(status["status"]["phase"], "Aborted", "{status}");
}
