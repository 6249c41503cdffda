//! API keys: a missing or wrong key gets 401 on HTTP and on the WebSocket handshake and
//! nothing runs; without keys the server is open to loopback only, with a warning.

use serde_json::{json, Value};

use super::{device_status, rpc_config, ws_call, ws_connect, KEY};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_key_gets_401_on_http_and_websocket() {
    let broker = Mosquitto::start();
    let gw = InProc::start(&rpc_config("gwa", &broker, "100ms")).await;
    let rpc = gw.rpc(KEY).await;
    let port = gw.rpc_port();
    let disable =
        json!({"jsonrpc": "2.0", "id": 1, "method": "device.disable", "params": {"device": "d1"}})
            .to_string();

    // HTTP: no key, wrong key, wrong scheme, a prefix of a key: 401 and the method never runs.
    let (s, _) = rpc.post(None, disable.clone()).await;
    assert_eq!(s, 401);
    let (s, _) = rpc.post(Some("wrong-key-123"), disable.clone()).await;
    assert_eq!(s, 401);
    let (s, _) = rpc.post(Some(&KEY[..KEY.len() - 1]), disable.clone()).await;
    assert_eq!(s, 401);
    for (h, v) in [
        ("x-api-key", "nope-nope"),
        ("authorization", &format!("Basic {KEY}")),
    ] {
        let resp = rpc
            .http
            .post(&rpc.url)
            .header(h, v)
            .header("content-type", "application/json")
            .body(disable.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{h}: {v}");
    }
    assert_eq!(device_status(&rpc, "d1").await["enabled"], true);

    // X-API-Key with the second key works.
    let resp = rpc
        .http
        .post(&rpc.url)
        .header("x-api-key", "second-key-xyz")
        .header("content-type", "application/json")
        .body(json!({"jsonrpc": "2.0", "id": 1, "method": "gateway.status"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["result"]["gateway"], "gwa");

    // WebSocket: the handshake itself is refused without the right key.
    assert_eq!(ws_connect(port, &[]).await.err(), Some(401));
    assert_eq!(
        ws_connect(port, &[("authorization", "Bearer wrong-key-123")])
            .await
            .err(),
        Some(401)
    );
    assert_eq!(
        ws_connect(port, &[("x-api-key", "wrong-key-123")])
            .await
            .err(),
        Some(401)
    );
    let mut ws = ws_connect(port, &[("authorization", &format!("Bearer {KEY}"))])
        .await
        .expect("handshake with the key");
    let v = ws_call(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 3, "method": "gateway.status"}),
    )
    .await;
    assert_eq!(v["result"]["gateway"], "gwa");
    let mut ws = ws_connect(port, &[("x-api-key", "second-key-xyz")])
        .await
        .expect("handshake with X-API-Key");
    let v = ws_call(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 4, "method": "devices.list"}),
    )
    .await;
    assert_eq!(v["result"].as_array().unwrap().len(), 2);
    assert!(!gw.log_text().contains("wrong-key-123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_the_server_is_loopback_only_and_warns() {
    let broker = Mosquitto::start();
    let mut cfg = rpc_config("gwk", &broker, "100ms");
    cfg["rpc"] = json!({"listen": "127.0.0.1:0"});
    let gw = InProc::start(&cfg).await;
    let rpc = gw.rpc(KEY).await;
    let (s, v) = rpc
        .post(
            None,
            json!({"jsonrpc": "2.0", "id": 1, "method": "gateway.status"}).to_string(),
        )
        .await;
    assert_eq!((s, &v["result"]["gateway"]), (200, &json!("gwk")), "{v}");
    let line = gw.wait_log("rpc.api_keys is empty", TEST_TIMEOUT).await;
    assert_eq!(line["level"], "WARN");

    // A non-loopback address without keys is refused at load, naming the field (the binary:
    // `osgate check`, and `osgate` itself exits 2).
    let mut open = cfg.clone();
    open["rpc"]["listen"] = json!("0.0.0.0:8580");
    let dir = temp_dir();
    let path = dir.path().join("open.json");
    std::fs::write(&path, open.to_string()).unwrap();
    let (code, _, err) = osgate_cmd(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("rpc.listen") && err.contains("api_keys"),
        "{err}"
    );
    let mut gw2 = Gateway::start_file(temp_dir(), path, &[], &[]);
    assert_eq!(gw2.wait_exit(TEST_TIMEOUT).code(), Some(2));
}
