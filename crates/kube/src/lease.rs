//! Leader election over a `coordination.k8s.io/v1` Lease: in cluster mode several replicas
//! run, but only the leader may write (DESIGN §6).
//!
//! Why not `kube-lease-manager`: it claims the Lease with server-side apply, whose field
//! ownership our fake API server does not emulate, so its races could not be tested here. This
//! loop uses GET → POST/PUT guarded by `resourceVersion`, which the fake reproduces exactly
//! (409 on a stale write), and takes an injected [`Clock`] so tests run in paused time.
//!
//! Timing and clock skew: a follower takes the Lease once `renewTime + leaseDurationSeconds <
//! now` by its own clock. The leader stops publishing `true` at `renewTime + duration −
//! clock_skew` by *its* clock, where `renewTime` is taken before the request is sent. So as long
//! as the replicas' clocks differ by less than `clock_skew`, the old leader has stopped before
//! anybody can take over. Larger skew can briefly give two leaders; keep nodes on NTP.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use skycanary_ports::clock::Clock;

/// How long a Lease stays valid after a renewal (client-go's default too).
pub const DEFAULT_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews and followers poll: three tries fit into one duration.
pub const DEFAULT_RENEW_EVERY: Duration = Duration::from_secs(5);
/// Clock difference between replicas that election tolerates (see the module docs).
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(2);

/// Failures of a Lease round.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The API server failed or refused a request (other than a lost race).
    #[error("lease request failed: {0}")]
    Api(#[from] kube::Error),
    /// The timing cannot keep one leader (e.g. renewing no more often than the Lease lasts).
    #[error("invalid lease timing: {0}")]
    Timing(String),
}

/// What to do with the Lease as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds a valid Lease: take it.
    Acquire,
    /// We hold it: extend it.
    Renew,
    /// Someone else holds a valid Lease until `expires_at`.
    Follow {
        /// The holder's identity.
        holder: String,
        /// `renewTime + leaseDurationSeconds`.
        expires_at: Timestamp,
    },
}

/// Decides from the Lease as read (`None`: it does not exist). Expired means
/// `renewTime + leaseDurationSeconds < now` (strictly); a Lease without holder is free, and
/// one without any time cannot prove its holder alive. `duration` stands in for a missing
/// `leaseDurationSeconds`.
pub fn decide(
    current: Option<&Lease>,
    identity: &str,
    now: Timestamp,
    duration: Duration,
) -> Decision {
    let Some(spec) = current.and_then(|l| l.spec.as_ref()) else {
        return Decision::Acquire;
    };
    let holder = match spec.holder_identity.as_deref() {
        None | Some("") => return Decision::Acquire,
        Some(h) => h,
    };
    if holder == identity {
        return Decision::Renew;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return Decision::Acquire;
    };
    let lasts = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .filter(|s| *s > 0)
        .map_or(duration, Duration::from_secs);
    let expires_at = add(renewed.0, lasts);
    if expires_at < now {
        Decision::Acquire
    } else {
        Decision::Follow {
            holder: holder.to_string(),
            expires_at,
        }
    }
}

/// The spec to write when acquiring or renewing: a renewal keeps `acquireTime` and
/// `leaseTransitions`; taking over from anyone else (or a released Lease) counts a transition.
pub fn next_spec(
    current: Option<&LeaseSpec>,
    identity: &str,
    now: Timestamp,
    duration: Duration,
) -> LeaseSpec {
    let renewing = current.and_then(|s| s.holder_identity.as_deref()) == Some(identity);
    let (acquired, transitions) = match current {
        Some(s) if renewing => (
            s.acquire_time.clone().unwrap_or(MicroTime(now)),
            s.lease_transitions.unwrap_or(0),
        ),
        Some(s) => (
            MicroTime(now),
            s.lease_transitions.unwrap_or(0).saturating_add(1),
        ),
        None => (MicroTime(now), 0),
    };
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(whole_seconds(duration)),
        acquire_time: Some(acquired),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..current.cloned().unwrap_or_default()
    }
}

/// Election timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// Validity of a renewal (written as `leaseDurationSeconds`, rounded up to seconds).
    pub duration: Duration,
    /// Interval between renewals (leader) and polls (followers).
    pub renew_every: Duration,
    /// Tolerated clock difference between replicas; the leader steps down this much early.
    pub clock_skew: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            duration: DEFAULT_DURATION,
            renew_every: DEFAULT_RENEW_EVERY,
            clock_skew: DEFAULT_CLOCK_SKEW,
        }
    }
}

impl LeaseTiming {
    /// Refuses timings where the leader could not renew at least once before stepping down.
    pub fn validate(&self) -> Result<(), LeaseError> {
        if self.duration < Duration::from_secs(1) || self.duration.subsec_nanos() != 0 {
            return Err(LeaseError::Timing(format!(
                "duration {:?} must be whole seconds, at least 1s (leaseDurationSeconds)",
                self.duration
            )));
        }
        if self.renew_every.is_zero() {
            return Err(LeaseError::Timing("renew_every must be positive".into()));
        }
        if self.renew_every.saturating_add(self.clock_skew) >= self.duration {
            return Err(LeaseError::Timing(format!(
                "renew_every {:?} + clock_skew {:?} must be shorter than duration {:?}",
                self.renew_every, self.clock_skew, self.duration
            )));
        }
        Ok(())
    }

    /// When a leader that renewed at `renewed_at` must stop writing.
    pub fn step_down_at(&self, renewed_at: Timestamp) -> Timestamp {
        sub(add(renewed_at, self.duration), self.clock_skew)
    }
}

/// Outcome of one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderState {
    /// We hold the Lease; stop writing at `deadline` unless renewed again.
    Leading {
        /// [`LeaseTiming::step_down_at`] of this renewal.
        deadline: Timestamp,
    },
    /// Someone else holds it, or won a race (then holder and expiry are unknown until the next
    /// read).
    Following {
        /// The holder, when read.
        holder: Option<String>,
        /// When the holder's Lease runs out, when read.
        expires_at: Option<Timestamp>,
    },
}

/// One named Lease, seen by one candidate.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    namespace: String,
    identity: String,
    timing: LeaseTiming,
}

impl std::fmt::Debug for LeaseLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseLock")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("identity", &self.identity)
            .field("timing", &self.timing)
            .finish()
    }
}

impl LeaseLock {
    /// The Lease `namespace/name` for candidate `identity` (unique per replica, e.g. the pod
    /// name), with [`LeaseTiming::default`].
    pub fn new(
        client: Client,
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        let namespace = namespace.into();
        LeaseLock {
            api: Api::namespaced(client, &namespace),
            name: name.into(),
            namespace,
            identity: identity.into(),
            timing: LeaseTiming::default(),
        }
    }

    /// Replaces the timing, after [`LeaseTiming::validate`].
    pub fn with_timing(mut self, timing: LeaseTiming) -> Result<Self, LeaseError> {
        timing.validate()?;
        self.timing = timing;
        Ok(self)
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The timing in use.
    pub fn timing(&self) -> LeaseTiming {
        self.timing
    }

    /// One round: GET, [`decide`], then POST (absent) or PUT guarded by the read
    /// `resourceVersion`. A 409 means another candidate wrote first, so we follow.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<LeaderState, LeaseError> {
        // MicroTime keeps microseconds; truncating keeps our deadline identical to what others read.
        let now = truncate_micros(now);
        let current = self.api.get_opt(&self.name).await?;
        match decide(current.as_ref(), &self.identity, now, self.timing.duration) {
            Decision::Follow { holder, expires_at } => Ok(LeaderState::Following {
                holder: Some(holder),
                expires_at: Some(expires_at),
            }),
            Decision::Acquire | Decision::Renew => {
                let spec = next_spec(
                    current.as_ref().and_then(|l| l.spec.as_ref()),
                    &self.identity,
                    now,
                    self.timing.duration,
                );
                let written = match current {
                    None => {
                        let lease = Lease {
                            metadata: ObjectMeta {
                                name: Some(self.name.clone()),
                                namespace: Some(self.namespace.clone()),
                                ..ObjectMeta::default()
                            },
                            spec: Some(spec),
                        };
                        self.api.create(&PostParams::default(), &lease).await
                    }
                    Some(mut lease) => {
                        lease.spec = Some(spec);
                        self.api
                            .replace(&self.name, &PostParams::default(), &lease)
                            .await
                    }
                };
                match written {
                    Ok(_) => Ok(LeaderState::Leading {
                        deadline: self.timing.step_down_at(now),
                    }),
                    // 409: Conflict on PUT, AlreadyExists on POST.
                    Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => {
                        Ok(LeaderState::Following {
                            holder: None,
                            expires_at: None,
                        })
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Gives the Lease up if we hold it (clears the holder, `leaseDurationSeconds: 1`), so a
    /// standby takes over at its next poll instead of waiting for expiry. `Ok(false)` when we
    /// did not hold it or someone changed it meanwhile.
    pub async fn release(&self, now: Timestamp) -> Result<bool, LeaseError> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(false);
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(false);
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.acquire_time = None;
        spec.renew_time = Some(MicroTime(truncate_micros(now)));
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Runs [`LeaseLock`] rounds and publishes whether this replica may write.
pub struct LeaderElector {
    lock: LeaseLock,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

/// Never wake sooner than this after a round, so a confused clock cannot spin the loop.
const MIN_WAIT: Duration = Duration::from_millis(10);
/// A follower polls this long after the holder's expiry, so it takes over at once.
const AFTER_EXPIRY: Duration = Duration::from_millis(1);

impl LeaderElector {
    /// An elector for `lock`, reading time from `clock` (Lease times are wall-clock times).
    pub fn new(lock: LeaseLock, clock: Arc<dyn Clock>) -> Self {
        LeaderElector { lock, clock }
    }

    fn now(&self) -> Timestamp {
        to_timestamp(self.clock.now())
    }

    /// Loops until `shutdown` resolves: a round every `renew_every` (a follower also right
    /// after the holder's expiry). Publishes `true` after a successful acquire or renew, and
    /// `false` as soon as we follow, or at the step-down deadline when renewals keep failing
    /// or hang (a round never outlasts the deadline). On shutdown it publishes `false` first,
    /// then releases the Lease.
    pub async fn run(self, tx: watch::Sender<bool>, shutdown: impl Future<Output = ()> + Send) {
        let mut shutdown = std::pin::pin!(shutdown);
        let timing = self.lock.timing;
        let identity = self.lock.identity.clone();
        // Some while we publish `true`: when we must stop.
        let mut deadline: Option<Timestamp> = None;
        loop {
            let started = self.now();
            self.check_deadline(&tx, &mut deadline, started);
            let mut bound = add(started, timing.renew_every);
            if let Some(d) = deadline {
                bound = bound.min(d);
            }
            let outcome = tokio::select! {
                biased;
                () = &mut shutdown => break,
                r = self.lock.try_acquire_or_renew(started) => Some(r),
                () = self.clock.sleep_until(to_chrono(bound)) => None,
            };
            let mut wake = add(started, timing.renew_every);
            match outcome {
                Some(Ok(LeaderState::Leading { deadline: d })) => {
                    deadline = Some(d);
                    if publish(&tx, true) {
                        tracing::info!(%identity, lease = %self.lock.name, "became leader");
                    }
                }
                Some(Ok(LeaderState::Following { holder, expires_at })) => {
                    deadline = None;
                    if publish(&tx, false) {
                        tracing::warn!(%identity, ?holder, "lost leadership");
                    }
                    if let Some(e) = expires_at {
                        wake = wake.min(add(e, AFTER_EXPIRY));
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(%identity, error = %e, "lease round failed");
                }
                None => {
                    tracing::warn!(%identity, "lease round timed out");
                }
            }
            let now = self.now();
            self.check_deadline(&tx, &mut deadline, now);
            if let Some(d) = deadline {
                wake = wake.min(d);
            }
            wake = wake.max(add(now, MIN_WAIT));
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = self.clock.sleep_until(to_chrono(wake)) => {}
            }
        }
        // Stop writing before giving the Lease away.
        publish(&tx, false);
        let now = self.now();
        let bound = add(now, timing.renew_every);
        tokio::select! {
            r = self.lock.release(now) => match r {
                Ok(true) => tracing::info!(%identity, "released lease"),
                Ok(false) => {}
                Err(e) => tracing::warn!(%identity, error = %e, "releasing lease failed"),
            },
            () = self.clock.sleep_until(to_chrono(bound)) => {
                tracing::warn!(%identity, "releasing lease timed out");
            }
        }
    }

    /// Publishes `false` once `now` reaches the step-down deadline.
    fn check_deadline(
        &self,
        tx: &watch::Sender<bool>,
        deadline: &mut Option<Timestamp>,
        now: Timestamp,
    ) {
        if deadline.is_some_and(|d| now >= d) {
            *deadline = None;
            publish(tx, false);
            tracing::warn!(identity = %self.lock.identity, "lease not renewed in time; stepped down");
        }
    }
}

/// Sets the value; true when it changed (receivers are woken only then).
fn publish(tx: &watch::Sender<bool>, leader: bool) -> bool {
    tx.send_if_modified(|v| {
        let changed = *v != leader;
        *v = leader;
        changed
    })
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    t.saturating_add(d).unwrap_or(Timestamp::MAX)
}

fn sub(t: Timestamp, d: Duration) -> Timestamp {
    let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    t.saturating_sub(d).unwrap_or(Timestamp::MIN)
}

fn whole_seconds(d: Duration) -> i32 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
}

fn truncate_micros(t: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t)
}

fn to_timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp::from_microsecond(t.timestamp_micros()).unwrap_or(if t.timestamp() < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

fn to_chrono(t: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.as_microsecond()).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests;
