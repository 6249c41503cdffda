//! Request and reply on a listener's connection while its stream flows: a write sends a request
//! and waits for the reply that carries its id, and the messages that arrive meanwhile are held
//! for [`Listener::next`](super::listener::Listener::next) instead of being lost or mapped out of
//! turn.
//!
//! The protocol tells what arrives ([`Exchange::recv`]: a reply with its request id, a message of
//! the stream, or nothing of use); [`Replies::wait`] bounds the whole wait by one timeout, matches
//! the id, and holds the messages, at most a fixed number (a burst beyond is dropped, counted as
//! `dropped` and logged once per wait: a listener cannot slow its source down). Writes are served
//! one at a time, so one request waits at a time. Z-Wave (`node.set_value` answered by a
//! `result` frame) and MQTT (a publish answered by its PUBACK, whose packet id is known only once
//! the request went out: [`Incoming::Sent`]) use it; so can any listener whose writes are
//! answered on the stream.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::Fault;
use crate::ConnectorContext;
use osgate_core::status::ConnectorHealth;

/// What one read of the connection brought, as a waiting request sees it.
#[derive(Debug, PartialEq)]
pub enum Incoming<K, R, M> {
    /// The reply to the request with id `K`.
    Reply(K, R),
    /// The request went out under id `K`, for transports that number requests themselves (an
    /// MQTT packet id); the first one names the reply awaited when [`Replies::wait`] was given
    /// no id.
    Sent(K),
    /// A message of the stream: held for `next()`.
    Msg(M),
    /// Nothing a request or `next()` needs (a keep-alive, an event of no interest).
    Skip,
}

/// A connection as a waiting request reads it: the protocol sorts what arrives.
pub trait Exchange: Send {
    /// A request id (`"w12"`, a packet id).
    type Id: PartialEq + Send;
    /// A reply, as the protocol wants it back.
    type Reply: Send;
    /// A message of the stream.
    type Msg: Send;

    /// Reads what arrives next. `Err` when the connection failed: the wait ends with
    /// [`ReplyError::Lost`].
    fn recv(&mut self) -> impl Future<Output = Result<Received<Self>, Fault>> + Send;
}

/// What [`Exchange::recv`] of `X` brings.
pub type Received<X> = Incoming<<X as Exchange>::Id, <X as Exchange>::Reply, <X as Exchange>::Msg>;

/// Why no reply came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// None within the limit (the connection may still be fine).
    Timeout(Duration),
    /// The connection failed while the request waited.
    Lost(Fault),
}

/// Most messages held by default while a request waits (a few seconds of a busy network).
pub const HELD: usize = 1024;

/// The messages held for `next()` while requests wait, and the ids of those requests.
pub struct Replies<M> {
    held: VecDeque<M>,
    max: usize,
    next_id: u64,
    health: Arc<ConnectorHealth>,
    connector: Arc<str>,
}

impl<M: Send> Replies<M> {
    /// Holds at most `max` messages per wait for `ctx`'s connector (see [`HELD`]).
    pub fn new(ctx: &ConnectorContext, max: usize) -> Self {
        Replies {
            held: VecDeque::new(),
            max: max.max(1),
            next_id: 0,
            health: ctx.health.clone(),
            connector: ctx.name.clone(),
        }
    }

    /// A fresh request id: 1, 2, 3… for this connection's life and beyond.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The oldest held message: what `next()` returns before it reads the connection again.
    pub fn pop(&mut self) -> Option<M> {
        self.held.pop_front()
    }

    /// Number of messages held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// True when no message is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Reads `conn` until the reply to request `id` arrives (`None`: the id of the first
    /// [`Incoming::Sent`]), for at most `limit`, holding the messages that arrive meanwhile.
    /// Replies to other requests (one that timed out before) are dropped. Cancel-safe as far as
    /// `conn.recv()` is: what was held stays held.
    pub async fn wait<X: Exchange<Msg = M>>(
        &mut self,
        conn: &mut X,
        id: Option<X::Id>,
        limit: Duration,
    ) -> Result<X::Reply, ReplyError> {
        let mut id = id;
        let mut overflow = 0u64;
        let res = tokio::time::timeout(limit, async {
            loop {
                match conn.recv().await.map_err(ReplyError::Lost)? {
                    Incoming::Reply(k, r) if id.as_ref() == Some(&k) => return Ok(r),
                    Incoming::Reply(..) | Incoming::Skip => {}
                    Incoming::Sent(k) => {
                        if id.is_none() {
                            id = Some(k);
                        }
                    }
                    Incoming::Msg(m) if self.held.len() < self.max => self.held.push_back(m),
                    Incoming::Msg(_) => {
                        overflow += 1;
                        self.health.counters.dropped.fetch_add(1, Relaxed);
                    }
                }
            }
        })
        .await;
        if overflow > 0 {
            tracing::warn!(connector = %self.connector, dropped = overflow, held = self.max,
                "messages arrived faster than a write's reply; those beyond the held ones were dropped (counted as dropped)");
        }
        res.unwrap_or(Err(ReplyError::Timeout(limit)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osgate_core::control::ControlRegistry;
    use osgate_core::pipeline::ReadingSender;
    use tokio_util::sync::CancellationToken;

    fn context() -> ConnectorContext {
        ConnectorContext {
            name: "conn".into(),
            gateway: "gw".into(),
            out: ReadingSender::new(Vec::new()),
            shutdown: CancellationToken::new(),
            health: Arc::new(ConnectorHealth::default()),
            listeners: Default::default(),
            control: Arc::new(ControlRegistry::default()),
        }
    }

    /// A scripted connection: each `recv()` takes the next item; at the end it waits forever.
    struct Script(VecDeque<Result<Incoming<u64, &'static str, u32>, Fault>>);

    impl Exchange for Script {
        type Id = u64;
        type Reply = &'static str;
        type Msg = u32;

        async fn recv(&mut self) -> Result<Incoming<u64, &'static str, u32>, Fault> {
            match self.0.pop_front() {
                Some(item) => item,
                None => std::future::pending().await,
            }
        }
    }

    fn script(items: Vec<Result<Incoming<u64, &'static str, u32>, Fault>>) -> Script {
        Script(items.into())
    }

    #[tokio::test(start_paused = true)]
    async fn the_reply_with_the_id_ends_the_wait_and_messages_are_held_in_order() {
        let ctx = context();
        let mut r = Replies::new(&ctx, HELD);
        let id = r.next_id();
        assert_eq!((id, r.next_id()), (1, 2));
        let mut conn = script(vec![
            Ok(Incoming::Msg(10)),
            Ok(Incoming::Reply(7, "stale answer of an earlier request")),
            Ok(Incoming::Skip),
            Ok(Incoming::Msg(11)),
            Ok(Incoming::Reply(1, "ok")),
            Ok(Incoming::Msg(12)),
        ]);
        let got = r.wait(&mut conn, Some(1), Duration::from_secs(10)).await;
        assert_eq!(got, Ok("ok"));
        assert_eq!(r.len(), 2);
        assert_eq!((r.pop(), r.pop(), r.pop()), (Some(10), Some(11), None));
        // What came after the reply is still the connection's.
        assert_eq!(conn.0.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_id_learnt_when_the_request_went_out() {
        let ctx = context();
        let mut r = Replies::new(&ctx, HELD);
        let mut conn = script(vec![
            Ok(Incoming::Reply(4, "not ours: we have no id yet")),
            Ok(Incoming::Sent(5)),
            Ok(Incoming::Sent(6)),
            Ok(Incoming::Reply(6, "the second request's")),
            Ok(Incoming::Reply(5, "ours")),
        ]);
        assert_eq!(
            r.wait(&mut conn, None, Duration::from_secs(1)).await,
            Ok("ours")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_reply_in_time_keeps_what_arrived() {
        let ctx = context();
        let mut r = Replies::new(&ctx, HELD);
        let mut conn = script(vec![Ok(Incoming::Msg(1)), Ok(Incoming::Msg(2))]);
        let limit = Duration::from_millis(300);
        let started = tokio::time::Instant::now();
        assert_eq!(
            r.wait(&mut conn, Some(9), limit).await,
            Err(ReplyError::Timeout(limit))
        );
        assert_eq!(started.elapsed(), limit);
        assert_eq!((r.pop(), r.pop()), (Some(1), Some(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_connection_ends_the_wait() {
        let ctx = context();
        let mut r = Replies::new(&ctx, HELD);
        let lost = Fault::new("closed", "the server closed the connection");
        let mut conn = script(vec![Ok(Incoming::Msg(1)), Err(lost.clone())]);
        assert_eq!(
            r.wait(&mut conn, Some(1), Duration::from_secs(1)).await,
            Err(ReplyError::Lost(lost))
        );
        assert_eq!(r.pop(), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_beyond_the_bound_is_dropped_and_counted() {
        let ctx = context();
        let mut r = Replies::new(&ctx, 2);
        let mut items: Vec<_> = (0..5).map(|i| Ok(Incoming::Msg(i))).collect();
        items.push(Ok(Incoming::Reply(1, "ok")));
        let mut conn = script(items);
        assert_eq!(
            r.wait(&mut conn, Some(1), Duration::from_secs(1)).await,
            Ok("ok")
        );
        assert_eq!((r.pop(), r.pop(), r.pop()), (Some(0), Some(1), None));
        assert_eq!(ctx.health.counters.dropped.load(Relaxed), 3);
    }
}
