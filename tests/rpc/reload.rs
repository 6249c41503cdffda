//! `gateway.reload`: nothing changed keeps everything, a broken file is refused and the running
//! configuration stays; a reload rotates the API keys at once and warns that a new listener
//! waits for the next start.

use serde_json::json;

use super::{assert_no_keys_in, rpc_config, KEY};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_what_is_unchanged_and_refuses_a_broken_file() {
    let broker = Mosquitto::start();
    let gw = InProc::start(&rpc_config("gwm", &broker, "100ms")).await;
    let rpc = gw.rpc(KEY).await;

    // gateway.reload: nothing changed, everything kept; a broken file is refused.
    let r = rpc.result("gateway.reload", json!([])).await;
    assert_eq!(r["connectors_kept"], json!(["sim"]), "{r}");
    std::fs::write(&gw.config, "{ not json").unwrap();
    let (code, msg) = rpc.error("gateway.reload", json!([])).await;
    assert_eq!(code, 1020, "{msg}");
    assert_eq!(
        rpc.result("gateway.status", json!([])).await["gateway"],
        "gwm"
    );
    assert_no_keys_in(&gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rotates_the_keys_and_warns_about_a_new_listen() {
    let broker = Mosquitto::start();
    let cfg = rpc_config("gwr", &broker, "100ms");
    let gw = InProc::start(&cfg).await;
    let rpc = gw.rpc(KEY).await;
    let mut rotated = cfg.clone();
    rotated["rpc"]["api_keys"] = json!(["rotated-key-42"]);
    rotated["rpc"]["mqtt"] = json!(true);
    std::fs::write(&gw.config, rotated.to_string()).unwrap();
    rpc.result("gateway.reload", json!([])).await;
    let status = json!({"jsonrpc": "2.0", "id": 1, "method": "gateway.status"}).to_string();
    let (s, _) = rpc.post(Some(KEY), status.clone()).await;
    assert_eq!(s, 401, "the old key still works after the reload");
    let (s, v) = rpc.post(Some("rotated-key-42"), status).await;
    assert_eq!((s, &v["result"]["gateway"]), (200, &json!("gwr")), "{v}");
    gw.wait_log(
        "rpc.listen, rpc.tls, rpc.mqtt, rpc.limits or rpc.max_subscribers changed",
        TEST_TIMEOUT,
    )
    .await;
}
