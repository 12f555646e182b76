//! `getAlarm` polling against the simulator: each OAP version's field set, paging, the OAP's
//! timezone, failures, and the poller handing alarms to its sink.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, FixedOffset, Utc};
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use skycanary::alarm::Alarm;
use skycanary::alarm::poll::{AlarmSink, PollConfig, Poller};
use skycanary::provider::skywalking::{ClientOptions, ProviderError, SkyWalkingClient};
use skycanary::runner::{Clock, SystemClock};
use skycanary::sim::{Fault, OapProfile, SimAlarm, SimConfig, SimEntity, Simulator};

const SVC: &str = "reviews.bookinfo";

async fn sim(profile: OapProfile, tz: FixedOffset) -> (Simulator, skycanary::sim::RunningSim) {
    let sim = Simulator::new(SimConfig::new(profile).with_tz(tz));
    let running = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (sim, running)
}

fn utc() -> FixedOffset {
    FixedOffset::east_opt(0).unwrap()
}

fn client(url: &str) -> SkyWalkingClient {
    SkyWalkingClient::new(ClientOptions::new(url)).unwrap()
}

fn alarm(entity: SimEntity, at: DateTime<Utc>, msg: &str) -> SimAlarm {
    let mut a = SimAlarm::new(entity, at, msg);
    a.tags = vec![("level".into(), "WARNING".into())];
    a
}

#[tokio::test]
async fn every_profile_returns_its_field_set() {
    let now = Utc::now();
    for profile in OapProfile::ALL {
        let (sim, running) = sim(profile, utc()).await;
        let mut recovered = alarm(SimEntity::service(SVC), now - Duration::minutes(3), "slow");
        recovered.recovery_time = Some(now - Duration::minutes(1));
        sim.add_alarm(recovered);
        sim.add_alarm(alarm(
            SimEntity::instance(SVC, "reviews-v2-abc"),
            now - Duration::minutes(2),
            "instance slow",
        ));
        let page = client(&running.url())
            .alarms(now - Duration::minutes(10), now, 100, 5)
            .await
            .unwrap_or_else(|e| panic!("{profile:?}: {e}"));
        assert_eq!(page.records.len(), 2, "{profile:?}");
        assert!(!page.truncated);
        let inst = &page.records[0];
        assert_eq!(
            inst.scope.as_deref(),
            Some("ServiceInstance"),
            "{profile:?}"
        );
        assert_eq!(
            inst.tags,
            vec![("level".to_string(), "WARNING".to_string())]
        );
        let has_name = profile >= OapProfile::V10_2;
        assert_eq!(inst.name.is_some(), has_name, "{profile:?}");
        let svc = &page.records[1];
        assert_eq!(
            svc.recovery_time.is_some(),
            profile >= OapProfile::V10_4,
            "{profile:?}"
        );
        // Whatever the version, the matchable alarm has the entity name.
        let a = skycanary::alarm::poll::alarm_from_record(inst.clone());
        assert_eq!(
            a.name.as_deref(),
            Some("reviews-v2-abc of reviews.bookinfo"),
            "{profile:?}"
        );
    }
}

#[tokio::test]
async fn pages_are_read_until_exhausted_and_bounded() {
    let (sim, running) = sim(OapProfile::V10_4, utc()).await;
    let now = Utc::now();
    for i in 0..7 {
        sim.add_alarm(alarm(
            SimEntity::service(SVC),
            now - Duration::seconds(10 * i + 5),
            &format!("alarm {i}"),
        ));
    }
    sim.add_alarm(alarm(
        SimEntity::service(SVC),
        now - Duration::hours(2),
        "outside the window",
    ));
    let c = client(&running.url());
    let all = c
        .alarms(now - Duration::minutes(5), now, 3, 10)
        .await
        .unwrap();
    assert_eq!(all.records.len(), 7);
    assert!(!all.truncated);
    let messages: Vec<&str> = all.records.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(messages[0], "alarm 0", "newest first");
    let bounded = c
        .alarms(now - Duration::minutes(5), now, 3, 2)
        .await
        .unwrap();
    assert_eq!(bounded.records.len(), 6);
    assert!(bounded.truncated);
    let pages = sim
        .requests()
        .iter()
        .filter(|r| r.raw_body.contains("SkycanaryAlarms"))
        .count();
    assert_eq!(pages, 3 + 2);
}

#[tokio::test]
async fn windows_are_sent_in_the_oap_timezone() {
    let cst = FixedOffset::east_opt(8 * 3600).unwrap();
    let (sim, running) = sim(OapProfile::V9_7, cst).await;
    let now = Utc::now();
    sim.add_alarm(alarm(
        SimEntity::service(SVC),
        now - Duration::minutes(1),
        "slow",
    ));
    let page = client(&running.url())
        .alarms(now - Duration::minutes(3), now, 10, 2)
        .await
        .unwrap();
    assert_eq!(page.records.len(), 1, "window {:?}", page.window);
    let local_end = now.with_timezone(&cst).format("%Y-%m-%d %H%M").to_string();
    assert_eq!(page.window.1, local_end);
}

#[tokio::test]
async fn oap_failures_are_errors_not_alarms() {
    let (sim, running) = sim(OapProfile::V10_4, utc()).await;
    let now = Utc::now();
    let c = client(&running.url());
    c.alarms(now - Duration::minutes(1), now, 10, 1)
        .await
        .unwrap();
    sim.inject_fault(Fault::Status(503), Some(1));
    let e = c
        .alarms(now - Duration::minutes(1), now, 10, 1)
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Http { status: 503, .. }), "{e}");
    sim.inject_fault(Fault::TruncatedJson, Some(1));
    assert!(
        c.alarms(now - Duration::minutes(1), now, 10, 1)
            .await
            .is_err()
    );
    sim.inject_fault(Fault::GraphqlError("storage down".into()), Some(1));
    let e = c
        .alarms(now - Duration::minutes(1), now, 10, 1)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("storage down"), "{e}");
    assert!(
        c.alarms(now - Duration::minutes(1), now, 10, 1)
            .await
            .is_ok()
    );
}

/// Records what the poller delivers.
struct Sink {
    since: Option<DateTime<Utc>>,
    got: Mutex<Vec<Vec<Alarm>>>,
}

impl AlarmSink for Sink {
    fn poll_since(&self, _now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.since
    }

    fn deliver_polled(&self, alarms: Vec<Alarm>) -> BoxFuture<'static, Value> {
        let n = alarms.len();
        self.got.lock().unwrap().push(alarms);
        Box::pin(async move { json!({"received": n}) })
    }
}

#[tokio::test]
async fn the_poller_delivers_polled_alarms_and_survives_failures() {
    let (sim, running) = sim(OapProfile::V8_9, utc()).await;
    let now = Utc::now();
    sim.add_alarm(alarm(
        SimEntity::service(SVC),
        now - Duration::minutes(2),
        "slow",
    ));
    let sink = Arc::new(Sink {
        since: Some(now - Duration::minutes(10)),
        got: Mutex::new(Vec::new()),
    });
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut p = Poller::new(
        Arc::new(client(&running.url())),
        sink.clone(),
        clock.clone(),
        PollConfig::new(std::time::Duration::from_secs(1)),
    );
    assert_eq!(p.poll_once().await, Some(json!({"received": 1})));
    sim.inject_fault(Fault::HtmlGateway, Some(1));
    assert_eq!(p.poll_once().await, None, "an OAP failure delivers nothing");
    assert_eq!(p.poll_once().await, Some(json!({"received": 1})));
    let got = sink.got.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    let a = &got[0][0];
    assert_eq!(
        a.name.as_deref(),
        Some(SVC),
        "8.9 has no name: rebuilt from the id"
    );
    assert_eq!(a.rule_name, None);
    assert_eq!(a.tags, vec![("level".to_string(), "WARNING".to_string())]);

    let idle = Arc::new(Sink {
        since: None,
        got: Mutex::new(Vec::new()),
    });
    let mut p = Poller::new(
        Arc::new(client(&running.url())),
        idle.clone(),
        clock,
        PollConfig::new(std::time::Duration::from_secs(1)),
    );
    let before = sim.requests().len();
    assert_eq!(p.poll_once().await, None);
    assert_eq!(sim.requests().len(), before, "no armed canary: no request");
}
