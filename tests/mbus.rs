//! M-Bus connector against a meter responder (tests/common/mbus.rs) on a real serial line (a
//! socat pty pair) and over TCP: readouts of several meters in turn, multi-telegram answers
//! with the FCB toggled, secondary selection with wildcards and collisions, a silent and a
//! corrupt meter, the `osgate mbus` commands, and readings with units in mosquitto.

use std::sync::atomic::Ordering;
use std::time::Duration;

use osgate::connectors::mbus::link::{self, Address, Endpoint, Link, Secondary, Timing};
use osgate::reading::Value;
use serde_json::json;

use crate::common::connector::{by_name, unique, ConnectorRun};
use crate::common::mbus::{corpus_frame, Meter, Responder};
use crate::common::{osgate_cmd, pty_pair, within, TEST_TIMEOUT as WAIT};

fn water(primary: u8, id: &'static str) -> Meter {
    Meter::new(primary, id, vec![corpus_frame("ACW_Itron-BM-plus-m")])
}

fn bus_settings(transport: serde_json::Value) -> serde_json::Value {
    json!({"name": unique("bus"), "protocol": "mbus", "transport": transport,
           "timeout": "200ms", "retries": 0, "backoff": "100ms", "backoff_max": "200ms"})
}

#[tokio::test]
async fn mbus_serial_bus_reads_meters_in_turn_and_isolates_bad_ones() {
    let pty = pty_pair().await;
    let mut silent = water(5, "00000005");
    silent.silent = true;
    let mut corrupt = water(6, "00000006");
    corrupt.corrupt = true;
    let multi = Meter::new(
        2,
        "00000002",
        vec![
            corpus_frame("sen_pollutherm"),
            corpus_frame("kamstrup_multical_601"),
        ],
    );
    let responder = Responder::serial(&pty.b, vec![water(1, "11490378"), multi, silent, corrupt]);
    let mut cfg = bus_settings(json!({"serial": {"port": pty.a, "baud": 38400, "parity": "none"}}));
    cfg["devices"] = json!([
        {"name": "water", "address": 1, "interval": "100ms", "channels": [
            {"name": "volume", "quantity": "volume", "unit": "m^3"},
            {"name": "volume_prev", "quantity": "volume", "storage": 1},
            {"name": "taken", "record": "date_and_time"},
            {"name": "serial", "index": 0},
            {"name": "pressure", "quantity": "pressure"}]},
        {"name": "heat", "address": 2, "interval": "100ms"},
        {"name": "silent", "address": 5, "interval": "100ms"},
        {"name": "corrupt", "address": 6, "interval": "100ms"}]);
    let mut run = ConnectorRun::start(cfg);

    // Records chosen by what they are, by derived name and by index; a missing one is bad.
    let b = run.batch("water").await;
    let v = by_name(&b);
    assert_eq!(v["volume"], Value::F64(54.321));
    assert_eq!(v["volume_prev"], Value::F64(0.0));
    assert_eq!(v["taken"], Value::Text("2014-03-13T11:11:00Z".into()));
    assert_eq!(v["serial"], Value::F64(11490378.0));
    let unit = b
        .iter()
        .find(|r| &*r.channel == "volume")
        .and_then(|r| r.unit.clone());
    assert_eq!(unit.as_deref(), Some("m^3"));
    let p = b
        .iter()
        .find(|r| &*r.channel == "pressure")
        .expect("pressure reading");
    assert!(!p.quality.is_good(), "{p:?}");

    // No channels: every record of both telegrams under derived names, so the FCB toggled.
    let h = by_name(&run.batch("heat").await);
    assert_eq!(h["energy_wh"], Value::F64(8_640_000.0), "{h:?}");
    assert_eq!(h["energy_wh_2"], Value::F64(37_351_000.0), "{h:?}");
    assert_eq!(h["flow_temperature_c_2"], Value::F64(101.69), "{h:?}");
    assert_eq!(responder.seen.repeats.load(Ordering::Relaxed), 0);

    // A silent and a corrupt meter go offline with the reason; the others keep going.
    let s = run.status("silent", |s| !s.online).await;
    assert!(
        s.last_error.as_deref().unwrap_or("").contains("no answer"),
        "{s:?}"
    );
    let c = run.status("corrupt", |s| !s.online).await;
    assert!(
        c.last_error.as_deref().unwrap_or("").contains("checksum"),
        "{c:?}"
    );
    let again = by_name(&run.batch("water").await);
    assert_eq!(again["volume"], Value::F64(54.321));
    run.stop().await;
}

fn tcp_link(addr: &str) -> Link {
    Link::new(
        Endpoint::Tcp(addr.to_string()),
        Timing {
            timeout: Duration::from_millis(150),
            retries: 0,
            baud: 38400,
        },
    )
}

#[tokio::test]
async fn mbus_secondary_scan_narrows_on_collisions_over_tcp() {
    let responder = Responder::tcp(vec![
        water(0, "12345678"),
        water(0, "12349999"),
        water(0, "55555555"),
    ])
    .await;
    let addr = responder.addr.clone().expect("tcp");
    let mut link = tcp_link(&addr);
    let deadline = tokio::time::Instant::now() + WAIT;
    let found = within(
        "a secondary scan",
        link::scan_secondary(&mut link, deadline),
    )
    .await
    .expect("scan");
    let mut ids: Vec<&str> = found.iter().map(|f| &f.address[..8]).collect();
    ids.sort();
    assert_eq!(ids, ["12345678", "12349999", "55555555"]);
    assert!(responder.seen.collisions.load(Ordering::Relaxed) >= 4);

    // A wildcard that matches two meters is refused; an exact one reads its meter.
    let both = Address::Secondary(Secondary::parse("1234FFFF").unwrap());
    let err = link.read_meter(both, 4).await.unwrap_err();
    assert!(err.to_string().contains("more than one meter"), "{err}");
    let one = Address::Secondary(Secondary::parse("12349999").unwrap());
    let t = link.read_meter(one, 4).await.expect("read");
    assert_eq!(t.len(), 1);
}

// Multi-thread: the responder answers while the test blocks on the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbus_commands_decode_scan_and_read() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mbus/libmbus");
    let (code, out, _) = osgate_cmd(&[
        "mbus",
        "decode",
        &format!("{dir}/test-frames/ACW_Itron-BM-plus-m.hex"),
    ]);
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(j["header"]["id"], "11490378");
    assert_eq!(j["header"]["manufacturer"], "ACW");
    assert_eq!(j["records"][1]["value"], 54.321);
    assert_eq!(j["records"][1]["unit"], "m^3");
    assert_eq!(j["records"][1]["name"], "volume_m3");
    let (code, _, err) = osgate_cmd(&["mbus", "decode", "10 5B 01 5D 16"]);
    assert_eq!(code, 2);
    assert!(err.contains("checksum"), "{err}");
    let (code, _, err) = osgate_cmd(&["mbus", "decode", "E5 E5"]);
    assert_eq!(code, 2);
    assert!(err.contains("left over"), "{err}");
    let (code, _, err) = osgate_cmd(&[
        "mbus",
        "decode",
        &format!("{dir}/error-frames/premature_end_of_data1.hex"),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("premature"), "{err}");

    let responder = Responder::tcp(vec![water(3, "12345678"), water(4, "87654321")]).await;
    let addr = responder.addr.clone().expect("tcp");
    let (code, out, err) = osgate_cmd(&[
        "mbus",
        "scan",
        "--tcp",
        &addr,
        "--secondary",
        "--timeout",
        "100ms",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.contains("\"1234567804770107\"") && out.contains("87654321"),
        "{out}"
    );
    let (code, out, err) = osgate_cmd(&[
        "mbus",
        "read",
        "--tcp",
        &addr,
        "--address",
        "4",
        "--timeout",
        "100ms",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"volume_m3\""), "{out}");
    let (code, _, err) = osgate_cmd(&[
        "mbus",
        "read",
        "--tcp",
        &addr,
        "--address",
        "9",
        "--timeout",
        "100ms",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no answer"), "{err}");
}

#[tokio::test]
async fn mbus_readings_reach_mqtt_with_units() {
    use crate::common::{InProc, Mosquitto, Subscriber};
    let responder = Responder::tcp(vec![
        water(0, "11490378"),
        Meter::new(7, "00000007", vec![corpus_frame("kamstrup_multical_601")]),
    ])
    .await;
    let broker = Mosquitto::start();
    // A converter whose serial side runs at 9600 baud (the object form of `tcp`).
    let tcp = json!({"address": responder.addr.clone().expect("tcp"), "baud": 9600});
    let mut conn = bus_settings(json!({ "tcp": tcp }));
    conn["name"] = json!("mbus");
    conn["devices"] = json!([
        {"name": "water", "secondary": "11490378", "interval": "200ms", "channels": [
            {"name": "volume", "quantity": "volume", "unit": "m^3"}]},
        {"name": "heat", "address": 7, "interval": "200ms"}]);
    let cfg = json!({"gateway": {"id": "gwb"},
        "sinks": [{"name": "local", "type": "mqtt", "url": broker.url(), "qos": 1}],
        "connectors": [conn]});
    let mut sub = Subscriber::connect(broker.port, "telemetry/#").await;
    let _gw = InProc::start(&cfg).await;
    let m = sub
        .next_where(WAIT, |m| m.topic == "telemetry/gwb/water/volume")
        .await;
    assert_eq!(m.json["value"], 54.321);
    assert_eq!(m.json["unit"], "m^3");
    let m = sub
        .next_where(WAIT, |m| m.topic == "telemetry/gwb/heat/flow_temperature_c")
        .await;
    assert_eq!(m.json["value"], 101.69);
    assert_eq!(m.json["unit"], "°C");
    assert_eq!(m.json["quality"], "good");
}

#[tokio::test]
async fn mbus_scan_over_rpc_pauses_the_connector_and_finds_the_meters() {
    use crate::common::{InProc, Mosquitto};
    let responder = Responder::tcp(vec![water(3, "00000003"), water(9, "00000009")]).await;
    let broker = Mosquitto::start();
    let mut conn = bus_settings(json!({"tcp": responder.addr.clone().expect("tcp")}));
    conn["name"] = json!("bus");
    conn["devices"] = json!([{"name": "w3", "address": 3, "interval": "200ms"}]);
    let cfg = json!({"gateway": {"id": "gws"},
        "sinks": [{"name": "local", "type": "mqtt", "url": broker.url(), "qos": 1}],
        "rpc": {"listen": "127.0.0.1:0", "api_keys": ["scan-key-0123456789"]},
        "connectors": [conn]});
    let gw = InProc::start(&cfg).await;
    let rpc = gw.rpc("scan-key-0123456789").await;
    // The responder takes one TCP connection at a time: the scan can only reach the bus
    // because the connector let go of it.
    let r = rpc
        .result("mbus.scan", json!({"connector": "bus", "max_time": "6s"}))
        .await;
    // 251 addresses at 200 ms each do not fit in 6 s: the answer says so.
    assert_eq!(r["complete"], false, "{r}");
    let addresses: Vec<&str> = r["meters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["address"].as_str().unwrap())
        .collect();
    assert_eq!(addresses, ["3", "9"], "{r}");
    assert_eq!(r["meters"][0]["header"]["manufacturer"], "ACW", "{r}");
    // The connector runs again and reads its meter.
    let until = tokio::time::Instant::now() + WAIT;
    loop {
        let s = rpc.result("device.status", json!({"device": "w3"})).await;
        if s["running"] == true && s["health"] == "online" {
            break;
        }
        assert!(tokio::time::Instant::now() < until, "w3 not back: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, msg) = rpc
        .error("mbus.scan", json!({"connector": "bus", "max_time": "1h"}))
        .await;
    assert_eq!(code, -32602, "{msg}");
}

/// `osgate mbus decode` takes every frame type (E5, short, control, long) and exits 2 only for
/// invalid frames: a control frame whose CI would carry a header in a long frame, and a long
/// frame with a CI it does not read, are valid.
#[test]
fn mbus_decode_accepts_every_frame_type() {
    let decode = |hex: &str| {
        let (code, out, err) = osgate_cmd(&["mbus", "decode", hex]);
        let j: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        (code, j, err)
    };
    let (code, j, err) = decode("E5");
    assert_eq!(
        (code, j["frame"]["type"].as_str()),
        (0, Some("ACK")),
        "{err}"
    );
    let (code, j, err) = decode("10 5B 01 5C 16");
    assert_eq!(code, 0, "{err}");
    assert_eq!(j["frame"]["type"], "REQ_UD2");
    assert_eq!(j["frame"]["address"], 1);
    // Control frames: C, A, CI and nothing else, whatever the CI.
    for ci in [0x72u8, 0x7A, 0x73, 0x78, 0x51] {
        let cs = 0x08u8.wrapping_add(0x0B).wrapping_add(ci);
        let (code, j, err) = decode(&format!("68 03 03 68 08 0B {ci:02X} {cs:02X} 16"));
        assert_eq!(code, 0, "CI {ci:02X}: {err}");
        assert_eq!(j["frame"]["ci"], ci, "{j}");
        assert_eq!(j["records"], json!([]), "{j}");
    }
    // A long frame with a CI this decoder does not read (alarm, 0x71): its bytes.
    let (code, j, err) = decode("68 04 04 68 08 01 71 02 7C 16");
    assert_eq!(code, 0, "{err}");
    assert_eq!(j["data"], "02");
    assert!(j["note"].as_str().unwrap_or("").contains("0x71"), "{j}");
    // A record of variable length that is no text comes out as hex.
    let (code, j, err) = decode(&format!(
        "68 0A 0A 68 08 01 78 0D FD 19 03 01 FF 80 {:02X} 16",
        [0x08u8, 0x01, 0x78, 0x0D, 0xFD, 0x19, 0x03, 0x01, 0xFF, 0x80]
            .iter()
            .fold(0u8, |s, b| s.wrapping_add(*b))
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(j["records"][0]["value"], "80 FF 01", "{j}");
    // Invalid frames exit 2.
    for bad in [
        "68 03 03 68 08 0B 72 86 16",
        "68 03 04 68",
        "10 5B 01 5C",
        "42",
    ] {
        let (code, _, _) = decode(bad);
        assert_eq!(code, 2, "{bad}");
    }
}
