//! The audit trail: one event per change, whichever path made it (JSON-RPC over HTTP or
//! WebSocket, RPC over MQTT, MQTT commands, a reload by SIGHUP or by the remote configuration,
//! a Sparkplug DCMD).
//!
//! [`Trail::record`] logs the event at INFO as one structured tracing event (target `audit`) and
//! hands it to the gateway's MQTT command client, if one runs ([`Trail::publisher`]), which
//! publishes it QoS 1, not retained, on `events/{gateway}`, so a fleet sees it through the
//! bridge:
//!
//! ```json
//! {"ts": 1732350000123, "who": "scada", "peer": "10.0.0.7:50412", "method": "device.write",
//!  "connector": "plc", "device": "pump", "channel": "speed", "value": 42, "before": 40,
//!  "result": "ok"}
//! ```
//!
//! `who` is the API key's name, or `mqtt` (MQTT commands and RPC over MQTT), `signal` (SIGHUP),
//! `remote` (the remote configuration); absent fields are left out; a failure has
//! `"result": "error"` and `"error": "…"`. Publishing never waits: when the client's queue is
//! full an event is only logged.
//!
//! Each gateway has its own [`Trail`] (in its `ControlRegistry`), not one per process: two
//! gateways in one process (the in-process test harness) never publish each other's events.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::mpsc;

/// Events waiting for the MQTT client, per gateway.
pub const QUEUE: usize = 256;

/// One change.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    /// The gateway id (the topic `events/{gateway}`).
    pub gateway: &'a str,
    /// The key's name, or `mqtt`, `signal`, `remote`.
    pub who: &'a str,
    /// The client's address, where there is one.
    pub peer: Option<SocketAddr>,
    /// What was done: the JSON-RPC method, `command` (an MQTT command), `reload`.
    pub method: &'a str,
    /// The connector concerned.
    pub connector: Option<&'a str>,
    /// The device concerned.
    pub device: Option<&'a str>,
    /// The channel concerned.
    pub channel: Option<&'a str>,
    /// The value written (or asked for, when it failed).
    pub value: Option<&'a Value>,
    /// The value before the change, where it is known.
    pub before: Option<&'a Value>,
    /// `Err(reason)` when the change failed or was refused.
    pub result: Result<(), &'a str>,
}

impl Default for AuditEvent<'_> {
    fn default() -> Self {
        AuditEvent {
            gateway: "",
            who: "",
            peer: None,
            method: "",
            connector: None,
            device: None,
            channel: None,
            value: None,
            before: None,
            result: Ok(()),
        }
    }
}

impl AuditEvent<'_> {
    /// The event as published.
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("ts".into(), crate::reading::Timestamp::now().0.into());
        o.insert("who".into(), self.who.into());
        if let Some(p) = self.peer {
            o.insert("peer".into(), p.to_string().into());
        }
        o.insert("method".into(), self.method.into());
        for (k, v) in [
            ("connector", self.connector),
            ("device", self.device),
            ("channel", self.channel),
        ] {
            if let Some(v) = v {
                o.insert(k.into(), v.into());
            }
        }
        if let Some(v) = self.value {
            o.insert("value".into(), v.clone());
        }
        if let Some(v) = self.before {
            o.insert("before".into(), v.clone());
        }
        match self.result {
            Ok(()) => {
                o.insert("result".into(), "ok".into());
            }
            Err(e) => {
                o.insert("result".into(), "error".into());
                o.insert("error".into(), e.into());
            }
        }
        Value::Object(o)
    }
}

/// One gateway's audit trail: where its events are handed over to be published. Clones share
/// it.
#[derive(Debug, Clone, Default)]
pub struct Trail(Arc<Mutex<Vec<Publisher>>>);

/// A gateway id and where its events go.
type Publisher = (String, mpsc::Sender<String>);

impl Trail {
    /// Where `gateway`'s events go to be published on `events/{gateway}`: the receiver of the
    /// MQTT client (the command client). Dropping it stops the hand-over.
    pub fn publisher(&self, gateway: &str) -> mpsc::Receiver<String> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut p = self.0.lock().expect("audit publishers");
        p.retain(|(_, tx)| !tx.is_closed());
        p.push((gateway.to_string(), tx));
        rx
    }

    /// Records one change: an INFO event with target `audit`, and the JSON on
    /// `events/{gateway}` when an MQTT client publishes them.
    pub fn record(&self, e: &AuditEvent<'_>) {
        let value = e.value.map(|v| v.to_string());
        let before = e.before.map(|v| v.to_string());
        let peer = e.peer.map(|p| p.to_string());
        let (result, error) = match e.result {
            Ok(()) => ("ok", None),
            Err(r) => ("error", Some(r)),
        };
        tracing::info!(target: "audit", gateway = e.gateway, who = e.who, peer, method = e.method,
            connector = e.connector, device = e.device, channel = e.channel, value, before, result,
            error, "audit");
        let p = self.0.lock().expect("audit publishers");
        let mut text = None;
        for (gw, tx) in p.iter().filter(|(gw, _)| gw == e.gateway) {
            let t = text.get_or_insert_with(|| e.to_json().to_string()).clone();
            if tx.try_send(t).is_err() && !tx.is_closed() {
                tracing::debug!(gateway = %gw, "audit event not published: the MQTT client's queue is full");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn events_reach_their_gateways_publisher_only() {
        let trail = Trail::default();
        let other = Trail::default();
        let mut a = trail.publisher("audit-test-a");
        let mut b = trail.publisher("audit-test-b");
        let mut c = other.publisher("audit-test-a");
        let v = json!(42);
        trail.record(&AuditEvent {
            gateway: "audit-test-a",
            who: "scada",
            peer: Some("10.0.0.7:50412".parse().unwrap()),
            method: "device.write",
            device: Some("pump"),
            channel: Some("speed"),
            value: Some(&v),
            result: Err("device \"pump\" is disabled"),
            ..Default::default()
        });
        let got: Value = serde_json::from_str(&a.recv().await.unwrap()).unwrap();
        assert_eq!(got["who"], "scada");
        assert_eq!(got["peer"], "10.0.0.7:50412");
        assert_eq!(got["value"], 42);
        assert_eq!(got["result"], "error");
        assert!(got["error"].as_str().unwrap().contains("disabled"));
        assert!(got.get("before").is_none() && got.get("connector").is_none());
        assert!(b.try_recv().is_err());
        // Another gateway's trail (another gateway in the same process) hears nothing.
        assert!(c.try_recv().is_err());
    }
}
