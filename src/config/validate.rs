//! The checks across sections, once every section parsed: unique sink, connector and device
//! names (a device name is a topic level), the reserved telemetry device, who may reach the
//! management API and the embedded broker without credentials, API keys, listener limits,
//! the telemetry interval and the `remote` URL with its TLS.

use std::collections::HashMap;

use osgate_core::config::{ConfigError, Dur};

use super::{GatewayConfig, MIN_API_KEY_LEN, MIN_TELEMETRY_INTERVAL, TELEMETRY_DEVICE};

impl GatewayConfig {
    /// Cross-section checks: unique names, rpc exposure, broker address use.
    pub(super) fn validate(&self, errs: &mut Vec<ConfigError>) {
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
}
