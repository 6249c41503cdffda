//! One connector of any protocol, run in-process from its JSON config exactly as the service
//! runs it (`ConnectorConfig::from_raw`, then `build`, then the returned future), with its
//! batches and status changes taken from a sink queue as a sink would see them, and its devices
//! read and written through the [`ControlRegistry`] as JSON-RPC `device.read`/`device.write`
//! and MQTT commands do.
//!
//! Every wait is bounded by [`TEST_TIMEOUT`]; dropping a [`ConnectorRun`] cancels the connector.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use osgate::connectors::{ConnectorConfig, ConnectorContext, ConnectorError};
use osgate::control::{ControlRegistry, DeviceError};
use osgate::pipeline::{sink_queue, Envelope, ReadingSender, WhenFull};
use osgate::reading::{Reading, Value};
use osgate::status::{ConnectorHealth, DeviceStatus, SinkCounters};
use serde_json::Value as Json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{within, TEST_TIMEOUT};

/// A connector name unique in this test binary (tests run in parallel in one process).
pub fn unique(name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{name}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Parses one connector config as `connectors[0]` of a gateway config; the errors as
/// `path: message`.
pub fn parse(cfg: Json) -> Result<ConnectorConfig, Vec<String>> {
    let mut errs = Vec::new();
    let raw = serde_json::value::to_raw_value(&cfg).expect("json");
    let c = ConnectorConfig::from_raw(0, &raw, &|_| None, &mut errs);
    if errs.is_empty() {
        Ok(c.expect("config"))
    } else {
        Err(errs
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect())
    }
}

/// Readings by channel name.
pub fn by_name(readings: &[Reading]) -> HashMap<String, Value> {
    readings
        .iter()
        .map(|r| (r.channel.to_string(), r.value.clone()))
        .collect()
}

/// A connector running in-process, with its sink queue.
pub struct ConnectorRun {
    rx: mpsc::Receiver<Envelope>,
    token: CancellationToken,
    task: Option<JoinHandle<()>>,
    /// Its counters and the latest status of each device.
    pub health: Arc<ConnectorHealth>,
    /// Its devices' run-time control (enable/disable, read, write).
    pub control: Arc<ControlRegistry>,
    /// The connector's name.
    pub name: String,
}

impl Drop for ConnectorRun {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl ConnectorRun {
    /// Parses, builds and starts the connector of `cfg` (any protocol); panics if the config
    /// is invalid or the build fails.
    pub fn start(cfg: Json) -> ConnectorRun {
        Self::try_start(cfg).expect("connector built")
    }

    /// Like [`ConnectorRun::start`], but returns what the build refused (a serial port that
    /// does not exist, an address…). The config must be valid.
    pub fn try_start(cfg: Json) -> Result<ConnectorRun, ConnectorError> {
        let cfg = parse(cfg).expect("valid config");
        let (input, rx) = sink_queue(4096, WhenFull::Block, Arc::new(SinkCounters::default()));
        let token = CancellationToken::new();
        let health = Arc::new(ConnectorHealth::default());
        let control = Arc::new(ControlRegistry::default());
        let name = cfg.name.to_string();
        let ctx = ConnectorContext {
            name: cfg.name.clone(),
            gateway: "gw".into(),
            out: ReadingSender::new(vec![input]),
            shutdown: token.clone(),
            health: health.clone(),
            control: control.clone(),
            listeners: Default::default(),
        };
        let running = cfg.build(ctx)?;
        let task = tokio::spawn(async move {
            running.await.expect("connector ran");
        });
        Ok(ConnectorRun {
            rx,
            token,
            task: Some(task),
            health,
            control,
            name,
        })
    }

    /// The next envelope (batch or status) of any device.
    pub async fn next(&mut self) -> Envelope {
        within("an envelope", self.rx.recv())
            .await
            .expect("queue open")
    }

    /// The next envelope, or panics naming `what` once `deadline` has passed (even while
    /// envelopes keep arriving).
    async fn next_before(&mut self, deadline: Instant, what: &str) -> Envelope {
        match super::deadline::before(deadline, self.rx.recv()).await {
            Some(env) => env.expect("queue open"),
            None => panic!(
                "timed out after {TEST_TIMEOUT:?} waiting for {what}; statuses now: {:?}",
                self.health.devices.lock().expect("lock").values()
            ),
        }
    }

    /// The next batch of `device`, skipping everything else.
    pub async fn batch(&mut self, device: &str) -> Vec<Reading> {
        let deadline = Instant::now() + TEST_TIMEOUT;
        let what = format!("a batch of {device}");
        loop {
            if let Envelope::Batch(b) = self.next_before(deadline, &what).await {
                if &*b.device == device {
                    return b.readings.clone();
                }
            }
        }
    }

    /// Waits for a status change of `device` that satisfies `f`, skipping everything else.
    pub async fn status(
        &mut self,
        device: &str,
        f: impl Fn(&DeviceStatus) -> bool,
    ) -> DeviceStatus {
        let deadline = Instant::now() + TEST_TIMEOUT;
        let what = format!("a status of {device}");
        loop {
            if let Envelope::Status(s) = self.next_before(deadline, &what).await {
                if &*s.device == device && f(&s) {
                    return (*s).clone();
                }
            }
        }
    }

    /// Waits for a batch of `device` whose readings are all good; its values by channel.
    pub async fn good_batch(&mut self, device: &str) -> HashMap<String, Value> {
        let deadline = Instant::now() + TEST_TIMEOUT;
        let what = format!("a good batch of {device}");
        loop {
            if let Envelope::Batch(b) = self.next_before(deadline, &what).await {
                if &*b.device == device && b.readings.iter().all(|r| r.quality.is_good()) {
                    return by_name(&b.readings);
                }
            }
        }
    }

    /// The latest status of `device` as the connector recorded it (not waiting).
    pub fn device_status(&self, device: &str) -> Option<DeviceStatus> {
        self.health
            .devices
            .lock()
            .expect("lock")
            .get(device)
            .cloned()
    }

    /// Writes `value` (engineering units) to `channel` of `device`, as `device.write` does.
    pub async fn write(
        &self,
        device: &str,
        channel: &str,
        value: Json,
    ) -> Result<Json, DeviceError> {
        within(
            "a device write",
            self.control.write(&self.name, device, channel, value),
        )
        .await
    }

    /// Reads `device` now, as `device.read` does.
    pub async fn read(&self, device: &str) -> Result<Vec<Reading>, DeviceError> {
        within("a device read", self.control.read(&self.name, device)).await
    }

    /// Cancels the connector and waits for its task to end.
    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(t) = self.task.take() {
            within("connector stop", t).await.expect("connector task");
        }
    }
}
