//! Modbus end-to-end benchmark: `modbus_sim` → osgate (Modbus connector → MQTT sink) →
//! mosquitto → a counting subscriber.
//!
//! 100 devices (unit ids 1–100 of one simulator port, sharing `--max-connections` TCP
//! connections, default 1; or with `--hosts` each device on a port, connector and connection of
//! its own) × 100 channels (50 u16 and 50 f32 = 150 registers, planned into 2 requests per
//! device) polled every 100 ms. For each run it reports delivered readings/s (counted by the
//! subscriber), Modbus requests/s (counted by the simulator), gateway CPU-seconds per 100k
//! readings (from /proc) and the gateway's peak RSS (VmHWM), then the median of the runs.
//!
//! ```text
//! cargo build --release --bin osgate --example modbus_sim --example bench_modbus
//! target/release/examples/bench_modbus [--runs 3] [--secs 30] [--format device|reading]
//!                                      [--devices 100] [--channels 100] [--interval-ms 100]
//!                                      [--max-connections N | --hosts]
//! ```
//! Needs `mosquitto` on the PATH. Every child process is killed when the benchmark ends.

mod common;

use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use common::{cpu_seconds, examples_dir, median, peak_rss_mb, wait_line, Proc};
use osgate::connectors::modbus::codec::Table;
use osgate::connectors::modbus::planner::{self, PlanItem};
use serde_json::json;

/// Options.
#[derive(Debug, Parser)]
struct Args {
    /// Number of runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Measured seconds per run (after a 5 s warm-up).
    #[arg(long, default_value_t = 30)]
    secs: u64,
    /// MQTT sink format: `device` (one message per poll) or `reading` (one per value).
    #[arg(long, default_value = "device")]
    format: String,
    /// Devices (unit ids).
    #[arg(long, default_value_t = 100)]
    devices: u16,
    /// Channels per device: half u16, half f32.
    #[arg(long, default_value_t = 100)]
    channels: u16,
    /// Poll interval in milliseconds.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// The connector's `max_connections` (TCP connections the devices share; default: the
    /// gateway's default of 1).
    #[arg(long)]
    max_connections: Option<u16>,
    /// Every device a host of its own: a simulator port, a connector and a TCP connection
    /// each (instead of unit ids behind one address).
    #[arg(long)]
    hosts: bool,
}

/// The channels of one device: `n/2` u16 counters, then `n/2` f32 values (ABCD).
fn channels(n: u16) -> (Vec<serde_json::Value>, u16, u16) {
    let u16s = n - n / 2;
    let floats = n / 2;
    let mut out = Vec::new();
    for a in 0..u16s {
        out.push(json!({"name": format!("c{a}"), "table": "holding", "address": a}));
    }
    for k in 0..floats {
        out.push(
            json!({"name": format!("f{k}"), "table": "holding", "address": u16s + 2 * k,
                        "type": "f32"}),
        );
    }
    (out, u16s + 2 * floats, floats)
}

/// The number of requests the planner makes for one device.
fn planned_requests(n: u16) -> usize {
    let u16s = n - n / 2;
    let items: Vec<PlanItem> = (0..u16s)
        .map(|a| (a, 1))
        .chain((0..n / 2).map(|k| (u16s + 2 * k, 2)))
        .map(|(address, count)| PlanItem {
            key: 0,
            table: Table::Holding,
            address,
            count,
        })
        .collect();
    planner::plan(&items, &planner::Limits::default()).len()
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Figures {
    readings_per_s: f64,
    requests_per_s: f64,
    cpu_s_per_100k: f64,
    cpu_share: f64,
    peak_rss_mb: f64,
}

fn run_once(args: &Args, dir: &Path) -> Figures {
    let bins = examples_dir();
    let (_mosquitto, mport) = common::start_mosquitto(dir);

    // simulator
    let (chs, registers, floats) = channels(args.channels);
    let (ports, units) = if args.hosts {
        (args.devices, 1)
    } else {
        (1, args.devices)
    };
    let mut sim = Proc(
        Command::new(bins.join("examples/modbus_sim"))
            .args(["--listen", "127.0.0.1:0", "--stats"])
            .args(["--ports", &ports.to_string()])
            .args(["--units", &units.to_string()])
            .args(["--registers", &registers.to_string()])
            .args(["--floats", &floats.to_string()])
            .args(["--period-ms", &args.interval_ms.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn modbus_sim (build it with --release --example modbus_sim)"),
    );
    let mut sim_out = BufReader::new(sim.0.stdout.take().expect("sim stdout"));
    let sim_addrs: Vec<String> = wait_line(&mut sim_out, "READY ")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let sim_requests = Arc::new(AtomicU64::new(0));
    {
        let sim_requests = sim_requests.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while sim_out.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some(n) = line.trim().strip_prefix("STATS requests=") {
                    sim_requests.store(n.parse().unwrap_or(0), Ordering::Relaxed);
                }
                line.clear();
            }
        });
    }

    // gateway
    let connectors: Vec<_> = sim_addrs
        .iter()
        .enumerate()
        .map(|(p, addr)| {
            let devices: Vec<_> = (1..=units)
                .map(|u| {
                    json!({"name": format!("d{}", p * usize::from(units) + usize::from(u)),
                           "unit_id": u, "interval": format!("{}ms", args.interval_ms),
                           "channels": chs})
                })
                .collect();
            let mut connector = json!({"name": format!("plc{p}"), "protocol": "modbus",
                                       "transport": {"tcp": addr}, "timeout": "1s",
                                       "devices": devices});
            if let Some(n) = args.max_connections {
                connector["max_connections"] = json!(n);
            }
            connector
        })
        .collect();
    let config = json!({
        "gateway": {"id": "bench"},
        "sinks": [{"name": "local", "type": "mqtt", "url": format!("mqtt://127.0.0.1:{mport}"),
                   "qos": 1, "format": args.format, "status": false}],
        "connectors": connectors
    });
    let gw = common::start_gateway(dir, &config);
    let pid = gw.0.id();

    // subscriber
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let readings = common::count_readings(&rt, mport, "bench", args.format != "device");
    // Warm-up, then measure.
    rt.block_on(async { tokio::time::sleep(Duration::from_secs(5)).await });
    let (r0, q0, c0, t0) = (
        readings.load(Ordering::Relaxed),
        sim_requests.load(Ordering::Relaxed),
        cpu_seconds(pid),
        Instant::now(),
    );
    rt.block_on(async { tokio::time::sleep(Duration::from_secs(args.secs)).await });
    let (r1, q1, c1, secs) = (
        readings.load(Ordering::Relaxed),
        sim_requests.load(Ordering::Relaxed),
        cpu_seconds(pid),
        t0.elapsed().as_secs_f64(),
    );
    let rss = peak_rss_mb(pid);
    drop(rt);
    let delivered = (r1 - r0) as f64;
    let cpu = c1 - c0;
    Figures {
        readings_per_s: delivered / secs,
        requests_per_s: (q1 - q0) as f64 / secs,
        cpu_s_per_100k: if delivered > 0.0 {
            cpu / delivered * 100_000.0
        } else {
            f64::NAN
        },
        cpu_share: cpu / secs,
        peak_rss_mb: rss,
    }
}

fn main() {
    let args = Args::parse();
    let dir = tempfile::Builder::new()
        .prefix("osgate-bench")
        .tempdir()
        .expect("temp dir");
    let planned = planned_requests(args.channels);
    println!(
        "modbus bench: {} devices x {} channels ({} planned requests each) every {} ms, \
         format {}, {} s per run",
        args.devices, args.channels, planned, args.interval_ms, args.format, args.secs
    );
    println!(
        "  target: {:.0} readings/s, {:.0} Modbus requests/s",
        f64::from(args.devices) * f64::from(args.channels) * 1000.0 / args.interval_ms as f64,
        f64::from(args.devices) * planned as f64 * 1000.0 / args.interval_ms as f64
    );
    let mut all = Vec::new();
    for i in 0..args.runs.max(1) {
        let f = run_once(&args, dir.path());
        println!(
            "  run {}: {:.0} readings/s, {:.0} requests/s, {:.3} CPU-s per 100k readings \
             ({:.0}% of one core), peak RSS {:.1} MB",
            i + 1,
            f.readings_per_s,
            f.requests_per_s,
            f.cpu_s_per_100k,
            f.cpu_share * 100.0,
            f.peak_rss_mb
        );
        let _ = std::io::stdout().flush();
        all.push(f);
    }
    println!(
        "  median: {:.0} readings/s, {:.0} requests/s, {:.3} CPU-s per 100k readings \
         ({:.0}% of one core), peak RSS {:.1} MB",
        median(all.iter().map(|f| f.readings_per_s).collect()),
        median(all.iter().map(|f| f.requests_per_s).collect()),
        median(all.iter().map(|f| f.cpu_s_per_100k).collect()),
        median(all.iter().map(|f| f.cpu_share * 100.0).collect()),
        median(all.iter().map(|f| f.peak_rss_mb).collect()),
    );
}
