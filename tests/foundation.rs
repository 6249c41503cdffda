//! Foundation: config → simulator → pipeline → MQTT sink, against a real mosquitto. The
//! pipeline's behaviour runs in-process (`InProc`); what a stop, a kill or a bad configuration
//! does to the process (exit codes, the last will) runs the binary.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

fn counter_device(name: &str, interval: &str) -> serde_json::Value {
    json!({"name": name, "interval": interval, "channels": [{"name": "n", "signal": "counter"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_arrive_in_reading_format() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "telemetry/#").await;
    let cfg = sim_config(
        "gw1",
        &broker.url(),
        json!([{"name": "boiler", "interval": "50ms", "channels": [
            {"name": "temp", "signal": "sine", "min": 20, "max": 80, "period": "10s", "unit": "°C"},
            {"name": "count", "signal": "counter"},
            {"name": "on", "signal": "bool", "period": "1s"},
            {"name": "recipe", "signal": "constant", "value": "PX-200"}]}]),
        json!({}),
    );
    let _gw = InProc::start(&cfg).await;
    let ok = sub
        .collect_until(TEST_TIMEOUT, |seen| {
            let topics: BTreeSet<&str> = seen.iter().map(|m| m.topic.as_str()).collect();
            topics.len() == 4
        })
        .await;
    assert!(ok, "not all four channels arrived: {:?}", sub.seen);
    let now = osgate::reading::Timestamp::now().0;
    for m in &sub.seen {
        let j = &m.json;
        assert_eq!(j["quality"], "good", "{m:?}");
        let ts = j["ts"].as_i64().expect("ts in ms");
        assert!(
            (now - 60_000..=now + 60_000).contains(&ts),
            "ts {ts} is not ms near now"
        );
        match m.topic.as_str() {
            "telemetry/gw1/boiler/temp" => {
                let v = j["value"].as_f64().unwrap();
                assert!((20.0..=80.0).contains(&v));
                assert_eq!(j["unit"], "°C");
            }
            "telemetry/gw1/boiler/count" => assert!(j["value"].is_u64() && j.get("unit").is_none()),
            "telemetry/gw1/boiler/on" => assert!(j["value"].is_boolean()),
            "telemetry/gw1/boiler/recipe" => assert_eq!(j["value"], "PX-200"),
            t => panic!("unexpected topic {t}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_format_sends_one_message_per_batch() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "telemetry/#").await;
    let cfg = sim_config(
        "gw2",
        &broker.url(),
        json!([{"name": "meter", "interval": "50ms", "channels": [
            {"name": "v", "signal": "sine", "min": 228, "max": 232, "period": "5s"},
            {"name": "e", "signal": "counter"}]}]),
        json!({"format": "device"}),
    );
    let _gw = InProc::start(&cfg).await;
    for _ in 0..3 {
        let m = sub.next(TEST_TIMEOUT).await;
        assert_eq!(m.topic, "telemetry/gw2/meter");
        let values = m.json["values"].as_object().expect("values object");
        assert_eq!(values.len(), 2, "{m:?}");
        assert!(values["v"].is_f64() && values["e"].is_u64());
        assert!(m.json["ts"].is_i64());
    }
}

/// Gateway `id` with one simulated counter device `d` (100 ms) and its sink on `broker`.
fn one_counter(id: &str, broker: &Mosquitto) -> Value {
    sim_config(
        id,
        &broker.url(),
        json!([counter_device("d", "100ms")]),
        json!({}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_online_retained_and_last_will_on_kill() {
    let broker = Mosquitto::start();
    let cfg = one_counter("gw3", &broker);
    let gw = Gateway::start(&cfg);
    let mut sub = Subscriber::connect(broker.port, "status/gw3").await;
    let m = sub
        .next_where(TEST_TIMEOUT, |m| m.json["online"] == true)
        .await;
    assert_eq!(m.json["version"], env!("CARGO_PKG_VERSION"));
    assert!(m.json["started"].is_i64());
    // Device status, retained, on its own topic: once it was published (a subscriber that
    // came first sees it live, without the flag), a newcomer gets it retained.
    let mut first = Subscriber::connect(broker.port, "status/gw3/sim/d").await;
    first.next(TEST_TIMEOUT).await;
    let mut dev = Subscriber::connect(broker.port, "status/gw3/sim/d").await;
    let d = dev.next(TEST_TIMEOUT).await;
    assert!(d.retain, "device status must be retained");
    assert_eq!(d.json["running"], true);
    assert_eq!(d.json["online"], true);
    // kill -9: no clean offline message, so what arrives is the broker's last will.
    gw.signal("KILL");
    let m = sub
        .next_where(TEST_TIMEOUT, |m| m.json["online"] == false)
        .await;
    assert_eq!(m.json, json!({"online": false}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_stop_publishes_offline_and_exits_zero() {
    let broker = Mosquitto::start();
    let cfg = one_counter("gw4", &broker);
    let mut gw = Gateway::start(&cfg);
    let mut sub = Subscriber::connect(broker.port, "status/gw4").await;
    sub.next_where(TEST_TIMEOUT, |m| m.json["online"] == true)
        .await;
    gw.signal("TERM");
    sub.next_where(TEST_TIMEOUT, |m| m.json["online"] == false)
        .await;
    assert_eq!(gw.wait_exit(TEST_TIMEOUT).code(), Some(0));
    // The offline message is retained: a newcomer sees it.
    let mut late = Subscriber::connect(broker.port, "status/gw4").await;
    let m = late.next(TEST_TIMEOUT).await;
    assert!(m.retain);
    assert_eq!(m.json, json!({"online": false}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_leaves_readings_unacknowledged_exits_3() {
    let mut broker = Mosquitto::start();
    let mut cfg = sim_config(
        "gw4u",
        &broker.url(),
        json!([counter_device("d", "20ms")]),
        json!({}),
    );
    cfg["gateway"]["shutdown_timeout"] = json!("300ms");
    let mut gw = Gateway::start(&cfg);
    let mut sub = Subscriber::connect(broker.port, "telemetry/gw4u/#").await;
    sub.next(TEST_TIMEOUT).await;
    // The broker goes away: readings queue in the sink and can never be acknowledged.
    broker.stop();
    gw.wait_log("lost connection to broker", TEST_TIMEOUT).await;
    gw.signal("TERM");
    let code = gw.wait_exit(TEST_TIMEOUT).code();
    assert_eq!(code, Some(3), "{}", gw.log_text());
    let log = gw.log_text();
    assert!(!log.contains("stopped cleanly"), "{log}");
    assert!(
        log.contains("unacknowledged at the flush deadline"),
        "{log}"
    );
}

/// The counter values a subscriber saw on `topic`.
fn counter_values(seen: &[Msg], topic: &str) -> BTreeSet<u64> {
    seen.iter()
        .filter(|m| m.topic == topic)
        .filter_map(|m| m.json["value"].as_u64())
        .collect()
}

/// The final counters the MQTT sink logs when it stops.
fn sink_summary(gw: &InProc) -> serde_json::Value {
    gw.log_json()
        .into_iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("sink stopped"))
        })
        .unwrap_or_else(|| panic!("no sink summary in log:\n{}", gw.log_text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_loses_nothing_at_qos1() {
    let mut broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "telemetry/gw5/#").await;
    let cfg = sim_config(
        "gw5",
        &broker.url(),
        json!([counter_device("c", "10ms")]),
        json!({"backoff_max": "500ms"}),
    );
    let mut gw = InProc::start(&cfg).await;
    let topic = "telemetry/gw5/c/n";
    assert!(
        sub.collect_until(TEST_TIMEOUT, |s| counter_values(s, topic).len() >= 50)
            .await
    );

    // Broker away for a few seconds while the counter keeps counting.
    broker.stop();
    gw.wait_log("lost connection to broker", TEST_TIMEOUT).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // the outage itself: time is the point here
    broker.restart();
    gw.wait_log("reconnected to broker", TEST_TIMEOUT).await;

    // Stop the gateway: everything it accepted is acknowledged before it exits.
    let stopped = gw.stop().await;
    assert!(stopped.is_ok(), "{stopped:?}; log:\n{}", gw.log_text());
    let summary = sink_summary(&gw);
    let received = summary["received"].as_u64().unwrap();
    assert_eq!(summary["acked"].as_u64().unwrap(), received, "{summary}");
    assert_eq!(summary["dropped"].as_u64().unwrap(), 0, "{summary}");
    assert!(
        received > 250,
        "the counter ran through the 3 s outage at 100/s: {summary}"
    );

    // The subscriber (persistent session) sees every value 0..received, none missing.
    let ok = sub
        .collect_until(TEST_TIMEOUT, |s| {
            counter_values(s, topic).len() as u64 >= received
        })
        .await;
    let vals = counter_values(&sub.seen, topic);
    let missing: Vec<u64> = (0..received)
        .filter(|v| !vals.contains(v))
        .take(10)
        .collect();
    assert!(
        ok && missing.is_empty(),
        "missing counter values (first 10): {missing:?} of {received}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_overflow_while_broker_away_is_counted_and_logged_once() {
    let mut broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "telemetry/gw8/#").await;
    let cfg = sim_config(
        "gw8",
        &broker.url(),
        json!([counter_device("c", "10ms")]),
        json!({"buffer": 20, "backoff_max": "500ms"}),
    );
    let mut gw = InProc::start(&cfg).await;
    assert!(sub.collect_until(TEST_TIMEOUT, |s| s.len() >= 10).await);

    broker.stop();
    gw.wait_log("lost connection to broker", TEST_TIMEOUT).await;
    // 20 readings fill the buffer after ~200 ms; the counter goes on, the rest is dropped.
    gw.wait_log("buffer full while the broker is away", TEST_TIMEOUT)
        .await;
    broker.restart();
    gw.wait_log("reconnected to broker", TEST_TIMEOUT).await;
    let stopped = gw.stop().await;
    assert!(stopped.is_ok(), "{stopped:?}; log:\n{}", gw.log_text());

    let summary = sink_summary(&gw);
    let n = |k: &str| summary[k].as_u64().unwrap();
    assert!(n("dropped") > 0, "{summary}");
    assert_eq!(n("acked") + n("dropped"), n("received"), "{summary}");
    let warnings = gw
        .log_json()
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("buffer full"))
        })
        .count();
    assert_eq!(
        warnings, 1,
        "one log line per outage, not one per dropped reading"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_under_load_acks_everything_accepted() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "telemetry/gw6/#").await;
    let devices: Vec<_> = (0..20)
        .map(|i| {
            json!({"name": format!("d{i}"), "interval": "5ms", "channels":
                (0..20).map(|c| json!({"name": format!("c{c}"), "signal": "counter"})).collect::<Vec<_>>()})
        })
        .collect();
    let cfg = sim_config("gw6", &broker.url(), json!(devices), json!({}));
    let mut gw = InProc::start(&cfg).await;
    assert!(
        sub.collect_until(TEST_TIMEOUT, |s| s.len() > 5000).await,
        "load did not flow"
    );
    let stopped = gw.stop().await;
    assert!(stopped.is_ok(), "{stopped:?}; log:\n{}", gw.log_text());
    let summary = sink_summary(&gw);
    let received = summary["received"].as_u64().unwrap();
    assert!(received > 5000, "{summary}");
    assert_eq!(summary["acked"].as_u64().unwrap(), received, "{summary}");
    assert_eq!(summary["dropped"].as_u64().unwrap(), 0, "{summary}");
    // And the broker really has them: the subscriber gets every acknowledged reading.
    let ok = sub
        .collect_until(TEST_TIMEOUT, |s| s.len() as u64 >= received)
        .await;
    assert!(ok, "subscriber got {} of {received}", sub.seen.len());
}

fn write_config(dir: &tempfile::TempDir, cfg: &serde_json::Value) -> String {
    let p = dir.path().join("c.json");
    std::fs::write(&p, serde_json::to_vec(cfg).unwrap()).unwrap();
    p.display().to_string()
}

fn base_config() -> serde_json::Value {
    sim_config(
        "gw",
        "mqtt://127.0.0.1:1",
        json!([{"name": "d", "interval": "1s", "channels": [
        {"name": "t", "signal": "sine"}]}]),
        json!({}),
    )
}

#[test]
fn bad_configs_exit_2_naming_the_field() {
    let dir = temp_dir();
    type Mutation = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|c| {
                c["connectors"][0]["devices"][0]["channels"][0]["intervall"] = json!("1s")
            }),
            "connectors[0] \"sim\".devices[0].channels[0].intervall: unknown field",
        ),
        (
            Box::new(|c| c["sinks"][0]["qos"] = json!("1")),
            "sinks[0] \"local\".qos: expected 0 or 1, got \"1\"",
        ),
        // Type errors in JSON words, not Rust types (`expected f64`).
        (
            Box::new(|c| c["connectors"][0]["devices"][0]["channels"][0]["min"] = json!("20")),
            "connectors[0] \"sim\".devices[0].channels[0].min: expected a number, got the string \"20\"",
        ),
        // Only the documented broker URL schemes.
        (
            Box::new(|c| c["sinks"][0]["url"] = json!("tcp://127.0.0.1:1883")),
            "expected mqtt://host[:port], or mqtts://host[:port] for TLS",
        ),
        (
            Box::new(|c| c["connectors"][0]["devices"][0]["interval"] = json!("5 parsecs")),
            "connectors[0] \"sim\".devices[0].interval: invalid duration \"5 parsecs\"",
        ),
        (
            Box::new(|c| {
                let d = c["connectors"][0]["devices"][0].clone();
                c["connectors"][0]["devices"]
                    .as_array_mut()
                    .unwrap()
                    .push(d);
            }),
            "connectors[0] \"sim\".devices[1].name: duplicate device name \"d\"",
        ),
        (
            Box::new(|c| {
                c["connectors"][0]["devices"][0]["channels"][0]["signal"] = json!("sinus")
            }),
            "connectors[0] \"sim\".devices[0].channels[0].signal: unknown variant `sinus`",
        ),
        (
            Box::new(|c| c["gateway"]["id"] = json!("a/b")),
            "gateway.id",
        ),
        // Once a panic (exit 101) in the loader: a value nested 200 levels deep in a channel.
        (
            Box::new(|c| {
                let mut deep = json!(0);
                for _ in 0..200 {
                    deep = json!([deep]);
                }
                c["connectors"][0]["devices"][0]["channels"][0]["x"] = deep;
            }),
            "connectors[0] \"sim\".devices[0].channels[0]: nested more than 128 levels deep",
        ),
    ];
    for (mutate, want) in cases {
        let mut cfg = base_config();
        mutate(&mut cfg);
        let path = write_config(&dir, &cfg);
        for args in [vec!["check", "-c", &path], vec!["-c", &path]] {
            let (code, _out, err) = osgate_cmd(&args);
            assert_eq!(code, 2, "{args:?} with {want}: stderr {err}");
            assert!(err.contains(want), "want {want:?} in:\n{err}");
        }
    }
    // Several problems are reported at once.
    let mut cfg = base_config();
    cfg["sinks"][0]["qos"] = json!(7);
    cfg["connectors"][0]["devices"][0]["interval"] = json!("nope");
    let (code, _, err) = osgate_cmd(&["check", "-c", &write_config(&dir, &cfg)]);
    assert_eq!(code, 2);
    assert!(
        err.contains("2 problems") && err.contains(".qos") && err.contains(".interval"),
        "{err}"
    );
}

#[test]
fn check_accepts_the_example_and_env_overrides() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/osgate.json.example");
    let (code, out, err) = osgate_cmd(&["check", "-c", example]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("valid") && out.contains("connector demo (simulator"),
        "{out}"
    );

    // OSGATE_SECTION__FIELD overrides, ${VAR} interpolation; a missing variable is an error.
    let dir = temp_dir();
    let mut cfg = base_config();
    cfg["sinks"][0]["password"] = json!("${TEST_BROKER_PASSWORD}");
    let path = write_config(&dir, &cfg);
    let out = std::process::Command::new(osgate_bin())
        .args(["check", "-c", &path])
        .env("OSGATE_GATEWAY__ID", "from-env")
        .env("TEST_BROKER_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("gateway from-env"));
    let (code, _, err) = osgate_cmd(&["check", "-c", &path]);
    assert_eq!(code, 2);
    assert!(
        err.contains("sinks[0].password: environment variable TEST_BROKER_PASSWORD is not set"),
        "{err}"
    );
    // An error caused by an override names the variable; array elements cannot be set.
    for (var, value, want) in [
        (
            "OSGATE_GATEWAY__IDD",
            "x",
            "environment variable OSGATE_GATEWAY__IDD: gateway.idd: unknown field",
        ),
        (
            "OSGATE_SINKS__QOS",
            "0",
            "array elements cannot be set from the environment",
        ),
    ] {
        let out = std::process::Command::new(osgate_bin())
            .args(["check", "-c", &path])
            .env(var, value)
            .env("TEST_BROKER_PASSWORD", "pw")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(want) && err.contains(var), "{var}: {err}");
    }
    // A missing file is a config error too.
    let (code, _, err) = osgate_cmd(&["check", "-c", "/nonexistent/osgate.json"]);
    assert_eq!(code, 2, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_serves_the_example_shape() {
    // The example config's shape (embedded broker + MQTT sink to it), on a free port.
    let port = free_port();
    let cfg = example_on(port, None);
    let mut gw = Gateway::start(&cfg);
    assert!(
        wait_port(port, TEST_TIMEOUT),
        "embedded broker not listening"
    );
    let mut sub = Subscriber::connect(port, "telemetry/#").await;
    let m = sub.next(TEST_TIMEOUT).await;
    assert!(m.topic.starts_with("telemetry/demo-gw/"), "{m:?}");
    assert!(
        m.json["ts"].is_i64() && m.json.get("value").is_some(),
        "{m:?}"
    );
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(TEST_TIMEOUT).code(), Some(0));
}

/// The example configuration with everything it listens on or connects to moved to free
/// loopback ports (the embedded broker and its clients to `broker`), so that tests running it
/// at the same time do not meet on its fixed ports; with `login`, every client of the broker
/// (the sink and the MQTT connector) logs in with it.
fn example_on(broker: u16, login: Option<(&str, &str)>) -> serde_json::Value {
    let mut cfg: serde_json::Value =
        serde_json::from_str(include_str!("../osgate.json.example")).unwrap();
    let url = json!(format!("mqtt://127.0.0.1:{broker}"));
    let client = |c: &mut serde_json::Value| {
        c["url"] = url.clone();
        if let Some((user, password)) = login {
            c["username"] = json!(user);
            c["password"] = json!(password);
        }
    };
    cfg["broker"]["embedded"]["listen"] = json!(format!("127.0.0.1:{broker}"));
    client(&mut cfg["sinks"][0]);
    for c in cfg["connectors"].as_array_mut().unwrap() {
        if c.get("listen").is_some() {
            c["listen"] = json!(format!("127.0.0.1:{}", free_port()));
        }
        if c["protocol"] == "mqtt" {
            client(c);
        }
    }
    cfg
}

/// Connects to 127.0.0.1:`port` with optional credentials; true when the broker accepted.
async fn broker_accepts(port: u16, login: Option<(&str, &str)>) -> bool {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    let mut opts = MqttOptions::new(
        format!("probe-{port}-{}", login.is_some()),
        "127.0.0.1",
        port,
    );
    if let Some((u, p)) = login {
        opts.set_credentials(u, p);
    }
    let (_client, mut el) = AsyncClient::new(opts, 10);
    within("a broker answer", async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(c))) => {
                    return c.code == rumqttc::ConnectReturnCode::Success
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_broker_beyond_loopback_needs_credentials() {
    // Who may get in: 0.0.0.0 without credentials is a config error naming the field
    // (checked without binding anything).
    let dir = temp_dir();
    let port = free_port();
    let mut cfg = example_on(port, None);
    cfg["broker"]["embedded"]["listen"] = json!("0.0.0.0:1883");
    let path = write_config(&dir, &cfg);
    let (code, _, err) = osgate_cmd(&["check", "-c", &path]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("broker.embedded.listen: 0.0.0.0:1883 is not a loopback address")
            && err.contains("username/password"),
        "{err}"
    );

    // With credentials (on loopback here, as tests must): anonymous clients are refused, the
    // user is let in, and the sink and the MQTT connector reach it with the same credentials.
    // With -d and no RUST_LOG, ordinary connects and disconnects log no ERROR.
    let mut cfg = example_on(port, Some(("gw", "${TEST_BROKER_PW}")));
    cfg["broker"]["embedded"] = json!({"listen": format!("127.0.0.1:{port}"),
        "username": "gw", "password": "${TEST_BROKER_PW}"});
    let mut gw = Gateway::start_default_log(&cfg, &["-d"], &[("TEST_BROKER_PW", "s3cret-pw")]);
    assert!(wait_port(port, TEST_TIMEOUT), "{}", gw.log_text());
    assert!(!broker_accepts(port, None).await, "anonymous client let in");
    assert!(!broker_accepts(port, Some(("gw", "wrong"))).await);
    assert!(broker_accepts(port, Some(("gw", "s3cret-pw"))).await);
    let mut sub = Subscriber::connect_auth(port, "telemetry/#", "gw", "s3cret-pw").await;
    let m = sub.next(TEST_TIMEOUT).await;
    assert!(m.topic.starts_with("telemetry/demo-gw/"), "{m:?}");
    drop(sub);
    gw.signal("TERM");
    assert_eq!(
        gw.wait_exit(TEST_TIMEOUT).code(),
        Some(0),
        "{}",
        gw.log_text()
    );
    let errors: Vec<_> = gw
        .log_json()
        .into_iter()
        .filter(|l| l["level"] == "ERROR")
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn stdout_sink_writes_json_lines() {
    use std::io::{BufRead, BufReader};
    let dir = temp_dir();
    let cfg = json!({
        "gateway": {"id": "gw7"},
        "sinks": [{"name": "out", "type": "stdout"}],
        "connectors": [{"name": "sim", "protocol": "simulator", "devices": [
            {"name": "d", "interval": "20ms", "channels": [{"name": "n", "signal": "counter", "unit": "pcs"}]}]}]
    });
    let path = write_config(&dir, &cfg);
    let mut child = std::process::Command::new(osgate_bin())
        .args(["-c", &path])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Watchdog: a gateway that prints nothing must not hang the test.
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        if wait.recv_timeout(TEST_TIMEOUT).is_err() {
            unsafe_free_kill(pid, "KILL");
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut values = Vec::new();
    // Each line arrives as the simulator ticks; reading blocks at most a few ticks.
    for _ in 0..3 {
        let line = lines.next().expect("a line").expect("utf-8");
        let j: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
        assert_eq!(
            (&j["device"], &j["channel"], &j["unit"]),
            (&json!("d"), &json!("n"), &json!("pcs"))
        );
        assert_eq!(j["quality"], "good");
        values.push(j["value"].as_u64().unwrap());
    }
    let _ = done.send(());
    watchdog.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(values, vec![0, 1, 2]);
}

/// The gateway's process gives back what starting took once it runs: free heap and the
/// binary's pages mapped so far (the binary, not the test process, whose pages stay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_gives_back_what_starting_took() {
    let broker = Mosquitto::start();
    let cfg = one_counter("gw-mem", &broker);
    let gw = Gateway::start(&cfg);
    let line = gw.wait_log("memory given back", TEST_TIMEOUT).await;
    let kb = |k: &str| line[k].as_u64().unwrap_or_else(|| panic!("{k} in {line}"));
    assert!(
        kb("file_kb_after") < kb("file_kb_before"),
        "the binary's pages stay mapped: {line}"
    );
    // It goes on working: readings still arrive.
    let mut sub = Subscriber::connect(broker.port, "telemetry/#").await;
    sub.next(TEST_TIMEOUT).await;
}
