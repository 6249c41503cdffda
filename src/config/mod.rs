//! Configuration: the schema, where it is read from, and its validation.
//!
//! [`load_file`] reads a JSON file as a [`Document`] (top-level sections as values, the
//! connector list kept as text), merges `OSGATE_SECTION__FIELD` environment overrides read with
//! figment, and hands it to [`from_document`], which replaces `${VAR}` in string values from the
//! environment, parses every section and runs every semantic check, collecting all problems
//! into one [`ConfigErrors`]. Connectors are parsed one channel at a time ([`spec`]), so a
//! device list of thousands of channels never exists as a `Value` tree. The remote-first loader
//! ([`remote`]: fetch, cache, fallback, refresh) builds on [`from_document`] too, so a config
//! from any source goes through the same checks.
//!
//! The parts every layer shares (errors with paths, the document, `${VAR}`, the
//! connector→devices→channels spec parser, `Dur`) are the core's config toolkit
//! ([`osgate_core::config`]), re-exported here; this module is the gateway's own document:
//! every section, which connectors and sinks it holds, and where it is loaded from.

#[cfg(test)]
mod fuzz;
#[cfg(test)]
pub(crate) use fuzz::fuzz_cases;
pub mod remote;

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use osgate_core::config::document::list_items;
pub use osgate_core::config::*;

use crate::connectors::ConnectorConfig;
use crate::sinks::SinkConfig;

/// The whole configuration of one gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `gateway`: identity and global settings.
    pub gateway: GatewaySection,
    /// `remote`: where to pull the configuration from (remote-first loading).
    pub remote: Option<RemoteSection>,
    /// `broker`: the optional embedded MQTT broker.
    pub broker: BrokerSection,
    /// `rpc`: the JSON-RPC management server; absent = no server.
    pub rpc: Option<RpcSection>,
    /// `telemetry`: the gateway's own figures, published as readings of device `_gateway`.
    pub telemetry: TelemetrySection,
    /// `sinks`: where readings go.
    pub sinks: Vec<SinkConfig>,
    /// `connectors`: where readings come from.
    pub connectors: Vec<ConnectorConfig>,
    /// The configuration as written (after env overrides, before `${VAR}` interpolation), as
    /// compact JSON text: shown by `gateway.config` with secrets still behind their `${VAR}`.
    pub source: std::sync::Arc<str>,
}

/// `gateway` section.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Gateway id: the second level of every topic (`telemetry/{id}/…`).
    pub id: String,
    /// How long a stop may take: connectors stop, sinks flush (wait for PUBACKs) up to this.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: Dur,
}

fn default_shutdown_timeout() -> Dur {
    Dur::from_secs(5)
}

/// `remote` section: pull the configuration from a fleet server first.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSection {
    /// URL to GET the configuration from (http or https).
    pub url: String,
    /// Extra request headers, e.g. `{"Authorization": "Bearer ${OSGATE_FLEET_TOKEN}"}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Timeout of one fetch.
    #[serde(default = "default_remote_timeout")]
    pub timeout: Dur,
    /// How often the refresher polls for a changed configuration.
    #[serde(default = "default_remote_refresh")]
    pub refresh: Dur,
    /// Where the last good remote configuration is kept.
    #[serde(default = "default_remote_cache")]
    pub cache: PathBuf,
    /// TLS for an `https://` URL (`ca_file`, `cert_file`, `key_file`, `server_name`,
    /// `insecure_skip_verify`); without it the server is verified against the built-in roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::net::TlsConfig>,
}

fn default_remote_timeout() -> Dur {
    Dur::from_secs(5)
}
fn default_remote_refresh() -> Dur {
    Dur::from_secs(300)
}
fn default_remote_cache() -> PathBuf {
    PathBuf::from("osgate.cache.json")
}

/// `broker` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    /// Start an MQTT broker inside osgate (cargo feature `embedded-broker`).
    #[serde(default)]
    pub embedded: Option<EmbeddedBrokerConfig>,
}

/// `broker.embedded`: the in-process broker.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedBrokerConfig {
    /// Address to listen on, e.g. `127.0.0.1:1883`. Beyond loopback, `username` and
    /// `password` are required: anyone who can connect can publish commands.
    pub listen: SocketAddr,
    /// With `password`: the one user the broker accepts (no anonymous clients then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// With `username`: its password (use `${VAR}` to keep it out of the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// `rpc` section: the JSON-RPC management server.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RpcSection {
    /// Address for HTTP and WebSocket.
    #[serde(default = "default_rpc_listen")]
    pub listen: SocketAddr,
    /// Accepted API keys (`Authorization: Bearer <key>` or `X-API-Key`): a string (an `admin`
    /// key) or `{"name", "key", "role": "viewer" | "operator" | "admin"}`.
    #[serde(default)]
    pub api_keys: Vec<crate::auth::ApiKey>,
    /// Deadlines and the connection cap of the listener (`docs/security.md`).
    #[serde(default)]
    pub limits: crate::net::listen::ListenLimits,
    /// Most live-reading subscriptions (`readings.subscribe`) open at once (default 32).
    #[serde(default = "default_max_subscribers")]
    pub max_subscribers: usize,
    /// Also serve the RPC module on `rpc/{gateway}/request` through the local broker.
    #[serde(default)]
    pub mqtt: bool,
    /// Serve HTTPS and WSS instead of HTTP and WS: `cert_file`, `key_file` and, to require
    /// client certificates, `client_ca_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::net::ServerTlsConfig>,
    /// Serve `GET /metrics` to clients on a loopback address without an API key (a local
    /// Prometheus or node agent); everything else still needs a key. Default false.
    #[serde(default)]
    pub metrics_without_key_on_loopback: bool,
}

/// `telemetry` section: the gateway's own figures (CPU, memory, disk, network, load, uptime
/// and the pipeline counters), published every `interval` as readings of device `_gateway`
/// through the sinks, like any other reading ([`crate::telemetry`]).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// Publish self-telemetry (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Time between two publications (default `60s`, at least `100ms`).
    #[serde(default = "default_telemetry_interval")]
    pub interval: Dur,
    /// A path on the filesystem whose free space is reported as `disk_free_bytes` (default:
    /// `$STATE_DIRECTORY`, which systemd's `StateDirectory=` sets, else the working directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_path: Option<PathBuf>,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            enabled: true,
            interval: default_telemetry_interval(),
            disk_path: None,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_telemetry_interval() -> Dur {
    Dur::from_secs(60)
}

/// Shortest accepted `telemetry.interval`.
pub const MIN_TELEMETRY_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// The device name of self-telemetry readings (`telemetry/{gateway}/_gateway/{metric}`);
/// reserved, no configured device may take it.
pub const TELEMETRY_DEVICE: &str = "_gateway";

/// Shortest accepted API key. Keys are compared in constant time, so guessing is the only
/// attack; long random keys are recommended, short ones are allowed for lab setups.
pub const MIN_API_KEY_LEN: usize = 6;

fn default_max_subscribers() -> usize {
    32
}

fn default_rpc_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8580))
}

const TOP_LEVEL: &[&str] = &[
    "gateway",
    "remote",
    "broker",
    "rpc",
    "telemetry",
    "sinks",
    "connectors",
];

/// Parses and validates a configuration value (env overrides already merged): a convenience
/// for small configs (tests, probes); files and remote bodies go through [`from_document`].
pub fn from_value(
    source: Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<GatewayConfig, ConfigErrors> {
    match Document::from_value(source) {
        Some(doc) => from_document(doc, env),
        None => Err(ConfigErrors(vec![ConfigError::new(
            "",
            DocumentError::NotAnObject.to_string(),
        )])),
    }
}

/// Parses and validates a configuration document (env overrides already merged). `${VAR}` in
/// string values is replaced from `env`. Every problem is reported, each with its place.
///
/// No input makes this panic; should a bug in a parser or a check panic all the same, the
/// panic becomes a configuration error here, so a bad file, reload or remote body is rejected
/// like any invalid configuration and a running gateway keeps its configuration.
pub fn from_document(
    doc: Document,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<GatewayConfig, ConfigErrors> {
    guard_panics(|| parse_document(doc, env))
}

/// Runs `parse`, turning a panic into a configuration error.
fn guard_panics(
    parse: impl FnOnce() -> Result<GatewayConfig, ConfigErrors>,
) -> Result<GatewayConfig, ConfigErrors> {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    // Nothing shared is mutated inside: a panic leaves only the dropped document behind.
    catch_unwind(AssertUnwindSafe(parse)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(ConfigErrors(vec![ConfigError::new(
            "",
            format!("this configuration cannot be read (internal error, please report it: {what})"),
        )]))
    })
}

fn parse_document(
    mut doc: Document,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<GatewayConfig, ConfigErrors> {
    let overrides = std::mem::take(&mut doc.env_overrides);
    parse_sections(doc, env).map_err(|mut errs| {
        for e in &mut errs.0 {
            name_override(e, &overrides);
        }
        errs
    })
}

/// `sinks[0] "local".qos` → `sinks.qos`: the path as an `OSGATE_SINKS__QOS` variable names it.
fn plain_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '[' => {
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                }
            }
            ' ' => {
                // ` "name"` label of a list element.
                let _ = chars.next();
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Names the environment variable behind an error at a place that an override set.
fn name_override(e: &mut ConfigError, overrides: &[(String, String)]) {
    let at = plain_path(&e.path);
    let hit = overrides.iter().find(|(_, p)| {
        !at.is_empty()
            && (*p == at || p.starts_with(&format!("{at}.")) || at.starts_with(&format!("{p}.")))
    });
    let Some((var, p)) = hit else { return };
    if (at == "sinks" || at == "connectors") && p.len() > at.len() {
        e.message.push_str(&format!(
            " ({var} sets a field of an array: array elements cannot be set from the environment; set the whole array, e.g. OSGATE_{}='[{{…}}]', or edit the file)",
            at.to_uppercase()
        ));
    }
    e.path = format!("environment variable {var}: {}", e.path);
}

fn parse_sections(
    doc: Document,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<GatewayConfig, ConfigErrors> {
    let mut errs = Vec::new();
    // Kept as compact text, not as a `Value` tree: a big device list costs ten times its text
    // size as a tree.
    let source_text: std::sync::Arc<str> = doc.to_text().into();
    let (mut obj, connectors_raw) = doc.into_parts();
    for (key, v) in obj.iter_mut() {
        interpolate(v, key, env, &mut errs);
    }
    for key in obj.keys() {
        if !TOP_LEVEL.contains(&key.as_str()) {
            errs.push(ConfigError::new(
                key.clone(),
                format!("unknown section, expected one of: {}", TOP_LEVEL.join(", ")),
            ));
        }
    }
    let gateway = match obj.remove("gateway") {
        Some(v) => deserialize_at::<GatewaySection>(v, "gateway", &[])
            .map_err(|e| errs.push(e))
            .ok(),
        None => {
            errs.push(ConfigError::new(
                "gateway",
                "missing section (needs at least \"id\")",
            ));
            None
        }
    };
    if let Some(g) = &gateway {
        if let Err(e) = spec::check_name(&g.id) {
            errs.push(ConfigError::new("gateway.id", e));
        }
    }
    let remote = obj.remove("remote").filter(|v| !v.is_null()).and_then(|v| {
        deserialize_at::<RemoteSection>(v, "remote", &[])
            .map_err(|e| errs.push(e))
            .ok()
    });
    let broker = obj
        .remove("broker")
        .and_then(|v| {
            deserialize_at::<BrokerSection>(v, "broker", &[])
                .map_err(|e| errs.push(e))
                .ok()
        })
        .unwrap_or_default();
    let rpc = obj.remove("rpc").filter(|v| !v.is_null()).and_then(|v| {
        deserialize_at::<RpcSection>(v, "rpc", &[])
            .map_err(|e| errs.push(e))
            .ok()
    });
    let telemetry = obj
        .remove("telemetry")
        .filter(|v| !v.is_null())
        .and_then(|v| {
            deserialize_at::<TelemetrySection>(v, "telemetry", &[])
                .map_err(|e| errs.push(e))
                .ok()
        })
        .unwrap_or_default();

    let mut sinks = Vec::new();
    for (i, v) in array(obj.remove("sinks"), "sinks", &mut errs)
        .into_iter()
        .enumerate()
    {
        if let Some(s) = SinkConfig::from_value(i, v, &mut errs) {
            sinks.push(s);
        }
    }
    let mut connectors = Vec::new();
    for (i, raw) in list_items(connectors_raw.as_deref(), "connectors", "", &mut errs)
        .into_iter()
        .enumerate()
    {
        if let Some(c) = ConnectorConfig::from_raw(i, raw, env, &mut errs) {
            connectors.push(c);
        }
    }
    drop(connectors_raw);

    let cfg = gateway.map(|gateway| GatewayConfig {
        gateway,
        remote,
        broker,
        rpc,
        telemetry,
        sinks,
        connectors,
        source: source_text,
    });
    if let Some(cfg) = &cfg {
        cfg.validate(&mut errs);
    }
    match cfg {
        Some(cfg) if errs.is_empty() => Ok(cfg),
        _ => Err(ConfigErrors(errs)),
    }
}

fn array(v: Option<Value>, path: &str, errs: &mut Vec<ConfigError>) -> Vec<Value> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(other) => {
            errs.push(ConfigError::new(
                path,
                format!("expected an array, got {other}"),
            ));
            Vec::new()
        }
    }
}

impl GatewayConfig {
    /// Cross-section checks: unique names, rpc exposure, broker address use.
    fn validate(&self, errs: &mut Vec<ConfigError>) {
        let mut sink_names = HashMap::new();
        for (i, s) in self.sinks.iter().enumerate() {
            if let Some(prev) = sink_names.insert(s.name().to_string(), i) {
                errs.push(ConfigError::new(
                    format!("sinks[{i}] \"{}\".name", s.name()),
                    format!("duplicate sink name, also used by sinks[{prev}]"),
                ));
            }
        }
        let mut conn_names = HashMap::new();
        let mut device_names: HashMap<String, (usize, String)> = HashMap::new();
        for (i, c) in self.connectors.iter().enumerate() {
            if let Some(prev) = conn_names.insert(c.name.to_string(), i) {
                errs.push(ConfigError::new(
                    format!("connectors[{i}] \"{}\".name", c.name),
                    format!("duplicate connector name, also used by connectors[{prev}]"),
                ));
            }
            for (di, d) in c.devices.iter().enumerate() {
                if &**d == TELEMETRY_DEVICE {
                    errs.push(ConfigError::new(
                        format!("connectors[{i}] \"{}\".devices[{di}].name", c.name),
                        format!("\"{TELEMETRY_DEVICE}\" is reserved for the gateway's own telemetry (telemetry/{{gateway}}/{TELEMETRY_DEVICE}/…); choose another name"),
                    ));
                }
                if let Some((pi, pc)) = device_names.get(&**d) {
                    if *pi != i {
                        errs.push(ConfigError::new(
                            format!("connectors[{i}] \"{}\".devices[{di}].name", c.name),
                            format!(
                                "duplicate device name \"{d}\", also in connector \"{pc}\" (device names are topic levels and must be unique in the gateway)"
                            ),
                        ));
                    }
                } else {
                    device_names.insert(d.to_string(), (i, c.name.to_string()));
                }
            }
        }
        if let Some(rpc) = &self.rpc {
            if rpc.api_keys.is_empty() && !rpc.listen.ip().is_loopback() {
                errs.push(ConfigError::new(
                    "rpc.listen",
                    format!(
                        "{} is not a loopback address and rpc.api_keys is empty: add a key or listen on 127.0.0.1",
                        rpc.listen
                    ),
                ));
            }
            if let Some(t) = &rpc.tls {
                t.validate("rpc.tls", errs);
            }
            for (at, msg) in crate::auth::check_keys(&rpc.api_keys, MIN_API_KEY_LEN) {
                errs.push(ConfigError::new(format!("rpc.api_keys{at}"), msg));
            }
            for (field, msg) in rpc.limits.check() {
                errs.push(ConfigError::new(format!("rpc.limits.{field}"), msg));
            }
        }
        if self.telemetry.interval.0 < MIN_TELEMETRY_INTERVAL {
            errs.push(ConfigError::new(
                "telemetry.interval",
                format!(
                    "{} is too short: use at least {}",
                    self.telemetry.interval,
                    Dur(MIN_TELEMETRY_INTERVAL)
                ),
            ));
        }
        if let Some(b) = &self.broker.embedded {
            match (&b.username, &b.password) {
                (Some(_), Some(_)) => {}
                (None, None) if b.listen.ip().is_loopback() => {}
                (None, None) => errs.push(ConfigError::new(
                    "broker.embedded.listen",
                    format!(
                        "{} is not a loopback address and broker.embedded.username/password are not set: anyone on the network could publish commands; set both or listen on 127.0.0.1",
                        b.listen
                    ),
                )),
                (Some(_), None) => errs.push(ConfigError::new(
                    "broker.embedded.password",
                    "missing: username and password go together",
                )),
                (None, Some(_)) => errs.push(ConfigError::new(
                    "broker.embedded.username",
                    "missing: username and password go together",
                )),
            }
        }
        if let Some(r) = &self.remote {
            if !(r.url.starts_with("http://") || r.url.starts_with("https://")) {
                errs.push(ConfigError::new(
                    "remote.url",
                    format!("\"{}\": expected an http:// or https:// URL", r.url),
                ));
            }
            if let Some(t) = &r.tls {
                if r.url.starts_with("http://") {
                    errs.push(ConfigError::new(
                        "remote.tls",
                        format!(
                            "a tls object needs an https:// URL; \"{}\" would be fetched in plain text",
                            r.url
                        ),
                    ));
                }
                t.validate("remote.tls", errs);
            }
        }
    }

    /// The gateway id.
    pub fn id(&self) -> &str {
        &self.gateway.id
    }
}

/// Errors while reading a configuration file (before it can be validated).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is missing, unreadable or not valid JSON, or an env override is malformed.
    #[error("cannot read configuration {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The configuration was read but is invalid.
    #[error("{path}: {errors}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        errors: ConfigErrors,
    },
    /// Remote, cache and local file were all tried and none is usable.
    #[error("no usable configuration: {}", reasons.join("; "))]
    NoUsableSource {
        /// Why each source was rejected, in the order tried.
        reasons: Vec<String>,
    },
}

/// Reads the configuration document at `path` with `OSGATE_SECTION__FIELD` env overrides
/// merged in (before interpolation and validation).
pub fn read_file(path: &Path) -> Result<Document, LoadError> {
    use figment::providers::Env;
    let err = |message: String| LoadError::Read {
        path: path.to_path_buf(),
        message,
    };
    // The file is read as a `Document` (its device lists stay text); going through figment's
    // value tree cost many times the memory on configs with thousands of channels.
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut doc = Document::parse(&text).map_err(|e| err(e.to_string()))?;
    drop(text);
    // figment reads and types the overrides; only nested keys (`OSGATE_RPC__LISTEN`): plain
    // `OSGATE_*` variables are secrets for `${VAR}` interpolation, not overrides.
    let overrides: Value = figment::Figment::new()
        .merge(
            Env::prefixed("OSGATE_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        )
        .extract()
        .map_err(|e| err(format!("environment override: {e}")))?;
    doc.merge(overrides)
        .map_err(|e| err(format!("environment override: {e}")))?;
    doc.env_overrides = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter_map(|k| {
            let rest = k.strip_prefix("OSGATE_")?;
            rest.contains("__")
                .then(|| (k.clone(), rest.to_lowercase().replace("__", ".")))
        })
        .collect();
    Ok(doc)
}

/// Reads and validates the configuration file at `path` (env overrides and `${VAR}` applied).
pub fn load_file(path: &Path) -> Result<GatewayConfig, LoadError> {
    let doc = read_file(path)?;
    from_document(doc, &|k| std::env::var(k).ok()).map_err(|errors| LoadError::Invalid {
        path: path.to_path_buf(),
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(k: &str) -> Option<String> {
        (k == "TOKEN").then(|| "s3cret".to_string())
    }

    #[test]
    fn overrides_merge_like_figment() {
        use document::merge;
        let mut base = json!({"gateway": {"id": "a", "shutdown_timeout": "5s"}, "sinks": [1]});
        merge(
            &mut base,
            json!({"gateway": {"id": "b"}, "rpc": {"listen": "127.0.0.1:1"}}),
        );
        assert_eq!(
            base,
            json!({"gateway": {"id": "b", "shutdown_timeout": "5s"}, "sinks": [1],
                   "rpc": {"listen": "127.0.0.1:1"}})
        );
    }

    #[test]
    fn reports_all_errors_at_once() {
        let v = json!({
            "gateway": {"id": "gw"},
            "sinks": [{"name": "a", "type": "stdout"}, {"name": "a", "type": "stdout"}],
            "connectors": [
                {"name": "s", "protocol": "simulator", "devices": [
                    {"name": "d", "interval": "1x", "channels": [{"name": "t", "signal": "sine", "typo": 1}]}]},
                {"name": "s", "protocol": "nope"}
            ],
            "extra": 1
        });
        let errs = from_value(v, &env).unwrap_err().0;
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        let has = |s: &str| text.iter().any(|t| t.contains(s));
        assert!(has("extra: unknown section"), "{text:#?}");
        assert!(
            has("connectors[0] \"s\".devices[0].interval: invalid duration \"1x\""),
            "{text:#?}"
        );
        assert!(
            has("connectors[0] \"s\".devices[0].channels[0].typo: unknown field"),
            "{text:#?}"
        );
        assert!(
            has("connectors[1] \"s\".protocol: unknown protocol \"nope\""),
            "{text:#?}"
        );
    }

    #[test]
    fn duplicate_names_are_errors() {
        let v = json!({
            "gateway": {"id": "gw"},
            "sinks": [{"name": "a", "type": "stdout"}, {"name": "a", "type": "stdout"}],
            "connectors": [
                {"name": "s", "protocol": "simulator", "devices": [{"name": "d", "channels": []}]},
                {"name": "s", "protocol": "simulator", "devices": [{"name": "d", "channels": []}]}
            ]
        });
        let errs = from_value(v, &env).unwrap_err().to_string();
        assert!(
            errs.contains("sinks[1] \"a\".name: duplicate sink name"),
            "{errs}"
        );
        assert!(
            errs.contains("connectors[1] \"s\".name: duplicate connector name"),
            "{errs}"
        );
        assert!(
            errs.contains("connectors[1] \"s\".devices[0].name: duplicate device name"),
            "{errs}"
        );
    }

    #[test]
    fn errors_from_env_overrides_name_the_variable() {
        let mut doc = Document::from_value(json!({"gateway": {"id": "gw", "idd": "x"},
            "sinks": {"qos": 0}}))
        .unwrap();
        doc.env_overrides = vec![
            ("OSGATE_GATEWAY__IDD".into(), "gateway.idd".into()),
            ("OSGATE_SINKS__QOS".into(), "sinks.qos".into()),
        ];
        let errs = from_document(doc, &env).unwrap_err().to_string();
        assert!(
            errs.contains("environment variable OSGATE_GATEWAY__IDD: gateway.idd: unknown field"),
            "{errs}"
        );
        assert!(
            errs.contains("environment variable OSGATE_SINKS__QOS: sinks: expected an array")
                && errs.contains("array elements cannot be set from the environment"),
            "{errs}"
        );
        assert_eq!(plain_path("sinks[0] \"lo cal\".qos"), "sinks.qos");
        assert_eq!(
            plain_path("connectors[1] \"plc\".devices[0].channels[2].type"),
            "connectors.devices.channels.type"
        );
    }

    #[test]
    fn embedded_broker_beyond_loopback_needs_credentials() {
        let cfg = |b: Value| json!({"gateway": {"id": "gw"}, "broker": {"embedded": b}});
        let errs = from_value(cfg(json!({"listen": "0.0.0.0:1883"})), &env)
            .unwrap_err()
            .to_string();
        assert!(
            errs.contains("broker.embedded.listen: 0.0.0.0:1883 is not a loopback address")
                && errs.contains("username/password"),
            "{errs}"
        );
        let errs = from_value(
            cfg(json!({"listen": "0.0.0.0:1883", "username": "u"})),
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(errs.contains("broker.embedded.password: missing"), "{errs}");
        assert!(from_value(
            cfg(json!({"listen": "0.0.0.0:1883", "username": "u", "password": "${TOKEN}"})),
            &env
        )
        .is_ok());
        assert!(from_value(cfg(json!({"listen": "127.0.0.1:1883"})), &env).is_ok());
        assert!(from_value(cfg(json!({"listen": "[::1]:1883"})), &env).is_ok());
    }

    #[test]
    fn rpc_without_keys_must_be_loopback() {
        let v = json!({"gateway": {"id": "gw"}, "rpc": {"listen": "0.0.0.0:8580"}});
        let errs = from_value(v, &env).unwrap_err().to_string();
        assert!(errs.contains("rpc.listen"), "{errs}");
    }

    #[test]
    fn telemetry_has_defaults_and_named_errors() {
        let base = |t: Value| json!({"gateway": {"id": "gw"}, "telemetry": t});
        let cfg = from_value(json!({"gateway": {"id": "gw"}}), &env).unwrap();
        assert_eq!(cfg.telemetry, TelemetrySection::default());
        assert_eq!(cfg.telemetry.interval, Dur::from_secs(60));
        assert!(cfg.telemetry.enabled);
        let cfg = from_value(base(json!({"interval": "2s", "enabled": false})), &env).unwrap();
        assert_eq!(cfg.telemetry.interval, Dur::from_secs(2));
        assert!(!cfg.telemetry.enabled);
        for (section, expected) in [
            (
                json!({"interval": "10ms"}),
                "telemetry.interval: 10ms is too short",
            ),
            (
                json!({"interval": "soon"}),
                "telemetry.interval: invalid duration",
            ),
            (
                json!({"intervall": "1s"}),
                "telemetry.intervall: unknown field",
            ),
        ] {
            let errs = from_value(base(section), &env).unwrap_err().to_string();
            assert!(errs.contains(expected), "{errs}");
        }
        let v = json!({"gateway": {"id": "gw"}, "connectors": [{"name": "s",
            "protocol": "simulator", "devices": [{"name": "_gateway", "channels": []}]}]});
        let errs = from_value(v, &env).unwrap_err().to_string();
        assert!(
            errs.contains("connectors[0] \"s\".devices[0].name: \"_gateway\" is reserved"),
            "{errs}"
        );
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../osgate.json.example");
        let v: Value = serde_json::from_str(text).unwrap();
        let cfg = from_value(v, &|_| None).unwrap();
        assert!(!cfg.connectors.is_empty() && !cfg.sinks.is_empty());
    }
}
