//! The one capped exponential backoff of the gateway: device retries, line restarts after a
//! panic, connector restarts, MQTT reconnects and remote-config retries all wait with it. A
//! leaf module: core and connectors alike use it.

use std::time::Duration;

/// `base · 2^(failures-1)`, capped at `max`; [`Backoff::reset`] after a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `base` and never longer than `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            failures: 0,
        }
    }

    /// Counts a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.current()
    }

    /// The wait after the failures counted so far (zero before the first).
    pub fn current(&self) -> Duration {
        self.after(self.failures)
    }

    /// The wait after `failures` consecutive failures (zero for none).
    pub const fn after(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let shift = if failures - 1 < 20 { failures - 1 } else { 20 };
        let d = self.base.saturating_mul(1 << shift);
        if d.as_nanos() > self.max.as_nanos() {
            self.max
        } else {
            d
        }
    }

    /// Failures counted since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Forgets the failures (after a success).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(b.current(), Duration::ZERO);
        let got: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 30, 30]);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.current(), Duration::from_secs(30));
        b.reset();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }
}
