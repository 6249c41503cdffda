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
//! (the owner may be busy publishing), which reports: the ConnAck (after subscribing again to
//! the session's filters, clean session or not: a persistent session keeps them, but one the
//! broker lost does not), packets written and PUBACKs ([`Ack`]s, batched: one report per burst
//! the event loop handled), messages, SUBACKs, and the end, with the cause in words
//! ([`describe_error`](crate::net::describe_error)). The owner logs: it knows what the
//! connection is for. [`Down::new_cause`] tells it whether the cause changed, so a broker that
//! stays away is logged once, not at every retry.
//!
//! Messages are reported without a bound by default. An owner that must slow its source down
//! when it is slow itself (the MQTT connector: the broker holds what osgate does not read)
//! bounds them ([`MqttSession::bound_messages`]): the link task then waits for room, and the
//! broker's TCP window fills, as if the event loop were not polled.

use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Outgoing, Packet, Publish, SubAck,
    SubscribeFilter,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use super::MqttClientSettings;
use crate::backoff::Backoff;

/// A publish written or acknowledged, by packet id (0 for QoS 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Written to the connection (rumqttc's `Outgoing::Publish`).
    Sent(u16),
    /// The broker's PUBACK.
    Acked(u16),
}

/// The broker accepted a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connected {
    /// The broker still had our session (a persistent one).
    pub session_present: bool,
    /// Not the session's first connection.
    pub again: bool,
    /// The session's filters were requested (none, or the request queued).
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

/// What a link task reports.
#[derive(Debug)]
enum LinkEvent {
    ConnAck {
        session_present: bool,
        subscribed: bool,
    },
    Acks(Vec<Ack>),
    Message(Publish),
    SubAck(SubAck),
    Down(ConnectionError),
    Closed,
}

/// Where a link task reports: without a bound, or with one for messages (see the module docs).
enum Tx {
    Unbounded(mpsc::UnboundedSender<LinkEvent>),
    Bounded(mpsc::Sender<LinkEvent>),
}

impl Tx {
    /// False when the session is gone.
    async fn send(&self, ev: LinkEvent) -> bool {
        match self {
            Tx::Unbounded(tx) => tx.send(ev).is_ok(),
            Tx::Bounded(tx) => tx.send(ev).await.is_ok(),
        }
    }
}

enum Rx {
    Unbounded(mpsc::UnboundedReceiver<LinkEvent>),
    Bounded(mpsc::Receiver<LinkEvent>),
}

impl Rx {
    async fn recv(&mut self) -> Option<LinkEvent> {
        match self {
            Rx::Unbounded(rx) => rx.recv().await,
            Rx::Bounded(rx) => rx.recv().await,
        }
    }

    fn try_recv(&mut self) -> Option<LinkEvent> {
        match self {
            Rx::Unbounded(rx) => rx.try_recv().ok(),
            Rx::Bounded(rx) => rx.try_recv().ok(),
        }
    }
}

/// One connection: its client, its task, what the task reported.
struct Link {
    client: AsyncClient,
    events: Rx,
    task: JoinHandle<()>,
    connected: bool,
}

/// The session driver (see the module docs).
pub struct MqttSession {
    settings: MqttClientSettings,
    subscriptions: Vec<SubscribeFilter>,
    backoff: Backoff,
    /// Capacity of each client's request channel.
    requests: usize,
    /// Messages reported ahead of the owner, when bounded.
    messages: Option<usize>,
    link: Option<Link>,
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

    /// Reports at most `n` messages ahead of the owner (see the module docs).
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

    /// The current connection's client (publish, disconnect), accepted or not yet.
    pub fn client(&self) -> Option<&AsyncClient> {
        self.link.as_ref().map(|l| &l.client)
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
        let (client, el) = AsyncClient::new(opts, self.requests);
        let subs = self.subscriptions.clone();
        let (tx, events) = match self.messages {
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Tx::Unbounded(tx), Rx::Unbounded(rx))
            }
            Some(n) => {
                let (tx, rx) = mpsc::channel(n);
                (Tx::Bounded(tx), Rx::Bounded(rx))
            }
        };
        let task = tokio::spawn(drive(el, client.clone(), subs, tx));
        self.link = Some(Link {
            client,
            events,
            task,
            connected: false,
        });
    }

    /// The next event. Cancel-safe: use it in a `select!`. Without a connection, waits until
    /// the next attempt is due and reports [`SessionEvent::Due`] (again and again until the
    /// owner connects).
    pub async fn next(&mut self) -> SessionEvent {
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

    /// Asks the broker to end the current connection (DISCONNECT); [`SessionEvent::Closed`]
    /// follows.
    pub fn disconnect(&self) {
        if let Some(l) = &self.link {
            let _ = l.client.try_disconnect();
        }
    }

    /// Ends the session: DISCONNECT, then up to `wait` for it to go out.
    pub async fn close(&mut self, wait: Duration) {
        self.stash = None;
        if let Some(l) = self.link.take() {
            let _ = l.client.try_disconnect();
            let _ = tokio::time::timeout(wait, l.task).await;
        }
    }

    /// Drops the current connection at once, without a DISCONNECT (the flush deadline passed).
    pub fn abort(&mut self) {
        self.stash = None;
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
            Some(LinkEvent::Message(p)) => SessionEvent::Message(p),
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

fn ack_of(ev: &Event) -> Option<Ack> {
    match ev {
        Event::Incoming(Packet::PubAck(a)) => Some(Ack::Acked(a.pkid)),
        Event::Outgoing(Outgoing::Publish(pkid)) => Some(Ack::Sent(*pkid)),
        _ => None,
    }
}

/// Polls one connection's event loop until it ends, reporting to the session.
async fn drive(mut el: EventLoop, client: AsyncClient, subs: Vec<SubscribeFilter>, tx: Tx) {
    loop {
        let ev = match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                // Before anything else is requested: the subscriptions come first.
                let subscribed = subs.is_empty() || client.try_subscribe_many(subs.clone()).is_ok();
                LinkEvent::ConnAck {
                    session_present: ack.session_present,
                    subscribed,
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                tx.send(LinkEvent::Closed).await;
                return;
            }
            Ok(Event::Incoming(Packet::SubAck(s))) => LinkEvent::SubAck(s),
            Ok(Event::Incoming(Packet::Publish(p))) => LinkEvent::Message(p),
            Ok(ev) => {
                let Some(a) = ack_of(&ev) else { continue };
                let mut acks = vec![a];
                // rumqttc buffers the events of a burst (many PUBACKs read at once) and hands
                // them out one poll at a time; take the buffered ones now. Only already
                // produced events are taken, so no poll future is ever dropped half-way.
                while let Some(a) = el.state.events.front().and_then(ack_of) {
                    el.state.events.pop_front();
                    acks.push(a);
                }
                LinkEvent::Acks(acks)
            }
            Err(e) => {
                tx.send(LinkEvent::Down(e)).await;
                return;
            }
        };
        if !tx.send(ev).await {
            return;
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
