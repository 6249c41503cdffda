//! The edge node's Sparkplug state: `bdSeq` and `seq`, the alias tables, the last value of every
//! metric, and the payloads built from them (NBIRTH, NDEATH, NDATA, DBIRTH, DDATA, DDEATH).
//!
//! Pure logic, no I/O: the session (`session.rs`) feeds it batches and device statuses,
//! asks it for payloads when it publishes, and keeps it across reconnects, so aliases stay the
//! same for the life of the process. What a device's metrics are is learnt from its readings:
//! a channel's name, unit and data type (from its value's type) come with every reading, and a
//! channel the birth did not carry, or whose type or unit changed, makes a new DBIRTH.
//!
//! Aliases are unique within the edge node (node and device metrics share one counter), as the
//! specification asks. `seq` counts every message of the node but NDEATH, from 0 in NBIRTH,
//! wrapping after 255.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::proto::PropertyValueKind;
use super::proto::{DataType, Metric, MetricValue, Payload, PropertySet, PropertyValue};
use osgate_core::reading::{Batch, Quality, Reading, Timestamp, Value};

/// Name of the node metric a host writes `true` to for a rebirth.
pub const REBIRTH: &str = "Node Control/Rebirth";
/// Name of the birth/death sequence metric.
pub const BD_SEQ: &str = "bdSeq";
/// The metric property that carries the unit (Ignition's name).
pub const UNIT_PROPERTY: &str = "engUnit";
/// The metric property that carries the quality (Ignition's name and codes).
pub const QUALITY_PROPERTY: &str = "Quality";
/// `Quality` of a good value.
pub const QUALITY_GOOD: i32 = 192;
/// `Quality` of a failed read (the value is null).
pub const QUALITY_BAD: i32 = 0;
/// `Quality` of a stale value (the value is null).
pub const QUALITY_STALE: i32 = 500;

/// The Sparkplug data type of a reading's value; `None` for a bad reading, whose value is a
/// placeholder.
pub fn data_type(value: &Value, quality: &Quality) -> Option<DataType> {
    if !quality.is_good() {
        return None;
    }
    Some(match value {
        Value::Bool(_) => DataType::Boolean,
        Value::I64(_) => DataType::Int64,
        Value::U64(_) => DataType::UInt64,
        Value::F64(_) => DataType::Double,
        Value::Text(_) => DataType::String,
    })
}

fn metric_value(v: &Value) -> MetricValue {
    match v {
        Value::Bool(b) => MetricValue::BooleanValue(*b),
        // Two's complement in 64 bits, as the specification stores Int64.
        Value::I64(i) => MetricValue::LongValue(*i as u64),
        Value::U64(u) => MetricValue::LongValue(*u),
        Value::F64(f) => MetricValue::DoubleValue(*f),
        Value::Text(s) => MetricValue::StringValue(s.to_string()),
    }
}

fn quality_code(q: &Quality) -> i32 {
    match q {
        Quality::Good => QUALITY_GOOD,
        Quality::Bad(_) => QUALITY_BAD,
        Quality::Stale(_) => QUALITY_STALE,
    }
}

/// True when two qualities are the same kind (the reason text does not matter to a host).
fn same_quality(a: &Quality, b: &Quality) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// One metric as last seen.
#[derive(Debug, Clone)]
struct MetricState {
    name: Arc<str>,
    alias: u64,
    dtype: DataType,
    unit: Option<Arc<str>>,
    value: Value,
    quality: Quality,
    ts: Timestamp,
    /// Send the next reading even if unchanged (it confirms a write).
    confirm: bool,
}

impl MetricState {
    /// The full metric of a birth: name, alias, type, value (or null), unit and quality.
    fn birth(&self) -> Metric {
        let mut props = PropertySet::default();
        if let Some(u) = &self.unit {
            props.keys.push(UNIT_PROPERTY.into());
            props.values.push(PropertyValue {
                r#type: Some(DataType::String as u32),
                is_null: None,
                value: Some(PropertyValueKind::StringValue(u.to_string())),
            });
        }
        if !self.quality.is_good() {
            push_quality(&mut props, &self.quality);
        }
        let good = self.quality.is_good();
        Metric {
            name: Some(self.name.to_string()),
            alias: Some(self.alias),
            timestamp: Some(self.ts.0.max(0) as u64),
            datatype: Some(self.dtype as u32),
            is_null: (!good).then_some(true),
            properties: (!props.keys.is_empty()).then_some(props),
            value: good.then(|| metric_value(&self.value)),
            ..Default::default()
        }
    }
}

fn push_quality(props: &mut PropertySet, q: &Quality) {
    props.keys.push(QUALITY_PROPERTY.into());
    props.values.push(PropertyValue {
        r#type: Some(DataType::Int32 as u32),
        is_null: None,
        value: Some(PropertyValueKind::IntValue(quality_code(q) as u32)),
    });
}

/// A data metric (by alias only) of one reading; `was_bad` adds the good quality back.
fn data_metric(alias: u64, r: &Reading, was_bad: bool, historical: bool) -> Metric {
    let good = r.quality.is_good();
    let props = if !good || was_bad {
        let mut p = PropertySet::default();
        push_quality(&mut p, &r.quality);
        Some(p)
    } else {
        None
    };
    Metric {
        alias: Some(alias),
        timestamp: Some(r.ts.0.max(0) as u64),
        is_historical: historical.then_some(true),
        is_null: (!good).then_some(true),
        properties: props,
        value: good.then(|| metric_value(&r.value)),
        ..Default::default()
    }
}

/// The metrics of one device or of the node itself, with their aliases.
#[derive(Debug, Default)]
struct MetricSet {
    /// Aliases of every metric ever seen, kept when the set is cleared (a device that died),
    /// so a metric keeps its alias for the life of the process.
    aliases: HashMap<Arc<str>, u64>,
    metrics: Vec<MetricState>,
    index: HashMap<Arc<str>, usize>,
}

/// What a batch changed in a [`MetricSet`].
struct Applied {
    /// A metric was added or changed type or unit: the set must be born again.
    structural: bool,
    /// Indexes (in the batch) of the readings whose value or quality changed.
    changed: Vec<u32>,
    /// For each changed reading: was the metric's quality bad before (the good quality must
    /// be sent again)?
    was_bad: Vec<bool>,
}

impl MetricSet {
    fn apply(&mut self, readings: &[Reading], next_alias: &mut u64) -> Applied {
        let mut out = Applied {
            structural: false,
            changed: Vec::new(),
            was_bad: Vec::new(),
        };
        for (i, r) in readings.iter().enumerate() {
            let dtype = data_type(&r.value, &r.quality);
            match self.index.get(&r.channel) {
                None => {
                    let alias = *self.aliases.entry(r.channel.clone()).or_insert_with(|| {
                        *next_alias += 1;
                        *next_alias
                    });
                    self.index.insert(r.channel.clone(), self.metrics.len());
                    self.metrics.push(MetricState {
                        name: r.channel.clone(),
                        alias,
                        dtype: dtype.unwrap_or(DataType::Double),
                        unit: r.unit.clone(),
                        value: r.value.clone(),
                        quality: r.quality.clone(),
                        ts: r.ts,
                        confirm: false,
                    });
                    out.structural = true;
                }
                Some(&k) => {
                    let m = &mut self.metrics[k];
                    if let Some(t) = dtype.filter(|t| *t != m.dtype) {
                        m.dtype = t;
                        out.structural = true;
                    }
                    if m.unit != r.unit {
                        m.unit = r.unit.clone();
                        out.structural = true;
                    }
                    let same = if r.quality.is_good() {
                        m.quality.is_good() && m.value == r.value
                    } else {
                        same_quality(&m.quality, &r.quality)
                    };
                    if !same || m.confirm {
                        m.confirm = false;
                        out.changed.push(i as u32);
                        out.was_bad.push(!m.quality.is_good());
                    }
                    m.value = r.value.clone();
                    m.quality = r.quality.clone();
                    m.ts = r.ts;
                }
            }
        }
        out
    }

    fn clear(&mut self) {
        self.metrics.clear();
        self.index.clear();
    }

    fn birth_metrics(&self) -> impl Iterator<Item = Metric> + '_ {
        self.metrics.iter().map(MetricState::birth)
    }
}

/// One device as the node knows it.
#[derive(Debug, Default)]
struct Device {
    set: MetricSet,
    /// Its DBIRTH went out since the last NBIRTH (and no DDEATH since).
    born: bool,
    /// Its last status said offline, disabled or stopped: no data until it returns.
    dead: bool,
}

/// What the session must send after a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Update {
    /// Nothing changed (or the device is dead and the batch holds no good value).
    Nothing,
    /// The device (or, for the node's own metrics, the node) must be born (again): a metric
    /// was added or changed type or unit, or it was not born yet. The birth carries the
    /// batch's values.
    Birth,
    /// Data of the readings at these indexes of the batch (they changed).
    Data(Changed),
}

/// Readings of a batch that changed, and whether each was bad before.
#[derive(Debug, PartialEq, Eq, Clone, Default)]
pub struct Changed {
    /// Indexes into the batch's readings.
    pub idx: Vec<u32>,
    /// Per index: the metric's quality was bad before, so the good quality is sent again.
    pub was_bad: Vec<bool>,
}

/// The edge node.
#[derive(Debug)]
pub struct Node {
    /// `spBv1.0/{group_id}/`.
    prefix: String,
    /// The edge node id.
    edge: String,
    /// The birth/death sequence of the current connection.
    pub bd_seq: u64,
    /// The `seq` of the next message.
    seq: u8,
    next_alias: u64,
    /// Alias of `Node Control/Rebirth`.
    rebirth_alias: u64,
    node: MetricSet,
    devices: BTreeMap<Arc<str>, Device>,
}

/// A device's status as the node needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Running and answering (online or degraded).
    Alive,
    /// Offline, disabled or stopped.
    Dead,
    /// Running, not polled yet.
    Unknown,
}

impl Node {
    /// A node `edge` of group `group`, with no device yet.
    pub fn new(group: &str, edge: &str) -> Self {
        Node {
            prefix: format!("spBv1.0/{group}/"),
            edge: edge.to_string(),
            bd_seq: 0,
            seq: 0,
            next_alias: 1,
            rebirth_alias: 1,
            node: MetricSet::default(),
            devices: BTreeMap::new(),
        }
    }

    /// The topic of a node message (`NBIRTH`…).
    pub fn node_topic(&self, kind: &str) -> String {
        format!("{}{kind}/{}", self.prefix, self.edge)
    }

    /// The topic of a device message (`DBIRTH`…).
    pub fn device_topic(&self, kind: &str, device: &str) -> String {
        format!("{}{kind}/{}/{device}", self.prefix, self.edge)
    }

    /// The alias of `Node Control/Rebirth`.
    pub fn rebirth_alias(&self) -> u64 {
        self.rebirth_alias
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        s as u64
    }

    /// Forgets that anything was born (the connection ended or the host went away).
    pub fn unborn(&mut self) {
        for d in self.devices.values_mut() {
            d.born = false;
        }
    }

    /// Takes a batch of a device: the model is updated; the answer says what to send.
    pub fn device_batch(&mut self, batch: &Batch) -> Update {
        let dev = self.devices.entry(batch.device.clone()).or_default();
        if dev.dead {
            if !batch.readings.iter().any(|r| r.quality.is_good()) {
                return Update::Nothing;
            }
            dev.dead = false;
        }
        let a = dev.set.apply(&batch.readings, &mut self.next_alias);
        if a.structural || !dev.born {
            Update::Birth
        } else if a.changed.is_empty() {
            Update::Nothing
        } else {
            Update::Data(Changed {
                idx: a.changed,
                was_bad: a.was_bad,
            })
        }
    }

    /// Takes a batch of the gateway's own figures (node metrics).
    pub fn node_batch(&mut self, batch: &Batch) -> Update {
        let a = self.node.apply(&batch.readings, &mut self.next_alias);
        if a.structural {
            Update::Birth
        } else if a.changed.is_empty() {
            Update::Nothing
        } else {
            Update::Data(Changed {
                idx: a.changed,
                was_bad: a.was_bad,
            })
        }
    }

    /// Takes a device's status; true when the device was born and must now get a DDEATH.
    /// A dead device forgets its metrics (not their aliases): when it returns, perhaps after a
    /// reload that changed its channels, its next batch makes a new DBIRTH.
    pub fn device_state(&mut self, device: &Arc<str>, state: DeviceState) -> bool {
        let dev = self.devices.entry(device.clone()).or_default();
        match state {
            DeviceState::Dead => {
                let was = dev.born;
                dev.born = false;
                dev.dead = true;
                dev.set.clear();
                was
            }
            DeviceState::Alive => {
                dev.dead = false;
                false
            }
            DeviceState::Unknown => false,
        }
    }

    /// The devices a node birth must be followed by (known metrics, not dead).
    pub fn live_devices(&self) -> Vec<Arc<str>> {
        self.devices
            .iter()
            .filter(|(_, d)| !d.dead && !d.set.metrics.is_empty())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// NBIRTH: `seq` starts again at 0; every device must be born again after it.
    pub fn nbirth(&mut self, now: Timestamp) -> Payload {
        self.seq = 0;
        self.unborn();
        let seq = self.next_seq();
        let ts = Some(now.0.max(0) as u64);
        let mut metrics = vec![
            Metric {
                name: Some(BD_SEQ.into()),
                timestamp: ts,
                datatype: Some(DataType::Int64 as u32),
                value: Some(MetricValue::LongValue(self.bd_seq)),
                ..Default::default()
            },
            Metric {
                name: Some(REBIRTH.into()),
                alias: Some(self.rebirth_alias),
                timestamp: ts,
                datatype: Some(DataType::Boolean as u32),
                value: Some(MetricValue::BooleanValue(false)),
                ..Default::default()
            },
        ];
        metrics.extend(self.node.birth_metrics());
        Payload {
            timestamp: ts,
            seq: Some(seq),
            metrics,
        }
    }

    /// NDEATH (also the will): the `bdSeq` of the connection, no `seq`.
    pub fn ndeath(&self, now: Timestamp) -> Payload {
        Payload {
            timestamp: Some(now.0.max(0) as u64),
            seq: None,
            metrics: vec![Metric {
                name: Some(BD_SEQ.into()),
                datatype: Some(DataType::Int64 as u32),
                value: Some(MetricValue::LongValue(self.bd_seq)),
                ..Default::default()
            }],
        }
    }

    /// DBIRTH of `device` with every metric it has; `None` when it has none or is dead.
    pub fn dbirth(&mut self, device: &str, now: Timestamp) -> Option<Payload> {
        let dev = self.devices.get(device)?;
        if dev.dead || dev.set.metrics.is_empty() {
            return None;
        }
        let metrics: Vec<Metric> = dev.set.birth_metrics().collect();
        self.devices.get_mut(device).expect("present").born = true;
        Some(Payload {
            timestamp: Some(now.0.max(0) as u64),
            seq: Some(self.next_seq()),
            metrics,
        })
    }

    /// True when `device` was born (its data may be sent as DDATA).
    pub fn is_born(&self, device: &str) -> bool {
        self.devices.get(device).is_some_and(|d| d.born)
    }

    /// DDEATH of `device`.
    pub fn ddeath(&mut self, now: Timestamp) -> Payload {
        Payload {
            timestamp: Some(now.0.max(0) as u64),
            seq: Some(self.next_seq()),
            metrics: Vec::new(),
        }
    }

    /// DDATA (or NDATA, `node`) of the readings `changed` of `batch`, by alias; every reading
    /// when `changed` is `None` (held data, sent `historical`).
    pub fn data(
        &mut self,
        batch: &Batch,
        changed: Option<&Changed>,
        historical: bool,
        node: bool,
        now: Timestamp,
    ) -> Payload {
        let set = if node {
            &self.node
        } else {
            match self.devices.get(&batch.device) {
                Some(d) => &d.set,
                None => &self.node,
            }
        };
        let mut metrics = Vec::with_capacity(changed.map_or(batch.readings.len(), |c| c.idx.len()));
        let mut push = |r: &Reading, was_bad: bool| {
            if let Some(&alias) = set.aliases.get(&r.channel) {
                metrics.push(data_metric(alias, r, was_bad, historical));
            }
        };
        match changed {
            Some(c) => {
                for (k, &i) in c.idx.iter().enumerate() {
                    push(&batch.readings[i as usize], c.was_bad[k]);
                }
            }
            None => {
                for r in &batch.readings {
                    push(r, !r.quality.is_good());
                }
            }
        }
        Payload {
            timestamp: Some(now.0.max(0) as u64),
            seq: Some(self.next_seq()),
            metrics,
        }
    }

    /// The name and data type of a device's metric by alias (a DCMD that names metrics by
    /// alias).
    pub fn device_metric(&self, device: &str, alias: u64) -> Option<(Arc<str>, DataType)> {
        let set = &self.devices.get(device)?.set;
        set.metrics
            .iter()
            .find(|m| m.alias == alias)
            .map(|m| (m.name.clone(), m.dtype))
    }

    /// Marks a device's metric so that its next reading is sent even when unchanged: it
    /// confirms a write.
    pub fn confirm_next(&mut self, device: &str, channel: &str) {
        if let Some(set) = self.devices.get_mut(device).map(|d| &mut d.set) {
            if let Some(&k) = set.index.get(channel) {
                set.metrics[k].confirm = true;
            }
        }
    }

    /// The data type of a device's metric by name.
    pub fn device_metric_type(&self, device: &str, name: &str) -> Option<DataType> {
        let set = &self.devices.get(device)?.set;
        set.index.get(name).map(|&k| set.metrics[k].dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(device: &str, readings: &[(&str, Value, Quality)]) -> Batch {
        Batch {
            connector: "c".into(),
            device: device.into(),
            readings: readings
                .iter()
                .map(|(ch, v, q)| Reading {
                    device: device.into(),
                    channel: (*ch).into(),
                    value: v.clone(),
                    ts: Timestamp(5),
                    quality: q.clone(),
                    unit: Some("V".into()),
                })
                .collect(),
        }
    }

    #[test]
    fn births_then_changed_data_then_rebirth_on_a_new_channel() {
        let mut n = Node::new("g", "e");
        let b1 = batch(
            "d",
            &[
                ("a", Value::F64(1.0), Quality::Good),
                ("b", Value::Bool(true), Quality::Good),
            ],
        );
        assert_eq!(n.device_batch(&b1), Update::Birth);
        let nb = n.nbirth(Timestamp(1));
        assert_eq!(nb.seq, Some(0));
        let db = n.dbirth("d", Timestamp(1)).unwrap();
        assert_eq!(db.seq, Some(1));
        assert_eq!(db.metrics.len(), 2);
        assert_eq!(db.metrics[1].datatype, Some(DataType::Boolean as u32));
        let props = db.metrics[0].properties.as_ref().unwrap();
        assert_eq!(props.keys, vec![UNIT_PROPERTY.to_string()]);
        // Same values: nothing; one changed: data of that one only.
        assert_eq!(n.device_batch(&b1), Update::Nothing);
        let b2 = batch(
            "d",
            &[
                ("a", Value::F64(2.0), Quality::Good),
                ("b", Value::Bool(true), Quality::Good),
            ],
        );
        let Update::Data(c) = n.device_batch(&b2) else {
            panic!("data expected")
        };
        assert_eq!(c.idx, vec![0]);
        let dd = n.data(&b2, Some(&c), false, false, Timestamp(2));
        assert_eq!(dd.seq, Some(2));
        assert_eq!(dd.metrics[0].alias, db.metrics[0].alias);
        assert_eq!(dd.metrics[0].name, None);
        // A bad reading: null with a quality; the good one after it carries 192 again.
        let b3 = batch(
            "d",
            &[("a", Value::F64(f64::NAN), Quality::Bad("x".into()))],
        );
        let Update::Data(c) = n.device_batch(&b3) else {
            panic!("data expected")
        };
        let m = &n.data(&b3, Some(&c), false, false, Timestamp(3)).metrics[0];
        assert_eq!((m.is_null, m.value.clone()), (Some(true), None));
        let Update::Data(c) = n.device_batch(&b2) else {
            panic!("data expected")
        };
        let m = &n.data(&b2, Some(&c), false, false, Timestamp(3)).metrics[0];
        let p = m.properties.as_ref().unwrap();
        assert_eq!(p.values[0].value, Some(PropertyValueKind::IntValue(192)));
        // A new channel: born again, old aliases kept.
        let b4 = batch("d", &[("c", Value::I64(-1), Quality::Good)]);
        assert_eq!(n.device_batch(&b4), Update::Birth);
        let db2 = n.dbirth("d", Timestamp(4)).unwrap();
        assert_eq!(db2.metrics.len(), 3);
        assert_eq!(db2.metrics[0].alias, db.metrics[0].alias);
        assert_eq!(db2.metrics[2].value, Some(MetricValue::LongValue(u64::MAX)));
    }

    #[test]
    fn seq_wraps_and_nbirth_restarts_it() {
        let mut n = Node::new("g", "e");
        n.nbirth(Timestamp(1));
        for want in 1..=255u64 {
            assert_eq!(n.ddeath(Timestamp(1)).seq, Some(want));
        }
        assert_eq!(n.ddeath(Timestamp(1)).seq, Some(0));
        assert_eq!(n.nbirth(Timestamp(1)).seq, Some(0));
        assert_eq!(n.ndeath(Timestamp(1)).seq, None);
    }

    #[test]
    fn a_dead_device_is_born_again_with_its_new_channels() {
        let mut n = Node::new("g", "e");
        let d: Arc<str> = "d".into();
        n.nbirth(Timestamp(1));
        n.device_batch(&batch("d", &[("a", Value::U64(1), Quality::Good)]));
        let a = n.dbirth("d", Timestamp(1)).unwrap().metrics[0].alias;
        assert!(n.device_state(&d, DeviceState::Dead));
        assert!(!n.device_state(&d, DeviceState::Dead), "one DDEATH");
        assert!(n.live_devices().is_empty());
        let bad = batch(
            "d",
            &[("a", Value::F64(f64::NAN), Quality::Bad("x".into()))],
        );
        assert_eq!(n.device_batch(&bad), Update::Nothing);
        let b = batch(
            "d",
            &[
                ("a", Value::U64(2), Quality::Good),
                ("z", Value::U64(3), Quality::Good),
            ],
        );
        assert_eq!(n.device_batch(&b), Update::Birth);
        let db = n.dbirth("d", Timestamp(1)).unwrap();
        assert_eq!(db.metrics[0].alias, Some(a.unwrap()));
        assert_eq!(db.metrics.len(), 2);
        assert_eq!(n.device_metric("d", a.unwrap()).unwrap().0.as_ref(), "a");
    }
}
