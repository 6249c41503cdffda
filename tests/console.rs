//! The web console in a real browser: Debian's chromium driven by Selenium
//! (`tests/peers/console_browser.py`, one phase per run) against a real gateway — simulator
//! devices boiler and pump, an MQTT connector fed through mosquitto (device mq-7), a mosquitto
//! sink whose broker bridges to a second, "cloud" mosquitto — with an admin, an operator and a
//! viewer key.
//!
//! The page's assets and headers are checked over plain HTTP; the browser logs in, sees every
//! device with its health, a live value change, writes a set-point as operator (the value must
//! come back on telemetry and on the page), finds no control as viewer (a forced call is
//! refused), gets a typo in a configuration shown at its path with nothing applied and a good
//! one applied, and sees the uplink go down when the cloud broker stops. Screenshots of each
//! page at desktop and phone width go to `target/console-shots/` (docs/console/ holds copies).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

const ADMIN: &str = "admin-key-0123456789";
const OPERATOR: &str = "operator-key-0123456789";
const VIEWER: &str = "viewer-key-0123456789";
/// Longest a browser phase may take (a headless chromium start is a few seconds here).
const PHASE_TIMEOUT: Duration = Duration::from_secs(180);

fn shots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-shots")
}

/// Runs one phase of the browser script; returns its output, panicking with it on failure.
async fn browser(phase: &str, url: &str, args: &[(&str, &str)]) -> String {
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: install chromium and chromium-driver (.ci/run does)"
        );
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/console_browser.py");
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg(script)
        .args([phase, url])
        .arg(shots_dir())
        .args(args.iter().map(|(k, v)| format!("{k}={v}")))
        .kill_on_drop(true);
    let out = tokio::time::timeout(PHASE_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("browser phase {phase} still running after {PHASE_TIMEOUT:?}"))
        .expect("run the browser script (is selenium installed? .ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("browser phase {phase}:\n{text}");
    assert!(
        out.status.success(),
        "browser phase {phase} failed:\n{text}"
    );
    text
}

/// The browser's `uplink` phase: once the page shows the uplink up, the cloud broker stops and
/// the page must show it down.
async fn uplink(url: &str, cloud: &mut Mosquitto) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut child = tokio::process::Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/console_browser.py"))
        .args(["uplink", url])
        .arg(shots_dir())
        .arg(format!("key={VIEWER}"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run the browser script");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut text = String::new();
    let run = async {
        while let Some(l) = lines.next_line().await.unwrap() {
            text.push_str(&l);
            text.push('\n');
            if l == "ok uplink up" {
                cloud.stop();
                stdin.write_all(b"go\n").await.unwrap();
                stdin.flush().await.unwrap();
            }
        }
        child.wait().await.unwrap()
    };
    let status = tokio::time::timeout(PHASE_TIMEOUT, run)
        .await
        .expect("the uplink phase ended in time");
    println!("browser phase uplink:\n{text}");
    assert!(status.success(), "browser phase uplink failed:\n{text}");
    assert!(text.contains("ok uplink shown down"), "{text}");
}

/// The gateway's configuration: `extra_device` adds a third simulator device.
fn config(broker: u16, extra_device: Option<&str>) -> Value {
    let mut devices = vec![
        json!({"name": "boiler", "interval": "500ms", "channels": [
            {"name": "temperature", "signal": "sine", "min": 20, "max": 80, "period": "20s", "unit": "°C"},
            {"name": "setpoint", "signal": "constant", "value": 10, "min": 0, "max": 100, "writable": true}]}),
        json!({"name": "pump", "interval": "1s", "channels": [
            {"name": "flow", "signal": "random_walk", "min": 0, "max": 10, "unit": "m³/h"}]}),
    ];
    if let Some(name) = extra_device {
        devices.push(json!({"name": name, "interval": "1s", "channels": [
            {"name": "level", "signal": "sawtooth", "min": 0, "max": 5}]}));
    }
    json!({
        "gateway": {"id": "uigw"},
        "rpc": {"listen": "127.0.0.1:0", "api_keys": [
            {"name": "boss", "key": ADMIN, "role": "admin"},
            {"name": "tech", "key": OPERATOR, "role": "operator"},
            {"name": "wall", "key": VIEWER, "role": "viewer"}]},
        "sinks": [{"name": "local", "type": "mqtt", "url": format!("mqtt://127.0.0.1:{broker}")}],
        "connectors": [
            {"name": "plant", "protocol": "simulator", "devices": devices},
            {"name": "field", "protocol": "mqtt", "url": format!("mqtt://127.0.0.1:{broker}"),
             "mappings": [{"topic": "devices/{device}/{channel}"}],
             "devices": [{"name": "mq-7"}]}
        ]
    })
}

/// The local broker: the harness's listener, bridged to `cloud` (mosquitto reports the
/// bridge on `$SYS/broker/connection/cloud/state`).
fn bridged_broker(cloud: u16) -> Mosquitto {
    Mosquitto::start_file(move |port, dir| {
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence false\n\
             log_dest file {dir}/mosquitto.log\n\
             connection cloud\naddress 127.0.0.1:{cloud}\ntopic telemetry/# out 1\n\
             restart_timeout 1\ncleansession true\n",
            dir = dir.display()
        )
    })
}

/// Publishes a changing level for mq-7 every half second until dropped.
fn feed_mq7(port: u16) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0u32.. {
            let _ = tokio::process::Command::new("mosquitto_pub")
                .args(["-p", &port.to_string(), "-t", "devices/mq-7/level"])
                .args(["-m", &format!("{}.5", i % 7)])
                .kill_on_drop(true)
                .status()
                .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_in_a_browser() {
    let mut cloud = Mosquitto::start();
    let local = bridged_broker(cloud.port);
    let gw = InProc::start(&config(local.port, None)).await;
    let url = format!("http://127.0.0.1:{}/", gw.rpc_port());
    let admin = gw.rpc(ADMIN).await;
    let feed = feed_mq7(local.port);

    // The page needs no key; it comes with its policy.
    let page = admin.http.get(&url).send().await.expect("GET /");
    assert_eq!(page.status(), 200);
    let h = page.headers();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let csp = h["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    let js = admin.http.get(format!("{url}app.js")).send().await.unwrap();
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    // ...but the data does.
    let (status, _) = admin
        .post(
            None,
            r#"{"jsonrpc":"2.0","id":1,"method":"gateway.status"}"#,
        )
        .await;
    assert_eq!(status, 401, "gateway.status without a key");

    // Operator: devices, live values, a write that comes back on telemetry.
    let mut telemetry = Subscriber::connect(local.port, "telemetry/uigw/boiler/setpoint").await;
    browser("operator", &url, &[("key", OPERATOR)]).await;
    let m = telemetry
        .next_where(TEST_TIMEOUT, |m| m.json["value"].as_f64() == Some(42.0))
        .await;
    assert_eq!(m.topic, "telemetry/uigw/boiler/setpoint");

    // Viewer: no controls, and the server refuses a forced call anyway.
    browser("viewer", &url, &[("key", VIEWER)]).await;
    let viewer = gw.rpc(VIEWER).await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "device.write",
        "params": {"device": "boiler", "channel": "setpoint", "value": 5}});
    let (status, answer) = viewer.post(Some(VIEWER), body.to_string()).await;
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("(viewer) may not call device.write")),
        "a viewer's device.write was not refused: {status} {answer}"
    );
    let now = admin
        .result("device.read", json!({"device": "boiler"}))
        .await;
    let setpoint = now["readings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["channel"] == "setpoint")
        .cloned();
    assert_eq!(
        setpoint.unwrap()["value"].as_f64(),
        Some(42.0),
        "the viewer's write changed the set-point"
    );

    // Admin: a typo is shown at its path and nothing is applied; a good one is applied.
    let dir = temp_dir();
    let mut typo = config(local.port, Some("boiler-2"));
    typo["connectors"][0]["devices"][0]["intervall"] = json!("1s");
    let typo_file = dir.path().join("typo.json");
    std::fs::write(&typo_file, serde_json::to_vec_pretty(&typo).unwrap()).unwrap();
    let good_file = dir.path().join("good.json");
    let good = config(local.port, Some("boiler-2"));
    std::fs::write(&good_file, serde_json::to_vec_pretty(&good).unwrap()).unwrap();
    browser(
        "config",
        &url,
        &[
            ("key", ADMIN),
            ("typo", typo_file.to_str().unwrap()),
            ("good", good_file.to_str().unwrap()),
            ("typo_path", "devices[0].intervall"),
            ("new_device", "boiler-2"),
        ],
    )
    .await;
    let devices = admin.result("devices.list", json!({})).await;
    assert!(
        devices
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["device"] == "boiler-2"),
        "the applied configuration's new device is not running: {devices}"
    );

    // The uplink: connected, then down within seconds of the cloud broker stopping.
    uplink(&url, &mut cloud).await;

    feed.abort();
    drop(gw);
}
