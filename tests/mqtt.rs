//! The MQTT connector against real mosquitto brokers: two source brokers feeding one gateway
//! (topic captures, JSON pointers, device timestamps), Tasmota-, Shelly- and Zigbee2MQTT-shaped
//! messages, malformed messages counted while good ones flow, broker restarts and a persistent
//! session, writes to command topics (`device.write` and `command/{gw}/…/set`) and one whose
//! PUBACK does not come in time, TLS with a CA made at test time, and username/password.

use std::time::Duration;

use osgate::reading::Value;
use serde_json::{json, Value as Json};

use crate::common::certs::Certs;
use crate::common::connector::{unique, ConnectorRun};
use crate::common::{unsafe_free_kill, InProc, Mosquitto, Msg, Subscriber, TEST_TIMEOUT};

/// A connector config of the Tasmota/Shelly/Zigbee2MQTT shapes on `url`.
fn source(name: &str, url: &str, extra: Json) -> Json {
    let mut c = json!({
        "name": name, "protocol": "mqtt", "url": url, "backoff_max": "1s",
        "mappings": [
            {"topic": "tele/{device}/SENSOR", "format": "json",
             "timestamp": {"pointer": "/Time", "format": "rfc3339"},
             "channels": [{"name": "temperature", "pointer": "/AM2301/Temperature", "unit": "°C"},
                          {"name": "humidity", "pointer": "/AM2301/Humidity", "unit": "%"}]},
            {"topic": "shellies/{device}/relay/{relay}/power", "format": "number",
             "channel": "power{relay}", "unit": "W"},
            {"topic": "zigbee2mqtt/{device}"}],
        "devices": [{"name": "boiler-room", "channels": [
            {"name": "relay", "writable": true, "type": "bool",
             "command": {"topic": "cmnd/boiler-room/POWER", "payload": "{value}", "on": "ON", "off": "OFF"}},
            {"name": "setpoint", "writable": true, "min": 5, "max": 30,
             "command": {"topic": "zigbee2mqtt/boiler-room/set", "payload": "{\"current_heating_setpoint\":{value}}"}}]}]
    });
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    c
}

/// Publishes `payload` on `topic` until the connector produced a batch of `device` (it has
/// subscribed by then); returns that batch's values.
async fn warm_up(
    broker: &Mosquitto,
    run: &mut ConnectorRun,
    topic: &str,
    payload: &str,
    device: &str,
) -> std::collections::HashMap<String, Value> {
    let until = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        assert!(tokio::time::Instant::now() < until, "no batch of {device}");
        broker.publish(topic, payload).await;
        if let Ok(b) =
            tokio::time::timeout(Duration::from_millis(500), run.good_batch(device)).await
        {
            return b;
        }
    }
}

#[tokio::test]
async fn two_brokers_feed_one_gateway() {
    let local = Mosquitto::start();
    let a = Mosquitto::start();
    let b = Mosquitto::start();
    let cfg = json!({
        "gateway": {"id": "mq"},
        "sinks": [{"name": "local", "type": "mqtt", "url": local.url(), "qos": 1}],
        "connectors": [
            source("plant-a", &a.url(), json!({"accept_new_devices": true})),
            {"name": "plant-b", "protocol": "mqtt", "url": b.url(),
             "mappings": [{"topic": "shellies/{device}/relay/0/power", "format": "number",
                           "channel": "power", "unit": "W"}],
             "devices": [{"name": "shelly-1"}]}]
    });
    let mut sub = Subscriber::connect(local.port, "telemetry/mq/#").await;
    let mut results = Subscriber::connect(local.port, "command/mq/+/+/result").await;
    let gw = InProc::start(&cfg).await;
    // Until both connectors have subscribed.
    for (broker, topic, payload, want) in [
        (&a, "zigbee2mqtt/warm", "{\"x\":1}", "telemetry/mq/warm/x"),
        (
            &b,
            "shellies/shelly-1/relay/0/power",
            "0",
            "telemetry/mq/shelly-1/power",
        ),
    ] {
        let until = tokio::time::Instant::now() + TEST_TIMEOUT;
        loop {
            assert!(
                tokio::time::Instant::now() < until,
                "{want} never came: {}",
                gw.log_text()
            );
            broker.publish(topic, payload).await;
            if tokio::time::timeout(
                Duration::from_millis(500),
                sub.next_where(TEST_TIMEOUT, |m| m.topic == want),
            )
            .await
            .is_ok()
            {
                break;
            }
        }
    }
    // Tasmota: channels by pointer, the device's local time without an offset read as UTC.
    a.publish(
        "tele/boiler-room/SENSOR",
        r#"{"Time":"2026-12-01T10:00:00","AM2301":{"Temperature":21.5,"Humidity":40.2},"TempUnit":"C"}"#,
    )
    .await;
    // Shelly: a plain number, device and channel from captures.
    b.publish("shellies/shelly-1/relay/0/power", "123.45").await;
    // Zigbee2MQTT: a new device, every field by key path.
    a.publish(
        "zigbee2mqtt/kitchen-sensor",
        r#"{"temperature":19.5,"humidity":55,"battery":97,"occupancy":true,"update":{"state":"idle"}}"#,
    )
    .await;
    let want = [
        (
            "telemetry/mq/boiler-room/temperature",
            json!(21.5),
            Some("°C"),
        ),
        ("telemetry/mq/boiler-room/humidity", json!(40.2), Some("%")),
        ("telemetry/mq/shelly-1/power", json!(123.45), Some("W")),
        ("telemetry/mq/kitchen-sensor/temperature", json!(19.5), None),
        ("telemetry/mq/kitchen-sensor/humidity", json!(55), None),
        ("telemetry/mq/kitchen-sensor/battery", json!(97), None),
        ("telemetry/mq/kitchen-sensor/occupancy", json!(true), None),
    ];
    let done = |seen: &[Msg]| {
        want.iter()
            .all(|(t, v, _)| seen.iter().any(|m| m.topic == *t && m.json["value"] == *v))
    };
    assert!(
        sub.collect_until(TEST_TIMEOUT, done).await,
        "missing readings; got {:?}",
        sub.seen
            .iter()
            .map(|m| (&m.topic, &m.json))
            .collect::<Vec<_>>()
    );
    for (t, v, unit) in want {
        let m = sub
            .seen
            .iter()
            .find(|m| m.topic == t && m.json["value"] == v)
            .unwrap();
        assert_eq!(m.json["unit"].as_str(), unit, "{t}");
        assert_eq!(m.json["quality"], "good", "{t}");
        if t.contains("boiler-room") {
            assert_eq!(
                m.json["ts"],
                json!(1_796_119_200_000i64),
                "{t}: ts from Time"
            );
        }
    }
    // The text field of the Zigbee2MQTT message is not a number or bool: no channel.
    assert!(!sub.seen.iter().any(|m| m.topic.ends_with("update.state")));

    // A command through the local broker reaches the device's command topic on broker A.
    let mut cmnd = Subscriber::connect(a.port, "cmnd/boiler-room/POWER").await;
    local
        .publish(
            "command/mq/boiler-room/relay/set",
            r#"{"value":true,"id":"c1"}"#,
        )
        .await;
    let m = cmnd.next(TEST_TIMEOUT).await;
    assert_eq!(m.topic, "cmnd/boiler-room/POWER");
    let r = results.next(TEST_TIMEOUT).await;
    assert_eq!(r.json["ok"], true, "{:?}", r.json);
    assert_eq!(r.json["id"], "c1");
    drop(gw);
}

#[tokio::test]
async fn payload_shapes_and_command_templates() {
    let broker = Mosquitto::start();
    let name = unique("shapes");
    let mut run = ConnectorRun::start(source(
        &name,
        &broker.url(),
        json!({"accept_new_devices": true}),
    ));
    warm_up(&broker, &mut run, "zigbee2mqtt/warm", "{\"x\":1}", "warm").await;

    broker.publish("shellies/sh-2/relay/1/power", "77.5").await;
    let v = run.good_batch("sh-2").await;
    assert_eq!(v["power1"], Value::F64(77.5));

    // The Tasmota payload: timestamp from Time, two channels.
    broker
        .publish(
            "tele/tas-9/SENSOR",
            r#"{"Time":"2026-12-01T09:30:00","AM2301":{"Temperature":-3.5,"Humidity":81}}"#,
        )
        .await;
    let b = run.batch("tas-9").await;
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].value, Value::F64(-3.5));
    assert_eq!(b[0].ts.0, 1_796_117_400_000);
    assert_eq!(b[1].value, Value::U64(81));
    assert_eq!(b[0].unit.as_deref(), Some("°C"));

    // Writes: a bool rendered with on/off, a number into a JSON template.
    let mut cmnd = Subscriber::connect(broker.port, "cmnd/#").await;
    let mut z = Subscriber::connect(broker.port, "zigbee2mqtt/boiler-room/set").await;
    assert_eq!(
        run.write("boiler-room", "relay", json!(false))
            .await
            .unwrap(),
        json!(false)
    );
    let m = cmnd.next(TEST_TIMEOUT).await;
    assert_eq!(m.topic, "cmnd/boiler-room/POWER");
    assert_eq!(m.json, Json::Null, "OFF is not JSON");
    assert_eq!(
        run.write("boiler-room", "setpoint", json!(21.5))
            .await
            .unwrap(),
        json!(21.5)
    );
    let m = z.next(TEST_TIMEOUT).await;
    assert_eq!(m.json, json!({"current_heating_setpoint": 21.5}));
    // The kit's checks apply: out of range and wrong types never reach the broker.
    let e = run
        .write("boiler-room", "setpoint", json!(31))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("outside [5, 30]"), "{e}");
    let e = run
        .write("boiler-room", "relay", json!("maybe"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("relay"), "{e}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), cmnd.next(TEST_TIMEOUT))
            .await
            .is_err()
    );
    run.stop().await;
}

/// A write whose PUBACK does not come in time fails naming the broker; the late PUBACK is not
/// taken for the next write's, which gets its own, and the messages still flow.
#[tokio::test]
async fn a_write_without_its_puback_times_out() {
    let broker = Mosquitto::start();
    let name = unique("puback");
    let mut run = ConnectorRun::start(source(
        &name,
        &broker.url(),
        json!({"accept_new_devices": true, "write_timeout": "1s"}),
    ));
    warm_up(&broker, &mut run, "zigbee2mqtt/warm", "{\"x\":1}", "warm").await;
    let mut cmnd = Subscriber::connect(broker.port, "cmnd/#").await;

    // A paused broker takes the publish into its socket but never answers.
    let pid = broker.pid().expect("running");
    unsafe_free_kill(pid, "STOP");
    let e = run.write("boiler-room", "relay", json!(false)).await;
    unsafe_free_kill(pid, "CONT");
    let e = e.unwrap_err().to_string();
    assert!(
        e.contains(&format!("no PUBACK from {} within 1s", broker.url())),
        "{e}"
    );
    // Delivered once the broker runs again (at least once).
    assert_eq!(cmnd.next(TEST_TIMEOUT).await.json, Json::Null, "OFF");

    assert_eq!(
        run.write("boiler-room", "relay", json!(true))
            .await
            .unwrap(),
        json!(true)
    );
    broker.publish("shellies/sh-3/relay/0/power", "12").await;
    assert_eq!(run.good_batch("sh-3").await["power0"], Value::U64(12));
    run.stop().await;
}

#[tokio::test]
async fn malformed_messages_are_counted_while_good_ones_flow() {
    let broker = Mosquitto::start();
    let name = unique("bad");
    let mut run = ConnectorRun::start(source(
        &name,
        &broker.url(),
        json!({"accept_new_devices": true, "max_payload": "1KiB"}),
    ));
    warm_up(
        &broker,
        &mut run,
        "tele/t1/SENSOR",
        r#"{"Time":"2026-12-01T10:00:00","AM2301":{"Temperature":1,"Humidity":1}}"#,
        "t1",
    )
    .await;
    let good = |i: u32| {
        format!(
            r#"{{"Time":"2026-12-01T10:00:{i:02}","AM2301":{{"Temperature":{i},"Humidity":50}}}}"#
        )
    };
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2000));
    let bad = [
        "{\"Time\":",
        "not json",
        "{\"AM2301\":{\"Temperature\":21.5,}}",
        "{\"Time\":\"yesterday\",\"AM2301\":{\"Temperature\":1,\"Humidity\":1}}",
        big.as_str(),
    ];
    for (i, b) in bad.iter().enumerate() {
        broker.publish("tele/t1/SENSOR", &good(i as u32 + 10)).await;
        broker.publish("tele/t1/SENSOR", b).await;
    }
    // A message without one of the pointers: that channel is bad, the other good.
    broker
        .publish(
            "tele/t1/SENSOR",
            r#"{"Time":"2026-12-01T10:01:00","AM2301":{"Temperature":7}}"#,
        )
        .await;
    for i in 10..15 {
        let v = run.good_batch("t1").await;
        assert_eq!(v["temperature"], Value::U64(i as u64));
    }
    let b = run.batch("t1").await;
    assert_eq!(b[0].value, Value::U64(7));
    assert!(b[0].quality.is_good());
    assert!(!b[1].quality.is_good(), "{:?}", b[1]);
    let st = run
        .status("t1", |s| s.health == osgate::status::Health::Degraded)
        .await;
    assert!(st.last_error.unwrap().contains("no /AM2301/Humidity"));
    let inputs = run.health.inputs_snapshot();
    let tele = inputs
        .iter()
        .find(|i| i.name == "tele/{device}/SENSOR")
        .unwrap();
    // 5 malformed + the message with a missing pointer.
    assert_eq!(tele.bad, 6, "{inputs:?}");
    assert!(tele.last_error.as_deref().unwrap().contains("Humidity"));
    run.stop().await;
}

#[tokio::test]
async fn restart_and_persistent_session() {
    let mut broker = Mosquitto::start();
    let name = unique("persist");
    let cfg = source(&name, &broker.url(), json!({"accept_new_devices": true}));
    let mut run = ConnectorRun::start(cfg.clone());
    warm_up(&broker, &mut run, "shellies/p/relay/0/power", "1", "p").await;

    // The broker restarts: the connector reconnects, resubscribes, and values flow again.
    broker.stop();
    run.status("boiler-room", |s| {
        s.health == osgate::status::Health::Offline
    })
    .await;
    broker.restart();
    let v = warm_up(&broker, &mut run, "shellies/p/relay/0/power", "2", "p").await;
    assert!(matches!(v["power0"], Value::U64(_)));

    // osgate away: what is published at QoS 1 meanwhile waits in the persistent session.
    run.stop().await;
    for i in 0..5 {
        broker
            .publish("shellies/p/relay/0/power", &format!("{}", 100 + i))
            .await;
    }
    broker.publish("zigbee2mqtt/old", "{\"x\":1}").await;
    // The new config has no zigbee2mqtt mapping, but the session still has its subscription:
    // such messages are counted as unmatched.
    let mut cfg = cfg;
    cfg["mappings"].as_array_mut().unwrap().pop();
    let mut run = ConnectorRun::start(cfg);
    let mut got = Vec::new();
    while got.len() < 5 {
        let v = run.good_batch("p").await;
        if let Value::U64(n) = v["power0"] {
            if n >= 100 {
                got.push(n);
            }
        }
    }
    assert_eq!(got, vec![100, 101, 102, 103, 104]);
    let until = tokio::time::Instant::now() + TEST_TIMEOUT;
    while run.health.counters.snapshot().unmatched != 1 {
        assert!(
            tokio::time::Instant::now() < until,
            "the zigbee2mqtt message not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.stop().await;
}

#[tokio::test]
async fn only_listed_devices_or_bounded_new_ones() {
    let broker = Mosquitto::start();
    // Only the listed devices: others are refused and counted.
    let name = unique("listed");
    let mut run = ConnectorRun::start(source(&name, &broker.url(), json!({"stale_after": "1s"})));
    let until = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        assert!(tokio::time::Instant::now() < until, "never subscribed");
        broker.publish("zigbee2mqtt/stranger", "{\"x\":1}").await;
        if run.health.counters.snapshot().refused > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(run.device_status("stranger").is_none());
    // A listed device that never sends goes offline after stale_after.
    let st = run
        .status("boiler-room", |s| {
            s.health == osgate::status::Health::Offline
        })
        .await;
    assert_eq!(st.last_error.as_deref(), Some("no message for 1s"));
    run.stop().await;

    // New devices accepted up to max_devices.
    let name = unique("bounded");
    let mut run = ConnectorRun::start(source(
        &name,
        &broker.url(),
        json!({"accept_new_devices": true, "max_devices": 2}),
    ));
    warm_up(&broker, &mut run, "zigbee2mqtt/n1", "{\"x\":1}", "n1").await;
    broker.publish("zigbee2mqtt/n2", "{\"x\":2}").await;
    broker.publish("zigbee2mqtt/n3", "{\"x\":3}").await;
    broker.publish("zigbee2mqtt/n2", "{\"x\":4}").await;
    let v = run.good_batch("n2").await;
    assert_eq!(v["x"], Value::U64(2));
    let v = run.good_batch("n2").await;
    assert_eq!(v["x"], Value::U64(4));
    assert_eq!(run.health.counters.snapshot().refused, 1);
    assert!(run.device_status("n3").is_none());
    run.stop().await;
}

#[tokio::test]
async fn tls_with_a_test_ca_and_passwords() {
    let certs = Certs::generate();
    let broker = Mosquitto::start_tls(&certs, false);
    let name = unique("tls");
    let cfg = source(
        &name,
        &broker.tls_url(),
        json!({"accept_new_devices": true,
               "tls": {"ca_file": certs.ca.cert}}),
    );
    let mut run = ConnectorRun::start(cfg);
    let until = tokio::time::Instant::now() + TEST_TIMEOUT;
    let tls = osgate::net::TlsConfig {
        ca_file: Some(certs.ca.cert.clone()),
        ..Default::default()
    };
    // The broker takes TLS clients (the harness's own check of the setup).
    drop(Subscriber::connect_tls(broker.port, "ignored/#", &tls).await);
    loop {
        assert!(tokio::time::Instant::now() < until, "nothing over TLS");
        let st = tokio::process::Command::new("mosquitto_pub")
            .args(["-p", &broker.port.to_string(), "-q", "1", "--cafile"])
            .arg(&certs.ca.cert)
            .args([
                "-h",
                "localhost",
                "-t",
                "zigbee2mqtt/secure",
                "-m",
                "{\"t\":5}",
            ])
            .status()
            .await
            .unwrap();
        assert!(st.success());
        if let Ok(v) =
            tokio::time::timeout(Duration::from_millis(500), run.good_batch("secure")).await
        {
            assert_eq!(v["t"], Value::U64(5));
            break;
        }
    }
    run.stop().await;

    let broker = Mosquitto::start_with_password("plant", "s3cret");
    // A wrong password: devices offline with the broker's answer.
    let name = unique("pw");
    let mut run = ConnectorRun::start(source(
        &name,
        &broker.url(),
        json!({"username": "plant", "password": "wrong"}),
    ));
    let st = run
        .status("boiler-room", |s| {
            s.health == osgate::status::Health::Offline
        })
        .await;
    let e = st.last_error.unwrap();
    assert!(
        e.contains("not authorized") || e.contains("password"),
        "{e}"
    );
    run.stop().await;
    let mut run = ConnectorRun::start(source(
        &name,
        &broker.url(),
        json!({"username": "plant", "password": "s3cret", "accept_new_devices": true}),
    ));
    let until = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        assert!(
            tokio::time::Instant::now() < until,
            "nothing with a password"
        );
        let st = tokio::process::Command::new("mosquitto_pub")
            .args([
                "-p",
                &broker.port.to_string(),
                "-q",
                "1",
                "-u",
                "plant",
                "-P",
                "s3cret",
            ])
            .args(["-t", "shellies/auth/relay/0/power", "-m", "9"])
            .status()
            .await
            .unwrap();
        assert!(st.success());
        if let Ok(v) =
            tokio::time::timeout(Duration::from_millis(500), run.good_batch("auth")).await
        {
            assert_eq!(v["power0"], Value::U64(9));
            break;
        }
    }
    run.stop().await;
}

#[tokio::test]
async fn the_loop_guard_skips_own_topics() {
    let broker = Mosquitto::start();
    let name = unique("loop");
    // A filter wide enough to see osgate's own telemetry of this gateway ("gw").
    let mut run = ConnectorRun::start(json!({
        "name": name, "protocol": "mqtt", "url": broker.url(), "accept_new_devices": true,
        "mappings": [{"topic": "+/{device}/{channel}", "format": "number"}]}));
    let until = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        assert!(tokio::time::Instant::now() < until, "never subscribed");
        broker.publish("telemetry/gw/temp", "1").await;
        broker.publish("plant/boiler/temp", "2").await;
        if let Ok(v) =
            tokio::time::timeout(Duration::from_millis(500), run.good_batch("boiler")).await
        {
            assert_eq!(v["temp"], Value::U64(2));
            break;
        }
    }
    // Subscribed now: the own topic, then a device's; the broker keeps their order.
    broker.publish("telemetry/gw/temp", "1").await;
    broker.publish("plant/boiler/temp", "3").await;
    loop {
        let v = run.good_batch("boiler").await;
        if v["temp"] == Value::U64(3) {
            break;
        }
    }
    assert!(run.health.counters.snapshot().refused >= 1);
    assert!(run.device_status("gw").is_none());
    run.stop().await;
}
