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
//! One rumqttc client in its own task, to the broker of the first enabled MQTT sink, with that
//! sink's URL, credentials and TLS ([`crate::net::mqtt`]). rumqttc
//! reconnects on the next poll after an error, so the loop sleeps with a capped backoff first;
//! the session is clean, so it subscribes again on every ConnAck. Handlers run in their own
//! tasks (a device write can take seconds) and publish with `publish().await`, which is fine
//! there because they are not the task polling the event loop.

use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::Methods;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{Caller, Role};
use crate::backoff::Backoff;
use crate::config::GatewayConfig;
use crate::control::{ControlRegistry, DeviceError};
use crate::sinks::mqtt::MqttSinkConfig;
use crate::sinks::SinkKind;

/// Largest command payload (`…/set`) accepted: a set-point is a few bytes.
pub const MAX_COMMAND_PAYLOAD: usize = 64 * 1024;
/// Largest MQTT packet the command client reads: large enough to read, refuse and answer any
/// oversized command or request, small enough to bound memory.
pub const MAX_PACKET: usize = 16 * 1024 * 1024;

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
        let opts = match settings.options() {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(broker = %sink.url, error = %e, "MQTT commands disabled");
                return;
            }
        };
        let (client, mut el) = AsyncClient::new(opts, 64);
        let mut last_error: Option<String> = None;
        let set_filter = format!("command/{gateway}/+/+/set");
        let rpc_topic = format!("rpc/{gateway}/request");
        let events_topic = format!("events/{gateway}");
        let gateway: Arc<str> = gateway.into();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let ev = tokio::select! {
                _ = token.cancelled() => break,
                ev = el.poll() => ev,
                Some(e) = events.recv() => {
                    // Audit events (crate::audit): QoS 1, not retained.
                    if client.try_publish(events_topic.clone(), QoS::AtLeastOnce, false, e).is_err() {
                        tracing::debug!("audit event not published: the MQTT client's queue is full");
                    }
                    continue;
                }
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.reset();
                    last_error = None;
                    let _ = client.try_subscribe(set_filter.clone(), QoS::AtLeastOnce);
                    if rpc.is_some() {
                        let _ = client.try_subscribe(rpc_topic.clone(), QoS::AtLeastOnce);
                    }
                    tracing::debug!(filter = %set_filter, "MQTT commands subscribed");
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if p.topic == rpc_topic {
                        if let Some(m) = &rpc {
                            tokio::spawn(answer_rpc(
                                m.clone(),
                                client.clone(),
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
                            client.clone(),
                            gateway.clone(),
                            device.to_string(),
                            channel.to_string(),
                            p.payload.to_vec(),
                        ));
                    }
                }
                Ok(_) => {}
                Err(rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                    rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(n),
                ))) => {
                    tracing::warn!(
                        bytes = n,
                        limit = MAX_PACKET,
                        "MQTT command client dropped a message larger than its limit; reconnecting"
                    );
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
                Err(e) => {
                    // TLS and authentication failures are worth a warning (once per change);
                    // a broker that is away is already reported by the sink.
                    let wait = backoff.next_delay();
                    let known = crate::net::cause::classify(&e).is_some();
                    let e = crate::net::describe_error(&e);
                    if known && last_error.as_deref() != Some(e.as_str()) {
                        tracing::warn!(broker = %sink.url, error = %e, "MQTT command connection failed; retrying with backoff");
                    } else {
                        tracing::debug!(error = %e, retry_in = ?wait, "MQTT command connection still failing");
                    }
                    last_error = Some(e);
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        let _ = client.try_disconnect();
    })
}

async fn answer_command(
    control: Arc<ControlRegistry>,
    client: AsyncClient,
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
    if let Err(e) = client
        .publish(topic, QoS::AtLeastOnce, false, body.to_string())
        .await
    {
        tracing::warn!(error = %e, "command result not published");
    }
}

async fn answer_rpc(
    mut methods: Methods,
    client: AsyncClient,
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
    if let Err(e) = client
        .publish(topic, QoS::AtLeastOnce, false, response)
        .await
    {
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
