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
//!
//! One file per part: [`GatewayConfig`] here, the sections in `sections`, document → config in
//! `parse`, the cross-section checks in `validate`, the `-c` file in `load`, the remote-first
//! loader in [`remote`].

pub mod remote;

mod load;
mod parse;
mod sections;
mod validate;

#[cfg(test)]
mod tests;

pub use osgate_core::config::*;

pub use load::{load_file, merge_env_overrides, read_file, LoadError};
pub use parse::{from_document, from_value};
pub use sections::{
    BrokerSection, EmbeddedBrokerConfig, GatewaySection, RemoteSection, RpcSection,
    TelemetrySection, MIN_API_KEY_LEN, MIN_TELEMETRY_INTERVAL, TELEMETRY_DEVICE,
};
#[cfg(test)]
pub(crate) use tests::fuzz::fuzz_cases;

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

impl GatewayConfig {
    /// The gateway id.
    pub fn id(&self) -> &str {
        &self.gateway.id
    }
}
