//! The Z-Wave connector (`"protocol": "zwave"`): a client of Z-Wave JS Server, as Home
//! Assistant is, so osgate works with every USB stick the zwave-js driver supports.
//!
//! One connector is one WebSocket connection (`ws://` or `wss://`, TLS by [`osgate_core::net::tls`]).
//! On connect it negotiates the API schema (`set_api_schema`, the newest both sides speak) and
//! sends `start_listening`, whose answer is the state of every node; after that the server
//! pushes events. Devices are nodes (by id or name); channels are value ids (command class,
//! endpoint, property, property key) with the unit of the value's metadata. A device without
//! configured channels publishes every readable value under a name derived from its value id
//! ([`wire::derive_name`]). With `accept_new_devices`, a node no device names becomes a device
//! `node-<id>` of that kind on its first state or event (up to `max_devices`; never the
//! controller). A value whose metadata enumerates `states` (a thermostat's mode: `0` Off, `1`
//! Heat) also publishes the name of its state on the sibling channel `<channel>_state`. The
//! node state and the `value updated`, `value added`, `value notification`, `metadata
//! updated`, `ready`, `alive`/`dead` events become readings and device health; `statistics
//! updated` events are dropped as soon as their name is read.
//!
//! The parts: `connect` (target, WebSocket, handshake, the open session), `listener` (frames,
//! messages, `node.set_value` through the kit's `device::reply`), `values` (node states and
//! values to readings, write checks), `states` (enumerated states), [`wire`] (the server's
//! JSON).
//!
//! Writes go through `node.set_value`; a channel reading a `currentValue` writes its
//! `targetValue`, and the `value updated` that follows confirms it. The type of a write comes
//! from the value's metadata (the kit checks it before [`Listener::write`](super::device::listener::Listener::write)), its range and its
//! enumerated states (unless zwave-js allows manual entry; the refusal lists the states) are
//! checked here on the device's raw value. A `set_value` answered with `success: true` whose
//! status is a failure is a failed write.
//!
//! The server can vanish without a close frame (it exits when it loses the stick): when it has
//! sent nothing for `ping_interval` a ping goes out, and no frame within `timeout` drops the
//! connection. The kit's [`ListenerLine`] then takes every device offline and reconnects with
//! backoff; the fresh `start_listening` state resyncs: values that changed while osgate was away
//! are published, values that did not are not published again.

mod connect;
mod listener;
mod states;
mod values;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::device::link::Link;
use super::device::listener::{Input, ListenerLine};
use super::device::reply::{Replies, HELD};
use super::{ConnectorContext, ConnectorError, Running};
use osgate_core::config::timing::{self, TimeoutRule, TimingRules};
use osgate_core::config::{ConfigError, ConnectorSpec, Dur};
use osgate_core::net::TlsConfig;

use connect::{Connect, Target};
use listener::{Network, ZwaveListener};
use values::Dev;
use wire::{Prop, ValueKey};

/// A parsed Z-Wave connector.
pub type ZwaveConfig = ConnectorSpec<ZwaveSettings, ZwaveDevice, ZwaveChannel>;

/// Connector settings: the server and how its connection is watched.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZwaveSettings {
    /// Z-Wave JS Server URL: `ws://host:port` (its default port is 3000) or, with TLS (a proxy
    /// in front of the server), `wss://host:port`.
    pub url: String,
    /// TLS settings for `wss://` (`ca_file`, `cert_file`, `key_file`, `server_name`,
    /// `insecure_skip_verify`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// When the server has sent nothing for this long, a ping goes out (default `10s`).
    #[serde(default = "default_ping_interval")]
    pub ping_interval: Dur,
    /// A device that sends nothing for this long goes offline with that reason (default:
    /// never; battery nodes may report only every few hours).
    #[serde(default)]
    pub stale_after: Option<Dur>,
    /// Create a device `node-<id>` for every node no device names, with every readable value
    /// under its derived name (default false: such nodes are ignored). The controller itself
    /// never becomes a device.
    #[serde(default)]
    pub accept_new_devices: bool,
    /// Most devices created at run time (default 1000); further nodes are refused and counted.
    #[serde(default = "default_max_devices")]
    pub max_devices: usize,
}

fn default_ping_interval() -> Dur {
    Dur::from_secs(10)
}
fn default_max_devices() -> usize {
    1000
}

/// Device settings: which node it is.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZwaveDevice {
    /// The node: its id (`3`) or its name in zwave-js (`"Kitchen plug"`).
    pub node: NodeRef,
}

/// A node, by id or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeRef {
    /// The node id (1–4000).
    Id(u16),
    /// The node's name as set in zwave-js.
    Name(String),
}

impl<'de> Deserialize<'de> for NodeRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Prop::deserialize(d)? {
            Prop::Int(i) => u16::try_from(i)
                .map(NodeRef::Id)
                .map_err(|_| serde::de::Error::custom(format!("node id {i} is outside 1..=4000"))),
            Prop::Str(s) => Ok(NodeRef::Name(s.into())),
        }
    }
}

/// Channel settings: the value id, and whether it may be written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZwaveChannel {
    /// The command class (`49` Multilevel Sensor, `37` Binary Switch, `50` Meter…).
    pub command_class: u16,
    /// The endpoint (default 0, the node itself).
    #[serde(default)]
    pub endpoint: u16,
    /// The property: a name (`"currentValue"`, `"Air temperature"`) or a number.
    pub property: Prop,
    /// The property key, when the property has several (`65537`: a meter's kWh).
    #[serde(default)]
    pub property_key: Option<Prop>,
    /// Accept writes (`device.write`, MQTT commands); a `currentValue` is written through its
    /// `targetValue`. The type and range come from the value's metadata.
    #[serde(default)]
    pub writable: bool,
}

impl ZwaveChannel {
    fn key(&self) -> ValueKey {
        ValueKey {
            cc: self.command_class,
            endpoint: self.endpoint,
            property: self.property.clone(),
            key: self.property_key.clone(),
        }
    }
}

/// The newest API schema osgate was tested with; it asks for this one or the server's newest
/// if that is older.
pub(crate) const SCHEMA: u32 = 44;

/// The shared settings Z-Wave takes: `timeout` (default `10s`, at least `100ms`: how long the
/// connect and handshake, a ping's answer and a write's answer may take; a ping not answered in
/// time drops the connection), `backoff` (`1s`) and `backoff_max` (`30s`) between reconnects.
pub const TIMING: TimingRules = TimingRules {
    timeout: Some(TimeoutRule {
        default: Some(Dur::from_secs(10)),
        min: Dur::from_millis(100),
    }),
    backoff: Some(timing::BACKOFF),
    interval: None,
};

/// `"protocol": "zwave"` in the protocol registry.
pub const PROTOCOL: crate::Protocol = crate::Protocol {
    name: "zwave",
    parse: |p, entry| p.with_timing(TIMING).spec(entry, validate, build),
    tool: None,
};

/// Semantic checks: URL, TLS, timers, nodes, value ids.
pub fn validate(spec: &ZwaveConfig, path: &str, errs: &mut Vec<ConfigError>) {
    let s = &spec.settings;
    match Target::parse(&s.url) {
        Err(e) => errs.push(ConfigError::new(format!("{path}.url"), e)),
        Ok(t) => match (&s.tls, t.tls) {
            (Some(_), false) => errs.push(ConfigError::new(
                format!("{path}.tls"),
                "TLS settings need a wss:// URL",
            )),
            (Some(tls), true) => tls.validate(&format!("{path}.tls"), errs),
            _ => {}
        },
    }
    if s.ping_interval.0 < Duration::from_millis(100) {
        errs.push(ConfigError::new(
            format!("{path}.ping_interval"),
            "must be at least 100ms",
        ));
    }
    let mut nodes: HashMap<&NodeRef, usize> = HashMap::new();
    for (i, d) in spec.devices.iter().enumerate() {
        let dpath = format!("{path}.devices[{i}]");
        match &d.settings.node {
            NodeRef::Id(n) if !(1..=4000).contains(n) => errs.push(ConfigError::new(
                format!("{dpath}.node"),
                format!("node id {n} is outside 1..=4000"),
            )),
            NodeRef::Name(n) if n.trim().is_empty() => errs.push(ConfigError::new(
                format!("{dpath}.node"),
                "a node name must not be empty",
            )),
            _ => {}
        }
        if let Some(j) = nodes.insert(&d.settings.node, i) {
            errs.push(ConfigError::new(
                format!("{dpath}.node"),
                format!("the same node as devices[{j}]"),
            ));
        }
        let mut keys: HashMap<ValueKey, usize> = HashMap::new();
        for (ci, c) in d.channels.iter().enumerate() {
            if let Some(j) = keys.insert(c.settings.key(), ci) {
                errs.push(ConfigError::new(
                    format!("{dpath}.channels[{ci}]"),
                    format!("the same value id as channels[{j}]"),
                ));
            }
            if c.settings.command_class == 0 {
                errs.push(ConfigError::new(
                    format!("{dpath}.channels[{ci}].command_class"),
                    "must not be 0",
                ));
            }
        }
    }
}

/// Builds the connector: checks the URL and the TLS files.
pub fn build(spec: Arc<ZwaveConfig>, ctx: ConnectorContext) -> Result<Running, ConnectorError> {
    let s = &spec.settings;
    let timeout = spec.timing.timeout_or(Duration::from_secs(10));
    let target = Target::parse(&s.url).map_err(|reason| ConnectorError::Address {
        address: s.url.clone(),
        reason,
    })?;
    let tls = if target.tls {
        let cfg = s
            .tls
            .clone()
            .unwrap_or_default()
            .client_config()
            .map_err(|e| ConnectorError::Setup(format!("tls: {e}")))?;
        let name = s
            .tls
            .as_ref()
            .and_then(|t| t.server_name.clone())
            .unwrap_or_else(|| target.host.clone());
        let name = rustls::pki_types::ServerName::try_from(name)
            .map_err(|e| ConnectorError::Setup(format!("tls: server name: {e}")))?;
        Some((
            tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            name.to_owned(),
        ))
    } else {
        None
    };
    let mut node_dev = HashMap::new();
    let devs: Vec<Dev> = spec
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if let NodeRef::Id(n) = d.settings.node {
                node_dev.insert(n, i);
            }
            Dev::new(d.name.clone(), d.settings.node.clone(), &d.channels)
        })
        .collect();
    let connect = Arc::new(Connect {
        target,
        tls,
        timeout,
        ping_interval: s.ping_interval.0,
    });
    let listener = ZwaveListener {
        url: s.url.clone(),
        timeout,
        link: Link::new(move || connect.clone().open()),
        replies: Replies::new(&ctx, HELD),
        net: Network {
            devs,
            node_dev,
            nodes: HashMap::new(),
            logged: HashSet::new(),
            input: Input::all(&ctx, &["server".into()])
                .pop()
                .expect("one input"),
            ctx: ctx.clone(),
            accept_new: s.accept_new_devices,
            controller: None,
        },
    };
    let mut line = ListenerLine::new(&ctx, listener)
        .with_backoff(spec.timing.retry())
        .with_stale_after(s.stale_after.map(|d| d.0));
    if s.accept_new_devices {
        line = line.accept_new(s.max_devices);
    }
    for d in &spec.devices {
        // Writable channels get their write spec once the value's metadata is known.
        line.add(d, |_| None);
    }
    Ok(Box::pin(async move {
        line.run().await;
        Ok(())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Parses as the gateway does (`ConnectorConfig::from_raw`: parse, then `validate`).
    fn parse(v: serde_json::Value) -> Result<Arc<ZwaveConfig>, Vec<ConfigError>> {
        crate::parse_test(v)
    }

    #[test]
    fn the_documented_shape_parses() {
        let spec = parse(json!({
            "name": "zwave", "protocol": "zwave", "url": "ws://127.0.0.1:3000",
            "devices": [ { "name": "living-room", "node": 2 },
                         { "name": "plug", "node": "Kitchen plug", "channels": [
                           { "name": "on", "command_class": 37, "endpoint": 0, "property": "currentValue", "writable": true },
                           { "name": "energy", "command_class": 50, "property": "value", "property_key": 65537 } ] } ]
        }))
        .unwrap();
        assert_eq!(spec.devices[0].settings.node, NodeRef::Id(2));
        assert_eq!(
            spec.devices[1].settings.node,
            NodeRef::Name("Kitchen plug".into())
        );
        let c = &spec.devices[1].channels[1].settings;
        assert_eq!(c.property_key, Some(Prop::Int(65537)));
        let dev = Dev::new("plug".into(), NodeRef::Id(3), &spec.devices[1].channels);
        assert_eq!(dev.chans[0].0.property, Prop::Str("targetValue".into()));
        assert!(dev.writes.contains_key(&dev.chans[0].0));
        assert!(!dev.auto);
    }

    #[test]
    fn new_devices_are_off_unless_asked_for() {
        let base =
            json!({"name": "zwave", "protocol": "zwave", "url": "ws://h:3000", "devices": []});
        let spec = parse(base.clone()).unwrap();
        assert!(!spec.settings.accept_new_devices);
        assert_eq!(spec.settings.max_devices, 1000);
        let mut on = base;
        on["accept_new_devices"] = json!(true);
        on["max_devices"] = json!(5);
        let spec = parse(on).unwrap();
        assert!(spec.settings.accept_new_devices);
        assert_eq!(spec.settings.max_devices, 5);
    }

    #[test]
    fn mistakes_name_the_field() {
        let errs = parse(json!({
            "name": "zwave", "protocol": "zwave", "url": "http://h:3000", "timeout": "1ms",
            "devices": [ { "name": "a", "node": 0 }, { "name": "b", "node": 5 }, { "name": "c", "node": 5,
                "channels": [ { "name": "x", "command_class": 37, "property": "currentValue" },
                              { "name": "y", "command_class": 37, "property": "currentValue" } ] } ]
        }))
        .unwrap_err();
        let p = "connectors[0] \"zwave\".";
        let paths: Vec<String> = errs.iter().map(|e| e.path.replace(p, "")).collect();
        for want in [
            "url",
            "timeout",
            "devices[0].node",
            "devices[2].node",
            "devices[2].channels[1]",
        ] {
            assert!(
                paths.iter().any(|p| p == want),
                "{want} missing in {errs:?}"
            );
        }
        let errs = parse(
            json!({"name": "zwave", "protocol": "zwave", "url": "ws://h:3000",
            "tls": {}, "devices": []}),
        )
        .unwrap_err();
        assert_eq!(errs[0].path, "connectors[0] \"zwave\".tls");
        assert!(parse(json!({"name": "zwave", "protocol": "zwave", "url": "ws://h", "devices": [
            {"name": "a", "node": 2, "channels": [{"name": "x", "command_class": 37, "property": {"a": 1}}]}]}))
        .is_err());
    }

    #[test]
    fn urls() {
        let t = Target::parse("wss://[::1]:8443/zwave").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("::1", 8443, true));
        let t = Target::parse("ws://zwave.local").unwrap();
        assert_eq!((t.port, t.tls), (80, false));
        assert!(Target::parse("mqtt://h").is_err());
    }
}
