//! The protocol side of one MQTT connector: its session with the broker (osgate's session
//! driver, [`osgate_core::net::mqtt::MqttSession`]: a fresh client per connection, the filters
//! subscribed again on every ConnAck, messages bounded so a slow gateway slows the broker
//! down), messages handed to the kit, writes published at QoS 1 and confirmed by their PUBACK.
//!
//! A write waits for its PUBACK on the kit's [`Replies`]: the session's events read as an
//! [`Exchange`] (our publish written under packet id `k` → [`Incoming::Sent`], the PUBACK of
//! `k` → [`Incoming::Reply`], a message → [`Incoming::Msg`], held for `next()`).
//!
//! The kit's [`ListenerLine`](crate::device::listener::ListenerLine) owns the reconnect backoff
//! (it takes the devices offline and waits), so the session itself retries at once when asked.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{ConnectionError, Publish, QoS, SubscribeReasonCode};

use super::config::Command;
use super::mapping::Mapper;
use crate::device::listener::{Devices, Listener};
use crate::device::reply::{Exchange, Incoming, Replies, ReplyError};
use crate::device::{Fault, WriteError};
use crate::ConnectorContext;
use osgate_core::net::mqtt::{Ack, Down, MqttSession, SessionEvent};
use osgate_core::reading::Value;

/// The protocol side of one MQTT connector.
pub(super) struct MqttListener {
    pub(super) broker: Broker,
    /// Messages that arrived while a write waited for its PUBACK.
    pub(super) replies: Replies<Publish>,
    pub(super) mapper: Mapper,
    /// `commands[device][channel]` of the configured devices.
    pub(super) commands: Vec<Vec<Option<Arc<Command>>>>,
    pub(super) write_timeout: Duration,
}

/// The session with the source broker and what its log lines name.
pub(super) struct Broker {
    pub(super) mqtt: MqttSession,
    /// The subscribed filters (for the log).
    pub(super) filters: Vec<String>,
    pub(super) url: String,
    pub(super) ctx: ConnectorContext,
    pub(super) refused_subscription: bool,
}

impl Broker {
    /// Handles an event of the session other than a message, acknowledgements or the end of
    /// the connection (the callers take those first).
    fn on_event(&mut self, ev: SessionEvent) {
        match ev {
            SessionEvent::Due => self.mqtt.connect(),
            SessionEvent::Connected(c) => {
                tracing::info!(connector = %self.ctx.name, broker = %self.url,
                    session_present = c.session_present, "connected to the source broker");
            }
            SessionEvent::SubAck(ack) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure));
                if refused && !self.refused_subscription {
                    tracing::error!(connector = %self.ctx.name, broker = %self.url,
                        filters = ?self.filters,
                        "the broker refused a subscription (check its ACL for this user)");
                }
                self.refused_subscription = refused;
            }
            SessionEvent::Message(_)
            | SessionEvent::Acks(_)
            | SessionEvent::Down(_)
            | SessionEvent::Closed => {}
        }
    }

    fn connection_fault(&self, d: &Down) -> Fault {
        let kind = match &d.error {
            Some(ConnectionError::ConnectionRefused(_)) => "refused",
            Some(ConnectionError::Tls(_)) => "tls",
            Some(ConnectionError::Io(_)) => "io",
            _ => "connection",
        };
        Fault::new(kind, format!("broker {}: {}", self.url, d.cause))
    }
}

/// The session as a write waiting for its PUBACK reads it: one event brings several
/// acknowledgements, handed over one at a time.
struct Acks<'a> {
    broker: &'a mut Broker,
    acks: std::vec::IntoIter<Ack>,
}

impl Exchange for Acks<'_> {
    type Id = u16;
    type Reply = ();
    type Msg = Publish;

    async fn recv(&mut self) -> Result<Incoming<u16, (), Publish>, Fault> {
        loop {
            match self.acks.next() {
                Some(Ack::Sent(k)) => return Ok(Incoming::Sent(k)),
                Some(Ack::Acked(k)) => return Ok(Incoming::Reply(k, ())),
                None => {}
            }
            match self.broker.mqtt.next().await {
                SessionEvent::Acks(acks) => self.acks = acks.into_iter(),
                SessionEvent::Message(p) => return Ok(Incoming::Msg(p)),
                SessionEvent::Down(d) => return Err(self.broker.connection_fault(&d)),
                other => self.broker.on_event(other),
            }
        }
    }
}

/// `{value}` of a command payload.
pub(super) fn render_value(v: &Value, cmd: &Command) -> String {
    match v {
        Value::Bool(true) => cmd.on.clone().unwrap_or_else(|| "true".into()),
        Value::Bool(false) => cmd.off.clone().unwrap_or_else(|| "false".into()),
        other => other.to_string(),
    }
}

impl Listener for MqttListener {
    type Msg = Publish;

    async fn next(&mut self) -> Result<Publish, Fault> {
        if let Some(p) = self.replies.pop() {
            return Ok(p);
        }
        let b = &mut self.broker;
        loop {
            match b.mqtt.next().await {
                SessionEvent::Message(p) => return Ok(p),
                SessionEvent::Down(d) => return Err(b.connection_fault(&d)),
                other => b.on_event(other),
            }
        }
    }

    fn map(&mut self, msg: Publish, devices: &mut Devices) {
        self.mapper.map(msg, devices);
    }

    async fn write(&mut self, device: usize, ch: usize, raw: Value) -> Result<Value, WriteError> {
        let Some(cmd) = self
            .commands
            .get(device)
            .and_then(|d| d.get(ch))
            .and_then(|c| c.clone())
        else {
            return Err(WriteError::Invalid("the channel has no command".into()));
        };
        let payload = cmd.payload.replace("{value}", &render_value(&raw, &cmd));
        // Between two connections (the kit serves requests before it asks for messages):
        // start the next one; the publish waits in its queue for the ConnAck.
        let b = &mut self.broker;
        b.mqtt.connect();
        let mut p = Publish::new(cmd.topic.as_str(), QoS::AtLeastOnce, payload);
        p.retain = cmd.retain;
        if b.mqtt.publish(vec![p]).is_err() {
            return Err(WriteError::Offline(
                "cannot queue the command: no connection to the broker, or its queue is full"
                    .into(),
            ));
        }
        let limit = self.write_timeout;
        // Wait until the broker acknowledges our publish (the first one written from now on),
        // keeping the messages that arrive meanwhile for `next()`.
        let mut session = Acks {
            broker: b,
            acks: Vec::new().into_iter(),
        };
        match self.replies.wait(&mut session, None, limit).await {
            Ok(()) => Ok(raw),
            Err(ReplyError::Lost(f)) => Err(WriteError::Offline(f.message)),
            Err(ReplyError::Timeout(_)) => Err(WriteError::Offline(format!(
                "no PUBACK from {} within {}",
                self.broker.url,
                humantime::format_duration(limit)
            ))),
        }
    }
}
