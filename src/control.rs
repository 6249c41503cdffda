//! Run-time control of devices: enable/disable, read now, write a channel.
//!
//! Each running device task registers with the [`ControlRegistry`] (through
//! [`crate::connectors::ConnectorContext::register_device`]) and receives a [`DeviceControl`]:
//! a queue of [`DeviceRequest`]s (from JSON-RPC `device.read`/`device.write` and MQTT commands)
//! and a `watch` of its enabled flag. The registry outlives connector restarts and reloads, so a
//! device disabled at run time stays disabled until it is enabled again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};

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

/// What a device task holds: its request queue and its enabled flag.
#[derive(Debug)]
pub struct DeviceControl {
    /// Requests for this device.
    pub requests: mpsc::Receiver<DeviceRequest>,
    /// The device's enabled flag (run-time override, else its config).
    pub enabled: watch::Receiver<bool>,
}

impl DeviceControl {
    /// A control that never receives requests and stays enabled (for tools and tests).
    pub fn detached() -> (
        DeviceControl,
        watch::Sender<bool>,
        mpsc::Sender<DeviceRequest>,
    ) {
        let (etx, erx) = watch::channel(true);
        let (rtx, rrx) = mpsc::channel(8);
        (
            DeviceControl {
                requests: rrx,
                enabled: erx,
            },
            etx,
            rtx,
        )
    }

    /// True while the device is enabled.
    pub fn is_enabled(&self) -> bool {
        *self.enabled.borrow()
    }
}

#[derive(Debug)]
struct Entry {
    enabled: watch::Sender<bool>,
    requests: Option<mpsc::Sender<DeviceRequest>>,
}

/// (connector, device).
type DeviceKey = (Arc<str>, Arc<str>);

/// Every device's control handles, keyed by (connector, device).
#[derive(Debug, Default)]
pub struct ControlRegistry {
    devices: Mutex<HashMap<DeviceKey, Entry>>,
    /// Run-time enable/disable of devices, surviving restarts and reloads.
    overrides: Mutex<HashMap<DeviceKey, bool>>,
    /// Run-time enable/disable of whole connectors.
    connector_overrides: Mutex<HashMap<Arc<str>, bool>>,
}

impl ControlRegistry {
    /// Registers a device task; replaces an earlier registration of the same device (a
    /// restarted connector). `configured` is the device's `enabled` from the config.
    pub fn register(
        &self,
        connector: &Arc<str>,
        device: &Arc<str>,
        configured: bool,
    ) -> DeviceControl {
        let key = (connector.clone(), device.clone());
        let enabled = self
            .overrides
            .lock()
            .expect("control lock")
            .get(&key)
            .copied()
            .unwrap_or(configured);
        let (rtx, rrx) = mpsc::channel(16);
        let mut devices = self.devices.lock().expect("control lock");
        let entry = devices.entry(key).or_insert_with(|| Entry {
            enabled: watch::Sender::new(enabled),
            requests: None,
        });
        entry.enabled.send_replace(enabled);
        entry.requests = Some(rtx);
        DeviceControl {
            requests: rrx,
            enabled: entry.enabled.subscribe(),
        }
    }

    /// Forgets devices not in `keep` (after a reload removed them).
    pub fn retain(&self, keep: &[(Arc<str>, Arc<str>)]) {
        self.devices
            .lock()
            .expect("control lock")
            .retain(|k, _| keep.contains(k));
    }

    /// The connector serving `device` (device names are unique in a gateway).
    pub fn connector_of(&self, device: &str) -> Option<Arc<str>> {
        self.devices
            .lock()
            .expect("control lock")
            .keys()
            .find(|(_, d)| &**d == device)
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
        let (key, entry) = devices
            .iter()
            .find(|((c, d), _)| &**c == connector && &**d == device)
            .ok_or_else(|| DeviceError::UnknownDevice(device.to_string()))?;
        self.overrides
            .lock()
            .expect("control lock")
            .insert(key.clone(), enabled);
        entry.enabled.send_replace(enabled);
        Ok(())
    }

    /// The device's effective enabled flag.
    pub fn device_enabled(&self, connector: &str, device: &str) -> Option<bool> {
        self.devices
            .lock()
            .expect("control lock")
            .iter()
            .find(|((c, d), _)| &**c == connector && &**d == device)
            .map(|(_, e)| *e.enabled.borrow())
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
                .iter()
                .find(|((c, d), _)| &**c == connector && &**d == device)
                .map(|(_, e)| e.requests.clone())
        };
        match tx {
            None => req.fail(DeviceError::UnknownDevice(device.to_string())),
            Some(None) => req.fail(DeviceError::Offline(
                device.to_string(),
                "not running".into(),
            )),
            Some(Some(tx)) => {
                if let Err(mpsc::error::SendError(req)) = tx.send(req).await {
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
        let ctl = reg.register(&c, &d, true);
        assert!(ctl.is_enabled());
        reg.set_device_enabled("c", "d", false).unwrap();
        assert!(!ctl.is_enabled());
        // The connector restarts (reload): the run-time override stays.
        let ctl2 = reg.register(&c, &d, true);
        assert!(!ctl2.is_enabled());
        assert_eq!(reg.connector_of("d").as_deref(), Some("c"));
        assert!(matches!(
            reg.set_device_enabled("c", "x", true),
            Err(DeviceError::UnknownDevice(_))
        ));
    }

    #[tokio::test]
    async fn requests_reach_the_task_and_unknown_devices_fail() {
        let reg = Arc::new(ControlRegistry::default());
        let mut ctl = reg.register(&"c".into(), &"d".into(), true);
        let r2 = reg.clone();
        let t = tokio::spawn(async move { r2.write("c", "d", "x", serde_json::json!(1)).await });
        match ctl.requests.recv().await.unwrap() {
            DeviceRequest::Write { channel, reply, .. } => {
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
        drop(ctl);
        assert!(matches!(
            reg.read("c", "d").await,
            Err(DeviceError::Offline(..))
        ));
    }
}
