//! The Modbus connector (`"protocol": "modbus"`): polls Modbus TCP, RTU (serial) and RTU-over-TCP
//! devices and writes their writable channels.
//!
//! Config → [`ModbusConfig`] (transport and timing on the connector, unit id and limits on each
//! device, table/address/type/order on each channel; `scale`/`offset` and the other transform
//! keys are applied by the generic transform layer, not here). [`build`] checks the transport
//! and puts the devices on *lines* of the connector kit (`connectors/device`): a serial port is
//! one line whose devices are polled in turn by the one task that owns the port, and devices
//! behind one TCP address share `max_connections` connections (default 1). The kit owns the
//! schedule, requests, health and writes; a line's [`poller::Link`] plans each device's reads
//! with the [`planner`], sends them, and decodes answers with the [`codec`].

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::device::{self, Line};
use super::{ConnectorContext, ConnectorError, Running};
use osgate_core::config::timing::TimingRules;
use osgate_core::config::{ConfigError, ConnectorSpec, Dur};

pub mod cli;
pub mod codec;
pub mod planner;
pub mod poller;
pub mod tool;
pub mod transport;

use codec::{ByteOrder, DataType, Table, ValueFormat};

/// A parsed Modbus connector.
pub type ModbusConfig = ConnectorSpec<ModbusSettings, ModbusDevice, ModbusChannel>;

/// Connector-level settings: how to reach the devices and how patient to be.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusSettings {
    /// `{"tcp": "host:port"}`, `{"rtu": {"port": "/dev/ttyUSB0", "baud": 9600, …}}` or
    /// `{"rtu_over_tcp": "host:port"}`.
    pub transport: Transport,
    /// Extra attempts of a failed request while the device is online (default 1). An offline
    /// device gets one attempt per poll, so a dead device costs at most one timeout per poll.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Most unused registers the read planner may read to join two ranges of channels
    /// (default 8; bit tables allow 16× as many bits). Devices may override it.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// TCP connections to the address that the devices share, requests taken in turn on each
    /// (default 1: a Modbus TCP gateway often accepts only one or a few). Raise it for a
    /// server that answers several connections in parallel. A serial line is always one.
    #[serde(default = "default_max_connections")]
    pub max_connections: u16,
}

/// How the connector reaches its devices.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Transport {
    /// Modbus TCP to `host:port`; the devices share `max_connections` connections.
    Tcp(String),
    /// Modbus RTU on a serial line; one task owns the port and polls the devices in turn.
    Rtu(SerialSettings),
    /// RTU frames over a TCP connection to `host:port` (serial-to-Ethernet converters).
    RtuOverTcp(String),
}

impl Transport {
    /// A short description for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            Transport::Tcp(a) => format!("tcp {a}"),
            Transport::Rtu(s) => format!("rtu {}", s.port),
            Transport::RtuOverTcp(a) => format!("rtu-over-tcp {a}"),
        }
    }
}

/// Serial line settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSettings {
    /// The serial device, e.g. `/dev/ttyUSB0`.
    pub port: String,
    /// Baud rate (default 9600).
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// `"none"` (default), `"even"` or `"odd"`.
    #[serde(default)]
    pub parity: Parity,
    /// 5, 6, 7 or 8 (default 8).
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// 1 (default) or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
}

/// Serial parity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit.
    #[default]
    None,
    /// Even parity (the Modbus RTU default of the spec).
    Even,
    /// Odd parity.
    Odd,
}

/// Device settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDevice {
    /// The Modbus unit id (slave address; default 1; 1–247 on serial lines).
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// Most registers the device accepts in one read (default and maximum 125).
    #[serde(default)]
    pub max_registers: Option<u16>,
    /// Most bits the device accepts in one read (default and maximum 2000).
    #[serde(default)]
    pub max_bits: Option<u16>,
    /// Overrides the connector's `max_gap` for this device (0: never read unused registers,
    /// for devices that reject reads of unmapped addresses).
    #[serde(default)]
    pub max_gap: Option<u16>,
}

/// Channel settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusChannel {
    /// `"coil"`, `"discrete"`, `"holding"` or `"input"`.
    pub table: Table,
    /// First register (or bit) of the value, 0-based as on the wire.
    pub address: u16,
    /// Data type (default `bool` in bit tables, `u16` in register tables).
    #[serde(default, rename = "type")]
    pub data_type: Option<DataType>,
    /// Byte/word order of multi-byte values (default `ABCD`, big-endian).
    #[serde(default)]
    pub order: ByteOrder,
    /// For `bool` in a register table: the bit, 0 (least significant) to 15.
    #[serde(default)]
    pub bit: Option<u8>,
    /// For `string`: its length in registers (two ASCII characters each).
    #[serde(default)]
    pub length: Option<u16>,
    /// Polls this channel at its own interval instead of the device's.
    #[serde(default)]
    pub interval: Option<Dur>,
    /// Whether the channel accepts writes (coils and holding registers only; default false).
    #[serde(default)]
    pub writable: bool,
}

impl ModbusChannel {
    /// The channel's data type, with the table's default applied.
    pub fn data_type(&self) -> DataType {
        self.data_type.unwrap_or(if self.table.is_bits() {
            DataType::Bool
        } else {
            DataType::U16
        })
    }

    /// How the channel's value is laid out.
    pub fn format(&self) -> ValueFormat {
        ValueFormat {
            data_type: self.data_type(),
            order: self.order,
            bit: self.bit,
            length: self.length.unwrap_or(0),
        }
    }

    /// Registers or bits the channel spans.
    pub fn count(&self) -> u16 {
        self.format().count(self.table)
    }
}

fn default_retries() -> u32 {
    1
}
fn default_max_gap() -> u16 {
    planner::Limits::default().max_gap
}
fn default_max_connections() -> u16 {
    1
}
fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_unit_id() -> u8 {
    1
}

/// Checks a `host:port` string.
fn check_host_port(s: &str) -> Result<(), String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(format!("expected \"host:port\", got \"{s}\"")),
    }
}

/// The shared settings Modbus takes: those of a poller ([`TimingRules::POLLER`]).
pub const TIMING: TimingRules = TimingRules::POLLER;

/// `"protocol": "modbus"` in the protocol registry, with `osgate modbus`.
pub const PROTOCOL: crate::Protocol = crate::Protocol {
    name: "modbus",
    parse: |p, entry| {
        p.with_timing(TIMING)
            .writes_into("a register value")
            .spec(entry, validate, build)
    },
    tool: Some(cli::TOOL),
};

/// Semantic checks of a Modbus connector; every problem is pushed with its path.
pub fn validate(spec: &ModbusConfig, path: &str, errs: &mut Vec<ConfigError>) {
    let s = &spec.settings;
    let tpath = format!("{path}.transport");
    let serial = match &s.transport {
        Transport::Tcp(a) | Transport::RtuOverTcp(a) => {
            if let Err(e) = check_host_port(a) {
                errs.push(ConfigError::new(tpath, e));
            }
            false
        }
        Transport::Rtu(line) => {
            if line.port.is_empty() {
                errs.push(ConfigError::new(
                    format!("{tpath}.rtu.port"),
                    "must not be empty",
                ));
            }
            if line.baud == 0 {
                errs.push(ConfigError::new(format!("{tpath}.rtu.baud"), "must be > 0"));
            }
            if !(5..=8).contains(&line.data_bits) {
                errs.push(ConfigError::new(
                    format!("{tpath}.rtu.data_bits"),
                    format!("must be 5, 6, 7 or 8, got {}", line.data_bits),
                ));
            }
            if !(1..=2).contains(&line.stop_bits) {
                errs.push(ConfigError::new(
                    format!("{tpath}.rtu.stop_bits"),
                    format!("must be 1 or 2, got {}", line.stop_bits),
                ));
            }
            true
        }
    };
    if s.max_connections == 0 {
        errs.push(ConfigError::new(
            format!("{path}.max_connections"),
            "must be at least 1",
        ));
    }
    for (di, d) in spec.devices.iter().enumerate() {
        let dpath = format!("{path}.devices[{di}]");
        let ds = &d.settings;
        if serial && !(1..=247).contains(&ds.unit_id) {
            errs.push(ConfigError::new(
                format!("{dpath}.unit_id"),
                format!("must be 1..=247 on a serial line, got {}", ds.unit_id),
            ));
        }
        if let Some(m) = ds.max_registers {
            if !(1..=codec::MAX_REGISTERS_PER_READ).contains(&m) {
                errs.push(ConfigError::new(
                    format!("{dpath}.max_registers"),
                    format!("must be 1..=125, got {m}"),
                ));
            }
        }
        if let Some(m) = ds.max_bits {
            if !(1..=codec::MAX_BITS_PER_READ).contains(&m) {
                errs.push(ConfigError::new(
                    format!("{dpath}.max_bits"),
                    format!("must be 1..=2000, got {m}"),
                ));
            }
        }
        let limits = device_limits(s, ds);
        for (ci, c) in d.channels.iter().enumerate() {
            let cpath = format!("{dpath}.channels[{ci}]");
            let ch = &c.settings;
            for (field, msg) in ch.format().check(ch.table, ch.address) {
                errs.push(ConfigError::new(format!("{cpath}.{field}"), msg));
            }
            if ch.length.is_some() && ch.data_type() != DataType::String {
                errs.push(ConfigError::new(
                    format!("{cpath}.length"),
                    format!("only applies to type string, not \"{}\"", ch.data_type()),
                ));
            }
            let max = limits.max_items(ch.table);
            if ch.count() > max {
                errs.push(ConfigError::new(
                    format!("{cpath}.length"),
                    format!(
                        "the value spans {} registers, more than the device reads at once ({max})",
                        ch.count()
                    ),
                ));
            }
            if ch.writable && !ch.table.is_writable() {
                errs.push(ConfigError::new(
                    format!("{cpath}.writable"),
                    format!("table \"{}\" is read-only", ch.table),
                ));
            }
            if let Some(iv) = ch.interval {
                if iv.0 < Duration::from_millis(1) {
                    errs.push(ConfigError::new(
                        format!("{cpath}.interval"),
                        format!("must be at least 1ms, got {iv}"),
                    ));
                }
            }
        }
    }
}

/// The planner limits of a device.
pub fn device_limits(s: &ModbusSettings, d: &ModbusDevice) -> planner::Limits {
    planner::Limits {
        max_registers: d.max_registers.unwrap_or(codec::MAX_REGISTERS_PER_READ),
        max_bits: d.max_bits.unwrap_or(codec::MAX_BITS_PER_READ),
        max_gap: d.max_gap.unwrap_or(s.max_gap),
    }
}

/// Checks what can be checked before the connector runs — a serial port must exist — and
/// returns it running: its devices on lines of the connector kit (`connectors/device`). A serial
/// port is one line whose devices are polled in turn by the one task that owns it; devices
/// behind one TCP address share `max_connections` connections (default 1: Modbus gateways often
/// accept only one or a few), devices dealt to them in turn ([`device::run_connections`]).
pub fn build(spec: Arc<ModbusConfig>, ctx: ConnectorContext) -> Result<Running, ConnectorError> {
    let connections = match &spec.settings.transport {
        Transport::Rtu(line) => {
            ConnectorError::check_serial_port(&line.port)?;
            1
        }
        Transport::Tcp(_) | Transport::RtuOverTcp(_) => usize::from(spec.settings.max_connections),
    };
    let settings = Arc::new(spec.settings.clone());
    let timeout = spec.timing.timeout_or(Duration::from_secs(1));
    let backoff = spec.timing.retry();
    Ok(Box::pin(async move {
        device::run_connections(
            &ctx,
            spec.devices.len(),
            connections,
            || Line::new(&ctx, poller::Link::new(settings.clone(), timeout)).with_backoff(backoff),
            |line, i| {
                let d = &spec.devices[i];
                let schedule = poller::schedule(d);
                let unit = poller::Unit::new(&settings, d, &schedule);
                line.add(d, schedule, unit, poller::write_spec);
            },
        )
        .await;
        Ok(())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<Arc<ModbusConfig>, Vec<ConfigError>> {
        crate::parse_test(v)
    }

    fn with_channel(ch: serde_json::Value) -> serde_json::Value {
        json!({"name": "plc", "protocol": "modbus", "transport": {"tcp": "127.0.0.1:502"},
               "devices": [{"name": "m1", "channels": [ch]}]})
    }

    fn error_paths(v: serde_json::Value) -> Vec<String> {
        parse(v)
            .expect_err("must be invalid")
            .into_iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect()
    }

    #[test]
    fn parses_every_transport() {
        let c = parse(json!({"name": "plc", "protocol": "modbus",
            "transport": {"rtu": {"port": "/dev/ttyUSB0", "baud": 19200, "parity": "even",
                                  "data_bits": 8, "stop_bits": 1}},
            "timeout": "250ms",
            "devices": [{"name": "m1", "unit_id": 3, "interval": "500ms", "max_registers": 60,
                "channels": [{"name": "v", "table": "input", "address": 0, "type": "f32",
                              "order": "CDAB", "scale": 0.1, "unit": "V"},
                             {"name": "run", "table": "coil", "address": 7, "writable": true}]}]}))
        .unwrap();
        let Transport::Rtu(line) = &c.settings.transport else {
            panic!("not rtu")
        };
        assert_eq!((line.baud, line.parity), (19200, Parity::Even));
        assert_eq!(c.timing.timeout, Some(Dur::from_millis(250)));
        assert_eq!(c.devices[0].interval, Dur::from_millis(500));
        let d = &c.devices[0];
        assert_eq!(d.settings.unit_id, 3);
        assert_eq!(d.channels[0].settings.order, ByteOrder::CDAB);
        assert_eq!(d.channels[0].transform().scale, Some(0.1));
        assert_eq!(d.channels[1].settings.data_type(), DataType::Bool);
        let c = parse(json!({"name": "plc", "protocol": "modbus",
            "transport": {"rtu_over_tcp": "gw:4001"}, "devices": []}))
        .unwrap();
        assert_eq!(
            c.settings.transport,
            Transport::RtuOverTcp("gw:4001".into())
        );
    }

    #[test]
    fn bad_channels_name_their_place() {
        let p = "connectors[0] \"plc\".devices[0].channels[0]";
        let cases = [
            (
                json!({"name": "a", "table": "holding", "address": 65534, "type": "u64"}),
                "address",
            ),
            (
                json!({"name": "a", "table": "holding", "address": 70000}),
                "address",
            ),
            (
                json!({"name": "a", "table": "holding", "address": 1, "type": "bool", "bit": 16}),
                "bit",
            ),
            (
                json!({"name": "a", "table": "holding", "address": 1, "type": "string", "length": 0}),
                "length",
            ),
            (
                json!({"name": "a", "table": "holding", "address": 1, "type": "string"}),
                "length",
            ),
            (
                json!({"name": "a", "table": "holdings", "address": 1}),
                "table",
            ),
            (
                json!({"name": "a", "table": "holding", "address": 1, "type": "f23"}),
                "type",
            ),
            (
                json!({"name": "a", "table": "holding", "address": 1, "order": "ABDC"}),
                "order",
            ),
            (
                json!({"name": "a", "table": "input", "address": 1, "writable": true}),
                "writable",
            ),
            (
                json!({"name": "a", "table": "coil", "address": 1, "type": "u16"}),
                "type",
            ),
            (
                json!({"name": "a", "table": "holding", "address": 1, "writable": true,
                       "expr": "x * 2"}),
                "expr",
            ),
            (
                json!({"name": "a", "table": "holding", "address": 1, "writable": true,
                       "rate": true}),
                "rate",
            ),
        ];
        for (ch, field) in cases {
            let errs = error_paths(with_channel(ch.clone()));
            assert!(
                errs.iter().any(|e| e.starts_with(&format!("{p}.{field}"))),
                "{ch} → {errs:?}"
            );
        }
    }

    #[test]
    fn duplicate_channel_names_are_rejected() {
        let v = json!({"name": "plc", "protocol": "modbus", "transport": {"tcp": "h:502"},
            "devices": [{"name": "m1", "channels": [
                {"name": "a", "table": "holding", "address": 1},
                {"name": "a", "table": "holding", "address": 2}]}]});
        let errs = error_paths(v);
        assert!(errs
            .iter()
            .any(|e| e.contains("channels[1].name") && e.contains("duplicate")));
    }

    #[test]
    fn bad_transport_and_device_settings() {
        let v = json!({"name": "plc", "protocol": "modbus",
            "transport": {"rtu": {"port": "/dev/x", "stop_bits": 3}},
            "devices": [{"name": "m1", "unit_id": 0, "max_registers": 200, "channels": []}]});
        let errs = error_paths(v);
        for want in [
            "transport.rtu.stop_bits",
            "devices[0].unit_id",
            "devices[0].max_registers",
        ] {
            assert!(errs.iter().any(|e| e.contains(want)), "{want}: {errs:?}");
        }
        let errs = error_paths(json!({"name": "plc", "protocol": "modbus",
            "transport": {"tcp": "nohostport"}, "devices": []}));
        assert!(errs[0].contains("transport"), "{errs:?}");
        let errs = error_paths(json!({"name": "plc", "protocol": "modbus",
            "transport": {"udp": "h:1"}, "devices": []}));
        assert!(errs[0].contains("transport"), "{errs:?}");
    }

    #[test]
    fn a_value_larger_than_the_device_limit_is_rejected() {
        let v = json!({"name": "plc", "protocol": "modbus", "transport": {"tcp": "h:502"},
            "devices": [{"name": "m1", "max_registers": 2, "channels": [
                {"name": "a", "table": "holding", "address": 1, "type": "f64"}]}]});
        let errs = error_paths(v);
        assert!(
            errs.iter()
                .any(|e| e.contains("more than the device reads")),
            "{errs:?}"
        );
    }
}
