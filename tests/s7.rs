//! S7 connector against a real S7 peer: python-snap7's server (`tests/peers/s7_server.py`, an
//! independent implementation of ISO-on-TCP and S7comm), with values encoded and read back by
//! python-snap7's own helpers. The connector runs in-process; its batches and status changes
//! are taken from a sink queue, exactly as a sink would see them.

use std::collections::HashMap;
use std::process::Stdio;

use osgate::reading::{Quality, Value};
use serde_json::{json, Value as Json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::common::connector::{unique, ConnectorRun};
use crate::common::{osgate_cmd, python, within};

/// The python-snap7 peer, killed on drop; answers `get`/`stats` on its stdin.
struct S7Peer {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    port: u16,
}

impl S7Peer {
    async fn start(spec: &Json, extra: &[&str]) -> S7Peer {
        Self::start_on(spec, 0, extra).await
    }

    async fn start_on(spec: &Json, port: u16, extra: &[&str]) -> S7Peer {
        let mut child = Command::new(python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/peers/s7_server.py"
            ))
            .args([
                "serve",
                "--spec",
                &spec.to_string(),
                "--port",
                &port.to_string(),
            ])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the S7 peer (python-snap7 in .venv?)");
        let stdin = child.stdin.take().expect("stdin");
        let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let port = within("the S7 peer's READY line", async {
            loop {
                match out.next_line().await.expect("peer stdout") {
                    Some(l) if l.starts_with("READY ") => {
                        break l[6..].trim().parse().expect("port")
                    }
                    Some(_) => continue,
                    None => panic!("the S7 peer exited before READY"),
                }
            }
        })
        .await;
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(l)) = out.next_line().await {
                let _ = tx.send(l);
            }
        });
        S7Peer {
            child,
            stdin,
            lines,
            port,
        }
    }

    /// Asks the peer a command and returns the JSON of its `VALUE` answer.
    async fn ask(&mut self, cmd: &str) -> Json {
        self.stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .expect("peer stdin");
        within("the S7 peer's answer", async {
            loop {
                let l = self.lines.recv().await.expect("peer running");
                if let Some(v) = l.strip_prefix("VALUE ") {
                    return serde_json::from_str(v).expect("json");
                }
            }
        })
        .await
    }

    async fn kill(mut self) {
        within("the S7 peer to exit", self.child.kill())
            .await
            .expect("kill");
    }
}

fn connector(port: u16, extra: Json, devices: Json) -> Json {
    let mut c = json!({"name": unique("plc"), "protocol": "s7", "host": "127.0.0.1",
        "port": port, "rack": 0, "slot": 1, "timeout": "2s", "backoff": "100ms",
        "backoff_max": "200ms", "devices": devices});
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    c
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// Every type in a DB, bits in DB/M/I/Q, counters and timers: encoded by python-snap7.
#[tokio::test]
async fn s7_decodes_every_type_and_bit_from_python_snap7() {
    // (channel address, type, peer type, value, expected)
    let typed: Vec<(&str, &str, &str, Json, Value)> = vec![
        ("DB1.DBB0", "byte", "byte", json!(0xAB), Value::U64(0xAB)),
        ("DB1.DBB1", "sint", "sint", json!(-5), Value::I64(-5)),
        ("DB1.DBB2", "char", "char", json!("Z"), text("Z")),
        (
            "DB1.DBW4",
            "word",
            "word",
            json!(0xBEEF),
            Value::U64(0xBEEF),
        ),
        ("DB1.DBW6", "int", "int", json!(-12345), Value::I64(-12345)),
        ("DB1.DBW8", "uint", "uint", json!(54321), Value::U64(54321)),
        (
            "DB1.DBD10",
            "dword",
            "dword",
            json!(0xDEADBEEFu32),
            Value::U64(0xDEADBEEF),
        ),
        (
            "DB1.DBD14",
            "dint",
            "dint",
            json!(-123456789),
            Value::I64(-123456789),
        ),
        (
            "DB1.DBD18",
            "udint",
            "udint",
            json!(4000000000u32),
            Value::U64(4000000000),
        ),
        ("DB1.DBD22", "real", "real", json!(21.5), Value::F64(21.5)),
        (
            "DB1.DBB26",
            "lreal",
            "lreal",
            json!(6.02214076e23),
            Value::F64(6.02214076e23),
        ),
        (
            "DB1.DBB34",
            "lint",
            "lint",
            json!(-1234567890123i64),
            Value::I64(-1234567890123),
        ),
        (
            "DB1.DBB42",
            "ulint",
            "ulint",
            json!(12345678901234u64),
            Value::U64(12345678901234),
        ),
        (
            "DB1.DBW50",
            "date",
            "date",
            json!("2026-12-07"),
            text("2026-12-07"),
        ),
        (
            "DB1.DBD52",
            "time",
            "time",
            json!(-90061001),
            Value::I64(-90061001),
        ),
        (
            "DB1.DBD56",
            "time_of_day",
            "tod",
            json!(47655250),
            text("13:14:15.250"),
        ),
        (
            "DB1.DBB60",
            "date_and_time",
            "dt",
            json!("2026-12-07T13:14:15.678"),
            text("2026-12-07T13:14:15.678"),
        ),
        (
            "DB1.DBB68",
            "dtl",
            "dtl",
            json!("2026-12-07T13:14:15.123456"),
            text("2026-12-07T13:14:15.123456000"),
        ),
        (
            "DB1.DBB80",
            "string",
            "string",
            json!("osgate S7"),
            text("osgate S7"),
        ),
        ("MW2", "int", "int", json!(-7), Value::I64(-7)),
        ("MD4", "real", "real", json!(-1.25), Value::F64(-1.25)),
        ("IW2", "word", "word", json!(4660), Value::U64(4660)),
        ("QB3", "byte", "byte", json!(66), Value::U64(66)),
    ];
    let mut values: Vec<Json> = typed
        .iter()
        .map(|(addr, _, pty, v, _)| {
            let (area, off) = if let Some(rest) = addr.strip_prefix("DB1.DB") {
                ("DB1", &rest[1..])
            } else {
                (&addr[..1], &addr[2..])
            };
            let off: u32 = off.parse().expect("offset");
            if *pty == "string" {
                json!([area, off, pty, v, 20])
            } else {
                json!([area, off, pty, v])
            }
        })
        .collect();
    // Bit patterns: every bit position of one byte in each of DB, M, I and Q.
    let patterns = [
        ("DB1", 120u8, 0b1010_0101u8),
        ("M", 0, 0b0101_1010),
        ("I", 0, 0b1000_0001),
        ("Q", 0, 0b0111_1110),
    ];
    for (area, byte, bits) in patterns {
        values.push(json!([area, byte, "byte", bits]));
    }
    values.push(json!(["C", 2, "raw", "0987"]));
    values.push(json!(["T", 1, "raw", "1250"]));
    let spec = json!({"areas": {"DB1": 128, "M": 16, "I": 8, "Q": 8, "C": 4, "T": 4},
                      "values": values});
    let peer = S7Peer::start(&spec, &[]).await;

    let mut channels: Vec<Json> = typed
        .iter()
        .enumerate()
        .map(|(i, (addr, ty, pty, _, _))| {
            let mut c = json!({"name": format!("v{i}"), "address": addr, "type": ty});
            if *pty == "string" {
                c["length"] = json!(20);
            }
            c
        })
        .collect();
    let mut want_bits = Vec::new();
    for (area, byte, bits) in patterns {
        for bit in 0..8u8 {
            let addr = if area == "DB1" {
                format!("DB1.DBX{byte}.{bit}")
            } else {
                format!("{area}{byte}.{bit}")
            };
            let name = format!("{area}_{bit}");
            channels.push(json!({"name": name, "address": addr}));
            want_bits.push((name, bits & (1 << bit) != 0));
        }
    }
    channels.push(json!({"name": "counter", "address": "C2"}));
    channels.push(json!({"name": "timer", "address": "T1"}));
    let mut run = ConnectorRun::start(connector(
        peer.port,
        json!({}),
        json!([{"name": "press", "interval": "100ms", "channels": channels}]),
    ));
    let got = run.good_batch("press").await;
    for (i, (addr, ty, _, _, want)) in typed.iter().enumerate() {
        assert_eq!(&got[&format!("v{i}")], want, "{addr} as {ty}");
    }
    for (name, on) in want_bits {
        assert_eq!(got[&name], Value::Bool(on), "{name}");
    }
    assert_eq!(got["counter"], Value::U64(987));
    // S5TIME 0x1250: time base 1 (100 ms) × 250.
    assert_eq!(got["timer"], Value::U64(25_000));
    run.stop().await;
}

/// Writes through the kit's write path land in the PLC's memory, bits as bits.
#[tokio::test]
async fn s7_writes_land_in_the_plc_memory() {
    let spec = json!({"areas": {"DB1": 64, "M": 8, "Q": 4},
        "values": [["DB1", 6, "byte", 0b1111_0000u8], ["M", 1, "byte", 0b0000_0001u8],
                   ["DB1", 30, "dtl", "1970-01-01T00:00:00"]]});
    let mut peer = S7Peer::start(&spec, &[]).await;
    let mut run = ConnectorRun::start(connector(
        peer.port,
        json!({}),
        json!([{"name": "press", "interval": "100ms", "channels": [
            {"name": "setpoint", "address": "DB1.DBW4", "type": "int", "writable": true},
            {"name": "temp", "address": "DB1.DBD0", "type": "real", "writable": true,
             "scale": 0.1},
            {"name": "bit", "address": "DB1.DBX6.1", "writable": true},
            {"name": "high", "address": "DB1.DBX6.7", "writable": true},
            {"name": "total", "address": "DB1.DBB8", "type": "lreal", "writable": true},
            {"name": "label", "address": "DB1.DBB16", "type": "string", "length": 10,
             "writable": true},
            {"name": "stamp", "address": "DB1.DBB30", "type": "dtl", "writable": true},
            {"name": "flag", "address": "M1.5", "writable": true},
            {"name": "out", "address": "QB2", "writable": true}]}]),
    ));
    run.good_batch("press").await;
    run.write("press", "setpoint", json!(-300))
        .await
        .expect("int");
    run.write("press", "temp", json!(21.5)).await.expect("real");
    run.write("press", "bit", json!(true))
        .await
        .expect("bit on");
    run.write("press", "high", json!(false))
        .await
        .expect("bit off");
    run.write("press", "total", json!(1.5e300))
        .await
        .expect("lreal");
    run.write("press", "label", json!("line 3"))
        .await
        .expect("string");
    run.write("press", "stamp", json!("2026-12-07T13:14:15.5"))
        .await
        .expect("dtl");
    run.write("press", "flag", json!(true))
        .await
        .expect("M bit");
    run.write("press", "out", json!(200)).await.expect("Q byte");
    assert_eq!(peer.ask("get DB1 4 int").await, json!(-300));
    // Engineering units: 21.5 with scale 0.1 is 215 in the PLC.
    assert_eq!(peer.ask("get DB1 0 real").await, json!(215.0));
    // Bits written as bits: the other bits of the byte are untouched.
    assert_eq!(peer.ask("get DB1 6 byte").await, json!(0b0111_0010));
    assert_eq!(peer.ask("get DB1 8 lreal").await, json!(1.5e300));
    assert_eq!(peer.ask("get DB1 16 string").await, json!("line 3"));
    assert_eq!(
        peer.ask("get DB1 30 dtl").await,
        json!("2026-12-07T13:14:15.500000")
    );
    assert_eq!(peer.ask("get M 1 byte").await, json!(0b0010_0001));
    assert_eq!(peer.ask("get Q 2 byte").await, json!(200));
    // Range checks happen before the PLC is asked.
    let err = run.write("press", "setpoint", json!(40000)).await;
    assert!(err.is_err(), "{err:?}");
    assert_eq!(peer.ask("get DB1 4 int").await, json!(-300));
    // And the next poll reads what was written.
    let got = loop {
        let g = run.good_batch("press").await;
        if g["setpoint"] == Value::I64(-300) {
            break g;
        }
    };
    assert_eq!(got["label"], text("line 3"));
    assert_eq!(got["bit"], Value::Bool(true));
    run.stop().await;
}

/// Sixty DBs on a 240-byte PDU: several multi-item requests, none beyond the PDU.
#[tokio::test]
async fn s7_plans_many_dbs_within_the_pdu() {
    let n = 60;
    let mut areas = serde_json::Map::new();
    let mut values = Vec::new();
    for db in 1..=n {
        areas.insert(format!("DB{db}"), json!(8));
        values.push(json!([format!("DB{db}"), 0, "dint", db * 1000 + 7]));
        values.push(json!([format!("DB{db}"), 4, "int", -db]));
    }
    let spec = json!({"areas": areas, "values": values});
    let mut peer = S7Peer::start(&spec, &["--pdu", "240"]).await;
    let channels: Vec<Json> = (1..=n)
        .flat_map(|db| {
            [
                json!({"name": format!("d{db}"), "address": format!("DB{db}.DBD0"), "type": "dint"}),
                json!({"name": format!("i{db}"), "address": format!("DB{db}.DBW4"), "type": "int"}),
            ]
        })
        .collect();
    let mut run = ConnectorRun::start(connector(
        peer.port,
        json!({}),
        json!([{"name": "all", "interval": "200ms", "channels": channels}]),
    ));
    let got = run.good_batch("all").await;
    for db in 1..=n {
        assert_eq!(got[&format!("d{db}")], Value::I64(db * 1000 + 7), "DB{db}");
        assert_eq!(got[&format!("i{db}")], Value::I64(-db), "DB{db}");
    }
    run.stop().await;
    let stats = peer.ask("stats").await;
    assert_eq!(stats["oversized"], json!(0), "{stats}");
    // Each DB's two values merge into one 6-byte item; (240 - 12) / 12 = 19 items a request
    // gives 4 requests per poll, not 120 items one by one.
    assert!(stats["reads"].as_u64().expect("reads") >= 4, "{stats}");
}

/// An item the PLC refuses makes only its channels bad; the device stays online.
#[tokio::test]
async fn s7_refused_item_marks_only_that_channel_bad() {
    let spec =
        json!({"areas": {"DB1": 20}, "values": [["DB1", 0, "int", 11], ["DB1", 10, "int", 22]]});
    let peer = S7Peer::start(&spec, &[]).await;
    let mut run = ConnectorRun::start(connector(
        peer.port,
        json!({"max_gap": 40}),
        json!([{"name": "d", "interval": "100ms", "channels": [
            {"name": "a", "address": "DB1.DBW0", "type": "int"},
            {"name": "b", "address": "DB1.DBW10", "type": "int"},
            // Merged with a and b into DB1.DBB0..32, past the end of DB1.
            {"name": "past", "address": "DB1.DBW30", "type": "int"},
            // A DB the PLC does not have.
            {"name": "nodb", "address": "DB99.DBW0", "type": "int"}]}]),
    ));
    for _ in 0..3 {
        let b = run.batch("d").await;
        let q: HashMap<_, _> = b.iter().map(|r| (r.channel.to_string(), r)).collect();
        assert_eq!(q["a"].value, Value::I64(11));
        assert_eq!(q["b"].value, Value::I64(22));
        assert!(q["a"].quality.is_good() && q["b"].quality.is_good());
        match &q["past"].quality {
            Quality::Bad(r) => assert!(r.contains("address out of range"), "{r}"),
            other => panic!("past is {other:?}"),
        }
        match &q["nodb"].quality {
            Quality::Bad(r) => {
                assert!(
                    r.contains("DB99") && r.contains("optimized block access"),
                    "{r}"
                )
            }
            other => panic!("nodb is {other:?}"),
        }
    }
    let st = run.device_status("d").expect("status");
    assert!(st.online, "{st:?}");
    run.stop().await;
}

/// A stopped PLC takes the device offline; it comes back online when the PLC does.
#[tokio::test]
async fn s7_stopped_plc_goes_offline_and_comes_back() {
    let spec = json!({"areas": {"DB1": 8}, "values": [["DB1", 0, "dint", 4242]]});
    let peer = S7Peer::start(&spec, &[]).await;
    let port = peer.port;
    let mut run = ConnectorRun::start(connector(
        port,
        json!({}),
        json!([{"name": "d", "interval": "100ms", "channels": [
            {"name": "v", "address": "DB1.DBD0", "type": "dint"}]}]),
    ));
    assert_eq!(run.good_batch("d").await["v"], Value::I64(4242));
    run.status("d", |s| s.online).await;
    peer.kill().await;
    let down = run.status("d", |s| !s.online).await;
    assert!(down.last_error.is_some(), "{down:?}");
    let b = run.batch("d").await;
    assert!(!b[0].quality.is_good());
    let _peer = S7Peer::start_on(&spec, port, &[]).await;
    let up = run.status("d", |s| s.online).await;
    assert!(up.last_error.is_none(), "{up:?}");
    assert_eq!(run.good_batch("d").await["v"], Value::I64(4242));
    run.stop().await;
}

/// Wrong rack/slot and PUT/GET refusal are named so an operator can act.
#[tokio::test]
async fn s7_wrong_slot_and_putget_refusal_are_named() {
    let spec = json!({"areas": {"DB1": 8}});
    let devices = json!([{"name": "d", "interval": "100ms", "channels": [
        {"name": "v", "address": "DB1.DBW0"}]}]);
    let peer = S7Peer::start(&spec, &["--slot", "2"]).await;
    let mut run = ConnectorRun::start(connector(peer.port, json!({"slot": 1}), devices.clone()));
    let st = run.status("d", |s| s.last_error.is_some()).await;
    let e = st.last_error.clone().expect("error");
    assert!(
        !st.online && e.contains("rack and slot") && e.contains("slot 1"),
        "{st:?}"
    );
    run.stop().await;
    // The right slot connects.
    let mut run = ConnectorRun::start(connector(peer.port, json!({"slot": 2}), devices.clone()));
    run.good_batch("d").await;
    run.stop().await;

    let peer = S7Peer::start(&spec, &["--deny-putget"]).await;
    let mut run = ConnectorRun::start(connector(peer.port, json!({}), devices));
    let st = run.status("d", |s| s.last_error.is_some()).await;
    let e = st.last_error.clone().expect("error");
    assert!(!st.online && e.contains("PUT/GET"), "{st:?}");
    let b = run.batch("d").await;
    match &b[0].quality {
        Quality::Bad(r) => assert!(r.contains("PUT/GET"), "{r}"),
        other => panic!("{other:?}"),
    }
    run.stop().await;
}

/// `osgate s7 read|write` against the peer.
#[tokio::test]
async fn s7_cli_reads_and_writes() {
    let spec = json!({"areas": {"DB1": 16, "M": 4},
        "values": [["DB1", 0, "real", 21.5], ["DB1", 6, "bool", true, 3]]});
    let mut peer = S7Peer::start(&spec, &[]).await;
    let port = peer.port.to_string();
    let base = ["--host", "127.0.0.1", "--port", &port];
    let run = |args: Vec<&str>| {
        let mut all = vec!["s7"];
        all.extend(args);
        osgate_cmd(&all)
    };
    let (code, out, err) = run([&["read", "DB1.DBD0", "--type", "real"][..], &base].concat());
    assert_eq!((code, out.trim()), (0, "DB1.DBD0 = 21.5"), "{err}");
    let (code, out, err) = run([&["read", "DB1.DBX6.3"][..], &base].concat());
    assert_eq!((code, out.trim()), (0, "DB1.DBX6.3 = true"), "{err}");
    let (code, out, err) = run([
        &["write", "MW2", "--type", "int", "--value", "-42"][..],
        &base,
    ]
    .concat());
    assert_eq!((code, out.trim()), (0, "MW2 = -42 (written -42)"), "{err}");
    assert_eq!(peer.ask("get M 2 int").await, json!(-42));
    let (code, _, err) = run([&["read", "DB1.DBW0", "--type", "real"][..], &base].concat());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("DB1.DBD0"), "{err}");
    let (code, _, err) = run([&["read", "DB7.DBW0"][..], &base].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("DB7"), "{err}");
}
