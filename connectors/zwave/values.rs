//! What the listener knows of the mapped nodes and how their values become readings: the
//! configured devices ([`Dev`]: node, channels by value id), each value's metadata and last
//! published value, node states (health, resync after a reconnect, configured value ids the
//! node lacks), units from metadata, derived channel names on devices without channels, and
//! the write spec and range a value's metadata gives.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::super::device::listener::Devices;
use super::super::device::{Fault, ValueKind, WriteSpec};
use super::listener::Network;
use super::wire::{self, Meta, MetaType, NodeState, Scalar, ValueKey, STATUS_DEAD};
use super::{NodeRef, ZwaveChannel};
use osgate_core::reading::{Timestamp, Value};
use osgate_core::transform::TransformConfig;

/// A configured device: its node and its channels' value ids.
pub(super) struct Dev {
    pub(super) name: Arc<str>,
    pub(super) node: NodeRef,
    /// The node id, once known (from the config, or found by name).
    pub(super) node_id: Option<u16>,
    /// Publish every readable value (no channels configured).
    pub(super) auto: bool,
    /// Channel by the value id it reads.
    pub(super) reads: HashMap<ValueKey, u32>,
    /// Writable channel by the value id it writes (`targetValue` for a `currentValue`).
    pub(super) writes: HashMap<ValueKey, u32>,
    /// Per channel: the value id written, and whether the config gave a unit.
    pub(super) chans: Vec<(ValueKey, bool)>,
    /// Per configured channel: its name (the base of its `_state` sibling).
    pub(super) names: Vec<Arc<str>>,
}

impl Dev {
    pub(super) fn new(
        name: Arc<str>,
        node: NodeRef,
        channels: &[osgate_core::config::ChannelSpec<ZwaveChannel>],
    ) -> Dev {
        let mut reads = HashMap::new();
        let mut writes = HashMap::new();
        let mut chans = Vec::with_capacity(channels.len());
        for (i, c) in channels.iter().enumerate() {
            let key = c.settings.key();
            let target = key.write_target();
            if c.settings.writable {
                writes.insert(target.clone(), i as u32);
            }
            reads.insert(key, i as u32);
            chans.push((target, c.unit.is_some()));
        }
        let names = channels.iter().map(|c| c.name.clone()).collect();
        Dev {
            name,
            node_id: match node {
                NodeRef::Id(n) => Some(n),
                NodeRef::Name(_) => None,
            },
            node,
            auto: channels.is_empty(),
            reads,
            writes,
            chans,
            names,
        }
    }

    /// A device created at run time for a node no device names (`accept_new_devices`): every
    /// readable value under its derived name.
    pub(super) fn auto(name: Arc<str>, node: u16) -> Dev {
        Dev {
            name,
            node: NodeRef::Id(node),
            node_id: Some(node),
            auto: true,
            reads: HashMap::new(),
            writes: HashMap::new(),
            chans: Vec::new(),
            names: Vec::new(),
        }
    }
}

/// What the listener knows of one value of a mapped node.
#[derive(Debug, Default)]
pub(super) struct Val {
    pub(super) meta: Option<Meta>,
    /// The last value published (state values only), so a resync does not publish it again.
    pub(super) last: Option<Scalar>,
    /// Its channel on an automatic device, once it has one, and that channel's name.
    pub(super) ch: Option<u32>,
    pub(super) auto_name: Option<Arc<str>>,
    /// The channel of its state names (`<channel>_state`), once it has one.
    pub(super) state_ch: Option<u32>,
}

/// A mapped node's values and automatic channel names.
#[derive(Debug, Default)]
pub(super) struct Node {
    pub(super) values: HashMap<ValueKey, Val>,
    pub(super) names: HashSet<String>,
}

impl Network {
    /// The device of `node`, if one is configured for it.
    pub(super) fn dev_of(&self, node: u16) -> Option<usize> {
        self.node_dev.get(&node).copied()
    }

    /// Binds devices configured by node name to the node of that name.
    pub(super) fn bind_name(&mut self, n: &NodeState) {
        let Some(name) = &n.name else { return };
        if self.node_dev.contains_key(&n.node_id) {
            return;
        }
        if let Some(i) = self
            .devs
            .iter()
            .position(|d| matches!(&d.node, NodeRef::Name(m) if m == name) && d.node_id.is_none())
        {
            self.devs[i].node_id = Some(n.node_id);
            self.node_dev.insert(n.node_id, i);
            tracing::info!(connector = %self.ctx.name, node = n.node_id, name = %name,
                "node found by name");
        }
    }

    /// A node's full state: health, metadata, and the values that are new or changed.
    pub(super) fn node_state(&mut self, n: NodeState, ts: Timestamp, devices: &mut Devices) {
        self.bind_name(&n);
        if n.is_controller_node {
            self.controller = Some(n.node_id);
        }
        let Some(dev) = self.dev_or_new(n.node_id, devices) else {
            return;
        };
        let fault = if n.status == STATUS_DEAD {
            Some(Fault::new(
                "dead",
                format!("node {} is dead (it does not answer)", n.node_id),
            ))
        } else if !n.ready {
            let stage = n.interview_stage.as_ref().map(|s| s.to_string());
            Some(Fault::new(
                "interview",
                format!(
                    "node {} is not ready yet (interview stage {})",
                    n.node_id,
                    stage.as_deref().unwrap_or("unknown")
                ),
            ))
        } else {
            None
        };
        let ready = n.ready;
        let mut seen = HashSet::new();
        for v in n.values {
            let key = v.key();
            if let Some(meta) = v.metadata {
                self.set_meta(dev, n.node_id, &key, meta, devices);
            }
            if let Some(value) = v.value {
                let changed = self
                    .nodes
                    .get(&n.node_id)
                    .and_then(|nd| nd.values.get(&key))
                    .is_none_or(|val| val.last.as_ref() != Some(&value));
                if changed {
                    self.push(
                        dev,
                        n.node_id,
                        &key,
                        value.clone(),
                        ts,
                        v.property_name.as_deref(),
                        v.property_key_name.as_deref(),
                        devices,
                    );
                    self.val(n.node_id, &key).last = Some(value);
                }
            }
            seen.insert(key);
        }
        if ready {
            // A configured value id the node does not have is a config mistake: say so.
            let missing: Vec<(u32, ValueKey)> = self.devs[dev]
                .reads
                .iter()
                .filter(|(k, _)| !seen.contains(*k))
                .map(|(k, c)| (*c, k.clone()))
                .collect();
            for (ch, key) in missing {
                let why: Arc<str> = format!("node {} has no value with {key}", n.node_id).into();
                devices.push_bad(dev, ch as usize, why, ts);
            }
        }
        devices.report(dev, fault);
    }

    pub(super) fn val(&mut self, node: u16, key: &ValueKey) -> &mut Val {
        self.nodes
            .entry(node)
            .or_default()
            .values
            .entry(key.clone())
            .or_default()
    }

    /// New metadata of a value: the unit of its channel, the write spec of the channel
    /// writing it.
    pub(super) fn set_meta(
        &mut self,
        dev: usize,
        node: u16,
        key: &ValueKey,
        meta: Meta,
        devices: &mut Devices,
    ) {
        let d = &self.devs[dev];
        if let Some(&ch) = d.reads.get(key) {
            if !d.chans[ch as usize].1 {
                devices.set_unit(dev, ch as usize, meta.unit.clone());
            }
        }
        if let Some(&ch) = d.writes.get(key) {
            let spec = write_spec(&meta);
            if spec.is_none() {
                tracing::warn!(connector = %self.ctx.name, device = %d.name,
                    node, value = %key, "a writable channel's value cannot be written (zwave-js says it is read-only or of a type osgate does not write)");
            }
            devices.set_write(dev, ch as usize, spec);
        }
        let auto_ch = self
            .nodes
            .get(&node)
            .and_then(|n| n.values.get(key))
            .and_then(|v| v.ch);
        if let (true, Some(ch)) = (d.auto, auto_ch) {
            devices.set_unit(dev, ch as usize, meta.unit.clone());
        }
        self.val(node, key).meta = Some(meta);
    }

    /// Publishes `value` of `key` on its channel (configured, or derived on an automatic
    /// device when the value is readable).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn push(
        &mut self,
        dev: usize,
        node: u16,
        key: &ValueKey,
        value: Scalar,
        ts: Timestamp,
        name: Option<&str>,
        key_name: Option<&str>,
        devices: &mut Devices,
    ) {
        let scalar = value;
        let Some(value) = scalar.value() else { return };
        let d = &self.devs[dev];
        let ch = if d.auto {
            let nd = self.nodes.entry(node).or_default();
            let val = nd.values.entry(key.clone()).or_default();
            match val.ch {
                Some(c) => c as usize,
                None => {
                    let hidden = val.meta.as_ref().is_some_and(|m| !m.readable || m.secret);
                    if hidden {
                        return;
                    }
                    let mut n = wire::derive_name(
                        &key.property,
                        name,
                        key.key.as_ref(),
                        key_name,
                        key.endpoint,
                    );
                    if nd.names.contains(&n) {
                        n = format!("{n}_cc{}", key.cc);
                    }
                    let unit = val.meta.as_ref().and_then(|m| m.unit.clone());
                    let Some(c) =
                        devices.channel_or_add(dev, &n, unit.as_ref(), &TransformConfig::default())
                    else {
                        return;
                    };
                    val.auto_name = Some(n.as_str().into());
                    nd.names.insert(n);
                    val.ch = Some(c as u32);
                    c
                }
            }
        } else {
            match d.reads.get(key) {
                Some(&c) => c as usize,
                None => return,
            }
        };
        devices.push(dev, ch, value, ts);
        let name = self
            .nodes
            .get(&node)
            .and_then(|nd| nd.values.get(key))
            .and_then(|v| v.meta.as_ref())
            .and_then(|m| m.states.as_ref())
            .and_then(|s| s.name_of(&scalar));
        if let Some(name) = name {
            self.push_state(dev, node, key, ch, name, ts, devices);
        }
    }

    /// Publishes the name of the state a value is in on the sibling channel
    /// `<channel>_state`, added on first use.
    #[allow(clippy::too_many_arguments)]
    fn push_state(
        &mut self,
        dev: usize,
        node: u16,
        key: &ValueKey,
        ch: usize,
        name: Arc<str>,
        ts: Timestamp,
        devices: &mut Devices,
    ) {
        let d = &self.devs[dev];
        let val = self
            .nodes
            .entry(node)
            .or_default()
            .values
            .entry(key.clone())
            .or_default();
        let sc = match val.state_ch {
            Some(c) => c as usize,
            None => {
                let base = if d.auto {
                    val.auto_name.clone()
                } else {
                    d.names.get(ch).cloned()
                };
                let Some(base) = base else { return };
                let sibling = format!("{base}_state");
                let Some(c) =
                    devices.channel_or_add(dev, &sibling, None, &TransformConfig::default())
                else {
                    return;
                };
                val.state_ch = Some(c as u32);
                c
            }
        };
        devices.push(dev, sc, Value::Text(name), ts);
    }

    /// The device of `node`, created (`node-<id>`) when none is configured for it and the
    /// connector accepts new devices; never for the controller itself.
    pub(super) fn dev_or_new(&mut self, node: u16, devices: &mut Devices) -> Option<usize> {
        if let Some(d) = self.dev_of(node) {
            return Some(d);
        }
        if !self.accept_new || self.controller == Some(node) {
            return None;
        }
        let name = format!("node-{node}");
        let i = devices.find_or_create(&name)?;
        if i != self.devs.len() {
            // The name is a configured device's (of another node).
            return None;
        }
        self.devs.push(Dev::auto(name.into(), node));
        self.node_dev.insert(node, i);
        Some(i)
    }
}

/// The write spec a value's metadata gives: its type (the kit checks it); `None` when it is
/// read-only or of a type osgate does not write.
pub(super) fn write_spec(meta: &Meta) -> Option<WriteSpec> {
    if !meta.writeable {
        return None;
    }
    let kind = match meta.kind {
        MetaType::Boolean => ValueKind::Bool,
        MetaType::Number => ValueKind::Float,
        MetaType::String => ValueKind::Text,
        MetaType::Other => return None,
    };
    Some(WriteSpec::new(kind))
}

/// Checks a raw value against the metadata (device units, after the kit reversed the
/// channel's scale and offset): its range, and its enumerated states unless zwave-js allows
/// manual entry (the refusal names the allowed states).
pub(super) fn check_range(meta: &Meta, raw: &Value) -> Result<(), String> {
    if let Some(states) = meta.states.as_ref().filter(|_| !meta.allow_manual_entry) {
        states.check(raw)?;
    }
    let Some(x) = raw.as_f64().filter(|_| !matches!(raw, Value::Bool(_))) else {
        return Ok(());
    };
    if meta.min.is_some_and(|lo| x < lo) || meta.max.is_some_and(|hi| x > hi) {
        let lo = meta.min.map_or("-∞".to_string(), |v| v.to_string());
        let hi = meta.max.map_or("∞".to_string(), |v| v.to_string());
        return Err(format!("{x} is outside the value's range [{lo}, {hi}]"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_specs_and_ranges_come_from_metadata() {
        let meta = |s: &str| serde_json::from_str::<Meta>(s).unwrap();
        let b = meta(r#"{"type":"boolean","writeable":true}"#);
        assert_eq!(write_spec(&b).unwrap().kind, ValueKind::Bool);
        assert!(write_spec(&meta(r#"{"type":"number","writeable":false}"#)).is_none());
        assert!(write_spec(&meta(r#"{"type":"duration"}"#)).is_none());
        let dim = meta(r#"{"type":"number","min":0,"max":99}"#);
        assert_eq!(write_spec(&dim).unwrap().kind, ValueKind::Float);
        assert!(check_range(&dim, &Value::F64(50.0)).is_ok());
        assert!(check_range(&dim, &Value::F64(100.0))
            .unwrap_err()
            .contains("[0, 99]"));
        assert!(check_range(&b, &Value::Bool(true)).is_ok());
        let mode = meta(
            r#"{"type":"number","min":0,"max":255,"states":{"0":"Off","1":"Heat","2":"Cool"}}"#,
        );
        assert!(check_range(&mode, &Value::F64(1.0)).is_ok());
        let e = check_range(&mode, &Value::F64(5.0)).unwrap_err();
        assert!(e.contains("allowed: 0 (Off), 1 (Heat), 2 (Cool)"), "{e}");
        let manual = meta(r#"{"type":"number","states":{"0":"Off"},"allowManualEntry":true}"#);
        assert!(check_range(&manual, &Value::F64(5.0)).is_ok());
    }
}
