//! Connectors: the connector kit ([`device`]) and one folder per protocol, each its config
//! types and `build`.
//!
//! A protocol is its folder, its cargo feature, and **one line** in the list below
//! (`protocols!`): the line declares the module (under its feature) and puts its
//! [`Protocol`] in [`PROTOCOLS`], which yields everything the gateway needs of it: its name in
//! `"protocol"` and in errors, its config parsing ([`ConnectorConfig::from_raw`]), its build
//! ([`ConnectorConfig::build`]), and its optional commissioning tool (`osgate <name> …`,
//! [`Tool`]). Nothing above this crate matches on protocols.
//!
//! [`ConnectorConfig`] holds what every connector has (name, protocol, enabled flag, device
//! names) and the parsed protocol config, type-erased in [`ConnectorKind`]. Building checks
//! what can be checked before the connector runs (addresses, serial ports, files) and returns
//! the running connector or a typed [`ConnectorError`]; the service builds every changed
//! connector before a reload applies anything. Connectors import only the core crate, never
//! the service, the management layer or each other.
//!
//! Adding a connector: see CONTRIBUTING.md ("Adding a connector"), which shows the whole diff
//! for a toy protocol.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use osgate_core::config::spec::{connector_path, parse_spec};
use osgate_core::config::{
    interpolate, join, ConfigError, ConnectorSpec, DeviceSpec, Entry, Rules, TimingRules,
};
use osgate_core::control::ControlRegistry;
use osgate_core::pipeline::{DeviceOutput, ReadingSender};
use osgate_core::status::ConnectorHealth;

/// The protocols of this build, one line each: `"feature" => module`. A protocol's module
/// defines `pub const PROTOCOL: Protocol`.
macro_rules! protocols {
    ($($feature:literal => $module:ident),* $(,)?) => {
        $(
            #[cfg(feature = $feature)]
            pub mod $module;
        )*

        /// Every protocol compiled into this build, in the order errors list them.
        pub static PROTOCOLS: &[&Protocol] = &[$(
            #[cfg(feature = $feature)]
            &$module::PROTOCOL,
        )*];

        #[cfg(not(any($(feature = $feature),*)))]
        compile_error!(concat!(
            "osgate needs at least one connector: enable one of the features ",
            $($feature, " ",)*
        ));
    };
}

protocols! {
    "simulator" => simulator,
    "modbus" => modbus,
    "mqtt" => mqtt,
    "mbus" => mbus,
    "http" => http,
    "zwave" => zwave,
    "opcua" => opcua,
    "s7" => s7,
}

pub mod device;
pub mod tool;

/// What a protocol gives the gateway: its entry in [`PROTOCOLS`].
#[derive(Debug)]
pub struct Protocol {
    /// Its name in `"protocol"`, in errors and for its tool (`osgate <name> …`).
    pub name: &'static str,
    /// Parses one `connectors[i]` entry of this protocol (see [`Parse::spec`]).
    pub parse: fn(Parse<'_>, Entry<'_>) -> Option<ConnectorConfig>,
    /// Its commissioning tool, if it has one.
    pub tool: Option<Tool>,
}

/// A protocol's command-line tool, `osgate <protocol> …` (read a register, scan a bus).
#[derive(Debug)]
pub struct Tool {
    /// One line of help.
    pub about: &'static str,
    /// Adds the tool's arguments to its (sub)command: `<T as clap::Args>::augment_args`.
    pub args: fn(clap::Command) -> clap::Command,
    /// Runs the tool with its parsed arguments and returns the process exit code.
    pub run: fn(&clap::ArgMatches) -> ExitCode,
    /// The tool as management methods (`modbus.read`), sharing its code ([`tool`]).
    pub methods: &'static [tool::ToolMethod],
}

impl Tool {
    /// Reports usage errors on stderr: exit code 2.
    pub fn usage_error(errs: &[String]) -> ExitCode {
        for e in errs {
            eprintln!("error: {e}");
        }
        ExitCode::from(2)
    }

    /// Reports a failed device operation on stderr: exit code 1.
    pub fn failed(e: &dyn fmt::Display) -> ExitCode {
        eprintln!("error: {e}");
        ExitCode::from(1)
    }

    /// Parses `matches` as `T` and runs `main`; a parse error exits as clap does.
    pub fn run_with<T: clap::FromArgMatches>(
        matches: &clap::ArgMatches,
        main: fn(T) -> ExitCode,
    ) -> ExitCode {
        match T::from_arg_matches(matches) {
            Ok(args) => main(args),
            Err(e) => e.exit(),
        }
    }
}

/// The protocol called `name`, if this build has it.
pub fn protocol(name: &str) -> Option<&'static Protocol> {
    PROTOCOLS.iter().copied().find(|p| p.name == name)
}

/// The names of [`PROTOCOLS`], for error messages.
pub fn protocol_names() -> String {
    PROTOCOLS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

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
    /// The gateway's listeners: an HTTP ingest lists itself here (`/metrics`, bound address).
    pub listeners: osgate_core::net::listen::Listeners,
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

/// A protocol's parsed config, whatever the protocol: what the service, the supervisor and the
/// reload diff share. Two are equal when they are of one protocol and their configs are equal.
#[derive(Clone)]
pub struct ConnectorKind(Arc<dyn Spec>);

impl ConnectorKind {
    /// Wraps a parsed config with the function that builds it.
    pub fn new<T>(spec: Arc<T>, build: Build<T>) -> Self
    where
        T: fmt::Debug + PartialEq + Send + Sync + 'static,
    {
        ConnectorKind(Arc::new(Parsed { spec, build }))
    }

    /// The parsed config, when it is a `T` (a protocol's own tools look at their connectors).
    pub fn spec<T: 'static>(&self) -> Option<&Arc<T>> {
        self.0.as_any().downcast_ref::<Parsed<T>>().map(|p| &p.spec)
    }
}

impl fmt::Debug for ConnectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for ConnectorKind {
    fn eq(&self, other: &Self) -> bool {
        self.0.same(other.0.as_any())
    }
}

/// How a protocol builds its running connector from its parsed config.
pub type Build<T> = fn(Arc<T>, ConnectorContext) -> Result<Running, ConnectorError>;

/// A parsed config and its build function.
struct Parsed<T> {
    spec: Arc<T>,
    build: Build<T>,
}

/// [`Parsed`] with its type erased.
trait Spec: Send + Sync + fmt::Debug {
    fn build(&self, ctx: ConnectorContext) -> Result<Running, ConnectorError>;
    fn same(&self, other: &dyn Any) -> bool;
    fn as_any(&self) -> &dyn Any;
}

impl<T: fmt::Debug + PartialEq + Send + Sync + 'static> Spec for Parsed<T> {
    fn build(&self, ctx: ConnectorContext) -> Result<Running, ConnectorError> {
        (self.build)(self.spec.clone(), ctx)
    }
    fn same(&self, other: &dyn Any) -> bool {
        other
            .downcast_ref::<Parsed<T>>()
            .is_some_and(|o| o.spec == self.spec)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl<T: fmt::Debug> fmt::Debug for Parsed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.spec.fmt(f)
    }
}

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
                    format!("missing field, expected one of: {}", protocol_names()),
                ));
                return None;
            }
        };
        let Some(proto) = self::protocol(&protocol) else {
            errs.push(ConfigError::new(
                format!("{path}.protocol"),
                format!(
                    "unknown protocol \"{protocol}\", expected one of: {} (protocols left out of this build by cargo features are not listed)",
                    protocol_names()
                ),
            ));
            return None;
        };
        (proto.parse)(
            Parse {
                protocol: proto.name,
                path: &path,
                env,
                rules: Rules::NONE,
                errs,
            },
            entry,
        )
    }

    /// Checks what can be checked before the connector runs (addresses, serial ports, files)
    /// and returns it ready to run with `ctx`.
    pub fn build(&self, ctx: ConnectorContext) -> Result<Running, ConnectorError> {
        self.kind.0.build(ctx)
    }
}

/// Parses `v` as the gateway parses `connectors[0]` (shared settings, the protocol's checks):
/// the protocol's spec, or every problem. For the protocols' unit tests.
#[cfg(test)]
pub(crate) fn parse_test<T: 'static>(v: Value) -> Result<Arc<T>, Vec<ConfigError>> {
    let mut errs = Vec::new();
    let raw = serde_json::value::to_raw_value(&v).expect("JSON");
    let c = ConnectorConfig::from_raw(0, &raw, &|_| None, &mut errs);
    match c.as_ref().and_then(|c| c.kind.spec::<T>()) {
        Some(spec) if errs.is_empty() => Ok(spec.clone()),
        _ => Err(errs),
    }
}

/// What parsing one connector entry needs, whatever its protocol.
pub struct Parse<'a> {
    /// The protocol's name.
    pub protocol: &'static str,
    /// The entry's path in errors (`connectors[1] "plc"`).
    pub path: &'a str,
    /// The environment for `${VAR}`.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// What the kit parses for the protocol beyond the common keys: the shared settings
    /// ([`Parse::with_timing`]), and what its writes become ([`Parse::writes_into`]).
    pub rules: Rules,
    /// Where problems go, each with its path.
    pub errs: &'a mut Vec<ConfigError>,
}

impl Parse<'_> {
    /// Takes the shared settings `rules` names, with the protocol's defaults and least values
    /// ([`osgate_core::config::timing`]): parsed, defaulted and checked by the kit, found in
    /// the spec's `timing` and each device's `interval`.
    pub fn with_timing(mut self, rules: TimingRules) -> Self {
        self.rules.timing = rules;
        self
    }

    /// Names what a written value becomes on the device (`"a register value"`) in the error of
    /// a writable channel whose transform a write cannot reverse (`expr`, `rate`), which the
    /// kit refuses for every protocol.
    pub fn writes_into(mut self, what: &'static str) -> Self {
        self.rules.writes_into = Some(what);
        self
    }

    /// Parses the entry into a protocol's spec (connector settings `S`, devices `D`, channels
    /// `C`), runs its semantic checks, and pairs it with its build function.
    pub fn spec<S, D, C>(
        self,
        entry: Entry<'_>,
        validate: fn(&ConnectorSpec<S, D, C>, &str, &mut Vec<ConfigError>),
        build: Build<ConnectorSpec<S, D, C>>,
    ) -> Option<ConnectorConfig>
    where
        S: DeserializeOwned + fmt::Debug + PartialEq + Send + Sync + 'static,
        D: DeserializeOwned + fmt::Debug + PartialEq + Send + Sync + 'static,
        C: DeserializeOwned + fmt::Debug + PartialEq + Send + Sync + 'static,
    {
        let spec = parse_spec(entry, self.path, self.env, &self.rules, self.errs)?;
        validate(&spec, self.path, self.errs);
        Some(ConnectorConfig {
            name: spec.name.clone(),
            protocol: self.protocol,
            enabled: spec.enabled,
            devices: spec.devices.iter().map(|d| d.name.clone()).collect(),
            kind: ConnectorKind::new(Arc::new(spec), build),
        })
    }
}
