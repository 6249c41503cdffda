//! When an MQTT connection's queued publishes wait for more room in the in-flight window
//! rather than filling the little there is: the policy of the session driver's link task
//! ([`super::session`]), kept apart so that it can be tested on its own.

use std::time::Duration;

use tokio::time::Instant;

/// How long queued publishes wait at most for more room in the in-flight window (see
/// [`Hold`]).
const HOLD: Duration = Duration::from_millis(1);

/// When queued publishes wait for more room in the in-flight window rather than filling the
/// little there is.
///
/// With the window full, PUBACKs come back a few at a time, and writing each time some are
/// back makes many small writes: a system call, a segment and a wake-up of both ends each.
/// Waiting up to [`HOLD`] for a quarter of the window makes them fewer and larger, at the cost
/// of that much latency. A broker that leaves Nagle's algorithm on (mosquitto does) sends the
/// first PUBACK after a burst at once and holds the next ones until our kernel acknowledges
/// that segment, which it delays while we send nothing; a write of ours carries the
/// acknowledgement. So the first PUBACK after a large write is answered at once, and a wait
/// is never longer than [`HOLD`].
///
/// A wait can be in vain: no more PUBACKs came (the broker held them back, or the connection
/// is the bottleneck, sending a backlog), and the window stood still. Each wait in vain in a
/// row doubles the writes that do not wait after it ([`MIN_SKIP`] to [`MAX_SKIP`]); a wait
/// that got its room starts again from the least. Saturated, the connection then waits about
/// once per [`MAX_SKIP`] writes.
#[derive(Debug)]
pub(super) struct Hold {
    /// When the current wait ends.
    pub(super) until: Option<Instant>,
    /// The last write was a large one: its first PUBACK is answered at once.
    after_large: bool,
    /// Writes left that do not wait.
    skip: u32,
    /// Writes that do not wait after the next wait in vain.
    vain: u32,
}

/// Writes that do not wait after a first wait in vain.
const MIN_SKIP: u32 = 16;
/// Writes that do not wait after many waits in vain in a row.
const MAX_SKIP: u32 = 8192;

impl Default for Hold {
    fn default() -> Self {
        Hold {
            until: None,
            after_large: false,
            skip: 0,
            vain: MIN_SKIP,
        }
    }
}

impl Hold {
    /// Whether queued publishes wait now (`window` and `in_flight` of the connection,
    /// `queued` publishes waiting); starts a wait, or ends one that is over. Never when
    /// closing or when everything queued fits.
    pub(super) fn wait(
        &mut self,
        window: usize,
        in_flight: usize,
        queued: usize,
        closing: bool,
    ) -> bool {
        let room = window.saturating_sub(in_flight);
        if closing || room >= queued || room >= Self::large(window) {
            if self.until.take().is_some() {
                // Not in vain: PUBACKs came while waiting.
                self.vain = MIN_SKIP;
            }
            return false;
        }
        if room == 0 {
            // Nothing could be written; the next PUBACK decides.
            self.until = None;
            return true;
        }
        if self.after_large || self.skip > 0 {
            return false;
        }
        let now = Instant::now();
        match self.until {
            None => {
                self.until = Some(now + HOLD);
                true
            }
            Some(t) if now < t => true,
            Some(_) => {
                self.until = None;
                self.skip = self.vain;
                self.vain = (self.vain * 2).min(MAX_SKIP);
                false
            }
        }
    }

    /// Notes a write of `n` publishes.
    pub(super) fn wrote(&mut self, n: usize, window: usize) {
        self.until = None;
        self.after_large = n >= Self::large(window);
        self.skip = self.skip.saturating_sub(1);
    }

    /// A large write: a quarter of the window.
    fn large(window: usize) -> usize {
        window.div_ceil(4).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: usize = 100;

    /// Everything queued fits, the room is large, or the connection closes: no wait.
    #[tokio::test(start_paused = true)]
    async fn no_wait_when_it_fits_is_large_or_closing() {
        let mut h = Hold::default();
        assert!(!h.wait(WINDOW, 95, 5, false), "all five fit");
        assert!(!h.wait(WINDOW, 75, 200, false), "a quarter is free");
        assert!(!h.wait(WINDOW, 99, 200, true), "closing");
        assert!(h.until.is_none());
    }

    /// A full window waits for the next PUBACK without a deadline.
    #[tokio::test(start_paused = true)]
    async fn a_full_window_waits_without_a_deadline() {
        let mut h = Hold::default();
        assert!(h.wait(WINDOW, 100, 10, false));
        assert!(h.until.is_none());
    }

    /// A little room waits at most `HOLD`, then writes; a wait in vain lets the next
    /// `MIN_SKIP` writes go at once, the next one in a row twice as many.
    #[tokio::test(start_paused = true)]
    async fn waits_in_vain_back_off() {
        let mut h = Hold::default();
        assert!(h.wait(WINDOW, 95, 50, false));
        let until = h.until.expect("a deadline");
        assert_eq!(until - Instant::now(), HOLD);
        tokio::time::advance(HOLD / 2).await;
        assert!(h.wait(WINDOW, 95, 50, false), "still waiting");
        tokio::time::advance(HOLD).await;
        assert!(!h.wait(WINDOW, 95, 50, false), "over: write");
        h.wrote(5, WINDOW);
        for _ in 1..MIN_SKIP {
            assert!(!h.wait(WINDOW, 95, 50, false));
            h.wrote(5, WINDOW);
        }
        assert!(h.wait(WINDOW, 95, 50, false), "waits again");
        tokio::time::advance(HOLD).await;
        assert!(!h.wait(WINDOW, 95, 50, false));
        h.wrote(5, WINDOW);
        let mut at_once = 1;
        while !h.wait(WINDOW, 95, 50, false) {
            h.wrote(5, WINDOW);
            at_once += 1;
        }
        assert_eq!(at_once, 2 * MIN_SKIP);
    }

    /// A wait that got its room starts the back-off again from the least.
    #[tokio::test(start_paused = true)]
    async fn a_wait_that_got_room_resets_the_back_off() {
        let mut h = Hold::default();
        for _ in 0..12 {
            assert!(h.wait(WINDOW, 95, 50, false));
            tokio::time::advance(HOLD).await;
            assert!(!h.wait(WINDOW, 95, 50, false));
            h.wrote(5, WINDOW);
            while !h.wait(WINDOW, 95, 50, false) {
                h.wrote(5, WINDOW);
            }
        }
        assert_eq!(h.vain, MAX_SKIP, "doubled up to the most");
        // PUBACKs come while waiting: a quarter is free.
        assert!(!h.wait(WINDOW, 70, 50, false));
        assert_eq!(h.vain, MIN_SKIP);
    }

    /// The first PUBACK after a large write is answered at once (it releases the broker's
    /// next PUBACKs); after a small write, a little room waits.
    #[tokio::test(start_paused = true)]
    async fn the_first_puback_after_a_large_write_is_answered_at_once() {
        let mut h = Hold::default();
        h.wrote(40, WINDOW);
        assert!(!h.wait(WINDOW, 99, 50, false));
        h.wrote(1, WINDOW);
        assert!(h.wait(WINDOW, 99, 50, false));
    }
}
