//! Waits that end at their deadline, however busy the channel they wait on.
//!
//! `tokio::time::timeout_at` polls the wrapped future before its timer: a receiver that always
//! has a message ready (a device publishing faster than a test reads) never times out, and a
//! loop that skips unwanted messages until a deadline would run past it for as long as the
//! flood lasts. [`before`] checks the clock first, so every harness loop built on it
//! ([`super::Subscriber::collect_until`], [`super::Subscriber::next_where`],
//! [`super::connector::ConnectorRun::batch`] and its siblings) returns by its deadline.

use std::future::Future;

use tokio::time::Instant;

/// The output of `f` if it completes before `deadline`; `None` once `deadline` has passed,
/// even when `f` would be ready at once.
pub async fn before<F: Future>(deadline: Instant, f: F) -> Option<F::Output> {
    if Instant::now() >= deadline {
        return None;
    }
    tokio::time::timeout_at(deadline, f).await.ok()
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use serde_json::Value;
    use tokio::sync::mpsc;

    use super::super::{Msg, Subscriber};
    use super::*;

    /// A subscriber with far more messages waiting than can be read before the deadline: every
    /// receive is ready at once, as under a device publishing faster than the test reads.
    /// The sender is returned so that the channel stays open (a closed one would end the wait
    /// by itself).
    fn flooded(n: usize) -> (Subscriber, mpsc::UnboundedSender<Msg>) {
        let (tx, rx) = mpsc::unbounded_channel();
        for i in 0..n {
            let m = Msg {
                topic: format!("flood/{i}"),
                json: Value::Null,
                retain: false,
            };
            tx.send(m).expect("receiver alive");
        }
        (Subscriber::from_channel(rx), tx)
    }

    /// A check that takes a millisecond (as scanning thousands of messages does) and counts
    /// how often it runs after `deadline`.
    fn slow_check(deadline: Instant, late: &Cell<u32>) {
        std::thread::sleep(Duration::from_millis(1));
        if Instant::now() > deadline {
            late.set(late.get() + 1);
        }
    }

    #[tokio::test]
    async fn collect_until_stops_reading_at_its_deadline() {
        let (mut sub, _tx) = flooded(20_000);
        let within = Duration::from_millis(150);
        let deadline = Instant::now() + within;
        let late = Cell::new(0);
        let held = sub
            .collect_until(within, |_| {
                slow_check(deadline, &late);
                false
            })
            .await;
        assert!(!held);
        assert!(Instant::now() >= deadline, "returned before its deadline");
        // The loop may look once more after the deadline to answer; it must not keep reading
        // the messages that are still ready.
        assert!(late.get() <= 2, "{} checks after the deadline", late.get());
        assert!(sub.seen.len() < 20_000, "read the whole flood");
    }

    #[tokio::test]
    async fn collect_until_still_sees_what_it_waits_for() {
        let (mut sub, _tx) = flooded(100);
        assert!(
            sub.collect_until(Duration::from_secs(5), |s| s.len() >= 10)
                .await
        );
        assert_eq!(sub.seen.len(), 10);
    }

    #[tokio::test]
    async fn next_where_gives_up_at_its_deadline() {
        let (mut sub, _tx) = flooded(20_000);
        let within = Duration::from_millis(150);
        let deadline = Instant::now() + within;
        let late = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = late.clone();
        let run = tokio::spawn(async move {
            sub.next_where(within, move |_| {
                std::thread::sleep(Duration::from_millis(1));
                if Instant::now() > deadline {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                false
            })
            .await;
        });
        let res = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("next_where read the whole flood");
        assert!(
            res.unwrap_err().is_panic(),
            "next_where gives up by panicking"
        );
        let late = late.load(std::sync::atomic::Ordering::Relaxed);
        assert!(late <= 2, "{late} checks after the deadline");
    }

    #[tokio::test]
    async fn before_is_none_once_the_deadline_passed() {
        let past = Instant::now() - Duration::from_millis(1);
        assert_eq!(before(past, std::future::ready(1)).await, None);
        let later = Instant::now() + Duration::from_secs(1);
        assert_eq!(before(later, std::future::ready(1)).await, Some(1));
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(before(soon, std::future::pending::<()>()).await, None);
    }
}
