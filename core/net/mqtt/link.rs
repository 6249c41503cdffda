//! One connection's task (a *link*): polls the connection's rumqttc event loop, writes what
//! the owning [`MqttSession`](super::MqttSession) hands it, and reports back what happened,
//! batched. The session module's docs say why publishes, the SUBSCRIBE and the DISCONNECT go
//! through the event loop's state and connection here rather than its request channel.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    ConnectionError, Disconnect, Event, EventLoop, Outgoing, Packet, Publish, Request, SubAck,
    Subscribe, SubscribeFilter,
};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use super::hold::Hold;

/// A publish written or acknowledged, by packet id (0 for QoS 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Written to the connection (rumqttc's `Outgoing::Publish`).
    Sent(u16),
    /// The broker's PUBACK.
    Acked(u16),
}

/// What a link task reports.
#[derive(Debug)]
pub(super) enum LinkEvent {
    ConnAck {
        session_present: bool,
        subscribed: bool,
    },
    Acks(Vec<Ack>),
    /// Messages read in one turn, in order; never empty.
    Messages(Vec<Publish>),
    SubAck(SubAck),
    Down(ConnectionError),
    Closed,
}

/// Most messages a link task hands over at once, without a bound.
pub(super) const BATCH: usize = 64;

/// Where a link task reports: without a bound, or with one for messages (see the module docs).
pub(super) enum Tx {
    Unbounded(mpsc::UnboundedSender<LinkEvent>),
    Bounded(mpsc::Sender<LinkEvent>),
}

impl Tx {
    /// False when the session is gone.
    pub(super) async fn send(&self, ev: LinkEvent) -> bool {
        match self {
            Tx::Unbounded(tx) => tx.send(ev).is_ok(),
            Tx::Bounded(tx) => tx.send(ev).await.is_ok(),
        }
    }
}

pub(super) enum Rx {
    Unbounded(mpsc::UnboundedReceiver<LinkEvent>),
    Bounded(mpsc::Receiver<LinkEvent>),
}

impl Rx {
    pub(super) async fn recv(&mut self) -> Option<LinkEvent> {
        match self {
            Rx::Unbounded(rx) => rx.recv().await,
            Rx::Bounded(rx) => rx.recv().await,
        }
    }

    pub(super) fn try_recv(&mut self) -> Option<LinkEvent> {
        match self {
            Rx::Unbounded(rx) => rx.try_recv().ok(),
            Rx::Bounded(rx) => rx.try_recv().ok(),
        }
    }
}

/// What the owner hands a link task, in order.
pub(super) enum Out {
    Publish(Vec<Publish>),
    Disconnect,
}

/// The acknowledgement an event of the event loop is, if any.
fn ack_of(ev: &Event) -> Option<Ack> {
    match ev {
        Event::Incoming(Packet::PubAck(a)) => Some(Ack::Acked(a.pkid)),
        Event::Outgoing(Outgoing::Publish(pkid)) => Some(Ack::Sent(*pkid)),
        _ => None,
    }
}

/// Polls one connection's event loop until it ends, writing what the owner publishes and
/// reporting to the session.
pub(super) async fn drive(
    mut el: EventLoop,
    subs: Vec<SubscribeFilter>,
    (tx, batch): (Tx, usize),
    mut out: mpsc::UnboundedReceiver<Out>,
    queued: Arc<AtomicUsize>,
) {
    let mut pubs = VecDeque::new();
    let mut connected = false;
    let mut closing = false;
    let mut hold = Hold::default();
    let window = usize::from(el.mqtt_options.inflight());
    loop {
        let in_flight = usize::from(el.state.inflight());
        if connected
            && (closing || !pubs.is_empty())
            && !hold.wait(window, in_flight, pubs.len(), closing)
        {
            let before = pubs.len();
            let wrote = write_queued(&mut el, &mut pubs, &queued, closing).await;
            hold.wrote(before - pubs.len(), window);
            let end = match wrote {
                Ok(false) => None,
                Ok(true) => Some(LinkEvent::Closed),
                Err(e) => Some(LinkEvent::Down(e)),
            };
            if let Some(end) = end {
                // What was written (and, after a DISCONNECT, acknowledged) before the end is
                // reported first.
                let mut acks = Vec::new();
                take_buffered_acks(&mut el, &mut acks);
                if matches!(end, LinkEvent::Closed) {
                    linger(&mut el, &mut acks).await;
                }
                if !acks.is_empty() {
                    tx.send(LinkEvent::Acks(acks)).await;
                }
                tx.send(end).await;
                return;
            }
        }
        // Before the ConnAck nothing is written, and the connect is never interrupted. After
        // it, a poll of the event loop may be: its connection buffers what it read and what
        // it has still to write, and the events it produced stay queued in its state.
        let polled = tokio::select! {
            biased;
            _ = sleep_until(hold.until.unwrap_or_else(Instant::now)), if hold.until.is_some() => {
                continue;
            }
            o = out.recv(), if connected => {
                let Some(o) = o else { return };
                // One write for everything handed so far.
                let mut next = Some(o);
                while let Some(o) = next {
                    match o {
                        Out::Publish(b) => pubs.extend(b),
                        Out::Disconnect => closing = true,
                    }
                    next = out.try_recv().ok();
                }
                continue;
            }
            polled = el.poll() => polled,
        };
        // PUBACKs are gathered while the event loop has more of them at once (it reads ten
        // packets a poll), so that the owner gets one report and the queued publishes one
        // write for the whole burst. A poll that is not ready at once is dropped before it
        // took anything (see above).
        let mut acks = Vec::new();
        let mut msgs = Vec::new();
        let mut polled = Some(polled);
        let mut budget = READY_POLLS;
        while let Some(p) = polled.take() {
            let ev = match p {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    connected = true;
                    // Before anything is published: the subscriptions come first. (Through
                    // the request channel they would wait while the in-flight window is
                    // full, which a steady flow of publishes keeps it.)
                    if let Err(e) = subscribe(&mut el, &subs).await {
                        tx.send(LinkEvent::Down(e)).await;
                        return;
                    }
                    Some(LinkEvent::ConnAck {
                        session_present: ack.session_present,
                        subscribed: !subs.is_empty(),
                    })
                }
                Ok(Event::Incoming(Packet::SubAck(s))) => Some(LinkEvent::SubAck(s)),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    msgs.push(p);
                    if msgs.len() >= batch && !hand_over(&tx, &mut acks, &mut msgs).await {
                        return;
                    }
                    None
                }
                Ok(ev) => {
                    if let Some(a) = ack_of(&ev) {
                        acks.push(a);
                        take_buffered_acks(&mut el, &mut acks);
                    }
                    None
                }
                Err(e) => Some(LinkEvent::Down(e)),
            };
            if let Some(ev) = ev {
                let end = matches!(ev, LinkEvent::Down(_));
                if !hand_over(&tx, &mut acks, &mut msgs).await || !tx.send(ev).await || end {
                    return;
                }
            }
            budget -= 1;
            if budget > 0 && connected {
                polled = match el.state.events.pop_front() {
                    Some(ev) => Some(Ok(ev)),
                    None => read_ready(&mut el).await,
                };
            }
        }
        // The messages go first: when the owner has no room for them, their PUBACKs wait too.
        if !msgs.is_empty() && !tx.send(LinkEvent::Messages(msgs)).await {
            return;
        }
        // The answers to what was read (PUBACKs of messages), in one write.
        if connected {
            if let Err(e) = flush(&mut el).await {
                if !acks.is_empty() {
                    tx.send(LinkEvent::Acks(std::mem::take(&mut acks))).await;
                }
                tx.send(LinkEvent::Down(e)).await;
                return;
            }
        }
        if !acks.is_empty() && !tx.send(LinkEvent::Acks(acks)).await {
            return;
        }
    }
}

/// Reports what a turn gathered so far, acknowledgements first; false when the session is gone.
async fn hand_over(tx: &Tx, acks: &mut Vec<Ack>, msgs: &mut Vec<Publish>) -> bool {
    (acks.is_empty() || tx.send(LinkEvent::Acks(std::mem::take(acks))).await)
        && (msgs.is_empty() || tx.send(LinkEvent::Messages(std::mem::take(msgs))).await)
}

/// Takes the acknowledgements at the front of the events the event loop has already produced
/// (PUBACKs read at once, a batch of publishes written), which it would otherwise hand out one
/// poll at a time.
fn take_buffered_acks(el: &mut EventLoop, acks: &mut Vec<Ack>) {
    while let Some(a) = el.state.events.front().and_then(ack_of) {
        el.state.events.pop_front();
        acks.push(a);
    }
}

/// Reads one packet if the connection has one now and handles it as the event loop does:
/// its answer (the PUBACK of a message) is written but not flushed, its event returned. The
/// event loop reads at most ten packets per poll and flushes their answers each time; a link
/// task reads what is there, up to [`READY_POLLS`], and flushes once.
async fn read_ready(el: &mut EventLoop) -> Option<Result<Event, ConnectionError>> {
    let net = el.network.as_mut()?;
    let packet = match ready_now(net.read())? {
        Ok(p) => p,
        Err(e) => return Some(Err(e.into())),
    };
    match el.state.handle_incoming_packet(packet) {
        Ok(Some(answer)) => {
            if let Err(e) = net.write(answer).await {
                return Some(Err(e.into()));
            }
        }
        Ok(None) => {}
        Err(e) => return Some(Err(e.into())),
    }
    el.state.events.pop_front().map(Ok)
}

/// How many events of the event loop one turn of a link task takes when they are ready at
/// once.
const READY_POLLS: usize = 128;

/// Polls `f` once: its output if it is ready now.
fn ready_now<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// Writes the queued publishes the in-flight window has room for (packet ids, the copies kept
/// for a re-send and the `Outgoing` events through the event loop's state, as its own request
/// handling does), then, when closing and nothing is left, a DISCONNECT; and flushes once.
/// True when the DISCONNECT went out.
async fn write_queued(
    el: &mut EventLoop,
    pubs: &mut VecDeque<Publish>,
    queued: &AtomicUsize,
    closing: bool,
) -> Result<bool, ConnectionError> {
    let window = el.mqtt_options.inflight();
    let Some(net) = el.network.as_mut() else {
        return Ok(false);
    };
    let state = &mut el.state;
    let mut wrote = false;
    while state.collision.is_none() && state.inflight() < window {
        let Some(p) = pubs.pop_front() else { break };
        queued.fetch_sub(1, Relaxed);
        if let Some(packet) = state.handle_outgoing_packet(Request::Publish(p))? {
            net.write(packet).await?;
            wrote = true;
        }
    }
    let close = closing && pubs.is_empty();
    if close {
        if let Some(packet) = state.handle_outgoing_packet(Request::Disconnect(Disconnect))? {
            net.write(packet).await?;
            wrote = true;
        }
    }
    if wrote {
        flush(el).await?;
    }
    Ok(close)
}

/// How long a link waits for the broker to close the connection after our DISCONNECT.
const LINGER: Duration = Duration::from_secs(2);

/// After the DISCONNECT: reads until the broker closes the connection (at most [`LINGER`]),
/// taking the PUBACKs still on their way. Closed at once, the socket would answer them with a
/// reset, and the broker's kernel would drop what the broker had not read yet: the last
/// publishes and the DISCONNECT itself (so the broker would publish the last will).
async fn linger(el: &mut EventLoop, acks: &mut Vec<Ack>) {
    let until = Instant::now() + LINGER;
    let Some(net) = el.network.as_mut() else {
        return;
    };
    while let Ok(Ok(packet)) = tokio::time::timeout_at(until, net.read()).await {
        // Nothing is answered after the DISCONNECT; PUBACKs are taken.
        if el.state.handle_incoming_packet(packet).is_err() {
            break;
        }
        while let Some(ev) = el.state.events.pop_front() {
            acks.extend(ack_of(&ev));
        }
    }
}

/// Writes the session's filters in one SUBSCRIBE (none: nothing) and flushes.
async fn subscribe(el: &mut EventLoop, subs: &[SubscribeFilter]) -> Result<(), ConnectionError> {
    if subs.is_empty() {
        return Ok(());
    }
    let request = Request::Subscribe(Subscribe::new_many(subs.iter().cloned()));
    if let (Some(packet), Some(net)) = (
        el.state.handle_outgoing_packet(request)?,
        el.network.as_mut(),
    ) {
        net.write(packet).await?;
    }
    flush(el).await
}

/// Writes out what the connection has buffered, within the connection timeout (as the event
/// loop does).
async fn flush(el: &mut EventLoop) -> Result<(), ConnectionError> {
    let limit = Duration::from_secs(el.network_options.connection_timeout());
    let Some(net) = el.network.as_mut() else {
        return Ok(());
    };
    match tokio::time::timeout(limit, net.flush()).await {
        Ok(flushed) => Ok(flushed?),
        Err(_) => Err(ConnectionError::FlushTimeout),
    }
}
