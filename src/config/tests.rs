//! Unit tests of the loader: every problem reported at once, with its path; names of env
//! overrides in errors; the cross-section checks; the example configuration. The property
//! test of the loader is [`fuzz`].

pub(super) mod fuzz;

use serde_json::{json, Value};

use super::parse::plain_path;
use super::*;

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
