//! The M-Bus connector (`"protocol": "mbus"`): reads wired M-Bus meters (EN 13757-2/-3) over a
//! serial port (8E1) or a TCP level converter.
//!
//! Config → [`MbusConfig`] (the bus and its timing on the connector, a primary or secondary
//! address on each device, on each channel what record it takes). [`build`] checks the bus and
//! puts every meter on one line of the connector kit: the bus is one task that reads its meters
//! in turn. The [`poller`] reads a meter with the [`link`] layer (select or SND_NKE, REQ_UD2
//! per telegram with the FCB toggled), decodes the telegrams with [`frame`] and [`record`], and
//! maps records to channels by what they are (quantity, storage, tariff, sub-unit, function),
//! by derived name, or by index; a device without channels publishes every record under its
//! derived name. [`cli`] is `osgate mbus decode|scan|read`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::device::{self, Line};
use super::{ConnectorContext, ConnectorError, Running};
use osgate_core::config::timing::{BackoffRule, IntervalRule, TimeoutRule, TimingRules};
use osgate_core::config::{ConfigError, ConnectorSpec, Dur};

pub mod cli;
pub mod datafield;
pub mod frame;
pub mod header;
pub mod json;
pub mod link;
pub mod lvar;
pub mod poller;
pub mod record;
pub mod tcp;
pub mod vif;

/// A parsed M-Bus connector.
pub type MbusConfig = ConnectorSpec<MbusSettings, MbusDevice, MbusChannel>;

/// Connector settings: the bus and how patient to be with its meters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MbusSettings {
    /// `{"serial": {"port": "/dev/ttyUSB0", "baud": 2400}}`, or a level converter in
    /// transparent mode: `{"tcp": "host:port"}` (its bus at 2400 baud) or `{"tcp": {"address":
    /// "host:port", "baud": 9600}}`.
    pub transport: Transport,
    /// Extra REQ_UD2 attempts (same FCB, so the meter repeats its telegram) after no or a
    /// garbled answer (default 1).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Most telegrams read from one meter per poll (default 16).
    #[serde(default = "default_max_telegrams")]
    pub max_telegrams: u16,
}

/// How the connector reaches the bus.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Transport {
    /// A serial port (8 data bits, even parity, 1 stop bit).
    Serial(SerialSettings),
    /// A TCP level converter: `"host:port"` or `{"address": "host:port", "baud": 9600}`; the
    /// baud rate of the bus behind it (default 2400) sets the timing.
    Tcp(tcp::TcpSettings),
}

/// A serial M-Bus line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSettings {
    /// The serial device, e.g. `/dev/ttyUSB0`.
    pub port: String,
    /// Baud rate: 300, 600, 1200, 2400 (default), 4800, 9600, 19200 or 38400.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// `"even"` (default, as EN 13757-2 wants) or `"none"` (for converters that add the
    /// parity bit themselves).
    #[serde(default)]
    pub parity: Parity,
}

/// Serial parity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// Even parity (8E1).
    #[default]
    Even,
    /// No parity (8N1).
    None,
}

/// Device settings: which meter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MbusDevice {
    /// Primary address 0–250.
    #[serde(default)]
    pub address: Option<u8>,
    /// Secondary address: 8 id digits (`12345678`), or 16 hex digits with manufacturer,
    /// version and medium (`12345678C5140E07`). Use it on busses where primary addresses are
    /// not unique.
    #[serde(default)]
    pub secondary: Option<String>,
}

/// Channel settings: which record. Give one of `quantity` (with `storage`, `tariff`,
/// `subunit`, `function` where not the defaults), `record` or `index`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MbusChannel {
    /// What the record measures: `energy`, `volume`, `power`, `volume flow`,
    /// `flow temperature`, `return temperature`, `temperature difference`, `date and time`,
    /// `fabrication number`, `voltage`, `current`… (as `osgate mbus decode` prints it).
    #[serde(default)]
    pub quantity: Option<String>,
    /// With `quantity`: the storage number (default 0, the current value).
    #[serde(default)]
    pub storage: u64,
    /// With `quantity`: the tariff (default 0).
    #[serde(default)]
    pub tariff: u32,
    /// With `quantity`: the sub-unit (default 0).
    #[serde(default)]
    pub subunit: u32,
    /// With `quantity`: `instantaneous` (default), `maximum`, `minimum` or `error`.
    #[serde(default)]
    pub function: Option<String>,
    /// The record's derived name as `osgate mbus decode` prints it (`energy_wh`, `volume_m3_s1`).
    #[serde(default)]
    pub record: Option<String>,
    /// The record's position in the meter's answer (0-based, counting across telegrams).
    #[serde(default)]
    pub index: Option<u16>,
}

fn default_retries() -> u32 {
    1
}
fn default_max_telegrams() -> u16 {
    16
}
pub(crate) fn default_baud() -> u32 {
    2400
}

/// Baud rates of EN 13757-2.
pub const BAUDS: &[u32] = &[300, 600, 1200, 2400, 4800, 9600, 19200, 38400];

impl MbusSettings {
    /// The endpoint and timing of the bus; `timeout` is the connector's (default: from the
    /// baud rate, [`default_timeout`]).
    pub fn link(&self, timeout: Option<Dur>) -> (link::Endpoint, link::Timing) {
        let (endpoint, baud) = match &self.transport {
            Transport::Serial(s) => (
                link::Endpoint::Serial {
                    port: s.port.clone(),
                    baud: s.baud,
                    even_parity: s.parity == Parity::Even,
                },
                s.baud,
            ),
            Transport::Tcp(t) => (link::Endpoint::Tcp(t.address.clone()), t.baud),
        };
        let timeout = timeout.map_or_else(|| default_timeout(baud), |d| d.0);
        let timing = link::Timing {
            timeout,
            retries: self.retries,
            baud,
        };
        (endpoint, timing)
    }
}

/// 330 bit times plus 50 ms (EN 13757-2), at least 500 ms.
pub fn default_timeout(baud: u32) -> Duration {
    let t =
        Duration::from_micros(330 * 1_000_000 / u64::from(baud.max(1))) + Duration::from_millis(50);
    t.max(Duration::from_millis(500))
}

/// The shared settings M-Bus takes: `timeout` (the time for the first byte of an answer;
/// default: 330 bit times plus 50 ms at the bus's baud rate, at least 500 ms), `backoff` (`5s`)
/// and `backoff_max` (`5m`), each meter's `interval` (`60s`, at least `100ms`).
pub const TIMING: TimingRules = TimingRules {
    timeout: Some(TimeoutRule {
        default: None,
        min: Dur::from_secs(0),
    }),
    backoff: Some(BackoffRule {
        backoff: Dur::from_secs(5),
        backoff_max: Dur::from_secs(300),
    }),
    interval: Some(IntervalRule {
        default: Dur::from_secs(60),
        min: Dur::from_millis(100),
    }),
};

/// `"protocol": "mbus"` in the protocol registry, with `osgate mbus`.
pub const PROTOCOL: crate::Protocol = crate::Protocol {
    name: "mbus",
    parse: |p, entry| p.with_timing(TIMING).spec(entry, validate, build),
    tool: Some(cli::TOOL),
};


/// Semantic checks.
pub fn validate(spec: &MbusConfig, path: &str, errs: &mut Vec<ConfigError>) {
    let s = &spec.settings;
    let baud = |field: &str, baud: u32, errs: &mut Vec<ConfigError>| {
        if !BAUDS.contains(&baud) {
            errs.push(ConfigError::new(
                format!("{path}.transport.{field}.baud"),
                format!("unsupported baud rate {baud}, expected one of 300, 600, 1200, 2400, 4800, 9600, 19200, 38400"),
            ));
        }
    };
    match &s.transport {
        Transport::Serial(line) => {
            baud("serial", line.baud, errs);
            if line.port.is_empty() {
                errs.push(ConfigError::new(
                    format!("{path}.transport.serial.port"),
                    "must not be empty",
                ));
            }
        }
        Transport::Tcp(t) => {
            if let Err(e) = check_host_port(&t.address) {
                errs.push(ConfigError::new(format!("{path}.transport.tcp"), e));
            }
            baud("tcp", t.baud, errs);
        }
    }
    if s.max_telegrams == 0 {
        errs.push(ConfigError::new(
            format!("{path}.max_telegrams"),
            "must be at least 1",
        ));
    }
    for (i, d) in spec.devices.iter().enumerate() {
        let dp = format!("{path}.devices[{i}]");
        match (&d.settings.address, &d.settings.secondary) {
            (Some(_), Some(_)) | (None, None) => errs.push(ConfigError::new(
                dp.clone(),
                "give exactly one of \"address\" (primary, 0-250) and \"secondary\"",
            )),
            (Some(a), None) if *a > 250 => errs.push(ConfigError::new(
                format!("{dp}.address"),
                format!("primary address {a} out of range 0-250"),
            )),
            (None, Some(sec)) => {
                if let Err(e) = link::Secondary::parse(sec) {
                    errs.push(ConfigError::new(format!("{dp}.secondary"), e));
                }
            }
            _ => {}
        }
        for (j, c) in d.channels.iter().enumerate() {
            let cp = format!("{dp}.channels[{j}]");
            let c = &c.settings;
            let given = [c.quantity.is_some(), c.record.is_some(), c.index.is_some()];
            if given.iter().filter(|g| **g).count() != 1 {
                errs.push(ConfigError::new(
                    cp.clone(),
                    "give exactly one of \"quantity\", \"record\" and \"index\"",
                ));
            }
            if let Some(f) = &c.function {
                if record::Function::parse(f).is_none() {
                    errs.push(ConfigError::new(
                        format!("{cp}.function"),
                        format!("unknown function \"{f}\", expected one of instantaneous, maximum, minimum, error"),
                    ));
                }
            }
            if c.quantity.is_none()
                && (c.storage != 0 || c.tariff != 0 || c.subunit != 0 || c.function.is_some())
            {
                errs.push(ConfigError::new(
                    cp.clone(),
                    "storage, tariff, subunit and function refine \"quantity\"; give it too",
                ));
            }
        }
    }
}

fn check_host_port(addr: &str) -> Result<(), String> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("\"{addr}\" is not host:port")),
    }
}

/// Checks the bus, then runs one line (one task owning the bus) with every meter on it.
pub fn build(spec: Arc<MbusConfig>, ctx: ConnectorContext) -> Result<Running, ConnectorError> {
    match &spec.settings.transport {
        Transport::Serial(line) => ConnectorError::check_serial_port(&line.port)?,
        Transport::Tcp(t) => {
            check_host_port(&t.address).map_err(|reason| ConnectorError::Address {
                address: t.address.clone(),
                reason,
            })?;
        }
    }
    let backoff = spec.timing.retry();
    Ok(Box::pin(async move {
        let n = usize::from(!spec.devices.is_empty());
        device::run_lines(&ctx, n, |_| {
            let (endpoint, timing) = spec.settings.link(spec.timing.timeout);
            let bus = poller::Bus::new(
                link::Link::new(endpoint, timing),
                usize::from(spec.settings.max_telegrams),
            );
            let mut line = Line::new(&ctx, bus).with_backoff(backoff);
            for d in &spec.devices {
                let (schedule, meter) = poller::meter(d);
                line.add(d, schedule, meter, |_| None);
            }
            line
        })
        .await;
        Ok(())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(v: serde_json::Value) -> Vec<String> {
        match crate::parse_test::<MbusConfig>(v) {
            Ok(_) => Vec::new(),
            Err(errs) => errs
                .into_iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect(),
        }
    }

    #[test]
    fn parses_a_bus_and_names_bad_fields() {
        let ok = json!({"name": "bus", "protocol": "mbus",
            "transport": {"serial": {"port": "/dev/ttyUSB0", "baud": 2400}},
            "devices": [
                {"name": "heat", "address": 5, "interval": "30s", "channels": [
                    {"name": "energy", "quantity": "energy", "unit": "Wh"},
                    {"name": "e_prev", "quantity": "energy", "storage": 1},
                    {"name": "vol", "record": "volume_m3"},
                    {"name": "third", "index": 2}]},
                {"name": "water", "secondary": "12345678"}]});
        assert_eq!(errors(ok), Vec::<String>::new());
        let bad = json!({"name": "bus", "protocol": "mbus",
            "transport": {"serial": {"port": "/dev/ttyUSB0", "baud": 1234}},
            "devices": [
                {"name": "a", "address": 251},
                {"name": "b", "secondary": "12x"},
                {"name": "c", "address": 1, "secondary": "12345678"},
                {"name": "d", "address": 2, "channels": [
                    {"name": "x", "quantity": "energy", "function": "avg"},
                    {"name": "y", "index": 1, "record": "energy_wh"}]}]});
        let e = errors(bad);
        assert_eq!(e.len(), 6, "{e:#?}");
        assert!(e[0].contains("transport.serial.baud: unsupported baud rate 1234"));
        assert!(e[1].contains("devices[0].address: primary address 251"));
        assert!(e[2].contains("devices[1].secondary"));
        assert!(e[3].contains("devices[2]: give exactly one"));
        assert!(e[4].contains("devices[3].channels[0].function: unknown function \"avg\""));
        assert!(e[5].contains("devices[3].channels[1]: give exactly one"));
    }

    #[test]
    fn tcp_converters_time_the_bus_at_its_baud() {
        let spec = |transport: serde_json::Value| {
            let v = json!({"name": "c", "protocol": "mbus", "transport": transport,
                           "devices": [{"name": "m", "address": 1}]});
            match crate::parse_test::<MbusConfig>(v) {
                Ok(spec) => (Some(spec), Vec::new()),
                Err(errs) => (None, errs),
            }
        };
        let (plain, errs) = spec(json!({"tcp": "10.0.0.5:10001"}));
        assert!(errs.is_empty(), "{errs:?}");
        let plain = plain.expect("parses");
        assert_eq!(plain.devices[0].interval, Dur::from_secs(60));
        let (endpoint, timing) = plain.settings.link(plain.timing.timeout);
        assert_eq!(endpoint, link::Endpoint::Tcp("10.0.0.5:10001".into()));
        assert_eq!((timing.baud, timing.timeout), (2400, default_timeout(2400)));
        let (slow, errs) = spec(json!({"tcp": {"address": "10.0.0.5:10001", "baud": 300}}));
        assert!(errs.is_empty(), "{errs:?}");
        let slow = slow.expect("parses");
        let (_, timing) = slow.settings.link(slow.timing.timeout);
        assert_eq!(timing.baud, 300);
        assert_eq!(timing.timeout, Duration::from_millis(1150));
        assert_eq!(timing.idle(), Duration::from_millis(110));
        let (fast, _) = spec(json!({"tcp": {"address": "h:1", "baud": 38400}}));
        let fast = fast.expect("parses");
        assert_eq!(fast.settings.link(None).1.chars(1), Duration::from_micros(286));
        let (_, errs) = spec(json!({"tcp": {"address": "h:1", "baud": 1234}}));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "connectors[0] \"c\".transport.tcp.baud");
        assert!(errs[0].message.contains("unsupported baud rate 1234"));
        let (_, errs) = spec(json!({"tcp": {"address": "nohost", "baud": 2400}}));
        assert_eq!(errs[0].path, "connectors[0] \"c\".transport.tcp");
    }

    #[test]
    fn timeout_follows_baud() {
        assert_eq!(default_timeout(2400), Duration::from_millis(500));
        assert_eq!(default_timeout(300), Duration::from_millis(1150));
    }
}
