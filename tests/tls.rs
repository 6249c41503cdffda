//! TLS and credentials on every outbound connection (`core/net/`): the MQTT sink over `mqtts://`
//! against a real mosquitto TLS listener (right CA, wrong CA, untrusted certificate, name
//! mismatch, mutual TLS), a broker with a password file, the remote configuration over
//! `https://` with a private CA, and `osgate rpc` against a gateway serving `rpc.tls`. The
//! gateways run in-process (`InProc`); `osgate rpc` and `osgate health` are the binary.
//!
//! Certificates are made at run time (`common::certs`). A refused connection must leave a clear
//! WARN line (once, not per retry) and the sink's `last_error` in `gateway.status`, and nothing
//! may reach the broker: a subscriber on `#` watches for the whole test.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::certs::Certs;
use crate::common::http::{HttpServer, Reply};
use crate::common::rpc::Rpc;
use crate::common::*;

const KEY: &str = "tls-test-key";

fn counter() -> Value {
    json!([{"name": "d1", "interval": "100ms", "channels": [{"name": "n", "signal": "counter"}]}])
}

fn tls_obj(ca: &Path) -> Value {
    json!({"ca_file": ca})
}

/// The TLS settings of a test client that trusts `ca` only.
fn trusting(ca: &Path) -> osgate::net::TlsConfig {
    osgate::net::TlsConfig {
        ca_file: Some(ca.to_path_buf()),
        ..Default::default()
    }
}

/// A gateway config: simulator → MQTT sink at `url` with `sink_extra`, and the RPC API on a
/// free port (to read the sink's status).
fn config(gw: &str, url: &str, sink_extra: Value) -> Value {
    let mut cfg = sim_config(gw, url, counter(), sink_extra);
    cfg["gateway"]["shutdown_timeout"] = json!("1s");
    cfg["rpc"] = json!({"listen": "127.0.0.1:0", "api_keys": [KEY]});
    cfg
}

/// `osgate rpc METHOD ARGS…` in a blocking task; (exit code, stdout, stderr).
async fn osgate_rpc(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let mut a = vec!["rpc"];
        a.extend(args.iter().map(String::as_str));
        osgate_cmd(&a)
    })
    .await
    .unwrap()
}

/// Waits until the sink's entry in `gateway.status` satisfies `pred`; returns it.
async fn sink_status_where(rpc: &Rpc, pred: impl Fn(&Value) -> bool) -> Value {
    let until = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let st = rpc.result("gateway.status", json!([])).await["sinks"][0].clone();
        if pred(&st) {
            return st;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "sink status never satisfied the condition; last: {st}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The WARN/ERROR lines of the gateway log that say the sink cannot connect.
fn connect_failures(gw: &InProc) -> Vec<Value> {
    gw.log_json()
        .into_iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("cannot connect to broker"))
                && matches!(l["level"].as_str(), Some("WARN" | "ERROR"))
        })
        .collect()
}

/// Runs a gateway whose sink must be refused; checks the log line (once, naming `cause`), the
/// sink status (`connected: false`, `last_error` naming `cause`), and that `watch` saw no
/// message. Returns the log line's error.
async fn assert_refused(
    gw_id: &str,
    url: &str,
    sink_extra: Value,
    watch: &mut Subscriber,
    cause: &[&str],
) -> String {
    let gw = InProc::start(&config(gw_id, url, sink_extra)).await;
    let rpc = gw.rpc(KEY).await;
    let line = gw.wait_log("cannot connect to broker", TEST_TIMEOUT).await;
    let error = line["error"].as_str().unwrap_or_default().to_string();
    assert!(
        cause.iter().any(|c| error.contains(c)),
        "log line does not name the cause ({cause:?}): {line}"
    );
    assert!(
        matches!(line["level"].as_str(), Some("WARN" | "ERROR")),
        "{line}"
    );
    // Several retries later: the status names the cause, and the log said it only once.
    let st = sink_status_where(&rpc, |s| s["counters"]["errors"].as_u64() >= Some(4)).await;
    assert_eq!(st["connected"], json!(false), "{st}");
    assert_eq!(st["health"], json!("disconnected"), "{st}");
    let last = st["last_error"].as_str().unwrap_or_default();
    assert!(cause.iter().any(|c| last.contains(c)), "sink status: {st}");
    assert_eq!(
        connect_failures(&gw).len(),
        1,
        "one WARN line per change of error, not per retry; log:\n{}",
        gw.log_text()
    );
    // Nothing reached the broker, and nothing does while the gateway keeps trying.
    let got = watch
        .collect_until(Duration::from_millis(500), |seen| !seen.is_empty())
        .await;
    assert!(
        !got,
        "messages arrived although the connection must be refused: {:?}",
        watch.seen
    );
    error
}

/// Runs a gateway whose sink must deliver; waits for telemetry at `watch` and for the sink
/// status to say connected.
async fn assert_delivers(gw_id: &str, url: &str, sink_extra: Value, watch: &mut Subscriber) {
    let gw = InProc::start(&config(gw_id, url, sink_extra)).await;
    let rpc = gw.rpc(KEY).await;
    let prefix = format!("telemetry/{gw_id}/d1/");
    let m = watch
        .next_where(TEST_TIMEOUT, |m| m.topic.starts_with(&prefix))
        .await;
    assert!(m.json["value"].is_number(), "{m:?}");
    let st = sink_status_where(&rpc, |s| s["connected"] == json!(true)).await;
    assert_eq!(st["last_error"], Value::Null, "{st}");
    assert!(connect_failures(&gw).is_empty(), "{}", gw.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sink_delivers_with_the_right_ca() {
    let certs = Certs::generate();
    let broker = Mosquitto::start_tls(&certs, false);
    let ca = trusting(&certs.ca.cert);
    let mut sub = Subscriber::connect_tls(broker.port, "telemetry/tls1/#", &ca).await;
    assert_delivers(
        "tls1",
        &broker.tls_url(),
        json!({"tls": tls_obj(&certs.ca.cert)}),
        &mut sub,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sink_refuses_a_wrong_ca() {
    let certs = Certs::generate();
    let broker = Mosquitto::start_tls(&certs, false);
    let ca = trusting(&certs.ca.cert);
    let mut sub = Subscriber::connect_tls(broker.port, "#", &ca).await;
    assert_refused(
        "tls2",
        &broker.tls_url(),
        json!({"tls": tls_obj(&certs.other_ca.cert)}),
        &mut sub,
        &["unknown CA"],
    )
    .await;
    // mqtts:// without a tls object: the built-in roots do not know our private CA either.
    assert_refused(
        "tls2b",
        &broker.tls_url(),
        json!({}),
        &mut sub,
        &["unknown CA"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sink_refuses_an_untrusted_server_certificate() {
    let certs = Certs::generate();
    let broker = Mosquitto::start_tls_with(&certs, &certs.untrusted_server, false);
    let other = trusting(&certs.other_ca.cert);
    let mut sub = Subscriber::connect_tls(broker.port, "#", &other).await;
    assert_refused(
        "tls3",
        &broker.tls_url(),
        json!({"tls": tls_obj(&certs.ca.cert)}),
        &mut sub,
        &["unknown CA"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sink_refuses_a_host_name_mismatch() {
    let certs = Certs::generate();
    let broker = Mosquitto::start_tls_with(&certs, &certs.wrong_name_server, false);
    let watch_tls = osgate::net::TlsConfig {
        server_name: Some("other.example".into()),
        ..trusting(&certs.ca.cert)
    };
    let mut sub = Subscriber::connect_tls(broker.port, "#", &watch_tls).await;
    let e = assert_refused(
        "tls4",
        &broker.tls_url(),
        json!({"tls": tls_obj(&certs.ca.cert)}),
        &mut sub,
        &["name mismatch"],
    )
    .await;
    assert!(e.contains("other.example"), "{e}");
    // server_name names what the certificate carries: accepted.
    assert_delivers(
        "tls4b",
        &broker.tls_url(),
        json!({"tls": {"ca_file": certs.ca.cert, "server_name": "other.example"}}),
        &mut sub,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sink_mutual_tls() {
    let certs = Certs::generate();
    let broker = Mosquitto::start_tls(&certs, true);
    let client = osgate::net::TlsConfig {
        cert_file: Some(certs.client.cert.clone()),
        key_file: Some(certs.client.key.clone()),
        ..trusting(&certs.ca.cert)
    };
    let mut sub = Subscriber::connect_tls(broker.port, "#", &client).await;
    assert_refused(
        "tls5",
        &broker.tls_url(),
        json!({"tls": tls_obj(&certs.ca.cert)}),
        &mut sub,
        &["client certificate"],
    )
    .await;
    assert_delivers(
        "tls5b",
        &broker.tls_url(),
        json!({"tls": {"ca_file": certs.ca.cert, "cert_file": certs.client.cert, "key_file": certs.client.key}}),
        &mut sub,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_broker_refuses_a_wrong_password() {
    let broker = Mosquitto::start_with_password("osgate", "right-password");
    let mut sub = Subscriber::connect_auth(broker.port, "#", "osgate", "right-password").await;
    assert_refused(
        "pw1",
        &broker.url(),
        json!({"username": "osgate", "password": "wrong-password"}),
        &mut sub,
        &["not authorized"],
    )
    .await;
    let dir = temp_dir();
    let file = dir.path().join("mqtt-password");
    std::fs::write(&file, "right-password\n").unwrap();
    assert_delivers(
        "pw2",
        &broker.url(),
        json!({"username": "osgate", "password_file": file}),
        &mut sub,
    )
    .await;
}

/// A local file with a `remote` section pointing at `server`, and a remote body with another
/// device, so the telemetry says which source is live.
fn remote_setup(
    gw: &str,
    broker: &Mosquitto,
    url: &str,
    tls: Value,
) -> (Value, Vec<u8>, tempfile::TempDir) {
    let state = temp_dir();
    let mut local = sim_config(
        gw,
        &broker.url(),
        json!([{"name": "ldev", "interval": "100ms", "channels": [{"name": "n", "signal": "counter"}]}]),
        json!({}),
    );
    local["remote"] = json!({"url": url, "timeout": "2s", "refresh": "1m",
        "cache": state.path().join("cache.json"), "tls": tls});
    let remote = sim_config(
        gw,
        &broker.url(),
        json!([{"name": "rdev", "interval": "100ms", "channels": [{"name": "n", "signal": "counter"}]}]),
        json!({}),
    );
    (local, serde_json::to_vec(&remote).unwrap(), state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_config_over_https_with_a_private_ca() {
    let certs = Certs::generate();
    let broker = Mosquitto::start();
    let server = HttpServer::start_tls(Reply::Json(Vec::new()), &certs.server).await;
    assert!(server.url().starts_with("https://"));

    // With the CA: the remote configuration is live.
    let (local, body, _state) =
        remote_setup("rtls1", &broker, &server.url(), tls_obj(&certs.ca.cert));
    server.set(Reply::Json(body));
    let mut sub = Subscriber::connect(broker.port, "telemetry/rtls1/#").await;
    let gw = InProc::start(&local).await;
    gw.wait_log("configuration loaded from the remote", TEST_TIMEOUT)
        .await;
    sub.next_where(TEST_TIMEOUT, |m| {
        m.topic.starts_with("telemetry/rtls1/rdev/")
    })
    .await;
    drop(gw);

    // Without it (the built-in roots): refused, the local file is live, and the status says why.
    let n = server.requests().len();
    let (mut local, _, _state2) = remote_setup("rtls2", &broker, &server.url(), json!({}));
    local["remote"].as_object_mut().unwrap().remove("tls");
    let mut sub = Subscriber::connect(broker.port, "#").await;
    let gw = InProc::start(&local).await;
    let line = gw
        .wait_log("remote configuration rejected", TEST_TIMEOUT)
        .await;
    assert!(
        line["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown CA"),
        "{line}"
    );
    gw.wait_log("configuration loaded from the local file", TEST_TIMEOUT)
        .await;
    let st = sub
        .next_where(TEST_TIMEOUT, |m| m.topic == "status/rtls2")
        .await;
    assert_eq!(st.json["config"]["source"], json!("local"), "{st:?}");
    let why = st.json["config"]["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("unknown CA"), "{st:?}");
    sub.next_where(TEST_TIMEOUT, |m| {
        m.topic.starts_with("telemetry/rtls2/ldev/")
    })
    .await;
    assert_eq!(
        server.requests().len(),
        n,
        "a refused handshake never becomes a request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_over_https_with_ca_file() {
    let certs = Certs::generate();
    let broker = Mosquitto::start();
    // A fixed port: `osgate health -c CONFIG` below finds the address in the file.
    let port = free_port();
    let mut cfg = sim_config("rpctls", &broker.url(), counter(), json!({}));
    cfg["rpc"] = json!({"listen": format!("127.0.0.1:{port}"), "api_keys": [KEY],
        "tls": {"cert_file": certs.server.cert, "key_file": certs.server.key}});
    let gw = InProc::start(&cfg).await;
    gw.wait_log(
        "JSON-RPC management listening (HTTPS and WSS)",
        TEST_TIMEOUT,
    )
    .await;
    let url = format!("https://127.0.0.1:{port}");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = vec![
            "gateway.status".into(),
            "--url".into(),
            url.clone(),
            "--key".into(),
            KEY.into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let ca = certs.ca.cert.display().to_string();
    let (code, out, err) = osgate_rpc(args(&["--ca-file", &ca])).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["gateway"], json!("rpctls"), "{v}");

    // Without the CA: refused, and the message says why.
    let (code, _, err) = osgate_rpc(args(&[])).await;
    assert_eq!(code, 1);
    assert!(err.contains("unknown CA"), "{err}");

    // `osgate health` (the image's HEALTHCHECK) finds the address and key in the config and
    // trusts the same CA; until the sink has connected it may say that the sink is not.
    let config = gw.config.display().to_string();
    let health = |extra: &[&str]| {
        let mut a = vec!["health".to_string(), "-c".into(), config.clone()];
        a.extend(extra.iter().map(|s| s.to_string()));
        tokio::task::spawn_blocking(move || {
            osgate_cmd(&a.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let until = std::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let (code, out, err) = health(&["--ca-file", &ca]).await.unwrap();
        if code == 0 {
            assert!(out.starts_with("healthy: gateway rpctls"), "{out}");
            break;
        }
        assert!(err.contains("disconnected"), "{err}");
        assert!(std::time::Instant::now() < until, "never healthy: {err}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _, err) = health(&[]).await.unwrap();
    assert_eq!(
        code, 1,
        "healthy without trusting the gateway's certificate"
    );
    assert!(
        err.starts_with("unhealthy: ") && err.contains("unknown CA"),
        "{err}"
    );
    // Plain HTTP to the TLS port is no way around it.
    let (code, _, _) = osgate_rpc(vec![
        "gateway.status".into(),
        "--url".into(),
        format!("http://127.0.0.1:{port}"),
        "--key".into(),
        KEY.into(),
    ])
    .await;
    assert_eq!(code, 1);
}
