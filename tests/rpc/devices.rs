//! Device read and write: `device.read` (poll now), `device.write` (checked, unscaled, read
//! back), their refusals, and the same writes against a real Modbus register.

use serde_json::json;

use super::{assert_no_keys_in, rpc_config, wait_for, KEY};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_now_write_and_refusals() {
    let broker = Mosquitto::start();
    let gw = InProc::start(&rpc_config("gwm", &broker, "100ms")).await;
    let rpc = gw.rpc(KEY).await;

    // device.read: poll now, values back (positional params work too).
    let r = rpc.result("device.read", json!(["d1"])).await;
    let readings = r["readings"].as_array().unwrap();
    assert_eq!(readings.len(), 2, "{r}");
    assert_eq!(readings[0]["channel"], "t");
    assert_eq!(readings[0]["unit"], "°C");
    assert!((0.0..=10.0).contains(&readings[0]["value"].as_f64().unwrap()));

    // device.write: the value is written and read back; application errors are clear.
    let w = rpc
        .result(
            "device.write",
            json!({"device": "d1", "channel": "sp", "value": 42}),
        )
        .await;
    assert_eq!(w["value"], 42.0);
    let r = rpc
        .result("device.read", json!({"device": "d1", "connector": "sim"}))
        .await;
    assert_eq!(r["readings"][1]["value"], 42.0, "{r}");
    // Refusals: (method, params, error code, text in the message).
    for (method, params, want, text) in [
        (
            "device.write",
            json!({"device": "d1", "channel": "t", "value": 1}),
            1003,
            "not writable",
        ),
        (
            "device.write",
            json!({"device": "d1", "channel": "sp", "value": 1000}),
            1004,
            "out of range",
        ),
        (
            "device.write",
            json!({"device": "d1", "channel": "sp", "value": "high"}),
            1004,
            "",
        ),
        (
            "device.write",
            json!({"device": "d1", "channel": "zz", "value": 1}),
            1002,
            "",
        ),
        (
            "device.read",
            json!({"device": "d1", "connector": "other"}),
            1010,
            "",
        ),
    ] {
        let (code, msg) = rpc.error(method, params.clone()).await;
        assert_eq!(code, want, "{method} {params}: {msg}");
        assert!(msg.contains(text), "{method} {params}: {msg}");
    }
    assert_no_keys_in(&gw);
}

#[cfg(feature = "modbus")]
/// Reads holding register `address` of unit 1 (u16) back with pymodbus's own client.
async fn modbus_read_back(port: &str, address: u16) -> serde_json::Value {
    let addr = format!("127.0.0.1:{port}");
    crate::common::modbus::pymodbus_read(&addr, &["--address", &address.to_string()]).await
}

#[cfg(feature = "modbus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_write_and_mqtt_command_change_a_real_modbus_register() {
    let peer = crate::common::modbus::pymodbus(
        &json!({"units": {"1": {"size": 50, "values": [
            {"table": "holding", "address": 30, "type": "u16", "value": 7}]}}}),
        &["--tcp", "127.0.0.1:0"],
    )
    .await;
    let broker = Mosquitto::start();
    let cfg = json!({
        "gateway": {"id": "gwb"},
        "rpc": {"listen": "127.0.0.1:0", "api_keys": [KEY]},
        "sinks": [{"name": "local", "type": "mqtt", "url": broker.url(), "qos": 1}],
        "connectors": [{"name": "plc", "protocol": "modbus",
            "transport": {"tcp": format!("127.0.0.1:{}", peer.ready)}, "timeout": "500ms",
            "devices": [{"name": "pump", "interval": "200ms", "channels": [
                {"name": "setpoint", "table": "holding", "address": 0, "type": "u16",
                 "scale": 0.1, "writable": true},
                {"name": "ro", "table": "holding", "address": 30, "type": "u16"}]}]}]
    });
    let gw = InProc::start(&cfg).await;
    let rpc = gw.rpc(KEY).await;
    wait_for("the pump online", async || {
        rpc.call("device.status", json!({"device": "pump"})).await["result"]["online"] == true
    })
    .await;

    // device.write in engineering units: 42.5 / 0.1 = 425 in the register.
    let w = rpc
        .result(
            "device.write",
            json!({"device": "pump", "channel": "setpoint", "value": 42.5}),
        )
        .await;
    assert_eq!(w["value"], 42.5, "{w}");
    assert_eq!(modbus_read_back(&peer.ready, 0).await, json!(425));
    let r = rpc.result("device.read", json!({"device": "pump"})).await;
    assert_eq!(r["readings"][0]["value"], 42.5, "{r}");
    assert_eq!(r["readings"][1]["value"], 7, "{r}");
    let (code, msg) = rpc
        .error(
            "device.write",
            json!({"device": "pump", "channel": "ro", "value": 1}),
        )
        .await;
    assert_eq!(code, 1003, "{msg}");
    assert_eq!(modbus_read_back(&peer.ready, 30).await, json!(7));
    let (code, msg) = rpc
        .error(
            "device.write",
            json!({"device": "pump", "channel": "setpoint", "value": 1e9}),
        )
        .await;
    assert_eq!(code, 1004, "{msg}");
    assert_eq!(modbus_read_back(&peer.ready, 0).await, json!(425));

    // The MQTT command goes the same way.
    let mut results = Subscriber::connect(broker.port, "command/gwb/pump/setpoint/result").await;
    let m = broker
        .publish_until_answered(
            "command/gwb/pump/setpoint/set",
            r#"{"value":12.3,"id":"m1"}"#,
            &mut results,
        )
        .await;
    assert_eq!(m.json["id"], "m1");
    assert_eq!(m.json["ok"], true, "{:?}", m.json);
    assert_eq!(modbus_read_back(&peer.ready, 0).await, json!(123));
}
