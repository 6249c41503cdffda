//! OPC-UA connector against real, independent servers: python asyncua
//! (`tests/peers/opcua_server.py`), with the variables Temperature (Double, a sine), Counter
//! (UInt32, +1 every 500 ms), Running (Boolean), Setpoint (Double, writable), Vector (Double[5])
//! and Targets (Int32[4], writable) under Objects/Plant; and a second stack, node-opcua
//! ([`node_opcua`]). A whole gateway (in-process) runs against mosquitto for the end-to-end
//! path; the other tests run the connector in-process and take its batches and statuses from a
//! sink queue.

use std::collections::HashMap;
use std::time::Duration;

use osgate::pipeline::Envelope;
use osgate::reading::{Quality, Reading, Value};
use osgate::status::Health;
use serde_json::{json, Value as Json};
use tokio::time::Instant;

use crate::common::connector::{unique, ConnectorRun};
use crate::common::opcua::{asyncua_read, OpcuaPeer, NS_URI};
use crate::common::{
    osgate_cmd, temp_dir, unsafe_free_kill, InProc, Mosquitto, Subscriber, TEST_TIMEOUT,
};

mod node_opcua;

/// The four variables as channels; `mode` is `subscribe` or `poll`.
fn plant_device(mode: &str) -> Json {
    json!({"name": "plc", "mode": mode, "publishing_interval": "200ms", "interval": "300ms",
        "channels": [
            {"name": "temperature", "node": format!("nsu={NS_URI};s=Temperature"), "unit": "°C"},
            {"name": "counter", "node": format!("nsu={NS_URI};s=Counter")},
            {"name": "running", "node": "ns=2;s=Running"},
            {"name": "setpoint", "node": "ns=2;s=Setpoint", "writable": true},
            {"name": "counter_w", "node": format!("nsu={NS_URI};s=Counter"), "writable": true,
             "type": "integer"}]})
}

fn connector(peer: &OpcuaPeer, pki: &std::path::Path, extra: Json, device: Json) -> Json {
    connector_at(&peer.url, pki, extra, device)
}

/// The connector on the server at `url`.
fn connector_at(url: &str, pki: &std::path::Path, extra: Json, device: Json) -> Json {
    let mut c = json!({"name": unique("opcua"), "protocol": "opcua", "url": url,
        "pki_dir": pki, "timeout": "5s", "devices": [device]});
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    c
}

/// A peer (security None) and the connector on it with `extra` settings and the plant device
/// in `mode`; the peer and the PKI dir live as long as the returned values.
async fn plant(mode: &str, extra: Json) -> (OpcuaPeer, tempfile::TempDir, ConnectorRun) {
    let peer = OpcuaPeer::start().await;
    let pki = temp_dir();
    let run = ConnectorRun::start(connector(&peer, pki.path(), extra, plant_device(mode)));
    (peer, pki, run)
}

/// Collects good readings of `device` by channel until `done` holds (bounded).
async fn collect(
    run: &mut ConnectorRun,
    device: &str,
    done: impl Fn(&HashMap<String, Vec<Reading>>) -> bool,
) -> HashMap<String, Vec<Reading>> {
    let mut seen: HashMap<String, Vec<Reading>> = HashMap::new();
    let until = Instant::now() + TEST_TIMEOUT;
    while !done(&seen) {
        assert!(
            Instant::now() < until,
            "readings so far: {:?}; status {:?}",
            seen.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>(),
            run.device_status(device)
        );
        for r in run.batch(device).await {
            if r.quality.is_good() {
                seen.entry(r.channel.to_string()).or_default().push(r);
            }
        }
    }
    seen
}

/// What [`observe`] saw of a device: good readings and the last bad reason, by channel.
#[derive(Debug, Default)]
struct Seen {
    good: HashMap<String, Vec<Reading>>,
    bad: HashMap<String, String>,
}

impl Seen {
    /// True when the good values of `channel` went up (polls can be quicker than the
    /// peer's steps, so two values may be the same).
    fn rose(&self, channel: &str) -> bool {
        let v = self.numbers(channel);
        v.len() >= 2 && v[v.len() - 1] > v[0]
    }

    /// The good values of `channel` as numbers.
    fn numbers(&self, channel: &str) -> Vec<f64> {
        self.good.get(channel).map_or_else(Vec::new, |v| {
            v.iter()
                .map(|r| r.value.as_f64().expect("a number"))
                .collect()
        })
    }
}

/// Collects the good and bad readings of `device` until `done` holds (bounded).
async fn observe(run: &mut ConnectorRun, device: &str, done: impl Fn(&Seen) -> bool) -> Seen {
    let until = Instant::now() + TEST_TIMEOUT;
    let mut seen = Seen::default();
    while !done(&seen) {
        assert!(
            Instant::now() < until,
            "bad so far {:?}, good {:?}; status {:?}",
            seen.bad,
            seen.good
                .iter()
                .map(|(k, v)| (k, v.len()))
                .collect::<Vec<_>>(),
            run.device_status(device)
        );
        for r in run.batch(device).await {
            match r.quality.reason() {
                None => seen.good.entry(r.channel.to_string()).or_default().push(r),
                Some(why) => {
                    seen.bad.insert(r.channel.to_string(), why.to_string());
                }
            }
        }
    }
    seen
}

fn now_ms() -> i64 {
    osgate::reading::Timestamp::now().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribed_changes_reach_mosquitto_with_values_quality_and_source_time() {
    let peer = OpcuaPeer::start().await;
    let broker = Mosquitto::start();
    let pki = temp_dir();
    let mut sub = Subscriber::connect(broker.port, "telemetry/opc/#").await;
    let cfg = json!({
        "gateway": {"id": "opc"},
        "sinks": [{"name": "local", "type": "mqtt", "url": broker.url(), "qos": 1}],
        "connectors": [connector(&peer, pki.path(), json!({}), plant_device("subscribe"))]
    });
    let gw = InProc::start(&cfg).await;
    let start = now_ms();
    let ok = sub
        .collect_until(Duration::from_secs(30), |seen| {
            let counters = seen
                .iter()
                .filter(|m| m.topic == "telemetry/opc/plc/counter")
                .count();
            counters >= 4
                && ["temperature", "running", "setpoint"].iter().all(|c| {
                    seen.iter()
                        .any(|m| m.topic == format!("telemetry/opc/plc/{c}"))
                })
        })
        .await;
    assert!(
        ok,
        "not all variables arrived: {:?}\nlog:\n{}",
        sub.seen,
        gw.log_text()
    );
    let of = |ch: &str| -> Vec<&Json> {
        sub.seen
            .iter()
            .filter(|m| m.topic == format!("telemetry/opc/plc/{ch}"))
            .map(|m| &m.json)
            .collect()
    };
    for ch in ["temperature", "counter", "running", "setpoint"] {
        for j in of(ch) {
            assert_eq!(j["quality"], "good", "{ch}: {j}");
            let ts = j["ts"].as_i64().expect("ts");
            // The server's source timestamp: recent, and (for the changing ones) not older
            // than the peer; the first value of a variable may carry the time it was set.
            assert!((ts - now_ms()).abs() < 120_000, "{ch}: ts {ts} not recent");
        }
    }
    let counters: Vec<u64> = of("counter")
        .iter()
        .map(|j| j["value"].as_u64().expect("counter is an integer"))
        .collect();
    assert!(
        counters.windows(2).all(|w| w[1] > w[0]),
        "counter not increasing: {counters:?}"
    );
    let counter_ts: Vec<i64> = of("counter")
        .iter()
        .map(|j| j["ts"].as_i64().unwrap())
        .collect();
    assert!(
        counter_ts.windows(2).all(|w| w[1] > w[0]) && *counter_ts.last().unwrap() >= start - 1000,
        "counter timestamps are the server's, per change: {counter_ts:?}"
    );
    for j in of("temperature") {
        let t = j["value"].as_f64().expect("temperature is a number");
        assert!((14.9..=25.1).contains(&t), "temperature {t}");
        assert_eq!(j["unit"], "°C");
    }
    assert!(of("running").iter().all(|j| j["value"].is_boolean()));
    assert_eq!(of("setpoint")[0]["value"], json!(21.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_take_the_node_type_and_read_back_and_refusals_are_named() {
    let (peer, _pki, mut run) = plant("subscribe", json!({})).await;
    collect(&mut run, "plc", |s| s.contains_key("setpoint")).await;
    let took = run
        .write("plc", "setpoint", json!(42.5))
        .await
        .expect("write");
    assert_eq!(took, json!(42.5));
    let seen = collect(&mut run, "plc", |s| {
        s.get("setpoint")
            .is_some_and(|v| v.iter().any(|r| r.value == Value::F64(42.5)))
    })
    .await;
    assert!(!seen.is_empty());
    assert_eq!(asyncua_read(&peer.url, "Setpoint").await, "42.5");
    // Counter is read-only on the server: the status code of the Write comes back by name
    // (asyncua answers BadUserAccessDenied).
    let e = run
        .write("plc", "counter_w", json!(5))
        .await
        .expect_err("the server refuses");
    assert!(e.to_string().contains("the server answered Bad"), "{e}");
    // A value that does not fit the node's type (UInt32) is refused before it is sent.
    let e = run
        .write("plc", "counter_w", json!(-1))
        .await
        .expect_err("negative");
    assert!(e.to_string().contains("UInt32"), "{e}");
    // Reading on demand is refused for a subscribed device: it sends by itself.
    assert!(run.read("plc").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_reads_and_writes() {
    let (peer, _pki, mut run) = plant("poll", json!({})).await;
    let seen = collect(&mut run, "plc", |s| {
        s.get("counter").is_some_and(|v| v.len() >= 3)
    })
    .await;
    for ch in ["temperature", "running", "setpoint"] {
        assert!(seen.contains_key(ch), "{ch} missing: {seen:?}");
    }
    assert!(matches!(seen["running"][0].value, Value::Bool(_)));
    assert!(matches!(seen["counter"][0].value, Value::U64(_)));
    run.write("plc", "setpoint", json!(7)).await.expect("write");
    let now = run.read("plc").await.expect("read now");
    let sp = now
        .iter()
        .find(|r| &*r.channel == "setpoint")
        .expect("setpoint");
    assert_eq!(sp.value, Value::F64(7.0));
    assert_eq!(asyncua_read(&peer.url, "Setpoint").await, "7.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_nodes_are_bad_with_the_status_name_others_keep_flowing() {
    let peer = OpcuaPeer::start().await;
    let pki = temp_dir();
    let dev = json!({"name": "plc", "publishing_interval": "200ms", "channels": [
        {"name": "counter", "node": "ns=2;s=Counter"},
        {"name": "ghost", "node": "ns=2;s=NoSuchVariable"},
        {"name": "elsewhere", "node": "nsu=urn:not-here;s=Counter"}]});
    let mut run = ConnectorRun::start(connector(&peer, pki.path(), json!({}), dev));
    let until = Instant::now() + TEST_TIMEOUT;
    let mut bad = HashMap::new();
    let mut good = 0;
    while bad.len() < 2 || good < 2 {
        assert!(Instant::now() < until, "bad {bad:?} good {good}");
        for r in run.batch("plc").await {
            match &r.quality {
                Quality::Good => good += 1,
                q => {
                    bad.insert(r.channel.to_string(), format!("{q:?}"));
                }
            }
        }
    }
    assert!(bad["ghost"].contains("BadNodeIdUnknown"), "{bad:?}");
    assert!(bad["elsewhere"].contains("urn:not-here"), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_and_encrypt_with_a_trusted_server_certificate() {
    let peer = OpcuaPeer::start_with(true).await;
    let pki = temp_dir();
    let trusted = temp_dir();
    // Any file name: the connector files it under the name the store looks for.
    std::fs::copy(peer.cert(), trusted.path().join("plant-server.der")).expect("server cert");
    let sec = json!({"security": {"policy": "Basic256Sha256", "mode": "SignAndEncrypt",
        "trusted_dir": trusted.path()}});
    let mut run = ConnectorRun::start(connector(&peer, pki.path(), sec, plant_device("subscribe")));
    collect(&mut run, "plc", |s| {
        s.get("counter").is_some_and(|v| v.len() >= 2)
    })
    .await;
    run.write("plc", "setpoint", json!(3.25))
        .await
        .expect("encrypted write");
    assert_eq!(asyncua_read(&peer.url, "Setpoint").await, "3.25");
    assert!(
        pki.path().join("own/cert.der").exists(),
        "client certificate generated"
    );
}

/// A secure peer whose certificate names its host before its URI, that certificate trusted,
/// and the connector on it (SignAndEncrypt); the dirs live as long as the returned values.
async fn dns_first_peer() -> (OpcuaPeer, [tempfile::TempDir; 2], Json) {
    let peer = OpcuaPeer::start_dns_first().await;
    let pki = temp_dir();
    let trusted = temp_dir();
    std::fs::copy(peer.cert(), trusted.path().join("plant-server.der")).expect("server cert");
    let sec = json!({"security": {"policy": "Basic256Sha256", "mode": "SignAndEncrypt",
        "trusted_dir": trusted.path()}});
    let cfg = connector(&peer, pki.path(), sec, plant_device("subscribe"));
    (peer, [pki, trusted], cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_naming_the_host_before_its_uri_is_accepted() {
    // node-opcua's order: DNS and IP first, the application URI last. The library alone
    // refused it (BadCertificateHostNameInvalid); the names count in any order.
    let (_peer, _dirs, cfg) = dns_first_peer().await;
    let mut run = ConnectorRun::start(cfg);
    collect(&mut run, "plc", |s| {
        s.get("counter").is_some_and(|v| v.len() >= 2)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_the_certificate_does_not_name_is_refused_clearly() {
    let (peer, _dirs, mut cfg) = dns_first_peer().await;
    // The same server reached as "localhost", a name its certificate does not carry.
    cfg["url"] = json!(peer.url.replace("127.0.0.1", "localhost"));
    let mut run = ConnectorRun::start(cfg);
    let st = run
        .status("plc", |s| {
            s.health == Health::Offline && s.last_error.is_some()
        })
        .await;
    let e = st.last_error.unwrap();
    assert!(
        e.contains("BadCertificateHostNameInvalid")
            && e.contains("\"localhost\"")
            && e.contains("127.0.0.1"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_certificate_is_refused_clearly() {
    let peer = OpcuaPeer::start_with(true).await;
    let pki = temp_dir();
    let sec = json!({"security": {"policy": "Basic256Sha256"}});
    let mut run = ConnectorRun::start(connector(&peer, pki.path(), sec, plant_device("subscribe")));
    let st = run
        .status("plc", |s| {
            s.health == Health::Offline && s.last_error.is_some()
        })
        .await;
    let e = st.last_error.unwrap();
    assert!(
        e.contains("not trusted") && e.contains("rejected") && e.contains("trust_on_first_use"),
        "{e}"
    );
    let rejected: Vec<_> = std::fs::read_dir(pki.path().join("rejected"))
        .expect("rejected dir")
        .collect();
    assert_eq!(
        rejected.len(),
        1,
        "the refused certificate is kept for inspection"
    );
    // Nothing was read from the untrusted server.
    while let Ok(env) = tokio::time::timeout(Duration::from_millis(300), run.next()).await {
        if let Envelope::Batch(b) = env {
            assert!(b.readings.iter().all(|r| !r.quality.is_good()), "{b:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_subscribed_again_and_the_outage_is_visible() {
    let (mut peer, _pki, mut run) = plant("subscribe", json!({"backoff_max": "2s"})).await;
    collect(&mut run, "plc", |s| {
        s.get("counter").is_some_and(|v| v.len() >= 2)
    })
    .await;
    peer.kill().await;
    let st = run.status("plc", |s| !s.online).await;
    assert!(st.last_error.is_some(), "{st:?}");
    peer.restart().await;
    let back = Instant::now();
    run.status("plc", |s| s.online).await;
    // The restarted server counts from 0 again.
    let seen = collect(&mut run, "plc", |s| {
        s.get("counter")
            .is_some_and(|v| v.iter().any(|r| r.value.as_f64().unwrap_or(1e9) < 50.0))
    })
    .await;
    assert!(!seen.is_empty());
    assert!(
        back.elapsed() < Duration::from_secs(15),
        "data again only after {:?}",
        back.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_subscription_is_made_again_by_the_watchdog() {
    let peer = OpcuaPeer::start().await;
    let pki = temp_dir();
    // Keep-alive every 200 ms × 5 = 1 s; silence for 3 s (the floor) counts as lost.
    let mut dev = plant_device("subscribe");
    dev["keep_alive_count"] = json!(5);
    let mut run = ConnectorRun::start(connector(
        &peer,
        pki.path(),
        json!({"backoff_max": "1s", "timeout": "2s"}),
        dev,
    ));
    collect(&mut run, "plc", |s| {
        s.get("counter").is_some_and(|v| v.len() >= 2)
    })
    .await;
    // A frozen server keeps its TCP connection open but answers nothing.
    unsafe_free_kill(peer.pid(), "STOP");
    let st = run.status("plc", |s| !s.online).await;
    unsafe_free_kill(peer.pid(), "CONT");
    let why = st.last_error.unwrap_or_default();
    assert!(why.contains("no publish response"), "{why}");
    let seen = collect(&mut run, "plc", |s| {
        s.get("counter").is_some_and(|v| v.len() >= 4)
    })
    .await;
    assert!(!seen.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_lists_the_plant_folder() {
    let peer = OpcuaPeer::start().await;
    let pki = temp_dir();
    let pki_arg = pki.path().to_str().unwrap().to_string();
    let url = peer.url.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        osgate_cmd(&[
            "opcua",
            "browse",
            &url,
            "--pki-dir",
            &pki_arg,
            "--timeout",
            "5s",
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("ns=2 {NS_URI}")), "{out}");
    let plant = out
        .lines()
        .position(|l| l.trim_start().starts_with("Plant  ns=2;s=Plant  Object"))
        .unwrap_or_else(|| panic!("no Plant folder in:\n{out}"));
    let below: Vec<&str> = out.lines().skip(plant + 1).take(4).collect();
    for v in ["Temperature", "Counter", "Running", "Setpoint"] {
        assert!(
            below
                .iter()
                .any(|l| l.contains(&format!("{v}  ns=2;s={v}  Variable = "))),
            "{v} not listed under Plant: {below:?}"
        );
    }
    let (code, _, err) = osgate_cmd(&[
        "opcua",
        "browse",
        "http://nope",
        "--pki-dir",
        pki.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("opc.tcp://"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percent_deadband_on_a_node_without_eurange_is_bad_the_others_flow() {
    // asyncua accepts a percent deadband and then ignores it (it sends every change); the
    // connector finds that the node has no EURange to take the percentage of, as strict
    // servers do, and says so on that channel only.
    let peer = OpcuaPeer::start().await;
    let pki = temp_dir();
    let dev = json!({"name": "plc", "publishing_interval": "200ms", "channels": [
        {"name": "counter", "node": format!("nsu={NS_URI};s=Counter")},
        {"name": "temperature", "node": format!("nsu={NS_URI};s=Temperature"),
         "server_deadband": "2%"}]});
    let mut run = ConnectorRun::start(connector(&peer, pki.path(), json!({}), dev));
    let seen = observe(&mut run, "plc", |s| {
        s.bad.contains_key("temperature") && s.numbers("counter").len() >= 3
    })
    .await;
    assert_eq!(
        seen.bad["temperature"],
        "the node has no EURange, and server_deadband \"2%\" is a percentage of it; use an absolute deadband"
    );
    assert!(!seen.good.contains_key("temperature"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_elements_from_a_server_that_ignores_index_ranges() {
    // asyncua answers the whole array whatever the IndexRange: the connector takes the
    // element, and refuses to write one (it would replace the whole array).
    let peer = OpcuaPeer::start().await;
    let pki = temp_dir();
    let vector = format!("nsu={NS_URI};s=Vector");
    let targets = format!("nsu={NS_URI};s=Targets");
    let channels = json!([
        {"name": "v1", "node": vector, "index": 1},
        {"name": "v3", "node": vector, "index": 3},
        {"name": "v9", "node": vector, "index": 9},
        {"name": "t2", "node": targets, "index": 2, "writable": true, "type": "integer"}]);
    for mode in ["subscribe", "poll"] {
        let dev = json!({"name": "plc", "mode": mode, "publishing_interval": "200ms",
            "interval": "300ms", "channels": channels});
        let mut run = ConnectorRun::start(connector(&peer, pki.path(), json!({}), dev));
        let seen = observe(&mut run, "plc", |s| {
            s.bad.contains_key("v9") && s.rose("v3") && s.good.contains_key("v1")
        })
        .await;
        assert_eq!(
            seen.bad["v9"], "index 9 is not in the node's array (5 elements)",
            "{mode}"
        );
        assert!(
            seen.numbers("v1").iter().all(|&x| x == 1.5),
            "{mode}: {seen:?}"
        );
        let v3 = seen.numbers("v3");
        assert!(
            v3.windows(2).all(|w| w[1] >= w[0]),
            "{mode}: v3 follows Counter: {v3:?}"
        );
        let e = run
            .write("plc", "t2", json!(7))
            .await
            .expect_err("an element write the server would apply to the whole array");
        assert!(e.to_string().contains("ignores IndexRange"), "{mode}: {e}");
        run.stop().await;
    }
    assert_eq!(asyncua_read(&peer.url, "Targets").await, "[0, 0, 0, 0]");
}
