//! The MQTT sink's settings (`"type": "mqtt"` in `sinks`): the broker connection (declared by
//! [`osgate_core::broker_config!`], like every MQTT config of osgate), what is published and how
//! much is held; and their load-time checks.

use serde::Deserialize;

use crate::format::{Format, TopicTemplate};
use osgate_core::config::{ConfigError, Dur};

osgate_core::broker_config! {
    /// Settings of the MQTT sink.
    #[derive(Debug, Clone, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct MqttSinkConfig {
        broker(client_id = "default_client_id", backoff_max = "default_backoff_max", clean_session);
        /// 1 (default: delivered = acknowledged) or 0 (fire and forget).
        #[serde(default = "default_qos", deserialize_with = "zero_or_one")]
        pub qos: u8,
        /// `reading` (default): a message per reading; `device`: a message per batch.
        #[serde(default)]
        pub format: Format,
        /// Topic template. Default `telemetry/{gateway}/{device}/{channel}` (`reading`) or
        /// `telemetry/{gateway}/{device}` (`device`).
        #[serde(default)]
        pub topic: Option<String>,
        /// Publish `status/{gateway}` (online, last will) and device status topics (default true).
        #[serde(default = "yes")]
        pub status: bool,
        /// Retain telemetry messages (default false).
        #[serde(default)]
        pub retain: bool,
        /// Readings the sink holds while the broker is away (default 100000; about 150 bytes each). When
        /// full, new readings are dropped and counted. While connected the sink takes new readings
        /// only as fast as the broker acknowledges them (a few windows ahead), so the connectors
        /// feel backpressure instead.
        #[serde(default = "default_buffer")]
        pub buffer: usize,
        /// QoS 1 messages in flight without PUBACK (default 100).
        #[serde(default = "default_inflight")]
        pub inflight: u16,
    }
}

fn yes() -> bool {
    true
}
fn default_client_id() -> String {
    "osgate-{gateway}-{sink}".into()
}
/// `qos` as the user wrote it: 0 or 1, and an error that says so for anything else.
fn zero_or_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    match v.as_u64() {
        Some(n @ 0..=1) => Ok(n as u8),
        _ => Err(serde::de::Error::custom(format!(
            "expected 0 or 1, got {v}"
        ))),
    }
}

fn default_qos() -> u8 {
    1
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

impl MqttSinkConfig {
    /// Semantic checks: the connection's (URL, TLS, credentials, keep-alive, client id: see
    /// [`MqttClientSettings::validate`](osgate_core::net::mqtt::MqttClientSettings::validate))
    /// and the sink's own.
    pub fn validate(&self, path: &str, errs: &mut Vec<ConfigError>) {
        self.client_settings(self.client_id.clone())
            .validate(path, errs);
        if self.qos > 1 {
            errs.push(ConfigError::new(
                format!("{path}.qos"),
                format!("{} is not supported, expected 0 or 1", self.qos),
            ));
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
        if let Some(t) = &self.topic {
            match TopicTemplate::compile(t, "g", "s") {
                Ok(tpl) if self.format == Format::Reading && !tpl.has_channel() => {
                    errs.push(ConfigError::new(
                        format!("{path}.topic"),
                        "with format \"reading\" the topic must contain {channel}",
                    ))
                }
                Ok(_) => {}
                Err(e) => errs.push(ConfigError::new(format!("{path}.topic"), e)),
            }
        }
    }

    /// The topic template in force.
    pub(super) fn template(&self) -> &str {
        match (&self.topic, self.format) {
            (Some(t), _) => t,
            (None, Format::Reading) => "telemetry/{gateway}/{device}/{channel}",
            (None, Format::Device) => "telemetry/{gateway}/{device}",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(v: serde_json::Value) -> MqttSinkConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn tls_needs_mqtts_and_is_checked_at_load() {
        let mut errs = Vec::new();
        cfg(serde_json::json!({"url": "mqtt://h", "tls": {}})).validate("s", &mut errs);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "s.tls");
        assert!(errs[0].message.contains("plain text"));
        errs.clear();
        cfg(serde_json::json!({"url": "mqtts://h"})).validate("s", &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        cfg(serde_json::json!({"url": "mqtts://h", "tls": {"ca_file": "/nonexistent.pem"}}))
            .validate("s", &mut errs);
        assert_eq!(errs[0].path, "s.tls.ca_file");
        assert!(errs[0].message.contains("/nonexistent.pem: cannot read"));
        let bad: Result<MqttSinkConfig, _> =
            serde_json::from_value(serde_json::json!({"url": "mqtts://h", "tls": {"ca": "x"}}));
        assert!(bad.is_err());
    }

    #[test]
    fn defaults() {
        let c = cfg(serde_json::json!({"url": "mqtt://h"}));
        assert_eq!(c.client_id, "osgate-{gateway}-{sink}");
        assert_eq!((c.qos, c.buffer, c.inflight), (1, 100_000, 100));
        assert_eq!(c.backoff_max, Dur::from_secs(5));
        assert_eq!(c.keep_alive, Dur::from_secs(30));
        assert!(c.status && !c.retain && !c.clean_session);
    }
}
