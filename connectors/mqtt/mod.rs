//! The MQTT connector (`"protocol": "mqtt"`): subscribes to a broker that devices already
//! publish to (Tasmota, Shelly, Zigbee2MQTT, PLCs with MQTT modules, other gateways), turns their
//! messages into readings, and publishes writes back to their command topics.
//!
//! One connector is one broker connection (several brokers = several connectors), built by
//! [`osgate_core::net::mqtt`] like every MQTT client of osgate (URL, TLS, credentials). Messages are
//! matched against the connector's `mappings` in order, first match wins ([`topic`]: filters
//! with named captures); the device and channel names come from the captures or are fixed; the
//! payload is decoded by the kit's [`payload`](super::device::payload) module (JSON pointers,
//! every field by key path, plain numbers, bool words, text, timestamps). Devices listed in the
//! config take the channels the mappings give them; other devices are created on their first
//! message when `accept_new_devices` is on, up to `max_devices`. The kit's
//! [`ListenerLine`] does the rest: health, `stale_after`, enable/disable, writes, reconnect
//! backoff, bad payloads counted per mapping.
//!
//! The session is persistent by default (`clean_session: false`, subscriptions at QoS 1): what
//! the devices publish while osgate is away waits in the broker. Batches wait for room in the
//! sink queues (the sink's `when_full` decides), so a slow uplink slows the reading of the
//! source broker, which holds the messages, instead of dropping them here.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, Publish, QoS, SubscribeReasonCode};
use serde::Deserialize;

use super::device::listener::{Devices, Input, Listener, ListenerLine};
use super::device::payload::{leaves, Pick, TimeParser, TimestampConfig, ValueType};
pub use super::device::WriteType;
use super::device::{Backoff, Fault, WriteError, WriteSpec};
use super::{ConnectorContext, ConnectorError, Running};
use osgate_core::config::{ChannelSpec, ConfigError, ConnectorSpec, Dur};
use osgate_core::net::mqtt::{parse_url, MqttClientSettings};
use osgate_core::net::TlsConfig;
use osgate_core::reading::{Timestamp, Value};
use osgate_core::size::Size;
use osgate_core::transform::TransformConfig;

pub mod topic;

use topic::{Captures, Pattern, Template};

/// A parsed MQTT connector.
pub type MqttConfig = ConnectorSpec<MqttSettings, MqttDevice, MqttChannel>;

/// Connector-level settings: the broker, the session, and how messages become readings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSettings {
    /// Broker URL: `mqtt://host[:port]` (default port 1883) or, with TLS,
    /// `mqtts://host[:port]` (default port 8883).
    pub url: String,
    /// Client id; `{gateway}` and `{connector}` are replaced (default
    /// `osgate-{gateway}-{connector}`). Stable, so the broker keeps the session.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// User name for the broker.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for the broker (use `${VAR}`).
    #[serde(default)]
    pub password: Option<String>,
    /// File holding the password (trailing newline ignored), instead of `password`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS settings (`ca_file`, `cert_file`, `key_file`, `server_name`,
    /// `insecure_skip_verify`); needs an `mqtts://` URL.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// MQTT keep-alive (default `30s`).
    #[serde(default = "default_keep_alive")]
    pub keep_alive: Dur,
    /// Start a clean session on every connect (default false: the broker keeps the session
    /// and the messages of QoS 1 subscriptions published while osgate was away).
    #[serde(default)]
    pub clean_session: bool,
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
    /// Longest wait between reconnect attempts (default `30s`; the first is 1 s and doubles).
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Dur,
    /// How long a write waits for the broker's PUBACK (default `10s`).
    #[serde(default = "default_write_timeout")]
    pub write_timeout: Dur,
}

fn default_client_id() -> String {
    "osgate-{gateway}-{connector}".into()
}
fn default_keep_alive() -> Dur {
    Dur::from_secs(30)
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

/// osgate's own topic roots: a connector never feeds these back into the gateway.
const OWN_ROOTS: [&str; 4] = ["telemetry", "status", "command", "rpc"];
/// `"protocol": "mqtt"` in the protocol registry.
pub const PROTOCOL: crate::Protocol = crate::Protocol {
    name: "mqtt",
    parse: |p, entry| p.spec(entry, validate, build),
    tool: None,
};


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
fn client_settings(s: &MqttSettings, gateway: &str, name: &str) -> MqttClientSettings {
    let id = s
        .client_id
        .replace("{gateway}", gateway)
        .replace("{connector}", name);
    let mut c = MqttClientSettings::new(s.url.clone(), id);
    c.keep_alive = s.keep_alive.0;
    c.clean_session = s.clean_session;
    c.username = s.username.clone();
    c.password = s.password.clone();
    c.password_file = s.password_file.clone();
    c.tls = s.tls.clone();
    // rumqttc drops the connection on a larger packet; keep room above max_payload so an
    // oversized message is counted here instead.
    c.max_packet_size = Some(s.max_payload.bytes().saturating_mul(4).max(1 << 20));
    c
}

/// A channel a mapping produces.
#[derive(Debug, Clone)]
struct OutChannel {
    name: Template,
    unit: Option<Arc<str>>,
    transform: TransformConfig,
    pick: Pick,
}

#[derive(Debug, Clone)]
enum Channels {
    /// These channels.
    Listed(Vec<OutChannel>),
    /// Every number and bool of the JSON document, named by key path after `prefix`.
    Leaves { prefix: Option<Template> },
}

/// A compiled mapping.
#[derive(Debug, Clone)]
struct Compiled {
    /// The mapping's topic as written (its input name).
    name: Arc<str>,
    pattern: Pattern,
    device: Template,
    json: bool,
    channels: Channels,
    timestamp: Option<TimeParser>,
}

fn compile(m: &Mapping) -> Result<Compiled, (&'static str, String)> {
    let pattern = Pattern::new(&m.topic).map_err(|e| ("topic", e))?;
    // The obvious loops are refused here; the runtime skips this gateway's own topics that
    // a wider filter (`+/{device}/#`) brings in.
    let first = m.topic.split('/').next().unwrap_or("");
    if m.topic == "#" || OWN_ROOTS.contains(&first) {
        return Err((
            "topic",
            format!(
                "\"{}\" would take osgate's own telemetry/, status/, command/ or rpc/ messages back in (a loop when this broker is the sink's); subscribe to the devices' topics",
                m.topic
            ),
        ));
    }
    let device = Template::new(m.device.as_deref().unwrap_or("{device}"), &pattern)
        .map_err(|e| ("device", e))?;
    let json = m.format == Format::Json;
    let single_type = match m.format {
        Format::Json | Format::Auto => ValueType::Auto,
        Format::Number => ValueType::Number,
        Format::Bool => ValueType::Bool,
        Format::Text => ValueType::Text,
    };
    let channel_template = match &m.channel {
        Some(c) => Some(Template::new(c, &pattern).map_err(|e| ("channel", e))?),
        None if pattern.capture("channel").is_some() => {
            Some(Template::new("{channel}", &pattern).map_err(|e| ("channel", e))?)
        }
        None => None,
    };
    let unit: Option<Arc<str>> = m.unit.as_deref().map(Into::into);
    let channels = match (&m.channels, channel_template) {
        (Some(_), _) if m.channel.is_some() || m.unit.is_some() => {
            return Err((
                "channels",
                "set either channels, or channel and unit for a single value, not both".into(),
            ))
        }
        (Some(list), _) => {
            if list.is_empty() {
                return Err(("channels", "must not be empty".into()));
            }
            let mut out = Vec::with_capacity(list.len());
            for (i, c) in list.iter().enumerate() {
                let err = |f: &str, e: String| -> (&'static str, String) {
                    ("channels", format!("[{i}].{f}: {e}"))
                };
                let name = Template::new(&c.name, &pattern).map_err(|e| err("name", e))?;
                let s = &c.settings;
                let ty = if s.value_type == ValueType::Auto {
                    single_type
                } else {
                    s.value_type
                };
                let pick = Pick::new(s.pointer.as_deref(), s.regex.as_deref(), ty)
                    .map_err(|(f, e)| err(f, e))?;
                if pick.needs_json() && !json {
                    return Err(err(
                        "pointer",
                        "a JSON pointer needs \"format\": \"json\"".into(),
                    ));
                }
                out.push(OutChannel {
                    name,
                    unit: c.unit.clone(),
                    transform: c.transform().clone(),
                    pick,
                });
            }
            Channels::Listed(out)
        }
        (None, prefix) if json => {
            if unit.is_some() {
                return Err((
                    "unit",
                    "with json and no channels every field becomes a channel; give units per channel in \"channels\"".into(),
                ));
            }
            Channels::Leaves { prefix }
        }
        (None, Some(name)) => Channels::Listed(vec![OutChannel {
            name,
            unit,
            transform: TransformConfig::default(),
            pick: Pick::Whole(single_type),
        }]),
        (None, None) => {
            return Err((
                "channel",
                "a single value needs a channel name (or a {channel} capture in the topic)".into(),
            ))
        }
    };
    let timestamp = match &m.timestamp {
        Some(t) => {
            if !json {
                return Err((
                    "timestamp",
                    "a timestamp pointer needs \"format\": \"json\"".into(),
                ));
            }
            Some(t.compile().map_err(|(_, e)| ("timestamp", e))?)
        }
        None => None,
    };
    Ok(Compiled {
        name: m.topic.as_str().into(),
        pattern,
        device,
        json,
        channels,
        timestamp,
    })
}

fn write_spec(c: &ChannelSpec<MqttChannel>) -> Option<WriteSpec> {
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

/// Builds the connector: checks the URL and the files it names, compiles the mappings.
pub fn build(spec: Arc<MqttConfig>, ctx: ConnectorContext) -> Result<Running, ConnectorError> {
    let s = &spec.settings;
    let settings = client_settings(s, &ctx.gateway, &ctx.name);
    let options = settings.options().map_err(|e| match e {
        osgate_core::net::mqtt::MqttConfigError::PasswordFile { path, source } => ConnectorError::File {
            path: path.display().to_string(),
            reason: source.to_string(),
        },
        other => ConnectorError::Setup(other.to_string()),
    })?;
    parse_url(&s.url).map_err(|reason| ConnectorError::Address {
        address: s.url.clone(),
        reason,
    })?;
    let mappings = s
        .mappings
        .iter()
        .map(|m| compile(m).map_err(|(f, e)| ConnectorError::Setup(format!("{f}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let qos = if s.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let mut filters: Vec<String> = Vec::new();
    for m in &mappings {
        if !filters.contains(&m.pattern.filter) {
            filters.push(m.pattern.filter.clone());
        }
    }
    let names: Vec<Arc<str>> = mappings.iter().map(|m| m.name.clone()).collect();
    let inputs = Input::all(&ctx, &names);
    let commands = spec
        .devices
        .iter()
        .map(|d| {
            d.channels
                .iter()
                .map(|c| c.settings.command.clone().map(Arc::new))
                .collect()
        })
        .collect();
    let (client, el) = AsyncClient::new(options, 64);
    let gw = &ctx.gateway;
    let listener = MqttListener {
        client,
        el,
        filters,
        qos,
        pending: VecDeque::new(),
        mappings,
        inputs,
        commands,
        own: OWN_ROOTS.map(|r| format!("{r}/{gw}")),
        max_payload: s.max_payload.bytes(),
        write_timeout: s.write_timeout.0,
        url: s.url.clone(),
        ctx: ctx.clone(),
        caps: Captures::default(),
        device_buf: String::new(),
        channel_buf: String::new(),
        refused_subscription: false,
    };
    let mut line = ListenerLine::new(&ctx, listener)
        .with_backoff(Backoff::new(Duration::from_secs(1), s.backoff_max.0))
        .with_stale_after(s.stale_after.map(|d| d.0))
        .with_backpressure();
    if s.accept_new_devices {
        line = line.accept_new(s.max_devices);
    }
    for d in &spec.devices {
        line.add(d, write_spec);
    }
    Ok(Box::pin(async move {
        line.run().await;
        Ok(())
    }))
}

/// The protocol side of one MQTT connector.
struct MqttListener {
    client: AsyncClient,
    el: EventLoop,
    filters: Vec<String>,
    qos: QoS,
    /// Messages that arrived while a write waited for its PUBACK.
    pending: VecDeque<Publish>,
    mappings: Vec<Compiled>,
    inputs: Vec<Input>,
    /// `commands[device][channel]` of the configured devices.
    commands: Vec<Vec<Option<Arc<Command>>>>,
    /// `telemetry/{gateway}`, `status/{gateway}`…: never taken in.
    own: [String; 4],
    max_payload: usize,
    write_timeout: Duration,
    url: String,
    ctx: ConnectorContext,
    caps: Captures,
    device_buf: String,
    channel_buf: String,
    refused_subscription: bool,
}

impl MqttListener {
    /// Handles one event of the connection; returns a message to map.
    fn on_event(&mut self, ev: Event) -> Option<Publish> {
        match ev {
            Event::Incoming(Packet::Publish(p)) => return Some(p),
            Event::Incoming(Packet::ConnAck(ack)) => {
                tracing::info!(connector = %self.ctx.name, broker = %self.url,
                    session_present = ack.session_present, "connected to the source broker");
                let subs = self
                    .filters
                    .iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f.clone(), self.qos));
                if let Err(e) = self.client.try_subscribe_many(subs) {
                    tracing::warn!(connector = %self.ctx.name, error = %e, "subscribe failed");
                }
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                let refused = ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure));
                if refused && !self.refused_subscription {
                    tracing::error!(connector = %self.ctx.name, broker = %self.url,
                        filters = ?self.filters,
                        "the broker refused a subscription (check its ACL for this user)");
                }
                self.refused_subscription = refused;
            }
            _ => {}
        }
        None
    }

    fn connection_fault(&self, e: &rumqttc::ConnectionError) -> Fault {
        let kind = match e {
            rumqttc::ConnectionError::ConnectionRefused(_) => "refused",
            rumqttc::ConnectionError::Tls(_) => "tls",
            rumqttc::ConnectionError::Io(_) => "io",
            _ => "connection",
        };
        Fault::new(
            kind,
            format!("broker {}: {}", self.url, osgate_core::net::describe_error(e)),
        )
    }
}

/// True when `topic` is one of osgate's own (`own`: `telemetry/{gateway}`, …).
fn is_own(own: &[String], topic: &str) -> bool {
    own.iter().any(|o| {
        topic
            .strip_prefix(o.as_str())
            .is_some_and(|r| r.is_empty() || r.starts_with('/'))
    })
}

/// `{value}` of a command payload.
fn render_value(v: &Value, cmd: &Command) -> String {
    match v {
        Value::Bool(true) => cmd.on.clone().unwrap_or_else(|| "true".into()),
        Value::Bool(false) => cmd.off.clone().unwrap_or_else(|| "false".into()),
        other => other.to_string(),
    }
}

impl Listener for MqttListener {
    type Msg = Publish;

    async fn next(&mut self) -> Result<Publish, Fault> {
        if let Some(p) = self.pending.pop_front() {
            return Ok(p);
        }
        loop {
            match self.el.poll().await {
                Ok(ev) => {
                    if let Some(p) = self.on_event(ev) {
                        return Ok(p);
                    }
                }
                Err(e) => return Err(self.connection_fault(&e)),
            }
        }
    }

    fn map(&mut self, msg: Publish, devices: &mut Devices) {
        let topic = msg.topic.as_str();
        if is_own(&self.own, topic) {
            self.ctx.health.counters.refused.fetch_add(1, Relaxed);
            tracing::debug!(connector = %self.ctx.name, topic, "osgate's own topic skipped");
            return;
        }
        let Some(mi) = self
            .mappings
            .iter()
            .position(|m| m.pattern.matches(topic, &mut self.caps))
        else {
            self.ctx.health.counters.unmatched.fetch_add(1, Relaxed);
            tracing::debug!(connector = %self.ctx.name, topic, "no mapping for this topic");
            return;
        };
        let m = &self.mappings[mi];
        let input = &mut self.inputs[mi];
        let ctx = &self.ctx;
        if msg.payload.len() > self.max_payload {
            let why = format!(
                "payload of {} bytes exceeds max_payload ({} bytes)",
                msg.payload.len(),
                self.max_payload
            );
            return input.bad(ctx, &m.name, &why);
        }
        let Ok(text) = std::str::from_utf8(&msg.payload) else {
            return input.bad(ctx, &m.name, "payload is not UTF-8 text");
        };
        m.device.render(topic, &self.caps, &mut self.device_buf);
        let Some(dev) = devices.find_or_create(&self.device_buf) else {
            return;
        };
        let doc = if m.json {
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(d) => Some(d),
                Err(e) => return input.bad(ctx, &m.name, &format!("invalid JSON: {e}")),
            }
        } else {
            None
        };
        let ts = match (&m.timestamp, &doc) {
            (Some(t), Some(d)) => match t.get(d) {
                Ok(ts) => ts,
                Err(e) => return input.bad(ctx, &m.name, &e),
            },
            _ => Timestamp::now(),
        };
        let mut first_bad: Option<String> = None;
        match &m.channels {
            Channels::Listed(chans) => {
                for c in chans {
                    let name = match c.name.fixed() {
                        Some(n) => n,
                        None => {
                            c.name.render(topic, &self.caps, &mut self.channel_buf);
                            &self.channel_buf
                        }
                    };
                    let Some(ch) = devices.channel_or_add(dev, name, c.unit.as_ref(), &c.transform)
                    else {
                        continue;
                    };
                    match c.pick.get(text, doc.as_ref()) {
                        Ok(v) => devices.push(dev, ch, v, ts),
                        Err(e) => {
                            let reason: Arc<str> = format!("{name}: {e}").into();
                            first_bad.get_or_insert_with(|| reason.to_string());
                            devices.push_bad(dev, ch, reason, ts);
                        }
                    }
                }
            }
            Channels::Leaves { prefix } => {
                let prefix = prefix.as_ref().map(|p| {
                    p.render(topic, &self.caps, &mut self.channel_buf);
                    std::mem::take(&mut self.channel_buf)
                });
                let mut name = String::new();
                let identity = TransformConfig::default();
                let mut any = false;
                if let Some(d) = &doc {
                    leaves(d, &mut |path, v| {
                        any = true;
                        let n = match (&prefix, path.is_empty()) {
                            (Some(p), true) => p.as_str(),
                            (Some(p), false) => {
                                name.clear();
                                name.push_str(p);
                                name.push('.');
                                name.push_str(path);
                                &name
                            }
                            (None, _) => path,
                        };
                        if let Some(ch) = devices.channel_or_add(dev, n, None, &identity) {
                            devices.push(dev, ch, v, ts);
                        }
                    });
                }
                if let Some(p) = prefix {
                    self.channel_buf = p;
                }
                if !any {
                    first_bad = Some(
                        if prefix_is_needed(doc.as_ref()) {
                            "a bare value needs a channel name (\"channel\") in the mapping"
                        } else {
                            "no number or bool in the payload"
                        }
                        .into(),
                    );
                }
            }
        }
        match first_bad {
            None => input.good(ctx, &m.name),
            Some(why) => input.bad(ctx, &m.name, &why),
        }
    }

    async fn write(&mut self, device: usize, ch: usize, raw: Value) -> Result<Value, WriteError> {
        let Some(cmd) = self
            .commands
            .get(device)
            .and_then(|d| d.get(ch))
            .and_then(|c| c.clone())
        else {
            return Err(WriteError::Invalid("the channel has no command".into()));
        };
        let payload = cmd.payload.replace("{value}", &render_value(&raw, &cmd));
        self.client
            .try_publish(cmd.topic.clone(), QoS::AtLeastOnce, cmd.retain, payload)
            .map_err(|e| WriteError::Offline(format!("cannot queue the command: {e}")))?;
        let limit = self.write_timeout;
        // The event loop is ours: drive it until the broker acknowledges our publish, keeping
        // the messages that arrive meanwhile for `next()`.
        let wait = async {
            let mut pkid = None;
            loop {
                match self.el.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(id))) if pkid.is_none() => pkid = Some(id),
                    Ok(Event::Incoming(Packet::PubAck(a))) if Some(a.pkid) == pkid => return Ok(()),
                    Ok(ev) => {
                        if let Some(p) = self.on_event(ev) {
                            self.pending.push_back(p);
                        }
                    }
                    Err(e) => return Err(self.connection_fault(&e).message),
                }
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(Ok(())) => Ok(raw),
            Ok(Err(e)) => Err(WriteError::Offline(e)),
            Err(_) => Err(WriteError::Offline(format!(
                "no PUBACK from {} within {}",
                self.url,
                humantime::format_duration(limit)
            ))),
        }
    }
}

fn prefix_is_needed(doc: Option<&serde_json::Value>) -> bool {
    matches!(
        doc,
        Some(serde_json::Value::Number(_) | serde_json::Value::Bool(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use osgate_core::config::spec::parse_checked;
    use crate::device::ValueKind;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<MqttConfig, Vec<ConfigError>> {
        parse_checked(v, "connectors[0] \"m\"", validate)
    }

    #[test]
    fn the_documented_shape_parses() {
        let spec = parse(json!({
            "name": "m", "protocol": "mqtt", "url": "mqtt://127.0.0.1:1883",
            "mappings": [
                {"topic": "tele/{device}/SENSOR", "format": "json",
                 "timestamp": {"pointer": "/Time", "format": "rfc3339"},
                 "channels": [{"name": "temperature", "pointer": "/AM2301/Temperature", "unit": "°C", "scale": 1.0},
                              {"name": "humidity", "pointer": "/AM2301/Humidity", "unit": "%"}]},
                {"topic": "shellies/{device}/relay/0/power", "format": "number", "channel": "power", "unit": "W"},
                {"topic": "zigbee2mqtt/{device}"}],
            "devices": [{"name": "boiler-room", "channels": [
                {"name": "relay", "writable": true, "type": "bool",
                 "command": {"topic": "cmnd/boiler-room/POWER", "payload": "{value}", "on": "ON", "off": "OFF"}}]}]
        }))
        .unwrap();
        assert_eq!(spec.settings.mappings.len(), 3);
        for m in &spec.settings.mappings {
            compile(m).unwrap();
        }
        let w = write_spec(&spec.devices[0].channels[0]).unwrap();
        assert_eq!(w.kind, ValueKind::Bool);
    }

    #[test]
    fn mistakes_name_the_field() {
        let errs = parse(json!({
            "name": "m", "protocol": "mqtt", "url": "mqtt://h", "qos": 2,
            "mappings": [
                {"topic": "tele/{device}/SENSOR", "channels": [{"name": "t", "pointer": "AM2301"}]},
                {"topic": "a/{device}", "format": "number"},
                {"topic": "telemetry/#"},
                {"topic": "b/{device}", "device": "{dev}"},
                {"topic": "c/{device}", "format": "text", "channel": "x",
                 "timestamp": {"pointer": "/t"}}],
            "devices": [{"name": "d", "channels": [{"name": "r", "writable": true}]}]
        }))
        .unwrap_err();
        let p = "connectors[0] \"m\"";
        let want = [
            format!("{p}.qos"),
            format!("{p}.mappings[0].channels"),
            format!("{p}.mappings[1].channel"),
            format!("{p}.mappings[2].topic"),
            format!("{p}.mappings[3].device"),
            format!("{p}.mappings[4].timestamp"),
            format!("{p}.devices[0].channels[0].command"),
        ];
        for w in &want {
            assert!(errs.iter().any(|e| &e.path == w), "{w} missing in {errs:?}");
        }
        let e = errs
            .iter()
            .find(|e| e.path.ends_with("mappings[0].channels"))
            .unwrap();
        assert!(
            e.message.contains("pointer") && e.message.contains("/AM2301"),
            "{e:?}"
        );
        let errs = parse(json!({"name": "m", "protocol": "mqtt", "url": "mqtt://h",
            "mappings": [{"topic": "a/{device}"}]}))
        .unwrap_err();
        assert!(errs[0].message.contains("accept_new_devices"), "{errs:?}");
    }

    #[test]
    fn own_topics_of_this_gateway_are_recognised() {
        let own = OWN_ROOTS.map(|r| format!("{r}/gw"));
        assert!(is_own(&own, "telemetry/gw/d/c"));
        assert!(is_own(&own, "status/gw"));
        assert!(is_own(&own, "command/gw/d/c/set"));
        assert!(!is_own(&own, "telemetry/gw2/d/c"));
        assert!(!is_own(&own, "tele/gw/SENSOR"));
    }

    #[test]
    fn command_payloads() {
        let cmd = Command {
            topic: "t".into(),
            payload: "{\"state\":\"{value}\"}".into(),
            on: Some("ON".into()),
            off: Some("OFF".into()),
            retain: false,
        };
        assert_eq!(render_value(&Value::Bool(true), &cmd), "ON");
        assert_eq!(render_value(&Value::F64(1.0), &cmd), "1");
        assert_eq!(render_value(&Value::F64(21.5), &cmd), "21.5");
        assert_eq!(
            cmd.payload
                .replace("{value}", &render_value(&Value::Bool(false), &cmd)),
            "{\"state\":\"OFF\"}"
        );
    }
}
