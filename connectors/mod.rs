//! Connectors: one module per protocol, each its config types (`<Proto>Config`) and `build`,
//! on top of the shared device runtime ([`device`], the connector kit).
//!
//! [`ConnectorConfig`] holds what every connector has (name, protocol, enabled flag, device
//! names) and the parsed protocol config in [`ConnectorKind`], a closed enum. A protocol is two
//! `match` arms: [`ConnectorConfig::from_raw`] parses `"protocol"` into its types, and
//! [`ConnectorConfig::build`] checks what can be checked before it runs (addresses, serial
//! ports, files) and returns the running connector, or a typed [`ConnectorError`]. The service
//! builds every changed connector before a reload applies anything. Connectors import only core
//! modules (`reading`, `pipeline`, `transform`, `status`, `control`, `config`), never `service`
//! or each other.
//!
//! Adding a connector: a file here with its config types and `build`, the two arms below, a
//! cargo feature, `osgate.json.example`, and a test (see CONTRIBUTING.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::spec::{connector_path, parse_spec};
use crate::config::{interpolate, join, ConfigError, ConnectorSpec, DeviceSpec, Entry};
use crate::control::ControlRegistry;
use crate::pipeline::{DeviceOutput, ReadingSender};
use crate::status::ConnectorHealth;

#[cfg(not(any(
    feature = "simulator",
    feature = "modbus",
    feature = "mqtt",
    feature = "mbus",
    feature = "http",
    feature = "zwave",
    feature = "opcua"
)))]
compile_error!(
    "osgate needs at least one connector: enable the `simulator` and/or `modbus` feature"
);

pub mod device;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "mbus")]
pub mod mbus;
#[cfg(feature = "modbus")]
pub mod modbus;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "opcua")]
pub mod opcua;
#[cfg(feature = "simulator")]
pub mod simulator;
pub mod tool;
#[cfg(feature = "zwave")]
pub mod zwave;

/// What the host gives a running connector.
#[derive(Debug, Clone)]
pub struct ConnectorContext {
    /// The connector's name.
    pub name: Arc<str>,
    /// The gateway id.
    pub gateway: Arc<str>,
    /// Where batches go (fan-out to the sinks).
    pub out: ReadingSender,
    /// Cancelled when the connector must stop (shutdown, reload, disable).
    pub shutdown: CancellationToken,
    /// Counters and device status of this connector.
    pub health: Arc<ConnectorHealth>,
    /// Run-time control of devices (enable/disable, read now, write).
    pub control: Arc<ControlRegistry>,
}

impl ConnectorContext {
    /// The output of one of this connector's devices.
    pub fn device_output<D, C>(&self, device: &DeviceSpec<D, C>) -> DeviceOutput {
        DeviceOutput::new(
            self.name.clone(),
            device,
            self.out.clone(),
            self.health.clone(),
        )
    }
}

/// Why a connector cannot be built, or why its task ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// A serial port that does not exist or cannot be used.
    #[error("serial port {port}: {reason}")]
    SerialPort {
        /// The configured path.
        port: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An address (`host:port`, URL) that cannot be used.
    #[error("address \"{address}\": {reason}")]
    Address {
        /// The configured address.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file the connector needs (certificate, key) that cannot be read.
    #[error("file {path}: {reason}")]
    File {
        /// The configured path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Anything else found before or while running.
    #[error("{0}")]
    Setup(String),
}

impl ConnectorError {
    /// Checks that the serial device `port` exists and can be looked at, before a connector
    /// that needs it runs.
    pub fn check_serial_port(port: &str) -> Result<(), ConnectorError> {
        std::fs::metadata(port)
            .map(|_| ())
            .map_err(|e| ConnectorError::SerialPort {
                port: port.to_string(),
                reason: match e.kind() {
                    std::io::ErrorKind::NotFound => "no such device".to_string(),
                    _ => e.to_string(),
                },
            })
    }
}

/// A built connector, ready to run until its context's `shutdown` is cancelled.
pub type Running = Pin<Box<dyn Future<Output = Result<(), ConnectorError>> + Send>>;

/// One configured connector. Two are equal when their parsed configs are: a reload restarts a
/// connector only when what it runs on changed (a reordered key or a default written out is no
/// change).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorConfig {
    /// Unique connector name.
    pub name: Arc<str>,
    /// The `"protocol"`.
    pub protocol: &'static str,
    /// `false` starts the connector disabled.
    pub enabled: bool,
    /// Its devices' names, in config order.
    pub devices: Arc<[Arc<str>]>,
    /// The parsed protocol config, shared: the service, the supervisor and the reload diff all
    /// hold the same copy.
    pub kind: ConnectorKind,
}

/// The protocols osgate speaks (closed set: one arm per protocol).
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectorKind {
    /// `"protocol": "simulator"`.
    #[cfg(feature = "simulator")]
    Simulator(Arc<simulator::SimulatorConfig>),
    /// `"protocol": "modbus"`.
    #[cfg(feature = "modbus")]
    Modbus(Arc<modbus::ModbusConfig>),
    /// `"protocol": "mqtt"`.
    #[cfg(feature = "mqtt")]
    Mqtt(Arc<mqtt::MqttConfig>),
    /// `"protocol": "mbus"`.
    #[cfg(feature = "mbus")]
    Mbus(Arc<mbus::MbusConfig>),
    /// `"protocol": "http"` (`"mode": "poll"` or `"listen"`).
    #[cfg(feature = "http")]
    Http(http::HttpConfig),
    /// `"protocol": "zwave"`.
    #[cfg(feature = "zwave")]
    Zwave(Arc<zwave::ZwaveConfig>),
    /// `"protocol": "opcua"`.
    #[cfg(feature = "opcua")]
    Opcua(Arc<opcua::OpcuaConfig>),
}

/// Protocol names accepted in `"protocol"`, for error messages.
pub const PROTOCOLS: &[&str] = &[
    #[cfg(feature = "simulator")]
    "simulator",
    #[cfg(feature = "modbus")]
    "modbus",
    #[cfg(feature = "mqtt")]
    "mqtt",
    #[cfg(feature = "mbus")]
    "mbus",
    #[cfg(feature = "http")]
    "http",
    #[cfg(feature = "zwave")]
    "zwave",
    #[cfg(feature = "opcua")]
    "opcua",
];

impl ConnectorConfig {
    /// Parses `connectors[index]`; problems go to `errs`, each with its path.
    pub fn from_raw(
        index: usize,
        raw: &RawValue,
        env: &dyn Fn(&str) -> Option<String>,
        errs: &mut Vec<ConfigError>,
    ) -> Option<Self> {
        let mut entry = match Entry::parse(raw, "devices") {
            Ok(e) => e,
            Err(e) => {
                errs.push(ConfigError::new(format!("connectors[{index}]"), e));
                return None;
            }
        };
        let path = connector_path(index, &entry.fields);
        for (k, v) in entry.fields.iter_mut() {
            interpolate(v, &join(&path, k), env, errs);
        }
        let protocol = match entry.fields.get("protocol") {
            Some(Value::String(p)) => p.clone(),
            Some(other) => {
                errs.push(ConfigError::new(
                    format!("{path}.protocol"),
                    format!("expected a string, got {other}"),
                ));
                return None;
            }
            None => {
                errs.push(ConfigError::new(
                    format!("{path}.protocol"),
                    format!("missing field, expected one of: {}", PROTOCOLS.join(", ")),
                ));
                return None;
            }
        };
        let p = Parse {
            path: &path,
            env,
            errs,
        };
        match protocol.as_str() {
            #[cfg(feature = "simulator")]
            "simulator" => p.spec(
                entry,
                "simulator",
                simulator::validate,
                ConnectorKind::Simulator,
            ),
            #[cfg(feature = "modbus")]
            "modbus" => p.spec(entry, "modbus", modbus::validate, ConnectorKind::Modbus),
            #[cfg(feature = "mqtt")]
            "mqtt" => p.spec(entry, "mqtt", mqtt::validate, ConnectorKind::Mqtt),
            #[cfg(feature = "mbus")]
            "mbus" => p.spec(entry, "mbus", mbus::validate, ConnectorKind::Mbus),
            #[cfg(feature = "http")]
            "http" => http::parse(p, entry),
            #[cfg(feature = "zwave")]
            "zwave" => p.spec(entry, "zwave", zwave::validate, ConnectorKind::Zwave),
            #[cfg(feature = "opcua")]
            "opcua" => p.spec(entry, "opcua", opcua::validate, ConnectorKind::Opcua),
            other => {
                p.errs.push(ConfigError::new(
                    format!("{path}.protocol"),
                    format!(
                        "unknown protocol \"{other}\", expected one of: {} (protocols left out of this build by cargo features are not listed)",
                        PROTOCOLS.join(", ")
                    ),
                ));
                None
            }
        }
    }

    /// Checks what can be checked before the connector runs (addresses, serial ports, files)
    /// and returns it ready to run with `ctx`.
    pub fn build(&self, ctx: ConnectorContext) -> Result<Running, ConnectorError> {
        match &self.kind {
            #[cfg(feature = "simulator")]
            ConnectorKind::Simulator(spec) => simulator::build(spec.clone(), ctx),
            #[cfg(feature = "modbus")]
            ConnectorKind::Modbus(spec) => modbus::build(spec.clone(), ctx),
            #[cfg(feature = "mqtt")]
            ConnectorKind::Mqtt(spec) => mqtt::build(spec.clone(), ctx),
            #[cfg(feature = "mbus")]
            ConnectorKind::Mbus(spec) => mbus::build(spec.clone(), ctx),
            #[cfg(feature = "http")]
            ConnectorKind::Http(cfg) => http::build(cfg, ctx),
            #[cfg(feature = "zwave")]
            ConnectorKind::Zwave(spec) => zwave::build(spec.clone(), ctx),
            #[cfg(feature = "opcua")]
            ConnectorKind::Opcua(spec) => opcua::build(spec.clone(), ctx),
        }
    }
}

/// What parsing one connector entry needs, whatever its protocol.
struct Parse<'a> {
    path: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    errs: &'a mut Vec<ConfigError>,
}

impl Parse<'_> {
    /// Parses the entry into a protocol's spec, runs its semantic checks, and wraps it.
    fn spec<S, D, C>(
        self,
        entry: Entry<'_>,
        protocol: &'static str,
        validate: fn(&ConnectorSpec<S, D, C>, &str, &mut Vec<ConfigError>),
        wrap: fn(Arc<ConnectorSpec<S, D, C>>) -> ConnectorKind,
    ) -> Option<ConnectorConfig>
    where
        S: DeserializeOwned,
        D: DeserializeOwned,
        C: DeserializeOwned,
    {
        let spec = parse_spec(entry, self.path, self.env, self.errs)?;
        validate(&spec, self.path, self.errs);
        Some(ConnectorConfig {
            name: spec.name.clone(),
            protocol,
            enabled: spec.enabled,
            devices: spec.devices.iter().map(|d| d.name.clone()).collect(),
            kind: wrap(Arc::new(spec)),
        })
    }
}
