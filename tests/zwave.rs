//! The Z-Wave connector against a real Z-Wave JS Server on a simulated stick
//! (`tests/peers/zwave`): both nodes' values in mosquitto with devices, channels and units,
//! periodic reports, a write to the plug's switch confirmed by the following `value updated`
//! (through `device.write` and MQTT commands), writes refused before they reach the server, a
//! server that goes silent (pings) and one killed with SIGKILL and restarted.

use osgate::control::DeviceError;
use osgate::pipeline::Envelope;
use osgate::reading::{Reading, Value};
use osgate::status::Health;
use serde_json::{json, Value as Json};

use crate::common::connector::{unique, ConnectorRun};
use crate::common::zwave::ZwavePeer;
use crate::common::{within, InProc, Mosquitto, Msg, Subscriber, TEST_TIMEOUT};

/// The config shape: node 2 with no channels (every value, derived names), node 3
/// with its switch (writable) and its kWh meter.
fn connector(name: &str, url: &str) -> Json {
    json!({
        "name": name, "protocol": "zwave", "url": url,
        "ping_interval": "500ms", "timeout": "1s", "backoff_max": "1s",
        "devices": [
            {"name": "living-room", "node": 2},
            {"name": "plug", "node": 3, "channels": [
                {"name": "on", "command_class": 37, "endpoint": 0, "property": "currentValue", "writable": true},
                {"name": "energy", "command_class": 50, "property": "value", "property_key": 65537}]}]
    })
}

/// Waits for a reading of `device`/`channel`, skipping everything else.
async fn reading(run: &mut ConnectorRun, device: &str, channel: &str) -> Reading {
    reading_where(run, device, channel, |_| true).await
}

/// Waits for a reading of `device`/`channel` that satisfies `f`.
async fn reading_where(
    run: &mut ConnectorRun,
    device: &str,
    channel: &str,
    f: impl Fn(&Reading) -> bool,
) -> Reading {
    within("a reading", async {
        loop {
            let b = run.batch(device).await;
            if let Some(r) = b.into_iter().find(|r| &*r.channel == channel && f(r)) {
                return r;
            }
        }
    })
    .await
}

#[tokio::test]
async fn gateway_publishes_both_nodes_and_takes_commands() {
    let peer = ZwavePeer::start().await;
    let local = Mosquitto::start();
    let cfg = json!({
        "gateway": {"id": "zw"},
        "sinks": [{"name": "local", "type": "mqtt", "url": local.url(), "qos": 1}],
        "connectors": [connector("zwave", &peer.url())]
    });
    let mut sub = Subscriber::connect(local.port, "telemetry/zw/#").await;
    let mut results = Subscriber::connect(local.port, "command/zw/+/+/result").await;
    let gw = InProc::start(&cfg).await;
    // Node 2 without channels: every readable value, named from its value id, with units.
    let air = |m: &Msg| m.topic == "telemetry/zw/living-room/air_temperature";
    let first = sub.next_where(TEST_TIMEOUT, air).await;
    assert_eq!(first.json["unit"], "°C", "{:?}", first.json);
    let t = first.json["value"].as_f64().expect("a number");
    assert!((10.0..=30.0).contains(&t), "air temperature {t}");
    // Node 3's configured channels: the meter with the metadata's unit, the switch as a bool.
    let energy = sub
        .next_where(TEST_TIMEOUT, |m| m.topic == "telemetry/zw/plug/energy")
        .await;
    assert_eq!(energy.json["unit"], "kWh", "{:?}", energy.json);
    assert!(energy.json["value"].as_f64().expect("number") >= 100.0);
    // Periodic reports arrive as new readings.
    let next = sub.next_where(TEST_TIMEOUT, air).await;
    assert!(
        next.json["ts"].as_i64() > first.json["ts"].as_i64(),
        "{:?} then {:?}",
        first.json,
        next.json
    );
    // Static values of the node are published too, under derived names.
    sub.drain();
    assert!(
        sub.seen
            .iter()
            .any(|m| m.topic == "telemetry/zw/living-room/manufacturer_id"),
        "{:?}",
        sub.seen.iter().map(|m| &m.topic).collect::<Vec<_>>()
    );
    // An MQTT command sets the switch (its targetValue); the following value updated of
    // currentValue arrives as the plug/on reading.
    for (i, want) in [true, false].into_iter().enumerate() {
        let id = format!("c{i}");
        local
            .publish(
                "command/zw/plug/on/set",
                &json!({"value": want, "id": id}).to_string(),
            )
            .await;
        let r = results.next(TEST_TIMEOUT).await;
        assert_eq!(r.json["ok"], true, "{:?} {}", r.json, gw.log_text());
        assert_eq!(r.json["id"], id.as_str());
        let on = sub
            .next_where(TEST_TIMEOUT, |m| {
                m.topic == "telemetry/zw/plug/on" && m.json["value"] == want
            })
            .await;
        assert_eq!(on.json["quality"], "good");
    }
    drop(gw);
}

#[tokio::test]
async fn writes_are_checked_then_confirmed() {
    let peer = ZwavePeer::start().await;
    let mut run = ConnectorRun::start(connector(&unique("zw"), &peer.url()));
    let before = reading(&mut run, "plug", "on").await;
    let Value::Bool(state) = before.value else {
        panic!("plug/on is not a bool: {before:?}");
    };
    // A wrong type is refused by the kit against the value's metadata (boolean): it never
    // reaches the server, which would answer status 5 instead (DeviceError::Failed).
    match run.write("plug", "on", json!("banana")).await {
        Err(DeviceError::OutOfRange { channel, reason }) => {
            assert_eq!(channel, "on");
            assert!(reason.contains("true or false"), "{reason}");
        }
        other => panic!("expected a refusal before the server, got {other:?}"),
    }
    match run.write("plug", "on", json!(7)).await {
        Err(DeviceError::OutOfRange { .. }) => {}
        other => panic!("expected a refusal before the server, got {other:?}"),
    }
    // A channel not configured writable, and a read-only value.
    assert!(matches!(
        run.write("plug", "energy", json!(1)).await,
        Err(DeviceError::NotWritable(_))
    ));
    assert!(matches!(
        run.write("living-room", "air_temperature", json!(20)).await,
        Err(DeviceError::NotWritable(_))
    ));
    // A good write: set through targetValue, confirmed by currentValue's value updated.
    let want = !state;
    let took = run.write("plug", "on", json!(want)).await.expect("write");
    assert_eq!(took, json!(want));
    let after = reading(&mut run, "plug", "on").await;
    assert_eq!(after.value, Value::Bool(want), "{after:?}");
    assert!(after.ts.0 >= before.ts.0);
    // "ON"/"OFF" words are bools too.
    run.write("plug", "on", json!(if want { "OFF" } else { "ON" }))
        .await
        .expect("write a bool word");
    // (zwave-js reads the switch back a second later: that report may come first.)
    reading_where(&mut run, "plug", "on", |r| r.value == Value::Bool(!want)).await;
    run.stop().await;
}

#[tokio::test]
async fn a_silent_server_is_noticed_by_pings() {
    let mut peer = ZwavePeer::start().await;
    let mut run = ConnectorRun::start(connector(&unique("zw"), &peer.url()));
    reading(&mut run, "living-room", "air_temperature").await;
    // Frozen: the TCP connection stays open, nothing answers.
    peer.signal_server("STOP");
    let st = run
        .status("living-room", |s| s.health == Health::Offline)
        .await;
    let why = st.last_error.unwrap_or_default();
    peer.signal_server("CONT");
    assert!(why.contains("ping"), "{why}");
    // Back: reconnected, online, values again.
    run.status("living-room", |s| s.health == Health::Online)
        .await;
    reading(&mut run, "living-room", "air_temperature").await;
    run.stop().await;
}

#[tokio::test]
async fn a_killed_server_is_reconnected_and_resynced() {
    let mut peer = ZwavePeer::start().await;
    let mut run = ConnectorRun::start(connector(&unique("zw"), &peer.url()));
    let energy = reading(&mut run, "plug", "energy").await;
    assert_eq!(
        run.device_status("plug").map(|s| s.health),
        Some(Health::Online)
    );
    // SIGKILL: no close frame, the socket just goes.
    peer.signal_server("KILL");
    let st = run.status("plug", |s| s.health == Health::Offline).await;
    assert!(!st.online);
    assert!(st.last_error.is_some());
    assert_eq!(
        run.device_status("living-room").map(|s| s.health),
        Some(Health::Offline)
    );
    peer.restart_server().await;
    // The fresh state brings the node back; values that did not change while the server was
    // away (the switch) are not published again: the batch of that state, which comes just
    // before the status, has no `on`.
    let resync = within("plug online again", async {
        let mut channels = Vec::new();
        loop {
            match run.next().await {
                Envelope::Batch(b) if &*b.device == "plug" => {
                    channels.extend(b.readings.iter().map(|r| r.channel.to_string()))
                }
                Envelope::Status(s) if &*s.device == "plug" && s.health == Health::Online => {
                    return channels
                }
                _ => {}
            }
        }
    })
    .await;
    assert!(!resync.contains(&"on".to_string()), "{resync:?}");
    let after = reading(&mut run, "plug", "energy").await;
    assert!(
        after.value.as_f64() >= energy.value.as_f64(),
        "{after:?} after {energy:?}"
    );
    reading(&mut run, "living-room", "air_temperature").await;
    let c = &run.health.counters;
    assert!(c.errors.load(std::sync::atomic::Ordering::Relaxed) > 0);
    run.stop().await;
}

#[tokio::test]
async fn an_unknown_node_and_an_unreachable_server_are_reported() {
    // Nothing listens on the port: every device offline with the reason, retried.
    let port = crate::common::free_port();
    let mut run = ConnectorRun::start(connector(&unique("zw"), &format!("ws://127.0.0.1:{port}")));
    let st = run.status("plug", |s| s.health == Health::Offline).await;
    assert!(
        st.last_error
            .as_deref()
            .unwrap_or("")
            .contains(&port.to_string()),
        "{st:?}"
    );
    run.stop().await;
    // A node the network does not have.
    let peer = ZwavePeer::start().await;
    let mut cfg = connector(&unique("zw"), &peer.url());
    cfg["devices"][0]["node"] = json!(42);
    let mut run = ConnectorRun::start(cfg);
    let st = run
        .status("living-room", |s| s.health == Health::Offline)
        .await;
    assert!(
        st.last_error.as_deref().unwrap_or("").contains("node 42"),
        "{st:?}"
    );
    reading(&mut run, "plug", "energy").await;
    run.stop().await;
}

/// A thermostat's mode (node 4) has enumerated states: the name of the state is published
/// beside the value (`mode_state`), a write of a state is taken and one outside them refused
/// with the allowed list before it reaches the server.
#[tokio::test]
async fn enumerated_states_are_named_and_enforced() {
    let peer = ZwavePeer::start().await;
    let cfg = json!({
        "name": unique("zw"), "protocol": "zwave", "url": peer.url(),
        "ping_interval": "500ms", "timeout": "2s", "backoff_max": "1s",
        "devices": [{"name": "thermostat", "node": 4, "channels": [
            {"name": "mode", "command_class": 64, "property": "mode", "writable": true}]}]
    });
    let mut run = ConnectorRun::start(cfg);
    // The value and the name of its state come in one batch.
    let batch = within("a batch with the mode", async {
        loop {
            let b = run.batch("thermostat").await;
            if b.iter().any(|r| &*r.channel == "mode") {
                return b;
            }
        }
    })
    .await;
    let get = |c: &str| {
        batch
            .iter()
            .find(|r| &*r.channel == c)
            .cloned()
            .unwrap_or_else(|| panic!("no {c} in {batch:?}"))
    };
    let (mode, name) = (get("mode"), get("mode_state"));
    let want = match mode.value {
        Value::F64(0.0) => "Off",
        Value::F64(1.0) => "Heat",
        Value::F64(2.0) => "Cool",
        ref other => panic!("mode {other:?}"),
    };
    assert_eq!(name.value, Value::Text(want.into()), "{name:?}");
    match run.write("thermostat", "mode", json!(5)).await {
        Err(DeviceError::OutOfRange { channel, reason }) => {
            assert_eq!(channel, "mode");
            assert!(
                reason.contains("allowed: 0 (Off), 1 (Heat), 2 (Cool)"),
                "{reason}"
            );
        }
        other => panic!("expected a refusal naming the states, got {other:?}"),
    }
    let took = run
        .write("thermostat", "mode", json!(1))
        .await
        .expect("write Heat");
    assert_eq!(took, json!(1.0));
    reading_where(&mut run, "thermostat", "mode_state", |r| {
        r.value == Value::Text("Heat".into())
    })
    .await;
    run.stop().await;
}

/// With `accept_new_devices`, nodes no device names become devices `node-<id>` with every
/// readable value; the configured node keeps its device, the controller gets none.
#[tokio::test]
async fn accept_new_devices_creates_a_device_per_node() {
    let peer = ZwavePeer::start().await;
    let cfg = json!({
        "name": unique("zw"), "protocol": "zwave", "url": peer.url(),
        "ping_interval": "500ms", "timeout": "2s", "backoff_max": "1s",
        "accept_new_devices": true,
        "devices": [{"name": "plug", "node": 3, "channels": [
            {"name": "on", "command_class": 37, "property": "currentValue"}]}]
    });
    let mut run = ConnectorRun::start(cfg);
    let t = reading(&mut run, "node-2", "air_temperature").await;
    assert_eq!(t.unit.as_deref(), Some("°C"), "{t:?}");
    let m = reading(&mut run, "node-4", "mode_state").await;
    assert!(matches!(m.value, Value::Text(_)), "{m:?}");
    assert!(run.device_status("node-2").is_some_and(|s| s.online));
    assert!(run.device_status("plug").is_some_and(|s| s.online));
    assert!(run.device_status("node-3").is_none(), "node 3 is the plug");
    assert!(
        run.device_status("node-1").is_none(),
        "the controller is no device"
    );
    run.stop().await;

    // Without it (the default), unnamed nodes stay out.
    let cfg = json!({
        "name": unique("zw"), "protocol": "zwave", "url": peer.url(),
        "devices": [{"name": "plug", "node": 3, "channels": [
            {"name": "on", "command_class": 37, "property": "currentValue"}]}]
    });
    let mut run = ConnectorRun::start(cfg);
    reading(&mut run, "plug", "on").await;
    assert!(run.device_status("node-2").is_none());
    run.stop().await;
}
