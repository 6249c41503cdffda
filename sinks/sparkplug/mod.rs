//! The Sparkplug B sink (`"type": "sparkplug"`): the gateway as one Sparkplug B 3.0 edge node,
//! so SCADA and MES hosts (Ignition's MQTT Engine and the like) discover its devices, their
//! metrics, types and units by themselves, see at once when data stops, and write back.
//!
//! Topics `spBv1.0/{group_id}/{NBIRTH|NDEATH|NDATA|NCMD|DBIRTH|DDEATH|DDATA|DCMD}/{edge_node_id}
//! [/{device}]`, payloads in the Sparkplug B protobuf schema ([`proto`]). Every osgate device is
//! a Sparkplug device, every channel a metric; the gateway's own figures (`_gateway`
//! self-telemetry) are node metrics. The parts:
//!
//! - [`node`]: `bdSeq`, `seq`, aliases, last values and the payloads (pure logic);
//! - [`host`]: the primary host application's `STATE`;
//! - [`bdseq`]: `bdSeq` kept across restarts in the state directory;
//! - `command.rs`: DCMD values and writes;
//! - `session.rs`: the MQTT session (on osgate's session driver,
//!   [`osgate_core::net::mqtt::MqttSession`]): will, subscriptions, births, QoS 1 with an outbox
//!   of held data, commands.
//!
//! Commands: NCMD `Node Control/Rebirth` births the node and every device again; DCMD writes go
//! through the same device write path as `device.write` (writable channels, range checks, the
//! audit log line), and the written value is confirmed by the next DDATA. The reference for
//! users is `sinks/sparkplug/README.md`.

pub mod bdseq;
mod command;
pub mod host;
pub mod node;
pub mod proto;
mod session;

use std::path::PathBuf;

use serde::Deserialize;

use super::{SinkContext, SinkError};
use osgate_core::config::{ConfigError, Dur};

osgate_core::broker_config! {
    /// Settings of the Sparkplug B sink. The session is always clean, as Sparkplug asks.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SparkplugSinkConfig {
        broker(client_id = "default_client_id", backoff_max = "default_backoff_max");
        /// Sparkplug group id (the second topic level).
        pub group_id: String,
        /// Edge node id (the fourth topic level); `{gateway}` is replaced (default `{gateway}`).
        #[serde(default = "default_edge_node_id")]
        pub edge_node_id: String,
        /// The primary host application's id: births only while its `spBv1.0/STATE/{id}` says
        /// online; data meanwhile is held and sent after the births, flagged historical.
        #[serde(default)]
        pub primary_host_id: Option<String>,
        /// Readings held while the node cannot publish (broker away, primary host offline;
        /// default 100000). When full, new readings are dropped and counted.
        #[serde(default = "default_buffer")]
        pub buffer: usize,
        /// QoS 1 messages in flight without PUBACK (default 100).
        #[serde(default = "default_inflight")]
        pub inflight: u16,
        /// Where `bdSeq` is kept across restarts (file `sparkplug-{sink}.bdseq`); default
        /// `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else the working directory.
        #[serde(default)]
        pub state_dir: Option<PathBuf>,
    }
}

fn default_edge_node_id() -> String {
    "{gateway}".into()
}
fn default_client_id() -> String {
    "osgate-{gateway}-{sink}".into()
}
fn default_buffer() -> usize {
    100_000
}
fn default_inflight() -> u16 {
    100
}
/// Reconnects wait 100 ms, doubling up to this.
fn default_backoff_max() -> Dur {
    Dur::from_secs(5)
}

/// Why a Sparkplug id cannot be used: empty, or with a character MQTT topics reserve.
fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if let Some(c) = id.chars().find(|c| matches!(c, '/' | '+' | '#')) {
        return Err(format!(
            "\"{id}\" contains '{c}'; Sparkplug ids cannot hold '/', '+' or '#'"
        ));
    }
    Ok(())
}

impl SparkplugSinkConfig {
    /// Semantic checks: the connection's (see
    /// [`MqttClientSettings::validate`](osgate_core::net::mqtt::MqttClientSettings::validate))
    /// and the ids.
    pub fn validate(&self, path: &str, errs: &mut Vec<ConfigError>) {
        self.client_settings(self.client_id.clone())
            .validate(path, errs);
        let edge = self.edge_node_id.replace("{gateway}", "g");
        for (field, v) in [
            ("group_id", Some(self.group_id.as_str())),
            ("edge_node_id", Some(edge.as_str())),
            ("primary_host_id", self.primary_host_id.as_deref()),
        ] {
            if let Some(Err(e)) = v.map(check_id) {
                errs.push(ConfigError::new(format!("{path}.{field}"), e));
            }
        }
        if self.buffer == 0 {
            errs.push(ConfigError::new(
                format!("{path}.buffer"),
                "must be at least 1",
            ));
        }
        if self.inflight == 0 {
            errs.push(ConfigError::new(
                format!("{path}.inflight"),
                "must be at least 1",
            ));
        }
    }
}

/// Runs the edge node until the sink's queue ends and what it holds is delivered (or the
/// flush deadline passes); publishes its NDEATH on the way out.
pub async fn run(cfg: SparkplugSinkConfig, ctx: SinkContext) -> Result<(), SinkError> {
    session::run(cfg, ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(v: serde_json::Value) -> SparkplugSinkConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ids_and_sizes_are_checked_with_their_path() {
        let mut errs = Vec::new();
        cfg(serde_json::json!({"url": "mqtt://h", "group_id": "plant1"})).validate("s", &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        cfg(
            serde_json::json!({"url": "mqtt://h", "group_id": "a/b", "edge_node_id": "x+",
            "primary_host_id": "", "buffer": 0}),
        )
        .validate("s", &mut errs);
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "s.group_id",
                "s.edge_node_id",
                "s.primary_host_id",
                "s.buffer"
            ]
        );
        assert!(errs[0].message.contains("'/'"), "{}", errs[0].message);
        let missing: Result<SparkplugSinkConfig, _> =
            serde_json::from_value(serde_json::json!({"url": "mqtt://h"}));
        assert!(missing.unwrap_err().to_string().contains("group_id"));
    }
}
