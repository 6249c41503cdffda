//! The S7 half of the connector kit's device runtime (`connectors/device`): [`Link`] is one
//! connection to the PLC and polls the [`Plc`] devices (channel groups) on it in turn.
//!
//! Each device's due groups are planned ([`planner`]) within the PDU the connection negotiated
//! (planned again if a new connection negotiates another), read with multi-item read-var
//! requests, and each channel decoded from its block ([`codec`]); values are stamped when
//! their answer arrives. An item the PLC refuses (return code other than 0xFF) marks only the
//! channels of its block bad, with the reason in operator terms; a merged block that draws a
//! refusal is read channel by channel from then on, so one bad address does not blank its
//! neighbours. A request the PLC refuses as a whole (PUT/GET not enabled) marks its channels
//! bad, and if nothing was read the device goes offline with that reason. A transport failure
//! (refused or lost connection, timeout, garbled frame) drops the connection and faults the
//! device; the kit retries it with backoff.

use std::sync::Arc;
use std::time::Duration;

use super::address::{Address, Area, Width};
use super::codec::{self, DataType};
use super::planner::{self, Limits, Plan, PlanItem, Span};
use super::transport::{Connection, S7Error, Target};
use super::wire::{self, ItemKind, ItemSpec};
use super::{S7Channel, S7Device, S7Settings};
use osgate_core::config::{ChannelSpec, DeviceSpec};
use crate::device::{Fault, Poll, Poller, Schedule, ValueKind, WriteError, WriteSpec};
use osgate_core::reading::{Timestamp, Value};

/// What a device needs of a channel at run time.
#[derive(Debug, Clone, Copy)]
pub struct ChannelInfo {
    /// Where the value is.
    pub addr: Address,
    /// Its type.
    pub ty: DataType,
    /// A STRING's declared length (0 for other types).
    pub length: u16,
}

impl ChannelInfo {
    fn bytes(&self) -> u32 {
        self.ty.size(self.length)
    }

    fn span(&self) -> Span {
        Span {
            area: self.addr.area,
            start: self.addr.offset,
            len: (self.bytes() / self.addr.area.unit_bytes()).max(1),
        }
    }
}

/// One poll group's plan and the buffer its answers are copied into.
#[derive(Debug, Default)]
struct GroupPlan {
    plan: Plan,
    /// Where each block starts in `buf`.
    offsets: Vec<usize>,
    buf: Vec<u8>,
    /// Each block's failure in this poll, if any.
    failed: Vec<Option<Arc<str>>>,
    /// Whether each block's failure was an item refusal (worth splitting a merged block).
    item_refused: Vec<bool>,
    ts: Vec<Timestamp>,
}

/// One device: a group of channels of the PLC, planned per poll group.
pub struct Plc {
    name: Arc<str>,
    channels: Vec<ChannelInfo>,
    groups: Vec<Arc<[u32]>>,
    /// Channels read on their own (their merged block drew a refusal).
    solo: Vec<bool>,
    plans: Vec<GroupPlan>,
    planned_for: Option<Limits>,
}

impl Plc {
    /// The device's channels (validated config) and poll groups.
    pub fn new(spec: &DeviceSpec<S7Device, S7Channel>, schedule: &Schedule) -> Self {
        let channels = spec
            .channels
            .iter()
            .map(|c| {
                let (addr, ty, length) = c.settings.resolve().unwrap_or((
                    Address {
                        area: Area::Flags,
                        offset: 0,
                        width: Width::Byte,
                    },
                    DataType::Byte,
                    0,
                ));
                ChannelInfo { addr, ty, length }
            })
            .collect::<Vec<_>>();
        Plc {
            name: spec.name.clone(),
            solo: vec![false; channels.len()],
            channels,
            groups: schedule
                .groups()
                .iter()
                .map(|g| g.channels.clone())
                .collect(),
            plans: Vec::new(),
            planned_for: None,
        }
    }

    /// Plans every group for `limits` unless already planned for them.
    fn plan(&mut self, limits: Limits) {
        if self.planned_for == Some(limits) {
            return;
        }
        self.plans = (0..self.groups.len())
            .map(|g| self.plan_group(g, &limits))
            .collect();
        tracing::debug!(device = %self.name, pdu = limits.pdu,
            requests = self.plans.iter().map(|p| p.plan.requests.len()).sum::<usize>(),
            "s7 read plan");
        self.planned_for = Some(limits);
    }

    fn plan_group(&self, g: usize, limits: &Limits) -> GroupPlan {
        let items: Vec<PlanItem> = self.groups[g]
            .iter()
            .map(|&ch| PlanItem {
                channel: ch,
                span: self.channels[ch as usize].span(),
                solo: self.solo[ch as usize],
            })
            .collect();
        let plan = planner::plan(&items, limits);
        let mut offsets = Vec::with_capacity(plan.blocks.len());
        let mut total = 0;
        for b in &plan.blocks {
            offsets.push(total);
            total += b.bytes();
        }
        let n = plan.blocks.len();
        GroupPlan {
            plan,
            offsets,
            buf: vec![0; total],
            failed: vec![None; n],
            item_refused: vec![false; n],
            ts: vec![Timestamp(0); n],
        }
    }
}

/// The schedule of a device: its interval, and channels with an interval of their own.
pub fn schedule(spec: &DeviceSpec<S7Device, S7Channel>) -> Schedule {
    Schedule::new(
        spec.interval.0,
        spec.channels
            .iter()
            .map(|c| c.settings.interval.map(|d| d.0)),
    )
}

/// What a write to a writable channel may be, from its data type.
pub fn write_spec(c: &ChannelSpec<S7Channel>) -> Option<WriteSpec> {
    if !c.settings.writable {
        return None;
    }
    let ty = c.settings.resolve().ok()?.1;
    Some(WriteSpec::new(value_kind(ty)))
}

/// The kind of value a write of `ty` takes.
pub fn value_kind(ty: DataType) -> ValueKind {
    match ty {
        DataType::Bool => ValueKind::Bool,
        DataType::Byte | DataType::Usint => ValueKind::unsigned(8),
        DataType::Sint => ValueKind::signed(8),
        DataType::Word | DataType::Uint => ValueKind::unsigned(16),
        DataType::Int => ValueKind::signed(16),
        DataType::Dword | DataType::Udint => ValueKind::unsigned(32),
        DataType::Dint | DataType::Time => ValueKind::signed(32),
        DataType::Lword | DataType::Ulint => ValueKind::unsigned(64),
        DataType::Lint => ValueKind::signed(64),
        DataType::Real | DataType::Lreal => ValueKind::Float,
        DataType::S5time => ValueKind::Integer {
            min: 0.0,
            max: 9_990_000.0,
        },
        DataType::Counter => ValueKind::Integer {
            min: 0.0,
            max: 999.0,
        },
        DataType::Char
        | DataType::String
        | DataType::Date
        | DataType::TimeOfDay
        | DataType::DateAndTime
        | DataType::Dtl => ValueKind::Text,
    }
}

/// One connection to the PLC and the requests sent on it.
pub struct Link {
    settings: Arc<S7Settings>,
    target: Target,
    /// The connector's `timeout`: for one answer, or a connection.
    timeout: Duration,
    conn: Option<Connection>,
}

impl Link {
    /// A link for the connector's PLC (it connects at the first request), waiting `timeout`
    /// for each answer.
    pub fn new(settings: Arc<S7Settings>, timeout: Duration) -> Self {
        Link {
            target: settings.target(),
            settings,
            timeout,
            conn: None,
        }
    }

    /// The open connection, opened first if there is none.
    pub async fn connection(&mut self) -> Result<&mut Connection, S7Error> {
        if self.conn.is_none() {
            let c = Connection::open(&self.target, self.timeout).await?;
            tracing::debug!(plc = %self.target.addr, pdu = c.pdu(), "s7 connection open");
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("connected"))
    }

    fn limits(&self, pdu: u16) -> Limits {
        Limits {
            pdu: usize::from(pdu),
            max_items: usize::from(self.settings.max_items),
            max_gap: u32::from(self.settings.max_gap),
        }
    }

    /// Reads one group's plan into its buffer; `Err` on a transport failure (the connection
    /// is dropped). Returns whether any item was read.
    async fn read_group(&mut self, gp: &mut GroupPlan) -> Result<bool, S7Error> {
        gp.failed.iter_mut().for_each(|f| *f = None);
        gp.item_refused.iter_mut().for_each(|f| *f = false);
        let mut any = false;
        let conn = self.connection().await?;
        for req in &gp.plan.requests {
            let blocks = &gp.plan.blocks;
            let specs = req.pieces.iter().map(|pc| {
                let b = &blocks[pc.block as usize];
                ItemSpec {
                    area: b.area,
                    kind: ItemKind::of(b.area),
                    start: b.start + pc.offset,
                    bit: 0,
                    count: pc.len as u16,
                }
            });
            let r = conn.take_ref();
            wire::read_request(&mut conn.tx, r, specs);
            let ack = match conn.exchange().await {
                Ok(a) => a,
                Err(S7Error::Plc(e)) => {
                    let why: Arc<str> = e.to_string().into();
                    let ts = Timestamp::now();
                    for pc in &req.pieces {
                        gp.failed[pc.block as usize] = Some(why.clone());
                        gp.ts[pc.block as usize] = ts;
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            let ts = Timestamp::now();
            let items = wire::read_answer(&ack, req.pieces.len())?;
            for (pc, item) in req.pieces.iter().zip(items) {
                let bi = pc.block as usize;
                let b = &blocks[bi];
                gp.ts[bi] = ts;
                match item {
                    Ok(data) => {
                        let unit = b.area.unit_bytes() as usize;
                        let at = gp.offsets[bi] + pc.offset as usize * unit;
                        let want = pc.len as usize * unit;
                        if data.len() < want {
                            gp.failed[bi] = Some(
                                format!("short answer: {} of {want} bytes", data.len()).into(),
                            );
                        } else {
                            gp.buf[at..at + want].copy_from_slice(&data[..want]);
                            any = true;
                        }
                    }
                    Err(e) => {
                        gp.failed[bi] = Some(e.describe(b.area).into());
                        gp.item_refused[bi] = true;
                    }
                }
            }
        }
        Ok(any)
    }

    /// Encodes and writes a raw value (bits as bits); returns it as the PLC now holds it.
    pub async fn write_raw(&mut self, c: ChannelInfo, raw: &Value) -> Result<Value, WriteError> {
        let data =
            codec::encode(c.ty, raw, c.length).map_err(|e| WriteError::Invalid(e.to_string()))?;
        let (kind, bit, count) = match c.addr.width {
            Width::Bit(b) => (ItemKind::Bit, b, 1),
            _ => (
                ItemKind::of(c.addr.area),
                0,
                (data.len() as u32 / c.addr.area.unit_bytes()) as u16,
            ),
        };
        let item = ItemSpec {
            area: c.addr.area,
            kind,
            start: c.addr.offset,
            bit,
            count,
        };
        let conn = self.connection().await.map_err(offline)?;
        let need = wire::JOB_HEADER + 2 + wire::ITEM_SPEC + wire::ITEM_HEADER + data.len();
        if need > usize::from(conn.pdu()) {
            return Err(WriteError::Invalid(format!(
                "the value takes {} bytes, more than one write within the PLC's PDU of {} bytes holds",
                data.len(),
                conn.pdu()
            )));
        }
        let r = conn.take_ref();
        wire::write_request(&mut conn.tx, r, item, &data);
        let res = match conn.exchange().await {
            Ok(ack) => wire::write_answer(&ack).map_err(S7Error::from),
            Err(e) => Err(e),
        };
        match res {
            Ok(Ok(())) => {
                codec::decode(c.ty, &data, 0).map_err(|e| WriteError::Invalid(e.to_string()))
            }
            Ok(Err(item)) => Err(WriteError::Refused(format!(
                "the PLC refused the write to {}: {}",
                c.addr,
                item.describe(c.addr.area)
            ))),
            Err(S7Error::Plc(e)) => Err(WriteError::Refused(format!(
                "the PLC refused the write to {}: {e}",
                c.addr
            ))),
            Err(e) => {
                self.conn = None;
                Err(offline(e))
            }
        }
    }
}

fn offline(e: S7Error) -> WriteError {
    WriteError::Offline(e.to_string())
}

impl Poller for Link {
    type Device = Plc;

    async fn poll(&mut self, dev: &mut Plc, poll: &mut Poll<'_>) -> Result<(), Fault> {
        let attempts = if poll.is_offline() {
            1
        } else {
            1 + self.settings.retries
        };
        let mut answered = false;
        let mut refusal: Option<Arc<str>> = None;
        let due = poll.due();
        for (k, &g) in due.iter().enumerate() {
            let mut tries = 0;
            let mut resplit = false;
            loop {
                let res = match self.connection().await.map(|c| c.pdu()) {
                    Ok(pdu) => {
                        let limits = self.limits(pdu);
                        dev.plan(limits);
                        let mut gp = std::mem::take(&mut dev.plans[g]);
                        let r = self.read_group(&mut gp).await;
                        dev.plans[g] = gp;
                        r
                    }
                    Err(e) => Err(e),
                };
                match res {
                    Ok(any) => {
                        answered |= any;
                        let gp = &dev.plans[g];
                        // A merged block the PLC refused: read its channels one by one.
                        let split: Vec<u32> = gp
                            .plan
                            .blocks
                            .iter()
                            .zip(&gp.item_refused)
                            .filter(|(b, refused)| **refused && b.channels.len() > 1)
                            .flat_map(|(b, _)| b.channels.iter().copied())
                            .collect();
                        if !split.is_empty() && !resplit {
                            tracing::debug!(device = %dev.name, channels = split.len(),
                                "merged S7 item refused; reading its channels one by one");
                            for ch in split {
                                dev.solo[ch as usize] = true;
                            }
                            let limits = dev.planned_for.expect("planned");
                            dev.plans[g] = dev.plan_group(g, &limits);
                            resplit = true;
                            continue;
                        }
                        if refusal.is_none() {
                            refusal = gp
                                .failed
                                .iter()
                                .zip(&gp.item_refused)
                                .find(|(f, item)| f.is_some() && !**item)
                                .and_then(|(f, _)| f.clone());
                        }
                        push_group(&dev.channels, &dev.plans[g], poll);
                        break;
                    }
                    Err(e) => {
                        if e.needs_reconnect() {
                            if let Some(c) = self.conn.take() {
                                c.close().await;
                            }
                        }
                        tries += 1;
                        if tries < attempts {
                            continue;
                        }
                        // Mark what this poll did not read, and give up on the device.
                        let why: Arc<str> = e.to_string().into();
                        let ts = Timestamp::now();
                        for &g in &due[k..] {
                            for &ch in poll.channels(g) {
                                poll.push_bad(ch as usize, why.clone(), ts);
                            }
                        }
                        return Err(Fault::new(e.kind(), e.to_string()));
                    }
                }
            }
        }
        match refusal {
            Some(why) if !answered => Err(Fault::new("refused-request", why.to_string())),
            _ => Ok(()),
        }
    }

    async fn write(&mut self, dev: &mut Plc, ch: usize, raw: Value) -> Result<Value, WriteError> {
        let c = dev.channels[ch];
        self.write_raw(c, &raw).await
    }

    async fn close(&mut self) {
        if let Some(c) = self.conn.take() {
            c.close().await;
        }
    }
}

/// Decodes the channels of a group from its blocks and pushes them.
fn push_group(channels: &[ChannelInfo], gp: &GroupPlan, poll: &mut Poll<'_>) {
    for (bi, b) in gp.plan.blocks.iter().enumerate() {
        let ts = gp.ts[bi];
        if let Some(why) = &gp.failed[bi] {
            for &ch in &b.channels {
                poll.push_bad(ch as usize, why.clone(), ts);
            }
            continue;
        }
        let unit = b.area.unit_bytes() as usize;
        for &ch in &b.channels {
            let c = &channels[ch as usize];
            let at = gp.offsets[bi] + (c.addr.offset - b.start) as usize * unit;
            let bytes = &gp.buf[at..at + c.bytes() as usize];
            match codec::decode(c.ty, bytes, c.addr.bit().unwrap_or(0)) {
                Ok(v) => poll.push(ch as usize, v, ts),
                Err(e) => poll.push_bad(ch as usize, e.to_string().into(), ts),
            }
        }
    }
}
