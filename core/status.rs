//! Health of the gateway: counters per connector and sink, status per device.
//!
//! Counters are plain atomics, bumped on the hot path without locks, read by snapshots (logs,
//! status topics, the JSON-RPC `gateway.status`). Device status changes are published by
//! [`crate::pipeline::DeviceOutput::set_status`] on `status/{gateway}/{connector}/{device}`
//! (retained) and kept here for queries.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use crate::reading::Timestamp;

/// Counters of one connector.
#[derive(Debug, Default)]
pub struct ConnectorCounters {
    /// Readings produced (after transforms) and handed to the pipeline.
    pub readings: AtomicU64,
    /// Batches handed to the pipeline.
    pub batches: AtomicU64,
    /// Readings suppressed by report strategies (deadband, on_change): normal, not lost.
    pub suppressed: AtomicU64,
    /// Readings dropped by a filter.
    pub filtered: AtomicU64,
    /// Readings with bad or stale quality.
    pub bad: AtomicU64,
    /// Batches dropped because a sink's queue was full (drop_newest policy).
    pub dropped: AtomicU64,
    /// Polls that started late because the pipeline pushed back.
    pub lagged: AtomicU64,
    /// Device or protocol errors (timeouts, exceptions, bad frames).
    pub errors: AtomicU64,
    /// Listeners: messages received (MQTT messages, HTTP pushes).
    pub messages: AtomicU64,
    /// Listeners: messages that no mapping or device took (counted, logged at debug).
    pub unmatched: AtomicU64,
    /// Listeners: messages of devices or channels refused (unknown device while new devices
    /// are not accepted, or over the configured maximum).
    pub refused: AtomicU64,
}

/// A point-in-time copy of [`ConnectorCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct ConnectorSnapshot {
    pub readings: u64,
    pub batches: u64,
    pub suppressed: u64,
    pub filtered: u64,
    pub bad: u64,
    pub dropped: u64,
    pub lagged: u64,
    pub errors: u64,
    #[serde(skip_serializing_if = "is_zero64")]
    pub messages: u64,
    #[serde(skip_serializing_if = "is_zero64")]
    pub unmatched: u64,
    #[serde(skip_serializing_if = "is_zero64")]
    pub refused: u64,
}

fn is_zero64(n: &u64) -> bool {
    *n == 0
}

impl ConnectorCounters {
    /// Copies the counters.
    pub fn snapshot(&self) -> ConnectorSnapshot {
        ConnectorSnapshot {
            readings: self.readings.load(Relaxed),
            batches: self.batches.load(Relaxed),
            suppressed: self.suppressed.load(Relaxed),
            filtered: self.filtered.load(Relaxed),
            bad: self.bad.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            lagged: self.lagged.load(Relaxed),
            errors: self.errors.load(Relaxed),
            messages: self.messages.load(Relaxed),
            unmatched: self.unmatched.load(Relaxed),
            refused: self.refused.load(Relaxed),
        }
    }
}

/// Counters of one sink.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Readings taken from the sink's queue.
    pub received: AtomicU64,
    /// Readings handed to the transport (for MQTT: PUBLISH written, not yet acknowledged).
    pub published: AtomicU64,
    /// Readings confirmed delivered (for MQTT QoS 1: PUBACK received; QoS 0: written).
    pub acked: AtomicU64,
    /// Readings dropped (queue or buffer overflow while the broker was away).
    pub dropped: AtomicU64,
    /// Transport errors (connection lost, refused…).
    pub errors: AtomicU64,
    /// Messages waiting in the sink's own buffer right now.
    pub buffered: AtomicU64,
    /// True while the sink's transport is up (MQTT: between CONNACK and the connection's end;
    /// stdout: while running).
    pub connected: AtomicBool,
    /// Why the last connect failed or the connection dropped (TLS, authentication, network);
    /// `None` once connected again. Set on change only, not per retry.
    pub last_error: Mutex<Option<String>>,
}

/// A point-in-time copy of [`SinkCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct SinkSnapshot {
    pub received: u64,
    pub published: u64,
    pub acked: u64,
    pub dropped: u64,
    pub errors: u64,
    pub buffered: u64,
    pub connected: bool,
    pub last_error: Option<String>,
}

impl SinkCounters {
    /// Copies the counters.
    pub fn snapshot(&self) -> SinkSnapshot {
        SinkSnapshot {
            received: self.received.load(Relaxed),
            published: self.published.load(Relaxed),
            acked: self.acked.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            errors: self.errors.load(Relaxed),
            buffered: self.buffered.load(Relaxed),
            connected: self.connected.load(Relaxed),
            last_error: self.last_error.lock().expect("status lock").clone(),
        }
    }

    /// Replaces the last error.
    pub fn set_last_error(&self, e: Option<String>) {
        *self.last_error.lock().expect("status lock") = e;
    }
}

/// Health of one device, as published on `status/{gateway}/{connector}/{device}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceStatus {
    /// The connector serving the device.
    #[serde(skip)]
    pub connector: Arc<str>,
    /// The device.
    #[serde(skip)]
    pub device: Arc<str>,
    /// True only while the device's task is actually running.
    pub running: bool,
    /// True while the device answers (also when some channels fail: see `health`).
    pub online: bool,
    /// `online` (every channel good), `degraded` (some channels failed in the last poll, see
    /// `bad_channels`), `offline` (no answer, or every channel failed: `last_error` says why),
    /// or `unknown` (not polled yet).
    pub health: Health,
    /// Channels that failed in the last poll (`degraded`).
    #[serde(skip_serializing_if = "is_zero")]
    pub bad_channels: u32,
    /// False when disabled by config or at run time.
    pub enabled: bool,
    /// Time of the last successful read.
    #[serde(serialize_with = "ser_ts")]
    pub last_ok: Option<Timestamp>,
    /// Errors since start.
    pub errors: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// The fields of a [`DeviceStatus`] whose change is worth a status message (all but `last_ok`
/// and `errors`); `E` is the error text, borrowed or owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusState<E> {
    flags: StateFlags,
    last_error: Option<E>,
}

/// The plain fields of a [`StatusState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StateFlags {
    running: bool,
    online: bool,
    health: Health,
    bad_channels: u32,
    enabled: bool,
}

impl StatusState<&str> {
    /// A copy that outlives the status it was taken from (allocates only for an error text).
    pub fn to_owned(&self) -> StatusState<String> {
        StatusState {
            flags: self.flags,
            last_error: self.last_error.map(str::to_owned),
        }
    }
}

impl StatusState<String> {
    /// The same state, borrowed (to compare with [`DeviceStatus::state`]).
    pub fn as_ref(&self) -> StatusState<&str> {
        StatusState {
            flags: self.flags,
            last_error: self.last_error.as_deref(),
        }
    }
}

/// A device's health, the same for every protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not polled yet (or no message yet, for listeners).
    #[default]
    Unknown,
    /// Every channel read fine.
    Online,
    /// The device answers, but some channels failed.
    Degraded,
    /// No answer, or every channel failed.
    Offline,
}

impl Health {
    /// The lowercase name (`online`, `degraded`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Online => "online",
            Health::Degraded => "degraded",
            Health::Offline => "offline",
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn ser_ts<S: serde::Serializer>(ts: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match ts {
        Some(t) => s.serialize_i64(t.0),
        None => s.serialize_none(),
    }
}

impl DeviceStatus {
    /// The status of a device that has not started yet.
    pub fn new(connector: Arc<str>, device: Arc<str>, enabled: bool) -> Self {
        DeviceStatus {
            connector,
            device,
            running: false,
            online: false,
            health: Health::Unknown,
            bad_channels: 0,
            enabled,
            last_ok: None,
            errors: 0,
            last_error: None,
        }
    }

    /// True when the published fields (all but `last_ok` and `errors`, which change on every
    /// poll) differ, i.e. when a new status message is worth sending.
    pub fn differs_in_state(&self, other: &DeviceStatus) -> bool {
        self.state() != other.state()
    }

    /// What [`DeviceStatus::differs_in_state`] compares, borrowed.
    pub fn state(&self) -> StatusState<&str> {
        StatusState {
            flags: StateFlags {
                running: self.running,
                online: self.online,
                health: self.health,
                bad_channels: self.bad_channels,
                enabled: self.enabled,
            },
            last_error: self.last_error.as_deref(),
        }
    }

    /// Becomes a copy of `other`, reusing this status's buffer for the error text.
    pub fn update_from(&mut self, other: &DeviceStatus) {
        if !Arc::ptr_eq(&self.connector, &other.connector) {
            self.connector = other.connector.clone();
        }
        if !Arc::ptr_eq(&self.device, &other.device) {
            self.device = other.device.clone();
        }
        self.running = other.running;
        self.online = other.online;
        self.health = other.health;
        self.bad_channels = other.bad_channels;
        self.enabled = other.enabled;
        self.last_ok = other.last_ok;
        self.errors = other.errors;
        self.last_error.clone_from(&other.last_error);
    }
}

/// Health of one connector: its counters and its devices.
#[derive(Debug, Default)]
pub struct ConnectorHealth {
    /// Counters, bumped by the connector and its [`crate::pipeline::DeviceOutput`]s.
    pub counters: ConnectorCounters,
    /// Latest status of each device.
    pub devices: Mutex<BTreeMap<Arc<str>, DeviceStatus>>,
    /// The connector's last error (e.g. why its task ended).
    pub last_error: Mutex<Option<String>>,
    /// Counters per input of a listener (an MQTT mapping, an HTTP endpoint), in config order.
    pub inputs: Mutex<Vec<(Arc<str>, Arc<InputCounters>)>>,
}

/// Counters of one input of a listener: an MQTT mapping, an HTTP ingest endpoint.
#[derive(Debug, Default)]
pub struct InputCounters {
    /// Messages the input took.
    pub messages: AtomicU64,
    /// Messages it could not decode (invalid JSON, a missing pointer, a wrong type, too big).
    pub bad: AtomicU64,
    /// Why the last bad message was bad.
    pub last_error: Mutex<Option<String>>,
}

/// A point-in-time copy of one input's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputSnapshot {
    /// The input (e.g. the mapping's topic).
    pub name: String,
    /// Messages taken.
    pub messages: u64,
    /// Bad messages.
    pub bad: u64,
    /// Why the last bad message was bad.
    pub last_error: Option<String>,
}

impl ConnectorHealth {
    /// Sets the connector's inputs (at build), keeping the counters of inputs of the same
    /// name from before a restart.
    pub fn set_inputs(&self, names: &[Arc<str>]) -> Vec<Arc<InputCounters>> {
        let mut inputs = self.inputs.lock().expect("status lock");
        let kept: Vec<(Arc<str>, Arc<InputCounters>)> = names
            .iter()
            .map(|n| {
                let c = inputs
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default();
                (n.clone(), c)
            })
            .collect();
        *inputs = kept;
        inputs.iter().map(|(_, c)| c.clone()).collect()
    }

    /// Copies the input counters.
    pub fn inputs_snapshot(&self) -> Vec<InputSnapshot> {
        self.inputs
            .lock()
            .expect("status lock")
            .iter()
            .map(|(n, c)| InputSnapshot {
                name: n.to_string(),
                messages: c.messages.load(Relaxed),
                bad: c.bad.load(Relaxed),
                last_error: c.last_error.lock().expect("status lock").clone(),
            })
            .collect()
    }
}

/// All health data of the gateway, shared by connectors, sinks, the service and the RPC server.
#[derive(Debug, Default)]
pub struct StatusRegistry {
    connectors: RwLock<BTreeMap<Arc<str>, Arc<ConnectorHealth>>>,
    sinks: RwLock<BTreeMap<Arc<str>, Arc<SinkCounters>>>,
    /// Where the running configuration came from, its age and the last refresh error
    /// (`status/{gateway}` and `gateway.status` follow it; `.borrow()` to read).
    pub config: tokio::sync::watch::Sender<crate::config::ConfigInfo>,
    /// The local broker's bridges to the cloud, as the MQTT sinks see them.
    pub uplink: Arc<crate::uplink::Uplink>,
    /// The gateway's listeners (JSON-RPC, HTTP ingests): their bound addresses and counters.
    pub listeners: crate::net::listen::Listeners,
}

impl StatusRegistry {
    /// The health record of a connector, created on first use (kept across restarts so that
    /// counters keep counting).
    pub fn connector(&self, name: &Arc<str>) -> Arc<ConnectorHealth> {
        if let Some(h) = self.connectors.read().expect("status lock").get(name) {
            return h.clone();
        }
        self.connectors
            .write()
            .expect("status lock")
            .entry(name.clone())
            .or_default()
            .clone()
    }

    /// The counters of a sink, created on first use.
    pub fn sink(&self, name: &Arc<str>) -> Arc<SinkCounters> {
        if let Some(h) = self.sinks.read().expect("status lock").get(name) {
            return h.clone();
        }
        self.sinks
            .write()
            .expect("status lock")
            .entry(name.clone())
            .or_default()
            .clone()
    }

    /// Forgets connectors and sinks that are no longer configured.
    pub fn retain(&self, connectors: &[Arc<str>], sinks: &[Arc<str>]) {
        self.connectors
            .write()
            .expect("status lock")
            .retain(|k, _| connectors.contains(k));
        self.sinks
            .write()
            .expect("status lock")
            .retain(|k, _| sinks.contains(k));
    }

    /// Every connector's health.
    pub fn connectors(&self) -> Vec<(Arc<str>, Arc<ConnectorHealth>)> {
        self.connectors
            .read()
            .expect("status lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Every sink's counters.
    pub fn sinks(&self) -> Vec<(Arc<str>, Arc<SinkCounters>)> {
        self.sinks
            .read()
            .expect("status lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_from_copies_every_field_and_state_ignores_the_counters() {
        let mut a = DeviceStatus::new("c".into(), "d".into(), true);
        let mut b = a.clone();
        b.running = true;
        b.online = true;
        b.health = Health::Degraded;
        b.bad_channels = 2;
        b.last_ok = Some(Timestamp(5));
        b.errors = 7;
        b.last_error = Some("timeout".into());
        assert!(a.differs_in_state(&b));
        a.update_from(&b);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert!(!a.differs_in_state(&b));
        b.errors += 1;
        b.last_ok = Some(Timestamp(6));
        assert!(!a.differs_in_state(&b), "counters and times are not state");
        b.last_error = Some("refused".into());
        assert!(a.differs_in_state(&b));
    }
}
