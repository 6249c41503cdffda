//! Modbus connector against real peers: pymodbus (an independent implementation, started by
//! the test), a socat pty pair for RTU on a serial line, a misbehaving TCP peer, and an
//! in-process tokio-modbus server. The connector runs in-process and its batches and status
//! changes are taken from a sink queue, exactly as a sink would see them.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use osgate::control::DeviceError;
use osgate::pipeline::Envelope;
use osgate::reading::{Quality, Value};
use serde_json::{json, Value as Json};
use tokio::process::Command;
use tokio::time::Instant;

use crate::common::connector::{by_name, unique, ConnectorRun};
use crate::common::modbus::{peers_dir, pymodbus, pymodbus_read, spawn_ready, tcp_connector, Peer};
use crate::common::{pty_pair, within, TEST_TIMEOUT as WAIT};

const ORDERS: [&str; 4] = ["ABCD", "CDAB", "BADC", "DCBA"];

/// Every type × byte order, with values encoded by pymodbus's own converter.
fn typed_values() -> Vec<(String, Json, Json)> {
    // (channel name, channel config, expected value)
    let mut out = Vec::new();
    let mut addr = 0u16;
    let samples: [(&str, Json); 8] = [
        ("u16", json!(0xBEEF)),
        ("i16", json!(-12345)),
        ("u32", json!(0xDEADBEEFu32)),
        ("i32", json!(-123456789)),
        ("u64", json!(0x0123456789ABCDEFu64)),
        ("i64", json!(-1234567890123456789i64)),
        ("f32", json!(-1.25)),
        ("f64", json!(6.02214076e23)),
    ];
    for order in ORDERS {
        for (ty, v) in &samples {
            let regs = match *ty {
                "u16" | "i16" => 1,
                "u32" | "i32" | "f32" => 2,
                _ => 4,
            };
            let name = format!("{ty}_{order}");
            out.push((
                name.clone(),
                json!({"name": name, "table": "holding", "address": addr, "type": ty,
                       "order": order, "value": v}),
                v.clone(),
            ));
            addr += regs + 1;
        }
        let name = format!("str_{order}");
        out.push((
            name.clone(),
            json!({"name": name, "table": "input", "address": addr, "type": "string",
                   "length": 4, "order": order, "value": "osgate1"}),
            json!("osgate1"),
        ));
        addr += 5;
        let name = format!("bit_{order}");
        out.push((
            name.clone(),
            json!({"name": name, "table": "input", "address": addr, "type": "bool", "bit": 9,
                   "order": order, "value": true}),
            json!(true),
        ));
        addr += 2;
    }
    out
}

fn value_matches(got: &Value, want: &Json) -> bool {
    match (got, want) {
        (Value::F64(g), Json::Number(n)) => {
            let w = n.as_f64().unwrap_or(f64::NAN);
            (g - w).abs() <= w.abs() * 1e-12
        }
        _ => got.to_json() == *want,
    }
}

#[tokio::test]
async fn modbus_decodes_every_type_and_order_from_pymodbus() {
    let typed = typed_values();
    let mut values: Vec<Json> = typed.iter().map(|(_, c, _)| c.clone()).collect();
    values.push(json!({"table": "coil", "address": 3, "value": true}));
    values.push(json!({"table": "discrete", "address": 5, "value": true}));
    values.push(json!({"table": "holding", "address": 400, "type": "u16", "value": 2301}));
    let spec = json!({"units": {"1": {"size": 500, "values": values}}});
    let peer = pymodbus(&spec, &["--tcp", "127.0.0.1:0"]).await;
    let addr = format!("127.0.0.1:{}", peer.ready);

    let mut channels: Vec<Json> = typed
        .iter()
        .map(|(_, c, _)| {
            let mut c = c.clone();
            c.as_object_mut().expect("object").remove("value");
            c
        })
        .collect();
    channels.push(json!({"name": "coil3", "table": "coil", "address": 3}));
    channels.push(json!({"name": "coil4", "table": "coil", "address": 4}));
    channels.push(json!({"name": "di5", "table": "discrete", "address": 5}));
    // Scale is the transform layer's job: applied exactly once.
    channels.push(
        json!({"name": "volts", "table": "holding", "address": 400, "scale": 0.1,
                         "unit": "V"}),
    );
    let mut run = ConnectorRun::start(tcp_connector(
        &addr,
        json!({}),
        json!([{"name": "meter", "unit_id": 1, "interval": "100ms", "channels": channels}]),
    ));
    let got = run.good_batch("meter").await;
    for (name, _, want) in &typed {
        let v = got
            .get(name)
            .unwrap_or_else(|| panic!("no reading for {name}"));
        assert!(
            value_matches(v, want),
            "{name}: got {v:?}, pymodbus encoded {want}"
        );
    }
    assert_eq!(got["coil3"], Value::Bool(true));
    assert_eq!(got["coil4"], Value::Bool(false));
    assert_eq!(got["di5"], Value::Bool(true));
    let Value::F64(volts) = got["volts"] else {
        panic!("volts not scaled to a float: {:?}", got["volts"])
    };
    assert!((volts - 230.1).abs() < 1e-9, "{volts}");
    assert!(run.health.counters.snapshot().readings >= typed.len() as u64);
    run.stop().await;
}

#[tokio::test]
async fn modbus_exception_marks_only_the_affected_channels() {
    // Registers 0..20 exist; 30 does not. With a wide gap the planner merges all three into one
    // read, which draws IllegalDataAddress; the connector must split it and keep the others.
    let spec = json!({"units": {"1": {"size": 20, "values": [
        {"table": "holding", "address": 0, "type": "u16", "value": 11},
        {"table": "holding", "address": 12, "type": "u16", "value": 22}]}}});
    let peer = pymodbus(&spec, &["--tcp", "127.0.0.1:0"]).await;
    let addr = format!("127.0.0.1:{}", peer.ready);
    let mut run = ConnectorRun::start(tcp_connector(
        &addr,
        json!({"max_gap": 40}),
        json!([{"name": "d", "interval": "100ms", "channels": [
            {"name": "a", "table": "holding", "address": 0},
            {"name": "b", "table": "holding", "address": 12},
            {"name": "missing", "table": "holding", "address": 30}]}]),
    ));
    for _ in 0..3 {
        let b = run.batch("d").await;
        let q: HashMap<_, _> = b.iter().map(|r| (r.channel.to_string(), r)).collect();
        assert_eq!(q["a"].value, Value::U64(11));
        assert_eq!(q["b"].value, Value::U64(22));
        assert!(q["a"].quality.is_good() && q["b"].quality.is_good());
        match &q["missing"].quality {
            Quality::Bad(reason) => assert!(reason.contains("0x02"), "{reason}"),
            other => panic!("missing channel is {other:?}"),
        }
    }
    // The device answered, so it stays online.
    let st = run.health.devices.lock().expect("lock")["d"].clone();
    assert!(st.online, "{st:?}");
    run.stop().await;
}

#[tokio::test]
async fn modbus_peer_restart_resumes_polling_and_status_shows_the_outage() {
    let spec = json!({"units": {"1": {"size": 10, "values": [
        {"table": "holding", "address": 1, "type": "u16", "value": 77}]}}});
    let peer = pymodbus(&spec, &["--tcp", "127.0.0.1:0"]).await;
    let port = peer.ready.clone();
    let addr = format!("127.0.0.1:{port}");
    let mut run = ConnectorRun::start(tcp_connector(
        &addr,
        json!({}),
        json!([{"name": "d", "interval": "100ms", "channels": [
            {"name": "v", "table": "holding", "address": 1}]}]),
    ));
    assert_eq!(run.good_batch("d").await["v"], Value::U64(77));
    run.status("d", |s| s.online).await;
    drop(peer);
    let down = run.status("d", |s| !s.online).await;
    assert!(down.last_error.is_some() && down.errors >= 1, "{down:?}");
    // Bad readings while it is away, not silence.
    let b = run.batch("d").await;
    assert!(!b[0].quality.is_good());
    let _peer = pymodbus(&spec, &["--tcp", &format!("127.0.0.1:{port}")]).await;
    let up = run.status("d", |s| s.online).await;
    assert!(up.last_error.is_none(), "{up:?}");
    assert_eq!(run.good_batch("d").await["v"], Value::U64(77));
    assert!(run.health.counters.snapshot().errors >= 1);
    run.stop().await;
}

#[tokio::test]
async fn modbus_writes_are_read_back_from_the_peer() {
    // Register 10 has bits 0 and 15 set: a bit write must leave them alone.
    let spec = json!({"units": {"1": {"size": 100, "values": [
        {"table": "holding", "address": 10, "type": "u16", "value": 0x8001}]}}});
    let peer = pymodbus(&spec, &["--tcp", "127.0.0.1:0"]).await;
    let addr = format!("127.0.0.1:{}", peer.ready);
    let cfg = tcp_connector(
        &addr,
        json!({}),
        json!([{"name": "pump", "interval": "200ms", "channels": [
            {"name": "setpoint", "table": "holding", "address": 0, "type": "u16",
             "scale": 0.1, "offset": -10, "writable": true},
            {"name": "speed", "table": "holding", "address": 2, "type": "f32", "order": "CDAB",
             "writable": true},
            {"name": "count", "table": "holding", "address": 4, "type": "i64", "order": "DCBA",
             "writable": true},
            {"name": "flag", "table": "holding", "address": 10, "type": "bool", "bit": 3,
             "writable": true},
            {"name": "run", "table": "coil", "address": 7, "writable": true},
            {"name": "label", "table": "holding", "address": 20, "type": "string", "length": 3,
             "order": "BADC", "writable": true},
            {"name": "ro", "table": "holding", "address": 30}]}]),
    );
    let mut run = ConnectorRun::start(cfg);
    run.batch("pump").await;
    let (control, name) = (run.control.clone(), run.name.clone());
    // The function the JSON-RPC `device.write` and the MQTT command path call.
    let w = |ch: &'static str, v: Json| {
        let (control, name) = (control.clone(), name.clone());
        async move { within("write", control.write(&name, "pump", ch, v)).await }
    };
    // 25.0 engineering units = (25 - -10) / 0.1 = 350 raw.
    assert_eq!(w("setpoint", json!(25.0)).await, Ok(json!(25.0)));
    assert_eq!(w("speed", json!(-3.5)).await, Ok(json!(-3.5)));
    assert_eq!(
        w("count", json!(-9_876_543_210i64)).await,
        Ok(json!(-9_876_543_210i64))
    );
    assert_eq!(w("flag", json!(true)).await, Ok(json!(true)));
    assert_eq!(w("run", json!(1)).await, Ok(json!(true)));
    assert_eq!(w("label", json!("pX-2")).await, Ok(json!("pX-2")));
    let rb = |args: &'static [&'static str]| pymodbus_read(&addr, args);
    assert_eq!(rb(&["--address", "0", "--type", "u16"]).await, json!(350));
    assert_eq!(
        rb(&["--address", "2", "--type", "f32", "--order", "CDAB"]).await,
        json!(-3.5)
    );
    assert_eq!(
        rb(&["--address", "4", "--type", "i64", "--order", "DCBA"]).await,
        json!(-9_876_543_210i64)
    );
    assert_eq!(
        rb(&["--address", "10", "--type", "bool", "--bit", "3"]).await,
        json!(true)
    );
    assert_eq!(
        rb(&["--address", "10", "--type", "u16"]).await,
        json!(0x8009)
    );
    assert_eq!(
        rb(&["--table", "coil", "--address", "7"]).await,
        json!(true)
    );
    assert_eq!(
        rb(&[
            "--address",
            "20",
            "--type",
            "string",
            "--length",
            "3",
            "--order",
            "BADC"
        ])
        .await,
        json!("pX-2")
    );
    // The connector reads back the same, in engineering units.
    let got = loop {
        let g = run.good_batch("pump").await;
        if g["run"] == Value::Bool(true) {
            break g;
        }
    };
    assert_eq!(got["setpoint"], Value::F64(25.0));
    assert_eq!(got["speed"], Value::F64(-3.5));
    assert_eq!(got["count"], Value::I64(-9_876_543_210));
    assert_eq!(got["label"], Value::Text("pX-2".into()));
    // device.read: everything now, through the value transforms.
    let now = within("read", control.read(&name, "pump"))
        .await
        .expect("read now");
    let now = by_name(&now);
    assert_eq!(now["setpoint"], Value::F64(25.0));
    assert_eq!(now["flag"], Value::Bool(true));
    // Refusals.
    assert_eq!(
        w("ro", json!(1)).await,
        Err(DeviceError::NotWritable("ro".into()))
    );
    assert!(matches!(
        w("setpoint", json!(1e9)).await,
        Err(DeviceError::OutOfRange { .. })
    ));
    assert!(matches!(
        w("label", json!("too long!")).await,
        Err(DeviceError::OutOfRange { .. })
    ));
    assert!(matches!(
        w("nope", json!(1)).await,
        Err(DeviceError::UnknownChannel { .. })
    ));
    // Disabled at run time: polling stops and requests are refused; enabled again, it resumes.
    control
        .set_device_enabled(&name, "pump", false)
        .expect("disable");
    run.status("pump", |s| !s.running && !s.enabled).await;
    assert_eq!(
        w("run", json!(false)).await,
        Err(DeviceError::Disabled("pump".into()))
    );
    control
        .set_device_enabled(&name, "pump", true)
        .expect("enable");
    run.status("pump", |s| s.running && s.enabled).await;
    run.good_batch("pump").await;
    run.stop().await;
    assert!(matches!(
        w("setpoint", json!(1)).await,
        Err(DeviceError::Offline(..))
    ));
}

#[tokio::test]
async fn modbus_rtu_over_tcp_reads() {
    let spec = json!({"units": {"5": {"size": 10, "values": [
        {"table": "input", "address": 2, "type": "i32", "order": "CDAB", "value": -70000}]}}});
    let peer = pymodbus(&spec, &["--rtu-over-tcp", "127.0.0.1:0"]).await;
    let cfg = json!({"name": unique("gw"), "protocol": "modbus",
        "transport": {"rtu_over_tcp": format!("127.0.0.1:{}", peer.ready)}, "timeout": "500ms",
        "devices": [{"name": "m", "unit_id": 5, "interval": "100ms", "channels": [
            {"name": "p", "table": "input", "address": 2, "type": "i32", "order": "CDAB"}]}]});
    let mut run = ConnectorRun::start(cfg);
    assert_eq!(run.good_batch("m").await["p"], Value::I64(-70000));
    run.stop().await;
}

#[tokio::test]
async fn modbus_rtu_dead_slave_costs_the_live_one_at_most_one_timeout_per_cycle() {
    let pty = pty_pair().await;
    let spec = json!({"units": {
        "1": {"size": 10, "values": [{"table": "holding", "address": 0, "type": "u16", "value": 4242}]},
        "2": {"size": 10}}, "silent": [2]});
    let _peer = pymodbus(
        &spec,
        &["--serial", pty.b.to_str().expect("path"), "--baud", "38400"],
    )
    .await;
    let interval = Duration::from_millis(100);
    let tmo = Duration::from_millis(250);
    let cfg = json!({"name": unique("bus"), "protocol": "modbus",
        // Parity stays "none": this kernel's ptys refuse PARENB (tcsetattr: EINVAL).
        "transport": {"rtu": {"port": pty.a, "baud": 38400, "parity": "none"}},
        "timeout": "250ms", "retries": 2, "backoff": "10ms", "backoff_max": "10ms",
        "devices": [
            {"name": "live", "unit_id": 1, "interval": "100ms", "channels": [
                {"name": "v", "table": "holding", "address": 0}]},
            {"name": "dead", "unit_id": 2, "interval": "100ms", "channels": [
                {"name": "v", "table": "holding", "address": 0}]}]});
    let mut run = ConnectorRun::start(cfg);
    assert_eq!(run.good_batch("live").await["v"], Value::U64(4242));
    run.status("dead", |s| !s.online).await;
    // Measure the live device's poll period while the dead one times out every cycle.
    let mut last = Instant::now();
    let mut worst = Duration::ZERO;
    let mut dead_polls = 0;
    let mut live_polls = 0;
    while live_polls < 12 {
        match run.next().await {
            Envelope::Batch(b) if &*b.device == "live" => {
                assert!(b.readings[0].quality.is_good(), "{:?}", b.readings[0]);
                let now = Instant::now();
                if live_polls > 0 {
                    worst = worst.max(now - last);
                }
                last = now;
                live_polls += 1;
            }
            Envelope::Batch(b) if &*b.device == "dead" => {
                assert!(!b.readings[0].quality.is_good());
                dead_polls += 1;
            }
            _ => {}
        }
    }
    assert!(
        dead_polls >= 5,
        "the dead slave was tried {dead_polls} times"
    );
    let bound = interval + tmo + Duration::from_millis(100);
    assert!(worst <= bound, "live poll period {worst:?} > {bound:?}");
    let st = run.health.devices.lock().expect("lock")["dead"].clone();
    assert!(!st.online && st.errors >= 5, "{st:?}");
    run.stop().await;
}

async fn bad_peer(mode: &str, bad: u32) -> Peer {
    let mut cmd = Command::new(crate::common::modbus::python());
    cmd.arg(peers_dir().join("modbus_bad_peer.py")).args([
        "--mode",
        mode,
        "--bad",
        &bad.to_string(),
    ]);
    spawn_ready(cmd).await
}

#[tokio::test]
async fn modbus_recovers_from_misbehaving_peers() {
    for mode in ["wrong_tid", "wrong_unit", "short", "garbled", "silent"] {
        let peer = bad_peer(mode, 3).await;
        let addr = format!("127.0.0.1:{}", peer.ready);
        let mut run = ConnectorRun::start(tcp_connector(
            &addr,
            json!({"timeout": "200ms", "retries": 0}),
            json!([{"name": "d", "interval": "50ms", "channels": [
                {"name": "r7", "table": "holding", "address": 7}]}]),
        ));
        let down = run.status("d", |s| !s.online && s.errors >= 1).await;
        assert!(down.last_error.is_some(), "{mode}: {down:?}");
        let got = run.good_batch("d").await;
        assert_eq!(got["r7"], Value::U64(7), "{mode}");
        run.status("d", |s| s.online).await;
        let c = run.health.counters.snapshot();
        assert!(c.errors >= 1, "{mode}: errors not counted: {c:?}");
        assert!(c.bad >= 1, "{mode}: bad readings not counted: {c:?}");
        run.stop().await;
    }
}

/// An in-process tokio-modbus server that refuses reads larger than `max` and records sizes.
/// An in-process tokio-modbus server of holding registers (register `a` starts as `a`) that
/// logs every request, may reject reads above `max` registers, and may lack Mask Write
/// Register (0x16), as simple devices do.
mod inproc {
    use std::future::{ready, Ready};
    use std::sync::{Arc, Mutex};

    use tokio::net::TcpListener;
    use tokio_modbus::prelude::*;
    use tokio_modbus::server::tcp::{accept_tcp_connection, Server};

    /// What the server does.
    #[derive(Debug, Clone, Copy)]
    pub struct Options {
        pub max: u16,
        pub mask_write: bool,
    }

    /// A running server.
    pub struct Peer {
        pub addr: String,
        /// Requests as (function code, register count for reads or address for writes).
        pub log: Arc<Mutex<Vec<(u8, u16)>>>,
        pub regs: Arc<Mutex<Vec<u16>>>,
    }

    struct Svc {
        opts: Options,
        log: Arc<Mutex<Vec<(u8, u16)>>>,
        regs: Arc<Mutex<Vec<u16>>>,
    }

    impl tokio_modbus::server::Service for Svc {
        type Request = Request<'static>;
        type Response = Response;
        type Exception = ExceptionCode;
        type Future = Ready<Result<Response, ExceptionCode>>;

        fn call(&self, req: Self::Request) -> Self::Future {
            let mut regs = self.regs.lock().expect("lock");
            let mut log = self.log.lock().expect("lock");
            ready(match req {
                Request::ReadHoldingRegisters(a, n) => {
                    log.push((0x03, n));
                    let range = usize::from(a)..usize::from(a) + usize::from(n);
                    match regs.get(range) {
                        Some(r) if n <= self.opts.max => {
                            Ok(Response::ReadHoldingRegisters(r.to_vec()))
                        }
                        Some(_) => Err(ExceptionCode::IllegalDataValue),
                        None => Err(ExceptionCode::IllegalDataAddress),
                    }
                }
                Request::WriteSingleRegister(a, w) => {
                    log.push((0x06, a));
                    match regs.get_mut(usize::from(a)) {
                        Some(r) => {
                            *r = w;
                            Ok(Response::WriteSingleRegister(a, w))
                        }
                        None => Err(ExceptionCode::IllegalDataAddress),
                    }
                }
                Request::MaskWriteRegister(a, and, or) if self.opts.mask_write => {
                    log.push((0x16, a));
                    match regs.get_mut(usize::from(a)) {
                        Some(r) => {
                            *r = (*r & and) | (or & !and);
                            Ok(Response::MaskWriteRegister(a, and, or))
                        }
                        None => Err(ExceptionCode::IllegalDataAddress),
                    }
                }
                Request::MaskWriteRegister(a, ..) => {
                    log.push((0x16, a));
                    Err(ExceptionCode::IllegalFunction)
                }
                _ => Err(ExceptionCode::IllegalFunction),
            })
        }
    }

    pub async fn start(opts: Options) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let log = Arc::new(Mutex::new(Vec::new()));
        let regs = Arc::new(Mutex::new((0..200).collect::<Vec<u16>>()));
        let (log2, regs2) = (log.clone(), regs.clone());
        tokio::spawn(async move {
            let server = Server::new(listener);
            let on_connected = |stream, socket_addr| {
                let (log, regs) = (log2.clone(), regs2.clone());
                async move {
                    accept_tcp_connection(stream, socket_addr, move |_| {
                        Ok(Some(Svc {
                            opts,
                            log: log.clone(),
                            regs: regs.clone(),
                        }))
                    })
                }
            };
            let _ = server.serve(&on_connected, |_err| {}).await;
        });
        Peer { addr, log, regs }
    }
}

#[tokio::test]
async fn modbus_respects_a_device_s_smaller_request_limit() {
    let peer = inproc::start(inproc::Options {
        max: 10,
        mask_write: true,
    })
    .await;
    let channels: Vec<Json> = (0..40)
        .map(|i| json!({"name": format!("r{i}"), "table": "holding", "address": i * 2}))
        .collect();
    let mut run = ConnectorRun::start(tcp_connector(
        &peer.addr,
        json!({}),
        json!([{"name": "small", "interval": "100ms", "max_registers": 10,
                "channels": channels}]),
    ));
    let got = run.good_batch("small").await;
    assert_eq!(got.len(), 40);
    for i in 0..40u64 {
        assert_eq!(got[&format!("r{i}")], Value::U64(i * 2));
    }
    let sizes: Vec<u16> = peer.log.lock().expect("lock").iter().map(|r| r.1).collect();
    assert!(sizes.iter().all(|&n| n <= 10), "{sizes:?}");
    // 40 channels every other register = 79 registers: 8 requests of ≤10 (9 registers each).
    assert_eq!(sizes.len() % 8, 0, "{sizes:?}");
    run.stop().await;
}

#[tokio::test]
async fn modbus_bit_writes_use_mask_write_and_fall_back_without_it() {
    for mask_write in [true, false] {
        let peer = inproc::start(inproc::Options {
            max: 125,
            mask_write,
        })
        .await;
        peer.regs.lock().expect("lock")[5] = 0x8001;
        let mut run = ConnectorRun::start(tcp_connector(
            &peer.addr,
            json!({}),
            json!([{"name": "valve", "interval": "1h", "channels": [
                {"name": "open", "table": "holding", "address": 5, "type": "bool", "bit": 3,
                 "writable": true},
                {"name": "swapped", "table": "holding", "address": 5, "type": "bool",
                 "bit": 1, "order": "BADC", "writable": true}]}]),
        ));
        run.good_batch("valve").await;
        peer.log.lock().expect("lock").clear();
        let (control, name) = (run.control.clone(), run.name.clone());
        for (ch, on) in [("open", true), ("swapped", true), ("open", false)] {
            let res = within("write", control.write(&name, "valve", ch, json!(on))).await;
            assert_eq!(res, Ok(json!(on)), "{ch} := {on}");
        }
        // Bit 3, then bit 1 of the swapped register (bit 9 on the wire), then bit 3 cleared:
        // bits 0 and 15 stay.
        assert_eq!(peer.regs.lock().expect("lock")[5], 0x8201);
        let fcs: Vec<u8> = peer.log.lock().expect("lock").iter().map(|r| r.0).collect();
        if mask_write {
            assert_eq!(fcs, [0x16, 0x16, 0x16], "atomic on the device");
        } else {
            // Asked once; then read and written back.
            assert_eq!(fcs, [0x16, 0x03, 0x06, 0x03, 0x06, 0x03, 0x06]);
        }
        run.stop().await;
    }
}

fn osgate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_osgate"));
    c.kill_on_drop(true).stdin(Stdio::null());
    c
}

#[tokio::test]
async fn modbus_bad_configs_exit_2_naming_the_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ch = |c: Json| {
        json!({"gateway": {"id": "gw"}, "sinks": [], "connectors": [
            {"name": "plc", "protocol": "modbus", "transport": {"tcp": "127.0.0.1:502"},
             "devices": [{"name": "m1", "channels": [
                {"name": "ok", "table": "holding", "address": 0}, c]}]}]})
    };
    let p = "connectors[0] \"plc\".devices[0].channels[1]";
    let cases = [
        (
            ch(json!({"name": "x", "table": "holding", "address": 65534, "type": "f64"})),
            format!("{p}.address"),
        ),
        (
            ch(json!({"name": "x", "table": "holding", "address": 1, "type": "bool", "bit": 16})),
            format!("{p}.bit"),
        ),
        (
            ch(
                json!({"name": "x", "table": "holding", "address": 1, "type": "string", "length": 0}),
            ),
            format!("{p}.length"),
        ),
        (
            ch(json!({"name": "x", "table": "holdings", "address": 1})),
            format!("{p}.table"),
        ),
        (
            ch(json!({"name": "x", "table": "holding", "address": 1, "type": "f23"})),
            format!("{p}.type"),
        ),
        (
            ch(json!({"name": "x", "table": "holding", "address": 1, "order": "ADCB"})),
            format!("{p}.order"),
        ),
        (
            ch(json!({"name": "ok", "table": "holding", "address": 1})),
            format!("{p}.name"),
        ),
    ];
    for (i, (cfg, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.json"));
        std::fs::write(&path, cfg.to_string()).expect("write config");
        let out = within(
            "osgate check",
            osgate().arg("check").arg("-c").arg(&path).output(),
        )
        .await
        .expect("run osgate");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{want}: {err}");
        assert!(err.contains(want.as_str()), "expected {want} in: {err}");
    }
}

#[tokio::test]
async fn modbus_command_reads_and_writes_like_a_channel() {
    let spec = json!({"units": {"3": {"size": 20, "values": [
        {"table": "holding", "address": 4, "type": "f32", "order": "DCBA", "value": 12.5},
        {"table": "holding", "address": 6, "type": "u16", "value": 0x0101},
        {"table": "holding", "address": 12, "type": "f32", "value": 1.653054e-39}]}}});
    let peer = pymodbus(&spec, &["--tcp", "127.0.0.1:0"]).await;
    let addr = format!("127.0.0.1:{}", peer.ready);
    let run = |args: Vec<String>| async move {
        within("osgate modbus", osgate().arg("modbus").args(args).output())
            .await
            .expect("run osgate")
    };
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let out = run(s(&[
        "read", "--tcp", &addr, "-u", "3", "-a", "4", "--type", "f32", "--order", "DCBA",
        "--scale", "2",
    ]))
    .await;
    ok(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "holding[4] = 25"
    );
    let out = run(s(&[
        "write", "--tcp", &addr, "-u", "3", "-a", "10", "--type", "i32", "--order", "CDAB",
        "--value", "-5",
    ]))
    .await;
    ok(&out);
    assert_eq!(
        pymodbus_read(
            &addr,
            &[
                "--unit",
                "3",
                "--address",
                "10",
                "--type",
                "i32",
                "--order",
                "CDAB"
            ]
        )
        .await,
        json!(-5)
    );
    // One bit of a register: the others stay.
    let out = run(s(&[
        "write", "--tcp", &addr, "-u", "3", "-a", "6", "--type", "bool", "--bit", "2", "--value",
        "true",
    ]))
    .await;
    ok(&out);
    assert_eq!(
        pymodbus_read(&addr, &["--unit", "3", "--address", "6", "--type", "u16"]).await,
        json!(0x0105)
    );
    let out = run(s(&[
        "read", "--tcp", &addr, "-u", "3", "-a", "1", "--type", "bool", "--bit", "16",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(2));
    let out = run(s(&["read", "--tcp", &addr, "-u", "3", "-a", "30"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("0x02"));
    // Floats print in their shortest round-trip form, not as forty digits.
    let out = run(s(&[
        "read", "--tcp", &addr, "-u", "3", "-a", "12", "--type", "f32", "--scale", "0.1",
    ]))
    .await;
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let shown = text
        .trim()
        .strip_prefix("holding[12] = ")
        .expect("one value");
    assert!(shown.len() < 25, "{shown}");
    assert_eq!(shown.parse::<f64>().unwrap(), 1.653054e-39_f64 * 0.1);
    // Writing a read-only table is a usage error (exit 2), not a device exception.
    let out = run(s(&[
        "write", "--tcp", &addr, "-u", "3", "-t", "input", "-a", "1", "--value", "5",
    ]))
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("table \"input\" is read-only") && !err.contains("exception"),
        "{err}"
    );
}

#[tokio::test]
async fn modbus_readings_and_status_reach_mqtt_through_the_gateway() {
    use crate::common::{InProc, Mosquitto, Subscriber};
    let spec = json!({"units": {"1": {"size": 10, "values": [
        {"table": "input", "address": 2, "type": "f32", "order": "CDAB", "value": 2301.5}]}}});
    let peer = pymodbus(&spec, &["--tcp", "127.0.0.1:0"]).await;
    let broker = Mosquitto::start();
    let cfg = json!({"gateway": {"id": "gwm"},
        "sinks": [{"name": "local", "type": "mqtt", "url": broker.url(), "qos": 1}],
        "connectors": [{"name": "plc", "protocol": "modbus",
            "transport": {"tcp": format!("127.0.0.1:{}", peer.ready)}, "timeout": "500ms",
            "devices": [{"name": "meter", "unit_id": 1, "interval": "100ms", "channels": [
                {"name": "voltage", "table": "input", "address": 2, "type": "f32",
                 "order": "CDAB", "scale": 0.1, "unit": "V"}]}]}]});
    let mut sub = Subscriber::connect(broker.port, "#").await;
    let before = osgate::reading::Timestamp::now().millis();
    let _gw = InProc::start(&cfg).await;
    let m = sub
        .next_where(WAIT, |m| m.topic == "telemetry/gwm/meter/voltage")
        .await;
    let v = m.json["value"].as_f64().expect("number");
    assert!((v - 230.15).abs() < 1e-9, "{}", m.json);
    assert_eq!(m.json["unit"], "V");
    assert_eq!(m.json["quality"], "good");
    let ts = m.json["ts"].as_i64().expect("ts");
    assert!(
        ts >= before,
        "ts {ts} taken before the gateway started ({before})"
    );
    sub.next_where(WAIT, |m| {
        m.topic == "status/gwm/plc/meter" && m.json["online"] == true
    })
    .await;
    // A late subscriber gets the device status as a retained message.
    let mut late = Subscriber::connect(broker.port, "status/gwm/plc/#").await;
    let s = late
        .next_where(WAIT, |m| m.topic == "status/gwm/plc/meter")
        .await;
    assert!(s.retain && s.json["online"] == true, "{s:?}");
}

#[tokio::test]
async fn modbus_failures_are_logged_once_per_state_change() {
    use crate::common::InProc;
    // Eight silent requests (each costs a timeout), then good answers.
    let mut peer = bad_peer("silent", 8).await;
    let cfg = json!({"gateway": {"id": "gwl"}, "sinks": [],
        "connectors": [{"name": "plc", "protocol": "modbus",
            "transport": {"tcp": format!("127.0.0.1:{}", peer.ready)},
            "timeout": "100ms", "retries": 0, "backoff": "10ms", "backoff_max": "10ms",
            "devices": [{"name": "d", "interval": "20ms", "channels": [
                {"name": "r", "table": "holding", "address": 3}]}]}]});
    let gw = InProc::start(&cfg).await;
    peer.line(|l| l == "GOOD 12").await;
    gw.wait_log("device online again", WAIT).await;
    let log = gw.log_json();
    let count = |needle: &str| {
        log.iter()
            .filter(|l| l["message"].as_str().is_some_and(|m| m.contains(needle)))
            .count()
    };
    assert_eq!(count("device offline"), 1, "{}", gw.log_text());
    assert_eq!(count("device online again"), 1, "{}", gw.log_text());
}
