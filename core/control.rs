//! Run-time control of devices: enable/disable, read now, write a channel.
//!
//! Each running device registers with the [`ControlRegistry`] (the connector kit does it, see
//! `connectors/device`): its requests (JSON-RPC `device.read`/`device.write`, MQTT commands)
//! go to the [`Inbox`] of the task that serves it, and it gets an [`EnabledFlag`] the registry
//! flips (waking that task). The registry outlives connector restarts and reloads, so a
//! device disabled at run time stays disabled until it is enabled again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, Notify};

use crate::reading::Reading;

/// Why a device request failed. The messages are shown to operators as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// No such device in the running configuration.
    #[error("unknown device \"{0}\"")]
    UnknownDevice(String),
    /// No such channel on the device.
    #[error("device \"{device}\" has no channel \"{channel}\"")]
    UnknownChannel {
        /// The device.
        device: String,
        /// The channel asked for.
        channel: String,
    },
    /// The channel is not configured `writable`.
    #[error("channel \"{0}\" is not writable")]
    NotWritable(String),
    /// The value does not fit the channel's type or range.
    #[error("value out of range for channel \"{channel}\": {reason}")]
    OutOfRange {
        /// The channel.
        channel: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// The device is disabled.
    #[error("device \"{0}\" is disabled")]
    Disabled(String),
    /// The device does not answer (or its task is not running).
    #[error("device \"{0}\" is offline: {1}")]
    Offline(String, String),
    /// The device answered with an error.
    #[error("{0}")]
    Failed(String),
}

/// A request to a running device.
#[derive(Debug)]
pub enum DeviceRequest {
    /// Poll now and reply with the values read (after the value transforms: scale, offset,
    /// round, expr; report strategies do not apply to an explicit read).
    Read {
        /// Where the readings go.
        reply: oneshot::Sender<Result<Vec<Reading>, DeviceError>>,
    },
    /// Write `value` to a writable channel; reply with the value written (in the channel's
    /// type) once the device confirmed it.
    Write {
        /// The channel name.
        channel: String,
        /// The value, in engineering units (the channel's transform is reversed where it can be).
        value: serde_json::Value,
        /// Where the result goes.
        reply: oneshot::Sender<Result<serde_json::Value, DeviceError>>,
    },
}

impl DeviceRequest {
    /// Answers the request with an error (e.g. the device is disabled).
    pub fn fail(self, err: DeviceError) {
        match self {
            DeviceRequest::Read { reply } => {
                let _ = reply.send(Err(err));
            }
            DeviceRequest::Write { reply, .. } => {
                let _ = reply.send(Err(err));
            }
        }
    }
}

/// Where the requests of the devices served by one task arrive: the task that serves a line
/// (one connection or serial port with several devices behind it) reads them all from one
/// queue, tagged with the device's index on the line, and is woken by [`Inbox::wake`] when a
/// device is enabled or disabled.
#[derive(Debug)]
pub struct Inbox {
    /// `(device index, request)` for every device registered with this inbox.
    pub requests: Requests,
    /// Notified when the enabled flag of one of the devices changes.
    pub wake: Arc<Notify>,
    tx: RequestSender,
}

/// A request and the index of its device, boxed: tokio allocates a queue's slots in blocks of
/// 32 when it is created, and with a line per device (a TCP device with its own connection)
/// 32 unboxed requests would cost 2.5 kB per device for requests that rarely come.
type Boxed = Box<(usize, DeviceRequest)>;
type RequestSender = mpsc::Sender<Boxed>;

/// The receiving side of an [`Inbox`]'s request queue.
#[derive(Debug)]
pub struct Requests(mpsc::Receiver<Boxed>);

impl Requests {
    /// The next request with the index of its device; `None` once no sender is left.
    /// Cancel-safe, like the queue's own `recv`.
    pub async fn recv(&mut self) -> Option<(usize, DeviceRequest)> {
        self.0.recv().await.map(|b| *b)
    }
}

impl Inbox {
    /// An empty inbox (requests queue of 16).
    pub fn new() -> Self {
        let (tx, requests) = mpsc::channel(16);
        Inbox {
            requests: Requests(requests),
            wake: Arc::new(Notify::new()),
            tx,
        }
    }
}

impl Default for Inbox {
    fn default() -> Self {
        Self::new()
    }
}

/// A device's enabled flag (run-time override, else its config), read by its task at every
/// turn and written by the registry.
pub type EnabledFlag = Arc<AtomicBool>;

#[derive(Debug)]
struct Entry {
    enabled: EnabledFlag,
    wake: Option<Arc<Notify>>,
    requests: Option<(RequestSender, usize)>,
}

/// (connector, device).
type DeviceKey = (Arc<str>, Arc<str>);

/// A connector's devices, by name.
type ConnectorDevices = HashMap<Arc<str>, Entry>;

/// Every device's control handles, by connector, then device (two maps, so a lookup by
/// `&str` names is a hash lookup, not a scan: views of every device ask once per device).
#[derive(Debug, Default)]
pub struct ControlRegistry {
    devices: Mutex<HashMap<Arc<str>, ConnectorDevices>>,
    /// Run-time enable/disable of devices, surviving restarts and reloads.
    overrides: Mutex<HashMap<DeviceKey, bool>>,
    /// Run-time enable/disable of whole connectors.
    connector_overrides: Mutex<HashMap<Arc<str>, bool>>,
    /// The gateway's audit trail: every change, whoever made it.
    audit: crate::audit::Trail,
}

impl ControlRegistry {
    /// The gateway's audit trail (every path that changes something records there).
    pub fn audit(&self) -> &crate::audit::Trail {
        &self.audit
    }

    /// Registers a device served by the task that reads `inbox`, as its device `index`;
    /// replaces an earlier registration of the same device (a restarted connector).
    /// `configured` is the device's `enabled` from the config; a run-time override wins.
    pub fn register(
        &self,
        connector: &Arc<str>,
        device: &Arc<str>,
        configured: bool,
        inbox: &Inbox,
        index: usize,
    ) -> EnabledFlag {
        let key = (connector.clone(), device.clone());
        let enabled = self
            .overrides
            .lock()
            .expect("control lock")
            .get(&key)
            .copied()
            .unwrap_or(configured);
        let mut devices = self.devices.lock().expect("control lock");
        let (connector, device) = key;
        let entry = devices
            .entry(connector)
            .or_default()
            .entry(device)
            .or_insert_with(|| Entry {
                enabled: Arc::new(AtomicBool::new(enabled)),
                wake: None,
                requests: None,
            });
        entry.enabled.store(enabled, Relaxed);
        entry.wake = Some(inbox.wake.clone());
        entry.requests = Some((inbox.tx.clone(), index));
        entry.enabled.clone()
    }

    /// Forgets devices not in `keep` (after a reload removed them).
    pub fn retain(&self, keep: &[(Arc<str>, Arc<str>)]) {
        let keep: std::collections::HashSet<(&str, &str)> =
            keep.iter().map(|(c, d)| (&**c, &**d)).collect();
        let mut devices = self.devices.lock().expect("control lock");
        for (c, ds) in devices.iter_mut() {
            ds.retain(|d, _| keep.contains(&(&**c, &**d)));
        }
        devices.retain(|_, ds| !ds.is_empty());
    }

    /// The connector serving `device` (device names are unique in a gateway).
    pub fn connector_of(&self, device: &str) -> Option<Arc<str>> {
        self.devices
            .lock()
            .expect("control lock")
            .iter()
            .find(|(_, ds)| ds.contains_key(device))
            .map(|(c, _)| c.clone())
    }

    /// Enables or disables a device at run time; the running task reacts at once.
    pub fn set_device_enabled(
        &self,
        connector: &str,
        device: &str,
        enabled: bool,
    ) -> Result<(), DeviceError> {
        let devices = self.devices.lock().expect("control lock");
        let (c, ds) = devices
            .get_key_value(connector)
            .ok_or_else(|| DeviceError::UnknownDevice(device.to_string()))?;
        let (d, entry) = ds
            .get_key_value(device)
            .ok_or_else(|| DeviceError::UnknownDevice(device.to_string()))?;
        self.overrides
            .lock()
            .expect("control lock")
            .insert((c.clone(), d.clone()), enabled);
        entry.enabled.store(enabled, Relaxed);
        if let Some(w) = &entry.wake {
            w.notify_one();
        }
        Ok(())
    }

    /// The device's effective enabled flag.
    pub fn device_enabled(&self, connector: &str, device: &str) -> Option<bool> {
        self.devices
            .lock()
            .expect("control lock")
            .get(connector)?
            .get(device)
            .map(|e| e.enabled.load(Relaxed))
    }

    /// Records a run-time enable/disable of a connector (the service starts or stops it).
    pub fn set_connector_enabled(&self, connector: &Arc<str>, enabled: bool) {
        self.connector_overrides
            .lock()
            .expect("control lock")
            .insert(connector.clone(), enabled);
    }

    /// The run-time override of a connector's enabled flag, if any.
    pub fn connector_override(&self, connector: &str) -> Option<bool> {
        self.connector_overrides
            .lock()
            .expect("control lock")
            .get(connector)
            .copied()
    }

    /// Sends a request to a device's task.
    pub async fn request(&self, connector: &str, device: &str, req: DeviceRequest) {
        let tx = {
            let devices = self.devices.lock().expect("control lock");
            devices
                .get(connector)
                .and_then(|ds| ds.get(device))
                .map(|e| e.requests.clone())
        };
        match tx {
            None => req.fail(DeviceError::UnknownDevice(device.to_string())),
            Some(None) => req.fail(DeviceError::Offline(
                device.to_string(),
                "not running".into(),
            )),
            Some(Some((tx, index))) => {
                if let Err(mpsc::error::SendError(boxed)) = tx.send(Box::new((index, req))).await {
                    let (_, req) = *boxed;
                    req.fail(DeviceError::Offline(
                        device.to_string(),
                        "not running".into(),
                    ));
                }
            }
        }
    }

    /// Reads a device now.
    pub async fn read(&self, connector: &str, device: &str) -> Result<Vec<Reading>, DeviceError> {
        let (reply, rx) = oneshot::channel();
        self.request(connector, device, DeviceRequest::Read { reply })
            .await;
        rx.await.unwrap_or_else(|_| {
            Err(DeviceError::Offline(
                device.to_string(),
                "task stopped".into(),
            ))
        })
    }

    /// Writes a channel of a device.
    pub async fn write(
        &self,
        connector: &str,
        device: &str,
        channel: &str,
        value: serde_json::Value,
    ) -> Result<serde_json::Value, DeviceError> {
        let (reply, rx) = oneshot::channel();
        let req = DeviceRequest::Write {
            channel: channel.to_string(),
            value,
            reply,
        };
        self.request(connector, device, req).await;
        rx.await.unwrap_or_else(|_| {
            Err(DeviceError::Offline(
                device.to_string(),
                "task stopped".into(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn disable_survives_re_registration() {
        let reg = ControlRegistry::default();
        let (c, d): (Arc<str>, Arc<str>) = ("c".into(), "d".into());
        let inbox = Inbox::new();
        let flag = reg.register(&c, &d, true, &inbox, 0);
        assert!(flag.load(Relaxed));
        reg.set_device_enabled("c", "d", false).unwrap();
        assert!(!flag.load(Relaxed));
        // The task was woken to notice.
        tokio::time::timeout(std::time::Duration::from_secs(1), inbox.wake.notified())
            .await
            .expect("woken");
        // The connector restarts (reload): the run-time override stays.
        let flag2 = reg.register(&c, &d, true, &Inbox::new(), 0);
        assert!(!flag2.load(Relaxed));
        assert_eq!(reg.connector_of("d").as_deref(), Some("c"));
        assert!(matches!(
            reg.set_device_enabled("c", "x", true),
            Err(DeviceError::UnknownDevice(_))
        ));
    }

    #[tokio::test]
    async fn requests_reach_the_task_and_unknown_devices_fail() {
        let reg = Arc::new(ControlRegistry::default());
        let mut inbox = Inbox::new();
        reg.register(&"c".into(), &"d".into(), true, &inbox, 3);
        let r2 = reg.clone();
        let t = tokio::spawn(async move { r2.write("c", "d", "x", serde_json::json!(1)).await });
        match inbox.requests.recv().await.unwrap() {
            (3, DeviceRequest::Write { channel, reply, .. }) => {
                assert_eq!(channel, "x");
                reply.send(Ok(serde_json::json!(1))).unwrap();
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t.await.unwrap(), Ok(serde_json::json!(1)));
        assert!(matches!(
            reg.read("c", "nope").await,
            Err(DeviceError::UnknownDevice(_))
        ));
        drop(inbox);
        assert!(matches!(
            reg.read("c", "d").await,
            Err(DeviceError::Offline(..))
        ));
    }
}
