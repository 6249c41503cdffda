//! The OPC-UA connector against a second server stack, node-opcua (`tests/peers/node-opcua`):
//! subscriptions and polled reads of numbers, text and booleans, a write, Basic256Sha256
//! SignAndEncrypt with node-opcua's certificate (DNS name first, URI last), a percent deadband
//! the server computes against an EURange, a filter the server refuses, and array elements.

use osgate::reading::Value;
use serde_json::{json, Value as Json};

use super::{collect, connector_at, observe};
use crate::common::connector::ConnectorRun;
use crate::common::opcua::{NodeOpcuaPeer, NS_URI};
use crate::common::temp_dir;

fn node(name: &str) -> String {
    format!("nsu={NS_URI};s={name}")
}

/// Temperature (Double), Counter (UInt32), Running (Boolean), State (String) and Setpoint
/// (Double, writable) as channels of a device in `mode`.
fn plant(mode: &str) -> Json {
    json!({"name": "plc", "mode": mode, "publishing_interval": "200ms", "interval": "300ms",
        "channels": [
            {"name": "temperature", "node": node("Temperature"), "unit": "°C"},
            {"name": "counter", "node": node("Counter")},
            {"name": "running", "node": node("Running")},
            {"name": "state", "node": node("State")},
            {"name": "setpoint", "node": node("Setpoint"), "writable": true}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_opcua_subscriptions_polls_and_a_write() {
    let peer = NodeOpcuaPeer::start().await;
    for mode in ["subscribe", "poll"] {
        let pki = temp_dir();
        let mut run =
            ConnectorRun::start(connector_at(&peer.url, pki.path(), json!({}), plant(mode)));
        let seen = collect(&mut run, "plc", |s| {
            // The counter moved (polls can be quicker than its 500 ms step).
            s.get("counter")
                .is_some_and(|v| v.len() >= 2 && v[0].value != v[v.len() - 1].value)
                && ["temperature", "running", "state", "setpoint"]
                    .iter()
                    .all(|c| s.contains_key(*c))
        })
        .await;
        let counter: Vec<u64> = seen["counter"]
            .iter()
            .map(|r| match r.value {
                Value::U64(x) => x,
                ref v => panic!("{mode}: counter is a UInt32, got {v:?}"),
            })
            .collect();
        assert!(
            counter.windows(2).all(|w| w[1] >= w[0]),
            "{mode}: {counter:?}"
        );
        assert!(counter.last() > counter.first(), "{mode}: {counter:?}");
        for r in &seen["temperature"] {
            let t = r.value.as_f64().expect("a number");
            assert!((14.9..=25.1).contains(&t), "{mode}: temperature {t}");
        }
        assert!(
            seen["running"]
                .iter()
                .all(|r| matches!(r.value, Value::Bool(_))),
            "{mode}: {:?}",
            seen["running"]
        );
        assert!(
            seen["state"]
                .iter()
                .all(|r| r.value == Value::Text("running".into())
                    || r.value == Value::Text("stopped".into())),
            "{mode}: {:?}",
            seen["state"]
        );
        let x = if mode == "poll" { 7 } else { 42 };
        let took = run
            .write("plc", "setpoint", json!(x as f64 + 0.5))
            .await
            .expect("write");
        assert_eq!(took, json!(x as f64 + 0.5));
        assert!(
            peer.printed(&format!("write Setpoint {x}.5")).await,
            "{mode}: the server did not get the write: {}",
            peer.output()
        );
        let back = collect(&mut run, "plc", |s| {
            s.get("setpoint")
                .is_some_and(|v| v.iter().any(|r| r.value == Value::F64(x as f64 + 0.5)))
        })
        .await;
        assert!(!back.is_empty());
        run.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_opcua_sign_and_encrypt_with_its_own_certificate() {
    // node-opcua writes the DNS name first and the application URI last; the URL names the
    // host by that first entry ("localhost"), the case the library alone refused.
    let peer = NodeOpcuaPeer::start_secure().await;
    let pki = temp_dir();
    let trusted = temp_dir();
    std::fs::copy(peer.cert(), trusted.path().join("node-opcua.pem")).expect("server cert");
    let sec = json!({"security": {"policy": "Basic256Sha256", "mode": "SignAndEncrypt",
        "trusted_dir": trusted.path()}});
    let url = format!("opc.tcp://localhost:{}/osgate/", peer.port);
    let mut run = ConnectorRun::start(connector_at(&url, pki.path(), sec, plant("subscribe")));
    collect(&mut run, "plc", |s| {
        s.get("counter").is_some_and(|v| v.len() >= 2)
    })
    .await;
    run.write("plc", "setpoint", json!(3.25))
        .await
        .expect("encrypted write");
    assert!(
        peer.printed("write Setpoint 3.25").await,
        "{}",
        peer.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_opcua_applies_a_percent_deadband_of_the_eurange() {
    // Level: an AnalogItem with EURange 0..100, +0.5 every 100 ms. 2 % of the range is 2.0:
    // steps inside the band are not sent, only moves of more than 2.0 from the last sent value.
    let peer = NodeOpcuaPeer::start().await;
    let pki = temp_dir();
    let dev = json!({"name": "plc", "publishing_interval": "100ms", "sampling_interval": "100ms",
        "queue_size": 50, "channels": [
            {"name": "level", "node": node("Level")},
            {"name": "level_2pct", "node": node("Level"), "server_deadband": "2%"},
            {"name": "temperature_pct", "node": node("Temperature"), "server_deadband": "2%"},
            {"name": "state_abs", "node": node("State"), "server_deadband": 0.5}]});
    let mut run = ConnectorRun::start(connector_at(&peer.url, pki.path(), json!({}), dev));
    let seen = observe(&mut run, "plc", |s| {
        s.bad.contains_key("temperature_pct")
            && s.bad.contains_key("state_abs")
            && s.numbers("level_2pct").len() >= 5
    })
    .await;
    // Temperature has no EURange: refused before the server is asked.
    assert!(
        seen.bad["temperature_pct"].contains("no EURange"),
        "{seen:?}"
    );
    // A deadband on a String: the server's refusal, named.
    assert_eq!(
        seen.bad["state_abs"],
        "BadFilterNotAllowed: the server refused server_deadband 0.5 (it needs a numeric node)"
    );
    let (all, banded) = (seen.numbers("level"), seen.numbers("level_2pct"));
    assert!(
        all.windows(2).any(|w| (w[1] - w[0]).abs() <= 2.0),
        "without the deadband the small steps arrive: {all:?}"
    );
    assert!(
        banded.windows(2).all(|w| (w[1] - w[0]).abs() > 2.0),
        "with 2 % of 0..100 only moves of more than 2.0: {banded:?}"
    );
    assert!(
        all.len() > banded.len() * 3,
        "the deadband holds most changes back: {} vs {}",
        all.len(),
        banded.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_opcua_array_elements_read_subscribe_and_write() {
    // Vector: Double[5] = [0.5, 1.5, 2.5, Counter, 4.5]; Targets: Int32[4], writable.
    let peer = NodeOpcuaPeer::start().await;
    let channels = json!([
        {"name": "v1", "node": node("Vector"), "index": 1},
        {"name": "v3", "node": node("Vector"), "index": 3},
        {"name": "v9", "node": node("Vector"), "index": 9},
        {"name": "vector", "node": node("Vector")},
        {"name": "t2", "node": node("Targets"), "index": 2, "writable": true, "type": "integer"}]);
    for (mode, x) in [("subscribe", 7), ("poll", 9)] {
        let pki = temp_dir();
        let dev = json!({"name": "plc", "mode": mode, "publishing_interval": "200ms",
            "interval": "300ms", "channels": channels});
        let mut run = ConnectorRun::start(connector_at(&peer.url, pki.path(), json!({}), dev));
        let seen = observe(&mut run, "plc", |s| {
            s.bad.contains_key("v9")
                && s.rose("v3")
                && s.good.contains_key("v1")
                && s.good.contains_key("vector")
        })
        .await;
        assert_eq!(
            seen.bad["v9"], "BadIndexRangeNoData: index 9 is not in the node's array",
            "{mode}"
        );
        assert!(
            seen.numbers("v1").iter().all(|&x| x == 1.5),
            "{mode}: {seen:?}"
        );
        let v3 = seen.numbers("v3");
        assert!(
            v3.windows(2).all(|w| w[1] >= w[0]),
            "{mode}: v3 follows Counter: {v3:?}"
        );
        let Value::Text(whole) = &seen.good["vector"][0].value else {
            panic!("{mode}: the whole array is text: {:?}", seen.good["vector"]);
        };
        assert!(whole.starts_with("[0.5,1.5,2.5,"), "{mode}: {whole}");
        run.write("plc", "t2", json!(x))
            .await
            .expect("element write");
        // Only element 2 changed on the server.
        let want = if x == 7 { "[0,0,7,0]" } else { "[0,0,9,0]" };
        assert!(
            peer.printed(&format!("write Targets {want}")).await,
            "{mode}: {}",
            peer.output()
        );
        run.stop().await;
    }
}
