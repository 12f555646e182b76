//! The HTML report in a real headless browser (Debian's chromium): the charts are in the
//! rendered DOM and the screenshot is not blank. Without chromium the test is skipped with a
//! reason, unless SKYCANARY_REQUIRE_BROWSER=1 (CI), where it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Runs chromium headless on `page` with `extra` flags; returns stdout. Bounded: killed
/// after two minutes.
fn headless(browser: &Path, profile: &Path, extra: &[String], page: &Path) -> String {
    let out_file = profile.with_extension("stdout");
    let stdout = std::fs::File::create(&out_file).unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium failed: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within two minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(&out_file).unwrap()
}

#[test]
fn the_demo_report_renders_its_charts_in_chromium() {
    let Some(browser) = chromium() else {
        if std::env::var("SKYCANARY_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("chromium is required (SKYCANARY_REQUIRE_BROWSER=1) but not on PATH");
        }
        eprintln!("SKIPPED: chromium not found on PATH (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("demo.html");
    let out = Command::new(env!("CARGO_BIN_EXE_skycanary"))
        .args([
            "demo",
            "--scenario",
            "regression",
            "--speed",
            "300",
            "--report",
        ])
        .arg(&report)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let dom = headless(
        &browser,
        &dir.path().join("profile-dom"),
        &["--dump-dom".to_string()],
        &report,
    );
    let id = "s0-regression-reviews-v1-v3";
    assert!(
        dom.contains(&format!(r#"<svg id="{id}-weights" class="chart weights""#)),
        "{dom}"
    );
    assert!(dom.contains(&format!(
        r#"<svg id="{id}-metric-0-apdex" class="chart metric""#
    )));
    assert_eq!(dom.matches(r#"<path class="series weight""#).count(), 2);
    assert!(dom.contains(r#"data-version="v3""#));
    assert!(dom.contains(r#"<line class="threshold success""#));
    assert!(dom.contains("success ≥ 9900"));
    assert!(dom.contains(r#"<path class="series metric" d="M"#));
    assert!(dom.contains(r#"<circle class="verdict failed""#));
    assert!(dom.contains(r#"<circle class="verdict successful""#));
    assert!(dom.contains("RolloutStepStarted"));

    let png = dir.path().join("shot.png");
    headless(
        &browser,
        &dir.path().join("profile-shot"),
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1000,1400".to_string(),
        ],
        &report,
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1000, 1400));
    let bytes = &buf[..info.buffer_size()];
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let pixels: Vec<&[u8]> = bytes.chunks(channels).collect();
    let non_white = pixels
        .iter()
        .filter(|p| p[..3].iter().any(|c| *c < 235))
        .count();
    let colours: std::collections::HashSet<[u8; 3]> =
        pixels.iter().map(|p| [p[0], p[1], p[2]]).collect();
    // Text, axes, two coloured weight lines and the markers: far from a blank page.
    assert!(
        non_white * 100 > pixels.len(),
        "{non_white} of {} pixels drawn",
        pixels.len()
    );
    assert!(colours.len() > 50, "{} colours", colours.len());
    // The weight lines' colours are on screen (v1 blue, v3 orange).
    let near = |c: [u8; 3], p: &[u8]| c.iter().zip(p).all(|(a, b)| a.abs_diff(*b) < 30);
    assert!(
        pixels.iter().any(|p| near([0x4e, 0x79, 0xa7], p)),
        "no v1 line"
    );
    assert!(
        pixels.iter().any(|p| near([0xf2, 0x8e, 0x2b], p)),
        "no v3 line"
    );
}
