//! Remote-first configuration: remote → cache → local file, the refresher (ETag, 304, backoff,
//! hot reload of only what changed), reload requests (SIGHUP), the atomic cache and hostile
//! remote answers.
//!
//! Every test runs a whole gateway in-process (`InProc`; reload requests are what SIGHUP sends
//! the binary) against a real HTTP server on loopback (`common::http`) and a real mosquitto,
//! and judges by the telemetry, the retained `status/{gateway}` payload, the log and the files
//! on disk; the exit code of a gateway with no usable configuration is the binary's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::http::{etag_of, HttpServer, Reply};
use crate::common::*;

fn counter_device(name: &str, interval: &str) -> Value {
    json!({"name": name, "interval": interval, "channels": [{"name": "n", "signal": "counter"}]})
}

/// A complete config with one simulator connector per `(connector, devices)` entry.
fn config(gw: &str, broker: &Mosquitto, connectors: &[(&str, Value)]) -> Value {
    let connectors: Vec<Value> = connectors
        .iter()
        .map(|(name, devices)| json!({"name": name, "protocol": "simulator", "devices": devices}))
        .collect();
    json!({
        "gateway": {"id": gw},
        "sinks": [{"name": "local", "type": "mqtt", "url": broker.url(), "qos": 1}],
        "connectors": connectors,
    })
}

/// A config with one simulator device `device` (counter, 100 ms).
fn simple(gw: &str, broker: &Mosquitto, device: &str) -> Value {
    config(
        gw,
        broker,
        &[("sim", json!([counter_device(device, "100ms")]))],
    )
}

/// The local file of gateway `gw`: one device `ldev`, and a `remote` section pointing at `url`.
fn local_config(gw: &str, broker: &Mosquitto, url: &str, cache: &Path, refresh: &str) -> Value {
    let mut cfg = simple(gw, broker, "ldev");
    cfg["remote"] = json!({"url": url, "timeout": "1s", "refresh": refresh, "cache": cache.display().to_string()});
    cfg
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap()
}

/// A state dir for the cache, and the cache path in it.
fn state() -> (tempfile::TempDir, PathBuf) {
    let d = temp_dir();
    let p = d.path().join("state/cache.json");
    (d, p)
}

/// Waits for a telemetry message of `device` on `gw`.
async fn reading_from(sub: &mut Subscriber, gw: &str, device: &str) -> Msg {
    let prefix = format!("telemetry/{gw}/{device}/");
    sub.next_where(TEST_TIMEOUT, |m| m.topic.starts_with(&prefix))
        .await
}

/// Waits until the latest `status/{gw}` has a `config` that satisfies `pred`; returns it.
async fn status_where(sub: &mut Subscriber, gw: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let topic = format!("status/{gw}");
    sub.drain();
    if let Some(m) = sub.seen.iter().rev().find(|m| m.topic == topic) {
        if pred(&m.json["config"]) {
            return m.json["config"].clone();
        }
    }
    sub.next_where(TEST_TIMEOUT, |m| {
        m.topic == topic && pred(&m.json["config"])
    })
    .await
    .json["config"]
        .clone()
}

fn parses(path: &Path) -> bool {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_config_is_used_and_cached_as_received() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "#").await;
    let (_st, cache) = state();
    // `${RC_UNIT}` is interpolated at load time but must stay literal in the cache.
    let mut remote = simple("rgw1", &broker, "rdev");
    remote["connectors"][0]["devices"][0]["channels"][0]["unit"] = json!("${RC_UNIT}");
    let body = bytes(&remote);
    let server = HttpServer::start(Reply::Json(body.clone())).await;
    let mut local = local_config("rgw1", &broker, &server.url(), &cache, "1m");
    local["remote"]["headers"] = json!({"Authorization": "Bearer ${RC_TOKEN}"});
    let gw = InProc::start_with(&local, &[("RC_UNIT", "kWh"), ("RC_TOKEN", "fleet-token-1")]).await;

    let m = reading_from(&mut sub, "rgw1", "rdev").await;
    assert_eq!(m.json["unit"], "kWh", "{m:?}");
    let line = gw
        .wait_log("configuration loaded from the remote", TEST_TIMEOUT)
        .await;
    assert_eq!(line["source"], "remote");
    let cfg = status_where(&mut sub, "rgw1", |c| c["source"] == "remote").await;
    assert!(
        cfg["last_error"].is_null() && cfg["fetched"].is_i64(),
        "{cfg}"
    );

    let req = &server.requests()[0];
    assert_eq!(req.header("authorization"), Some("Bearer fleet-token-1"));
    assert_eq!(
        req.header("if-none-match"),
        None,
        "first fetch is unconditional"
    );
    let cached = std::fs::read(&cache).expect("cache written");
    assert_eq!(cached, body, "the cache holds the body exactly as served");
    assert!(String::from_utf8_lossy(&cached).contains("${RC_UNIT}"));
    assert!(!String::from_utf8_lossy(&cached).contains("kWh"));
    // The local device never ran.
    sub.drain();
    assert!(!sub.seen.iter().any(|m| m.topic.contains("/ldev/")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_down_uses_the_cache_then_the_local_file_and_recovers() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "#").await;
    let (_st, cache) = state();
    let down = free_port(); // nothing listens here
    let url = format!("http://127.0.0.1:{down}/config.json");
    let local = local_config("rgw2", &broker, &url, &cache, "1m");

    // 1. Remote refused, cache good → cache.
    std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
    std::fs::write(&cache, bytes(&simple("rgw2", &broker, "cdev"))).unwrap();
    {
        let gw = InProc::start(&local).await;
        reading_from(&mut sub, "rgw2", "cdev").await;
        let rej = gw
            .wait_log(
                "remote configuration rejected; trying the cache",
                TEST_TIMEOUT,
            )
            .await;
        let err = rej["error"].as_str().unwrap();
        assert!(err.contains(&url) || err.contains("connect"), "{err}");
        gw.wait_log("configuration loaded from the cache", TEST_TIMEOUT)
            .await;
        let cfg = status_where(&mut sub, "rgw2", |c| c["source"] == "cache").await;
        assert!(
            cfg["last_error"].as_str().unwrap().contains("remote"),
            "{cfg}"
        );
    }

    // 2. Cache corrupt (a torn write of an older, naive writer) → local file.
    std::fs::write(&cache, br#"{"gateway": {"id": "rg"#).unwrap();
    {
        let gw = InProc::start(&local).await;
        reading_from(&mut sub, "rgw2", "ldev").await;
        let rej = gw
            .wait_log(
                "cached configuration rejected; trying the local file",
                TEST_TIMEOUT,
            )
            .await;
        assert!(rej["error"].as_str().unwrap().contains("not JSON"), "{rej}");
        gw.wait_log("configuration loaded from the local file", TEST_TIMEOUT)
            .await;
        status_where(&mut sub, "rgw2", |c| c["source"] == "local").await;
    }

    // 3. Cache missing → local file; then the remote comes up and the refresher (retrying with
    //    backoff from 1 s) switches to it by hot reload, and caches it.
    std::fs::remove_file(&cache).unwrap();
    let gw = InProc::start(&local).await;
    reading_from(&mut sub, "rgw2", "ldev").await;
    let rej = gw
        .wait_log("cached configuration rejected", TEST_TIMEOUT)
        .await;
    assert!(
        rej["error"].as_str().unwrap().contains("No such file"),
        "{rej}"
    );
    let body = bytes(&simple("rgw2", &broker, "rdev"));
    let _server = HttpServer::start_on(down, Reply::Json(body.clone())).await;
    reading_from(&mut sub, "rgw2", "rdev").await;
    gw.wait_log(
        "configuration refreshed from the remote and cached",
        TEST_TIMEOUT,
    )
    .await;
    status_where(&mut sub, "rgw2", |c| {
        c["source"] == "remote" && c["last_error"].is_null()
    })
    .await;
    assert_eq!(std::fs::read(&cache).unwrap(), body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_usable_source_exits_2_naming_each_reason() {
    let dir = temp_dir();
    let cache = dir.path().join("cache.json");
    let down = free_port();
    let url = format!("http://127.0.0.1:{down}/config.json");
    // The local file is broken except for its remote section.
    let local = json!({
        "gateway": {"id": "rgw3"},
        "remote": {"url": url, "timeout": "1s", "cache": cache.display().to_string()},
        "connectors": [{"name": "x", "protocol": "nope"}]
    });
    let path = dir.path().join("osgate.json");
    std::fs::write(&path, bytes(&local)).unwrap();
    // The remote refuses at once and its timeout is 1 s: osgate must be done well within this.
    let (code, _out, err) = tokio::time::timeout(
        TEST_TIMEOUT,
        tokio::task::spawn_blocking(move || osgate_cmd(&["-c", path.to_str().unwrap()])),
    )
    .await
    .expect("osgate exits in time")
    .unwrap();
    assert_eq!(code, 2, "{err}");
    // One message (its last part lists the local file's problems on their own lines).
    let at = err.find("error: no usable configuration").expect(&err);
    let last = &err[at..];
    assert!(last.contains(&format!("remote {url}")), "{last}");
    assert!(
        last.contains(&format!("cache {}", cache.display())),
        "{last}"
    );
    assert!(
        last.contains("local file") && last.contains("unknown protocol \"nope\""),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_remote_config_is_rejected_at_start_and_on_refresh() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "#").await;
    let (_st, cache) = state();
    let mut invalid = simple("rgw4", &broker, "bad");
    invalid["connectors"][0]["protocol"] = json!("modbuss");
    let server = HttpServer::start(Reply::Json(bytes(&invalid))).await;
    std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
    std::fs::write(&cache, bytes(&simple("rgw4", &broker, "cdev"))).unwrap();
    let local = local_config("rgw4", &broker, &server.url(), &cache, "200ms");

    // At start: the invalid remote config is rejected, the cache is used and kept.
    let gw = InProc::start(&local).await;
    reading_from(&mut sub, "rgw4", "cdev").await;
    let rej = gw
        .wait_log(
            "remote configuration rejected; trying the cache",
            TEST_TIMEOUT,
        )
        .await;
    let err = rej["error"].as_str().unwrap();
    assert!(
        err.contains("invalid configuration") && err.contains("connectors[0] \"sim\".protocol"),
        "{err}"
    );
    assert!(std::fs::read_to_string(&cache).unwrap().contains("cdev"));

    // On refresh: a valid change is applied…
    server.set(Reply::Json(bytes(&simple("rgw4", &broker, "good"))));
    reading_from(&mut sub, "rgw4", "good").await;
    status_where(&mut sub, "rgw4", |c| c["source"] == "remote").await;
    // …an invalid one is rejected, the running configuration stays, the error is reported
    // (log and status) and stays reported while the remote answers 304 for it.
    server.set(Reply::Json(bytes(&invalid)));
    let line = gw
        .wait_log("remote served an invalid configuration", TEST_TIMEOUT)
        .await;
    assert!(
        line["error"].as_str().unwrap().contains("modbuss"),
        "{line}"
    );
    let cfg = status_where(&mut sub, "rgw4", |c| c["last_error"].is_string()).await;
    assert_eq!(cfg["source"], "remote");
    assert!(cfg["last_error"].as_str().unwrap().contains("modbuss"));
    let n = server.requests().len();
    let reqs = server.wait_requests(n + 2, TEST_TIMEOUT).await;
    assert_eq!(reqs.last().unwrap().status, 304, "{reqs:?}");
    sub.drain();
    sub.seen.clear();
    reading_from(&mut sub, "rgw4", "good").await;
    assert!(std::fs::read_to_string(&cache).unwrap().contains("good"));
    assert!(!std::fs::read_to_string(&cache).unwrap().contains("modbuss"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_remote_is_a_304_and_its_remote_section_is_ignored() {
    let broker = Mosquitto::start();
    let (_st, cache) = state();
    // The served config tries to switch the remote off: it must keep polling.
    let mut remote = simple("rgw5", &broker, "rdev");
    remote["remote"] = Value::Null;
    let body = bytes(&remote);
    let server = HttpServer::start(Reply::Json(body.clone())).await;
    let local = local_config("rgw5", &broker, &server.url(), &cache, "200ms");
    let gw = InProc::start(&local).await;
    gw.wait_log(
        "has a remote section of its own; it is ignored",
        TEST_TIMEOUT,
    )
    .await;
    let reqs = server.wait_requests(5, TEST_TIMEOUT).await;
    let tag = etag_of(&body);
    assert_eq!(reqs[0].status, 200);
    for r in &reqs[1..] {
        assert_eq!(r.header("if-none-match"), Some(tag.as_str()), "{r:?}");
        assert_eq!(r.status, 304, "{r:?}");
    }
    let log = gw.log_text();
    assert!(!log.contains("configuration reloaded"), "{log}");
    assert!(!log.contains("remote configuration changed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_restarts_only_the_changed_connector() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "telemetry/rgw6/#").await;
    let (_st, cache) = state();
    // Long enough that scheduling jitter on a loaded 2-core CI machine stays well inside it.
    let interval = 250;
    let before = config(
        "rgw6",
        &broker,
        &[
            ("steady", json!([counter_device("s", "250ms")])),
            ("moving", json!([counter_device("m", "250ms")])),
        ],
    );
    let mut after = before.clone();
    after["connectors"][1]["devices"][0]["channels"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "extra", "signal": "constant", "value": 7}));
    let server = HttpServer::start(Reply::Json(bytes(&before))).await;
    let local = local_config("rgw6", &broker, &server.url(), &cache, "200ms");
    let gw = InProc::start(&local).await;
    // A second of steady readings, the change, then another second.
    let steady = |m: &Msg| m.topic == "telemetry/rgw6/s/n";
    assert!(
        sub.collect_until(TEST_TIMEOUT, |seen| seen
            .iter()
            .filter(|m| steady(m))
            .count()
            >= 10)
            .await
    );
    server.set(Reply::Json(bytes(&after)));
    sub.next_where(TEST_TIMEOUT, |m| m.topic == "telemetry/rgw6/m/extra")
        .await;
    let reload = gw.wait_log("configuration reloaded", TEST_TIMEOUT).await;
    let target = sub.seen.iter().filter(|m| steady(m)).count() + 10;
    assert!(
        sub.collect_until(TEST_TIMEOUT, |seen| seen
            .iter()
            .filter(|m| steady(m))
            .count()
            >= target)
            .await
    );

    assert!(
        reload["connectors_kept"] == "steady"
            && reload["connectors_stopped"] == "moving"
            && reload["connectors_started"] == "moving",
        "{reload}"
    );
    let readings: Vec<(i64, u64)> = sub
        .seen
        .iter()
        .filter(|m| steady(m))
        .map(|m| {
            (
                m.json["ts"].as_i64().unwrap(),
                m.json["value"].as_u64().unwrap(),
            )
        })
        .collect();
    for w in readings.windows(2) {
        let ((t0, v0), (t1, v1)) = (w[0], w[1]);
        // Not restarted: the counter goes on by one per tick, never back to zero…
        assert_eq!(v1, v0 + 1, "steady's counter jumped: {readings:?}");
        // …and no tick is missing: no hole longer than the interval (plus scheduling jitter).
        assert!(
            t1 - t0 < interval + interval / 2,
            "hole of {} ms in steady's readings: {readings:?}",
            t1 - t0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_request_reloads_the_local_file() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "telemetry/rgw7/#").await;
    let gw = InProc::start(&simple("rgw7", &broker, "one")).await;
    reading_from(&mut sub, "rgw7", "one").await;
    gw.wait_log("no remote section", TEST_TIMEOUT).await;

    let two = config(
        "rgw7",
        &broker,
        &[
            ("sim", json!([counter_device("one", "100ms")])),
            ("more", json!([counter_device("two", "100ms")])),
        ],
    );
    std::fs::write(&gw.config, bytes(&two)).unwrap();
    gw.reload().await;
    reading_from(&mut sub, "rgw7", "two").await;
    // Fields a person can read, not a Rust debug dump.
    let line = gw.wait_log("configuration reloaded", TEST_TIMEOUT).await;
    assert_eq!(line["connectors_kept"], "sim", "{line}");
    assert_eq!(line["connectors_started"], "more", "{line}");
    assert_eq!(line["sinks_stopped"], "-", "{line}");
    assert!(!line.to_string().contains("ReloadSummary"), "{line}");

    // An invalid edit is rejected; both devices keep running.
    std::fs::write(
        &gw.config,
        b"{\"gateway\": {\"id\": \"rgw7\"}, \"sinks\": 5}",
    )
    .unwrap();
    gw.reload().await;
    let rej = gw.wait_log("reload rejected", TEST_TIMEOUT).await;
    assert!(rej["error"].as_str().unwrap().contains("sinks"), "{rej}");
    sub.drain();
    sub.seen.clear();
    reading_from(&mut sub, "rgw7", "one").await;
    reading_from(&mut sub, "rgw7", "two").await;

    // A value nested deeper than a tree can be, inside a channel, once killed the process
    // (issue 11): it is rejected like any invalid edit and the gateway keeps running.
    let mut deep = bytes(&two);
    let at = String::from_utf8_lossy(&deep).find("\"signal\"").unwrap();
    let nested = format!("\"x\": {}0{}, ", "[".repeat(200), "]".repeat(200));
    deep.splice(at..at, nested.into_bytes());
    std::fs::write(&gw.config, &deep).unwrap();
    gw.reload().await;
    within("the second rejection", async {
        loop {
            let deep_rejected = gw.log_json().iter().any(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("reload rejected"))
                    && l["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("nested more than 128 levels deep"))
            });
            if deep_rejected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    sub.drain();
    sub.seen.clear();
    reading_from(&mut sub, "rgw7", "one").await;
    reading_from(&mut sub, "rgw7", "two").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_cache_write_never_leaves_a_broken_cache() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "telemetry/rgw8/#").await;
    let server = HttpServer::start(Reply::Json(bytes(&simple("rgw8", &broker, "rdev")))).await;

    // 1. The cache cannot be written (its directory is a regular file; tests run as root, so a
    //    read-only directory would not stop the write): the remote config still runs.
    let (st, _) = state();
    let blocker = st.path().join("blocker");
    std::fs::write(&blocker, b"not a dir").unwrap();
    let local = local_config(
        "rgw8",
        &broker,
        &server.url(),
        &blocker.join("cache.json"),
        "1m",
    );
    {
        let gw = InProc::start(&local).await;
        reading_from(&mut sub, "rgw8", "rdev").await;
        gw.wait_log("cannot write the configuration cache", TEST_TIMEOUT)
            .await;
    }
    assert_eq!(std::fs::read(&blocker).unwrap(), b"not a dir");

    // 2. A crash mid-write left a partial temp file next to a good cache: the cache still
    //    parses and is used while the remote is down; the next good fetch replaces both.
    let (_st2, cache) = state();
    std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
    std::fs::write(&cache, bytes(&simple("rgw8", &broker, "cdev"))).unwrap();
    let tmp = cache.with_file_name(".cache.json.tmp");
    std::fs::write(&tmp, br#"{"gateway": {"id": "rgw8"}, "conn"#).unwrap();
    let port = server.port;
    drop(server);
    let local = local_config(
        "rgw8",
        &broker,
        &format!("http://127.0.0.1:{port}/config.json"),
        &cache,
        "1m",
    );
    let gw = InProc::start(&local).await;
    reading_from(&mut sub, "rgw8", "cdev").await;
    assert!(parses(&cache));
    let new = bytes(&simple("rgw8", &broker, "rdev2"));
    let _server = HttpServer::start_on(port, Reply::Json(new.clone())).await;
    reading_from(&mut sub, "rgw8", "rdev2").await;
    gw.wait_log(
        "configuration refreshed from the remote and cached",
        TEST_TIMEOUT,
    )
    .await;
    assert_eq!(std::fs::read(&cache).unwrap(), new);
    assert!(!tmp.exists(), "the temp file was renamed over the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_remote_answers_fall_back_with_a_clear_reason() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "telemetry/rgw9/#").await;
    let (_st, cache) = state();
    std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
    let cached = bytes(&simple("rgw9", &broker, "cdev"));
    let cases = [
        (Reply::Huge(64 << 20), "exceeds the limit of 4194304 bytes"),
        (Reply::RedirectLoop, "too many redirects"),
        (Reply::NotJson, "not JSON"),
        (Reply::Status(503), "HTTP status 503"),
        (Reply::Hang, "timed out after 1s"),
        // Valid JSON nested deeper than a config may be (once a panic: issue 11).
        (
            Reply::Json(
                format!(
                    "{{\"gateway\": {{\"id\": \"rgw9\"}}, \"connectors\": [{{\"name\": \"s\", \"protocol\": \"simulator\", \"devices\": [{{\"name\": \"d\", \"channels\": [{{\"name\": \"c\", \"x\": {}0{}}}]}}]}}]}}",
                    "[".repeat(500),
                    "]".repeat(500)
                )
                .into_bytes(),
            ),
            "nested more than 128 levels deep",
        ),
    ];
    let server = HttpServer::start(Reply::Status(500)).await;
    for (reply, reason) in cases {
        server.set(reply.clone());
        std::fs::write(&cache, &cached).unwrap();
        let local = local_config("rgw9", &broker, &server.url(), &cache, "1m");
        let gw = InProc::start(&local).await;
        let line = gw
            .wait_log(
                "remote configuration rejected; trying the cache",
                TEST_TIMEOUT,
            )
            .await;
        let err = line["error"].as_str().unwrap();
        assert!(err.contains(reason), "{reply:?}: {err}");
        gw.wait_log("configuration loaded from the cache", TEST_TIMEOUT)
            .await;
        sub.drain();
        sub.seen.clear();
        reading_from(&mut sub, "rgw9", "cdev").await;
        assert_eq!(std::fs::read(&cache).unwrap(), cached, "{reply:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_fails_to_start_keeps_the_old_pipeline() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "#").await;
    let (_st, cache) = state();
    let good = simple("rgw10", &broker, "a");
    // The change adds a channel to "a" and a connector that cannot be built (a serial port
    // that does not exist): the reload is refused before anything changes.
    let mut bad = good.clone();
    bad["connectors"][0]["devices"][0]["channels"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "x", "signal": "constant", "value": 1}));
    bad["connectors"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "broken", "protocol": "modbus",
            "transport": {"rtu": {"port": "/dev/ttyOSGATE-NOPE"}},
            "devices": [{"name": "m", "channels": [{"name": "r", "table": "holding", "address": 0}]}]}));
    let server = HttpServer::start(Reply::Json(bytes(&good))).await;
    let local = local_config("rgw10", &broker, &server.url(), &cache, "200ms");
    let gw = InProc::start(&local).await;
    reading_from(&mut sub, "rgw10", "a").await;
    server.set(Reply::Json(bytes(&bad)));
    let line = gw
        .wait_log("the new configuration cannot start", TEST_TIMEOUT)
        .await;
    let failed = line["failed"].as_str().unwrap();
    assert!(
        failed.contains("connector \"broken\"") && failed.contains("/dev/ttyOSGATE-NOPE"),
        "{line}"
    );
    gw.wait_log(
        "could not be applied; the running configuration stays",
        TEST_TIMEOUT,
    )
    .await;
    let cfg = status_where(&mut sub, "rgw10", |c| c["last_error"].is_string()).await;
    let err = cfg["last_error"].as_str().unwrap();
    assert!(
        err.contains("broken") && err.contains("the running configuration stays"),
        "{err}"
    );
    // The old pipeline runs again: "a" without the new channel; the cache keeps the old body.
    sub.drain();
    sub.seen.clear();
    assert!(
        sub.collect_until(TEST_TIMEOUT, |seen| seen
            .iter()
            .filter(|m| m.topic == "telemetry/rgw10/a/n")
            .count()
            >= 5)
            .await
    );
    assert!(
        !sub.seen.iter().any(|m| m.topic == "telemetry/rgw10/a/x"),
        "the new channel still runs: {:?}",
        sub.seen
    );
    assert_eq!(std::fs::read(&cache).unwrap(), bytes(&good));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_follows_a_new_remote_url_of_the_local_file() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "telemetry/rgw11/#").await;
    let (_st, cache) = state();
    let first = HttpServer::start(Reply::Json(bytes(&simple("rgw11", &broker, "one")))).await;
    let second = HttpServer::start(Reply::Json(bytes(&simple("rgw11", &broker, "two")))).await;
    // The local file's own connectors are broken: its remote section alone is enough.
    let mut local = local_config("rgw11", &broker, &first.url(), &cache, "200ms");
    local["connectors"][0]["protocol"] = json!("nope");
    let gw = InProc::start(&local).await;
    reading_from(&mut sub, "rgw11", "one").await;

    local["remote"]["url"] = json!(second.url());
    std::fs::write(&gw.config, bytes(&local)).unwrap();
    gw.reload().await;
    reading_from(&mut sub, "rgw11", "two").await;
    // The refresher now polls the new URL (and the cache holds the new body).
    second.wait_requests(3, TEST_TIMEOUT).await;
    let polled_first = first.requests().len();
    second.wait_requests(5, TEST_TIMEOUT).await;
    assert_eq!(
        first.requests().len(),
        polled_first,
        "still polling the old URL"
    );
    assert!(std::fs::read_to_string(&cache).unwrap().contains("\"two\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_polls_back_off_and_recover() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "#").await;
    let (_st, cache) = state();
    let server = HttpServer::start(Reply::Status(500)).await;
    let local = local_config("rgw12", &broker, &server.url(), &cache, "1m");
    let gw = InProc::start(&local).await;
    reading_from(&mut sub, "rgw12", "ldev").await;
    // Start (t0), then retries after 1 s and 2 s more: the pauses double.
    let reqs = server.wait_requests(3, TEST_TIMEOUT).await;
    let first = reqs[1].at - reqs[0].at;
    let second = reqs[2].at - reqs[1].at;
    assert!(
        first >= Duration::from_millis(950) && second >= Duration::from_millis(1900),
        "pauses {first:?}, {second:?}"
    );
    gw.wait_log("configuration refresh failed", TEST_TIMEOUT)
        .await;
    let cfg = status_where(&mut sub, "rgw12", |c| {
        c["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP status 500"))
    })
    .await;
    assert_eq!(cfg["source"], "local");
    // One warning for the repeated failure, not one per poll.
    let warnings = gw
        .log_json()
        .iter()
        .filter(|l| l["message"] == "configuration refresh failed; the running configuration stays")
        .count();
    assert_eq!(warnings, 1);
    // The remote recovers: the next retry (after 4 s) applies it and clears the error.
    server.set(Reply::Json(bytes(&simple("rgw12", &broker, "rdev"))));
    reading_from(&mut sub, "rgw12", "rdev").await;
    status_where(&mut sub, "rgw12", |c| {
        c["source"] == "remote" && c["last_error"].is_null()
    })
    .await;
}
