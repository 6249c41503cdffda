//! The MQTT connector's config checks, mappings, own-topic guard and command payloads.

use super::config::{validate, write_spec, Command, MqttConfig};
use super::listener::render_value;
use super::mapping::{compile, is_own, OWN_ROOTS};
use crate::device::ValueKind;
use osgate_core::config::spec::parse_checked;
use osgate_core::config::ConfigError;
use osgate_core::reading::Value;
use serde_json::json;

fn parse(v: serde_json::Value) -> Result<MqttConfig, Vec<ConfigError>> {
    parse_checked(v, "connectors[0] \"m\"", validate)
}

#[test]
fn the_documented_shape_parses() {
    let spec = parse(json!({
        "name": "m", "protocol": "mqtt", "url": "mqtt://127.0.0.1:1883",
        "mappings": [
            {"topic": "tele/{device}/SENSOR", "format": "json",
             "timestamp": {"pointer": "/Time", "format": "rfc3339"},
             "channels": [{"name": "temperature", "pointer": "/AM2301/Temperature", "unit": "°C", "scale": 1.0},
                          {"name": "humidity", "pointer": "/AM2301/Humidity", "unit": "%"}]},
            {"topic": "shellies/{device}/relay/0/power", "format": "number", "channel": "power", "unit": "W"},
            {"topic": "zigbee2mqtt/{device}"}],
        "devices": [{"name": "boiler-room", "channels": [
            {"name": "relay", "writable": true, "type": "bool",
             "command": {"topic": "cmnd/boiler-room/POWER", "payload": "{value}", "on": "ON", "off": "OFF"}}]}]
    }))
    .unwrap();
    assert_eq!(spec.settings.mappings.len(), 3);
    for m in &spec.settings.mappings {
        compile(m).unwrap();
    }
    let w = write_spec(&spec.devices[0].channels[0]).unwrap();
    assert_eq!(w.kind, ValueKind::Bool);
}

#[test]
fn mistakes_name_the_field() {
    let errs = parse(json!({
        "name": "m", "protocol": "mqtt", "url": "mqtt://h", "qos": 2,
        "mappings": [
            {"topic": "tele/{device}/SENSOR", "channels": [{"name": "t", "pointer": "AM2301"}]},
            {"topic": "a/{device}", "format": "number"},
            {"topic": "telemetry/#"},
            {"topic": "b/{device}", "device": "{dev}"},
            {"topic": "c/{device}", "format": "text", "channel": "x",
             "timestamp": {"pointer": "/t"}}],
        "devices": [{"name": "d", "channels": [{"name": "r", "writable": true}]}]
    }))
    .unwrap_err();
    let p = "connectors[0] \"m\"";
    let want = [
        format!("{p}.qos"),
        format!("{p}.mappings[0].channels"),
        format!("{p}.mappings[1].channel"),
        format!("{p}.mappings[2].topic"),
        format!("{p}.mappings[3].device"),
        format!("{p}.mappings[4].timestamp"),
        format!("{p}.devices[0].channels[0].command"),
    ];
    for w in &want {
        assert!(errs.iter().any(|e| &e.path == w), "{w} missing in {errs:?}");
    }
    let e = errs
        .iter()
        .find(|e| e.path.ends_with("mappings[0].channels"))
        .unwrap();
    assert!(
        e.message.contains("pointer") && e.message.contains("/AM2301"),
        "{e:?}"
    );
    let errs = parse(json!({"name": "m", "protocol": "mqtt", "url": "mqtt://h",
        "mappings": [{"topic": "a/{device}"}]}))
    .unwrap_err();
    assert!(errs[0].message.contains("accept_new_devices"), "{errs:?}");
}

#[test]
fn own_topics_of_this_gateway_are_recognised() {
    let own = OWN_ROOTS.map(|r| format!("{r}/gw"));
    assert!(is_own(&own, "telemetry/gw/d/c"));
    assert!(is_own(&own, "status/gw"));
    assert!(is_own(&own, "command/gw/d/c/set"));
    assert!(!is_own(&own, "telemetry/gw2/d/c"));
    assert!(!is_own(&own, "tele/gw/SENSOR"));
}

#[test]
fn command_payloads() {
    let cmd = Command {
        topic: "t".into(),
        payload: "{\"state\":\"{value}\"}".into(),
        on: Some("ON".into()),
        off: Some("OFF".into()),
        retain: false,
    };
    assert_eq!(render_value(&Value::Bool(true), &cmd), "ON");
    assert_eq!(render_value(&Value::F64(1.0), &cmd), "1");
    assert_eq!(render_value(&Value::F64(21.5), &cmd), "21.5");
    assert_eq!(
        cmd.payload
            .replace("{value}", &render_value(&Value::Bool(false), &cmd)),
        "{\"state\":\"OFF\"}"
    );
}
