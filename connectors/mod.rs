//! Connectors: one module per protocol, each a `<Proto>` config (device and channel settings)
//! and `run(spec, ctx)`.
//!
//! [`ConnectorKind`] is a closed enum: [`ConnectorConfig::from_raw`] reads `"protocol"` and
//! parses the entry with [`crate::config::spec::parse_spec`] into that protocol's types, and
//! [`run`] dispatches with an exhaustive `match`, so the compiler lists every place a new
//! protocol must be handled. Connectors import only core modules (`reading`, `pipeline`,
//! `transform`, `status`, `config`), never `service` or each other.
//!
//! Adding a connector: a file here, one arm in each `match` below, a cargo feature,
//! `osgate.json.example`, and a test (see CONTRIBUTING.md).

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::spec::{connector_path, parse_spec};
use crate::config::{interpolate, join, ConfigError, DeviceSpec, Entry};
use crate::control::{ControlRegistry, DeviceControl};
use crate::pipeline::{DeviceOutput, ReadingSender};
use crate::status::ConnectorHealth;

#[cfg(not(any(feature = "simulator", feature = "modbus")))]
compile_error!(
    "osgate needs at least one connector: enable the `simulator` and/or `modbus` feature"
);

#[cfg(feature = "modbus")]
pub mod modbus;
#[cfg(feature = "simulator")]
pub mod simulator;

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

    /// Registers a device's task for run-time control: its request queue (`device.read`,
    /// `device.write`, MQTT commands) and its enabled flag (a run-time override survives
    /// connector restarts and reloads). A device task should stop polling while disabled
    /// (status `running: false`), answer requests with [`crate::control::DeviceError::Disabled`]
    /// then, and resume when enabled.
    pub fn register_device<D, C>(&self, device: &DeviceSpec<D, C>) -> DeviceControl {
        self.control
            .register(&self.name, &device.name, device.enabled)
    }
}

/// Why a connector's task ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The connector cannot run with this configuration (found at start, e.g. a serial port
    /// that does not exist).
    #[error("{0}")]
    Setup(String),
}

/// One configured connector, by protocol. Two are equal when their parsed configs are: a
/// reload restarts a connector only when what it runs on changed (a reordered key or a default
/// written out is no change).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorConfig {
    /// The parsed protocol config, shared: the service, the supervisor and the reload diff all
    /// hold the same copy.
    pub kind: Arc<ConnectorKind>,
}

/// The protocols osgate speaks (closed set: one arm per protocol).
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectorKind {
    /// `"protocol": "simulator"`.
    #[cfg(feature = "simulator")]
    Simulator(simulator::SimulatorConfig),
    /// `"protocol": "modbus"`.
    #[cfg(feature = "modbus")]
    Modbus(modbus::ModbusConfig),
}

/// Protocol names accepted in `"protocol"`, for error messages.
pub const PROTOCOLS: &[&str] = &[
    #[cfg(feature = "simulator")]
    "simulator",
    #[cfg(feature = "modbus")]
    "modbus",
];

impl ConnectorConfig {
    /// Parses `connectors[index]`; problems go to `errs`, each with its path.
    pub fn from_raw(
        index: usize,
        raw: &RawValue,
        env: &dyn Fn(&str) -> Option<String>,
        errs: &mut Vec<ConfigError>,
    ) -> Option<Self> {
        let Some(mut entry) = Entry::parse(raw, "devices") else {
            errs.push(ConfigError::new(
                format!("connectors[{index}]"),
                "expected an object",
            ));
            return None;
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
        let kind = match protocol.as_str() {
            #[cfg(feature = "simulator")]
            "simulator" => {
                let spec = parse_spec(entry, &path, env, errs)?;
                simulator::validate(&spec, &path, errs);
                ConnectorKind::Simulator(spec)
            }
            #[cfg(feature = "modbus")]
            "modbus" => {
                let spec = parse_spec(entry, &path, env, errs)?;
                modbus::validate(&spec, &path, errs);
                ConnectorKind::Modbus(spec)
            }
            other => {
                errs.push(ConfigError::new(
                    format!("{path}.protocol"),
                    format!(
                        "unknown protocol \"{other}\", expected one of: {} (protocols left out of this build by cargo features are not listed)",
                        PROTOCOLS.join(", ")
                    ),
                ));
                return None;
            }
        };
        Some(ConnectorConfig {
            kind: Arc::new(kind),
        })
    }

    /// The connector's name.
    pub fn name(&self) -> &Arc<str> {
        match &*self.kind {
            #[cfg(feature = "simulator")]
            ConnectorKind::Simulator(s) => &s.name,
            #[cfg(feature = "modbus")]
            ConnectorKind::Modbus(s) => &s.name,
        }
    }

    /// Whether the connector starts enabled.
    pub fn enabled(&self) -> bool {
        match &*self.kind {
            #[cfg(feature = "simulator")]
            ConnectorKind::Simulator(s) => s.enabled,
            #[cfg(feature = "modbus")]
            ConnectorKind::Modbus(s) => s.enabled,
        }
    }

    /// The protocol name.
    pub fn protocol(&self) -> &'static str {
        match &*self.kind {
            #[cfg(feature = "simulator")]
            ConnectorKind::Simulator(_) => "simulator",
            #[cfg(feature = "modbus")]
            ConnectorKind::Modbus(_) => "modbus",
        }
    }

    /// Names of the connector's devices, in config order.
    pub fn device_names(&self) -> Vec<Arc<str>> {
        match &*self.kind {
            #[cfg(feature = "simulator")]
            ConnectorKind::Simulator(s) => s.devices.iter().map(|d| d.name.clone()).collect(),
            #[cfg(feature = "modbus")]
            ConnectorKind::Modbus(s) => s.devices.iter().map(|d| d.name.clone()).collect(),
        }
    }
}

/// Runs a connector until `ctx.shutdown` is cancelled or it fails.
pub async fn run(config: ConnectorConfig, ctx: ConnectorContext) -> Result<(), ConnectorError> {
    // Borrowed from the shared config: a connector builds its run-time state from the spec
    // and copies only what it keeps.
    match &*config.kind {
        #[cfg(feature = "simulator")]
        ConnectorKind::Simulator(spec) => simulator::run(spec, ctx).await,
        #[cfg(feature = "modbus")]
        ConnectorKind::Modbus(spec) => modbus::run(spec, ctx).await,
    }
}
