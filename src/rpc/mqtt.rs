//! Management through the local broker: MQTT commands and (opt-in) JSON-RPC over MQTT.
//!
//! - `command/{gateway}/{device}/{channel}/set` with `{"value":42,"id":"abc"}` writes the channel
//!   through the same path as `device.write` ([`super::write`]) and answers on
//!   `command/{gateway}/{device}/{channel}/result` with `{"id":"abc","ok":true,"value":42}` or
//!   `{"id":"abc","ok":false,"error":"…"}`. A command arriving with the retain flag is
//!   ignored: it is the broker's stored copy, delivered at every (re)subscription, and a stale
//!   set-point must not be written again. (A retained publish reaches subscribers already
//!   connected with the flag cleared, so that one is executed once; docs/management.md, "MQTT commands".)
//! - A command payload may be at most [`MAX_COMMAND_PAYLOAD`] bytes and an RPC request at most
//!   [`super::MAX_REQUEST_BODY`]; a larger one is refused with an error on the answer topic and
//!   a warning in the log. The client takes messages of up to [`MAX_PACKET`] bytes; the
//!   broker can still send a larger one, which ends the connection (logged, then reconnected).
//! - With `rpc.mqtt: true`, a JSON-RPC request on `rpc/{gateway}/request` is answered on
//!   `rpc/{gateway}/response` by the same module as HTTP (single requests; no subscriptions).
//!   There is no API key on this path: trust comes from the broker's ACLs.
//!
//! One MQTT session in its own task ([`crate::net::mqtt::MqttSession`], the driver every MQTT
//! client of osgate runs on), to the broker of the first enabled MQTT sink, with that sink's
//! URL, credentials and TLS; reconnects with a capped backoff, and the session is clean, so it
//! subscribes again on every ConnAck. Handlers run in their own tasks (a device write can take
//! seconds) and hand their answer back to the session's task, which publishes it on the
//! connection of the moment, or holds it (with the audit events, [`HELD`] at most; beyond that
//! handlers wait and audit events are dropped) until there is one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::Methods;
use rumqttc::{ConnectionError, Publish, QoS, StateError, SubscribeFilter};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{Caller, Role};
use crate::backoff::Backoff;
use crate::config::GatewayConfig;
use crate::control::{ControlRegistry, DeviceError};
use crate::net::mqtt::{MqttSession, SessionEvent};
use crate::sinks::mqtt::MqttSinkConfig;
use crate::sinks::SinkKind;

/// Largest command payload (`…/set`) accepted: a set-point is a few bytes.
pub const MAX_COMMAND_PAYLOAD: usize = 64 * 1024;
/// Largest MQTT packet the command client reads: large enough to read, refuse and answer any
/// oversized command or request, small enough to bound memory.
pub const MAX_PACKET: usize = 16 * 1024 * 1024;
/// Answers and audit events held while there is no connection (or its queue is full).
pub const HELD: usize = 64;

/// A message for the broker: topic and payload, published at QoS 1, not retained.
type Outgoing = (String, String);

/// The MQTT sink whose broker carries commands: the first enabled one.
pub fn command_sink(cfg: &GatewayConfig) -> Option<MqttSinkConfig> {
    cfg.sinks
        .iter()
        .filter(|s| s.common.enabled)
        .find_map(|s| match &s.kind {
            SinkKind::Mqtt(m) => Some((**m).clone()),
            _ => None,
        })
}

/// Splits `command/{gateway}/{device}/{channel}/set` into device and channel.
pub fn parse_command_topic<'a>(gateway: &str, topic: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = topic.strip_prefix("command/")?.strip_prefix(gateway)?;
    let rest = rest.strip_prefix('/')?.strip_suffix("/set")?;
    let (device, channel) = rest.split_once('/')?;
    (!device.is_empty() && !channel.is_empty() && !channel.contains('/'))
        .then_some((device, channel))
}

/// Parses a command payload: `{"value": …, "id": …}` (`id` optional, echoed back).
pub fn parse_command(payload: &[u8]) -> (Value, Result<Value, String>) {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(mut o)) => {
            let id = o.remove("id").unwrap_or(Value::Null);
            match o.remove("value") {
                Some(v) => (id, Ok(v)),
                None => (
                    id,
                    Err(
                        "invalid command: missing \"value\" (expected {\"value\":…,\"id\":…})"
                            .into(),
                    ),
                ),
            }
        }
        Ok(_) => (
            Value::Null,
            Err("invalid command: expected a JSON object {\"value\":…,\"id\":…}".into()),
        ),
        Err(e) => (Value::Null, Err(format!("invalid command: not JSON: {e}"))),
    }
}

/// Starts the command client.
pub fn spawn(
    sink: MqttSinkConfig,
    gateway: String,
    control: Arc<ControlRegistry>,
    rpc: Option<Methods>,
    token: CancellationToken,
) -> JoinHandle<()> {
    // RPC over MQTT has no key: trust comes from the broker's ACLs; its calls are `mqtt`'s.
    let rpc = rpc.map(|mut m| {
        m.extensions_mut().insert(Caller {
            name: "mqtt".into(),
            role: Role::Admin,
        });
        m
    });
    let mut events = control.audit().publisher(&gateway);
    tokio::spawn(async move {
        let mut settings = sink.client_settings(format!("osgate-{gateway}-commands"));
        settings.clean_session = true;
        settings.keep_alive = Duration::from_secs(30);
        settings.max_packet_size = Some(MAX_PACKET);
        if let Err(e) = settings.options() {
            tracing::error!(broker = %sink.url, error = %e, "MQTT commands disabled");
            return;
        }
        let set_filter = format!("command/{gateway}/+/+/set");
        let rpc_topic = format!("rpc/{gateway}/request");
        let events_topic = format!("events/{gateway}");
        let gateway: Arc<str> = gateway.into();
        let mut filters = vec![SubscribeFilter::new(set_filter.clone(), QoS::AtLeastOnce)];
        if rpc.is_some() {
            filters.push(SubscribeFilter::new(rpc_topic.clone(), QoS::AtLeastOnce));
        }
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut mqtt = MqttSession::new(settings, backoff, 64).subscribe(filters);
        let (answers_tx, mut answers) = mpsc::channel::<Outgoing>(HELD);
        let mut held: VecDeque<Outgoing> = VecDeque::new();
        loop {
            // What waited for a connection, or for room in the client's queue (every PUBACK
            // makes some).
            flush(&mqtt, &mut held);
            let ev = tokio::select! {
                _ = token.cancelled() => break,
                ev = mqtt.next() => ev,
                // While HELD messages wait, the handlers wait to hand in their answers.
                Some(a) = answers.recv(), if held.len() < HELD => {
                    publish(&mqtt, &mut held, a);
                    continue;
                }
                Some(e) = events.recv() => {
                    // Audit events (crate::audit): QoS 1, not retained.
                    if !publish(&mqtt, &mut held, (events_topic.clone(), e)) {
                        tracing::debug!("audit event not published: the MQTT client's queue is full");
                    }
                    continue;
                }
            };
            match ev {
                SessionEvent::Due => mqtt.connect(),
                SessionEvent::Connected(_) => {
                    tracing::debug!(filter = %set_filter, "MQTT commands subscribed");
                }
                SessionEvent::Message(p) => {
                    if p.topic == rpc_topic {
                        if let Some(m) = &rpc {
                            tokio::spawn(answer_rpc(
                                m.clone(),
                                answers_tx.clone(),
                                gateway.clone(),
                                p.payload.to_vec(),
                            ));
                        }
                    } else if let Some((device, channel)) = parse_command_topic(&gateway, &p.topic)
                    {
                        if p.retain {
                            tracing::warn!(topic = %p.topic, "retained command ignored (publish commands without the retain flag)");
                            continue;
                        }
                        tokio::spawn(answer_command(
                            control.clone(),
                            answers_tx.clone(),
                            gateway.clone(),
                            device.to_string(),
                            channel.to_string(),
                            p.payload.to_vec(),
                        ));
                    }
                }
                SessionEvent::Down(d) => match &d.error {
                    Some(ConnectionError::MqttState(StateError::Deserialization(
                        rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(n),
                    ))) => {
                        tracing::warn!(
                            bytes = n,
                            limit = MAX_PACKET,
                            "MQTT command client dropped a message larger than its limit; reconnecting"
                        );
                    }
                    error => {
                        // TLS and authentication failures are worth a warning (once per change);
                        // a broker that is away is already reported by the sink.
                        let known = error
                            .as_ref()
                            .is_none_or(|e| crate::net::cause::classify(e).is_some());
                        if known && d.new_cause {
                            tracing::warn!(broker = %sink.url, error = %d.cause, "MQTT command connection failed; retrying with backoff");
                        } else {
                            tracing::debug!(error = %d.cause, retry_in = ?d.retry_in, "MQTT command connection still failing");
                        }
                    }
                },
                SessionEvent::Acks(_) | SessionEvent::SubAck(_) | SessionEvent::Closed => {}
            }
        }
        mqtt.close(Duration::from_secs(1)).await;
    })
}

/// Publishes `m` on the current connection, or holds it for the next one (behind what is held
/// already); false when it is dropped ([`HELD`] messages wait already).
fn publish(mqtt: &MqttSession, held: &mut VecDeque<Outgoing>, m: Outgoing) -> bool {
    if held.len() >= HELD {
        return false;
    }
    held.push_back(m);
    flush(mqtt, held);
    true
}

/// Hands the held messages to the client, in order, while it is connected and takes them.
fn flush(mqtt: &MqttSession, held: &mut VecDeque<Outgoing>) {
    if !mqtt.is_connected() {
        return;
    }
    while let Some((topic, payload)) = held.front() {
        let p = Publish::new(topic.as_str(), QoS::AtLeastOnce, payload.as_bytes());
        if mqtt.publish(vec![p]).is_err() {
            break;
        }
        held.pop_front();
    }
}

async fn answer_command(
    control: Arc<ControlRegistry>,
    answers: mpsc::Sender<Outgoing>,
    gateway: Arc<str>,
    device: String,
    channel: String,
    payload: Vec<u8>,
) {
    let (id, value) = if payload.len() > MAX_COMMAND_PAYLOAD {
        tracing::warn!(%device, %channel, bytes = payload.len(), limit = MAX_COMMAND_PAYLOAD, "MQTT command refused: payload too large");
        (
            Value::Null,
            Err(format!(
                "invalid command: payload of {} bytes, at most {MAX_COMMAND_PAYLOAD} allowed",
                payload.len()
            )),
        )
    } else {
        parse_command(&payload)
    };
    let mut connector = None;
    let mut asked = None;
    let result = match value {
        Err(e) => Err(e),
        Ok(v) => {
            asked = Some(v.clone());
            match control.connector_of(&device) {
                None => Err(DeviceError::UnknownDevice(device.clone()).to_string()),
                Some(c) => {
                    connector = Some(c.clone());
                    super::write(&control, &c, &device, &channel, v)
                        .await
                        .map_err(|e| e.to_string())
                }
            }
        }
    };
    control.audit().record(&crate::audit::AuditEvent {
        gateway: &gateway,
        who: "mqtt",
        method: "command",
        connector: connector.as_deref(),
        device: Some(&device),
        channel: Some(&channel),
        value: result.as_ref().ok().or(asked.as_ref()),
        result: result.as_ref().map(|_| ()).map_err(String::as_str),
        ..Default::default()
    });
    let body = match result {
        Ok(v) => json!({"id": id, "ok": true, "value": v}),
        Err(e) => json!({"id": id, "ok": false, "error": e}),
    };
    let topic = format!("command/{gateway}/{device}/{channel}/result");
    if let Err(e) = answers.send((topic, body.to_string())).await {
        tracing::warn!(error = %e, "command result not published");
    }
}

async fn answer_rpc(
    mut methods: Methods,
    answers: mpsc::Sender<Outgoing>,
    gateway: Arc<str>,
    payload: Vec<u8>,
) {
    let text = String::from_utf8_lossy(&payload);
    let checked = if payload.len() > super::MAX_REQUEST_BODY as usize {
        tracing::warn!(
            bytes = payload.len(),
            limit = super::MAX_REQUEST_BODY,
            "JSON-RPC request over MQTT refused: too large"
        );
        Err(super::guard::Rejection(json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {
                "code": jsonrpsee::types::error::OVERSIZED_REQUEST_CODE,
                "message": jsonrpsee::types::error::OVERSIZED_REQUEST_MSG,
                "data": format!("Exceeded max limit of {}", super::MAX_REQUEST_BODY),
            },
        })))
    } else {
        super::guard::check_request(&payload, false)
    };
    let checked = checked.and_then(|()| role_check(&mut methods, &payload));
    let response = match checked {
        Err(super::guard::Rejection(answer)) => Ok(answer.to_string()),
        Ok(()) => methods
            .raw_json_request(&text, 1)
            .await
            .map(|(resp, _subscriptions)| resp.get().to_string()),
    };
    let response = match response {
        Ok(resp) => resp,
        Err(e) => json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {"code": -32700, "message": format!("Parse error: {e}")},
        })
        .to_string(),
    };
    let topic = format!("rpc/{gateway}/response");
    if let Err(e) = answers.send((topic, response)).await {
        tracing::warn!(error = %e, "RPC response not published");
    }
}

/// The role check of [`super::roles`] for a single call over MQTT (the caller is `mqtt`).
fn role_check(methods: &mut Methods, payload: &[u8]) -> Result<(), super::guard::Rejection> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(default)]
        id: Value,
        method: String,
    }
    let Ok(head) = serde_json::from_slice::<Head>(payload) else {
        return Ok(());
    };
    let caller = methods
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(super::roles::local);
    super::roles::check(&caller, &head.method)
        .map_err(|e| super::guard::Rejection(json!({"jsonrpc": "2.0", "id": head.id, "error": e})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_topics() {
        assert_eq!(
            parse_command_topic("gw", "command/gw/pump/speed/set"),
            Some(("pump", "speed"))
        );
        assert_eq!(
            parse_command_topic("gw", "command/gw2/pump/speed/set"),
            None
        );
        assert_eq!(parse_command_topic("gw", "command/gw/pump/set"), None);
        assert_eq!(
            parse_command_topic("gw", "command/gw/pump/speed/result"),
            None
        );
        assert_eq!(parse_command_topic("gw", "command/gw/a/b/c/set"), None);
    }

    #[test]
    fn command_payloads() {
        assert_eq!(
            parse_command(br#"{"value":42,"id":"abc"}"#),
            (json!("abc"), Ok(json!(42)))
        );
        assert_eq!(
            parse_command(br#"{"value":true}"#),
            (Value::Null, Ok(json!(true)))
        );
        let (id, r) = parse_command(br#"{"id":7}"#);
        assert_eq!(id, json!(7));
        assert!(r.unwrap_err().contains("missing \"value\""));
        assert!(parse_command(b"42").1.is_err());
        assert!(parse_command(b"{nope").1.unwrap_err().contains("not JSON"));
    }

    fn payload() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let value = prop_oneof![
            Just("42".to_string()),
            Just("1e999".to_string()),
            Just("-18446744073709551617".to_string()),
            Just("\"🦀\\u0000\"".to_string()),
            (1usize..200_000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
            (1usize..200_000).prop_map(|n| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n))),
        ];
        let id = prop_oneof![
            Just("\"abc\"".to_string()),
            Just("{}".to_string()),
            Just("null".to_string())
        ];
        prop_oneof![
            (value, id).prop_map(|(v, i)| format!(r#"{{"value":{v},"id":{i}}}"#).into_bytes()),
            prop::collection::vec(any::<u8>(), 0..256),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: crate::rpc::fuzz_cases(),
            ..Default::default()
        })]

        /// No payload makes the command parser panic: a value and an id, or an error.
        #[test]
        fn command_payload_parsing_never_panics(p in payload()) {
            let (_id, r) = parse_command(&p);
            if let Err(e) = r {
                proptest::prop_assert!(e.starts_with("invalid command"));
            }
        }
    }
}
