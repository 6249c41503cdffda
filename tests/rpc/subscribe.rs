//! `readings.subscribe`/`readings.unsubscribe`: live readings over WebSocket, filtered by
//! device and channel.

use std::time::Instant;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;

use super::{rpc_config, ws_call, ws_connect, KEY};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_subscribe_streams_over_websocket_with_a_filter() {
    let broker = Mosquitto::start();
    let gw = InProc::start(&rpc_config("gws", &broker, "50ms")).await;
    let rpc = gw.rpc(KEY).await;
    let port = gw.rpc_port();
    let mut ws = ws_connect(port, &[("x-api-key", KEY)])
        .await
        .expect("handshake");
    let v = ws_call(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 1, "method": "readings.subscribe", "params": {"device": "d1", "channel": "sp"}}),
    )
    .await;
    let sub_id = v["result"].clone();
    assert!(!sub_id.is_null(), "{v}");
    let mut got = 0;
    while got < 5 {
        let m = tokio::time::timeout(TEST_TIMEOUT, ws.next())
            .await
            .expect("notification in time")
            .unwrap()
            .unwrap();
        let tungstenite::Message::Text(t) = m else {
            continue;
        };
        let n: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(n["method"], "readings", "{n}");
        assert_eq!(n["params"]["subscription"], sub_id);
        let r = &n["params"]["result"];
        assert_eq!(r["device"], "d1", "{r}");
        assert_eq!(r["connector"], "sim");
        let readings = r["readings"].as_array().unwrap();
        assert_eq!(readings.len(), 1, "{r}");
        assert_eq!(readings[0]["channel"], "sp");
        assert_eq!(readings[0]["quality"], "good");
        assert!(readings[0]["ts"].is_i64());
        got += 1;
    }
    // A write shows up in the stream.
    rpc.result(
        "device.write",
        json!({"device": "d1", "channel": "sp", "value": 77}),
    )
    .await;
    let until = Instant::now() + TEST_TIMEOUT;
    loop {
        assert!(Instant::now() < until, "written value not streamed");
        let m = tokio::time::timeout(TEST_TIMEOUT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let tungstenite::Message::Text(t) = m {
            let n: Value = serde_json::from_str(&t).unwrap();
            if n["params"]["result"]["readings"][0]["value"] == 77.0 {
                break;
            }
        }
    }
    // Unsubscribe; an unknown device is refused; subscriptions need WebSocket.
    let v = ws_call(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 2, "method": "readings.unsubscribe", "params": [sub_id]}),
    )
    .await;
    assert_eq!(v["result"], true, "{v}");
    let v = ws_call(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 3, "method": "readings.subscribe", "params": {"device": "ghost"}}),
    )
    .await;
    assert_eq!(v["error"]["code"], 1001, "{v}");
    let v = rpc.call("readings.subscribe", json!({})).await;
    assert!(v.get("error").is_some(), "{v}");
}
