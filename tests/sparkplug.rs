//! The Sparkplug B sink against a real mosquitto, every message decoded by an independent
//! implementation (pysparkplug, in `tests/peers/sparkplug_host.py`, which is also the host
//! application that sends STATE, NCMD and DCMD): births with every channel, its type, unit and
//! value; DDATA of changed metrics by alias; `seq` wrapping 255 → 0; NDEATH on a clean stop
//! and, as the will, after SIGKILL with the `bdSeq` of the last NBIRTH (the binary: a clean
//! stop and a crash of the process); rebirth on command;
//! DCMD writes confirmed by the next DDATA; the primary host's STATE gating births with held
//! data sent as history; DDEATH and DBIRTH of a Modbus device that goes away and returns.

use std::process::Stdio;

use serde_json::{json, Value as Json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::common::modbus::{peers_dir, tcp_connector, ModbusSim};
use crate::common::{python, temp_dir, within, Gateway, InProc, Mosquitto, TEST_TIMEOUT};

const GROUP: &str = "plant1";

/// The pysparkplug host application: every Sparkplug message it decoded, as JSON.
struct Host {
    _child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<Json>,
    /// Every message received so far, in order: the first `taken` were looked at by
    /// [`Host::next`]; the rest came while [`Host::send`] waited for its confirmation (an
    /// answer to a command can come before it) and are looked at next.
    seen: Vec<Json>,
    taken: usize,
}

impl Host {
    async fn start(broker: &Mosquitto) -> Host {
        let mut child = Command::new(python())
            .arg(peers_dir().join("sparkplug_host.py"))
            .args(["--port", &broker.port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the pysparkplug host");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take().expect("stdin");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = r.next_line().await {
                let v: Json =
                    serde_json::from_str(&l).unwrap_or(json!({"type": "ERROR", "error": l}));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let mut h = Host {
            _child: child,
            stdin,
            lines,
            seen: Vec::new(),
            taken: 0,
        };
        h.next(|m| m["type"] == "READY").await;
        h
    }

    /// The next message that satisfies `f`; every message before it counts as taken.
    async fn next(&mut self, f: impl Fn(&Json) -> bool) -> Json {
        if let Some(i) = self.seen[self.taken..].iter().position(&f) {
            self.taken += i + 1;
            return self.seen[self.taken - 1].clone();
        }
        self.taken = self.seen.len();
        let m = self.receive(f).await;
        self.taken = self.seen.len();
        m
    }

    /// Receives until a message satisfies `f`, keeping every message in `seen`.
    async fn receive(&mut self, f: impl Fn(&Json) -> bool) -> Json {
        let found = tokio::time::timeout(TEST_TIMEOUT, async {
            loop {
                let m = self.lines.recv().await.expect("host still running");
                assert_ne!(m["type"], "ERROR", "pysparkplug could not decode: {m}");
                self.seen.push(m.clone());
                if f(&m) {
                    return m;
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            let last: Vec<String> = self
                .seen
                .iter()
                .rev()
                .take(400)
                .rev()
                .map(|m| format!("{} {} seq={}", m["type"], m["device"], m["seq"]))
                .collect();
            panic!("no such Sparkplug message within {TEST_TIMEOUT:?}; the last ones: {last:?}")
        })
    }

    /// The messages taken so far, in order.
    fn taken(&self) -> &[Json] {
        &self.seen[..self.taken]
    }

    /// Every message received so far, taken or not, including what is waiting now.
    fn received(&mut self) -> &[Json] {
        while let Ok(m) = self.lines.try_recv() {
            self.seen.push(m);
        }
        &self.seen
    }

    /// The next message of `kind` (and of `device`, when given).
    async fn next_of(&mut self, kind: &str, device: Option<&str>) -> Json {
        self.next(|m| m["type"] == kind && device.is_none_or(|d| m["device"] == d))
            .await
    }

    /// Sends a command and waits until the host published it and saw it come back from the
    /// broker: what came before that echo is passed over; what came after it (an answer can
    /// come before the host confirms its publish) is looked at by [`Host::next`].
    async fn send(&mut self, cmd: Json) {
        let op = cmd["op"].clone();
        let echo = match op.as_str() {
            Some("state") => "STATE",
            Some("rebirth") => "NCMD",
            _ => "DCMD",
        };
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .expect("write to the host");
        self.receive(|m| m["type"] == "SENT" && m["op"] == op).await;
        let is_echo = |m: &Json| m["type"] == echo;
        let at = match self.seen[self.taken..].iter().position(is_echo) {
            Some(i) => self.taken + i,
            None => {
                self.receive(is_echo).await;
                self.seen.len() - 1
            }
        };
        self.taken = at + 1;
    }
}

/// A metric of a decoded message by name.
fn metric<'a>(msg: &'a Json, name: &str) -> &'a Json {
    msg["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no metric {name} in {msg}"))
}

fn names(msg: &Json) -> Vec<String> {
    msg["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .map(|m| m["name"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A gateway `gw` with a simulator connector of `devices` and a Sparkplug sink with `extra`.
fn config(gw: &str, url: &str, state: &std::path::Path, devices: Json, extra: Json) -> Json {
    let mut sink = json!({"name": "scada", "type": "sparkplug", "url": url, "group_id": GROUP,
        "state_dir": state, "backoff_max": "200ms"});
    for (k, v) in extra.as_object().expect("object") {
        sink[k] = v.clone();
    }
    json!({
        "gateway": {"id": gw, "shutdown_timeout": "3s"},
        "telemetry": {"enabled": false},
        "sinks": [sink],
        "connectors": [{"name": "sim", "protocol": "simulator", "devices": devices}]
    })
}

fn mixer(interval: &str) -> Json {
    json!({"name": "mixer", "interval": interval, "channels": [
        {"name": "temp", "signal": "sine", "min": 10, "max": 30, "period": "2s", "unit": "°C"},
        {"name": "count", "signal": "counter"},
        {"name": "label", "signal": "constant", "value": "batch-7"},
        {"name": "running", "signal": "constant", "value": true},
        {"name": "setpoint", "signal": "constant", "value": 20.5, "min": 0, "max": 100,
         "writable": true, "unit": "bar"}]})
}

#[tokio::test]
async fn births_carry_every_channel_and_data_only_changes_by_alias() {
    let broker = Mosquitto::start();
    let state = temp_dir();
    let mut host = Host::start(&broker).await;
    let _gw = InProc::start(&config(
        "sp1",
        &broker.url(),
        state.path(),
        json!([mixer("10ms")]),
        json!({}),
    ))
    .await;
    let nb = host.next_of("NBIRTH", None).await;
    assert_eq!(
        (nb["edge"].as_str(), nb["group"].as_str()),
        (Some("sp1"), Some(GROUP))
    );
    assert_eq!(nb["seq"], 0);
    assert_eq!(metric(&nb, "bdSeq")["datatype"], "INT64");
    assert_eq!(metric(&nb, "Node Control/Rebirth")["datatype"], "BOOLEAN");
    let db = host.next_of("DBIRTH", Some("mixer")).await;
    assert_eq!(db["seq"], 1);
    assert_eq!(
        names(&db),
        ["temp", "count", "label", "running", "setpoint"]
    );
    let temp = metric(&db, "temp");
    assert_eq!(temp["datatype"], "DOUBLE");
    assert_eq!(temp["properties"]["engUnit"], "°C");
    let t = temp["value"].as_f64().expect("a number");
    assert!((10.0..=30.0).contains(&t), "{t}");
    assert_eq!(metric(&db, "count")["datatype"], "UINT64");
    assert_eq!(metric(&db, "label")["datatype"], "STRING");
    assert_eq!(metric(&db, "label")["value"], "batch-7");
    assert_eq!(metric(&db, "running")["datatype"], "BOOLEAN");
    assert_eq!(metric(&db, "running")["value"], true);
    assert_eq!(metric(&db, "setpoint")["properties"]["engUnit"], "bar");
    let aliases: Vec<u64> = db["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["alias"].as_u64().expect("an alias"))
        .collect();
    // DDATA: by alias only, only what changed (the constants never do), seq +1 each time,
    // through 255 → 0.
    let mut last_seq = 1u64;
    let mut wrapped = false;
    let mut ddata = 0;
    let mut live = 0;
    while !wrapped || ddata < 300 {
        let m = host.next(|m| m["edge"] == "sp1").await;
        let seq = m["seq"].as_u64().expect("seq");
        assert_eq!(seq, (last_seq + 1) % 256, "{m}");
        wrapped |= seq == 0;
        last_seq = seq;
        assert_eq!(m["type"], "DDATA", "{m}");
        ddata += 1;
        assert!(names(&m).contains(&"count".to_string()), "{m}");
        let metrics = m["metrics"].as_array().unwrap();
        for x in metrics {
            assert_eq!(x["named"], false, "a name in DDATA: {m}");
            assert!(aliases.contains(&x["alias"].as_u64().unwrap()));
        }
        // Polls made before the first connection come after the births as history, whole;
        // live data carry only what changed.
        if metrics[0]["is_historical"] == true {
            assert!(metrics.iter().all(|x| x["is_historical"] == true), "{m}");
            continue;
        }
        live += 1;
        for x in metrics {
            assert_eq!(x["is_historical"], false, "{m}");
            for constant in ["label", "running", "setpoint"] {
                assert_ne!(x["name"], constant, "unchanged metric in DDATA: {m}");
            }
        }
    }
    assert!(live > 250, "{live} live DDATA");
}

#[tokio::test]
async fn ndeath_on_stop_and_as_will_after_sigkill_with_the_last_bdseq() {
    let broker = Mosquitto::start();
    let state = temp_dir();
    let mut host = Host::start(&broker).await;
    let cfg = config(
        "sp2",
        &broker.url(),
        state.path(),
        json!([mixer("100ms")]),
        json!({}),
    );
    let mut gw = Gateway::start(&cfg);
    let nb = host.next_of("NBIRTH", None).await;
    let first = metric(&nb, "bdSeq")["value"].as_u64().unwrap();
    gw.signal("TERM");
    assert!(gw.wait_exit(TEST_TIMEOUT).success());
    let nd = host.next_of("NDEATH", None).await;
    assert_eq!(metric(&nd, "bdSeq")["value"], first);
    // The next run goes on from the stored bdSeq; its will carries it.
    let gw = Gateway::start(&cfg);
    let nb = host.next_of("NBIRTH", None).await;
    let second = metric(&nb, "bdSeq")["value"].as_u64().unwrap();
    assert_eq!(second, (first + 1) % 256);
    host.next_of("DBIRTH", Some("mixer")).await;
    gw.signal("KILL");
    let nd = host.next_of("NDEATH", None).await;
    assert_eq!(metric(&nd, "bdSeq")["value"], second, "{nd}");
}

#[tokio::test]
async fn rebirth_command_and_node_metrics() {
    let broker = Mosquitto::start();
    let state = temp_dir();
    let mut host = Host::start(&broker).await;
    let mut cfg = config(
        "sp3",
        &broker.url(),
        state.path(),
        json!([mixer("200ms"), {"name": "tank", "interval": "200ms", "channels": [
            {"name": "level", "signal": "random_walk", "unit": "%"}]}]),
        json!({}),
    );
    cfg["telemetry"] = json!({"enabled": true, "interval": "300ms"});
    let _gw = InProc::start(&cfg).await;
    // The gateway's own figures are node metrics: the first of them births the node again.
    let nb = host
        .next(|m| m["type"] == "NBIRTH" && names(m).contains(&"uptime_seconds".to_string()))
        .await;
    assert_eq!(metric(&nb, "uptime_seconds")["datatype"], "UINT64");
    assert_eq!(metric(&nb, "uptime_seconds")["properties"]["engUnit"], "s");
    host.next_of("DBIRTH", Some("mixer")).await;
    host.next_of("DBIRTH", Some("tank")).await;
    let nd = host
        .next(|m| m["type"] == "NDATA" && names(m).contains(&"uptime_seconds".to_string()))
        .await;
    assert!(
        metric(&nd, "uptime_seconds")["value"].as_u64().unwrap() >= 1,
        "{nd}"
    );
    host.send(json!({"op": "rebirth", "group": GROUP, "edge": "sp3"}))
        .await;
    let nb = host.next_of("NBIRTH", None).await;
    assert_eq!(nb["seq"], 0);
    let mut born = Vec::new();
    while born.len() < 2 {
        let m = host.next(|m| m["type"] == "DBIRTH").await;
        born.push(m["device"].as_str().unwrap().to_string());
    }
    born.sort();
    assert_eq!(born, ["mixer", "tank"]);
}

#[tokio::test]
async fn dcmd_writes_through_the_device_write_path_and_is_confirmed() {
    let broker = Mosquitto::start();
    let state = temp_dir();
    let mut host = Host::start(&broker).await;
    let gw = InProc::start(&config(
        "sp4",
        &broker.url(),
        state.path(),
        json!([mixer("100ms")]),
        json!({}),
    ))
    .await;
    host.next_of("DBIRTH", Some("mixer")).await;
    let dcmd = |name: &str, datatype: &str, value: Json| {
        json!({"op": "dcmd", "group": GROUP, "edge": "sp4", "device": "mixer", "name": name,
               "datatype": datatype, "value": value})
    };
    // Out of range and not writable: refused by the kit, audited, nothing changes.
    host.send(dcmd("setpoint", "DOUBLE", json!(150.0))).await;
    host.send(dcmd("label", "STRING", json!("x"))).await;
    let refused = refusals(&gw, 2).await;
    let why: Vec<&str> = refused.iter().filter_map(|l| l["error"].as_str()).collect();
    assert!(why.iter().any(|e| e.contains("out of range")), "{why:?}");
    assert!(why.iter().any(|e| e.contains("is not writable")), "{why:?}");
    assert!(refused.iter().all(|l| l["via"] == "sparkplug"));
    let with_setpoint = |m: &Json| {
        m["type"] == "DDATA"
            && m["metrics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["name"] == "setpoint")
    };
    host.send(dcmd("setpoint", "DOUBLE", json!(42.5))).await;
    let m = host.next(with_setpoint).await;
    assert_eq!(metric(&m, "setpoint")["value"], 42.5);
    let written = gw.wait_log("channel written", TEST_TIMEOUT).await;
    assert_eq!(written["via"], "sparkplug", "{written}");
    // The same value again: unchanged, yet confirmed by the next DDATA.
    host.send(dcmd("setpoint", "DOUBLE", json!(42.5))).await;
    let m = host.next(with_setpoint).await;
    assert_eq!(metric(&m, "setpoint")["value"], 42.5);
    // The refused values never showed up.
    for x in host.received().iter().filter(|m| m["type"] == "DDATA") {
        for v in x["metrics"].as_array().unwrap() {
            assert_ne!(v["value"], 150.0);
        }
    }
}

/// The first `n` "write refused" log lines, once there are that many.
async fn refusals(gw: &InProc, n: usize) -> Vec<Json> {
    within("write refusals in the log", async {
        loop {
            let lines: Vec<Json> = gw
                .log_json()
                .into_iter()
                .filter(|l| l["message"] == "write refused")
                .collect();
            if lines.len() >= n {
                return lines;
            }
            // The log is a buffer: look again shortly (as `InProc::wait_log` does).
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    })
    .await
}

#[tokio::test]
async fn primary_host_gates_births_and_held_data_arrives_historical() {
    let broker = Mosquitto::start();
    let state = temp_dir();
    let mut host = Host::start(&broker).await;
    host.send(json!({"op": "state", "host": "ignition-1", "online": false}))
        .await;
    let gw = InProc::start(&config(
        "sp5",
        &broker.url(),
        state.path(),
        json!([mixer("50ms")]),
        json!({"primary_host_id": "ignition-1"}),
    ))
    .await;
    gw.wait_log("waiting for the primary host", TEST_TIMEOUT)
        .await;
    gw.wait_log("holding data", TEST_TIMEOUT).await;
    let early = host.received();
    assert!(
        early.iter().all(|m| m["edge"] != "sp5"),
        "born while the host is offline: {early:?}"
    );
    host.send(json!({"op": "state", "host": "ignition-1", "online": true}))
        .await;
    let nb = host.next_of("NBIRTH", None).await;
    let before: Vec<&Json> = host.taken()[..host.taken().len() - 1]
        .iter()
        .filter(|m| m["edge"] == "sp5")
        .collect();
    assert!(before.is_empty(), "{before:?}");
    host.next_of("DBIRTH", Some("mixer")).await;
    let hist = host.next_of("DDATA", Some("mixer")).await;
    let counts: Vec<&Json> = hist["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"] == "count")
        .collect();
    assert!(!counts.is_empty(), "{hist}");
    assert!(
        hist["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["is_historical"] == true),
        "{hist}"
    );
    // The host goes away: NDEATH with the bdSeq of the birth, then a new birth (the next
    // bdSeq) only when it is back.
    host.send(json!({"op": "state", "host": "ignition-1", "online": false}))
        .await;
    let nd = host.next_of("NDEATH", None).await;
    assert_eq!(metric(&nd, "bdSeq")["value"], metric(&nb, "bdSeq")["value"]);
    host.send(json!({"op": "state", "host": "ignition-1", "online": true}))
        .await;
    let nb2 = host.next_of("NBIRTH", None).await;
    assert_ne!(
        metric(&nb2, "bdSeq")["value"],
        metric(&nb, "bdSeq")["value"]
    );
    host.next_of("DBIRTH", Some("mixer")).await;
}

#[tokio::test]
async fn an_offline_device_dies_and_is_born_again_when_it_returns() {
    let broker = Mosquitto::start();
    let state = temp_dir();
    let mut host = Host::start(&broker).await;
    let mut sim = ModbusSim::start(1, 4).await;
    let mut cfg = config(
        "sp6",
        &broker.url(),
        state.path(),
        json!([mixer("200ms")]),
        json!({}),
    );
    cfg["connectors"]
        .as_array_mut()
        .unwrap()
        .push(tcp_connector(
            &sim.addr,
            json!({}),
            json!([{"name": "plc", "interval": "100ms", "channels": [
            {"name": "r0", "table": "holding", "address": 0, "unit": "rpm"}]}]),
        ));
    let _gw = InProc::start(&cfg).await;
    let db = host.next_of("DBIRTH", Some("plc")).await;
    assert_eq!(metric(&db, "r0")["properties"]["engUnit"], "rpm");
    sim.peer.kill().await;
    host.next_of("DDEATH", Some("plc")).await;
    // Nothing more of it while it is away; the other device goes on.
    host.next_of("DDATA", Some("mixer")).await;
    let _sim = ModbusSim::start_on(&sim.addr, 1, 4).await;
    let back = host.next_of("DBIRTH", Some("plc")).await;
    assert_eq!(names(&back), ["r0"]);
    let dead_at = host
        .taken()
        .iter()
        .position(|m| m["type"] == "DDEATH")
        .unwrap();
    let reborn_at = host.taken().len() - 1;
    assert!(
        host.taken()[dead_at + 1..reborn_at]
            .iter()
            .all(|m| m["device"] != "plc"),
        "data of a dead device"
    );
}

#[tokio::test]
async fn disable_and_reload_make_ddeath_and_dbirth_and_counters_show() {
    const KEY: &str = "test-key-0123456789";
    let broker = Mosquitto::start();
    let state = temp_dir();
    let mut host = Host::start(&broker).await;
    let mut cfg = config(
        "sp7",
        &broker.url(),
        state.path(),
        json!([mixer("100ms")]),
        json!({}),
    );
    cfg["rpc"] = json!({"listen": "127.0.0.1:0", "api_keys": [KEY]});
    let gw = InProc::start(&cfg).await;
    let rpc = gw.rpc(KEY).await;
    host.next_of("DBIRTH", Some("mixer")).await;
    host.next_of("DDATA", Some("mixer")).await;
    // Counters like every sink's (PUBACKs are counted when they arrive: ask until then).
    let st = within("acked readings in gateway.status", async {
        loop {
            let st = rpc.result("gateway.status", json!([])).await;
            if st["sinks"][0]["counters"]["acked"].as_u64() > Some(0) {
                return st;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let sink = &st["sinks"][0];
    assert_eq!(
        (sink["name"].as_str(), sink["type"].as_str()),
        (Some("scada"), Some("sparkplug"))
    );
    assert_eq!(sink["connected"], true, "{sink}");
    assert!(sink["counters"]["acked"].as_u64() > Some(0), "{sink}");
    // Disabled: DDEATH; enabled again: DBIRTH.
    rpc.result("device.disable", json!({"device": "mixer"}))
        .await;
    host.next_of("DDEATH", Some("mixer")).await;
    rpc.result("device.enable", json!({"device": "mixer"}))
        .await;
    host.next_of("DBIRTH", Some("mixer")).await;
    // A reload that adds a channel: the device is born again with it.
    let mut more = mixer("100ms");
    more["channels"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "flow", "signal": "constant", "value": 3.5, "unit": "m³/h"}));
    cfg["connectors"][0]["devices"] = json!([more]);
    std::fs::write(&gw.config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    gw.reload().await;
    let db = host
        .next(|m| m["type"] == "DBIRTH" && names(m).contains(&"flow".to_string()))
        .await;
    assert_eq!(metric(&db, "flow")["properties"]["engUnit"], "m³/h");
    assert_eq!(names(&db).len(), 6);
}
