//! What the gateway shows: `gateway.status`, `gateway.config` (secrets hidden),
//! `connectors.list`/`connector.status`, `devices.list`/`device.status`.

use serde_json::{json, Value};

use super::{assert_no_keys_in, device_status, rpc_config, wait_for, KEY};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_config_and_lists() {
    let broker = Mosquitto::start();
    let mut cfg = rpc_config("gwm", &broker, "100ms");
    cfg["sinks"][0]["password"] = json!("${RPC_TEST_PW}");
    cfg["sinks"][0]["username"] = json!("u");
    let gw = InProc::start_with(&cfg, &[("RPC_TEST_PW", "")]).await;
    let rpc = gw.rpc(KEY).await;

    // gateway.status: version, uptime, config source and age, counters and health.
    let mut st = Value::Null;
    wait_for("readings counted in gateway.status", async || {
        st = rpc.result("gateway.status", json!([])).await;
        st["connectors"][0]["counters"]["readings"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(st["gateway"], "gwm");
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert!(st["uptime_s"].is_u64() && st["started"].is_i64(), "{st}");
    assert_eq!(st["config"]["source"], "local");
    assert!(st["config"]["age_ms"].is_i64(), "{st}");
    let c = &st["connectors"][0];
    assert_eq!(
        (c["name"].as_str(), c["health"].as_str()),
        (Some("sim"), Some("ok"))
    );
    assert_eq!(c["devices"].as_array().unwrap().len(), 2);
    assert_eq!(st["sinks"][0]["name"], "local");
    assert_eq!(st["sinks"][0]["type"], "mqtt");
    assert!(st["sinks"][0]["counters"]["received"].is_u64(), "{st}");

    // gateway.config: secrets hidden, the rest as written.
    let conf = rpc.result("gateway.config", json!({})).await;
    let text = conf.to_string();
    assert!(
        !text.contains(KEY) && !text.contains("second-key-xyz"),
        "{text}"
    );
    assert!(!text.contains("RPC_TEST_PW"), "{text}");
    assert_eq!(conf["rpc"]["api_keys"], json!(["***", "***"]));
    assert_eq!(conf["sinks"][0]["password"], "***");
    assert_eq!(conf["connectors"][0]["devices"][0]["name"], "d1");

    // connectors.list / connector.status.
    let list = rpc.result("connectors.list", json!([])).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["protocol"], "simulator");
    let cs = rpc
        .result("connector.status", json!({"connector": "sim"}))
        .await;
    assert_eq!(cs["running"], true);
    assert_eq!(
        rpc.error("connector.status", json!({"connector": "nope"}))
            .await
            .0,
        1010
    );

    // devices.list / device.status.
    let devs = rpc.result("devices.list", json!({})).await;
    let names: Vec<&str> = devs
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["d1", "d2"]);
    let d1 = device_status(&rpc, "d1").await;
    assert_eq!(
        (d1["running"].as_bool(), d1["enabled"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(d1["connector"], "sim");
    let (code, msg) = rpc.error("device.status", json!({"device": "ghost"})).await;
    assert_eq!(code, 1001);
    assert!(msg.contains("unknown device \"ghost\""), "{msg}");
    assert_no_keys_in(&gw);
}
