//! The M-Bus poller: reads one meter per poll through the bus's [`Link`] and maps its records
//! to channels.
//!
//! A channel selects its record by what it is (quantity, storage number, tariff, sub-unit,
//! function), by derived name or by index ([`Selector`]); a record that is missing makes the
//! channel bad, not the meter. A meter without configured channels publishes every record under
//! its derived name ([`super::json::unique_names`]). An application error or a malformed
//! telegram is a fault of the meter (logged once and counted by the kit), never a panic.

use std::sync::Arc;

use super::link::{Address, Link, LinkError, Secondary};
use super::record::{self, Function, Record, RecordValue};
use super::{frame, json, MbusChannel, MbusDevice};
use osgate_core::config::DeviceSpec;
use crate::device::{Fault, Poll, Poller, Schedule, WriteError};
use osgate_core::reading::{Timestamp, Value};

/// What a channel takes from the meter's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// The first record with this quantity, storage, tariff, sub-unit and function.
    What {
        /// Quantity name.
        quantity: Box<str>,
        /// Storage number.
        storage: u64,
        /// Tariff.
        tariff: u32,
        /// Sub-unit.
        subunit: u32,
        /// Function.
        function: Function,
    },
    /// The record with this derived name.
    Name(Box<str>),
    /// The record at this position.
    Index(u16),
}

impl Selector {
    /// The selector of a channel's settings.
    pub fn of(c: &MbusChannel) -> Self {
        if let Some(i) = c.index {
            Selector::Index(i)
        } else if let Some(n) = &c.record {
            Selector::Name(n.as_str().into())
        } else {
            Selector::What {
                quantity: c
                    .quantity
                    .as_deref()
                    .unwrap_or_default()
                    .to_ascii_lowercase()
                    .replace('_', " ")
                    .into(),
                storage: c.storage,
                tariff: c.tariff,
                subunit: c.subunit,
                function: c
                    .function
                    .as_deref()
                    .and_then(Function::parse)
                    .unwrap_or(Function::Instantaneous),
            }
        }
    }

    /// The position of the record this selects in `recs` (named `names`).
    pub fn find(&self, recs: &[Record<'_>], names: &[String]) -> Option<usize> {
        match self {
            Selector::Index(i) => (usize::from(*i) < recs.len()).then_some(usize::from(*i)),
            Selector::Name(n) => names.iter().position(|x| x.as_str() == &**n),
            Selector::What {
                quantity,
                storage,
                tariff,
                subunit,
                function,
            } => recs.iter().position(|r| {
                r.quantity_name() == &**quantity
                    && r.storage == *storage
                    && r.tariff == *tariff
                    && r.subunit == *subunit
                    && r.function == *function
            }),
        }
    }
}

/// One meter on the bus.
pub struct Meter {
    address: Address,
    /// Per channel; empty: publish every record.
    selectors: Box<[Selector]>,
}

/// The schedule and state of a device.
pub fn meter(d: &DeviceSpec<MbusDevice, MbusChannel>) -> (Schedule, Meter) {
    let address = match (&d.settings.address, &d.settings.secondary) {
        (Some(a), _) => Address::Primary(*a),
        (None, Some(s)) => Address::Secondary(Secondary::parse(s).unwrap_or(Secondary::ANY)),
        (None, None) => Address::Primary(0),
    };
    let selectors: Box<[Selector]> = d
        .channels
        .iter()
        .map(|c| Selector::of(&c.settings))
        .collect();
    let schedule = if selectors.is_empty() {
        Schedule::device_only(d.interval.0)
    } else {
        Schedule::every(d.interval.0, selectors.len())
    };
    (schedule, Meter { address, selectors })
}

/// The poller of one bus.
pub struct Bus {
    link: Link,
    max_telegrams: usize,
}

impl Bus {
    /// A bus read through `link`, at most `max_telegrams` telegrams per meter and poll.
    pub fn new(link: Link, max_telegrams: usize) -> Self {
        Bus {
            link,
            max_telegrams,
        }
    }
}

/// A record's value as a reading value (`None` when the record carries no data).
pub fn reading_value(v: &RecordValue<'_>) -> Option<Value> {
    match v {
        RecordValue::None => None,
        RecordValue::Number(x) => Some(Value::F64(*x)),
        other => other.text().map(|t| Value::Text(t.into())),
    }
}

fn fault(e: &LinkError) -> Fault {
    Fault::new(e.kind(), e.to_string())
}

/// Decodes the telegrams of one readout into records (indices counted across telegrams).
pub fn decode_all(telegrams: &[Vec<u8>]) -> Result<Vec<Record<'_>>, LinkError> {
    decode_borrowed(telegrams)
}

/// [`decode_all`] of telegrams held anywhere.
pub fn decode_borrowed<T: AsRef<[u8]>>(telegrams: &[T]) -> Result<Vec<Record<'_>>, LinkError> {
    let mut recs = Vec::new();
    for t in telegrams {
        let (ci, data) = match frame::parse(t.as_ref()).map_err(LinkError::Garbled)? {
            frame::Frame::Long { ci, data, .. } => (ci, data),
            frame::Frame::Control { ci, .. } => (ci, &[][..]),
            other => return Err(LinkError::Unexpected(other.kind().to_string())),
        };
        let ud = record::decode(ci, data)?;
        let base = recs.len();
        for r in ud.records() {
            let mut r = r?;
            r.index = (base + usize::from(r.index)).min(usize::from(u16::MAX)) as u16;
            recs.push(r);
        }
    }
    Ok(recs)
}

impl Poller for Bus {
    type Device = Meter;

    async fn poll(&mut self, meter: &mut Meter, poll: &mut Poll<'_>) -> Result<(), Fault> {
        let telegrams = self
            .link
            .read_meter(meter.address, self.max_telegrams)
            .await
            .map_err(|e| fault(&e))?;
        let ts = Timestamp::now();
        let recs = decode_all(&telegrams).map_err(|e| fault(&e))?;
        let names = json::unique_names(&recs);
        if meter.selectors.is_empty() {
            for (r, name) in recs.iter().zip(&names) {
                if let Some(v) = reading_value(&r.value) {
                    poll.push_named(name, r.unit_text().as_deref(), v, ts);
                }
            }
            return Ok(());
        }
        let reason: Arc<str> = Arc::from("no such record in the meter's answer");
        for ch in poll.due_channels().collect::<Vec<_>>() {
            let found = meter.selectors[ch]
                .find(&recs, &names)
                .and_then(|i| reading_value(&recs[i].value));
            match found {
                Some(v) => poll.push(ch, v, ts),
                None => poll.push_bad(ch, reason.clone(), ts),
            }
        }
        Ok(())
    }

    async fn write(&mut self, _: &mut Meter, _: usize, _: Value) -> Result<Value, WriteError> {
        Err(WriteError::Refused(
            "M-Bus meter values are read-only".into(),
        ))
    }

    async fn close(&mut self) {
        self.link.close();
    }
}
