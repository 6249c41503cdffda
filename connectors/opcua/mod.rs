//! The OPC-UA client connector (`"protocol": "opcua"`): reads variables of an OPC-UA server
//! (PLCs, SCADA servers) through subscriptions or polled `Read`s, and writes writable ones.
//!
//! One connector is one server endpoint (`url`, `security`, `user`). A device in `subscribe`
//! mode gets its data changes pushed: all such devices share one session and one subscription
//! per device, served by the kit's [`ListenerLine`]
//! ([`subscribe`]). A device in `poll` mode is read with the `Read` service at its `interval` on
//! the kit's [`Line`] ([`poll`]), all of them over a second session. Connections, security,
//! certificates and NodeId resolution are in [`session`]; Variant and StatusCode conversion in
//! [`value`]; a subscribed channel's deadband filter in [`filter`]; `osgate opcua browse` in
//! [`cli`]. Readings go to the kit, which applies the
//! channel transforms and sends the batches on to the sinks.
//!
//! Channels name their node as `ns=2;s=Temperature`, `i=2258`, `ns=1;g=<GUID>`,
//! `ns=1;b=<base64>` or `nsu=<namespace URI>;s=…`; a namespace URI is looked up in the
//! server's NamespaceArray at every connect, since indexes can change when a server restarts.
//! A channel with `index` is one element of an array node (the OPC-UA IndexRange of that
//! element on reads, monitored items and writes).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::device::listener::ListenerLine;
pub use super::device::WriteType;
use super::device::{self, Line, Schedule, WriteSpec};
use super::{ConnectorContext, ConnectorError, Running};
use osgate_core::config::timing::{self, IntervalRule, TimeoutRule, TimingRules};
use osgate_core::config::{ChannelSpec, ConfigError, ConnectorSpec, Dur};
use osgate_core::transform::Deadband;

pub mod cert;
pub mod cli;
pub mod filter;
pub mod poll;
pub mod session;
pub mod subscribe;
pub mod tool;
pub mod value;

pub use session::NodeRef;

/// A parsed OPC-UA connector.
pub type OpcuaConfig = ConnectorSpec<OpcuaSettings, OpcuaDevice, OpcuaChannel>;

/// Connector settings: the server endpoint, security, user and certificates.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcuaSettings {
    /// Endpoint URL, `opc.tcp://host:port/path`. With security, the host must be a name the
    /// server's certificate carries.
    pub url: String,
    /// Security policy and mode, and which server certificates are trusted (default: policy
    /// and mode `None`).
    #[serde(default)]
    pub security: Security,
    /// User name and password (use `${VAR}` for the password); anonymous when absent.
    #[serde(default)]
    pub user: Option<User>,
    /// Where the client's certificate and key, and the `trusted`/`rejected` server
    /// certificates, are kept (default `osgate-pki`, relative to the working directory like
    /// `remote.cache`; a service would use e.g. `/var/lib/osgate/pki`). A certificate and key
    /// are generated there on first start unless `cert_file` and `key_file` are given.
    #[serde(default = "default_pki_dir")]
    pub pki_dir: PathBuf,
    /// The client's application instance certificate (DER or PEM), instead of a generated one.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// `security`: how the connection is protected and which servers are trusted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// `None` (default), `Basic256Sha256`, `Aes128Sha256RsaOaep` or `Aes256Sha256RsaPss`.
    #[serde(default)]
    pub policy: Policy,
    /// `None` (default with policy `None`), `Sign` or `SignAndEncrypt` (default with a policy).
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Directory of trusted server certificates (`.der` or `.pem`, any file name); default
    /// `<pki_dir>/trusted`. A server whose certificate is not there is refused, and its
    /// certificate is saved in `<pki_dir>/rejected` to be inspected and copied here.
    #[serde(default)]
    pub trusted_dir: Option<PathBuf>,
    /// Trust an unknown server certificate and keep it in the trusted directory ("trust on
    /// first use"; default false). Only for commissioning on a network you control.
    #[serde(default)]
    pub trust_on_first_use: bool,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            policy: Policy::None,
            mode: None,
            trusted_dir: None,
            trust_on_first_use: false,
        }
    }
}

impl Security {
    /// The mode in force: as configured, else `None` without a policy and `SignAndEncrypt`
    /// with one.
    pub fn mode(&self) -> Mode {
        self.mode.unwrap_or(if self.policy == Policy::None {
            Mode::None
        } else {
            Mode::SignAndEncrypt
        })
    }
}

/// A security policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Policy {
    /// No security.
    #[default]
    None,
    /// Basic256Sha256.
    Basic256Sha256,
    /// Aes128_Sha256_RsaOaep.
    #[serde(alias = "Aes128_Sha256_RsaOaep")]
    Aes128Sha256RsaOaep,
    /// Aes256_Sha256_RsaPss.
    #[serde(alias = "Aes256_Sha256_RsaPss")]
    Aes256Sha256RsaPss,
}

/// A message security mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Mode {
    /// No signing, no encryption.
    None,
    /// Messages signed.
    Sign,
    /// Messages signed and encrypted.
    SignAndEncrypt,
}

/// `user`: a user name token.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// User name.
    pub username: String,
    /// Password (use `${VAR}`).
    pub password: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// How a device's values are obtained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceMode {
    /// A subscription: the server sends data changes (default).
    #[default]
    Subscribe,
    /// `Read` every `interval`.
    Poll,
}

/// Device settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcuaDevice {
    /// `subscribe` (default) or `poll`.
    #[serde(default)]
    pub mode: DeviceMode,
    /// `subscribe`: how often the server sends the changes it collected (default `1s`).
    #[serde(default = "default_publishing_interval")]
    pub publishing_interval: Dur,
    /// `subscribe`: how often the server samples each variable (default: the publishing
    /// interval).
    #[serde(default)]
    pub sampling_interval: Option<Dur>,
    /// `subscribe`: changes the server queues per variable between two publishes (default 10).
    #[serde(default = "default_queue_size")]
    pub queue_size: u32,
    /// `subscribe`: publishing intervals without a change after which the server sends a
    /// keep-alive (default 10). Silence for three keep-alive periods counts as a lost
    /// subscription: the connection is dropped and the subscription made again.
    #[serde(default = "default_keep_alive_count")]
    pub keep_alive_count: u32,
}

/// Channel settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcuaChannel {
    /// The node: `ns=2;s=Temperature`, `i=2258`, `ns=1;g=…`, `ns=1;b=…`, or
    /// `nsu=<namespace URI>;s=…`.
    pub node: String,
    /// Accept writes (`device.write`, MQTT commands).
    #[serde(default)]
    pub writable: bool,
    /// What a write takes: `number` (default), `integer`, `bool` or `text`; the value is sent
    /// as the node's own DataType.
    #[serde(default, rename = "type")]
    pub write_type: WriteType,
    /// Smallest value a write may set (engineering units).
    #[serde(default)]
    pub min: Option<f64>,
    /// Largest value a write may set (engineering units).
    #[serde(default)]
    pub max: Option<f64>,
    /// `subscribe`: a deadband the server applies, so changes within it are not even sent:
    /// a number is absolute (`0.5`, in the node's units), a percentage string (`"2%"`) is of
    /// the node's EURange (high − low; only nodes with an EURange, such as AnalogItems).
    #[serde(default)]
    pub server_deadband: Option<Deadband>,
    /// One element of an array node (0 = the first): reads, subscriptions and writes use the
    /// OPC-UA IndexRange of that element.
    #[serde(default)]
    pub index: Option<u32>,
}

fn default_pki_dir() -> PathBuf {
    PathBuf::from("osgate-pki")
}
fn default_publishing_interval() -> Dur {
    Dur::from_secs(1)
}
fn default_queue_size() -> u32 {
    10
}
fn default_keep_alive_count() -> u32 {
    10
}

/// The shared settings OPC-UA takes: `timeout` (default `10s`, at least `100ms`: the bound of
/// every request and of connecting), `backoff` (`1s`) and `backoff_max` (`30s`) between
/// reconnects, each `poll` device's `interval` (`1s`, at least `10ms`).
pub const TIMING: TimingRules = TimingRules {
    timeout: Some(TimeoutRule {
        default: Some(Dur::from_secs(10)),
        min: Dur::from_millis(100),
    }),
    backoff: Some(timing::BACKOFF),
    interval: Some(IntervalRule {
        default: Dur::from_secs(1),
        min: Dur::from_millis(10),
    }),
};

/// `"protocol": "opcua"` in the protocol registry, with `osgate opcua`.
pub const PROTOCOL: crate::Protocol = crate::Protocol {
    name: "opcua",
    parse: |p, entry| p.with_timing(TIMING).spec(entry, validate, build),
    tool: Some(cli::TOOL),
};


/// Semantic checks: URL, security, certificate pair, intervals, node ids.
pub fn validate(spec: &OpcuaConfig, path: &str, errs: &mut Vec<ConfigError>) {
    let s = &spec.settings;
    if let Err(e) = session::check_url(&s.url) {
        errs.push(ConfigError::new(format!("{path}.url"), e));
    }
    let mode = s.security.mode();
    match (s.security.policy, mode) {
        (Policy::None, Mode::None) => {}
        (Policy::None, _) => errs.push(ConfigError::new(
            format!("{path}.security.mode"),
            "Sign and SignAndEncrypt need a security policy (e.g. \"Basic256Sha256\")",
        )),
        (_, Mode::None) => errs.push(ConfigError::new(
            format!("{path}.security.mode"),
            "a security policy needs mode \"Sign\" or \"SignAndEncrypt\"",
        )),
        _ => {}
    }
    if s.cert_file.is_some() != s.key_file.is_some() {
        errs.push(ConfigError::new(
            format!("{path}.cert_file"),
            "cert_file and key_file go together (or neither, to generate them in pki_dir)",
        ));
    }
    for (di, d) in spec.devices.iter().enumerate() {
        let dpath = format!("{path}.devices[{di}]");
        let ds = &d.settings;
        if ds.publishing_interval.0 < Duration::from_millis(10) {
            errs.push(ConfigError::new(
                format!("{dpath}.publishing_interval"),
                "must be at least 10ms",
            ));
        }
        if ds.keep_alive_count == 0 {
            errs.push(ConfigError::new(
                format!("{dpath}.keep_alive_count"),
                "must be at least 1",
            ));
        }
        for (ci, c) in d.channels.iter().enumerate() {
            let cpath = format!("{dpath}.channels[{ci}]");
            if let Err(e) = c.settings.node.parse::<NodeRef>() {
                errs.push(ConfigError::new(format!("{cpath}.node"), e));
            }
            let cs = &c.settings;
            if !cs.writable && (cs.min.is_some() || cs.max.is_some()) {
                errs.push(ConfigError::new(
                    format!("{cpath}.writable"),
                    "min and max bound writes: the channel must be \"writable\": true",
                ));
            }
            if let Some(e) = cs.server_deadband.and_then(check_deadband) {
                errs.push(ConfigError::new(format!("{cpath}.server_deadband"), e));
            }
        }
    }
}

/// What is wrong with a server deadband: an absolute one must be a number ≥ 0, a percentage
/// 0 to 100 % (of the EURange).
fn check_deadband(d: Deadband) -> Option<String> {
    match d {
        Deadband::Absolute(v) if !(v.is_finite() && v >= 0.0) => {
            Some(format!("must be a number >= 0, got {v}"))
        }
        Deadband::Percent(p) if !(0.0..=100.0).contains(&p) => Some(format!(
            "a percentage of the EURange must be 0% to 100%, got {p}%"
        )),
        _ => None,
    }
}

fn write_spec(c: &ChannelSpec<OpcuaChannel>) -> Option<WriteSpec> {
    let s = &c.settings;
    if !s.writable {
        return None;
    }
    Some(WriteSpec {
        kind: s.write_type.kind(),
        min: s.min,
        max: s.max,
    })
}

/// Builds the connector: checks the URL, the certificate files and the node ids; subscribed
/// devices go on one listener line, polled ones on one poll line, each with its own session.
pub fn build(spec: Arc<OpcuaConfig>, ctx: ConnectorContext) -> Result<Running, ConnectorError> {
    let s = &spec.settings;
    let timeout = spec.timing.timeout_or(Duration::from_secs(10));
    let endpoint = Arc::new(session::Endpoint::new(s, timeout)?);
    let backoff = spec.timing.retry();
    let mut subscribed = Vec::new();
    let mut polled = Vec::new();
    for (i, d) in spec.devices.iter().enumerate() {
        for c in &d.channels {
            c.settings.node.parse::<NodeRef>().map_err(|e| {
                ConnectorError::Setup(format!(
                    "device {} channel {}: node \"{}\": {e}",
                    d.name, c.name, c.settings.node
                ))
            })?;
        }
        match d.settings.mode {
            DeviceMode::Subscribe => subscribed.push(i),
            DeviceMode::Poll => polled.push(i),
        }
    }
    Ok(Box::pin(async move {
        let listen = async {
            if subscribed.is_empty() {
                return;
            }
            let devices: Vec<_> = subscribed.iter().map(|&i| &spec.devices[i]).collect();
            let listener = subscribe::Subscriber::new(endpoint.clone(), &ctx, &devices);
            let mut line = ListenerLine::new(&ctx, listener).with_backoff(backoff);
            for d in devices {
                line.add(d, write_spec);
            }
            line.run().await;
        };
        let polls = async {
            if polled.is_empty() {
                return;
            }
            device::run_lines(&ctx, 1, |_| {
                let mut line =
                    Line::new(&ctx, poll::Reader::new(endpoint.clone())).with_backoff(backoff);
                for &i in &polled {
                    let d = &spec.devices[i];
                    let schedule = Schedule::every(d.interval.0, d.channels.len());
                    line.add(d, schedule, poll::Device::new(d), write_spec);
                }
                line
            })
            .await;
        };
        tokio::join!(listen, polls);
        if spec.devices.is_empty() {
            ctx.shutdown.cancelled().await;
        }
        Ok(())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<Arc<OpcuaConfig>, Vec<ConfigError>> {
        crate::parse_test(v)
    }

    #[test]
    fn the_documented_shape_parses() {
        let spec = parse(json!({
            "name": "line-3", "protocol": "opcua", "url": "opc.tcp://10.0.0.20:4840/",
            "security": {"policy": "Basic256Sha256", "mode": "SignAndEncrypt",
                         "trusted_dir": "/var/lib/osgate/pki/trusted"},
            "user": {"username": "osgate", "password": "secret"},
            "devices": [{"name": "plc", "mode": "subscribe", "publishing_interval": "500ms",
                "channels": [
                    {"name": "temperature", "node": "nsu=urn:osgate:test-peer;s=Temperature", "unit": "°C"},
                    {"name": "setpoint", "node": "ns=2;s=Setpoint", "writable": true}]},
                {"name": "meter", "mode": "poll", "interval": "2s",
                 "channels": [{"name": "state", "node": "i=2259"}]}]
        }))
        .unwrap();
        assert_eq!(spec.settings.security.mode(), Mode::SignAndEncrypt);
        assert_eq!(spec.devices[1].settings.mode, DeviceMode::Poll);
        assert!(write_spec(&spec.devices[0].channels[1]).is_some());
        assert!(write_spec(&spec.devices[0].channels[0]).is_none());
        assert!(!format!("{:?}", spec.settings.user).contains("secret"));
    }

    #[test]
    fn mistakes_name_the_field() {
        let errs = parse(json!({
            "name": "o", "protocol": "opcua", "url": "http://x:4840/",
            "security": {"policy": "None", "mode": "Sign"},
            "cert_file": "c.der",
            "devices": [{"name": "d", "publishing_interval": "1ms", "keep_alive_count": 0,
                "channels": [{"name": "a", "node": "ns=x;s=T"},
                             {"name": "b", "node": "i=1", "min": 0},
                             {"name": "c", "node": "nsu=;s=T"}]}]
        }))
        .unwrap_err();
        let p = "connectors[0] \"o\"";
        for w in [
            format!("{p}.url"),
            format!("{p}.security.mode"),
            format!("{p}.cert_file"),
            format!("{p}.devices[0].publishing_interval"),
            format!("{p}.devices[0].keep_alive_count"),
            format!("{p}.devices[0].channels[0].node"),
            format!("{p}.devices[0].channels[1].writable"),
            format!("{p}.devices[0].channels[2].node"),
        ] {
            assert!(errs.iter().any(|e| e.path == w), "{w} missing in {errs:?}");
        }
        let errs = parse(
            json!({"name": "o", "protocol": "opcua", "url": "opc.tcp://h:1/",
            "security": {"policy": "Basic128"}, "devices": []}),
        )
        .unwrap_err();
        assert!(errs[0].path.ends_with("security.policy"), "{errs:?}");
    }

    #[test]
    fn deadbands_and_array_elements() {
        let ch = |extra: serde_json::Value| {
            let mut c = json!({"name": "a", "node": "ns=2;s=Level"});
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            parse(json!({"name": "o", "protocol": "opcua", "url": "opc.tcp://h:1/",
                "devices": [{"name": "d", "channels": [c]}]}))
        };
        let spec = ch(json!({"server_deadband": "2%", "index": 3})).unwrap();
        let c = &spec.devices[0].channels[0].settings;
        assert_eq!(c.server_deadband, Some(Deadband::Percent(2.0)));
        assert_eq!(c.index, Some(3));
        let spec = ch(json!({"server_deadband": 0.5})).unwrap();
        assert_eq!(
            spec.devices[0].channels[0].settings.server_deadband,
            Some(Deadband::Absolute(0.5))
        );
        let field = "connectors[0] \"o\".devices[0].channels[0]";
        for (bad, key, says) in [
            (json!({"server_deadband": "120%"}), "server_deadband", "0% to 100%"),
            (json!({"server_deadband": -1}), "server_deadband", ">= 0"),
            (json!({"server_deadband": "much"}), "server_deadband", "2%"),
            (json!({"index": -1}), "index", ""),
            (json!({"index": "3"}), "index", ""),
        ] {
            let errs = ch(bad.clone()).unwrap_err();
            assert!(
                errs.iter()
                    .any(|e| e.path == format!("{field}.{key}") && e.message.contains(says)),
                "{bad}: {errs:?}"
            );
        }
    }
}
