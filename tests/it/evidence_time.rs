//! Evidence from the right time, end to end: the simulator serves buckets from another
//! time and unusable time zones, and no analysis passes on them.

use chrono::FixedOffset;
use skycanary::analysis::Phase;
use skycanary::runner::Defaults;
use skycanary::sim::{Fault, OapProfile};

use crate::support::{Sim, apdex, last_message};

/// One measurement; an Error ends the run at once.
fn template() -> String {
    apdex("successCondition: \"min(result) >= 9900\"\n    consecutiveErrorLimit: 0")
}

#[tokio::test]
async fn buckets_from_another_time_never_pass_an_analysis() {
    let day = 86_400;
    // MQE (epoch-ms ids) and v2 (`yyyyMMddHHmm_…` ids).
    for profile in [OapProfile::V10_4, OapProfile::V9_4] {
        let s = Sim::start(profile).await;
        s.constant("service_apdex", "reviews.bookinfo", 9950.0);
        let t = template();
        let r = s.analyze(&t, &[]).await;
        assert_eq!(r.phase, Phase::Successful, "{profile:?}: {r:?}");
        let meta = &r.metric_results[0].measurements[0].metadata;
        assert_eq!(meta.get("droppedPoints"), Some("0"), "{meta:?}");
        // 24 h back, far in the past, far in the future.
        for secs in [-day, -400 * day, 3650 * day] {
            s.sim.inject_fault(Fault::ShiftBuckets(secs), None);
            let r = s.analyze(&t, &[]).await;
            s.sim.clear_faults();
            assert_eq!(r.phase, Phase::Inconclusive, "{profile:?} {secs}: {r:?}");
            let msg = last_message(&r);
            assert!(
                msg.contains("5 point(s) dropped: 5 outside the requested window"),
                "{profile:?} {secs}: {msg}"
            );
            // And in the measurement's metadata, next to the window it was checked against.
            let meta = &r.metric_results[0].measurements[0].metadata;
            assert_eq!(meta.get("droppedPoints"), Some("5"), "{meta:?}");
            assert_eq!(meta.get("droppedOutsideWindow"), Some("5"), "{meta:?}");
            assert!(meta.contains_key("windowStart"), "{meta:?}");
        }
    }
}

#[tokio::test]
async fn an_unknown_oap_zone_is_an_error_never_utc() {
    let plus8 = FixedOffset::east_opt(8 * 3600).expect("zone");
    let s = Sim::start_with(OapProfile::V10_4, plus8).await;
    s.constant("service_apdex", "reviews.bookinfo", 9950.0);
    let t = template();
    assert_eq!(s.analyze(&t, &[]).await.phase, Phase::Successful);
    for zone in [None, Some("GMT+08:00".to_string())] {
        s.sim.inject_fault(Fault::TimeZone(zone.clone()), None);
        let r = s.analyze(&t, &[]).await;
        assert_eq!(r.phase, Phase::Error, "{zone:?}: {r:?}");
        assert!(
            last_message(&r).contains("--timezone"),
            "{}",
            last_message(&r)
        );
        // The zone given explicitly (`--timezone`) is used instead.
        let defaults = Defaults {
            skywalking: Some(s.url()),
            timezone: Some(plus8),
        };
        let r = s.analyze_with(&t, &[], defaults).await;
        assert_eq!(r.phase, Phase::Successful, "{zone:?}: {r:?}");
        s.sim.clear_faults();
    }
}
