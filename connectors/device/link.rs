//! A listener's connection, split in two: the connect (socket, handshake, subscriptions), which
//! runs in a task of its own, and the established session it hands over.
//!
//! [`Listener::next`](super::listener::Listener::next) must be cancel-safe: the runtime drops it
//! to serve a request or a timer and calls again. A connect awaited inside `next()` would be lost
//! half-made every time; [`Link::open`] keeps it going across cancelled calls (and while the line
//! serves other things) and hands the session over once it is made. A session that fails is
//! dropped with [`Link::close`] (in `next()`, which returns the fault) or [`Link::lose`] (in a
//! write, so the next `next()` reports it); the kit's backoff comes between the fault and the
//! next connect, which is the next [`Link::open`].

use std::future::Future;
use std::pin::Pin;

use tokio::task::JoinHandle;

use super::Fault;

type Connecting<S> = Pin<Box<dyn Future<Output = Result<S, Fault>> + Send>>;

/// A connection made by `connect` when needed: idle, connecting, or an open session `S`.
pub struct Link<S> {
    connect: Box<dyn Fn() -> Connecting<S> + Send + Sync>,
    connecting: Option<JoinHandle<Result<S, Fault>>>,
    session: Option<S>,
    /// A session lost outside `next()`, reported by the next [`Link::open`].
    lost: Option<Fault>,
}

impl<S: Send + 'static> Link<S> {
    /// An idle link whose sessions `connect` makes (connect, handshake, subscribe; bounded by
    /// the protocol's own timeout).
    pub fn new<F, Fut>(connect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, Fault>> + Send + 'static,
    {
        Link {
            connect: Box::new(move || Box::pin(connect())),
            connecting: None,
            session: None,
            lost: None,
        }
    }

    /// The open session, made first when there is none: `(session, true)` when this call
    /// finished making it (log it, hand out what the handshake brought). Cancel-safe: a connect
    /// under way goes on in its own task and the next call takes it up. `Err` when the connect
    /// failed, or a session was lost outside `next()` ([`Link::lose`]); the next call connects
    /// again.
    pub async fn open(&mut self) -> Result<(&mut S, bool), Fault> {
        if let Some(f) = self.lost.take() {
            return Err(f);
        }
        let fresh = self.session.is_none();
        if fresh {
            let task = self
                .connecting
                .get_or_insert_with(|| tokio::spawn((self.connect)()));
            let res = task.await;
            self.connecting = None;
            self.session = Some(match res {
                Ok(made) => made?,
                Err(e) => return Err(Fault::new("connect", format!("connect task: {e}"))),
            });
        }
        match self.session.as_mut() {
            Some(s) => Ok((s, fresh)),
            None => Err(Fault::new("closed", "not connected")),
        }
    }

    /// The open session, if there is one (a write never connects).
    pub fn session(&mut self) -> Option<&mut S> {
        self.session.as_mut()
    }

    /// True while a session is open.
    pub fn is_open(&self) -> bool {
        self.session.is_some()
    }

    /// Drops the session (it failed in `next()`, which returns the fault itself).
    pub fn close(&mut self) {
        self.session = None;
    }

    /// Drops a session that failed outside `next()` (during a write): the next
    /// [`Link::open`] returns `fault`, so the kit takes the devices offline and backs off.
    pub fn lose(&mut self, fault: Fault) {
        self.session = None;
        self.lost = Some(fault);
    }
}

impl<S> Drop for Link<S> {
    fn drop(&mut self) {
        // A connect under way when the connector stops is not waited for.
        if let Some(t) = &self.connecting {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
    use std::sync::Arc;
    use std::time::Duration;

    /// A link whose connect takes 1 s and fails while `fail` says so; counts its connects.
    fn link(connects: &Arc<AtomicU32>, fail: bool) -> Link<u32> {
        let connects = connects.clone();
        Link::new(move || {
            let n = connects.fetch_add(1, SeqCst) + 1;
            async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if fail {
                    Err(Fault::new("connect", format!("refused #{n}")))
                } else {
                    Ok(n)
                }
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_connect_survives_cancelled_calls_and_is_handed_over_once() {
        let connects = Arc::new(AtomicU32::new(0));
        let mut l = link(&connects, false);
        // Cancelled twice half-way: still one connect, which finishes in its own time.
        for _ in 0..2 {
            let cut = tokio::time::timeout(Duration::from_millis(400), l.open()).await;
            assert!(cut.is_err());
        }
        assert!(!l.is_open());
        let started = tokio::time::Instant::now();
        let (s, fresh) = l.open().await.unwrap();
        assert_eq!((*s, fresh), (1, true));
        assert!(started.elapsed() <= Duration::from_millis(200));
        let (s, fresh) = l.open().await.unwrap();
        assert_eq!((*s, fresh), (1, false));
        assert_eq!(connects.load(SeqCst), 1);
        assert_eq!(l.session().copied(), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_or_closed_session_connects_again() {
        let connects = Arc::new(AtomicU32::new(0));
        let mut l = link(&connects, true);
        assert_eq!(l.open().await.unwrap_err().message, "refused #1");
        assert!(!l.is_open());
        assert_eq!(l.open().await.unwrap_err().message, "refused #2");

        let mut l = link(&connects, false);
        assert_eq!(l.open().await.unwrap(), (&mut 3, true));
        l.close();
        assert!(l.session().is_none());
        assert_eq!(l.open().await.unwrap(), (&mut 4, true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_lost_in_a_write_is_reported_by_the_next_open() {
        let connects = Arc::new(AtomicU32::new(0));
        let mut l = link(&connects, false);
        l.open().await.unwrap();
        l.lose(Fault::new("io", "broken pipe"));
        assert!(!l.is_open());
        assert_eq!(l.open().await.unwrap_err().message, "broken pipe");
        assert_eq!(l.open().await.unwrap(), (&mut 2, true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connect_under_way_is_aborted_with_the_link() {
        let done = Arc::new(AtomicU32::new(0));
        let d = done.clone();
        let mut l: Link<()> = Link::new(move || {
            let d = d.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                d.fetch_add(1, SeqCst);
                Ok(())
            }
        });
        let _ = tokio::time::timeout(Duration::from_millis(100), l.open()).await;
        drop(l);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(done.load(SeqCst), 0);
    }
}
