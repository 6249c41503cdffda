//! The connector kit (`connectors/device`) seen from outside, through the connectors ported onto
//! it: device health from real Modbus peers (an exception-only unit, a unit with one illegal
//! address), devices behind one Modbus TCP address sharing one connection, writes checked in
//! engineering units, simulator devices sharing a line yet ticking and controlled each on its
//! own, and a reload whose new connector cannot be built (a missing serial port) refused at once
//! while the running configuration keeps delivering.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use osgate::control::DeviceError;
use osgate::pipeline::Envelope;
use osgate::reading::{Quality, Value};
use osgate::status::Health;
use serde_json::{json, Value as Json};

use crate::common::connector::{by_name, unique, ConnectorRun};
use crate::common::*;

/// The reason of a bad reading (panics on a good one).
fn bad_reason(q: &Quality) -> &str {
    q.reason()
        .unwrap_or_else(|| panic!("expected a bad reading, got {q:?}"))
}

#[cfg(feature = "modbus")]
#[tokio::test]
async fn exception_only_unit_goes_offline_with_the_reason_and_comes_back() {
    use crate::common::modbus::{tcp_connector, ModbusSim};
    // modbus_sim serves unit 1 only: unit 2 answers every request with exception 0x0B.
    let mut sim = ModbusSim::start(1, 10).await;
    let mut run = ConnectorRun::start(tcp_connector(
        &sim.addr,
        json!({}),
        json!([{"name": "u2", "unit_id": 2, "interval": "100ms", "channels": [
            {"name": "r0", "table": "holding", "address": 0},
            {"name": "r5", "table": "input", "address": 5}]}]),
    ));
    let down = run.status("u2", |s| s.health == Health::Offline).await;
    let why = down.last_error.clone().unwrap_or_default();
    assert!(!down.online && down.running, "{down:?}");
    assert!(
        why.contains("0x0B") && why.to_lowercase().contains("gateway target"),
        "last_error does not give the exception: {down:?}"
    );
    assert!(down.errors >= 1, "{down:?}");
    // Every channel is bad with the same reason; it answered, so no channel is "degraded".
    let b = run.batch("u2").await;
    assert_eq!(b.len(), 2, "{b:?}");
    for r in &b {
        assert!(bad_reason(&r.quality).contains("0x0B"), "{r:?}");
    }
    assert_eq!(down.bad_channels, 0, "{down:?}");

    // The same address now serves unit 2: the device comes back by itself.
    sim.peer.kill().await;
    let _sim = ModbusSim::start_on(&sim.addr, 2, 10).await;
    let up = run.status("u2", |s| s.health == Health::Online).await;
    assert!(up.online && up.last_error.is_none(), "{up:?}");
    let got = run.good_batch("u2").await;
    assert!(
        matches!(got["r0"], Value::U64(_)) && matches!(got["r5"], Value::U64(_)),
        "{got:?}"
    );
    run.stop().await;
}

#[cfg(feature = "modbus")]
#[tokio::test]
async fn some_failed_channels_make_a_device_degraded() {
    use crate::common::modbus::{pymodbus, tcp_connector};
    // Registers 0..20 exist; 30 does not (exception 0x02, illegal data address).
    let spec = json!({"units": {"1": {"size": 20, "values": [
        {"table": "holding", "address": 0, "type": "u16", "value": 11}]}}});
    let peer = pymodbus(&spec, &["--tcp", "127.0.0.1:0"]).await;
    let mut run = ConnectorRun::start(tcp_connector(
        &format!("127.0.0.1:{}", peer.ready),
        json!({"max_gap": 0}),
        json!([{"name": "d", "interval": "100ms", "channels": [
            {"name": "ok", "table": "holding", "address": 0},
            {"name": "missing", "table": "holding", "address": 30}]}]),
    ));
    let st = run.status("d", |s| s.health != Health::Unknown).await;
    assert_eq!(st.health, Health::Degraded, "{st:?}");
    assert_eq!(st.bad_channels, 1, "{st:?}");
    assert!(st.online && st.running, "{st:?}");
    let why = st.last_error.clone().unwrap_or_default();
    assert!(
        why.contains("1 of 2 channels failed") && why.contains("0x02"),
        "{st:?}"
    );
    assert!(st.last_ok.is_some(), "{st:?}");
    let b = run.batch("d").await;
    let q: std::collections::HashMap<_, _> = b.iter().map(|r| (r.channel.to_string(), r)).collect();
    assert_eq!(q["ok"].value, Value::U64(11));
    assert!(q["ok"].quality.is_good(), "{:?}", q["ok"]);
    assert!(bad_reason(&q["missing"].quality).contains("0x02"));
    // It stays degraded poll after poll: no flapping status messages.
    let st = run.device_status("d").expect("status recorded");
    assert_eq!(
        (st.health, st.bad_channels),
        (Health::Degraded, 1),
        "{st:?}"
    );
    run.stop().await;
}

/// Waits until every device of `devices` has delivered an all-good batch.
#[cfg(feature = "modbus")]
async fn all_good(run: &mut ConnectorRun, devices: &[String]) {
    let want: HashSet<&str> = devices.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    within("a good batch of every device", async {
        while seen.len() < want.len() {
            if let Envelope::Batch(b) = run.next().await {
                if want.contains(&*b.device) && b.readings.iter().all(|r| r.quality.is_good()) {
                    seen.insert(b.device.to_string());
                }
            }
        }
    })
    .await;
}

#[cfg(feature = "modbus")]
#[tokio::test]
async fn devices_behind_one_address_share_one_connection() {
    use crate::common::modbus::{established_connections, tcp_connector, ModbusSim};
    let names: Vec<String> = (1..=20).map(|u| format!("unit{u}")).collect();
    let devices = |names: &[String]| -> Json {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                json!({"name": n, "unit_id": i + 1, "interval": "100ms", "channels": [
                    {"name": "r0", "table": "holding", "address": 0},
                    {"name": "r3", "table": "input", "address": 3}]})
            })
            .collect()
    };

    // Default: one connection for all twenty units.
    let sim = ModbusSim::start(20, 10).await;
    let mut run = ConnectorRun::start(tcp_connector(&sim.addr, json!({}), devices(&names)));
    all_good(&mut run, &names).await;
    assert_eq!(
        established_connections(sim.port),
        1,
        "connections from this process to {}",
        sim.addr
    );
    run.stop().await;

    // max_connections raises it, never beyond.
    let sim = ModbusSim::start(20, 10).await;
    let mut run = ConnectorRun::start(tcp_connector(
        &sim.addr,
        json!({"max_connections": 4}),
        devices(&names),
    ));
    all_good(&mut run, &names).await;
    let n = established_connections(sim.port);
    assert!(
        (2..=4).contains(&n),
        "{n} connections to {} with max_connections 4",
        sim.addr
    );
    run.stop().await;
}

const KEY: &str = "kit-test-key-0123456789";

/// Calls JSON-RPC `method` on the gateway's HTTP server at `port`; the whole answer object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_with_a_missing_serial_port_is_rejected_and_the_old_config_keeps_running() {
    let broker = Mosquitto::start();
    let mut cfg = sim_config(
        "gwkit",
        &broker.url(),
        json!([{"name": "k1", "interval": "50ms", "channels": [
            {"name": "n", "signal": "counter"}]}]),
        json!({}),
    );
    cfg["rpc"] = json!({"listen": "127.0.0.1:0", "api_keys": [KEY]});
    let mut sub = Subscriber::connect(broker.port, "telemetry/gwkit/#").await;
    let gw = InProc::start(&cfg).await;
    sub.next_where(TEST_TIMEOUT, |m| m.topic == "telemetry/gwkit/k1/n")
        .await;
    let rpc = gw.rpc(KEY).await;

    let tty = format!("/dev/ttyNOPE-{}-{}", std::process::id(), unique("x"));
    let mut new = cfg.clone();
    new["connectors"]
        .as_array_mut()
        .expect("connectors")
        .push(json!({
        "name": "rtu", "protocol": "modbus",
        "transport": {"rtu": {"port": tty, "baud": 9600}},
        "devices": [{"name": "m1", "unit_id": 1, "channels": [
            {"name": "v", "table": "holding", "address": 0}]}]}));
    std::fs::write(&gw.config, serde_json::to_vec_pretty(&new).expect("json")).expect("write");
    let t = Instant::now();
    let v = rpc.call("gateway.reload", json!([])).await;
    let took = t.elapsed();
    let err = v
        .get("error")
        .unwrap_or_else(|| panic!("the reload was applied: {v}"));
    let msg = err["message"].as_str().unwrap_or_default();
    assert_eq!(err["code"], 1020, "{v}");
    assert!(
        msg.contains(&tty) && msg.contains("no such device") && msg.contains("\"rtu\""),
        "the error does not name the connector and its port: {msg}"
    );
    assert!(msg.contains("running configuration stays"), "{msg}");
    assert!(
        took < Duration::from_secs(1),
        "the refusal took {took:?}: it must not wait for the port"
    );

    // Nothing was applied: only the simulator is configured, and it keeps delivering.
    let list = rpc.call("connectors.list", json!([])).await;
    let names: Vec<&str> = list["result"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["sim"], "{list}");
    // A new subscriber gets only what is published from now on (telemetry is not retained).
    let mut after = Subscriber::connect(broker.port, "telemetry/gwkit/k1/#").await;
    let first = after.next(TEST_TIMEOUT).await;
    assert!(!first.retain, "{first:?}");
    let a = first.json["value"].as_u64().expect("counter value");
    let second = after
        .next_where(TEST_TIMEOUT, |m| m.topic == "telemetry/gwkit/k1/n")
        .await;
    let b = second.json["value"].as_u64().expect("counter value");
    assert!(b > a, "the simulator stopped counting: {a} then {b}");
    drop(gw);
}

#[tokio::test]
async fn simulator_writes_honour_scale_offset_min_max() {
    let mut run = ConnectorRun::start(json!({"name": unique("sim"), "protocol": "simulator",
        "devices": [{"name": "w", "interval": "50ms", "channels": [
            // min/max bound the signal (raw); in engineering units that is [0·2+1, 100·2+1].
            {"name": "scaled", "signal": "constant", "value": 10, "min": 0, "max": 100,
             "writable": true, "scale": 2, "offset": 1},
            // The case: no scale, so [0, 100] in engineering units too.
            {"name": "plain", "signal": "constant", "value": 10, "min": 0, "max": 100,
             "writable": true},
            {"name": "ro", "signal": "constant", "value": 1}]}]}));
    let num = |v: &Value| v.as_f64().unwrap_or_else(|| panic!("not a number: {v:?}"));
    let got = run.good_batch("w").await;
    assert_eq!(num(&got["scaled"]), 21.0, "{got:?}");
    assert_eq!(num(&got["plain"]), 10.0, "{got:?}");

    let refused = |res: Result<Json, DeviceError>, range: &str| match res {
        Err(DeviceError::OutOfRange { channel, reason }) => {
            assert!(reason.contains(range), "{channel}: {reason}");
        }
        other => panic!("expected out of range {range}, got {other:?}"),
    };
    // The literal case.
    refused(run.write("w", "plain", json!(142.5)).await, "[0, 100]");
    // Beyond the scaled max, and below the scaled min.
    refused(run.write("w", "scaled", json!(201.5)).await, "[1, 201]");
    refused(run.write("w", "scaled", json!(0.5)).await, "[1, 201]");
    let got = run.read("w").await.expect("read");
    assert_eq!(
        num(&by_name(&got)["scaled"]),
        21.0,
        "a refused write changed it"
    );

    // 142.5 is beyond the raw max but within the scaled one: (142.5 - 1) / 2 = 70.75 raw.
    assert_eq!(
        run.write("w", "scaled", json!(142.5)).await,
        Ok(json!(142.5))
    );
    assert_eq!(run.write("w", "plain", json!(42.5)).await, Ok(json!(42.5)));
    assert_eq!(run.write("w", "scaled", json!(201)).await, Ok(json!(201.0)));
    assert_eq!(
        run.write("w", "scaled", json!(142.5)).await,
        Ok(json!(142.5))
    );
    // device.read: polled now, through the transforms.
    let now = by_name(&run.read("w").await.expect("read"));
    assert_eq!(num(&now["scaled"]), 142.5, "{now:?}");
    assert_eq!(num(&now["plain"]), 42.5, "{now:?}");
    // The scheduled readings say the same once the batches polled before the writes are out.
    within("the written values in a batch", async {
        loop {
            let got = run.good_batch("w").await;
            if num(&got["scaled"]) == 142.5 && num(&got["plain"]) == 42.5 {
                break;
            }
        }
    })
    .await;
    assert_eq!(
        run.write("w", "ro", json!(1)).await,
        Err(DeviceError::NotWritable("ro".into()))
    );
    run.stop().await;
}

/// The simulator's devices share a line (one task polling them in turn): each still ticks at
/// its own interval, keeps its own signals and written values, and is disabled, read and
/// written on its own.
#[tokio::test]
async fn simulator_devices_on_one_line_keep_their_own_interval_and_control() {
    let mut run = ConnectorRun::start(json!({"name": unique("sim"), "protocol": "simulator",
        "devices": [
            {"name": "fast", "interval": "20ms", "channels": [
                {"name": "n", "signal": "counter"},
                {"name": "sp", "signal": "sine", "min": 0, "max": 100, "writable": true}]},
            {"name": "slow", "interval": "1h", "channels": [
                {"name": "n", "signal": "counter"}]},
            {"name": "other", "interval": "20ms", "channels": [
                {"name": "sp", "signal": "constant", "value": 5, "min": 0, "max": 100,
                 "writable": true}]}]}));
    let count = |v: &Value| match v {
        Value::U64(n) => *n,
        other => panic!("not a counter: {other:?}"),
    };
    // Five ticks of `fast` counting from 0; `slow` (hourly) ticked once, at the start.
    let (mut fast, mut slow) = (Vec::new(), 0);
    within("five batches of fast", async {
        while fast.len() < 5 {
            if let Envelope::Batch(b) = run.next().await {
                match &*b.device {
                    "fast" => fast.push(count(&by_name(&b.readings)["n"])),
                    "slow" => slow += 1,
                    _ => {}
                }
            }
        }
    })
    .await;
    assert_eq!(fast, [0, 1, 2, 3, 4]);
    assert_eq!(slow, 1, "the hourly device ticked with its line mates");

    // A write reaches its own device only.
    assert_eq!(run.write("other", "sp", json!(42)).await, Ok(json!(42.0)));
    let other = by_name(&run.read("other").await.expect("read other"));
    assert_eq!(other["sp"], Value::F64(42.0));
    let got = by_name(&run.read("fast").await.expect("read fast"));
    assert_ne!(got["sp"], Value::F64(42.0), "{got:?}");

    // Disabling `fast` leaves its line mates running.
    run.control
        .set_device_enabled(&run.name, "fast", false)
        .expect("known device");
    run.status("fast", |s| !s.enabled && !s.running).await;
    assert_eq!(
        run.read("fast").await,
        Err(DeviceError::Disabled("fast".into()))
    );
    let mut others = 0;
    within("three batches of other while fast is off", async {
        while others < 3 {
            if let Envelope::Batch(b) = run.next().await {
                assert_ne!(&*b.device, "fast", "a disabled device ticked");
                assert_ne!(&*b.device, "slow", "the hourly device ticked again");
                if &*b.device == "other" {
                    assert_eq!(by_name(&b.readings)["sp"], Value::F64(42.0));
                    others += 1;
                }
            }
        }
    })
    .await;

    // Enabled again, it goes on counting where it stopped.
    run.control
        .set_device_enabled(&run.name, "fast", true)
        .expect("known device");
    let again = count(&run.good_batch("fast").await["n"]);
    assert!(again > 4, "the counter restarted: {again}");
    assert_eq!(
        run.device_status("slow").map(|s| s.health),
        Some(Health::Online)
    );
    run.stop().await;
}
