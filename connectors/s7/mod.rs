//! The Siemens S7 connector (`"protocol": "s7"`): reads and writes S7-300/400/1200/1500 PLCs
//! over S7comm on ISO-on-TCP (RFC 1006, port 102), with addresses in Siemens notation
//! (`DB1.DBD0`, `M10.1`, `IW64`, …). Reference: `connectors/s7/README.md`.
//!
//! Config → [`S7Config`] (host, rack/slot or TSAPs, PDU size and timing on the connector; the
//! interval on each device; address, type and writability on each channel). No Rust crate was
//! mature enough to build on (the ones published are young, blocking, or far larger than a
//! read/write client), so the protocol is written here from its public descriptions:
//! [`wire`] (frames), [`transport`] (one connection), [`address`] (the notation), [`codec`]
//! (the types), [`planner`] (multi-item reads within the negotiated PDU), [`poller`] (the
//! protocol half of the connector kit's device runtime) and [`cli`] (`osgate s7`).
//!
//! Devices are groups of channels of the one PLC; they share `max_connections` connections
//! (default 1, as a CPU has few connection resources), spread over them in config order. The
//! kit (`connectors/device`) owns the schedule, backoff, health and the write checks.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::device::{self, Line};
use super::{ConnectorContext, ConnectorError, Running};
use osgate_core::config::timing::TimingRules;
use osgate_core::config::{ConfigError, ConnectorSpec, Dur};

pub mod address;
pub mod cli;
pub mod codec;
pub mod planner;
pub mod poller;
pub mod transport;
pub mod wire;

use address::{Address, Area};
use codec::{DataType, MAX_STRING};

/// A parsed S7 connector.
pub type S7Config = ConnectorSpec<S7Settings, S7Device, S7Channel>;

/// Connector-level settings: the PLC and how to talk to it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S7Settings {
    /// The PLC's host name or IP address.
    pub host: String,
    /// ISO-on-TCP port (default 102).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Rack of the CPU (default 0).
    #[serde(default)]
    pub rack: u8,
    /// Slot of the CPU (default 1: S7-1200/1500; an S7-300 CPU sits in slot 2).
    #[serde(default = "default_slot")]
    pub slot: u8,
    /// Connection type the rack/slot TSAP names: `"pg"` (default), `"op"` or `"basic"`.
    #[serde(default)]
    pub connection_type: ConnectionType,
    /// Our TSAP, instead of the rack/slot default 0x0100: `"01.00"`, `"0x0100"` or 256.
    #[serde(default)]
    pub local_tsap: Option<Tsap>,
    /// The PLC's TSAP, instead of rack/slot (e.g. `"03.01"` for a CP or a LOGO!).
    #[serde(default)]
    pub remote_tsap: Option<Tsap>,
    /// PDU size to ask for (default 960; the PLC grants its own maximum, typically 240 or
    /// 480, and every request is planned within what it grants).
    #[serde(default = "default_pdu")]
    pub pdu_size: u16,
    /// Most items in one read request (default 20, what S7-300/400 CPUs accept).
    #[serde(default = "default_max_items")]
    pub max_items: u8,
    /// Most unused bytes the planner reads to merge two channels of one area into one item
    /// (default 16, the cost of a separate item).
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Extra attempts of a failed poll while the device is online (default 1).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Connections to the PLC that the devices share (default 1). A CPU has a few connection
    /// resources for PUT/GET clients; raise it to poll devices in parallel.
    #[serde(default = "default_max_connections")]
    pub max_connections: u16,
}

/// The connection type in the rack/slot TSAP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionType {
    /// Programming device (type 1), the usual choice.
    #[default]
    Pg,
    /// Operator panel (type 2).
    Op,
    /// S7 basic communication (type 3).
    Basic,
}

impl ConnectionType {
    fn code(self) -> u8 {
        match self {
            ConnectionType::Pg => 1,
            ConnectionType::Op => 2,
            ConnectionType::Basic => 3,
        }
    }
}

/// A TSAP: a number, or text `"HH.HH"` / `"0xHHHH"` as PLC tools show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tsap(pub u16);

impl std::str::FromStr for Tsap {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let parsed = if let Some((hi, lo)) = t.split_once('.') {
            u8::from_str_radix(hi, 16)
                .ok()
                .zip(u8::from_str_radix(lo, 16).ok())
                .map(|(h, l)| u16::from(h) << 8 | u16::from(l))
        } else if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            u16::from_str_radix(hex, 16).ok()
        } else {
            t.parse().ok()
        };
        parsed.map(Tsap).ok_or_else(|| {
            format!("invalid TSAP \"{s}\", expected \"HH.HH\", \"0xHHHH\" or a number")
        })
    }
}

impl<'de> Deserialize<'de> for Tsap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u16),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Tsap(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Device settings: none besides the shared `interval` ([`TIMING`]); a device is a group of
/// channels of the PLC with its own interval.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S7Device {}

/// Channel settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S7Channel {
    /// Siemens notation: `DB1.DBX0.3`, `DB1.DBW4`, `MW20`, `I0.0`, `QB1`, `C5`, `T3`, …
    pub address: String,
    /// Data type (default from the address: `bool` for a bit, `byte`/`word`/`dword` for
    /// B/W/D, `counter` for C, `s5time` for T).
    #[serde(default, rename = "type")]
    pub data_type: Option<DataType>,
    /// For `string`: its declared length in characters (default 254, as `STRING`).
    #[serde(default)]
    pub length: Option<u16>,
    /// Polls this channel at its own interval instead of the device's.
    #[serde(default)]
    pub interval: Option<Dur>,
    /// Whether the channel accepts writes (not inputs, counters or timers; default false).
    #[serde(default)]
    pub writable: bool,
}

impl S7Channel {
    /// The parsed address and type, or what is wrong with them (field, message).
    pub fn resolve(&self) -> Result<(Address, DataType, u16), (&'static str, String)> {
        let addr: Address = self
            .address
            .parse()
            .map_err(|e: address::AddressError| ("address", e.to_string()))?;
        let ty = self.data_type.unwrap_or_else(|| addr.default_type());
        let length = match (ty, self.length) {
            (DataType::String, Some(n)) if n == 0 || n > MAX_STRING => {
                return Err(("length", format!("must be 1..={MAX_STRING}, got {n}")))
            }
            (DataType::String, n) => n.unwrap_or(MAX_STRING),
            (_, Some(_)) => {
                return Err(("length", format!("only applies to type string, not {ty}")))
            }
            (_, None) => 0,
        };
        addr.check_type(ty, ty.size(length))
            .map_err(|e| ("type", e))?;
        if addr.area.is_numbered() && !matches!(ty.size(0), 2) {
            return Err(("type", format!("counters and timers are words, not {ty}")));
        }
        Ok((addr, ty, length))
    }
}

fn default_port() -> u16 {
    102
}
fn default_slot() -> u8 {
    1
}
fn default_pdu() -> u16 {
    960
}
fn default_max_items() -> u8 {
    20
}
fn default_max_gap() -> u16 {
    16
}
fn default_retries() -> u32 {
    1
}
fn default_max_connections() -> u16 {
    1
}

impl S7Settings {
    /// Where and how to connect.
    pub fn target(&self) -> transport::Target {
        let mut tsaps = wire::Tsaps::rack_slot(self.connection_type.code(), self.rack, self.slot);
        if let Some(t) = self.local_tsap {
            tsaps.local = t.0;
        }
        let describe = match self.remote_tsap {
            Some(t) => {
                tsaps.remote = t.0;
                format!("remote TSAP {:02X}.{:02X}", t.0 >> 8, t.0 & 0xFF)
            }
            None => format!("rack {}, slot {}", self.rack, self.slot),
        };
        let host = if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        transport::Target {
            addr: format!("{host}:{}", self.port),
            tsaps,
            describe,
            pdu: self.pdu_size,
        }
    }
}

/// The shared settings S7 takes: those of a poller ([`TimingRules::POLLER`]).
pub const TIMING: TimingRules = TimingRules::POLLER;

/// `"protocol": "s7"` in the protocol registry, with its tool `osgate s7 read|write`.
pub const PROTOCOL: crate::Protocol = crate::Protocol {
    name: "s7",
    parse: |p, entry| {
        p.with_timing(TIMING)
            .writes_into("the PLC's value")
            .spec(entry, validate, build)
    },
    tool: Some(cli::TOOL),
};

/// Semantic checks of an S7 connector; every problem is pushed with its path.
pub fn validate(spec: &S7Config, path: &str, errs: &mut Vec<ConfigError>) {
    let s = &spec.settings;
    let mut err = |field: String, msg: String| errs.push(ConfigError::new(field, msg));
    if s.host.trim().is_empty() {
        err(format!("{path}.host"), "must not be empty".into());
    }
    if s.port == 0 {
        err(format!("{path}.port"), "must be 1..=65535".into());
    }
    if s.rack > 7 {
        err(
            format!("{path}.rack"),
            format!("must be 0..=7, got {}", s.rack),
        );
    }
    if s.slot > 31 {
        err(
            format!("{path}.slot"),
            format!("must be 0..=31, got {}", s.slot),
        );
    }
    if !(240..=960).contains(&s.pdu_size) {
        err(
            format!("{path}.pdu_size"),
            format!("must be 240..=960, got {}", s.pdu_size),
        );
    }
    if s.max_items == 0 {
        err(format!("{path}.max_items"), "must be at least 1".into());
    }
    if s.max_connections == 0 {
        err(
            format!("{path}.max_connections"),
            "must be at least 1".into(),
        );
    }
    for (di, d) in spec.devices.iter().enumerate() {
        let dpath = format!("{path}.devices[{di}]");
        for (ci, c) in d.channels.iter().enumerate() {
            let cpath = format!("{dpath}.channels[{ci}]");
            let ch = &c.settings;
            let resolved = match ch.resolve() {
                Ok(r) => Some(r),
                Err((field, msg)) => {
                    err(format!("{cpath}.{field}"), msg);
                    None
                }
            };
            if let (true, Some((addr, _, _))) = (ch.writable, resolved) {
                let why = match addr.area {
                    Area::Inputs => Some("inputs are read-only: the PLC overwrites the process image of inputs every cycle"),
                    Area::Counters | Area::Timers => Some("counters and timers are read-only here"),
                    _ => None,
                };
                if let Some(why) = why {
                    err(format!("{cpath}.writable"), why.into());
                }
            }
            if let Some(iv) = ch.interval.filter(|iv| iv.0 < Duration::from_millis(1)) {
                err(
                    format!("{cpath}.interval"),
                    format!("must be at least 1ms, got {iv}"),
                );
            }
        }
    }
}

/// Returns the connector running: its devices on `max_connections` lines of the connector kit
/// (`connectors/device`), each line one connection to the PLC, devices dealt to them in turn
/// ([`device::run_connections`]).
pub fn build(spec: Arc<S7Config>, ctx: ConnectorContext) -> Result<Running, ConnectorError> {
    let connections = usize::from(spec.settings.max_connections);
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
                let plc = poller::Plc::new(d, &schedule);
                line.add(d, schedule, plc, poller::write_spec);
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

    fn parse(v: serde_json::Value) -> Result<Arc<S7Config>, Vec<String>> {
        crate::parse_test(v).map_err(|errs| {
            errs.into_iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect()
        })
    }

    fn with_channel(ch: serde_json::Value) -> serde_json::Value {
        json!({"name": "plc", "protocol": "s7", "host": "10.0.0.1",
               "devices": [{"name": "press", "channels": [ch]}]})
    }

    #[test]
    fn parses_the_issue_example() {
        let c = parse(
            json!({"name": "line3", "protocol": "s7", "host": "192.168.0.10",
            "port": 102, "rack": 0, "slot": 1,
            "devices": [{"name": "press-1", "interval": "500ms", "channels": [
                {"name": "temperature", "address": "DB1.DBD0", "type": "real", "unit": "°C"},
                {"name": "count", "address": "DB1.DBD8", "type": "dint"},
                {"name": "running", "address": "DB1.DBX6.3", "type": "bool"},
                {"name": "setpoint", "address": "DB1.DBW4", "type": "int", "writable": true}]}]}),
        )
        .unwrap();
        let t = c.settings.target();
        assert_eq!(t.addr, "192.168.0.10:102");
        assert_eq!(
            t.tsaps,
            wire::Tsaps {
                local: 0x0100,
                remote: 0x0101
            }
        );
        let (_, ty, _) = c.devices[0].channels[0].settings.resolve().unwrap();
        assert_eq!(ty, DataType::Real);
        let c = parse(json!({"name": "l", "protocol": "s7", "host": "h",
            "local_tsap": "10.00", "remote_tsap": "0x0301", "devices": []}))
        .unwrap();
        let t = c.settings.target();
        assert_eq!((t.tsaps.local, t.tsaps.remote), (0x1000, 0x0301));
        assert!(t.describe.contains("03.01"));
    }

    #[test]
    fn bad_channels_name_their_place() {
        let p = "connectors[0] \"plc\".devices[0].channels[0]";
        let cases = [
            (
                json!({"name": "a", "address": "DB1.DBW4", "type": "real"}),
                "type",
                "DB1.DBD4",
            ),
            (
                json!({"name": "a", "address": "DB1.DBX4"}),
                "address",
                "bit number",
            ),
            (
                json!({"name": "a", "address": "XY1"}),
                "address",
                "unknown area",
            ),
            (
                json!({"name": "a", "address": "DB1.DBD0", "type": "float"}),
                "type",
                "unknown type",
            ),
            (
                json!({"name": "a", "address": "DB1.DBB0", "type": "string", "length": 300}),
                "length",
                "1..=254",
            ),
            (
                json!({"name": "a", "address": "DB1.DBW0", "length": 3}),
                "length",
                "only applies",
            ),
            (
                json!({"name": "a", "address": "I0.0", "writable": true}),
                "writable",
                "inputs are read-only",
            ),
            (
                json!({"name": "a", "address": "C1", "writable": true}),
                "writable",
                "read-only",
            ),
            (
                json!({"name": "a", "address": "T1", "type": "real"}),
                "type",
                "16-bit",
            ),
            (
                json!({"name": "a", "address": "MW2", "writable": true, "expr": "x * 2"}),
                "expr",
                "writable",
            ),
        ];
        for (ch, field, want) in cases {
            let errs = parse(with_channel(ch.clone())).expect_err("invalid");
            assert!(
                errs.iter()
                    .any(|e| e.starts_with(&format!("{p}.{field}")) && e.contains(want)),
                "{ch} → {errs:?}"
            );
        }
    }

    #[test]
    fn bad_connector_settings() {
        let errs = parse(
            json!({"name": "plc", "protocol": "s7", "host": "", "rack": 9,
            "slot": 40, "pdu_size": 100, "max_connections": 0, "remote_tsap": "zz",
            "devices": []}),
        )
        .expect_err("invalid");
        let all = errs.join("\n");
        assert!(all.contains("remote_tsap"), "{all}");
        let errs = parse(
            json!({"name": "plc", "protocol": "s7", "host": " ", "rack": 9,
            "slot": 40, "pdu_size": 100, "max_connections": 0, "devices": []}),
        )
        .expect_err("invalid");
        let all = errs.join("\n");
        for want in [".host", ".rack", ".slot", ".pdu_size", ".max_connections"] {
            assert!(all.contains(want), "{want}: {all}");
        }
    }
}
