//! The uplink: whether the local broker's bridges to the cloud are connected.
//!
//! osgate hands its data to a local broker (mosquitto) that bridges it to the cloud; a healthy
//! sink says nothing about that second hop. mosquitto publishes the state of each bridge as a
//! retained `$SYS/broker/connection/<name>/state` message (`1` connected, `0` not), where
//! `<name>` is the bridge's remote client id. The MQTT sink subscribes to those topics on the
//! broker it is connected to and records them here ([`Uplink::set`]); `gateway.status`, the
//! retained `status/{gateway}` message and `/metrics` (`osgate_uplink_connected{bridge}`) read
//! them. When the sink loses its broker, what it had learned is forgotten
//! ([`Uplink::forget_sink`]): the bridges' state is unknown then, not "as last seen".

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;

/// The topic filter the MQTT sink subscribes to.
pub const STATE_TOPICS: &str = "$SYS/broker/connection/+/state";

/// One bridge of the local broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bridge {
    /// The bridge's name as mosquitto publishes it (its remote client id).
    pub name: String,
    /// Whether the bridge is connected to its remote broker.
    pub connected: bool,
    /// Since when it is in this state, as far as osgate saw (ms since the epoch).
    pub since: i64,
    /// The sink that reported it.
    #[serde(skip)]
    pub sink: Arc<str>,
}

/// The bridges known, shared by the MQTT sinks (writers) and the management API (readers).
#[derive(Debug)]
pub struct Uplink {
    tx: watch::Sender<BTreeMap<String, Bridge>>,
}

impl Default for Uplink {
    fn default() -> Self {
        Uplink {
            tx: watch::Sender::new(BTreeMap::new()),
        }
    }
}

/// The bridge name and state of a `$SYS/broker/connection/<name>/state` message; `None` for
/// any other topic or a payload other than `0`/`1`.
pub fn parse_state<'a>(topic: &'a str, payload: &[u8]) -> Option<(&'a str, bool)> {
    let name = topic
        .strip_prefix("$SYS/broker/connection/")?
        .strip_suffix("/state")?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    match payload.trim_ascii() {
        b"1" => Some((name, true)),
        b"0" => Some((name, false)),
        _ => None,
    }
}

impl Uplink {
    /// Records the state of `bridge` as seen by `sink` at `now` (ms); `since` changes only when
    /// the state does. Watchers are told only about a change.
    pub fn set(&self, sink: &Arc<str>, bridge: &str, connected: bool, now: i64) {
        self.tx.send_if_modified(|m| match m.get_mut(bridge) {
            Some(b) if b.connected == connected => {
                b.sink = sink.clone();
                false
            }
            Some(b) => {
                b.connected = connected;
                b.since = now;
                b.sink = sink.clone();
                true
            }
            None => {
                m.insert(
                    bridge.to_string(),
                    Bridge {
                        name: bridge.to_string(),
                        connected,
                        since: now,
                        sink: sink.clone(),
                    },
                );
                true
            }
        });
    }

    /// Forgets the bridges `sink` reported (it lost its broker, or it stopped).
    pub fn forget_sink(&self, sink: &str) {
        self.tx.send_if_modified(|m| {
            let before = m.len();
            m.retain(|_, b| &*b.sink != sink);
            m.len() != before
        });
    }

    /// The bridges, by name.
    pub fn bridges(&self) -> Vec<Bridge> {
        self.tx.borrow().values().cloned().collect()
    }

    /// `true` when every known bridge is connected, `false` when one is not, `None` when no
    /// bridge is known (no bridged broker, or its state not seen yet).
    pub fn connected(&self) -> Option<bool> {
        let m = self.tx.borrow();
        (!m.is_empty()).then(|| m.values().all(|b| b.connected))
    }

    /// `{"bridges": [{"name", "connected", "since"}], "connected": bool|null}`.
    pub fn to_json(&self) -> Value {
        json!({"bridges": self.bridges(), "connected": self.connected()})
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<BTreeMap<String, Bridge>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_topics_parse() {
        assert_eq!(
            parse_state("$SYS/broker/connection/edge-gw-bridge/state", b"1"),
            Some(("edge-gw-bridge", true))
        );
        assert_eq!(
            parse_state("$SYS/broker/connection/b/state", b"0\n"),
            Some(("b", false))
        );
        assert_eq!(parse_state("$SYS/broker/connection/b/state", b"x"), None);
        assert_eq!(parse_state("$SYS/broker/connection//state", b"1"), None);
        assert_eq!(parse_state("$SYS/broker/uptime", b"1"), None);
        assert_eq!(parse_state("$SYS/broker/connection/a/b/state", b"1"), None);
    }

    #[test]
    fn state_changes_move_since_and_forgetting_is_per_sink() {
        let u = Uplink::default();
        let mut rx = u.subscribe();
        let (s1, s2): (Arc<str>, Arc<str>) = ("local".into(), "other".into());
        assert_eq!(u.connected(), None);
        u.set(&s1, "cloud", true, 10);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        u.set(&s1, "cloud", true, 20);
        assert!(!rx.has_changed().unwrap(), "same state is no change");
        assert_eq!(u.bridges()[0].since, 10);
        u.set(&s2, "backup", true, 30);
        assert_eq!(u.connected(), Some(true));
        u.set(&s1, "cloud", false, 40);
        assert_eq!(u.connected(), Some(false));
        assert_eq!(
            u.to_json()["bridges"][1],
            json!({"name": "cloud", "connected": false, "since": 40})
        );
        u.forget_sink("local");
        assert_eq!(u.bridges().len(), 1);
        assert_eq!(u.connected(), Some(true));
        u.forget_sink("other");
        assert_eq!(u.to_json(), json!({"bridges": [], "connected": null}));
    }
}
