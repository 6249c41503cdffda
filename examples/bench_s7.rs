//! S7 read benchmark: items per second and CPU per item of osgate's S7 client (planner, wire,
//! transport and codec, as the connector's poller runs them) against python-snap7's server,
//! beside python-snap7's own client reading the same items from the same server.
//!
//! The peer is `tests/peers/s7_server.py` (python-snap7 3.3 in `.venv`, or the interpreter in
//! `$OSGATE_TEST_PYTHON`) serving `items` data blocks; each item is the DINT at `DBn.DBD0`,
//! so nothing merges and every item is one item of a multi-item read (20 per request, 480-byte
//! PDU). Each side reads all items in a loop for `seconds`; the figures are the medians of
//! `runs` runs: items/s, the client's CPU per item (user + system) and the server's.
//!
//! ```text
//! cargo run --release --example bench_s7 -- [items (100)] [seconds (5)] [runs (3)]
//! ```

mod common;

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cpu_seconds, median, Proc};
use osgate::connectors::s7::address::Area;
use osgate::connectors::s7::codec::{self, DataType};
use osgate::connectors::s7::planner::{self, Limits, PlanItem, Span};
use osgate::connectors::s7::transport::{Connection, Target};
use osgate::connectors::s7::wire::{self, ItemKind, ItemSpec, Tsaps};

fn python() -> String {
    std::env::var("OSGATE_TEST_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python3");
        if std::path::Path::new(venv).exists() {
            venv.to_string()
        } else {
            "python3".to_string()
        }
    })
}

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/s7_server.py");

/// Starts the peer with `items` DBs of 4 bytes; returns it and its port.
fn start_peer(items: usize) -> (Proc, u16) {
    let areas: serde_json::Map<String, serde_json::Value> = (1..=items)
        .map(|i| (format!("DB{i}"), serde_json::json!(4)))
        .collect();
    let values: Vec<serde_json::Value> = (1..=items)
        .map(|i| serde_json::json!([format!("DB{i}"), 0, "dint", i]))
        .collect();
    let spec = serde_json::json!({"areas": areas, "values": values});
    let mut child = Command::new(python())
        .args([PEER, "serve", "--spec", &spec.to_string(), "--pdu", "480"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the S7 peer (python-snap7 in .venv?)");
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("READY line");
    let port = line
        .strip_prefix("READY ")
        .and_then(|p| p.trim().parse().ok())
        .expect("READY <port>");
    (Proc(child), port)
}

/// One run of osgate's client: (items read, wall seconds, own CPU seconds).
fn run_osgate(port: u16, items: usize, seconds: f64) -> (u64, f64, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let target = Target {
            addr: format!("127.0.0.1:{port}"),
            tsaps: Tsaps::rack_slot(1, 0, 1),
            describe: "rack 0, slot 1".into(),
            pdu: 480,
        };
        let mut conn = Connection::open(&target, Duration::from_secs(2))
            .await
            .expect("connect");
        let plan_items: Vec<PlanItem> = (0..items)
            .map(|i| PlanItem {
                channel: i as u32,
                span: Span {
                    area: Area::Db(i as u16 + 1),
                    start: 0,
                    len: 4,
                },
                solo: false,
            })
            .collect();
        let limits = Limits {
            pdu: usize::from(conn.pdu()),
            max_items: 20,
            max_gap: 16,
        };
        let plan = planner::plan(&plan_items, &limits);
        let mut buf = vec![0u8; 4 * plan.blocks.len()];
        let mut read = 0u64;
        let cpu0 = cpu_seconds(std::process::id());
        let t0 = Instant::now();
        while t0.elapsed().as_secs_f64() < seconds {
            for req in &plan.requests {
                let specs = req.pieces.iter().map(|pc| {
                    let b = &plan.blocks[pc.block as usize];
                    ItemSpec {
                        area: b.area,
                        kind: ItemKind::of(b.area),
                        start: b.start + pc.offset,
                        bit: 0,
                        count: pc.len as u16,
                    }
                });
                let r = conn.take_ref();
                wire::read_request(&mut conn.tx, r, specs);
                let ack = conn.exchange().await.expect("read");
                for (pc, item) in req
                    .pieces
                    .iter()
                    .zip(wire::read_answer(&ack, req.pieces.len()).expect("answer"))
                {
                    let at = pc.block as usize * 4;
                    buf[at..at + 4].copy_from_slice(item.expect("item"));
                }
            }
            for (i, chunk) in buf.chunks(4).enumerate() {
                let v = codec::decode(DataType::Dint, chunk, 0).expect("decode");
                debug_assert_eq!(
                    v,
                    osgate::reading::Value::I64(plan.blocks[i].area.db().into())
                );
                std::hint::black_box(v);
            }
            read += items as u64;
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(std::process::id()) - cpu0;
        conn.close().await;
        (read, wall, cpu)
    })
}

/// One run of python-snap7's client: (items read, wall seconds, its CPU seconds).
fn run_snap7(port: u16, items: usize, seconds: f64) -> (u64, f64, f64) {
    let out = Command::new(python())
        .args([
            PEER,
            "bench",
            "--port",
            &port.to_string(),
            "--items",
            &items.to_string(),
            "--seconds",
            &seconds.to_string(),
        ])
        .output()
        .expect("run the python-snap7 client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    (
        j["items"].as_u64().expect("items"),
        j["wall"].as_f64().expect("wall"),
        j["cpu"].as_f64().expect("cpu"),
    )
}

struct Figures {
    rate: Vec<f64>,
    client_us: Vec<f64>,
    server_us: Vec<f64>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let items: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let seconds: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5.0);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    println!(
        "s7 read bench: {items} items (DINT, one DB each), {seconds} s x {runs} runs per client"
    );
    let (peer, port) = start_peer(items);
    let server_pid = peer.0.id();
    let mut osgate = Figures {
        rate: vec![],
        client_us: vec![],
        server_us: vec![],
    };
    let mut snap7 = Figures {
        rate: vec![],
        client_us: vec![],
        server_us: vec![],
    };
    for run in 0..runs {
        for (name, figs) in [("osgate", &mut osgate), ("python-snap7", &mut snap7)] {
            let s0 = cpu_seconds(server_pid);
            let (n, wall, cpu) = if name == "osgate" {
                run_osgate(port, items, seconds)
            } else {
                run_snap7(port, items, seconds)
            };
            let server = cpu_seconds(server_pid) - s0;
            let n = n.max(1) as f64;
            figs.rate.push(n / wall);
            figs.client_us.push(cpu / n * 1e6);
            figs.server_us.push(server / n * 1e6);
            println!(
                "  run {run} {name:<13} {:>8.0} items/s  client {:>6.2} µs CPU/item  server {:>6.2} µs CPU/item",
                n / wall,
                cpu / n * 1e6,
                server / n * 1e6
            );
        }
    }
    println!("median of {runs}:");
    for (name, f) in [("osgate", osgate), ("python-snap7", snap7)] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} |",
            median(f.rate),
            median(f.client_us),
            median(f.server_us)
        );
    }
}
