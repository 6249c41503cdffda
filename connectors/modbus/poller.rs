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
//!
//! Each device registers with the gateway's [`crate::control::ControlRegistry`]; a small
//! forwarding task per device hands its requests (`device.read`, `device.write`, MQTT commands)
//! and enable/disable changes to the line, which serves them between polls.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_modbus::client::{Client as _, Context, Reader as _, Writer as _};
use tokio_modbus::prelude::SlaveContext as _;
use tokio_modbus::Slave;
use tokio_util::sync::CancellationToken;

use super::codec::{self, DataType, Table, ValueFormat};
use super::planner::{self, PlanItem, ReadRequest};
use super::transport::{self, CallError};
use super::{ModbusChannel, ModbusDevice, ModbusSettings, Transport};
use crate::config::DeviceSpec;
use crate::connectors::ConnectorContext;
use crate::control::{DeviceControl, DeviceError, DeviceRequest};
use crate::pipeline::DeviceOutput;
use crate::reading::{Quality, Reading, Timestamp, Value};

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
    /// Whether bit writes may use Mask Write Register (until the device says it lacks it).
    mask_write: bool,
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

/// What the forwarding tasks tell the line about device `usize`.
enum LineMsg {
    Request(usize, DeviceRequest),
    Enabled(usize, bool),
}

/// A line task: one connection and the devices behind it.
pub struct Line {
    settings: Arc<ModbusSettings>,
    ctx: ConnectorContext,
    devices: Vec<Device>,
    msgs_tx: mpsc::Sender<LineMsg>,
    msgs: mpsc::Receiver<LineMsg>,
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
        let (msgs_tx, msgs) = mpsc::channel(16);
        Line {
            settings,
            ctx,
            devices: Vec::new(),
            msgs_tx,
            msgs,
            conn: None,
        }
    }

    /// Adds a device: plans its reads, prepares its output and registers it for run-time
    /// control (must be called inside the runtime: it spawns the device's forwarding task).
    pub fn add(&mut self, spec: &DeviceSpec<ModbusDevice, ModbusChannel>) {
        let control = self.ctx.register_device(spec);
        let enabled = control.is_enabled();
        tokio::spawn(forward(
            self.devices.len(),
            control,
            self.msgs_tx.clone(),
            self.ctx.shutdown.clone(),
        ));
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
                scale: c.transform().scale,
                offset: c.transform().offset,
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
            enabled,
            out: self.ctx.device_output(spec),
            channels,
            items,
            groups,
            health: Health::Unknown,
            failures: 0,
            retry_at: None,
            mask_write: true,
        });
    }

    /// Polls until the connector's token is cancelled.
    pub async fn run(mut self) {
        let token = self.ctx.shutdown.clone();
        for i in 0..self.devices.len() {
            let enabled = self.devices[i].enabled;
            self.set_enabled(i, enabled).await;
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
                Some(msg) = self.msgs.recv() => {
                    match msg {
                        LineMsg::Enabled(i, on) => self.set_enabled(i, on).await,
                        LineMsg::Request(i, req) => self.serve(i, req).await,
                    }
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
        let out = &mut d.out;
        decode_registers(&d.channels, req, regs, |ch, v| match v {
            Ok(v) => out.push(ch, v, ts),
            Err(reason) => out.push_bad(ch, reason, ts),
        });
    }

    fn decode_bits(&mut self, i: usize, req: &ReadRequest, bits: &[bool], ts: Timestamp) {
        let d = &mut self.devices[i];
        let out = &mut d.out;
        decode_bits(&d.channels, req, bits, |ch, v| match v {
            Ok(v) => out.push(ch, v, ts),
            Err(reason) => out.push_bad(ch, reason, ts),
        });
    }

    /// Applies an enable/disable of device `i` (config or run time).
    async fn set_enabled(&mut self, i: usize, on: bool) {
        let d = &mut self.devices[i];
        d.enabled = on;
        if on {
            let now = Instant::now();
            for g in &mut d.groups {
                g.next = now;
            }
            d.retry_at = None;
        }
        d.out
            .set_status(|s| {
                s.running = on;
                s.enabled = on;
            })
            .await;
    }

    /// Serves a control request for device `i`.
    async fn serve(&mut self, i: usize, req: DeviceRequest) {
        if !self.devices[i].enabled {
            req.fail(DeviceError::Disabled(self.devices[i].name.to_string()));
            return;
        }
        match req {
            DeviceRequest::Read { reply } => {
                let res = self.read_now(i).await;
                let _ = reply.send(res);
            }
            DeviceRequest::Write {
                channel,
                value,
                reply,
            } => {
                let res = self.write(i, &channel, &value).await;
                let _ = reply.send(res);
            }
        }
    }

    /// Reads every channel of device `i` now, through the value steps of the transforms
    /// (`device.read`); nothing goes to the pipeline.
    async fn read_now(&mut self, i: usize) -> Result<Vec<Reading>, DeviceError> {
        let attempts = 1 + self.settings.retries;
        let unit = self.devices[i].unit;
        let requests: Vec<ReadRequest> = self.devices[i]
            .groups
            .iter()
            .flat_map(|g| g.requests.iter().cloned())
            .collect();
        let mut readings = Vec::new();
        for req in &requests {
            match self.read(unit, req, attempts).await {
                Outcome::Registers(regs, ts) => {
                    let d = &self.devices[i];
                    let out = &d.out;
                    decode_registers(&d.channels, req, &regs, |ch, v| {
                        readings.extend(convert(out, ch, v, ts));
                    });
                }
                Outcome::Bits(bits, ts) => {
                    let d = &self.devices[i];
                    let out = &d.out;
                    decode_bits(&d.channels, req, &bits, |ch, v| {
                        readings.extend(convert(out, ch, v, ts));
                    });
                }
                Outcome::Failed(e @ CallError::Exception(_)) => {
                    let d = &self.devices[i];
                    let reason: Arc<str> = e.to_string().into();
                    let ts = Timestamp::now();
                    for &ch in &req.items {
                        readings.extend(convert(&d.out, ch, Err(reason.clone()), ts));
                    }
                }
                Outcome::Failed(e) => {
                    return Err(DeviceError::Offline(
                        self.devices[i].name.to_string(),
                        e.to_string(),
                    ))
                }
            }
        }
        Ok(readings)
    }

    /// Carries out one write to channel `channel` of device `i`; answers with the value the
    /// device now holds, in engineering units.
    async fn write(
        &mut self,
        i: usize,
        channel: &str,
        value: &serde_json::Value,
    ) -> Result<serde_json::Value, DeviceError> {
        let d = &self.devices[i];
        let device = d.name.to_string();
        let c = d
            .channels
            .iter()
            .find(|c| &*c.name == channel)
            .ok_or_else(|| DeviceError::UnknownChannel {
                device: device.clone(),
                channel: channel.to_string(),
            })?
            .clone();
        if !c.writable {
            return Err(DeviceError::NotWritable(channel.to_string()));
        }
        let out_of_range = |reason: String| DeviceError::OutOfRange {
            channel: channel.to_string(),
            reason,
        };
        let v = Value::from_json(value).ok_or_else(|| {
            out_of_range(format!("expected a number, bool or string, got {value}"))
        })?;
        let (unit, mut mask_write) = (d.unit, d.mask_write);
        let timeout = self.settings.timeout.0;
        let res = self
            .write_value(unit, &c, &v, timeout, &mut mask_write)
            .await;
        self.devices[i].mask_write = mask_write;
        if let Err(e) = &res {
            if e.needs_reconnect() {
                self.after_error(&e.clone().call_error());
            }
        }
        let written = res.map_err(|e| match e {
            WriteFailure::Codec(e) => out_of_range(e.to_string()),
            WriteFailure::Call(CallError::Exception(m)) => {
                DeviceError::Failed(format!("the device refused the write: {m}"))
            }
            WriteFailure::Call(e) => DeviceError::Offline(device.clone(), e.to_string()),
        })?;
        tracing::info!(connector = %self.ctx.name, device = %device, channel = %channel,
            value = %written, "modbus write");
        Ok(written.to_json())
    }

    /// Encodes and sends a value; returns it as written (after the type's rounding), in
    /// engineering units.
    async fn write_value(
        &mut self,
        unit: u8,
        c: &ChannelInfo,
        value: &Value,
        timeout: Duration,
        mask_write: &mut bool,
    ) -> Result<Value, WriteFailure> {
        let conn = self.connection(unit).await?;
        let a = c.address;
        match (c.table, c.format.data_type) {
            (Table::Coil, _) => {
                let on = codec::to_coil(value)?;
                transport::call(timeout, conn.write_single_coil(a, on)).await?;
                Ok(Value::Bool(on))
            }
            (Table::Holding, DataType::Bool) => {
                let on = codec::to_coil(value)?;
                let masks = codec::bit_masks(&c.format, on)?;
                transport::write_masked(conn, timeout, a, masks, mask_write).await?;
                Ok(Value::Bool(on))
            }
            (Table::Holding, _) => {
                let raw = codec::unscale(value, c.scale, c.offset)?;
                let words = codec::encode_registers(&raw, &c.format)?;
                if words.len() == 1 {
                    transport::call(timeout, conn.write_single_register(a, words[0])).await?;
                } else {
                    transport::call(timeout, conn.write_multiple_registers(a, &words)).await?;
                }
                let back = codec::decode_registers(&words, &c.format)?;
                Ok(rescale(back, c.scale, c.offset))
            }
            (Table::Discrete | Table::Input, _) => {
                Err(CallError::Exception(format!("table \"{}\" is read-only", c.table)).into())
            }
        }
    }
}

/// Why a write failed, before it is put in operator terms.
#[derive(Debug, Clone)]
enum WriteFailure {
    Codec(codec::CodecError),
    Call(CallError),
}

impl WriteFailure {
    fn needs_reconnect(&self) -> bool {
        matches!(self, WriteFailure::Call(e) if e.needs_reconnect())
    }

    fn call_error(self) -> CallError {
        match self {
            WriteFailure::Call(e) => e,
            WriteFailure::Codec(e) => CallError::Io(e.to_string()),
        }
    }
}

impl From<codec::CodecError> for WriteFailure {
    fn from(e: codec::CodecError) -> Self {
        WriteFailure::Codec(e)
    }
}

impl From<CallError> for WriteFailure {
    fn from(e: CallError) -> Self {
        WriteFailure::Call(e)
    }
}

/// Applies `y = x * scale + offset` (what the transform does to a read value).
fn rescale(v: Value, scale: Option<f64>, offset: Option<f64>) -> Value {
    if scale.is_none() && offset.is_none() {
        return v;
    }
    match v.as_f64() {
        Some(x) => Value::F64(x * scale.unwrap_or(1.0) + offset.unwrap_or(0.0)),
        None => v,
    }
}

/// A reading of channel `ch` through its transform's value steps (for `device.read`).
fn convert(
    out: &DeviceOutput,
    ch: usize,
    v: Result<Value, Arc<str>>,
    ts: Timestamp,
) -> Option<Reading> {
    match v {
        Ok(v) => out.convert(ch, v, ts, Quality::Good),
        Err(reason) => out.convert(ch, Value::F64(f64::NAN), ts, Quality::Bad(reason)),
    }
}

/// Decodes the channels of a register read, handing each `(channel, value or reason)` to `f`.
fn decode_registers(
    channels: &[ChannelInfo],
    req: &ReadRequest,
    regs: &[u16],
    mut f: impl FnMut(usize, Result<Value, Arc<str>>),
) {
    for &ch in &req.items {
        let c = &channels[ch];
        let off = req.offset(c.address);
        let n = usize::from(c.format.count(c.table));
        f(
            ch,
            match regs.get(off..off + n) {
                Some(slice) => {
                    codec::decode_registers(slice, &c.format).map_err(|e| e.to_string().into())
                }
                None => Err("short answer from the device".into()),
            },
        );
    }
}

/// Decodes the channels of a bit read, handing each `(channel, value or reason)` to `f`.
fn decode_bits(
    channels: &[ChannelInfo],
    req: &ReadRequest,
    bits: &[bool],
    mut f: impl FnMut(usize, Result<Value, Arc<str>>),
) {
    for &ch in &req.items {
        let c = &channels[ch];
        f(
            ch,
            match bits.get(req.offset(c.address)) {
                Some(b) => Ok(codec::decode_bit(*b)),
                None => Err("short answer from the device".into()),
            },
        );
    }
}

/// Hands a device's control requests and enable/disable changes to its line.
async fn forward(
    i: usize,
    mut control: DeviceControl,
    line: mpsc::Sender<LineMsg>,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => return,
            r = control.enabled.changed() => {
                if r.is_err() {
                    return;
                }
                let on = *control.enabled.borrow_and_update();
                if line.send(LineMsg::Enabled(i, on)).await.is_err() {
                    return;
                }
            }
            Some(req) = control.requests.recv() => {
                if let Err(mpsc::error::SendError(LineMsg::Request(_, req))) =
                    line.send(LineMsg::Request(i, req)).await
                {
                    req.fail(DeviceError::Offline(String::new(), "connector stopped".into()));
                    return;
                }
            }
        }
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
