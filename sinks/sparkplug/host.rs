//! The primary host application: whether it is online, from its retained
//! `spBv1.0/STATE/{host_id}` messages (Sparkplug 3.0: JSON `{"online": bool, "timestamp": ms}`).
//!
//! With a `primary_host_id`, the edge node births only while its host is online; when the host
//! goes offline the node sends its NDEATH, disconnects and holds its data until the host is
//! back (`session.rs`). A STATE older than the last one taken is ignored, as the
//! specification asks (a retained message delivered late must not undo a newer one).

use serde::Deserialize;

/// The topic a host application publishes its state on.
pub fn state_topic(host_id: &str) -> String {
    format!("spBv1.0/STATE/{host_id}")
}

#[derive(Deserialize)]
struct StatePayload {
    online: bool,
    timestamp: u64,
}

/// A STATE payload: `Some((online, timestamp))`, or `None` when it is not one.
pub fn parse_state(payload: &[u8]) -> Option<(bool, u64)> {
    let s: StatePayload = serde_json::from_slice(payload).ok()?;
    Some((s.online, s.timestamp))
}

/// What the node knows of its primary host.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Host {
    /// The host said it is online (and has not said otherwise since).
    pub online: bool,
    /// Timestamp of the STATE message taken last.
    last: Option<u64>,
}

/// What a STATE message changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostChange {
    /// The host came online: the node may be born.
    Online,
    /// The host went offline: NDEATH, disconnect, hold data.
    Offline,
    /// Nothing (same state, older timestamp, or not a STATE payload).
    None,
}

impl Host {
    /// Takes a STATE payload.
    pub fn take(&mut self, payload: &[u8]) -> HostChange {
        let Some((online, ts)) = parse_state(payload) else {
            return HostChange::None;
        };
        if self.last.is_some_and(|l| ts < l) {
            return HostChange::None;
        }
        self.last = Some(ts);
        match (self.online, online) {
            (false, true) => {
                self.online = true;
                HostChange::Online
            }
            (true, false) => {
                self.online = false;
                HostChange::Offline
            }
            _ => HostChange::None,
        }
    }

    /// A new connection: the broker sends the retained STATE again after the subscription;
    /// until then the host counts as offline. The last timestamp is kept.
    pub fn reconnected(&mut self) {
        self.online = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_offline_and_stale_messages() {
        let mut h = Host::default();
        assert_eq!(
            h.take(b"{\"online\":false,\"timestamp\":5}"),
            HostChange::None
        );
        assert_eq!(
            h.take(b"{\"online\":true,\"timestamp\":6}"),
            HostChange::Online
        );
        assert_eq!(
            h.take(b"{\"online\":true,\"timestamp\":7}"),
            HostChange::None
        );
        // An older message (a late retained copy) changes nothing.
        assert_eq!(
            h.take(b"{\"online\":false,\"timestamp\":3}"),
            HostChange::None
        );
        assert!(h.online);
        assert_eq!(
            h.take(b"{\"online\":false,\"timestamp\":8}"),
            HostChange::Offline
        );
        assert_eq!(h.take(b"ONLINE"), HostChange::None);
        assert_eq!(state_topic("scada"), "spBv1.0/STATE/scada");
    }
}
