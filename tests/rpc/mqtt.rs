//! Management over MQTT: commands (`command/{gateway}/{device}/{channel}/set` and their
//! results), retained commands, and RPC over MQTT (opt-in).

use std::time::{Duration, Instant};

use serde_json::json;

use super::{rpc_config, KEY};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_command_writes_and_answers_on_result() {
    let broker = Mosquitto::start();
    let gw = InProc::start(&rpc_config("gwc", &broker, "100ms")).await;
    let rpc = gw.rpc(KEY).await;
    let mut results = Subscriber::connect(broker.port, "command/gwc/+/+/result").await;
    // The command client subscribes after the gateway connects; retry until it answers.
    let ok = broker
        .publish_until_answered(
            "command/gwc/d1/sp/set",
            r#"{"value":42,"id":"abc"}"#,
            &mut results,
        )
        .await;
    assert_eq!(ok.topic, "command/gwc/d1/sp/result");
    assert_eq!(ok.json["id"], "abc");
    assert_eq!(ok.json["ok"], true, "{:?}", ok.json);
    assert!(!ok.retain);
    // Read back through the RPC: the command went through the same write path.
    let r = rpc.result("device.read", json!({"device": "d1"})).await;
    assert_eq!(r["readings"][1]["value"], 42.0, "{r}");

    broker
        .publish("command/gwc/d1/t/set", r#"{"value":1,"id":"ro"}"#)
        .await;
    let m = results.next(TEST_TIMEOUT).await;
    assert_eq!(
        (m.json["id"].as_str(), m.json["ok"].as_bool()),
        (Some("ro"), Some(false))
    );
    assert!(
        m.json["error"].as_str().unwrap().contains("not writable"),
        "{:?}",
        m.json
    );
    broker
        .publish("command/gwc/d1/sp/set", r#"{"value":500,"id":"big"}"#)
        .await;
    let m = results.next(TEST_TIMEOUT).await;
    assert_eq!(m.json["ok"], false);
    assert!(
        m.json["error"].as_str().unwrap().contains("out of range"),
        "{:?}",
        m.json
    );
    broker
        .publish("command/gwc/ghost/x/set", r#"{"value":1,"id":"g"}"#)
        .await;
    let m = results.next(TEST_TIMEOUT).await;
    assert_eq!(m.topic, "command/gwc/ghost/x/result");
    assert!(
        m.json["error"].as_str().unwrap().contains("unknown device"),
        "{:?}",
        m.json
    );
    broker.publish("command/gwc/d1/sp/set", "not json").await;
    let m = results.next(TEST_TIMEOUT).await;
    assert_eq!(m.json["ok"], false);
    assert!(
        m.json["error"]
            .as_str()
            .unwrap()
            .contains("invalid command"),
        "{:?}",
        m.json
    );
    // A payload over the limit (2 MiB, once silently dropped with the connection) gets an
    // error result and a warning in the log; the client stays connected.
    let dir = temp_dir();
    let file = dir.path().join("big.json");
    let big = format!(r#"{{"value":1,"id":"x","pad":"{}"}}"#, "x".repeat(2 << 20));
    std::fs::write(&file, big).unwrap();
    let st = tokio::process::Command::new("mosquitto_pub")
        .args([
            "-p",
            &broker.port.to_string(),
            "-q",
            "1",
            "-t",
            "command/gwc/d1/sp/set",
            "-f",
        ])
        .arg(&file)
        .status()
        .await
        .expect("run mosquitto_pub");
    assert!(st.success());
    let m = results.next(TEST_TIMEOUT).await;
    assert_eq!(m.json["ok"], false, "{:?}", m.json);
    let e = m.json["error"].as_str().unwrap();
    assert!(e.contains("at most 65536"), "{e}");
    gw.wait_log("MQTT command refused: payload too large", TEST_TIMEOUT)
        .await;
    broker
        .publish("command/gwc/d1/t/set", r#"{"value":1,"id":"after"}"#)
        .await;
    let m = results.next(TEST_TIMEOUT).await;
    assert_eq!(m.json["id"], "after", "{:?}", m.json);
    // The value written by the command is still in force.
    let r = rpc.result("device.read", json!({"device": "d1"})).await;
    assert_eq!(r["readings"][1]["value"], 42.0, "{r}");

    // After a broker restart the command client reconnects and subscribes again.
    let mut broker = broker;
    broker.stop();
    broker.restart();
    let until = Instant::now() + TEST_TIMEOUT;
    loop {
        assert!(
            Instant::now() < until,
            "no command result after the broker restart"
        );
        broker
            .publish("command/gwc/d1/sp/set", r#"{"value":43,"id":"restarted"}"#)
            .await;
        let got = tokio::time::timeout(
            Duration::from_millis(500),
            // Its own id: the persistent subscriber may be sent an earlier result again.
            results.next_where(TEST_TIMEOUT, |m| m.json["id"] == "restarted"),
        )
        .await;
        if let Ok(m) = got {
            assert_eq!(m.json["ok"], true, "{:?}", m.json);
            break;
        }
    }
    let r = rpc.result("device.read", json!({"device": "d1"})).await;
    assert_eq!(r["readings"][1]["value"], 43.0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_over_mqtt_is_opt_in() {
    let broker = Mosquitto::start();
    let mut cfg = rpc_config("gwq", &broker, "100ms");
    cfg["rpc"]["mqtt"] = json!(true);
    let _gw = InProc::start(&cfg).await;
    let mut resp = Subscriber::connect(broker.port, "rpc/gwq/response").await;
    let req = json!({"jsonrpc": "2.0", "id": "q1", "method": "device.status", "params": {"device": "d2"}}).to_string();
    let m = broker
        .publish_until_answered("rpc/gwq/request", &req, &mut resp)
        .await;
    assert_eq!(m.json["id"], "q1");
    assert_eq!(m.json["result"]["device"], "d2", "{:?}", m.json);

    // Off by default: the same request gets no answer.
    let broker2 = Mosquitto::start();
    let gw2 = InProc::start(&rpc_config("gwq", &broker2, "100ms")).await;
    let rpc2 = gw2.rpc(KEY).await;
    let mut resp2 = Subscriber::connect(broker2.port, "rpc/gwq/response").await;
    let mut results = Subscriber::connect(broker2.port, "command/gwq/+/+/result").await;
    // Wait until the command client is subscribed (a command is answered), then ask.
    broker2
        .publish_until_answered("command/gwq/d1/sp/set", r#"{"value":1}"#, &mut results)
        .await;
    broker2.publish("rpc/gwq/request", &req).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(1), resp2.next(TEST_TIMEOUT))
            .await
            .is_err(),
        "RPC over MQTT answered although rpc.mqtt is off"
    );
    assert_eq!(
        rpc2.result("gateway.status", json!([])).await["gateway"],
        "gwq"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_command_runs_once_live_and_never_from_the_store() {
    // What docs/management.md says about retained commands, shown against mosquitto: the broker
    // forwards a retained publish to subscribers already connected with the retain flag
    // cleared (MQTT 3.1.1, 3.3.1.3), so the running gateway executes it once; the stored copy
    // arrives with the flag set on every later subscription and is ignored.
    let broker = Mosquitto::start();
    let cfg = rpc_config("gwr", &broker, "100ms");
    let gw = InProc::start(&cfg).await;
    let rpc = gw.rpc(KEY).await;
    let mut results = Subscriber::connect(broker.port, "command/gwr/+/+/result").await;
    // The command client subscribes at a moment the test cannot see: a plain command first.
    broker
        .publish_until_answered(
            "command/gwr/d1/sp/set",
            r#"{"value":1,"id":"ready"}"#,
            &mut results,
        )
        .await;
    let st = tokio::process::Command::new("mosquitto_pub")
        .args(["-p", &broker.port.to_string(), "-q", "1", "-r"])
        .args([
            "-t",
            "command/gwr/d1/sp/set",
            "-m",
            r#"{"value":42.125,"id":"kept"}"#,
        ])
        .status()
        .await
        .unwrap();
    assert!(st.success());
    let m = results
        .next_where(TEST_TIMEOUT, |m| m.json["id"] == "kept")
        .await;
    assert_eq!(m.json["ok"], true, "{:?}", m.json);
    let r = rpc.result("device.read", json!({"device": "d1"})).await;
    assert_eq!(r["readings"][1]["value"], 42.125, "{r}");
    drop(rpc);
    drop(gw);

    // A new gateway subscribes: the stored command comes with the retain flag and is ignored.
    let gw = InProc::start(&cfg).await;
    gw.wait_log("retained command ignored", TEST_TIMEOUT).await;
    let rpc = gw.rpc(KEY).await;
    let r = rpc.result("device.read", json!({"device": "d1"})).await;
    assert_ne!(r["readings"][1]["value"], 42.125, "{r}");
    results.drain();
    let kept = results
        .seen
        .iter()
        .filter(|m| m.json["id"] == "kept")
        .count();
    assert!(kept <= 1, "executed again: {:?}", results.seen);
}
