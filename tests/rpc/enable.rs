//! Devices and connectors on and off at run time: `device.enable`/`device.disable`,
//! `connector.enable`/`disable`/`restart`, what a disabled device answers, how soon it stops
//! and starts, and that a disabled device stays disabled across a reload.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{assert_no_keys_in, device_status, rpc_config, wait_for, KEY};
use crate::common::rpc::Rpc;
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_and_connectors_on_off_and_restart() {
    let broker = Mosquitto::start();
    let gw = InProc::start(&rpc_config("gwm", &broker, "100ms")).await;
    let rpc = gw.rpc(KEY).await;

    // device.disable / device.enable, and a disabled device refuses requests.
    let d = rpc.result("device.disable", json!({"device": "d1"})).await;
    assert_eq!(d["enabled"], false);
    wait_for("d1 not running", async || {
        device_status(&rpc, "d1").await["running"] == false
    })
    .await;
    let (code, msg) = rpc.error("device.read", json!({"device": "d1"})).await;
    assert_eq!(code, 1005, "{msg}");
    assert!(msg.contains("disabled"), "{msg}");
    rpc.result("device.enable", json!({"device": "d1"})).await;
    wait_for("d1 running again", async || {
        device_status(&rpc, "d1").await["running"] == true
    })
    .await;

    // connector.disable / enable / restart.
    let r = rpc
        .result("connector.disable", json!({"connector": "sim"}))
        .await;
    assert_eq!(r["running"], false);
    let cs = rpc
        .result("connector.status", json!({"connector": "sim"}))
        .await;
    assert_eq!(
        (cs["running"].as_bool(), cs["health"].as_str()),
        (Some(false), Some("stopped"))
    );
    assert_eq!(device_status(&rpc, "d2").await["running"], false);
    let (code, msg) = rpc.error("device.read", json!({"device": "d2"})).await;
    assert_eq!(code, 1006, "{msg}");
    let (code, _) = rpc
        .error("connector.restart", json!({"connector": "sim"}))
        .await;
    assert_eq!(code, 1011);
    let r = rpc
        .result("connector.enable", json!({"connector": "sim"}))
        .await;
    assert_eq!(r["running"], true);
    wait_for("d2 running after enable", async || {
        device_status(&rpc, "d2").await["running"] == true
    })
    .await;
    let r = rpc
        .result("connector.restart", json!({"connector": "sim"}))
        .await;
    assert_eq!(r["running"], true);
    assert_eq!(
        rpc.error("connector.enable", json!({"connector": "nope"}))
            .await
            .0,
        1010
    );
    assert_no_keys_in(&gw);
}

/// Enables or disables device d1 of connector "sim" and asserts that its retained status says
/// `running`/`enabled` = `on` within `within` of the call.
async fn switch_within(rpc: &Rpc, status: &mut Subscriber, on: bool, within: Duration) {
    let method = if on {
        "device.enable"
    } else {
        "device.disable"
    };
    let asked = Instant::now();
    rpc.result(method, json!({"connector": "sim", "device": "d1"}))
        .await;
    let m = status
        .next_where(TEST_TIMEOUT, |m| m.json["running"] == on)
        .await;
    assert!(
        asked.elapsed() <= within,
        "running:{on} took {:?}",
        asked.elapsed()
    );
    assert_eq!(m.json["enabled"], on);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_device_stops_within_an_interval_and_survives_reload() {
    let broker = Mosquitto::start();
    // "Within one interval", with an interval long enough to absorb a loaded CI machine.
    let interval = Duration::from_millis(500);
    let cfg = rpc_config("gwl", &broker, "500ms");
    let gw = InProc::start(&cfg).await;
    let rpc = gw.rpc(KEY).await;
    let mut sub = Subscriber::connect(broker.port, "telemetry/gwl/#").await;
    let mut status = Subscriber::connect(broker.port, "status/gwl/sim/d1").await;
    sub.next_where(TEST_TIMEOUT, |m| m.topic.starts_with("telemetry/gwl/d1/"))
        .await;

    switch_within(&rpc, &mut status, false, interval).await;
    // No d1 readings for a few intervals while d2 goes on.
    sub.drain();
    sub.seen.clear();
    tokio::time::sleep(interval * 5).await;
    sub.drain();
    let d1 = sub
        .seen
        .iter()
        .filter(|m| m.topic.starts_with("telemetry/gwl/d1/"))
        .count();
    let d2 = sub
        .seen
        .iter()
        .filter(|m| m.topic == "telemetry/gwl/d2/n")
        .count();
    // A reading already queued when the flag flipped may still arrive.
    assert!(d1 <= 2 && d2 >= 3, "after disable: d1={d1} d2={d2}");

    // A retained status seen by a new subscriber says the same.
    let mut late = Subscriber::connect(broker.port, "status/gwl/sim/d1").await;
    let m = late.next(TEST_TIMEOUT).await;
    assert!(
        m.retain && m.json["running"] == false && m.json["enabled"] == false,
        "{m:?}"
    );

    // A reload that restarts the connector keeps d1 disabled.
    let mut changed = cfg.clone();
    changed["connectors"][0]["devices"][1]["interval"] = json!("150ms");
    std::fs::write(&gw.config, serde_json::to_vec_pretty(&changed).unwrap()).unwrap();
    let r = rpc.result("gateway.reload", json!([])).await;
    assert_eq!(r["connectors_started"], json!(["sim"]), "{r}");
    sub.drain();
    sub.seen.clear();
    tokio::time::sleep(interval * 5).await;
    sub.drain();
    let d1 = sub
        .seen
        .iter()
        .filter(|m| m.topic.starts_with("telemetry/gwl/d1/"))
        .count();
    assert_eq!(d1, 0, "d1 published after the reload");
    let st = device_status(&rpc, "d1").await;
    assert_eq!(
        (st["enabled"].as_bool(), st["running"].as_bool()),
        (Some(false), Some(false))
    );

    // Enable: running again within an interval, readings resume.
    switch_within(&rpc, &mut status, true, interval).await;
    sub.drain();
    sub.seen.clear();
    let ok = sub
        .collect_until(TEST_TIMEOUT, |seen| {
            seen.iter()
                .filter(|m| m.topic == "telemetry/gwl/d1/t")
                .count()
                >= 3
        })
        .await;
    assert!(ok, "d1 readings did not resume");

    // A disabled connector: its devices' retained status says not running, still enabled.
    rpc.result("connector.disable", json!({"connector": "sim"}))
        .await;
    let m = status
        .next_where(TEST_TIMEOUT, |m| m.json["running"] == false)
        .await;
    assert_eq!(m.json["enabled"], true, "{:?}", m.json);
    rpc.result("connector.enable", json!({"connector": "sim"}))
        .await;
    status
        .next_where(TEST_TIMEOUT, |m| m.json["running"] == true)
        .await;
}
