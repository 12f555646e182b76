//! The real `skycanary analyze` against a hostile OAP on loopback: a 100 MB body, a
//! 200k-point answer and junk each end as one Error measurement while the process's peak
//! RSS stays under 64 MiB; an OAP that cannot be used at all fails fast with a hint.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the fake OAP answers to metric reads (detection is answered normally).
#[derive(Clone, Copy)]
enum Answer {
    /// 100 MB, no Content-Length, streamed until the client hangs up.
    Huge,
    /// This many well-formed MQE points (200k: ~8 MB) with a Content-Length.
    Dense(usize),
    /// 3 MiB of bytes that are not JSON.
    Junk,
    /// `getTimeInfo` is null.
    NoZone,
    /// Every request is redirected (307) elsewhere.
    Redirect,
}

const TEMPLATE: &str = r#"apiVersion: skycanary.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: bounded}
spec:
  metrics:
  - name: apdex
    consecutiveErrorLimit: 0
    successCondition: "min(result) >= 9900"
    provider:
      skywalking:
        window: 5m
        metric: service_apdex
        entity: {serviceName: "reviews"}
"#;

/// Reads one HTTP request (head and `Content-Length` body).
fn read_request(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Ok(n) = s.read(&mut chunk) else {
            return buf;
        };
        if n == 0 {
            return buf;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return buf;
            }
        }
    }
}

fn respond(s: &mut TcpStream, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
}

fn answer(mut s: TcpStream, what: Answer) {
    let req = String::from_utf8_lossy(&read_request(&mut s)).to_string();
    if let Answer::Redirect = what {
        let _ = s.write_all(
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:9/graphql\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        return;
    }
    if req.contains("ServerInfoQuery") && matches!(what, Answer::NoZone) {
        return respond(
            &mut s,
            br#"{"data":{"version":"10.2.0","getTimeInfo":null}}"#,
        );
    }
    if req.contains("ServerInfoQuery") {
        return respond(
            &mut s,
            br#"{"data":{"version":"10.2.0","getTimeInfo":{"timezone":"+0000","currentTimestamp":0}}}"#,
        );
    }
    if req.contains("SkycanaryIntrospection") {
        return respond(
            &mut s,
            br#"{"errors":[{"message":"introspection disabled"}]}"#,
        );
    }
    match what {
        Answer::Huge => {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
            );
            let chunk = vec![b'['; 1 << 20];
            for _ in 0..100 {
                if s.write_all(&chunk).is_err() {
                    return;
                }
            }
        }
        Answer::Dense(points) => {
            let point = br#"{"id":"1719835200000","value":"10000"}"#;
            let mut body = br#"{"data":{"m0":{"type":"TIME_SERIES_VALUES","error":null,"results":[{"metric":{"labels":[]},"values":["#.to_vec();
            for i in 0..points {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(point);
            }
            body.extend_from_slice(b"]}]}}}");
            respond(&mut s, &body);
        }
        Answer::Junk => {
            let body: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
            respond(&mut s, &body);
        }
        Answer::NoZone | Answer::Redirect => respond(&mut s, b"{}"),
    }
}

/// Serves `what` on 127.0.0.1:0 for the rest of the test process.
fn serve(what: Answer) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || answer(s, what));
        }
    });
    format!("http://{addr}")
}

/// Runs `skycanary analyze` to the end: exit code, stdout, stderr, peak RSS in KiB
/// (`ru_maxrss` of the reaped child, so nothing after the last poll is missed).
#[allow(
    clippy::zombie_processes,
    reason = "the child is reaped with wait4, which also reports its peak RSS"
)]
fn analyze(url: &str, env: &[(&str, &str)]) -> (i32, String, String, i64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = dir.path().join("t.yaml");
    std::fs::write(&t, TEMPLATE).expect("write");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skycanary"));
    cmd.args(["analyze", &t.display().to_string(), "--skywalking", url])
        .args(["--output", "json"])
        .env_remove("SKYCANARY_MAX_RESPONSE_BYTES")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let (mut out, mut err) = (String::new(), String::new());
    // Outputs are small; read them to the end (the child closes them when it exits).
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read stdout");
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    let mut status = 0;
    // SAFETY: `rusage` is plain data that wait4 fills in; `pid` is our unreaped child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4 failed");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, out, err, usage.ru_maxrss)
}

/// Peak RSS bound from the issue: the Deployment's budget with room to spare.
const MAX_RSS_KIB: i64 = 64 * 1024;

fn assert_one_error(name: &str, url: &str, env: &[(&str, &str)], message: &str) {
    let (code, out, err, rss) = analyze(url, env);
    assert_eq!(code, 3, "{name}: exit {code}\n{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json output");
    let ms = v["metricResults"][0]["measurements"]
        .as_array()
        .expect("measurements");
    assert_eq!(ms.len(), 1, "{name}: {v}");
    assert_eq!(ms[0]["phase"], "Error", "{name}: {v}");
    let msg = ms[0]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(message), "{name}: {msg}");
    assert!(rss < MAX_RSS_KIB, "{name}: peak RSS {rss} KiB");
}

#[test]
fn hostile_responses_end_as_one_error_under_64_mib() {
    assert_one_error(
        "100 MB body",
        &serve(Answer::Huge),
        &[],
        "response body exceeds 4194304 bytes",
    );
    // 200k points is ~8 MB: over the default body bound...
    let dense = serve(Answer::Dense(200_000));
    assert_one_error("200k points", &dense, &[], "exceeds 4194304 bytes");
    // ...and with the bound raised, refused before being decoded into a tree.
    assert_one_error(
        "200k points, 16 MiB bound",
        &dense,
        &[("SKYCANARY_MAX_RESPONSE_BYTES", "16777216")],
        "more than 32768 JSON values",
    );
    // The most a response may hold (3 values a point, 10 around them) is decoded, then
    // refused for having more points than the window has buckets.
    assert_one_error(
        "densest decodable answer",
        &serve(Answer::Dense((32_768 - 10) / 3)),
        &[],
        "10919 points for a window of 5 buckets",
    );
    assert_one_error("junk", &serve(Answer::Junk), &[], "cannot decode response");
}

#[test]
fn an_unusable_oap_fails_fast_with_a_hint() {
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let started = Instant::now();
    let (code, out, err, _) = analyze(&url, &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(err.contains("nothing listens there"), "{err}");
    assert!(!err.contains(": Error"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // `.invalid` never resolves (RFC 6761).
    let (code, out, err, _) = analyze("http://no-such-oap.invalid:12800", &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(err.contains("does not resolve"), "{err}");
    // A redirect and an unknown time zone cannot get better by retrying either.
    let (code, out, err, _) = analyze(&serve(Answer::Redirect), &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        err.contains("redirect to \"http://127.0.0.1:9/graphql\" not followed"),
        "{err}"
    );
    let (code, out, err, _) = analyze(&serve(Answer::NoZone), &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(err.contains("--timezone"), "{err}");
    // A TLS port spoken to in plain HTTP answers with a TLS alert.
    let tls = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", tls.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for mut s in tls.incoming().flatten() {
            let _ = read_request(&mut s);
            let _ = s.write_all(b"\x15\x03\x03\x00\x02\x02\x46");
        }
    });
    let (code, out, err, _) = analyze(&url, &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(err.contains("https://"), "{err}");
}
