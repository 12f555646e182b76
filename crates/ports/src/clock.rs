//! Injected clocks: the system clock, and a scaled clock for trying templates against the
//! simulator faster than real time (both the runner and the simulator read the same clock, so
//! the buckets they agree on stay consistent).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A source of time that can also wait.
pub trait Clock: Send + Sync {
    /// Current time.
    fn now(&self) -> DateTime<Utc>;
    /// Waits until `t` (returns at once when `t` is past).
    fn sleep_until(&self, t: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Real time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn sleep_until(&self, t: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let wait = (t - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// Virtual time running `factor` times faster than real time from a starting instant.
#[derive(Debug, Clone, Copy)]
pub struct ScaledClock {
    origin_real: tokio::time::Instant,
    origin: DateTime<Utc>,
    factor: f64,
}

impl ScaledClock {
    /// Starts virtual time at `origin`, advancing `factor` times faster than real time.
    pub fn new(origin: DateTime<Utc>, factor: f64) -> Self {
        ScaledClock {
            origin_real: tokio::time::Instant::now(),
            origin,
            factor: if factor.is_finite() && factor > 0.0 {
                factor
            } else {
                1.0
            },
        }
    }
}

impl Clock for ScaledClock {
    fn now(&self) -> DateTime<Utc> {
        let real = self.origin_real.elapsed().as_secs_f64() * self.factor;
        self.origin + chrono::Duration::microseconds((real * 1e6) as i64)
    }
    fn sleep_until(&self, t: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let virtual_wait = (t - self.now()).to_std().unwrap_or(Duration::ZERO);
        Box::pin(tokio::time::sleep(virtual_wait.div_f64(self.factor)))
    }
}

/// Virtual time running `factor` times faster than the wall clock from a shared `origin`:
/// `now = origin + (wall_now − origin) × factor`. Unlike [`ScaledClock`] it depends only on
/// the wall clock, so separate processes given the same origin and factor agree on the time
/// (the demo's simulator and the daemon it starts as a child process).
#[derive(Debug, Clone, Copy)]
pub struct WallScaledClock {
    origin: DateTime<Utc>,
    factor: f64,
}

impl WallScaledClock {
    /// Virtual time equals wall time at `origin` and runs `factor` times faster from there
    /// (a factor that is not finite and positive means 1).
    pub fn new(origin: DateTime<Utc>, factor: f64) -> Self {
        WallScaledClock {
            origin,
            factor: if factor.is_finite() && factor > 0.0 {
                factor
            } else {
                1.0
            },
        }
    }

    /// The virtual time at wall-clock instant `wall`.
    pub fn at(&self, wall: DateTime<Utc>) -> DateTime<Utc> {
        let real = (wall - self.origin).num_microseconds().unwrap_or(i64::MAX) as f64;
        self.origin + chrono::Duration::microseconds((real * self.factor) as i64)
    }

    /// The speed-up factor.
    pub fn factor(&self) -> f64 {
        self.factor
    }
}

impl Clock for WallScaledClock {
    fn now(&self) -> DateTime<Utc> {
        self.at(Utc::now())
    }
    fn sleep_until(&self, t: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let virtual_wait = (t - self.now()).to_std().unwrap_or(Duration::ZERO);
        Box::pin(tokio::time::sleep(virtual_wait.div_f64(self.factor)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn scaled_clock_runs_faster() {
        let origin = Utc::now();
        let c = ScaledClock::new(origin, 60.0);
        let target = origin + chrono::Duration::seconds(60);
        c.sleep_until(target).await;
        assert!(c.now() >= target);
        assert!(c.now() < target + chrono::Duration::seconds(2));
    }

    #[test]
    fn wall_scaled_clocks_with_one_origin_agree() {
        let origin = Utc::now() - chrono::Duration::seconds(10);
        let a = WallScaledClock::new(origin, 30.0);
        let b = WallScaledClock::new(origin, 30.0);
        let wall = origin + chrono::Duration::seconds(2);
        assert_eq!(a.at(wall), origin + chrono::Duration::seconds(60));
        assert_eq!(a.at(wall), b.at(wall));
        assert_eq!(a.at(origin), origin);
        assert_eq!(WallScaledClock::new(origin, f64::NAN).factor(), 1.0);
        assert_eq!(WallScaledClock::new(origin, -2.0).factor(), 1.0);
        // Ten wall seconds have passed: about five virtual minutes.
        let now = a.now();
        assert!(now >= origin + chrono::Duration::seconds(300), "{now}");
    }

    #[tokio::test]
    async fn wall_scaled_clock_sleeps_scaled() {
        let c = WallScaledClock::new(Utc::now(), 600.0);
        let target = c.now() + chrono::Duration::seconds(30);
        c.sleep_until(target).await;
        // The wall clock and tokio's monotonic clock may differ by a hair.
        assert!(c.now() >= target - chrono::Duration::seconds(1));
    }
}
