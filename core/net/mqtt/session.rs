//! The MQTT session driver: one broker connection at a time, for whoever owns it (a sink, the
//! command client, a connector), reported as [`SessionEvent`]s from [`MqttSession::next`].
//!
//! Why not rumqttc's `EventLoop` alone: it reconnects at once, without backoff, drops what it
//! had queued when the broker lost the session, and replays stale requests of an old
//! connection. So every connection gets a fresh client and event loop, and the wait between
//! attempts is the shared [`Backoff`]; what must survive a reconnect is its owner's to keep
//! (the [`Outbox`](super::Outbox)).
//!
//! Each connection's event loop is polled by a task of its own, never blocked by the owner
//! (the owner may be busy rendering), which writes what the owner publishes and reports: the
//! ConnAck (after subscribing again to the session's filters, clean session or not: a
//! persistent session keeps them, but one the broker lost does not), packets written and
//! PUBACKs ([`Ack`]s, batched: one report per burst), messages, SUBACKs, and the end, with the
//! cause in words ([`describe_error`](crate::net::describe_error)). The owner logs: it knows
//! what the connection is for. [`Down::new_cause`] tells it whether the cause changed, so a
//! broker that stays away is logged once, not at every retry.
//!
//! **System calls per message.** rumqttc's event loop writes and flushes every request on its
//! own (one system call per publish; rumqtt issue #810) and flushes its answers every ten
//! packets read. So publishes do not go through its request channel: the owner hands them
//! over in batches ([`MqttSession::publish`]), and the link task writes as many as the
//! in-flight window has room for through the event loop's own state and connection (packet
//! ids, the copies kept for a re-send and the `Outgoing` events, as rumqttc does them), then
//! flushes once. With the window nearly full it may wait up to a millisecond for more room,
//! so that writes are fewer and larger; when such waits are in vain (a backlog, a broker
//! holding its PUBACKs back), it stops waiting for a while (`hold.rs` has the policy).
//! On the way in, it reads every packet already there (up to 128 a turn) and answers
//! them in one write. Nothing goes through the request channel: the SUBSCRIBE is written at
//! the ConnAck (queued there, it would wait while the window is full, and a steady flow of
//! publishes keeps it full), and the DISCONNECT after everything published before it, then
//! the link reads until the broker closes the connection.
//!
//! Messages go to the owner in batches, one per turn of the link task (at most 64
//! messages, or a quarter of the bound below): one hand-over between the tasks, and one wake-up
//! of the owner's thread, per burst instead of per message. [`MqttSession::next`] still
//! reports them one at a time.
//!
//! Messages are reported without a bound by default. An owner that must slow its source down
//! when it is slow itself (the MQTT connector: the broker holds what osgate does not read)
//! bounds them ([`MqttSession::bound_messages`]): the link task then waits for room, and the
//! broker's TCP window fills, as if the event loop were not polled.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnectionError, EventLoop, Publish, SubAck, SubscribeFilter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

pub use super::link::Ack;
use super::link::{drive, LinkEvent, Out, Rx, Tx, BATCH};
use super::MqttClientSettings;
use crate::backoff::Backoff;

/// The broker accepted a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connected {
    /// The broker still had our session (a persistent one).
    pub session_present: bool,
    /// Not the session's first connection.
    pub again: bool,
    /// A SUBSCRIBE with the session's filters went out on this connection (false: the
    /// session has none).
    pub subscribed: bool,
}

/// A connection attempt failed or a connection was lost.
#[derive(Debug)]
pub struct Down {
    /// Why, in words.
    pub cause: String,
    /// rumqttc's error (`None` when the options could not be built: a TLS or password file
    /// gone since the config was checked).
    pub error: Option<ConnectionError>,
    /// The connection had been accepted (ConnAck) before it was lost.
    pub was_connected: bool,
    /// The cause differs from the previous failure's (log it), or there was a connection
    /// between them.
    pub new_cause: bool,
    /// How long until the next attempt.
    pub retry_in: Duration,
}

/// What [`MqttSession::next`] reports.
#[derive(Debug)]
pub enum SessionEvent {
    /// Time for a connection attempt: call [`MqttSession::connect`] (after changing the
    /// settings if the next connection needs it, e.g. its last will).
    Due,
    /// ConnAck.
    Connected(Connected),
    /// Publishes written and acknowledged, in order.
    Acks(Vec<Ack>),
    /// A message on a subscribed topic.
    Message(Publish),
    /// The broker answered a subscription.
    SubAck(SubAck),
    /// The connection failed or dropped; the next attempt is due after the backoff.
    Down(Down),
    /// The connection ended by our DISCONNECT; the next attempt is due at once.
    Closed,
}

/// One connection: where its publishes go, its task, what the task reported.
struct Link {
    out: mpsc::UnboundedSender<Out>,
    /// Publishes handed and not yet written (bounded by the session's `requests`).
    queued: Arc<AtomicUsize>,
    events: Rx,
    task: JoinHandle<()>,
    connected: bool,
}

/// The session driver (see the module docs).
pub struct MqttSession {
    settings: MqttClientSettings,
    subscriptions: Vec<SubscribeFilter>,
    backoff: Backoff,
    /// Publishes a connection queues at most (handed and not yet written).
    requests: usize,
    /// Messages reported ahead of the owner, when bounded.
    messages: Option<usize>,
    link: Option<Link>,
    /// Messages of the last batch not yet reported.
    inbox: VecDeque<Publish>,
    retry_at: Instant,
    /// An event taken ahead ([`MqttSession::drain_acks`], a failed [`MqttSession::connect`]).
    stash: Option<Stashed>,
    last_error: Option<String>,
    ever_connected: bool,
}

enum Stashed {
    Link(LinkEvent),
    Failed(String),
}

impl MqttSession {
    /// A session with these settings, reconnecting with `backoff`, whose clients queue up to
    /// `requests` requests (publishes, subscriptions). The first attempt is due at once.
    pub fn new(settings: MqttClientSettings, backoff: Backoff, requests: usize) -> Self {
        MqttSession {
            settings,
            subscriptions: Vec::new(),
            backoff,
            requests,
            messages: None,
            link: None,
            inbox: VecDeque::new(),
            retry_at: Instant::now(),
            stash: None,
            last_error: None,
            ever_connected: false,
        }
    }

    /// The filters subscribed after every ConnAck, in one SUBSCRIBE.
    pub fn subscribe(mut self, filters: Vec<SubscribeFilter>) -> Self {
        self.subscriptions = filters;
        self
    }

    /// Reports at most `n` messages ahead of the owner (four batches), plus the rest of the
    /// batch whose messages [`MqttSession::next`] is reporting (see the module docs).
    pub fn bound_messages(mut self, n: usize) -> Self {
        self.messages = Some(n.max(1));
        self
    }

    /// The settings of the next connection.
    pub fn settings_mut(&mut self) -> &mut MqttClientSettings {
        &mut self.settings
    }

    /// Replaces the filters of the next connections.
    pub fn set_subscriptions(&mut self, filters: Vec<SubscribeFilter>) {
        self.subscriptions = filters;
    }

    /// The broker accepted the current connection.
    pub fn is_connected(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.connected)
    }

    /// A connection is open or being opened.
    pub fn is_linked(&self) -> bool {
        self.link.is_some()
    }

    /// Hands publishes to the current connection, accepted or not yet: written in order
    /// once the broker accepted it, as the in-flight window allows; each write and PUBACK is
    /// reported as an [`Ack`]. Hands them back when there is no connection or the queue (the
    /// session's `requests`) has no room for all of them.
    pub fn publish(&self, batch: Vec<Publish>) -> Result<(), Vec<Publish>> {
        let Some(l) = &self.link else {
            return Err(batch);
        };
        let n = batch.len();
        if n == 0 {
            return Ok(());
        }
        if l.queued.load(Relaxed) + n > self.requests {
            return Err(batch);
        }
        l.queued.fetch_add(n, Relaxed);
        l.out.send(Out::Publish(batch)).map_err(|e| {
            l.queued.fetch_sub(n, Relaxed);
            match e.0 {
                Out::Publish(b) => b,
                Out::Disconnect => unreachable!("sent a publish"),
            }
        })
    }

    /// Starts a connection attempt with the current settings. Options that cannot be built (a
    /// TLS or password file gone since the config was checked) fail the attempt like a refused
    /// connect: reported by the next [`MqttSession::next`], retried with backoff, never a
    /// fallback to plain text.
    pub fn connect(&mut self) {
        if self.link.is_some() || matches!(self.stash, Some(Stashed::Failed(_))) {
            // Connected or connecting; or a failed attempt not yet reported.
            return;
        }
        let opts = match self.settings.options() {
            Ok(o) => o,
            Err(e) => {
                self.stash = Some(Stashed::Failed(e.to_string()));
                return;
            }
        };
        // Nothing goes through the event loop's request channel: the link task writes
        // publishes, subscriptions and the DISCONNECT itself (see the module docs).
        let mut el = EventLoop::new(opts, 1);
        // The batching is done here: the kernel must not hold a batch's last segment back
        // (Nagle's algorithm) until the broker's TCP acknowledgement, which the broker delays
        // by up to 40 ms when it has nothing to send: the window then stalls.
        let mut net = el.network_options();
        net.set_tcp_nodelay(true);
        el.set_network_options(net);
        let subs = self.subscriptions.clone();
        // Bounded to `n` messages ahead: four batches of a quarter of them in the channel.
        let (tx, events, batch) = match self.messages {
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Tx::Unbounded(tx), Rx::Unbounded(rx), BATCH)
            }
            Some(n) => {
                let (tx, rx) = mpsc::channel(4);
                (Tx::Bounded(tx), Rx::Bounded(rx), n.div_ceil(4))
            }
        };
        let (out, out_rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(drive(el, subs, (tx, batch), out_rx, queued.clone()));
        self.link = Some(Link {
            out,
            queued,
            events,
            task,
            connected: false,
        });
    }

    /// The next event. Cancel-safe: use it in a `select!`. Without a connection, waits until
    /// the next attempt is due and reports [`SessionEvent::Due`] (again and again until the
    /// owner connects).
    pub async fn next(&mut self) -> SessionEvent {
        if let Some(p) = self.inbox.pop_front() {
            return SessionEvent::Message(p);
        }
        if let Some(s) = self.stash.take() {
            return self.on_stashed(s);
        }
        let Some(link) = &mut self.link else {
            sleep_until(self.retry_at).await;
            return SessionEvent::Due;
        };
        let ev = link.events.recv().await;
        self.on_link(ev)
    }

    /// Hands the acknowledgements already reported to `f` without a wake-up per report; the
    /// first other event is kept for [`MqttSession::next`].
    pub fn drain_acks(&mut self, mut f: impl FnMut(&[Ack])) {
        if self.stash.is_some() {
            return;
        }
        let Some(link) = &mut self.link else { return };
        for _ in 0..256 {
            match link.events.try_recv() {
                Some(LinkEvent::Acks(acks)) => f(&acks),
                Some(other) => {
                    self.stash = Some(Stashed::Link(other));
                    return;
                }
                None => return,
            }
        }
    }

    /// Asks the broker to end the current connection (DISCONNECT, after what was published
    /// before it); [`SessionEvent::Closed`] follows.
    pub fn disconnect(&self) {
        if let Some(l) = &self.link {
            let _ = l.out.send(Out::Disconnect);
        }
    }

    /// Ends the session: DISCONNECT, then up to `wait` for it to go out.
    pub async fn close(&mut self, wait: Duration) {
        self.stash = None;
        self.inbox.clear();
        if let Some(l) = self.link.take() {
            let _ = l.out.send(Out::Disconnect);
            let _ = tokio::time::timeout(wait, l.task).await;
        }
    }

    /// Drops the current connection at once, without a DISCONNECT (the flush deadline passed).
    pub fn abort(&mut self) {
        self.stash = None;
        self.inbox.clear();
        if let Some(l) = self.link.take() {
            l.task.abort();
        }
    }

    fn on_stashed(&mut self, s: Stashed) -> SessionEvent {
        match s {
            Stashed::Link(ev) => self.on_link(Some(ev)),
            Stashed::Failed(cause) => self.down(cause, None, false),
        }
    }

    fn on_link(&mut self, ev: Option<LinkEvent>) -> SessionEvent {
        match ev {
            Some(LinkEvent::ConnAck {
                session_present,
                subscribed,
            }) => {
                if let Some(l) = &mut self.link {
                    l.connected = true;
                }
                self.backoff.reset();
                self.last_error = None;
                let again = std::mem::replace(&mut self.ever_connected, true);
                SessionEvent::Connected(Connected {
                    session_present,
                    again,
                    subscribed,
                })
            }
            Some(LinkEvent::Acks(a)) => SessionEvent::Acks(a),
            Some(LinkEvent::Messages(batch)) => {
                self.inbox.extend(batch);
                match self.inbox.pop_front() {
                    Some(p) => SessionEvent::Message(p),
                    // A link never hands over an empty batch; were it to, it reported nothing.
                    None => SessionEvent::Acks(Vec::new()),
                }
            }
            Some(LinkEvent::SubAck(s)) => SessionEvent::SubAck(s),
            Some(LinkEvent::Down(e)) => {
                let was = self.link.take().is_some_and(|l| l.connected);
                let cause = crate::net::describe_error(&e);
                self.down(cause, Some(e), was)
            }
            Some(LinkEvent::Closed) | None => {
                self.link = None;
                self.retry_at = Instant::now();
                SessionEvent::Closed
            }
        }
    }

    fn down(
        &mut self,
        cause: String,
        error: Option<ConnectionError>,
        was_connected: bool,
    ) -> SessionEvent {
        let retry_in = self.backoff.next_delay();
        self.retry_at = Instant::now() + retry_in;
        let new_cause = self.last_error.as_deref() != Some(cause.as_str());
        if new_cause {
            self.last_error = Some(cause.clone());
        }
        SessionEvent::Down(Down {
            cause,
            error,
            was_connected,
            new_cause,
            retry_in,
        })
    }
}

impl Drop for MqttSession {
    fn drop(&mut self) {
        if let Some(l) = &self.link {
            l.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(url: &str) -> MqttSession {
        let s = MqttClientSettings::new(url, "c");
        MqttSession::new(
            s,
            Backoff::new(Duration::from_secs(1), Duration::from_secs(4)),
            8,
        )
    }

    /// A connect that cannot start is a failure with backoff, its cause reported once as new.
    #[tokio::test(start_paused = true)]
    async fn unusable_options_fail_with_backoff() {
        let mut s = session("mqtts://127.0.0.1:1");
        s.settings_mut().password_file = Some("/nonexistent/pw".into());
        s.settings_mut().username = Some("u".into());
        assert!(matches!(s.next().await, SessionEvent::Due));
        let mut waits = Vec::new();
        for i in 0..3 {
            s.connect();
            assert!(!s.is_linked());
            match s.next().await {
                SessionEvent::Down(d) => {
                    assert!(d.cause.contains("password_file"), "{}", d.cause);
                    assert!(d.error.is_none() && !d.was_connected);
                    assert_eq!(d.new_cause, i == 0);
                    waits.push(d.retry_in.as_secs());
                }
                other => panic!("{other:?}"),
            }
            let t = Instant::now();
            assert!(matches!(s.next().await, SessionEvent::Due));
            assert_eq!(t.elapsed().as_secs(), waits[i]);
        }
        assert_eq!(waits, [1, 2, 4]);
    }

    /// A refused connection is reported as down with rumqttc's error and its cause in words.
    #[tokio::test]
    async fn a_refused_connection_is_down() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut s = session(&format!("mqtt://127.0.0.1:{port}"));
        assert!(matches!(s.next().await, SessionEvent::Due));
        s.connect();
        assert!(s.is_linked() && !s.is_connected());
        let ev = tokio::time::timeout(Duration::from_secs(10), s.next())
            .await
            .unwrap();
        match ev {
            SessionEvent::Down(d) => {
                assert!(d.error.is_some() && d.new_cause && !d.was_connected);
                assert!(!d.cause.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(!s.is_linked());
    }
}
