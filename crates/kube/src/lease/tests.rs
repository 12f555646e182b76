use std::sync::{Arc, Mutex};

use chrono::TimeZone;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::*;
use skycanary_ports::clock::ScaledClock;
use skycanary_testkit::FakeApiServer;

const D: Duration = DEFAULT_DURATION;

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn lease(holder: Option<&str>, renewed: Option<Timestamp>, secs: Option<i32>) -> Lease {
    Lease {
        spec: Some(LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: renewed.map(MicroTime),
            acquire_time: renewed.map(MicroTime),
            lease_duration_seconds: secs,
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }),
        ..Lease::default()
    }
}

// ---- decide / next_spec ----

#[test]
fn no_lease_is_acquired_with_zero_transitions() {
    assert_eq!(decide(None, "a", ts(0), D), Decision::Acquire);
    let spec = next_spec(None, "a", ts(0), D);
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_transitions, Some(0));
    assert_eq!(spec.lease_duration_seconds, Some(15));
    assert_eq!(spec.acquire_time, Some(MicroTime(ts(0))));
    assert_eq!(spec.renew_time, Some(MicroTime(ts(0))));
}

#[test]
fn own_lease_is_renewed_keeping_acquire_time_and_transitions() {
    // Even when expired: nobody took it, so it is still ours.
    let l = lease(Some("a"), Some(ts(0)), Some(15));
    assert_eq!(decide(Some(&l), "a", ts(5), D), Decision::Renew);
    assert_eq!(decide(Some(&l), "a", ts(100), D), Decision::Renew);
    let spec = next_spec(l.spec.as_ref(), "a", ts(5), D);
    assert_eq!(spec.acquire_time, Some(MicroTime(ts(0))));
    assert_eq!(spec.renew_time, Some(MicroTime(ts(5))));
    assert_eq!(spec.lease_transitions, Some(3));
}

#[test]
fn fresh_foreign_lease_is_followed_until_strictly_past_expiry() {
    let l = lease(Some("b"), Some(ts(0)), Some(15));
    let follow = Decision::Follow {
        holder: "b".into(),
        expires_at: ts(15),
    };
    assert_eq!(decide(Some(&l), "a", ts(1), D), follow);
    // renewTime + duration == now is not yet expired.
    assert_eq!(decide(Some(&l), "a", ts(15), D), follow);
}

#[test]
fn expired_foreign_lease_is_taken_counting_a_transition() {
    let l = lease(Some("b"), Some(ts(0)), Some(15));
    assert_eq!(decide(Some(&l), "a", ts(16), D), Decision::Acquire);
    let spec = next_spec(l.spec.as_ref(), "a", ts(16), D);
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.lease_transitions, Some(4));
    assert_eq!(spec.acquire_time, Some(MicroTime(ts(16))));
}

#[test]
fn the_holders_lease_duration_wins_and_a_missing_one_uses_ours() {
    let short = lease(Some("b"), Some(ts(0)), Some(5));
    assert_eq!(decide(Some(&short), "a", ts(6), D), Decision::Acquire);
    let unset = lease(Some("b"), Some(ts(0)), None);
    assert!(matches!(
        decide(Some(&unset), "a", ts(6), D),
        Decision::Follow { .. }
    ));
    assert_eq!(decide(Some(&unset), "a", ts(16), D), Decision::Acquire);
}

#[test]
fn released_or_timeless_leases_are_free() {
    let released = lease(None, Some(ts(0)), Some(1));
    assert_eq!(decide(Some(&released), "a", ts(0), D), Decision::Acquire);
    let empty = lease(Some(""), Some(ts(0)), Some(15));
    assert_eq!(decide(Some(&empty), "a", ts(0), D), Decision::Acquire);
    let timeless = lease(Some("b"), None, Some(15));
    assert_eq!(decide(Some(&timeless), "a", ts(0), D), Decision::Acquire);
    assert_eq!(
        decide(Some(&Lease::default()), "a", ts(0), D),
        Decision::Acquire
    );
    let spec = next_spec(released.spec.as_ref(), "a", ts(0), D);
    assert_eq!(spec.lease_transitions, Some(4));
}

#[test]
fn clock_skew_below_the_tolerance_never_gives_two_leaders() {
    let timing = LeaseTiming::default();
    // The leader renewed at ts(0) by its clock and stops writing at 13s by its clock.
    let stop = timing.step_down_at(ts(0));
    assert_eq!(stop, ts(13));
    let l = lease(Some("b"), Some(ts(0)), Some(15));
    // A follower whose clock runs 1.9s ahead reads 14.9s when the leader stops: still follows.
    let ahead = add(stop, Duration::from_millis(1900));
    assert!(matches!(
        decide(Some(&l), "a", ahead, D),
        Decision::Follow { .. }
    ));
    // A holder whose clock runs ahead wrote a renewTime in our future: simply valid for longer.
    let future = lease(Some("b"), Some(ts(10)), Some(15));
    assert_eq!(
        decide(Some(&future), "a", ts(0), D),
        Decision::Follow {
            holder: "b".into(),
            expires_at: ts(25)
        }
    );
}

#[test]
fn timing_is_validated() {
    assert!(LeaseTiming::default().validate().is_ok());
    let bad = [
        LeaseTiming {
            renew_every: Duration::from_secs(14),
            ..LeaseTiming::default()
        },
        LeaseTiming {
            renew_every: Duration::ZERO,
            ..LeaseTiming::default()
        },
        LeaseTiming {
            duration: Duration::from_millis(15_500),
            ..LeaseTiming::default()
        },
    ];
    for t in bad {
        assert!(matches!(t.validate(), Err(LeaseError::Timing(_))), "{t:?}");
    }
    assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
    assert_eq!(whole_seconds(Duration::ZERO), 1);
}

// ---- against the fake API server ----

const NS: &str = "skycanary-system";
const NAME: &str = "skycanary-leader";

fn stored(fake: &FakeApiServer) -> Option<Value> {
    fake.get("coordination.k8s.io", "leases", NS, NAME)
}

fn holder(fake: &FakeApiServer) -> Option<String> {
    stored(fake)?
        .pointer("/spec/holderIdentity")?
        .as_str()
        .map(str::to_string)
}

fn lock(fake: &FakeApiServer, identity: &str) -> LeaseLock {
    LeaseLock::new(fake.client(), NS, NAME, identity)
}

/// A clock following tokio's (paused) time, shared so replicas agree.
fn clock() -> Arc<dyn Clock> {
    let origin = Utc
        .timestamp_opt(1_800_000_000, 0)
        .single()
        .unwrap_or_default();
    Arc::new(ScaledClock::new(origin, 1.0))
}

struct Replica {
    rx: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

fn start(fake: &FakeApiServer, identity: &str, clock: &Arc<dyn Clock>) -> Replica {
    let (tx, rx) = watch::channel(false);
    let (stop, stopped) = oneshot::channel::<()>();
    let elector = LeaderElector::new(lock(fake, identity), clock.clone());
    let task = tokio::spawn(elector.run(tx, async {
        let _ = stopped.await;
    }));
    Replica {
        rx,
        stop: Some(stop),
        task,
    }
}

impl Replica {
    /// Leader as far as anyone can tell: a dead replica (closed channel) writes nothing.
    fn leads(&self) -> bool {
        self.rx.has_changed().is_ok() && *self.rx.borrow()
    }

    async fn wait_for(&mut self, leader: bool) -> Duration {
        let t = tokio::time::Instant::now();
        let _ = tokio::time::timeout(Duration::from_secs(120), self.rx.wait_for(|v| *v == leader))
            .await;
        assert_eq!(*self.rx.borrow(), leader, "timed out waiting");
        t.elapsed()
    }
}

/// Records every moment at which both replicas claimed leadership.
fn watch_overlap(a: &Replica, b: &Replica) -> (Arc<Mutex<u32>>, JoinHandle<()>) {
    let overlaps = Arc::new(Mutex::new(0u32));
    let (mut ra, mut rb) = (a.rx.clone(), b.rx.clone());
    let count = overlaps.clone();
    let task = tokio::spawn(async move {
        loop {
            let more = tokio::select! {
                r = ra.changed() => r.is_ok(),
                r = rb.changed() => r.is_ok(),
            };
            let both = *ra.borrow() && *rb.borrow();
            if both && let Ok(mut n) = count.lock() {
                *n += 1;
            }
            if !more {
                break;
            }
        }
    });
    (overlaps, task)
}

fn overlaps(o: &Arc<Mutex<u32>>) -> u32 {
    o.lock().map(|n| *n).unwrap_or(u32::MAX)
}

#[tokio::test(start_paused = true)]
async fn two_replicas_elect_exactly_one_leader_and_keep_it() {
    let fake = FakeApiServer::new();
    let clock = clock();
    let mut a = start(&fake, "a", &clock);
    let b = start(&fake, "b", &clock);
    let (o, _m) = watch_overlap(&a, &b);
    a.wait_for(true).await;
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(a.leads() ^ b.leads(), "exactly one leader");
    }
    assert_eq!(overlaps(&o), 0);
    assert!(a.leads(), "no flapping: the first leader kept the lease");
    assert_eq!(holder(&fake).as_deref(), Some("a"));
    let spec = stored(&fake).and_then(|l| l.get("spec").cloned());
    assert_eq!(
        spec.as_ref().and_then(|s| s.get("leaseTransitions")),
        Some(&json!(0))
    );
    assert_eq!(
        spec.as_ref().and_then(|s| s.get("leaseDurationSeconds")),
        Some(&json!(15))
    );
}

#[tokio::test(start_paused = true)]
async fn standby_takes_over_within_the_lease_duration_when_the_leader_dies() {
    let fake = FakeApiServer::new();
    let clock = clock();
    let mut a = start(&fake, "a", &clock);
    a.wait_for(true).await;
    let mut b = start(&fake, "b", &clock);
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(!b.leads());
    // Crash: no release, the lease must expire.
    a.task.abort();
    let _ = (&mut a.task).await;
    let took = b.wait_for(true).await;
    assert!(took <= D, "took {took:?}");
    assert!(
        took >= D - Duration::from_secs(5),
        "took {took:?}: before expiry"
    );
    assert_eq!(holder(&fake).as_deref(), Some("b"));
    let transitions = stored(&fake).and_then(|l| l.pointer("/spec/leaseTransitions").cloned());
    assert_eq!(transitions, Some(json!(1)));
}

#[tokio::test(start_paused = true)]
async fn failing_renewals_step_down_before_the_lease_can_be_taken() {
    let fake = FakeApiServer::new();
    let clock = clock();
    let mut a = start(&fake, "a", &clock);
    a.wait_for(true).await;
    let renewed = stored(&fake)
        .and_then(|l| l.pointer("/spec/renewTime").cloned())
        .and_then(|v| serde_json::from_value::<MicroTime>(v).ok());
    let Some(renewed) = renewed else {
        panic!("lease not stored");
    };
    // The API stays down for both replicas.
    fake.fail_next(None, "/leases/", 1000, 500);
    let b = start(&fake, "b", &clock);
    let (o, _m) = watch_overlap(&a, &b);
    a.wait_for(false).await;
    let stepped_down = to_timestamp(clock.now());
    let expiry = add(renewed.0, D);
    assert!(stepped_down < expiry, "{stepped_down} vs {expiry}");
    assert!(
        stepped_down >= sub(expiry, Duration::from_secs(3)),
        "stepped down too early: {stepped_down}"
    );
    // Nobody can prove leadership while the API is down.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!a.leads() && !b.leads());
    assert_eq!(overlaps(&o), 0);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_renewal_still_steps_down_at_the_deadline() {
    let fake = FakeApiServer::new();
    let clock = clock();
    let mut a = start(&fake, "a", &clock);
    a.wait_for(true).await;
    fake.delay_next(None, "/leases/", 100, Duration::from_secs(3600));
    let after = a.wait_for(false).await;
    assert!(after <= D - DEFAULT_CLOCK_SKEW, "after {after:?}");
}

#[tokio::test(start_paused = true)]
async fn racing_creates_and_replaces_have_one_winner() {
    let fake = FakeApiServer::new();
    let (a, b) = (lock(&fake, "a"), lock(&fake, "b"));
    // Both read "absent" before either creates.
    fake.delay_next(Some("GET"), "/leases/", 2, Duration::from_millis(10));
    let (ra, rb) = tokio::join!(a.try_acquire_or_renew(ts(0)), b.try_acquire_or_renew(ts(0)));
    let results = [ra, rb];
    let leading = results
        .iter()
        .filter(|r| matches!(r, Ok(LeaderState::Leading { .. })))
        .count();
    let lost = results
        .iter()
        .filter(|r| {
            matches!(
                r,
                Ok(LeaderState::Following {
                    holder: None,
                    expires_at: None
                })
            )
        })
        .count();
    assert_eq!((leading, lost), (1, 1), "{results:?}");
    let posts = fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 2);

    // The winner's lease expires; both read it and PUT with the same resourceVersion.
    let winner = holder(&fake).unwrap_or_default();
    fake.delay_next(Some("GET"), "/leases/", 2, Duration::from_millis(10));
    let (ra, rb) = tokio::join!(
        a.try_acquire_or_renew(ts(20)),
        b.try_acquire_or_renew(ts(20))
    );
    let results = [ra, rb];
    let leading = results
        .iter()
        .filter(|r| matches!(r, Ok(LeaderState::Leading { .. })))
        .count();
    assert_eq!(leading, 1, "{results:?}");
    let after = stored(&fake).and_then(|l| l.get("spec").cloned());
    let transitions = after.as_ref().and_then(|s| s.get("leaseTransitions"));
    // The old holder renewing its own lease keeps the count; the other taking over adds one.
    let new_holder = holder(&fake).unwrap_or_default();
    let expected = if new_holder == winner { 0 } else { 1 };
    assert_eq!(transitions, Some(&json!(expected)));
}

#[tokio::test(start_paused = true)]
async fn lock_reports_the_holder_and_surfaces_server_errors() {
    let fake = FakeApiServer::new();
    let (a, b) = (lock(&fake, "a"), lock(&fake, "b"));
    assert!(matches!(
        a.try_acquire_or_renew(ts(0)).await,
        Ok(LeaderState::Leading { deadline }) if deadline == ts(13)
    ));
    assert_eq!(
        b.try_acquire_or_renew(ts(1)).await.ok(),
        Some(LeaderState::Following {
            holder: Some("a".into()),
            expires_at: Some(ts(15))
        })
    );
    fake.fail_next(Some("PUT"), "/leases/", 1, 500);
    assert!(matches!(
        a.try_acquire_or_renew(ts(2)).await,
        Err(LeaseError::Api(_))
    ));
    // b does not hold it: releasing is a no-op.
    assert!(matches!(b.release(ts(3)).await, Ok(false)));
    assert_eq!(holder(&fake).as_deref(), Some("a"));
    assert!(matches!(a.release(ts(3)).await, Ok(true)));
    assert_eq!(holder(&fake), None);
    assert!(matches!(
        b.try_acquire_or_renew(ts(3)).await,
        Ok(LeaderState::Leading { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_so_the_standby_takes_over_at_once() {
    let fake = FakeApiServer::new();
    let clock = clock();
    let mut a = start(&fake, "a", &clock);
    a.wait_for(true).await;
    let mut b = start(&fake, "b", &clock);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (o, _m) = watch_overlap(&a, &b);
    if let Some(stop) = a.stop.take() {
        let _ = stop.send(());
    }
    let _ = (&mut a.task).await;
    assert!(!*a.rx.borrow(), "stopped publishing before leaving");
    let took = b.wait_for(true).await;
    assert!(took <= DEFAULT_RENEW_EVERY, "took {took:?}");
    assert_eq!(holder(&fake).as_deref(), Some("b"));
    assert_eq!(overlaps(&o), 0);
}
