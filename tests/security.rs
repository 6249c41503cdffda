//! Least privilege against the real server (a gateway in-process): key roles on HTTP, WebSocket (headers and tickets)
//! and MQTT; the audit trail on the log and on `events/{gateway}` for every path; failed-key
//! lockout of one peer; `osgate check` on keys and readable secrets; the remote cache's mode.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;

use crate::common::rpc::Rpc;
use crate::common::*;

const ADMIN: &str = "admin-key-0123456789";
const VIEWER: &str = "viewer-key-0123456789";
const OPERATOR: &str = "operator-key-0123456789";
const FORBIDDEN: i64 = 1040;

/// A simulator (`d1.sp` writable), an MQTT sink, RPC (also over MQTT) with three keys: a plain
/// string (admin `key1`), `scada` (viewer) and `tech` (operator).
fn config(gw: &str, broker: &Mosquitto) -> Value {
    let mut cfg = sim_config(
        gw,
        &broker.url(),
        json!([{"name": "d1", "interval": "200ms", "channels": [
            {"name": "sp", "signal": "sine", "min": 0, "max": 100, "period": "10s", "writable": true}]}]),
        json!({}),
    );
    cfg["rpc"] = json!({
        "listen": "127.0.0.1:0",
        "mqtt": true,
        "max_subscribers": 1,
        "api_keys": [
            ADMIN,
            {"name": "scada", "key": "${SCADA_KEY}", "role": "viewer"},
            {"name": "tech", "key": OPERATOR, "role": "operator"},
        ],
    });
    cfg
}

/// The gateway of [`config`], in-process, with `SCADA_KEY` set.
async fn start(gw: &str, broker: &Mosquitto) -> InProc {
    InProc::start_with(&config(gw, broker), &[("SCADA_KEY", VIEWER)]).await
}

async fn call_with(rpc: &Rpc, key: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (status, v) = rpc.post(Some(key), body.to_string()).await;
    assert_eq!(status, 200, "{method}: {v}");
    v
}

async fn ws(port: u16, query: &str, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://127.0.0.1:{port}/{query}")
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            tungstenite::http::HeaderValue::from_str(v).unwrap(),
        );
    }
    match within("WebSocket handshake", tokio_tungstenite::connect_async(req)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("WebSocket handshake failed: {e}"),
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_send(ws: &mut Ws, text: String) -> Value {
    ws.send(tungstenite::Message::text(text)).await.unwrap();
    loop {
        let m = within("a WebSocket answer", ws.next())
            .await
            .expect("socket open")
            .expect("frame");
        if let tungstenite::Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// The next audit event on `events/{gw}` with `method`.
async fn event(sub: &mut Subscriber, method: &str) -> Value {
    sub.next_where(TEST_TIMEOUT, |m| m.json["method"] == method)
        .await
        .json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_calls_what_it_may_and_changes_are_audited() {
    let broker = Mosquitto::start();
    let gw = start("gwroles", &broker).await;
    let rpc = gw.rpc(ADMIN).await;
    let mut events = Subscriber::connect(broker.port, "events/gwroles").await;

    // The viewer reads, and is refused every change with its own code; nothing runs.
    let st = call_with(&rpc, VIEWER, "gateway.status", json!([])).await;
    assert_eq!(st["result"]["gateway"], "gwroles", "{st}");
    let me = call_with(&rpc, VIEWER, "session.whoami", json!([])).await;
    assert_eq!(me["result"], json!({"name": "scada", "role": "viewer"}));
    for (method, params) in [
        (
            "device.write",
            json!({"device": "d1", "channel": "sp", "value": 5}),
        ),
        ("device.disable", json!({"device": "d1"})),
        ("gateway.reload", json!([])),
        ("gateway.config", json!([])),
    ] {
        let v = call_with(&rpc, VIEWER, method, params).await;
        assert_eq!(v["error"]["code"], FORBIDDEN, "{method}: {v}");
        assert_eq!(
            v["error"]["message"],
            format!("key \"scada\" (viewer) may not call {method}")
        );
    }
    let d1 = call_with(&rpc, VIEWER, "device.status", json!({"device": "d1"})).await;
    assert_eq!(
        d1["result"]["enabled"], true,
        "the refused disable ran: {d1}"
    );
    let metrics = rpc
        .http
        .get(format!("{}metrics", rpc.url))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("osgate_listener_cutoffs_total"));

    // The operator writes (audited with who, where, what, value) but cannot reload.
    let w = call_with(
        &rpc,
        OPERATOR,
        "device.write",
        json!({"device": "d1", "channel": "sp", "value": 42}),
    )
    .await;
    assert_eq!(w["result"]["value"], 42.0, "{w}");
    let e = event(&mut events, "device.write").await;
    assert_eq!(e["who"], "tech", "{e}");
    assert!(e["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{e}");
    assert_eq!(
        (&e["connector"], &e["device"], &e["channel"], &e["result"]),
        (&json!("sim"), &json!("d1"), &json!("sp"), &json!("ok"))
    );
    assert_eq!(e["value"], 42.0);
    let v = call_with(&rpc, OPERATOR, "gateway.reload", json!([])).await;
    assert_eq!(v["error"]["code"], FORBIDDEN, "{v}");
    assert_eq!(
        v["error"]["message"],
        "key \"tech\" (operator) may not call gateway.reload"
    );
    let v = call_with(&rpc, OPERATOR, "device.disable", json!({"device": "d1"})).await;
    assert_eq!(v["result"]["enabled"], false, "{v}");
    let e = event(&mut events, "device.disable").await;
    assert_eq!((&e["who"], &e["result"]), (&json!("tech"), &json!("ok")));

    // The plain-string key is an admin named key1: it does all.
    let me = rpc.result("session.whoami", json!([])).await;
    assert_eq!(me, json!({"name": "key1", "role": "admin"}));
    rpc.result("gateway.reload", json!([])).await;
    let e = event(&mut events, "gateway.reload").await;
    assert_eq!((&e["who"], &e["result"]), (&json!("key1"), &json!("ok")));
    rpc.result("device.enable", json!({"device": "d1"})).await;
    // The same events are in the log, target `audit`, at INFO.
    let log = gw.log_json();
    let audited: Vec<_> = log
        .iter()
        .filter(|l| l["target"] == "audit" && l["level"] == "INFO")
        .collect();
    assert!(
        audited
            .iter()
            .any(|l| l["who"] == "tech" && l["method"] == "device.write" && l["value"] == "42.0"),
        "{audited:?}"
    );
    assert!(!gw.log_text().contains(VIEWER) && !gw.log_text().contains(OPERATOR));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_take_header_keys_or_single_use_tickets() {
    let broker = Mosquitto::start();
    let gw = start("gwticket", &broker).await;
    let rpc = gw.rpc(ADMIN).await;
    let port = gw.rpc_port();

    // A ticket asked for over HTTP by the operator opens a WebSocket as the operator, once.
    let t = call_with(&rpc, OPERATOR, "session.ticket", json!([])).await;
    let ticket = t["result"]["ticket"].as_str().unwrap().to_string();
    assert_eq!(ticket.len(), 32, "{t}");
    assert_eq!(t["result"]["expires_in"], 30);
    let mut s = ws(port, &format!("?ticket={ticket}"), &[]).await.unwrap();
    let me = ws_send(
        &mut s,
        json!({"jsonrpc": "2.0", "id": 1, "method": "session.whoami"}).to_string(),
    )
    .await;
    assert_eq!(me["result"], json!({"name": "tech", "role": "operator"}));
    let v = ws_send(
        &mut s,
        json!({"jsonrpc": "2.0", "id": 2, "method": "gateway.reload"}).to_string(),
    )
    .await;
    assert_eq!(v["error"]["code"], FORBIDDEN, "{v}");
    // An object id over WebSocket is an invalid request, as over HTTP.
    let v = ws_send(
        &mut s,
        r#"{"jsonrpc":"2.0","id":{"a":1},"method":"gateway.status"}"#.into(),
    )
    .await;
    assert_eq!(v["error"]["code"], -32600, "{v}");
    assert_eq!(v["id"], Value::Null);
    assert_eq!(
        ws(port, &format!("?ticket={ticket}"), &[]).await.err(),
        Some(401)
    );
    assert_eq!(
        ws(port, "?ticket=00112233445566778899aabbccddeeff", &[])
            .await
            .err(),
        Some(401)
    );

    // Headers keep working; the viewer's socket may subscribe but not write.
    let auth = format!("Bearer {VIEWER}");
    let mut s = ws(port, "", &[("authorization", &auth)]).await.unwrap();
    let sub = ws_send(
        &mut s,
        json!({"jsonrpc": "2.0", "id": 3, "method": "readings.subscribe", "params": {"device": "d1"}})
            .to_string(),
    )
    .await;
    assert!(sub.get("result").is_some(), "{sub}");
    // One live-reading subscription is all `max_subscribers` allows here.
    let auth = format!("Bearer {ADMIN}");
    let mut other = ws(port, "", &[("authorization", &auth)]).await.unwrap();
    let refused = ws_send(
        &mut other,
        json!({"jsonrpc": "2.0", "id": 5, "method": "readings.subscribe"}).to_string(),
    )
    .await;
    assert_eq!(refused["error"]["code"], 1041, "{refused}");
    s.send(tungstenite::Message::text(
        json!({"jsonrpc": "2.0", "id": 4, "method": "device.write", "params": {"device": "d1", "channel": "sp", "value": 1}}).to_string(),
    ))
    .await
    .unwrap();
    let refused = loop {
        let m = within("the refusal", s.next()).await.unwrap().unwrap();
        if let tungstenite::Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == 4 {
                break v;
            }
        }
    };
    assert_eq!(refused["error"]["code"], FORBIDDEN, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_commands_and_rpc_over_mqtt_are_audited() {
    let broker = Mosquitto::start();
    let gw = start("gwmqttaudit", &broker).await;
    let mut events = Subscriber::connect(broker.port, "events/gwmqttaudit").await;
    let mut results = Subscriber::connect(broker.port, "command/gwmqttaudit/+/+/result").await;
    let r = broker
        .publish_until_answered(
            "command/gwmqttaudit/d1/sp/set",
            r#"{"value": 17, "id": "c1"}"#,
            &mut results,
        )
        .await;
    assert_eq!(r.json["ok"], true, "{:?}", r.json);
    let e = event(&mut events, "command").await;
    assert_eq!(
        (&e["who"], &e["device"], &e["channel"], &e["result"]),
        (&json!("mqtt"), &json!("d1"), &json!("sp"), &json!("ok")),
        "{e}"
    );
    assert_eq!(e["value"], 17.0);
    assert!(e.get("peer").is_none());

    let mut answers = Subscriber::connect(broker.port, "rpc/gwmqttaudit/response").await;
    broker
        .publish_until_answered(
            "rpc/gwmqttaudit/request",
            &json!({"jsonrpc": "2.0", "id": "m1", "method": "device.disable", "params": {"device": "d1"}}).to_string(),
            &mut answers,
        )
        .await;
    let e = event(&mut events, "device.disable").await;
    assert_eq!(
        (&e["who"], &e["device"]),
        (&json!("mqtt"), &json!("d1")),
        "{e}"
    );

    // Reloads by request (SIGHUP to the binary) are the signal's.
    gw.reload().await;
    let e = event(&mut events, "gateway.reload").await;
    assert_eq!(
        (&e["who"], &e["result"]),
        (&json!("signal"), &json!("ok")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_lock_out_one_peer_only() {
    let broker = Mosquitto::start();
    let mut cfg = config("gwlock", &broker);
    cfg["connectors"].as_array_mut().unwrap().push(json!({
        "name": "ingest", "protocol": "http", "mode": "listen",
        "listen": "127.0.0.1:0",
        "api_keys": [{"name": "meters", "key": "ingest-key-0123"}],
        "devices": [{"name": "meter", "channels": [{"name": "p", "pointer": "/p"}]}]}));
    let gw = InProc::start_with(&cfg, &[("SCADA_KEY", VIEWER)]).await;
    let good = gw.rpc(ADMIN).await;
    let ingest = gw.listener("ingest").await.port();
    // The guesser comes from 127.0.0.2 (still loopback), the good client from 127.0.0.1.
    let guesser = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .timeout(TEST_TIMEOUT)
        .build()
        .unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "gateway.status"}).to_string();
    let post = |key: &str| {
        guesser
            .post(&good.url)
            .header("content-type", "application/json")
            .bearer_auth(key)
            .body(body.clone())
            .send()
    };
    let mut statuses = Vec::new();
    for i in 0..20 {
        statuses.push(
            post(&format!("wrong-key-{i}"))
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    // Locked out even with the right key now, told when to come back…
    let r = post(ADMIN).await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // …while another peer with a good key is served.
    let st = good.result("gateway.status", json!([])).await;
    assert_eq!(st["gateway"], "gwlock");
    // Twenty failures, logged once (the first) and once more (the lockout).
    let refused = gw
        .log_json()
        .into_iter()
        .filter(|l| {
            l["peer"] == "127.0.0.2"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("wrong API key"))
        })
        .count();
    assert_eq!(refused, 2, "{}", gw.log_text());

    // The HTTP ingest keeps its own book, the same way.
    let ingest_url = format!("http://127.0.0.1:{ingest}/ingest/meter");
    let push = |c: &reqwest::Client, key: &str| {
        c.post(&ingest_url)
            .header("x-api-key", key)
            .body(r#"{"p": 1}"#)
            .send()
    };
    let mut statuses = Vec::new();
    for i in 0..20 {
        statuses.push(
            push(&guesser, &format!("wrong-{i}"))
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[10..].iter().all(|s| *s == 429), "{statuses:?}");
    let r = push(&guesser, "ingest-key-0123").await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let r = push(&good.http, "ingest-key-0123").await.unwrap();
    assert_eq!(r.status(), 202);
}

/// `osgate check -c PATH` with `SCADA_KEY` set: (exit code, stdout, stderr).
fn check(path: &str) -> (i32, String, String) {
    let out = std::process::Command::new(osgate_bin())
        .args(["check", "-c", path])
        .env("SCADA_KEY", VIEWER)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_names_keys_and_warns_about_readable_literal_secrets() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp_dir();
    let path = dir.path().join("osgate.json");
    let mut cfg = sim_config(
        "gwcheck",
        "mqtt://127.0.0.1:1",
        json!([{"name": "d", "channels": [{"name": "c", "signal": "counter"}]}]),
        json!({}),
    );
    cfg["rpc"] = json!({"listen": "127.0.0.1:8580", "api_keys": [
        "literal-admin-key-1",
        {"name": "scada", "key": "${SCADA_KEY}", "role": "viewer"}]});
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let p = path.to_str().unwrap();
    let (code, out, err) = check(p);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("rpc key key1 (admin)") && out.contains("rpc key scada (viewer)"),
        "{out}"
    );
    assert!(!out.contains("literal-admin-key-1") && !err.contains("literal-admin-key-1"));
    assert!(
        err.contains("literal secrets (rpc.api_keys[0])") && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, err) = check(p);
    assert_eq!(code, 0);
    assert!(!err.contains("literal secrets"), "{err}");
    // A bad role names its field and exits 2.
    cfg["rpc"]["api_keys"][1]["role"] = json!("root");
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let (code, out, err) = check(p);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("rpc.api_keys[1]"),
        "{out}{err}"
    );
}

#[test]
fn the_remote_cache_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp_dir();
    let cache = dir.path().join("state").join("remote.json");
    osgate::config::remote::write_cache(&cache, br#"{"k": "secret"}"#).unwrap();
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}
