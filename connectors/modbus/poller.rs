//! The Modbus half of the connector kit's device runtime (`connectors/device`): [`Link`] is
//! one connection (a TCP socket, or a serial port) and polls the [`Unit`]s behind it in turn.
//!
//! Each unit's channels are planned into read requests per poll group (see [`planner`]); the
//! runtime says which groups are due, and the link sends their requests one by one, each under
//! the connector's timeout; the timestamp of a value is taken when its answer arrives. A Modbus
//! exception marks only the channels of that request bad (a merged request that draws one is
//! split into per-channel requests at once, so one bad address does not blank its neighbours);
//! a transport failure (no answer, wrong transaction or unit id, garbled frame, closed socket)
//! drops the connection, marks the rest of the unit's poll bad and returns a [`Fault`], so the
//! runtime takes the unit offline with backoff. An offline unit gets a single attempt per poll,
//! so a dead slave on a shared line costs the others at most one timeout per cycle. Health,
//! scheduling, requests, logging and the write checks are the runtime's.

use std::sync::Arc;
use std::time::Duration;

use tokio_modbus::client::{Client as _, Context, Reader as _, Writer as _};
use tokio_modbus::prelude::SlaveContext as _;
use tokio_modbus::Slave;

use super::codec::{self, DataType, Table, ValueFormat};
use super::planner::{self, PlanItem, ReadRequest};
use super::transport::{self, CallError};
use super::{ModbusChannel, ModbusDevice, ModbusSettings, Transport};
use osgate_core::config::{ChannelSpec, DeviceSpec};
use crate::device::{Fault, Poll, Poller, Schedule, ValueKind, WriteError, WriteSpec};
use osgate_core::reading::{Timestamp, Value};

/// What a unit needs of a channel at run time.
#[derive(Debug, Clone)]
struct ChannelInfo {
    table: Table,
    address: u16,
    format: ValueFormat,
}

/// One Modbus unit (slave) behind a link: its planned reads, per poll group of the runtime.
pub struct Unit {
    name: Arc<str>,
    unit: u8,
    channels: Vec<ChannelInfo>,
    items: Vec<PlanItem>,
    groups: Vec<Vec<ReadRequest>>,
    /// Whether bit writes may use Mask Write Register (until the device says it lacks it).
    mask_write: bool,
}

impl Unit {
    /// Plans the reads of a device for the groups of its `schedule`.
    pub fn new(
        settings: &ModbusSettings,
        spec: &DeviceSpec<ModbusDevice, ModbusChannel>,
        schedule: &Schedule,
    ) -> Self {
        let limits = super::device_limits(settings, &spec.settings);
        let channels = spec
            .channels
            .iter()
            .map(|c| ChannelInfo {
                table: c.settings.table,
                address: c.settings.address,
                format: c.settings.format(),
            })
            .collect();
        let mut items: Vec<PlanItem> = spec
            .channels
            .iter()
            .map(|c| PlanItem {
                key: 0,
                table: c.settings.table,
                address: c.settings.address,
                count: c.settings.count(),
            })
            .collect();
        for (g, group) in schedule.groups().iter().enumerate() {
            for &ch in group.channels.iter() {
                items[ch as usize].key = g as u64;
            }
        }
        let mut groups = vec![Vec::new(); schedule.groups().len()];
        for req in planner::plan(&items, &limits) {
            groups[req.key as usize].push(req);
        }
        tracing::debug!(
            device = %spec.name,
            channels = items.len(),
            requests = groups.iter().map(Vec::len).sum::<usize>(),
            "modbus read plan"
        );
        Unit {
            name: spec.name.clone(),
            unit: spec.settings.unit_id,
            channels,
            items,
            groups,
            mask_write: true,
        }
    }
}

/// The schedule of a Modbus device: its interval, and channels with an interval of their own.
pub fn schedule(spec: &DeviceSpec<ModbusDevice, ModbusChannel>) -> Schedule {
    Schedule::new(
        spec.interval.0,
        spec.channels
            .iter()
            .map(|c| c.settings.interval.map(|d| d.0)),
    )
}

/// What a write to a writable channel may be, from its data type.
pub fn write_spec(c: &ChannelSpec<ModbusChannel>) -> Option<WriteSpec> {
    if !c.settings.writable {
        return None;
    }
    Some(WriteSpec::new(match c.settings.data_type() {
        DataType::Bool => ValueKind::Bool,
        DataType::U16 => ValueKind::unsigned(16),
        DataType::I16 => ValueKind::signed(16),
        DataType::U32 => ValueKind::unsigned(32),
        DataType::I32 => ValueKind::signed(32),
        DataType::U64 => ValueKind::unsigned(64),
        DataType::I64 => ValueKind::signed(64),
        DataType::F32 | DataType::F64 => ValueKind::Float,
        DataType::String => ValueKind::Text,
    }))
}

/// One connection and the requests sent on it.
pub struct Link {
    settings: Arc<ModbusSettings>,
    /// The connector's `timeout`: for one answer, or a connection.
    timeout: Duration,
    conn: Option<Context>,
}

/// The outcome of one request attempt sequence.
enum Outcome {
    Registers(Vec<u16>, Timestamp),
    Bits(Vec<bool>, Timestamp),
    Failed(CallError),
}

impl Link {
    /// A link for the connector's transport (it connects at the first request), waiting
    /// `timeout` for each answer.
    pub fn new(settings: Arc<ModbusSettings>, timeout: Duration) -> Self {
        Link {
            settings,
            timeout,
            conn: None,
        }
    }

    /// Makes sure a connection is open and addressed to `unit`.
    async fn connection(&mut self, unit: u8) -> Result<&mut Context, CallError> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => {
                transport::connect(&self.settings.transport, unit, self.timeout).await?
            }
        };
        let c = self.conn.insert(conn);
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

    /// Sends one read, with up to `attempts` tries.
    async fn read(&mut self, unit: u8, req: &ReadRequest, attempts: u32) -> Outcome {
        let timeout = self.timeout;
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

    /// Encodes and sends a raw value; returns it as the device holds it (after the type's
    /// rounding).
    async fn write_raw(
        &mut self,
        u: &mut Unit,
        c: &ChannelInfo,
        value: &Value,
    ) -> Result<Value, WriteFailure> {
        let timeout = self.timeout;
        let conn = self.connection(u.unit).await?;
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
                transport::write_masked(conn, timeout, a, masks, &mut u.mask_write).await?;
                Ok(Value::Bool(on))
            }
            (Table::Holding, _) => {
                let words = codec::encode_registers(value, &c.format)?;
                if words.len() == 1 {
                    transport::call(timeout, conn.write_single_register(a, words[0])).await?;
                } else {
                    transport::call(timeout, conn.write_multiple_registers(a, &words)).await?;
                }
                Ok(codec::decode_registers(&words, &c.format)?)
            }
            (Table::Discrete | Table::Input, _) => {
                Err(CallError::Exception(format!("table \"{}\" is read-only", c.table)).into())
            }
        }
    }
}

impl Poller for Link {
    type Device = Unit;

    async fn poll(&mut self, u: &mut Unit, poll: &mut Poll<'_>) -> Result<(), Fault> {
        let attempts = if poll.is_offline() {
            1
        } else {
            1 + self.settings.retries
        };
        let mut answered = false;
        let mut failure: Option<CallError> = None;
        for &g in poll.due() {
            let mut r = 0;
            while r < u.groups[g].len() {
                let req = &u.groups[g][r];
                if let Some(err) = &failure {
                    // The device already failed this poll: don't spend another timeout on it.
                    mark_bad(poll, req, err.to_string().into());
                    r += 1;
                    continue;
                }
                match self.read(u.unit, req, attempts).await {
                    Outcome::Registers(regs, ts) => {
                        answered = true;
                        decode_registers(&u.channels, req, &regs, |ch, v| push(poll, ch, v, ts));
                    }
                    Outcome::Bits(bits, ts) => {
                        answered = true;
                        decode_bits(&u.channels, req, &bits, |ch, v| push(poll, ch, v, ts));
                    }
                    Outcome::Failed(e @ CallError::Exception(_)) if req.items.len() > 1 => {
                        answered = true;
                        // Find the culprit: read each channel of this request on its own,
                        // now and from now on.
                        tracing::debug!(device = %u.name, error = %e, address = req.address,
                            count = req.count,
                            "merged read drew an exception; reading its channels one by one");
                        let split = planner::split(req, &u.items);
                        u.groups[g].splice(r..=r, split);
                        continue;
                    }
                    Outcome::Failed(e @ CallError::Exception(_)) => {
                        answered = true;
                        mark_bad(poll, req, e.to_string().into());
                    }
                    Outcome::Failed(e) => {
                        mark_bad(poll, req, e.to_string().into());
                        failure = Some(e);
                    }
                }
                r += 1;
            }
        }
        match failure {
            Some(e) if !answered => Err(Fault::new(e.kind(), e.to_string())),
            _ => Ok(()),
        }
    }

    async fn write(&mut self, u: &mut Unit, ch: usize, raw: Value) -> Result<Value, WriteError> {
        let c = u.channels[ch].clone();
        let res = self.write_raw(u, &c, &raw).await;
        if let Err(WriteFailure::Call(e)) = &res {
            self.after_error(e);
        }
        res.map_err(|e| match e {
            WriteFailure::Codec(e) => WriteError::Invalid(e.to_string()),
            WriteFailure::Call(CallError::Exception(m)) => {
                WriteError::Refused(format!("the device refused the write: {m}"))
            }
            WriteFailure::Call(e) => WriteError::Offline(e.to_string()),
        })
    }

    async fn close(&mut self) {
        if let Some(mut c) = self.conn.take() {
            let _ = tokio::time::timeout(Duration::from_millis(100), c.disconnect()).await;
        }
    }
}

fn push(poll: &mut Poll<'_>, ch: usize, v: Result<Value, Arc<str>>, ts: Timestamp) {
    match v {
        Ok(v) => poll.push(ch, v, ts),
        Err(reason) => poll.push_bad(ch, reason, ts),
    }
}

fn mark_bad(poll: &mut Poll<'_>, req: &ReadRequest, reason: Arc<str>) {
    let ts = Timestamp::now();
    for &ch in &req.items {
        poll.push_bad(ch, reason.clone(), ts);
    }
}

/// Why a write failed, before it is put in operator terms.
#[derive(Debug, Clone)]
enum WriteFailure {
    Codec(codec::CodecError),
    Call(CallError),
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
