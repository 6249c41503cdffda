//! The JSON-RPC protocol at its edges: malformed requests, wrong params, batches and their
//! limit, bodies over the size limit (HTTP and WebSocket), none of which changes anything; and
//! answers in time while the pipeline runs at full load.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;

use super::{device_status, rpc_config, wait_for, ws_connect, KEY};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_are_answered_and_change_nothing() {
    let broker = Mosquitto::start();
    let gw = InProc::start(&rpc_config("gwp", &broker, "100ms")).await;
    let rpc = gw.rpc(KEY).await;
    let port = gw.rpc_port();

    // Malformed JSON: parse error.
    let (s, v) = rpc
        .post(
            Some(KEY),
            r#"{"jsonrpc":"2.0","id":1,"method":"device.disable","#,
        )
        .await;
    assert_eq!(v["error"]["code"], -32700, "{v}");
    assert!(s == 200 || s == 400, "{s}");
    // Not a request object: invalid request.
    let (_, v) = rpc
        .post(Some(KEY), json!({"jsonrpc": "2.0", "id": 1}).to_string())
        .await;
    assert_eq!(v["error"]["code"], -32600, "{v}");
    for bad in [
        json!({"jsonrpc": "1.0", "id": 1, "method": "gateway.status"}),
        json!({"jsonrpc": "2.0", "id": 1, "method": 5}),
        json!([]),
    ] {
        let (_, v) = rpc.post(Some(KEY), bad.to_string()).await;
        assert_eq!(v["error"]["code"], -32600, "{bad}: {v}");
    }
    // Valid JSON that is no request at all (jsonrpsee calls it a parse error).
    let (_, v) = rpc.post(Some(KEY), "42").await;
    assert!(
        [-32600, -32700].contains(&v["error"]["code"].as_i64().unwrap_or(0)),
        "{v}"
    );
    // Unknown method.
    assert_eq!(rpc.error("device.explode", json!({})).await.0, -32601);
    // Wrong param types, missing and unknown params: invalid params, no effect.
    for p in [
        json!({"device": 5}),
        json!({"device": ["d1"]}),
        json!({}),
        json!({"device": "d1", "extra": true}),
        json!("d1"),
    ] {
        let (code, msg) = rpc.error("device.disable", p.clone()).await;
        assert_eq!(code, -32602, "{p}: {msg}");
    }
    assert_eq!(
        rpc.error("device.write", json!({"device": "d1", "channel": "sp"}))
            .await
            .0,
        -32602
    );
    assert_eq!(device_status(&rpc, "d1").await["enabled"], true);

    // A batch: one answer per call, in the same order; an invalid entry fails alone.
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "device.status", "params": {"device": 5}},
        {"jsonrpc": "2.0", "id": 2, "method": "device.status", "params": {"device": "d2"}},
        {"jsonrpc": "2.0", "id": 3, "method": "nope"}
    ]);
    let (s, v) = rpc.post(Some(KEY), batch.to_string()).await;
    assert_eq!(s, 200);
    let answers = v.as_array().expect("batch answer");
    assert_eq!(answers.len(), 3, "{v}");
    let by_id = |id: i64| answers.iter().find(|a| a["id"] == id).unwrap();
    assert_eq!(by_id(1)["error"]["code"], -32602);
    assert_eq!(by_id(2)["result"]["device"], "d2");
    assert_eq!(by_id(3)["error"]["code"], -32601);
    // A batch over the limit is refused as a whole.
    let big: Vec<Value> = (0..osgate::rpc::MAX_BATCH + 1)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "device.disable", "params": {"device": "d1"}}))
        .collect();
    let (_, v) = rpc.post(Some(KEY), Value::from(big).to_string()).await;
    // Its own code, in osgate's range (jsonrpsee uses -32010 for this).
    assert_eq!(
        v["error"]["code"],
        osgate::rpc::codes::BATCH_TOO_LARGE,
        "{v}"
    );
    assert_eq!(v["error"]["code"], 1030, "{v}");
    assert_eq!(device_status(&rpc, "d1").await["enabled"], true);
    // An id that is an object, an array or a boolean: an invalid request, not `null`.
    for id in [json!({}), json!([1]), json!(true)] {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "device.disable", "params": {"device": "d1"}});
        let (s, v) = rpc.post(Some(KEY), call.to_string()).await;
        assert_eq!((s, &v["error"]["code"]), (200, &json!(-32600)), "{id}: {v}");
        assert!(
            v["error"]["data"].as_str().unwrap().contains("\"id\""),
            "{v}"
        );
    }
    assert_eq!(device_status(&rpc, "d1").await["enabled"], true);
    // A subscription over plain HTTP says it needs a WebSocket.
    let (_, v) = rpc
        .post(
            Some(KEY),
            json!({"jsonrpc": "2.0", "id": 9, "method": "readings.subscribe"}).to_string(),
        )
        .await;
    assert_eq!(
        v["error"]["code"],
        osgate::rpc::codes::WEBSOCKET_REQUIRED,
        "{v}"
    );
    assert_eq!(v["id"], 9, "{v}");
    assert!(
        v["error"]["data"].as_str().unwrap().contains("WebSocket"),
        "{v}"
    );
    // A WebSocket upgrade without Sec-WebSocket-Key: 400, not 200.
    let resp = rpc
        .http
        .get(&rpc.url)
        .bearer_auth(KEY)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);

    // A body over the size limit: refused before parsing, nothing runs.
    let padding = "x".repeat(osgate::rpc::MAX_REQUEST_BODY as usize);
    let huge = json!({"jsonrpc": "2.0", "id": 1, "method": "device.disable", "params": {"device": "d1", "pad": padding}});
    // Its own connection: the server answers early and closes it, which must not hit a
    // pooled connection of the later calls.
    let once = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(TEST_TIMEOUT)
        .build()
        .unwrap();
    let resp = once
        .post(&rpc.url)
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(huge.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], -32007, "{v}");
    assert_eq!(device_status(&rpc, "d1").await["enabled"], true);
    // 10 MB: the same 413, after the whole body was sent (the connection was once closed
    // mid-send, so the client saw a broken pipe instead of an answer). Several times, as it
    // was a race.
    let ten_mb = vec![b' '; 10_000_000];
    for _ in 0..3 {
        let resp = once
            .post(&rpc.url)
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(ten_mb.clone())
            .send()
            .await
            .expect("an answer, not a reset connection");
        assert_eq!(resp.status().as_u16(), 413);
    }
    // The same over WebSocket: an error answer or a closed socket, never a call.
    let mut ws = ws_connect(port, &[("x-api-key", KEY)])
        .await
        .expect("handshake");
    ws.send(tungstenite::Message::text(huge.to_string()))
        .await
        .unwrap();
    match tokio::time::timeout(TEST_TIMEOUT, ws.next())
        .await
        .expect("an answer or a close in time")
    {
        Some(Ok(tungstenite::Message::Text(t))) => {
            let v: Value = serde_json::from_str(&t).unwrap();
            assert_eq!(v["error"]["code"], -32007, "{v}");
        }
        Some(Ok(tungstenite::Message::Close(_))) | None | Some(Err(_)) => {}
        Some(Ok(other)) => panic!("unexpected frame {other:?}"),
    }
    assert_eq!(device_status(&rpc, "d1").await["enabled"], true);
    // The server is still fine.
    assert_eq!(
        rpc.result("gateway.status", json!([])).await["gateway"],
        "gwp"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stays_responsive_while_the_pipeline_runs_at_full_load() {
    let broker = Mosquitto::start();
    // 20 devices × 10 channels every millisecond: more than the MQTT sink can deliver, so the
    // pipeline runs saturated (the connectors wait on the full queue).
    let devices: Vec<Value> = (0..20)
        .map(|i| {
            json!({"name": format!("load{i}"), "interval": "1ms", "channels":
                (0..10).map(|c| json!({"name": format!("c{c}"), "signal": "counter"})).collect::<Vec<_>>()})
        })
        .collect();
    let mut cfg = sim_config(
        "gwf",
        &broker.url(),
        Value::from(devices),
        json!({"queue": 64}),
    );
    cfg["rpc"] = json!({"listen": "127.0.0.1:0", "api_keys": [KEY]});
    let gw = InProc::start(&cfg).await;
    let rpc = gw.rpc(KEY).await;
    let mut lagged = 0;
    wait_for("the pipeline to saturate", async || {
        let st = rpc.result("gateway.status", json!([])).await;
        lagged = st["connectors"][0]["counters"]["lagged"]
            .as_u64()
            .unwrap_or(0);
        lagged > 100
    })
    .await;
    let mut worst = Duration::ZERO;
    let mut readings = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let st = rpc.result("gateway.status", json!([])).await;
        worst = worst.max(t.elapsed());
        readings.push(
            st["connectors"][0]["counters"]["readings"]
                .as_u64()
                .unwrap(),
        );
        let t = Instant::now();
        rpc.result("device.read", json!({"device": "load3"})).await;
        worst = worst.max(t.elapsed());
    }
    assert!(
        readings.windows(2).all(|w| w[0] <= w[1]) && readings.last() > readings.first(),
        "the pipeline did not keep running: {readings:?}"
    );
    eprintln!("slowest of 60 calls under full load: {worst:?}");
    assert!(
        worst < Duration::from_millis(500),
        "slowest call took {worst:?}"
    );
}
