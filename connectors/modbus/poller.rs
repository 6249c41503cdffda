//! One Modbus *line*: the task that owns a connection (a TCP socket, or a serial port shared by
//! several devices) and polls its devices in turn, plus their writes.
//!
//! Each device's channels are planned into read requests per poll interval (see [`planner`]).
//! When a group is due the line sends its requests one by one, each under the connector's
//! timeout; the timestamp of a value is taken when its answer arrives. A Modbus exception marks
//! only the channels of that request bad (a merged request that draws one is split into
//! per-channel requests at once, so one bad address does not blank its neighbours); a transport
//! failure (no answer, wrong transaction or unit id, garbled frame, closed socket) drops the
//! connection, marks the rest of the device's poll bad and puts the device into capped
//! exponential backoff. An offline device gets a single attempt per poll, so a dead slave on a
//! serial line costs the others at most one timeout per cycle. Logs are written once per state
//! change; every failure is counted in the device status and the connector counters.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_modbus::client::{Client as _, Context, Reader as _, Writer as _};
use tokio_modbus::prelude::SlaveContext as _;
use tokio_modbus::Slave;

use super::codec::{self, DataType, Table, ValueFormat};
use super::planner::{self, PlanItem, ReadRequest};
use super::transport::{self, CallError};
use super::{ModbusChannel, ModbusDevice, ModbusSettings, Transport, WriteError, WriteRequest};
use crate::config::DeviceSpec;
use crate::connectors::ConnectorContext;
use crate::pipeline::DeviceOutput;
use crate::reading::{Timestamp, Value};

/// What the line needs of a channel at run time.
#[derive(Debug, Clone)]
struct ChannelInfo {
    name: Arc<str>,
    table: Table,
    address: u16,
    format: ValueFormat,
    writable: bool,
    scale: Option<f64>,
    offset: Option<f64>,
}

/// Requests that share one poll interval.
#[derive(Debug)]
struct Group {
    interval: Duration,
    requests: Vec<ReadRequest>,
    next: Instant,
}

/// How a device is doing, for logging once per change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Unknown,
    Online,
    Failing(&'static str),
}

/// One device on a line.
struct Device {
    name: Arc<str>,
    unit: u8,
    enabled: bool,
    channels: Vec<ChannelInfo>,
    items: Vec<PlanItem>,
    groups: Vec<Group>,
    out: DeviceOutput,
    health: Health,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Device {
    /// When the device wants its next poll.
    fn next_due(&self) -> Option<Instant> {
        if !self.enabled {
            return None;
        }
        let due = self.groups.iter().map(|g| g.next).min()?;
        Some(match self.retry_at {
            Some(r) => r.max(due),
            None => due,
        })
    }
}

/// A line task: one connection and the devices behind it.
pub struct Line {
    settings: Arc<ModbusSettings>,
    ctx: ConnectorContext,
    devices: Vec<Device>,
    writes_tx: mpsc::Sender<WriteRequest>,
    writes: mpsc::Receiver<WriteRequest>,
    conn: Option<Context>,
}

/// The outcome of one request attempt sequence.
enum Outcome {
    Registers(Vec<u16>, Timestamp),
    Bits(Vec<bool>, Timestamp),
    Failed(CallError),
}

impl Line {
    /// An empty line for the connector's transport.
    pub fn new(settings: Arc<ModbusSettings>, ctx: ConnectorContext) -> Self {
        let (writes_tx, writes) = mpsc::channel(16);
        Line {
            settings,
            ctx,
            devices: Vec::new(),
            writes_tx,
            writes,
            conn: None,
        }
    }

    /// The queue that carries writes for this line's devices.
    pub fn writes(&self) -> mpsc::Sender<WriteRequest> {
        self.writes_tx.clone()
    }

    /// Adds a device: plans its reads and prepares its output.
    pub fn add(&mut self, spec: DeviceSpec<ModbusDevice, ModbusChannel>) {
        let limits = super::device_limits(&self.settings, &spec.settings);
        let default_iv = spec.settings.interval.0;
        let channels: Vec<ChannelInfo> = spec
            .channels
            .iter()
            .map(|c| ChannelInfo {
                name: c.name.clone(),
                table: c.settings.table,
                address: c.settings.address,
                format: c.settings.format(),
                writable: c.settings.writable,
                scale: c.transform.scale,
                offset: c.transform.offset,
            })
            .collect();
        let items: Vec<PlanItem> = spec
            .channels
            .iter()
            .map(|c| PlanItem {
                key: c.settings.interval.map_or(default_iv, |d| d.0).as_millis() as u64,
                table: c.settings.table,
                address: c.settings.address,
                count: c.settings.count(),
            })
            .collect();
        let mut groups: Vec<Group> = Vec::new();
        let now = Instant::now();
        for req in planner::plan(&items, &limits) {
            match groups.last_mut() {
                Some(g) if g.interval.as_millis() as u64 == req.key => g.requests.push(req),
                _ => groups.push(Group {
                    interval: Duration::from_millis(req.key),
                    requests: vec![req],
                    next: now,
                }),
            }
        }
        tracing::debug!(
            connector = %self.ctx.name,
            device = %spec.name,
            channels = channels.len(),
            requests = groups.iter().map(|g| g.requests.len()).sum::<usize>(),
            "modbus read plan"
        );
        self.devices.push(Device {
            name: spec.name.clone(),
            unit: spec.settings.unit_id,
            enabled: spec.enabled,
            out: self.ctx.device_output(&spec),
            channels,
            items,
            groups,
            health: Health::Unknown,
            failures: 0,
            retry_at: None,
        });
    }

    /// The device names of this line.
    pub fn device_names(&self) -> Vec<Arc<str>> {
        self.devices.iter().map(|d| d.name.clone()).collect()
    }

    /// Polls until the connector's token is cancelled.
    pub async fn run(mut self) {
        let token = self.ctx.shutdown.clone();
        for d in &mut self.devices {
            if d.enabled {
                d.out
                    .set_status(|s| {
                        s.running = true;
                        s.enabled = true;
                    })
                    .await;
            } else {
                d.out.set_status(|s| s.enabled = false).await;
            }
        }
        loop {
            let next = self.devices.iter().filter_map(Device::next_due).min();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = token.cancelled() => break,
                Some(w) = self.writes.recv() => {
                    let res = self.write(&w).await;
                    let _ = w.reply.send(res);
                    continue;
                }
                _ = sleep => {}
            }
            let now = Instant::now();
            for i in 0..self.devices.len() {
                if token.is_cancelled() {
                    break;
                }
                if self.devices[i].next_due().is_some_and(|at| at <= now) {
                    self.poll(i, now).await;
                }
            }
        }
        if let Some(mut c) = self.conn.take() {
            let _ = tokio::time::timeout(Duration::from_millis(100), c.disconnect()).await;
        }
        for d in &mut self.devices {
            // Best effort: a full queue at shutdown must not hold the stop up.
            let _ = tokio::time::timeout(
                Duration::from_millis(200),
                d.out.set_status(|s| s.running = false),
            )
            .await;
        }
    }

    /// Makes sure a connection is open and addressed to `unit`.
    async fn connection(&mut self, unit: u8) -> Result<&mut Context, CallError> {
        if self.conn.is_none() {
            let c =
                transport::connect(&self.settings.transport, unit, self.settings.timeout.0).await?;
            self.conn = Some(c);
        }
        let c = self.conn.as_mut().expect("connection just opened");
        c.set_slave(Slave(unit));
        Ok(c)
    }

    /// Drops the connection after an error that may have left it out of step. A serial port
    /// stays open through timeouts and mismatches (tokio-modbus clears its read buffer before
    /// each request; reopening the port would not help a dead slave), but not through I/O errors.
    fn after_error(&mut self, err: &CallError) {
        let serial = matches!(self.settings.transport, Transport::Rtu(_));
        let keep = !err.needs_reconnect() || (serial && !matches!(err, CallError::Io(_)));
        if !keep {
            self.conn = None;
        }
    }

    /// Sends one read, with retries while the device is online.
    async fn read(&mut self, unit: u8, req: &ReadRequest, attempts: u32) -> Outcome {
        let timeout = self.settings.timeout.0;
        let mut last = CallError::Timeout(timeout);
        for _ in 0..attempts.max(1) {
            let res = match self.connection(unit).await {
                Err(e) => Err(e),
                Ok(c) => {
                    let (a, n) = (req.address, req.count);
                    match req.table {
                        Table::Coil => transport::call(timeout, c.read_coils(a, n))
                            .await
                            .map(|b| Outcome::Bits(b, Timestamp::now())),
                        Table::Discrete => transport::call(timeout, c.read_discrete_inputs(a, n))
                            .await
                            .map(|b| Outcome::Bits(b, Timestamp::now())),
                        Table::Holding => transport::call(timeout, c.read_holding_registers(a, n))
                            .await
                            .map(|r| Outcome::Registers(r, Timestamp::now())),
                        Table::Input => transport::call(timeout, c.read_input_registers(a, n))
                            .await
                            .map(|r| Outcome::Registers(r, Timestamp::now())),
                    }
                }
            };
            match res {
                Ok(o) => return o,
                Err(e) => {
                    self.after_error(&e);
                    if !e.needs_reconnect() {
                        return Outcome::Failed(e);
                    }
                    last = e;
                }
            }
        }
        Outcome::Failed(last)
    }

    /// Polls the due groups of device `i` and sends one batch.
    async fn poll(&mut self, i: usize, now: Instant) {
        let attempts = match self.devices[i].health {
            Health::Failing(_) => 1,
            _ => 1 + self.settings.retries,
        };
        let unit = self.devices[i].unit;
        let mut answered = false;
        let mut failure: Option<CallError> = None;
        for g in 0..self.devices[i].groups.len() {
            let group = &mut self.devices[i].groups[g];
            if group.next > now {
                continue;
            }
            group.next += group.interval;
            if group.next <= now {
                // The poll started more than an interval late (slow line or backpressure).
                self.ctx.health.counters.lagged.fetch_add(1, Relaxed);
                group.next = now + group.interval;
            }
            let mut r = 0;
            while r < self.devices[i].groups[g].requests.len() {
                let req = self.devices[i].groups[g].requests[r].clone();
                if let Some(err) = &failure {
                    // The device already failed this poll: don't spend another timeout on it.
                    let reason: Arc<str> = err.to_string().into();
                    self.mark_bad(i, &req, &reason, Timestamp::now());
                    r += 1;
                    continue;
                }
                match self.read(unit, &req, attempts).await {
                    Outcome::Registers(regs, ts) => {
                        answered = true;
                        self.decode_registers(i, &req, &regs, ts);
                    }
                    Outcome::Bits(bits, ts) => {
                        answered = true;
                        self.decode_bits(i, &req, &bits, ts);
                    }
                    Outcome::Failed(e @ CallError::Exception(_)) => {
                        answered = true;
                        let d = &mut self.devices[i];
                        if req.items.len() > 1 {
                            // Find the culprit: read each channel of this request on its own,
                            // now and from now on.
                            let split = planner::split(&req, &d.items);
                            tracing::debug!(
                                connector = %self.ctx.name, device = %d.name, error = %e,
                                address = req.address, count = req.count,
                                "merged read drew an exception; reading its channels one by one"
                            );
                            d.groups[g].requests.splice(r..=r, split);
                            continue;
                        }
                        let reason: Arc<str> = e.to_string().into();
                        self.mark_bad(i, &req, &reason, Timestamp::now());
                    }
                    Outcome::Failed(e) => {
                        let reason: Arc<str> = e.to_string().into();
                        self.mark_bad(i, &req, &reason, Timestamp::now());
                        failure = Some(e);
                    }
                }
                r += 1;
            }
        }
        let token = self.ctx.shutdown.clone();
        let name = self.ctx.name.clone();
        let backoff = (self.settings.backoff.0, self.settings.backoff_max.0);
        let d = &mut self.devices[i];
        tokio::select! {
            biased;
            _ = token.cancelled() => return,
            _ = d.out.flush() => {}
        }
        match failure {
            Some(err) if !answered => {
                d.failures = d.failures.saturating_add(1);
                let wait = backoff_delay(backoff.0, backoff.1, d.failures);
                d.retry_at = Some(Instant::now() + wait);
                if d.health != Health::Failing(err.kind()) {
                    tracing::warn!(
                        connector = %name, device = %d.name, error = %err,
                        retry_in = ?wait, "modbus device not answering"
                    );
                    d.health = Health::Failing(err.kind());
                }
                d.out.mark_error(&err.to_string()).await;
            }
            _ => {
                if let Some(err) = &failure {
                    // Answered some requests, then failed: the device is there; count it.
                    self.ctx.health.counters.errors.fetch_add(1, Relaxed);
                    tracing::debug!(connector = %name, device = %d.name, error = %err, "modbus request failed");
                }
                if matches!(d.health, Health::Failing(_)) {
                    tracing::info!(connector = %name, device = %d.name, "modbus device answering again");
                }
                d.health = Health::Online;
                d.failures = 0;
                d.retry_at = None;
                d.out.mark_ok(Timestamp::now()).await;
            }
        }
    }

    fn mark_bad(&mut self, i: usize, req: &ReadRequest, reason: &Arc<str>, ts: Timestamp) {
        let d = &mut self.devices[i];
        for &ch in &req.items {
            d.out.push_bad(ch, reason.clone(), ts);
        }
    }

    fn decode_registers(&mut self, i: usize, req: &ReadRequest, regs: &[u16], ts: Timestamp) {
        let d = &mut self.devices[i];
        for &ch in &req.items {
            let c = &d.channels[ch];
            let off = req.offset(c.address);
            let n = usize::from(c.format.count(c.table));
            match regs.get(off..off + n) {
                Some(slice) => match codec::decode_registers(slice, &c.format) {
                    Ok(v) => d.out.push(ch, v, ts),
                    Err(e) => d.out.push_bad(ch, e.to_string().into(), ts),
                },
                None => d
                    .out
                    .push_bad(ch, "short answer from the device".into(), ts),
            }
        }
    }

    fn decode_bits(&mut self, i: usize, req: &ReadRequest, bits: &[bool], ts: Timestamp) {
        let d = &mut self.devices[i];
        for &ch in &req.items {
            let c = &d.channels[ch];
            match bits.get(req.offset(c.address)) {
                Some(b) => d.out.push(ch, codec::decode_bit(*b), ts),
                None => d
                    .out
                    .push_bad(ch, "short answer from the device".into(), ts),
            }
        }
    }

    /// Carries out one write.
    async fn write(&mut self, w: &WriteRequest) -> Result<(), WriteError> {
        let d = self
            .devices
            .iter()
            .find(|d| d.name == w.device)
            .ok_or_else(|| WriteError::NoDevice(w.device.to_string()))?;
        let c = d
            .channels
            .iter()
            .find(|c| c.name == w.channel)
            .ok_or_else(|| WriteError::NoChannel {
                device: w.device.to_string(),
                channel: w.channel.to_string(),
            })?
            .clone();
        if !c.writable {
            return Err(WriteError::NotWritable(w.channel.to_string()));
        }
        let unit = d.unit;
        let timeout = self.settings.timeout.0;
        let res = self.write_value(unit, &c, &w.value, timeout).await;
        if let Err(WriteError::Transport(_)) = &res {
            self.conn = None;
        }
        if res.is_ok() {
            tracing::info!(connector = %self.ctx.name, device = %w.device, channel = %w.channel,
                value = %w.value, "modbus write");
        }
        res
    }

    async fn write_value(
        &mut self,
        unit: u8,
        c: &ChannelInfo,
        value: &Value,
        timeout: Duration,
    ) -> Result<(), WriteError> {
        let conn = self.connection(unit).await.map_err(to_write_error)?;
        let a = c.address;
        let res = match (c.table, c.format.data_type) {
            (Table::Coil, _) => {
                let on = codec::to_coil(value)?;
                transport::call(timeout, conn.write_single_coil(a, on)).await
            }
            (Table::Holding, DataType::Bool) => {
                let on = codec::to_coil(value)?;
                let cur = transport::call(timeout, conn.read_holding_registers(a, 1))
                    .await
                    .map_err(to_write_error)?;
                let cur = *cur
                    .first()
                    .ok_or_else(|| WriteError::Transport("short answer from the device".into()))?;
                let word = codec::set_bit(cur, &c.format, on)?;
                transport::call(timeout, conn.write_single_register(a, word)).await
            }
            (Table::Holding, _) => {
                let raw = codec::unscale(value, c.scale, c.offset)?;
                let words = codec::encode_registers(&raw, &c.format)?;
                if words.len() == 1 {
                    transport::call(timeout, conn.write_single_register(a, words[0])).await
                } else {
                    transport::call(timeout, conn.write_multiple_registers(a, &words)).await
                }
            }
            (Table::Discrete | Table::Input, _) => {
                return Err(WriteError::NotWritable(c.name.to_string()))
            }
        };
        res.map_err(to_write_error)
    }
}

fn to_write_error(e: CallError) -> WriteError {
    match e {
        CallError::Exception(m) => WriteError::Exception(m),
        other => WriteError::Transport(other.to_string()),
    }
}

/// `base · 2^(failures-1)`, capped at `max`.
pub fn backoff_delay(base: Duration, max: Duration, failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(20);
    base.saturating_mul(1 << shift).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let s = Duration::from_secs(1);
        let max = Duration::from_secs(30);
        let got: Vec<u64> = (1..=7)
            .map(|n| backoff_delay(s, max, n).as_secs())
            .collect();
        assert_eq!(got, vec![1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff_delay(s, max, u32::MAX), max);
    }
}
