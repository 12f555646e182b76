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
}
