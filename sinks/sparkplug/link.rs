//! One MQTT connection of the edge node: the rumqttc event loop, polled by a task of its own
//! (never blocked by the session), reporting what the session needs: ConnAck, PUBACKs (in
//! order, batched per burst), incoming messages (STATE, NCMD, DCMD), and the connection's end.

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the link task reports.
#[derive(Debug)]
pub enum LinkEvent {
    /// The broker accepted the connection.
    ConnAck,
    /// PUBACKs received (in order).
    Acked(usize),
    /// A message on a subscribed topic: topic and payload.
    Message(String, Bytes),
    /// The connection failed or dropped: why.
    Down(String),
    /// The connection ended by our DISCONNECT.
    Closed,
}

pub struct Link {
    /// Where requests go (publish, subscribe, disconnect).
    pub client: AsyncClient,
    /// What the event loop reported.
    pub events: mpsc::UnboundedReceiver<LinkEvent>,
    /// The task polling the event loop.
    pub task: JoinHandle<()>,
    /// ConnAck received.
    pub connected: bool,
}

/// Polls the event loop until the connection ends, reporting to `tx`.
pub async fn drive(mut el: EventLoop, tx: mpsc::UnboundedSender<LinkEvent>) {
    loop {
        let ev = match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => LinkEvent::ConnAck,
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                let mut n = 1;
                // Take the PUBACKs rumqttc already buffered: one wake-up per burst.
                while matches!(
                    el.state.events.front(),
                    Some(Event::Incoming(Packet::PubAck(_)))
                ) {
                    el.state.events.pop_front();
                    n += 1;
                }
                LinkEvent::Acked(n)
            }
            Ok(Event::Incoming(Packet::Publish(p))) => LinkEvent::Message(p.topic, p.payload),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                let _ = tx.send(LinkEvent::Closed);
                return;
            }
            Ok(_) => continue,
            Err(e) => {
                let _ = tx.send(LinkEvent::Down(osgate_core::net::describe_error(&e)));
                return;
            }
        };
        if tx.send(ev).is_err() {
            return;
        }
    }
}
