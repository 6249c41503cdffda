//! Running osgate in production: `--version` names the commit, the systemd unit verifies, the
//! systemd notification protocol (READY, WATCHDOG, STOPPING) on a real datagram socket, SIGHUP
//! reloads (the binary); self-telemetry through a real mosquitto, `GET /metrics` read by a real
//! Prometheus parser (Python `prometheus_client`), and `osgate health` (the binary) against a
//! running gateway (in-process).

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt as _;

use crate::common::*;

const KEY: &str = "k-ops-test-1";

#[test]
fn version_names_the_commit() {
    let (code, out, err) = osgate_cmd(&["--version"]);
    assert_eq!(code, 0, "{err}");
    let line = out.trim();
    let prefix = format!("osgate {} (commit ", env!("CARGO_PKG_VERSION"));
    let commit = line
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected --version line: {line}"));
    // A build from a git checkout names HEAD; `git` is what CI and developers build from.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(h) => assert_eq!(
            commit.trim_end_matches("-dirty"),
            h,
            "--version: {line}; HEAD is {h}"
        ),
        None => assert!(!commit.is_empty(), "{line}"),
    }
}

#[test]
fn the_systemd_unit_verifies() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: the unit is not verified here");
        return;
    };
    assert!(out.status.success());
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/systemd/osgate.service"
    ))
    .unwrap();
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "DynamicUser=yes",
        "StateDirectory=osgate",
        "ProtectSystem=strict",
        "Restart=on-failure",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(key), "the unit lacks {key}");
    }
    // `verify` checks that ExecStart's binary exists: point it at the one under test.
    assert!(unit.contains("ExecStart=/usr/bin/osgate "));
    let dir = temp_dir();
    let path = dir.path().join("osgate.service");
    let bin = osgate_bin();
    std::fs::write(
        &path,
        unit.replace("/usr/bin/osgate", &bin.display().to_string()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    // Unknown keys and bad values are warnings ("…, ignoring") with exit code 0.
    let about_unit: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("osgate.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {err}"
    );
}

/// A simulator gateway with a stdout sink (no broker needed).
fn stdout_config(gw: &str) -> Value {
    json!({
        "gateway": {"id": gw, "shutdown_timeout": "2s"},
        "sinks": [{"name": "out", "type": "stdout"}],
        "connectors": [{"name": "sim", "protocol": "simulator", "devices": [
            {"name": "d1", "interval": "100ms", "channels": [{"name": "c", "signal": "counter"}]}]}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_watchdog_and_stopping() {
    let dir = temp_dir();
    let sock_path = dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).expect("bind notify socket");
    let mut gw = Gateway::start_with(
        &stdout_config("gwnotify"),
        &[],
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut buf = vec![0u8; 4096];
    let mut recv = async || -> String {
        let n = within("a notification", sock.recv(&mut buf)).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv().await;
    assert!(
        first.lines().any(|l| l == "READY=1"),
        "first message: {first:?}"
    );
    assert!(
        first.contains("STATUS=running: gateway gwnotify, 1 connector(s), 1 sink(s)"),
        "{first:?}"
    );
    let mut watchdogs = 0;
    while watchdogs < 2 {
        let m = recv().await;
        assert_eq!(m, "WATCHDOG=1", "before SIGTERM: {m:?}");
        watchdogs += 1;
    }
    gw.signal("TERM");
    loop {
        let m = recv().await;
        if m == "WATCHDOG=1" {
            continue;
        }
        assert!(m.starts_with("STOPPING=1\n"), "after SIGTERM: {m:?}");
        break;
    }
    let st = gw.wait_exit(TEST_TIMEOUT);
    assert!(st.success(), "exit {st:?}; log:\n{}", gw.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_configuration_file() {
    // The wiring of the process: SIGHUP to `osgate` runs the loading order again and applies
    // the result, recorded as the signal's (what a reload does is tested in-process).
    let cfg = stdout_config("gwhup");
    let gw = Gateway::start(&cfg);
    gw.wait_log("gateway started", TEST_TIMEOUT).await;
    let mut more = cfg.clone();
    more["connectors"][0]["devices"][0]["interval"] = json!("50ms");
    std::fs::write(&gw.config, serde_json::to_vec_pretty(&more).unwrap()).unwrap();
    gw.signal("HUP");
    let line = gw
        .wait_log("SIGHUP received: reloading configuration", TEST_TIMEOUT)
        .await;
    assert_eq!(line["path"], gw.config.display().to_string(), "{line}");
    let line = gw.wait_log("configuration reloaded", TEST_TIMEOUT).await;
    assert_eq!(line["connectors_started"], "sim", "{line}");
    let audit = gw.wait_log("audit", TEST_TIMEOUT).await;
    assert_eq!(
        (&audit["who"], &audit["method"], &audit["result"]),
        (&json!("signal"), &json!("gateway.reload"), &json!("ok")),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_telemetry_flows_through_the_sink() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "telemetry/gwtele/_gateway/#").await;
    let mut cfg = sim_config(
        "gwtele",
        &broker.url(),
        json!([{"name": "d1", "interval": "50ms", "channels": [{"name": "c", "signal": "counter"}]}]),
        json!({}),
    );
    cfg["telemetry"] = json!({"interval": "200ms"});
    let gw = InProc::start(&cfg).await;
    let topic = |m: &str| format!("telemetry/gwtele/_gateway/{m}");
    let values = |seen: &[Msg], m: &str| -> Vec<Value> {
        seen.iter()
            .filter(|x| x.topic == topic(m))
            .map(|x| x.json.clone())
            .collect()
    };
    let done = sub
        .collect_until(TEST_TIMEOUT, |seen| {
            values(seen, "connector.sim.readings").len() >= 3
                && values(seen, "sink.local.acked").len() >= 3
                && values(seen, "cpu_percent").len() >= 2
        })
        .await;
    assert!(
        done,
        "telemetry incomplete; topics: {:?}; log:\n{}",
        sub.seen.iter().map(|m| &m.topic).collect::<Vec<_>>(),
        gw.log_text()
    );
    let seen = &sub.seen;
    let last = |m: &str| {
        values(seen, m)
            .last()
            .cloned()
            .unwrap_or_else(|| panic!("no {m}"))
    };
    let rss = last("memory_rss_bytes");
    assert!(rss["value"].as_u64().unwrap() > 1_000_000, "{rss}");
    assert_eq!(rss["unit"], "B");
    assert_eq!(rss["quality"], "good");
    assert!(rss["ts"].as_i64().unwrap() > 1_700_000_000_000);
    let cpu = last("cpu_percent");
    assert!(cpu["value"].as_f64().unwrap() >= 0.0, "{cpu}");
    assert_eq!(cpu["unit"], "%");
    assert!(last("disk_free_bytes")["value"].as_u64().unwrap() > 0);
    assert!(last("load_1m")["value"].as_f64().unwrap() >= 0.0);
    assert_eq!(last("uptime_seconds")["unit"], "s");
    assert!(last("net_rx_bytes")["value"].is_u64());
    assert_eq!(last("sink.local.connected")["value"], true);
    // Counters climb from one publication to the next, as the simulator keeps reading.
    let readings: Vec<u64> = values(seen, "connector.sim.readings")
        .iter()
        .map(|v| v["value"].as_u64().unwrap())
        .collect();
    assert!(
        readings.windows(2).all(|w| w[0] <= w[1]) && readings.last() > readings.first(),
        "{readings:?}"
    );
    let acked: Vec<u64> = values(seen, "sink.local.acked")
        .iter()
        .map(|v| v["value"].as_u64().unwrap())
        .collect();
    assert!(acked.last() > acked.first(), "{acked:?}");
}

/// Parses a Prometheus text exposition with the reference Python parser; returns every
/// sample as `{family, type, name, labels, value}`.
async fn parse_exposition(text: &str) -> Vec<Value> {
    const SCRIPT: &str = r#"
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        v = s.value
        out.append({"family": fam.name, "type": fam.type, "name": s.name, "labels": s.labels,
                    "value": v if math.isfinite(v) else str(v)})
print(json.dumps(out))
"#;
    let mut child = tokio::process::Command::new(python())
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run python (.ci/run makes .venv with prometheus_client)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = within("the Prometheus parser", child.wait_with_output())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample<'a>(samples: &'a [Value], name: &str, labels: Value) -> &'a Value {
    samples
        .iter()
        .find(|s| {
            s["name"] == name
                && labels
                    .as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| s["labels"][k] == *v)
        })
        .map(|s| &s["value"])
        .unwrap_or_else(|| panic!("no sample {name}{labels}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_prometheus_text_that_matches_the_status() {
    let broker = Mosquitto::start();
    // A connector name that needs escaping in a label value; one poll an hour, so the
    // counters hold still between `gateway.status` and the scrape.
    let name = "sim \"q\\x";
    let mut cfg = sim_config(
        "gwmetrics",
        &broker.url(),
        json!([{"name": "d1", "interval": "1h", "channels": [
            {"name": "c", "signal": "counter"}, {"name": "s", "signal": "sine"}]}]),
        json!({}),
    );
    cfg["connectors"][0]["name"] = json!(name);
    cfg["rpc"] = json!({"listen": "127.0.0.1:0", "api_keys": [KEY]});
    let gw = InProc::start(&cfg).await;
    let rpc = gw.rpc(KEY).await;
    let port = gw.rpc_port();
    let url = format!("http://127.0.0.1:{port}/metrics");

    // Wait for the first poll to be acknowledged by the broker.
    let mut status = Value::Null;
    let until = std::time::Instant::now() + TEST_TIMEOUT;
    while std::time::Instant::now() < until {
        status = rpc.result("gateway.status", json!({})).await;
        let sink = &status["sinks"][0]["counters"];
        if status["connectors"][0]["counters"]["readings"] == 2
            && sink["received"] == 2
            && sink["acked"] == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counters = &status["connectors"][0]["counters"];
    let sink = &status["sinks"][0]["counters"];
    assert_eq!(sink["acked"], 2, "{status}");

    let resp = rpc.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401, "no key");
    let resp = rpc
        .http
        .get(&url)
        .bearer_auth("wrong-key")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "wrong key");
    let resp = rpc.http.get(&url).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = resp.text().await.unwrap();
    let samples = parse_exposition(&text).await;

    let c = json!({"connector": name});
    for field in ["readings", "batches", "errors", "dropped", "bad"] {
        assert_eq!(
            sample(
                &samples,
                &format!("osgate_connector_{field}_total"),
                c.clone()
            )
            .as_f64(),
            counters[field].as_f64(),
            "{field}: {status}\n{text}"
        );
    }
    let fam = samples
        .iter()
        .find(|s| s["name"] == "osgate_connector_readings_total")
        .unwrap();
    assert_eq!(fam["type"], "counter");
    assert_eq!(fam["family"], "osgate_connector_readings");
    let s = json!({"sink": "local"});
    for (metric, field) in [
        ("osgate_sink_received_total", "received"),
        ("osgate_sink_published_total", "published"),
        ("osgate_sink_acked_total", "acked"),
        ("osgate_sink_dropped_total", "dropped"),
    ] {
        assert_eq!(
            sample(&samples, metric, s.clone()).as_f64(),
            sink[field].as_f64(),
            "{metric}"
        );
    }
    assert_eq!(sample(&samples, "osgate_sink_connected", s.clone()), 1.0);
    assert_eq!(sample(&samples, "osgate_sink_queue_depth", s.clone()), 0.0);
    let d = json!({"connector": name, "device": "d1"});
    assert_eq!(sample(&samples, "osgate_device_online", d.clone()), 1.0);
    assert_eq!(
        sample(&samples, "osgate_device_errors_total", d.clone()),
        0.0
    );
    let last_ok = status["connectors"][0]["devices"][0]["last_ok"]
        .as_f64()
        .unwrap();
    assert_eq!(
        sample(
            &samples,
            "osgate_device_last_ok_timestamp_seconds",
            d.clone()
        )
        .as_f64(),
        Some(last_ok / 1000.0)
    );
    assert!(sample(&samples, "process_resident_memory_bytes", json!({})).as_f64() > Some(1e6));
    assert!(sample(&samples, "process_cpu_seconds_total", json!({})).as_f64() >= Some(0.0));
    assert_eq!(
        sample(
            &samples,
            "osgate_build_info",
            json!({"version": env!("CARGO_PKG_VERSION"), "commit": status["commit"]})
        ),
        1.0
    );

    // The option lets loopback clients scrape without a key; a reload applies it, and every
    // other request still needs the key.
    let mut file: Value = serde_json::from_slice(&std::fs::read(&gw.config).unwrap()).unwrap();
    file["rpc"]["metrics_without_key_on_loopback"] = json!(true);
    std::fs::write(&gw.config, serde_json::to_vec(&file).unwrap()).unwrap();
    rpc.result("gateway.reload", json!({})).await;
    let resp = rpc.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "loopback without a key, option on");
    assert!(resp.text().await.unwrap().contains("osgate_build_info"));
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "gateway.status"});
    let (code, _) = rpc.post(None, body.to_string()).await;
    assert_eq!(code, 401, "RPC calls still need the key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_for_a_running_gateway_and_fails_without_one() {
    let mut broker = Mosquitto::start();
    // A fixed port: `osgate health -c CONFIG` finds the address in the file.
    let port = free_port();
    let mut cfg = sim_config(
        "gwhealth",
        &broker.url(),
        json!([{"name": "d1", "interval": "1s", "channels": [{"name": "c", "signal": "counter"}]}]),
        json!({}),
    );
    cfg["rpc"] = json!({"listen": format!("127.0.0.1:{port}"), "api_keys": [KEY]});
    let mut gw = InProc::start(&cfg).await;
    let rpc = gw.rpc(KEY).await;
    let url = format!("http://127.0.0.1:{port}/");
    let health = |args: Vec<String>| async move {
        let out = tokio::process::Command::new(osgate_bin())
            .arg("health")
            .args(&args)
            .env_remove("OSGATE_RPC_URL")
            .env_remove("OSGATE_API_KEY")
            .output();
        let out = within("osgate health", out).await.unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Wait until the sink is connected (the first answer may come before its CONNACK).
    let until = std::time::Instant::now() + TEST_TIMEOUT;
    while rpc.result("gateway.status", json!({})).await["sinks"][0]["connected"] != true {
        assert!(std::time::Instant::now() < until, "sink never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, out, err) = health(vec![
        "--url".into(),
        url.clone(),
        "--api-key".into(),
        KEY.into(),
    ])
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.starts_with("healthy: gateway gwhealth") && out.contains("1/1 sink(s) connected"),
        "{out}"
    );
    // Address and key from the gateway's own configuration file.
    let config = gw.config.display().to_string();
    let (code, out, err) = health(vec!["-c".into(), config.clone()]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    // A wrong key is not healthy.
    let (code, _, err) = health(vec![
        "--url".into(),
        url.clone(),
        "--api-key".into(),
        "nope-nope".into(),
    ])
    .await;
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with("unhealthy: ") && err.contains("401"),
        "{err}"
    );
    // The broker goes away: the sink fails, and so does the health check.
    broker.stop();
    let until = std::time::Instant::now() + TEST_TIMEOUT;
    let err = loop {
        let (code, _, err) = health(vec!["-c".into(), config.clone()]).await;
        if code == Some(1) {
            break err;
        }
        assert!(
            std::time::Instant::now() < until,
            "still healthy without a broker"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(err.contains("sink \"local\" disconnected"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    gw.stop().await.ok();
    // No gateway at all.
    let (code, _, err) = health(vec!["--url".into(), url, "--timeout".into(), "1s".into()]).await;
    assert_eq!(code, Some(1));
    assert!(err.starts_with("unhealthy: "), "{err}");
}
