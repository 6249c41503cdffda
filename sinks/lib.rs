//! Sinks: where readings leave osgate. One module per sink type, each a `<Name>SinkConfig` and
//! `run(config, ctx)`.
//!
//! [`SinkConfig`] is a closed enum dispatched on `"type"`. Every sink reads [`Envelope`]s from its
//! own bounded queue (see [`osgate_core::pipeline`]) until the queue ends (shutdown or reload), then
//! flushes what it holds within the gateway's shutdown deadline and returns.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use osgate_core::config::{deserialize_at, ConfigError};
use osgate_core::pipeline::{Envelope, WhenFull, DEFAULT_QUEUE};
use osgate_core::status::SinkCounters;

pub mod format;
pub mod mqtt;
pub mod sparkplug;
pub mod stdout;

/// Settings every sink has.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkCommon {
    /// Unique sink name.
    pub name: String,
    /// `false` leaves the sink configured but not started.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Capacity of the sink's queue, in batches (default 128).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// What happens when the queue is full: `block` (default: connectors wait) or
    /// `drop_newest` (counted).
    #[serde(default)]
    pub when_full: WhenFull,
}

fn yes() -> bool {
    true
}
fn default_queue() -> usize {
    DEFAULT_QUEUE
}

/// One configured sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// Common settings.
    pub common: SinkCommon,
    /// The type-specific settings.
    pub kind: SinkKind,
    /// The entry as written, for change detection on reload.
    pub raw: Value,
}

/// The sink types (closed set).
#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// `"type": "mqtt"`: publish to an MQTT broker.
    Mqtt(Box<mqtt::MqttSinkConfig>),
    /// `"type": "sparkplug"`: a Sparkplug B edge node.
    Sparkplug(Box<sparkplug::SparkplugSinkConfig>),
    /// `"type": "stdout"`: JSON lines on standard output.
    Stdout(stdout::StdoutSinkConfig),
}

impl SinkKind {
    /// The `type` of the sink as written in the config.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkKind::Mqtt(_) => "mqtt",
            SinkKind::Sparkplug(_) => "sparkplug",
            SinkKind::Stdout(_) => "stdout",
        }
    }
}

const SINK_TYPES: &[&str] = &["mqtt", "sparkplug", "stdout"];
const COMMON_KEYS: &[&str] = &["name", "type", "enabled", "queue", "when_full"];

impl SinkConfig {
    /// Parses `sinks[index]`; problems go to `errs`.
    pub fn from_value(index: usize, value: Value, errs: &mut Vec<ConfigError>) -> Option<Self> {
        let path = match value.get("name").and_then(Value::as_str) {
            Some(n) => format!("sinks[{index}] \"{n}\""),
            None => format!("sinks[{index}]"),
        };
        let raw = value.clone();
        let Value::Object(mut obj) = value else {
            errs.push(ConfigError::new(path, "expected an object"));
            return None;
        };
        let ty = match obj.remove("type") {
            Some(Value::String(t)) => t,
            other => {
                errs.push(ConfigError::new(
                    format!("{path}.type"),
                    format!(
                        "{}, expected one of: {}",
                        if other.is_some() {
                            "expected a string"
                        } else {
                            "missing field"
                        },
                        SINK_TYPES.join(", ")
                    ),
                ));
                return None;
            }
        };
        let mut common_obj = serde_json::Map::new();
        for k in COMMON_KEYS {
            if let Some(v) = obj.remove(*k) {
                common_obj.insert((*k).to_string(), v);
            }
        }
        let common = deserialize_at::<SinkCommon>(Value::Object(common_obj), &path, &[])
            .map_err(|e| errs.push(e))
            .ok();
        if let Some(c) = &common {
            if let Err(e) = osgate_core::config::spec::check_name(&c.name) {
                errs.push(ConfigError::new(format!("{path}.name"), e));
            }
            if c.queue == 0 {
                errs.push(ConfigError::new(
                    format!("{path}.queue"),
                    "must be at least 1",
                ));
            }
        }
        let rest = Value::Object(obj);
        let kind = match ty.as_str() {
            "mqtt" => deserialize_at::<mqtt::MqttSinkConfig>(rest, &path, COMMON_KEYS)
                .map_err(|e| errs.push(e))
                .ok()
                .inspect(|c| c.validate(&path, errs))
                .map(|c| SinkKind::Mqtt(Box::new(c))),
            "sparkplug" => {
                deserialize_at::<sparkplug::SparkplugSinkConfig>(rest, &path, COMMON_KEYS)
                    .map_err(|e| errs.push(e))
                    .ok()
                    .inspect(|c| c.validate(&path, errs))
                    .map(|c| SinkKind::Sparkplug(Box::new(c)))
            }
            "stdout" => deserialize_at::<stdout::StdoutSinkConfig>(rest, &path, COMMON_KEYS)
                .map_err(|e| errs.push(e))
                .ok()
                .map(SinkKind::Stdout),
            other => {
                errs.push(ConfigError::new(
                    format!("{path}.type"),
                    format!(
                        "unknown sink type \"{other}\", expected one of: {}",
                        SINK_TYPES.join(", ")
                    ),
                ));
                None
            }
        };
        Some(SinkConfig {
            common: common?,
            kind: kind?,
            raw,
        })
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.common.name
    }
}

/// What the host gives a running sink.
#[derive(Debug)]
pub struct SinkContext {
    /// The sink's name.
    pub name: Arc<str>,
    /// The gateway id.
    pub gateway: Arc<str>,
    /// The sink's queue; it ends when the sink must stop.
    pub rx: mpsc::Receiver<Envelope>,
    /// The sink's counters.
    pub counters: Arc<SinkCounters>,
    /// How long the sink may take to flush after its queue ended.
    pub flush_timeout: Duration,
    /// When the gateway started (ms since epoch), published in `status/{gateway}`.
    pub started: i64,
    /// The configuration's source, age and last error, published in `status/{gateway}` (the
    /// sink republishes it when it changes).
    pub config_info: tokio::sync::watch::Receiver<osgate_core::config::ConfigInfo>,
    /// The local broker's bridge states (the MQTT sink records them, `status/{gateway}` shows
    /// them).
    pub uplink: Arc<osgate_core::uplink::Uplink>,
    /// The gateway's version, published in `status/{gateway}`.
    pub version: &'static str,
    /// The commit the gateway was built from, published in `status/{gateway}`.
    pub commit: &'static str,
    /// Device control (writes of the Sparkplug sink's DCMD).
    pub control: Arc<osgate_core::control::ControlRegistry>,
}

/// Why a sink's task ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Items were still unacknowledged when the flush deadline passed.
    #[error("{pending} message(s) still unacknowledged at the flush deadline")]
    FlushTimeout {
        /// Messages not confirmed.
        pending: usize,
    },
    /// An I/O error (stdout closed…).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs a sink until its queue ends and it has flushed.
pub async fn run(config: SinkConfig, ctx: SinkContext) -> Result<(), SinkError> {
    match config.kind {
        SinkKind::Mqtt(c) => mqtt::run(*c, ctx).await,
        SinkKind::Sparkplug(c) => sparkplug::run(*c, ctx).await,
        SinkKind::Stdout(c) => stdout::run(c, ctx).await,
    }
}
