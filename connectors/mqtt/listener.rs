//! The protocol side of one MQTT connector: its session with the broker (osgate's session
//! driver, [`osgate_core::net::mqtt::MqttSession`]: a fresh client per connection, the filters
//! subscribed again on every ConnAck, messages bounded so a slow gateway slows the broker
//! down), messages handed to the kit, writes published at QoS 1 and confirmed by their PUBACK.
//!
//! The kit's [`ListenerLine`](crate::device::listener::ListenerLine) owns the reconnect backoff
//! (it takes the devices offline and waits), so the session itself retries at once when asked.

use std::collections::VecDeque;
use std::time::Duration;

use rumqttc::{ConnectionError, Publish, QoS, SubscribeReasonCode};

use super::config::Command;
use super::mapping::Mapper;
use crate::device::listener::{Devices, Listener};
use crate::device::{Fault, WriteError};
use crate::ConnectorContext;
use osgate_core::net::mqtt::{Ack, Down, MqttSession, SessionEvent};
use osgate_core::reading::Value;
use std::sync::Arc;

/// The protocol side of one MQTT connector.
pub(super) struct MqttListener {
    pub(super) mqtt: MqttSession,
    /// The subscribed filters (for the log).
    pub(super) filters: Vec<String>,
    /// Messages that arrived while a write waited for its PUBACK.
    pub(super) pending: VecDeque<Publish>,
    pub(super) mapper: Mapper,
    /// `commands[device][channel]` of the configured devices.
    pub(super) commands: Vec<Vec<Option<Arc<Command>>>>,
    pub(super) write_timeout: Duration,
    pub(super) url: String,
    pub(super) ctx: ConnectorContext,
    pub(super) refused_subscription: bool,
}

impl MqttListener {
    /// Handles an event of the session other than a message or the end of the connection.
    fn on_event(&mut self, ev: SessionEvent) {
        match ev {
            SessionEvent::Due => self.mqtt.connect(),
            SessionEvent::Connected(c) => {
                tracing::info!(connector = %self.ctx.name, broker = %self.url,
                    session_present = c.session_present, "connected to the source broker");
                if !c.subscribed {
                    tracing::warn!(connector = %self.ctx.name, error = "the client's request queue is full",
                        "subscribe failed");
                }
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
            SessionEvent::Message(p) => self.pending.push_back(p),
            SessionEvent::Acks(_) | SessionEvent::Down(_) | SessionEvent::Closed => {}
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
        if let Some(p) = self.pending.pop_front() {
            return Ok(p);
        }
        loop {
            match self.mqtt.next().await {
                SessionEvent::Message(p) => return Ok(p),
                SessionEvent::Down(d) => return Err(self.connection_fault(&d)),
                other => self.on_event(other),
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
        self.mqtt.connect();
        let queued = match self.mqtt.client() {
            Some(c) => c
                .try_publish(cmd.topic.clone(), QoS::AtLeastOnce, cmd.retain, payload)
                .map_err(|e| e.to_string()),
            None => Err("no connection to the broker".into()),
        };
        queued.map_err(|e| WriteError::Offline(format!("cannot queue the command: {e}")))?;
        let limit = self.write_timeout;
        // Wait until the broker acknowledges our publish, keeping the messages that arrive
        // meanwhile for `next()`.
        let wait = async {
            let mut pkid = None;
            loop {
                match self.mqtt.next().await {
                    SessionEvent::Acks(acks) => {
                        for a in acks {
                            match a {
                                Ack::Sent(id) if pkid.is_none() => pkid = Some(id),
                                Ack::Acked(id) if Some(id) == pkid => return Ok(()),
                                _ => {}
                            }
                        }
                    }
                    SessionEvent::Down(d) => return Err(self.connection_fault(&d).message),
                    other => self.on_event(other),
                }
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(Ok(())) => Ok(raw),
            Ok(Err(e)) => Err(WriteError::Offline(e)),
            Err(_) => Err(WriteError::Offline(format!(
                "no PUBACK from {} within {}",
                self.url,
                humantime::format_duration(limit)
            ))),
        }
    }
}
