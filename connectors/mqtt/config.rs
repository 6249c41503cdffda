//! The MQTT connector's settings: the broker connection (declared by
//! [`osgate_core::broker_config!`], like every MQTT config of osgate), the mappings from topics
//! to readings, the devices' writable channels; and their load-time checks.

use serde::Deserialize;

use super::mapping::compile;
pub use crate::device::WriteType;
use crate::device::payload::{TimestampConfig, ValueType};
use crate::device::WriteSpec;
use osgate_core::config::{ChannelSpec, ConfigError, ConnectorSpec, Dur};
use osgate_core::net::mqtt::MqttClientSettings;
use osgate_core::size::Size;

/// A parsed MQTT connector.
pub type MqttConfig = ConnectorSpec<MqttSettings, MqttDevice, MqttChannel>;

osgate_core::broker_config! {
    /// Connector-level settings: the broker, the session, and how messages become readings.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct MqttSettings {
        broker(client_id = "default_client_id", backoff_max = "default_backoff_max", clean_session);
        /// QoS of the subscriptions: 0 or 1 (default 1).
        #[serde(default = "default_qos")]
        pub qos: u8,
        /// How messages become readings: tried in order, the first mapping whose topic matches
        /// takes the message.
        pub mappings: Vec<Mapping>,
        /// Create devices not listed in `devices` on their first message (default false: messages
        /// of unknown devices are refused and counted).
        #[serde(default)]
        pub accept_new_devices: bool,
        /// Most devices created at run time (default 1000); messages of further ones are refused
        /// and counted.
        #[serde(default = "default_max_devices")]
        pub max_devices: usize,
        /// Largest payload decoded (default `256KiB`); larger messages are counted as bad.
        #[serde(default = "default_max_payload")]
        pub max_payload: Size,
        /// A device that sends nothing for this long goes offline with that reason (default: never).
        #[serde(default)]
        pub stale_after: Option<Dur>,
        /// How long a write waits for the broker's PUBACK (default `10s`).
        #[serde(default = "default_write_timeout")]
        pub write_timeout: Dur,
    }
}

fn default_client_id() -> String {
    "osgate-{gateway}-{connector}".into()
}
fn default_qos() -> u8 {
    1
}
fn default_max_devices() -> usize {
    1000
}
fn default_max_payload() -> Size {
    Size(256 << 10)
}
/// Reconnects wait 1 s, doubling up to this.
fn default_backoff_max() -> Dur {
    Dur::from_secs(30)
}
fn default_write_timeout() -> Dur {
    Dur::from_secs(10)
}

/// How a payload is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// JSON: channels by `pointer`, or, without `channels`, every number and bool of the
    /// document named by its key path.
    #[default]
    Json,
    /// A plain number (`21.5`).
    Number,
    /// A bool word: `true`/`false`, `ON`/`OFF`, `on`/`off`, `1`/`0`.
    Bool,
    /// Text, as it is.
    Text,
    /// A number if it reads as one, else a bool word, else text.
    Auto,
}

/// One mapping: which topics, and how their messages become readings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Topic filter; `+` and `#` as in MQTT, and named captures standing for a whole level:
    /// `"tele/{device}/SENSOR"`, `"shellies/{device}/relay/{relay}/power"`.
    pub topic: String,
    /// `json` (default), `number`, `bool`, `text` or `auto`.
    #[serde(default)]
    pub format: Format,
    /// The device: a name or a template of captures (default `"{device}"`).
    #[serde(default)]
    pub device: Option<String>,
    /// For a single value: the channel, a name or a template of captures (default
    /// `"{channel}"` when the topic captures `{channel}`). With `json` and no `channels`, the
    /// prefix of the key-path names.
    #[serde(default)]
    pub channel: Option<String>,
    /// For a single value: its unit.
    #[serde(default)]
    pub unit: Option<String>,
    /// The channels taken from each message: `name` (a template too), `unit`, transform keys,
    /// and `pointer` (JSON), `regex` (text: the first capture group) and `type` (`auto`,
    /// `number`, `bool`, `text`).
    #[serde(default)]
    pub channels: Option<Vec<ChannelSpec<MappingChannel>>>,
    /// The device's own timestamp: `{"pointer": "/Time", "format": "rfc3339", "timezone":
    /// "Europe/Berlin"}` (default: the time the message arrived).
    #[serde(default)]
    pub timestamp: Option<TimestampConfig>,
}

/// Where a mapping channel's value is in the message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingChannel {
    /// JSON pointer (`/AM2301/Temperature`, arrays by index: `/values/0`).
    #[serde(default)]
    pub pointer: Option<String>,
    /// For text payloads: a regex whose first capture group is the value.
    #[serde(default)]
    pub regex: Option<String>,
    /// `auto` (default), `number`, `bool` or `text`.
    #[serde(default, rename = "type")]
    pub value_type: ValueType,
}

/// Device settings: none besides the common ones (a device's channels come from the mappings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttDevice {}

/// Settings of a configured device's channel: its unit and transforms (common keys), and how
/// it is written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttChannel {
    /// Accept writes (`device.write`, MQTT commands); needs `command`.
    #[serde(default)]
    pub writable: bool,
    /// Where a write goes.
    #[serde(default)]
    pub command: Option<Command>,
    /// The type a write takes: `number` (default), `integer`, `bool` or `text`.
    #[serde(default, rename = "type")]
    pub write_type: WriteType,
    /// Smallest value a write may set (engineering units).
    #[serde(default)]
    pub min: Option<f64>,
    /// Largest value a write may set (engineering units).
    #[serde(default)]
    pub max: Option<f64>,
}

/// A write's message.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The topic (e.g. `cmnd/boiler-room/POWER`).
    pub topic: String,
    /// The payload; `{value}` is replaced by the value written (default `"{value}"`), e.g.
    /// `{"state":"{value}"}`.
    #[serde(default = "default_payload")]
    pub payload: String,
    /// What `{value}` becomes for `true` (default `true`; Tasmota: `ON`).
    #[serde(default)]
    pub on: Option<String>,
    /// What `{value}` becomes for `false` (default `false`; Tasmota: `OFF`).
    #[serde(default)]
    pub off: Option<String>,
    /// Retain the command message (default false).
    #[serde(default)]
    pub retain: bool,
}

fn default_payload() -> String {
    "{value}".into()
}

/// Semantic checks: URL, TLS, QoS, mappings (patterns, templates, pointers, regexes,
/// timestamps), writable channels.
pub fn validate(spec: &MqttConfig, path: &str, errs: &mut Vec<ConfigError>) {
    let s = &spec.settings;
    client_settings(s, "g", &spec.name).validate(path, errs);
    if s.qos > 1 {
        errs.push(ConfigError::new(
            format!("{path}.qos"),
            format!("must be 0 or 1, got {}", s.qos),
        ));
    }
    if s.mappings.is_empty() {
        errs.push(ConfigError::new(
            format!("{path}.mappings"),
            "needs at least one mapping (a topic and how its messages become readings)",
        ));
    }
    if spec.devices.is_empty() && !s.accept_new_devices {
        errs.push(ConfigError::new(
            format!("{path}.devices"),
            "no devices and accept_new_devices is false: every message would be refused; list the devices or set \"accept_new_devices\": true",
        ));
    }
    for (i, m) in s.mappings.iter().enumerate() {
        if let Err((field, e)) = compile(m) {
            errs.push(ConfigError::new(format!("{path}.mappings[{i}].{field}"), e));
        }
    }
    for (di, d) in spec.devices.iter().enumerate() {
        for (ci, c) in d.channels.iter().enumerate() {
            let cpath = format!("{path}.devices[{di}].channels[{ci}]");
            match (&c.settings.command, c.settings.writable) {
                (None, true) => errs.push(ConfigError::new(
                    format!("{cpath}.command"),
                    "a writable channel needs a command: {\"topic\": …, \"payload\": \"{value}\"}",
                )),
                (Some(cmd), _) => {
                    if cmd.topic.is_empty() || cmd.topic.contains(['+', '#']) {
                        errs.push(ConfigError::new(
                            format!("{cpath}.command.topic"),
                            "must be a topic without wildcards",
                        ));
                    }
                    if !c.settings.writable {
                        errs.push(ConfigError::new(
                            format!("{cpath}.writable"),
                            "a channel with a command must be \"writable\": true",
                        ));
                    }
                }
                (None, false) => {}
            }
        }
    }
}

/// The connection settings for the connector named `name` of gateway `gateway`.
pub(super) fn client_settings(s: &MqttSettings, gateway: &str, name: &str) -> MqttClientSettings {
    let id = s
        .client_id
        .replace("{gateway}", gateway)
        .replace("{connector}", name);
    let mut c = s.client_settings(id);
    // rumqttc drops the connection on a larger packet; keep room above max_payload so an
    // oversized message is counted here instead.
    c.max_packet_size = Some(s.max_payload.bytes().saturating_mul(4).max(1 << 20));
    c
}

pub(super) fn write_spec(c: &ChannelSpec<MqttChannel>) -> Option<WriteSpec> {
    let s = &c.settings;
    if !s.writable || s.command.is_none() {
        return None;
    }
    Some(WriteSpec {
        kind: s.write_type.kind(),
        min: s.min,
        max: s.max,
    })
}

