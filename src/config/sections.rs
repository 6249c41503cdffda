//! The sections of the gateway's document besides its connectors and sinks: `gateway`,
//! `remote`, `broker`, `rpc`, `telemetry`, each a serde struct that refuses unknown fields and
//! documents every field (the user reference is docs/configuration.md), with its defaults and
//! the limits the checks use.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use osgate_core::config::Dur;

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
