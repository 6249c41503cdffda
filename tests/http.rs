//! The HTTP connector against real peers: the poller against the harness's HTTP server on
//! loopback (plain and HTTPS with a CA made at test time), the ingest listener with a real HTTP
//! client (reqwest) into real mosquitto through a whole gateway (in-process).

use std::time::Duration;

use osgate::reading::{Quality, Timestamp, Value};
use osgate::status::Health;
use serde_json::{json, Value as Json};

use crate::common::certs::Certs;
use crate::common::connector::{unique, ConnectorRun};
use crate::common::http::{etag_of, HttpServer, Reply};
use crate::common::TEST_TIMEOUT;
use crate::common::{
    free_port, unsafe_free_kill, wait_port, within, InProc, Mosquitto, Subscriber,
};

fn poll_connector(extra: Json, devices: Json) -> Json {
    let mut c = json!({"name": unique("http"), "protocol": "http", "mode": "poll",
        "timeout": "2s", "backoff": "50ms", "backoff_max": "200ms", "devices": devices});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

const DOC: &str = r#"{"ac": {"power": 1234.5, "on": true}, "arr": [10, 20, 30],
    "ts": 1790000000123, "note": "state=running; temp=21.5C"}"#;

#[tokio::test]
async fn poll_values_by_pointer_and_regex_with_auth_headers() {
    let server = HttpServer::start(Reply::JsonNoEtag(DOC.into())).await;
    let mut run = ConnectorRun::start(poll_connector(
        json!({"headers": {"X-Site": "plant-1"}}),
        json!([
            {"name": "inv", "url": format!("{}/api/status?key=abc", server.base()), "interval": "100ms",
             "auth": {"bearer": "tok-1"},
             "timestamp": {"pointer": "/ts", "format": "epoch_ms"},
             "channels": [
                {"name": "power", "pointer": "/ac/power", "unit": "W"},
                {"name": "on", "pointer": "/ac/on"},
                {"name": "third", "pointer": "/arr/2"},
                {"name": "state", "regex": "state=(\\w+)"},
                {"name": "temp", "regex": "temp=([0-9.]+)C", "type": "number"}]},
            {"name": "meter", "url": format!("{}/meter", server.base()), "interval": "100ms",
             "auth": {"basic": {"username": "u", "password": "p"}},
             "channels": [{"name": "power", "pointer": "/ac/power"}]}
        ]),
    ));
    let b = run.batch("inv").await;
    let v = crate::common::connector::by_name(&b);
    assert_eq!(v["power"], Value::F64(1234.5));
    assert_eq!(v["on"], Value::Bool(true));
    assert_eq!(v["third"], Value::U64(30));
    assert_eq!(v["state"], Value::Text("running".into()));
    assert_eq!(v["temp"], Value::F64(21.5));
    assert!(b.iter().all(|r| r.ts == Timestamp(1790000000123)), "{b:?}");
    assert_eq!(b[0].unit.as_deref(), Some("W"));
    let m = run.good_batch("meter").await;
    assert_eq!(m["power"], Value::F64(1234.5));
    let reqs = server.requests();
    let inv = reqs
        .iter()
        .find(|r| r.path.starts_with("/api/status"))
        .unwrap();
    assert_eq!(inv.method, "GET");
    assert_eq!(inv.path, "/api/status?key=abc");
    assert_eq!(inv.header("authorization"), Some("Bearer tok-1"));
    assert_eq!(inv.header("x-site"), Some("plant-1"));
    let meter = reqs.iter().find(|r| r.path == "/meter").unwrap();
    assert_eq!(meter.header("authorization"), Some("Basic dTpw"));
    assert_eq!(meter.header("x-site"), Some("plant-1"));
}

#[tokio::test]
async fn post_with_a_body_and_a_missing_pointer() {
    let server = HttpServer::start(Reply::JsonNoEtag(DOC.into())).await;
    let mut run = ConnectorRun::start(poll_connector(
        json!({}),
        json!([{"name": "d", "url": format!("{}/q", server.base()), "interval": "100ms",
            "method": "POST", "body": "{\"read\": \"all\"}",
            "channels": [{"name": "power", "pointer": "/ac/power"},
                         {"name": "gone", "pointer": "/ac/missing"}]}]),
    ));
    let b = run.batch("d").await;
    let gone = b.iter().find(|r| &*r.channel == "gone").unwrap();
    assert_eq!(
        gone.quality,
        Quality::Bad("no /ac/missing in the payload".into())
    );
    let st = run.status("d", |s| s.health == Health::Degraded).await;
    assert!(st.last_error.unwrap().contains("1 of 2 channels failed"));
    let r = &server.requests()[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.body, b"{\"read\": \"all\"}");
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn slow_server_times_out_then_recovers() {
    let server = HttpServer::start(Reply::Slow(Duration::from_secs(3), DOC.into())).await;
    let mut run = ConnectorRun::start(poll_connector(
        json!({"timeout": "200ms"}),
        json!([{"name": "d", "url": server.base(), "interval": "100ms",
            "channels": [{"name": "power", "pointer": "/ac/power"}]}]),
    ));
    let b = run.batch("d").await;
    match &b[0].quality {
        Quality::Bad(r) => assert!(r.contains("timeout"), "{r}"),
        q => panic!("expected bad, got {q:?}"),
    }
    let st = run.status("d", |s| !s.online).await;
    assert!(st.last_error.unwrap().contains("no answer within 200ms"));
    server.set(Reply::JsonNoEtag(DOC.into()));
    let v = run.good_batch("d").await;
    assert_eq!(v["power"], Value::F64(1234.5));
    run.status("d", |s| s.online && s.health == Health::Online)
        .await;
}

#[tokio::test]
async fn server_error_is_bad_with_the_status_then_recovers() {
    let server =
        HttpServer::start(Reply::StatusBody(500, b"{\"error\":\"db down\"}".to_vec())).await;
    let mut run = ConnectorRun::start(poll_connector(
        json!({}),
        json!([{"name": "d", "url": server.base(), "interval": "100ms",
            "channels": [{"name": "power", "pointer": "/ac/power"}]}]),
    ));
    let b = run.batch("d").await;
    match &b[0].quality {
        Quality::Bad(r) => assert!(r.contains("HTTP 500") && r.contains("db down"), "{r}"),
        q => panic!("expected bad, got {q:?}"),
    }
    run.status("d", |s| !s.online).await;
    server.set(Reply::JsonNoEtag(DOC.into()));
    run.good_batch("d").await;
    run.status("d", |s| s.online).await;
    let input = &run.health.inputs_snapshot()[0];
    assert!(input.bad >= 1 && input.messages > input.bad, "{input:?}");
    assert!(input.last_error.as_deref().unwrap().contains("HTTP 500"));
}

#[tokio::test]
async fn invalid_json_is_bad_and_counted_regex_still_reads() {
    let server = HttpServer::start(Reply::JsonNoEtag(b"{\"v\": 1.5, state=ok ".to_vec())).await;
    let mut run = ConnectorRun::start(poll_connector(
        json!({}),
        json!([{"name": "d", "url": server.base(), "interval": "100ms",
            "channels": [{"name": "v", "pointer": "/v"},
                         {"name": "state", "regex": "state=(\\w+)"}]}]),
    ));
    let b = run.batch("d").await;
    let v = b.iter().find(|r| &*r.channel == "v").unwrap();
    match &v.quality {
        Quality::Bad(r) => assert!(r.starts_with("invalid JSON"), "{r}"),
        q => panic!("expected bad, got {q:?}"),
    }
    let s = b.iter().find(|r| &*r.channel == "state").unwrap();
    assert_eq!(s.value, Value::Text("ok".into()));
    server.wait_requests(2, TEST_TIMEOUT).await;
    let input = &run.health.inputs_snapshot()[0];
    assert!(input.bad >= 1, "{input:?}");
    assert!(input
        .last_error
        .as_deref()
        .unwrap()
        .contains("invalid JSON"));
}

#[tokio::test]
async fn devices_on_one_endpoint_share_one_request_per_interval() {
    let server = HttpServer::start(Reply::JsonNoEtag(DOC.into())).await;
    let dev = |name: &str, ptr: &str| {
        json!({"name": name, "url": server.base(), "interval": "200ms",
            "channels": [{"name": "x", "pointer": ptr}]})
    };
    let mut run = ConnectorRun::start(poll_connector(
        json!({}),
        json!([
            dev("a", "/arr/0"),
            dev("b", "/arr/1"),
            dev("c", "/ac/power")
        ]),
    ));
    let mut n = [0usize; 3];
    while n.iter().any(|&k| k < 6) {
        if let osgate::pipeline::Envelope::Batch(b) = run.next().await {
            let i = (b.device.as_bytes()[0] - b'a') as usize;
            n[i] += 1;
        }
    }
    let requests = server.requests().len();
    let most = *n.iter().max().unwrap();
    assert!(
        requests <= most + 1,
        "{requests} requests for {n:?} batches: the endpoint was not shared"
    );
}

#[tokio::test]
async fn etag_not_modified_keeps_the_values() {
    let server = HttpServer::start(Reply::Json(DOC.into())).await;
    let mut run = ConnectorRun::start(poll_connector(
        json!({}),
        json!([{"name": "d", "url": server.base(), "interval": "100ms",
            "channels": [{"name": "power", "pointer": "/ac/power"}]}]),
    ));
    for _ in 0..3 {
        let v = run.good_batch("d").await;
        assert_eq!(v["power"], Value::F64(1234.5));
    }
    let reqs = server.requests();
    assert_eq!(reqs[0].status, 200);
    assert_eq!(reqs[0].header("if-none-match"), None);
    let tag = etag_of(DOC.as_bytes());
    assert!(reqs[1..]
        .iter()
        .all(|r| r.status == 304 && r.header("if-none-match") == Some(tag.as_str())));
    assert_eq!(run.device_status("d").unwrap().health, Health::Online);
}

#[tokio::test]
async fn https_server_with_a_ca_made_at_test_time() {
    let certs = Certs::generate();
    let server = HttpServer::start_tls(Reply::JsonNoEtag(DOC.into()), &certs.server).await;
    let mut run = ConnectorRun::start(poll_connector(
        json!({"tls": {"ca_file": certs.ca.cert}}),
        json!([{"name": "d", "url": server.base(), "interval": "100ms",
            "channels": [{"name": "power", "pointer": "/ac/power"}]}]),
    ));
    assert_eq!(run.good_batch("d").await["power"], Value::F64(1234.5));
    // Without the CA the server is not trusted: bad, never plain text.
    let mut run = ConnectorRun::start(poll_connector(
        json!({}),
        json!([{"name": "d", "url": server.base(), "interval": "100ms",
            "channels": [{"name": "power", "pointer": "/ac/power"}]}]),
    ));
    let st = run
        .status("d", |s| !s.online && s.last_error.is_some())
        .await;
    let e = st.last_error.unwrap();
    assert!(e.contains("certificate") || e.contains("issuer"), "{e}");
}

#[tokio::test]
async fn write_sends_the_template_and_reports_refusals() {
    let server = HttpServer::start(Reply::JsonNoEtag(b"{}".to_vec())).await;
    let run = ConnectorRun::start(poll_connector(
        json!({}),
        json!([{"name": "d", "url": format!("{}/status", server.base()), "interval": "1h",
            "auth": {"bearer": "w"},
            "channels": [{"name": "setpoint", "pointer": "/sp", "scale": 0.1,
                "write": {"method": "PUT", "url": format!("{}/set/{{value}}", server.base()),
                          "body": "{\"sp\": {value}}", "max": 100}}]}]),
    ));
    server.wait_requests(1, TEST_TIMEOUT).await;
    let took = run.write("d", "setpoint", json!(21.5)).await.unwrap();
    assert_eq!(took, json!(21.5));
    let reqs = server.wait_requests(2, TEST_TIMEOUT).await;
    let w = reqs.iter().find(|r| r.method == "PUT").unwrap();
    assert_eq!(w.path, "/set/215.0");
    assert_eq!(w.body, b"{\"sp\": 215.0}");
    assert_eq!(w.header("authorization"), Some("Bearer w"));
    assert!(run.write("d", "setpoint", json!(101)).await.is_err());
    server.set(Reply::StatusBody(
        409,
        b"setpoint locked by operator".to_vec(),
    ));
    let e = run
        .write("d", "setpoint", json!(20))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("HTTP 409") && e.contains("setpoint locked"),
        "{e}"
    );
}

// ---- ingest listener ----

/// Waits until the in-process listener accepts connections (without blocking its runtime).
async fn listening(port: u16) {
    within("the listener", async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn client() -> reqwest::Client {
    osgate::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A gateway with the HTTP ingest `hooks` on a free port (port 0) and an MQTT sink.
fn gateway_config(mq: &Mosquitto, extra: Json, sink: Json) -> Json {
    let mut c = json!({"name": "hooks", "protocol": "http", "mode": "listen",
        "listen": "127.0.0.1:0", "api_keys": ["key-1"], "max_body": "1KiB",
        "devices": [{"name": "weather", "channels": [
            {"name": "temperature", "pointer": "/temperature", "unit": "°C"},
            {"name": "wind", "type": "number"}]}]});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    let mut s = json!({"name": "local", "type": "mqtt", "url": mq.url(), "qos": 1});
    for (k, v) in sink.as_object().unwrap() {
        s[k] = v.clone();
    }
    json!({"gateway": {"id": "hgw"}, "sinks": [s], "connectors": [c]})
}

async fn post(c: &reqwest::Client, url: &str, key: Option<&str>, body: &str) -> (u16, String) {
    let mut r = c
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(k) = key {
        r = r.header("x-api-key", k);
    }
    let resp = within("a POST", r.send()).await.expect("POST");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn ingest_accepts_refuses_and_publishes() {
    let mq = Mosquitto::start();
    let mut sub = Subscriber::connect(mq.port, "telemetry/hgw/#").await;
    let gw = InProc::start(&gateway_config(&mq, json!({}), json!({}))).await;
    let port = gw.listener("hooks").await.port();
    assert!(wait_port(port, TEST_TIMEOUT), "ingest not listening");
    let c = client();
    let url = format!("http://127.0.0.1:{port}/ingest/weather");
    let (s, body) = post(
        &c,
        &url,
        Some("key-1"),
        r#"{"temperature": 21.25, "wind": "3.5", "ts": 1790000123456}"#,
    )
    .await;
    assert_eq!((s, body.as_str()), (202, r#"{"accepted":2}"#));
    let list = r#"[{"temperature": 22.5, "ts": 1790000124456}, {"temperature": 23.5, "ts": "2024-11-23T08:20:00Z"}]"#;
    let r = c
        .post(&url)
        .bearer_auth("key-1")
        .body(list)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    // Refused, each with a reason; none of these values may be published.
    assert_eq!(
        post(&c, &url, None, r#"{"temperature": 99.25}"#).await.0,
        401
    );
    assert_eq!(
        post(&c, &url, Some("key-2"), r#"{"temperature": 98.25}"#)
            .await
            .0,
        401
    );
    let (s, msg) = post(&c, &url, Some("key-1"), r#"{"temperature": "#).await;
    assert_eq!(s, 400);
    assert!(msg.contains("invalid JSON"), "{msg}");
    let (s, msg) = post(
        &c,
        &url,
        Some("key-1"),
        r#"[{"temperature": 97.25}, {"wind": "calm"}]"#,
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        msg.contains("item 1: /wind") && msg.contains("not a number"),
        "{msg}"
    );
    let (s, msg) = post(&c, &url, Some("key-1"), r#"{"humidity": 40}"#).await;
    assert_eq!(s, 400);
    assert!(msg.contains("no value for device \\\"weather\\\""), "{msg}");
    let (s, msg) = post(
        &c,
        &url,
        Some("key-1"),
        r#"{"temperature": 96.25, "ts": "soon"}"#,
    )
    .await;
    assert_eq!(s, 400);
    assert!(msg.contains("/ts"), "{msg}");
    let big = json!({"temperature": 1.0, "pad": "x".repeat(4096)}).to_string();
    assert_eq!(post(&c, &url, Some("key-1"), &big).await.0, 413);
    let other = format!("http://127.0.0.1:{port}/ingest/nobody");
    assert_eq!(
        post(&c, &other, Some("key-1"), r#"{"temperature": 95.25}"#)
            .await
            .0,
        404
    );
    let r = c
        .get(&url)
        .header("x-api-key", "key-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    // A last good one: everything before it has been published by the time it arrives.
    assert_eq!(
        post(&c, &url, Some("key-1"), r#"{"temperature": 20.0}"#)
            .await
            .0,
        202
    );
    let done = sub
        .collect_until(TEST_TIMEOUT, |m| {
            m.iter().any(|m| m.json["value"] == json!(20.0))
        })
        .await;
    assert!(done, "the last reading did not arrive: {:?}", sub.seen);
    let temps: Vec<(f64, i64)> = sub
        .seen
        .iter()
        .filter(|m| m.topic == "telemetry/hgw/weather/temperature")
        .map(|m| {
            (
                m.json["value"].as_f64().unwrap(),
                m.json["ts"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        temps,
        vec![
            (21.25, 1790000123456),
            (22.5, 1790000124456),
            (23.5, 1732350000000),
            (20.0, temps[3].1)
        ]
    );
    let wind = sub
        .seen
        .iter()
        .find(|m| m.topic == "telemetry/hgw/weather/wind")
        .expect("wind");
    assert_eq!(wind.json["value"], json!(3.5));
    assert!(sub
        .seen
        .iter()
        .any(|m| m.topic == "telemetry/hgw/weather/temperature" && m.json["unit"] == json!("°C")));
}

#[tokio::test]
async fn ingest_creates_new_devices_up_to_the_maximum() {
    let port = free_port();
    let mut run = ConnectorRun::start(json!({"name": unique("hooks"), "protocol": "http",
        "mode": "listen", "listen": format!("127.0.0.1:{port}"), "accept_new_devices": 1,
        "devices": []}));
    listening(port).await;
    let c = client();
    let url = |d: &str| format!("http://127.0.0.1:{port}/ingest/{d}");
    let (s, _) = post(
        &c,
        &url("tasmota-1"),
        None,
        r#"{"ENERGY": {"Power": 12}, "on": true, "ts": 1790000000}"#,
    )
    .await;
    assert_eq!(s, 202);
    let b = run.batch("tasmota-1").await;
    let v = crate::common::connector::by_name(&b);
    assert_eq!(v["ENERGY.Power"], Value::U64(12));
    assert_eq!(v["on"], Value::Bool(true));
    assert!(!v.contains_key("ts"));
    assert!(b.iter().all(|r| r.ts == Timestamp(1_790_000_000_000)));
    assert_eq!(
        post(&c, &url("tasmota-2"), None, r#"{"on": true}"#).await.0,
        404
    );
}

#[tokio::test]
async fn ingest_over_tls() {
    let certs = Certs::generate();
    let port = free_port();
    let mut run = ConnectorRun::start(json!({"name": unique("hooks"), "protocol": "http",
        "mode": "listen", "listen": format!("127.0.0.1:{port}"), "api_keys": ["k"],
        "tls": {"cert_file": certs.server.cert, "key_file": certs.server.key},
        "devices": [{"name": "d", "channels": [{"name": "x"}]}]}));
    listening(port).await;
    osgate::install_crypto_provider();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&certs.ca.cert).unwrap()).unwrap();
    let c = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let r = within(
        "an HTTPS POST",
        c.post(format!("https://127.0.0.1:{port}/ingest/d"))
            .bearer_auth("k")
            .body(r#"{"x": 5}"#)
            .send(),
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(run.good_batch("d").await["x"], Value::U64(5));
}

#[tokio::test]
async fn full_pipeline_answers_503_and_nothing_is_lost() {
    let mut mq = Mosquitto::start();
    let mut sub = Subscriber::connect(mq.port, "telemetry/hgw/weather/temperature").await;
    let gw = InProc::start(&gateway_config(
        &mq,
        json!({"max_body": "64KiB"}),
        json!({"queue": 4, "inflight": 1, "when_full": "block"}),
    ))
    .await;
    let port = gw.listener("hooks").await.port();
    assert!(wait_port(port, TEST_TIMEOUT));
    let c = client();
    let url = format!("http://127.0.0.1:{port}/ingest/weather");
    // The first one shows the sink is connected and publishing.
    let body = |i: usize| {
        let items: Vec<Json> = (0..3)
            .map(|k| json!({"temperature": (i * 100 + k) as f64, "ts": 1_790_000_000_000i64 + (i * 100 + k) as i64}))
            .collect();
        Json::Array(items).to_string()
    };
    assert_eq!(post(&c, &url, Some("key-1"), &body(0)).await.0, 202);
    assert!(sub.collect_until(TEST_TIMEOUT, |m| m.len() >= 3).await);
    // More objects than the sink queue holds can never be taken: refused as too large.
    let five = Json::Array(vec![json!({"temperature": 1.0}); 5]).to_string();
    let (s, msg) = post(&c, &url, Some("key-1"), &five).await;
    assert_eq!(s, 413);
    assert!(msg.contains("at most 4"), "{msg}");
    // A paused broker: connected, but no PUBACK ever comes; the sink stops taking batches.
    let pid = mq.pid().unwrap();
    unsafe_free_kill(pid, "STOP");
    let mut accepted = vec![0];
    let mut refused = None;
    for i in 1..500 {
        let resp = within(
            "a POST",
            c.post(&url)
                .header("x-api-key", "key-1")
                .body(body(i))
                .send(),
        )
        .await
        .unwrap();
        match resp.status().as_u16() {
            202 => accepted.push(i),
            503 => {
                assert_eq!(resp.headers()["retry-after"], "1");
                refused = Some(i);
                break;
            }
            s => panic!("unexpected {s}"),
        }
    }
    unsafe_free_kill(pid, "CONT");
    let refused = refused.expect("no 503 while the broker was paused");
    // The client sends the refused body again until it is taken.
    let deadline = tokio::time::Instant::now() + TEST_TIMEOUT;
    loop {
        let (s, _) = post(&c, &url, Some("key-1"), &body(refused)).await;
        if s == 202 {
            accepted.push(refused);
            break;
        }
        assert_eq!(s, 503);
        assert!(tokio::time::Instant::now() < deadline, "never taken again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let want = accepted.len() * 3;
    let all = sub
        .collect_until(TEST_TIMEOUT, |m| {
            let mut vals: Vec<i64> = m
                .iter()
                .map(|m| m.json["value"].as_f64().unwrap() as i64)
                .collect();
            vals.sort();
            vals.dedup();
            vals.len() >= want
        })
        .await;
    let mut vals: Vec<i64> = sub
        .seen
        .iter()
        .map(|m| m.json["value"].as_f64().unwrap() as i64)
        .collect();
    vals.sort();
    vals.dedup();
    assert!(all, "{} of {want} accepted readings arrived", vals.len());
    for i in &accepted {
        for k in 0..3 {
            assert!(
                vals.binary_search(&((i * 100 + k) as i64)).is_ok(),
                "reading {i}/{k} lost"
            );
        }
    }
    mq.stop();
}
