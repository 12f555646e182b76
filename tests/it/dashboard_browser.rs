//! The live dashboard in headless Chromium driven over W3C WebDriver (Debian's `chromium` and
//! `chromium-driver`): a daemon with two canaries on the SkyWalking simulator, one healthy that
//! goes 10 → 30 % and waits for a human, one failing that is aborted with its evidence. The
//! test logs in with the token, reads the DOM, clicks promote and confirms, and takes
//! screenshots. Without chromium/chromedriver it is skipped with a reason, unless
//! SKYCANARY_REQUIRE_BROWSER=1 (CI), where it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skycanary::sim::{OapProfile, SimConfig, SimEntity, Simulator};

use crate::daemon::{TOKEN, http, phase, start, status, vs_weights, wait_for};

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 1500;

/// The WebDriver spec's key for element references.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// `reviews` (healthy) reaches 30 % and waits at an open pause; `ratings` fails its analysis.
const CANARIES: &str = r#"apiVersion: skycanary.io/v1alpha1
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
  - setWeight: 10
  - pause: {duration: 5s}
  - setWeight: 30
  - analysis: {templates: [{templateName: apdex}], args: [{name: service, value: reviews.bookinfo}]}
  - pause: {}
---
apiVersion: skycanary.io/v1alpha1
kind: Canary
metadata: {name: ratings, namespace: bookinfo}
spec:
  revision: v2
  trafficRouting:
    istio:
      virtualService: {name: ratings, routes: [primary]}
      stableService: ratings-stable
      canaryService: ratings-canary
  steps:
  - setWeight: 10
  - analysis: {templates: [{templateName: apdex}], args: [{name: service, value: ratings.bookinfo}]}
  - setWeight: 50
---
apiVersion: skycanary.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: apdex, namespace: bookinfo}
spec:
  args: [{name: service}]
  metrics:
  - name: apdex
    interval: 1s
    count: 2
    successCondition: "min(result) >= 9900"
    provider:
      skywalking:
        window: {duration: 3m, alignToStep: false}
        timeout: 2s
        metric: service_apdex
        entity: {serviceName: "{{args.service}}"}
"#;

fn vs(name: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: bookinfo}}
spec:
  hosts: [{name}]
  http:
  - name: primary
    route:
    - destination: {{host: {name}-stable}}
      weight: 100
    - destination: {{host: {name}-canary}}
      weight: 0
"#
    )
}

/// chromedriver and one browser session; both end when dropped.
struct Driver {
    child: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start(driver: &Path, browser: &Path, profile: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(90))
            .build()
            .unwrap();
        let mut driver = Driver {
            child,
            base,
            session: String::new(),
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .await
                .ok();
            if let Some(r) = ready
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser.display().to_string(),
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                         format!("--window-size={WIDTH},{HEIGHT}"),
                         format!("--user-data-dir={}", profile.display())],
            }
        }}});
        let created = driver.call(reqwest::Method::POST, "/session", caps).await;
        driver.session = created["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        driver
    }

    /// A WebDriver command; `Err` carries the protocol's error (e.g. `stale element reference`).
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Result<Value, String> {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let mut req = self.http.request(method.clone(), url);
        if method != reqwest::Method::GET {
            req = req.json(&body);
        }
        let response = req.send().await.map_err(|e| e.to_string())?;
        let ok = response.status().is_success();
        let v: Value = response.json().await.map_err(|e| e.to_string())?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(format!("{path}: {}", v["value"]))
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {e}"))
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    async fn js(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Polls `script` (which returns a value) until `pred` holds (bounded).
    async fn wait_js(&self, what: &str, script: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let v = self.js(script).await;
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last: {v}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn element(&self, css: &str) -> Result<String, String> {
        let v = self
            .try_call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await?;
        Ok(v[ELEMENT].as_str().expect("element id").to_string())
    }

    /// Clicks `css` like a user (the page re-renders changed cards, so a reference may go
    /// stale between finding and clicking: found again then).
    async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let attempt = match self.element(css).await {
                Ok(id) => {
                    self.try_call(
                        reqwest::Method::POST,
                        &format!("/element/{id}/click"),
                        json!({}),
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            match attempt {
                Ok(_) => return,
                Err(e) => assert!(Instant::now() < deadline, "cannot click {css}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await.expect(css);
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    /// A PNG of the viewport, written to `path`; returns (width, height, pixels as RGB).
    async fn screenshot(&self, path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
        use base64::Engine as _;
        let b64 = self
            .call(reqwest::Method::GET, "/screenshot", json!({}))
            .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("base64 PNG"))
            .expect("PNG base64");
        std::fs::write(path, &bytes).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        let channels = info.color_type.samples();
        assert!(channels >= 3, "{:?}", info.color_type);
        let pixels = buf[..info.buffer_size()]
            .chunks(channels)
            .map(|p| [p[0], p[1], p[2]])
            .collect();
        (info.width, info.height, pixels)
    }

    async fn quit(&self) {
        let _ = self.try_call(reqwest::Method::DELETE, "", json!({})).await;
    }
}

/// Not blank: many pixels drawn, many colours, and each of `colours` on screen.
fn assert_drawn(what: &str, pixels: &[[u8; 3]], colours: &[[u8; 3]]) {
    let drawn = pixels.iter().filter(|p| p.iter().any(|c| *c < 235)).count();
    assert!(
        drawn * 100 > pixels.len(),
        "{what}: {drawn} of {} pixels drawn",
        pixels.len()
    );
    let distinct: std::collections::HashSet<&[u8; 3]> = pixels.iter().collect();
    assert!(distinct.len() > 20, "{what}: {} colours", distinct.len());
    for want in colours {
        assert!(
            pixels
                .iter()
                .any(|p| want.iter().zip(p).all(|(a, b)| a.abs_diff(*b) < 30)),
            "{what}: no pixel near {want:?}"
        );
    }
}

const REVIEWS: &str = r#"section[data-canary="bookinfo/reviews"]"#;
const RATINGS: &str = r#"section[data-canary="bookinfo/ratings"]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_canaries_live_and_promotes_from_a_click() {
    let (Some(browser), Some(chromedriver)) = (
        on_path(&["chromium", "chromium-browser"]),
        on_path(&["chromedriver"]),
    ) else {
        if std::env::var("SKYCANARY_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("chromium and chromedriver are required (SKYCANARY_REQUIRE_BROWSER=1)");
        }
        eprintln!(
            "SKIPPED: chromium or chromedriver not on PATH (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let sim = Simulator::new(SimConfig::new(OapProfile::V10_4));
    sim.set_series(
        "service_apdex",
        SimEntity::service("reviews.bookinfo"),
        |_| Some(9950.0),
    );
    sim.set_series(
        "service_apdex",
        SimEntity::service("ratings.bookinfo"),
        |_| Some(7000.0),
    );
    let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let dirs = tempfile::tempdir().unwrap();
    for d in ["config", "istio", "state"] {
        std::fs::create_dir_all(dirs.path().join(d)).unwrap();
    }
    std::fs::write(dirs.path().join("config/canaries.yaml"), CANARIES).unwrap();
    for name in ["reviews", "ratings"] {
        std::fs::write(dirs.path().join(format!("istio/{name}.yaml")), vs(name)).unwrap();
    }
    let profile = tempfile::tempdir().unwrap();
    // Chromium first: its start-up is slow under load, and the canary must not have moved
    // past 10 % before the page watches.
    let driver = Driver::start(&chromedriver, &browser, profile.path()).await;
    let d = start(dirs, &running.url());
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();

    // Without the token: the page shows only the login, and the data and actions are refused.
    driver.goto(&format!("{}/ui", d.url)).await;
    driver
        .wait_js(
            "the login form",
            "return !document.getElementById('login').hidden",
            |v| v == true,
        )
        .await;
    let visible = driver
        .js("return [document.getElementById('dashboard').hidden, document.querySelectorAll('section.canary').length]")
        .await;
    assert_eq!(visible, json!([true, 0]));
    let (w, h, pixels) = driver.screenshot(&shots.join("login.png")).await;
    let viewport = driver
        .js("return [window.innerWidth * devicePixelRatio, window.innerHeight * devicePixelRatio]")
        .await;
    assert_eq!(
        json!([w, h]),
        viewport,
        "the screenshot is the whole viewport"
    );
    assert!(w == WIDTH && h > HEIGHT / 2, "{w}x{h}");
    assert_drawn("login", &pixels, &[[0x1f, 0x29, 0x33]]);
    for (method, path) in [
        (reqwest::Method::GET, "/ui/state"),
        (reqwest::Method::GET, "/api/v1/canaries"),
        (
            reqwest::Method::POST,
            "/api/v1/canaries/bookinfo/reviews/promote",
        ),
    ] {
        let r = http()
            .request(method, format!("{}{path}", d.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED, "{path}");
    }
    // A wrong token is refused in the page.
    driver.type_into("#token", "not-the-token").await;
    driver.click("#login-button").await;
    driver
        .wait_js(
            "the login error",
            "return document.getElementById('login-error').textContent",
            |v| v == "wrong token",
        )
        .await;

    // Logged in: the token is in no URL, and the session cookie is not readable by scripts.
    driver.type_into("#token", TOKEN).await;
    driver.click("#login-button").await;
    driver
        .wait_js(
            "the dashboard",
            &format!(
                "return document.querySelectorAll('{}').length",
                "section.canary"
            ),
            |v| v == 2,
        )
        .await;
    let page = driver.js("return [location.href, document.cookie]").await;
    assert_eq!(page, json!([format!("{}/ui", d.url), ""]));

    // reviews moves 10 → 30 and waits at its open pause: the page shows each weight it wrote.
    let history_js = format!(
        "return Array.from(document.querySelectorAll('{REVIEWS} ol.weight-history li')).map(li => Number(li.dataset.weight))"
    );
    let weights = driver
        .wait_js("reviews at 30 % after 10 %", &history_js, |v| {
            let w: Vec<i64> = v
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_i64)
                .collect();
            w.iter()
                .position(|x| *x == 10)
                .is_some_and(|i| w[i..].contains(&30))
        })
        .await;
    let paused = driver
        .wait_js(
            "reviews paused at its last step",
            &format!(
                "const c = document.querySelector('{REVIEWS}'); return c && [c.dataset.phase, c.querySelector('.step').textContent, c.querySelector('.weight').textContent, c.querySelectorAll('tr.measurement[data-phase=Successful]').length]"
            ),
            |v| v[0] == "Paused",
        )
        .await;
    assert_eq!(paused[1], "step 5/5", "{paused}");
    assert_eq!(paused[2], "canary 30 %", "{paused}");
    assert!(paused[3].as_i64().unwrap() >= 2, "{paused}");
    assert!(
        driver
            .js(&format!("return document.querySelectorAll('{REVIEWS} svg.chart.weights path.series.weight').length"))
            .await
            == 2,
        "the weights chart, stable and canary lines ({weights})"
    );

    // ratings is aborted, with the deciding measurement's value and the threshold it missed.
    let abort = driver
        .wait_js(
            "ratings aborted with evidence",
            &format!(
                "const c = document.querySelector('{RATINGS}'); if (!c || c.dataset.phase !== 'Aborted') return null; const t = (s) => Array.from(c.querySelectorAll(s)).map(e => e.textContent); return {{value: t('.abort-value'), condition: t('.abort-condition'), rows: t('tr.measurement[data-phase=Failed] td.value'), thresholds: t('tr.measurement[data-phase=Failed] td.threshold')}}"
            ),
            |v| !v.is_null(),
        )
        .await;
    assert!(
        abort["value"][0].as_str().unwrap().contains("7000"),
        "{abort}"
    );
    assert_eq!(abort["condition"][0], "min(result) >= 9900", "{abort}");
    assert!(
        abort["rows"][0].as_str().unwrap().contains("7000"),
        "{abort}"
    );
    assert_eq!(abort["thresholds"][0], ">= 9900", "{abort}");
    let (w, h, pixels) = driver.screenshot(&shots.join("dashboard.png")).await;
    assert_eq!(json!([w, h]), viewport);
    // The weight lines (stable blue, canary orange) and the aborted badge's red text.
    assert_drawn(
        "dashboard",
        &pixels,
        &[[0x4e, 0x79, 0xa7], [0xf2, 0x8e, 0x2b], [0x8e, 0x1b, 0x1b]],
    );

    // Promote, cancelled in the dialog: nothing happens.
    driver
        .click(&format!(r#"{REVIEWS} button[data-action="promote"]"#))
        .await;
    driver
        .wait_js(
            "the confirmation dialog",
            "return document.getElementById('confirm').open",
            |v| v == true,
        )
        .await;
    let question = driver
        .js("return document.getElementById('confirm-text').textContent")
        .await;
    assert!(
        question.as_str().unwrap().contains("bookinfo/reviews"),
        "{question}"
    );
    driver.click("#confirm-cancel").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        phase(&status(&d).await),
        "Paused",
        "a cancelled dialog sends nothing"
    );

    // Promote, confirmed: the canary moves on and the page follows.
    driver
        .click(&format!(r#"{REVIEWS} button[data-action="promote"]"#))
        .await;
    driver
        .wait_js(
            "the confirmation dialog",
            "return document.getElementById('confirm').open",
            |v| v == true,
        )
        .await;
    driver.click("#confirm-ok").await;
    wait_for(&d, "Promoted", Duration::from_secs(60), |s| {
        phase(s) == "Promoted"
    })
    .await;
    let promoted = driver
        .wait_js(
            "the page showing the promotion",
            &format!(
                "const c = document.querySelector('{REVIEWS}'); return [c.dataset.phase, c.querySelector('.weight').textContent, document.getElementById('notice').textContent]"
            ),
            |v| v[0] == "Promoted",
        )
        .await;
    assert_eq!(promoted[1], "canary 100 %", "{promoted}");
    assert_eq!(
        promoted[2], "promote bookinfo/reviews: accepted",
        "{promoted}"
    );
    assert_eq!(vs_weights(&d.manifests), (0, 100));
    let (_, _, pixels) = driver.screenshot(&shots.join("promoted.png")).await;
    assert_drawn("promoted", &pixels, &[[0x1b, 0x5e, 0x20]]);

    // Logging out ends the session: the page is back at the login.
    driver.click("#logout").await;
    driver
        .wait_js(
            "the login after logout",
            "return !document.getElementById('login').hidden && document.getElementById('dashboard').hidden",
            |v| v == true,
        )
        .await;
    driver.quit().await;
}
