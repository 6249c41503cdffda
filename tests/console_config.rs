//! `config.check`, `config.apply` and `config.rollback` against a gateway in-process: a typo is
//! reported at its path and nothing changes; an applied configuration starts its new device,
//! is saved to the `-c` file (the old one as `.prev`, mode 0600) and survives a restart; a
//! rollback brings the old one back; `osgate rpc --file` (the binary) does the same from a
//! script; a
//! configuration owned by a fleet server is refused.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::rpc::Rpc;
use crate::common::*;

const KEY: &str = "console-key-0123456789";

fn config(gw: &str, broker: &Mosquitto, devices: &[&str]) -> Value {
    let devices: Vec<Value> = devices
        .iter()
        .map(|d| json!({"name": d, "interval": "100ms", "channels": [{"name": "n", "signal": "counter"}]}))
        .collect();
    let mut cfg = sim_config(gw, &broker.url(), json!(devices), json!({}));
    cfg["rpc"] = json!({"listen": "127.0.0.1:0", "api_keys": [KEY]});
    cfg
}

async fn device_names(rpc: &Rpc) -> Vec<String> {
    let list = rpc.result("devices.list", json!({})).await;
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| d["device"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until the device list is `want` and every one of them is online.
async fn wait_devices(rpc: &Rpc, want: &[&str]) {
    let until = Instant::now() + TEST_TIMEOUT;
    loop {
        let list = rpc.result("devices.list", json!({})).await;
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["device"].as_str().unwrap())
            .collect();
        let online = list
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["health"] == "online");
        if names == want && online {
            return;
        }
        assert!(
            Instant::now() < until,
            "devices {want:?} not all online: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_apply_rollback_and_restart() {
    let broker = Mosquitto::start();
    let keep = temp_dir();
    let file = keep.path().join("osgate.json");
    let prev = keep.path().join("osgate.json.prev");
    let old_text = serde_json::to_string_pretty(&config("gwc", &broker, &["d1"])).unwrap();
    std::fs::write(&file, &old_text).unwrap();
    let gw = InProc::start_file(temp_dir(), file.clone()).await;
    let rpc = gw.rpc(KEY).await;
    let port = gw.rpc_port();
    wait_devices(&rpc, &["d1"]).await;

    // A typo in a new device: reported at its path, as `osgate check` names it; nothing applied.
    let mut typo = config("gwc", &broker, &["d1", "d2"]);
    typo["connectors"][0]["devices"][1]["intervall"] = json!("1s");
    let r = rpc.result("config.check", json!({"config": typo})).await;
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(
        r["errors"][0]["path"], "connectors[0] \"sim\".devices[1].intervall",
        "{r}"
    );
    assert!(
        r["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field"),
        "{r}"
    );
    let v = rpc.call("config.apply", json!({"config": typo})).await;
    assert_eq!(v["error"]["code"], 1021, "{v}");
    assert_eq!(
        v["error"]["data"]["errors"][0]["path"],
        "connectors[0] \"sim\".devices[1].intervall"
    );
    assert_eq!(device_names(&rpc).await, ["d1"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), old_text);
    assert!(!prev.exists());

    // A good one: check predicts the change and applies nothing.
    let new = config("gwc", &broker, &["d1", "d2"]);
    let r = rpc.result("config.check", json!({"config": new})).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["changes"]["restarted"], json!(["sim"]), "{r}");
    assert_eq!(r["changes"]["sinks"]["kept"], json!(["local"]), "{r}");
    assert_eq!(device_names(&rpc).await, ["d1"]);

    // Applied: the new device runs; the file holds the text as sent, the old one is `.prev`.
    let new_text = serde_json::to_string_pretty(&new).unwrap();
    let body = format!(
        r#"{{"jsonrpc": "2.0", "id": 7, "method": "config.apply", "params": {{"config": {new_text}}}}}"#
    );
    let (status, v) = rpc.post(Some(KEY), body).await;
    assert_eq!(status, 200);
    let r = &v["result"];
    assert_eq!(r["applied"], true, "{v}");
    assert_eq!(r["changes"]["restarted"], json!(["sim"]), "{v}");
    wait_devices(&rpc, &["d1", "d2"]).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), new_text);
    assert_eq!(std::fs::read_to_string(&prev).unwrap(), old_text);
    assert_eq!((mode(&file), mode(&prev)), (0o600, 0o600));
    let st = rpc.result("gateway.status", json!({})).await;
    assert_eq!(st["config"]["source"], "local");

    // Rollback: the old configuration again, in force and in the file.
    let r = rpc.result("config.rollback", json!({})).await;
    assert_eq!(r["rolled_back"], true, "{r}");
    wait_devices(&rpc, &["d1"]).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), old_text);
    assert_eq!(std::fs::read_to_string(&prev).unwrap(), new_text);

    // The same from a script: `osgate rpc config.apply --file`.
    let script = keep.path().join("new.json");
    std::fs::write(&script, &new_text).unwrap();
    let typo_file = keep.path().join("typo.json");
    std::fs::write(&typo_file, typo.to_string()).unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let cli = |method: &str, f: &Path| {
        let f = f.display().to_string();
        osgate_cmd(&["rpc", method, "--file", &f, "--url", &url, "--key", KEY])
    };
    let (code, out, err) = cli("config.check", &typo_file);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"ok\": false") && out.contains("intervall"),
        "{out}"
    );
    let (code, _, err) = cli("config.apply", &typo_file);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("connectors[0] \"sim\".devices[1].intervall: unknown field"),
        "{err}"
    );
    let (code, out, err) = cli("config.apply", &script);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"applied\": true"), "{out}");
    wait_devices(&rpc, &["d1", "d2"]).await;

    // A restart comes up with the applied configuration.
    let mut gw = gw;
    assert!(gw.stop().await.is_ok(), "{}", gw.log_text());
    let gw = InProc::start_file(temp_dir(), file.clone()).await;
    let rpc = gw.rpc(KEY).await;
    wait_devices(&rpc, &["d1", "d2"]).await;
    // After the restart, rollback uses `.prev`.
    rpc.result("config.rollback", json!({})).await;
    wait_devices(&rpc, &["d1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_managed_configuration_is_refused() {
    let broker = Mosquitto::start();
    let dir = temp_dir();
    let mut cfg = config("gwf", &broker, &["d1"]);
    // The fleet server is down: the gateway runs its local file, but the fleet still owns it.
    cfg["remote"] = json!({
        "url": format!("http://127.0.0.1:{}/cfg", free_port()),
        "timeout": "1s",
        "cache": dir.path().join("cache.json").display().to_string()
    });
    let gw = InProc::start(&cfg).await;
    let rpc = gw.rpc(KEY).await;
    let before = std::fs::read_to_string(&gw.config).unwrap();
    let (code, msg) = rpc.error("config.apply", json!({"config": cfg})).await;
    assert_eq!(code, 1022, "{msg}");
    assert!(msg.contains("fleet server"), "{msg}");
    let (code, _) = rpc.error("config.rollback", json!({})).await;
    assert_eq!(code, 1022);
    // Checking is still allowed: it changes nothing.
    let r = rpc.result("config.check", json!({"config": cfg})).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(std::fs::read_to_string(&gw.config).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_cannot_start_or_be_saved_changes_nothing() {
    let broker = Mosquitto::start();
    let keep = temp_dir();
    let dir = keep.path().join("etc");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("osgate.json");
    let old = config("gwn", &broker, &["d1"]);
    std::fs::write(&file, old.to_string()).unwrap();
    let gw = InProc::start_file(temp_dir(), file.clone()).await;
    let rpc = gw.rpc(KEY).await;
    wait_devices(&rpc, &["d1"]).await;

    // Valid, but its new connector cannot be built (no such serial port): the reload refuses
    // it, the file stays, no temp file is left behind.
    let mut bad = config("gwn", &broker, &["d1"]);
    bad["connectors"].as_array_mut().unwrap().push(json!({
        "name": "rtu", "protocol": "modbus",
        "transport": {"rtu": {"port": "/dev/osgate-no-such-port"}},
        "devices": [{"name": "m1", "unit_id": 1, "interval": "1s",
                     "channels": [{"name": "r", "table": "holding", "address": 0}]}]}));
    let r = rpc.result("config.check", json!({"config": bad})).await;
    assert_eq!(
        r["ok"], true,
        "the port is only found missing when built: {r}"
    );
    let (code, msg) = rpc.error("config.apply", json!({"config": bad})).await;
    assert_eq!(code, 1020, "{msg}");
    assert!(msg.contains("/dev/osgate-no-such-port"), "{msg}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), old.to_string());
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["osgate.json"], "{names:?}");
    assert_eq!(device_names(&rpc).await, ["d1"]);

    // The file cannot be written (its directory is gone): refused before anything is applied.
    std::fs::remove_dir_all(&dir).unwrap();
    let new = config("gwn", &broker, &["d1", "d2"]);
    let (code, msg) = rpc.error("config.apply", json!({"config": new})).await;
    assert_eq!(code, 1023, "{msg}");
    assert!(msg.contains("nothing applied"), "{msg}");
    assert_eq!(device_names(&rpc).await, ["d1"]);
}
