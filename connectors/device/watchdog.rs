//! A connection's liveness, for listeners whose server can vanish without closing the
//! connection (a process that lost its hardware, a server restart that leaves the session up):
//! anything that arrives counts as life ([`Watchdog::alive`]); after a silence the watchdog
//! either asks for a sign of life (a ping: [`Alarm::Probe`]) and gives up when none comes in
//! time, or gives up at once ([`Alarm::Dead`]). The listener then fails `next()` and the kit
//! reconnects with backoff. Z-Wave pings a quiet server; OPC-UA subscriptions, whose server
//! sends keep-alives by itself, give up after three keep-alive periods.

use std::time::Duration;

use tokio::time::Instant;

/// What a silence means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alarm {
    /// Send a probe (a ping) now; its answer, or anything else, is awaited for the probe time.
    Probe,
    /// Silent too long (after a probe, if there was one): the connection is gone.
    Dead,
}

/// The deadline of a connection's next sign of life.
#[derive(Debug, Clone)]
pub struct Watchdog {
    quiet: Duration,
    probe: Option<Duration>,
    at: Instant,
    probing: bool,
}

impl Watchdog {
    /// Gives up after `silence` without a sign of life.
    pub fn new(silence: Duration) -> Self {
        Watchdog {
            quiet: silence,
            probe: None,
            at: Instant::now() + silence,
            probing: false,
        }
    }

    /// Probes after `quiet` without a sign of life, and gives up when nothing arrives within
    /// `answer` of the probe.
    pub fn probing(quiet: Duration, answer: Duration) -> Self {
        Watchdog {
            probe: Some(answer),
            ..Watchdog::new(quiet)
        }
    }

    /// The silence after which it fires (the probe's, or the only one).
    pub fn silence(&self) -> Duration {
        self.quiet
    }

    /// Something arrived: the connection lives; the silence starts again.
    pub fn alive(&mut self) {
        self.probing = false;
        self.at = Instant::now() + self.quiet;
    }

    /// Waits for the silence to run out: [`Alarm::Probe`] (the wait for the probe's answer
    /// starts) or [`Alarm::Dead`]. Cancel-safe: nothing changes until it returns.
    pub async fn expired(&mut self) -> Alarm {
        tokio::time::sleep_until(self.at).await;
        match self.probe {
            Some(answer) if !self.probing => {
                self.probing = true;
                self.at = Instant::now() + answer;
                Alarm::Probe
            }
            _ => Alarm::Dead,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silence_without_a_probe_is_death() {
        let start = Instant::now();
        let mut w = Watchdog::new(Duration::from_secs(3));
        tokio::time::sleep(Duration::from_secs(2)).await;
        w.alive();
        assert_eq!(w.expired().await, Alarm::Dead);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(w.silence(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_is_probed_then_given_up() {
        let start = Instant::now();
        let mut w = Watchdog::probing(Duration::from_secs(10), Duration::from_secs(2));
        assert_eq!(w.expired().await, Alarm::Probe);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        // The answer came: quiet again for the full 10 s, then a new probe.
        w.alive();
        assert_eq!(w.expired().await, Alarm::Probe);
        assert_eq!(start.elapsed(), Duration::from_secs(20));
        // No answer within 2 s: dead.
        assert_eq!(w.expired().await, Alarm::Dead);
        assert_eq!(start.elapsed(), Duration::from_secs(22));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_wait_changes_nothing() {
        let start = Instant::now();
        let mut w = Watchdog::probing(Duration::from_secs(10), Duration::from_secs(2));
        let cut = tokio::time::timeout(Duration::from_secs(4), w.expired()).await;
        assert!(cut.is_err());
        assert_eq!(w.expired().await, Alarm::Probe);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }
}
