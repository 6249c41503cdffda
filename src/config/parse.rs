//! From a document to a [`GatewayConfig`]: `${VAR}` replaced in string values, every section
//! parsed, connectors one channel at a time, then the cross-section checks (`validate`), with
//! every problem collected and named at its path. An error at a place an
//! `OSGATE_SECTION__FIELD` environment override set names the variable. A panic in a parser
//! or a check becomes a configuration error, never a crash.

use serde_json::Value;

use osgate_core::config::document::list_items;
use osgate_core::config::{
    deserialize_at, interpolate, spec, ConfigError, ConfigErrors, Document, DocumentError,
};

use super::{
    BrokerSection, GatewayConfig, GatewaySection, RemoteSection, RpcSection, TelemetrySection,
};
use crate::connectors::ConnectorConfig;
use crate::sinks::SinkConfig;

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
pub(super) fn guard_panics(
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

pub(super) fn parse_document(
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
pub(super) fn plain_path(path: &str) -> String {
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
