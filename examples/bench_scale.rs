//! Memory scaling benchmark: how the gateway's resident memory grows with devices and channels.
//!
//! For each configuration (devices × channels per device) it starts the gateway with one
//! connector kind — the simulator, or Modbus against `modbus_sim` — and a stdout sink
//! (`format: device`, its output counted and discarded), waits until steady state (`--settle`
//! seconds, at least five poll intervals), then samples `VmRSS` every 100 ms for `--measure`
//! seconds and reports the highest sample (steady RSS: it includes the batches of a poll cycle
//! in flight) and `VmHWM` (peak, start-up parsing included). Readings delivered per second are
//! counted from the sink's output, so a run whose gateway falls behind shows it. Then a
//! least-squares fit of `RSS = base + a × channels + b × devices` over the configurations gives
//! the bytes per channel and per extra device.
//!
//! ```text
//! cargo build --release --bin osgate --example modbus_sim --example bench_scale
//! target/release/examples/bench_scale [--kind sim|modbus|hosts|both|all] [--runs 3]
//!     [--configs 1x1,100x100,1000x10,10x1000,1000x100] [--interval-ms 1000]
//! OSGATE_BIN_DIR=target/dist target/release/examples/bench_scale   # the dist build
//! ```
//! Modbus: up to 100 devices share one simulator port (unit ids 1–100) and one connector, whose
//! devices share one TCP connection (the default); more devices get more ports and connectors
//! (1000 devices: 10 connections). Modbus hosts (`--kind hosts`): every device is a host of its
//! own — a simulator port, a connector and a TCP connection each — so the fit's "per device" is
//! what a host costs; less the shared-connection kind's per device, it is what a connection
//! (with its connector) costs, printed when both kinds ran. Channels are u16 holding
//! registers. Every child process is killed when the benchmark ends.

mod common;

use std::io::{BufReader, Read as _, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use common::{bin_dir, examples_dir, median, peak_rss_mb, rss_mb, wait_line, Proc};
use serde_json::json;

/// Options.
#[derive(Debug, Parser)]
struct Args {
    /// `sim`, `modbus` (devices sharing a connection), `hosts` (a connection per device),
    /// `both` (sim and modbus) or `all`.
    #[arg(long, default_value = "both")]
    kind: String,
    /// Configurations, `DEVICESxCHANNELS` separated by commas.
    #[arg(long, default_value = "1x1,100x100,1000x10,10x1000,1000x100")]
    configs: String,
    /// Runs per configuration (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Poll interval of every device, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Seconds from start to the first sample (at least five intervals are waited).
    #[arg(long, default_value_t = 6)]
    settle: u64,
    /// Seconds of sampling.
    #[arg(long, default_value_t = 4)]
    measure: u64,
}

/// One configuration's figures.
#[derive(Debug, Clone, Copy)]
struct Figures {
    rss_mb: f64,
    hwm_mb: f64,
    readings_per_s: f64,
}

fn channel_names(n: usize) -> Vec<String> {
    (0..n).map(|c| format!("c{c}")).collect()
}

/// The simulator connector: `devices` × `channels` sawtooth signals.
fn sim_connectors(devices: usize, channels: usize, interval: &str) -> Vec<serde_json::Value> {
    let chs: Vec<_> = channel_names(channels)
        .into_iter()
        .map(|n| json!({"name": n, "signal": "sawtooth", "min": 0, "max": 1000, "period": "10s"}))
        .collect();
    let devs: Vec<_> = (0..devices)
        .map(|d| json!({"name": format!("d{d}"), "interval": interval, "channels": chs}))
        .collect();
    vec![json!({"name": "sim", "protocol": "simulator", "devices": devs})]
}

/// Starts `modbus_sim` with enough ports for `devices` (`per_port` unit ids each: 100, or 1 for
/// a host per device) and returns it with one Modbus connector per port.
fn modbus_connectors(
    devices: usize,
    channels: usize,
    interval: &str,
    per_port: usize,
) -> (Proc, Vec<serde_json::Value>) {
    let ports = devices.div_ceil(per_port);
    let units = devices.min(per_port);
    let mut sim = Proc(
        Command::new(examples_dir().join("examples/modbus_sim"))
            .args(["--listen", "127.0.0.1:0", "--ports", &ports.to_string()])
            .args(["--units", &units.to_string()])
            .args(["--registers", &channels.max(1).to_string(), "--floats", "0"])
            .args(["--period-ms", "1000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn modbus_sim (build it with --release --example modbus_sim)"),
    );
    let mut out = BufReader::new(sim.0.stdout.take().expect("sim stdout"));
    let addrs: Vec<String> = wait_line(&mut out, "READY ")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(addrs.len(), ports, "one address per port");
    let chs: Vec<_> = channel_names(channels)
        .into_iter()
        .enumerate()
        .map(|(a, n)| json!({"name": n, "table": "holding", "address": a}))
        .collect();
    let connectors = addrs
        .iter()
        .enumerate()
        .map(|(p, addr)| {
            let devs: Vec<_> = (0..units.min(devices - p * per_port))
                .map(|u| {
                    json!({"name": format!("d{}", p * per_port + u), "unit_id": u + 1,
                           "interval": interval, "channels": chs})
                })
                .collect();
            json!({"name": format!("plc{p}"), "protocol": "modbus", "transport": {"tcp": addr},
                   "timeout": "1s", "devices": devs})
        })
        .collect();
    (sim, connectors)
}

fn run_once(args: &Args, kind: &str, devices: usize, channels: usize, dir: &Path) -> Figures {
    let interval = format!("{}ms", args.interval_ms);
    let (_sim, connectors) = match kind {
        "sim" => (None, sim_connectors(devices, channels, &interval)),
        _ => {
            let per_port = if kind == "hosts" { 1 } else { 100 };
            let (p, c) = modbus_connectors(devices, channels, &interval, per_port);
            (Some(p), c)
        }
    };
    let config = json!({
        "gateway": {"id": "bench"},
        "sinks": [{"name": "out", "type": "stdout", "format": "device"}],
        "connectors": connectors
    });
    let path = dir.join("osgate.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    let mut gw = common::spawn_gateway(&path, Stdio::piped());
    let pid = gw.0.id();
    // Count the sink's lines (one per batch of `channels` readings), discard the rest.
    let batches = Arc::new(AtomicU64::new(0));
    {
        let batches = batches.clone();
        let mut out = gw.0.stdout.take().expect("gateway stdout");
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let lines = buf[..n].iter().filter(|&&b| b == b'\n').count();
                batches.fetch_add(lines as u64, Relaxed);
            }
        });
    }
    let settle = Duration::from_secs(args.settle).max(Duration::from_millis(5 * args.interval_ms));
    std::thread::sleep(settle);
    let (b0, t0) = (batches.load(Relaxed), Instant::now());
    let mut rss: f64 = 0.0;
    while t0.elapsed() < Duration::from_secs(args.measure) {
        rss = rss.max(rss_mb(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    let secs = t0.elapsed().as_secs_f64();
    let b1 = batches.load(Relaxed);
    let hwm = peak_rss_mb(pid);
    assert!(rss > 0.0, "the gateway (pid {pid}) exited early");
    Figures {
        rss_mb: rss,
        hwm_mb: hwm,
        readings_per_s: (b1 - b0) as f64 * channels as f64 / secs,
    }
}

/// Least squares for `y = x · β` with three unknowns (normal equations, Cramer's rule).
fn fit3(xs: &[[f64; 3]], ys: &[f64]) -> Option<[f64; 3]> {
    let mut a = [[0.0; 3]; 3];
    let mut b = [0.0; 3];
    for (x, y) in xs.iter().zip(ys) {
        for i in 0..3 {
            b[i] += x[i] * y;
            for j in 0..3 {
                a[i][j] += x[i] * x[j];
            }
        }
    }
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&a);
    if d.abs() < 1e-9 {
        return None;
    }
    let mut out = [0.0; 3];
    for (k, o) in out.iter_mut().enumerate() {
        let mut m = a;
        for i in 0..3 {
            m[i][k] = b[i];
        }
        *o = det(&m) / d;
    }
    Some(out)
}

fn main() {
    let args = Args::parse();
    let dir = tempfile::Builder::new()
        .prefix("osgate-scale")
        .tempdir()
        .expect("temp dir");
    let configs: Vec<(usize, usize)> = args
        .configs
        .split(',')
        .map(|c| {
            let (d, ch) = c.trim().split_once('x').expect("DEVICESxCHANNELS");
            (
                d.parse().expect("devices"),
                ch.parse().expect("channels per device"),
            )
        })
        .collect();
    let kinds: &[&str] = match args.kind.as_str() {
        "both" => &["sim", "modbus"],
        "all" => &["sim", "modbus", "hosts"],
        "sim" => &["sim"],
        "modbus" => &["modbus"],
        "hosts" => &["hosts"],
        other => panic!("unknown --kind {other}"),
    };
    println!(
        "memory scaling: {} at {} ms, {} run(s) each, binary {}",
        args.configs,
        args.interval_ms,
        args.runs,
        bin_dir().join("osgate").display()
    );
    // Bytes per device of each kind's fit: a host's less a shared connection's device is
    // what a connection costs.
    let mut per_device = std::collections::HashMap::new();
    for kind in kinds {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for &(devices, channels) in &configs {
            let runs: Vec<Figures> = (0..args.runs.max(1))
                .map(|_| run_once(&args, kind, devices, channels, dir.path()))
                .collect();
            let rss = median(runs.iter().map(|f| f.rss_mb).collect());
            let hwm = median(runs.iter().map(|f| f.hwm_mb).collect());
            let rate = median(runs.iter().map(|f| f.readings_per_s).collect());
            let each: Vec<String> = runs.iter().map(|f| format!("{:.1}", f.rss_mb)).collect();
            println!(
                "  {kind:6} {devices:>5} x {channels:<5} steady RSS {rss:6.1} MB (runs {}), \
                 peak {hwm:6.1} MB, {rate:>8.0} readings/s (target {:.0})",
                each.join(" / "),
                (devices * channels) as f64 * 1000.0 / args.interval_ms as f64
            );
            let _ = std::io::stdout().flush();
            xs.push([1.0, (devices * channels) as f64, devices as f64]);
            ys.push(rss * 1024.0 * 1024.0);
        }
        match fit3(&xs, &ys) {
            Some([base, per_channel, device]) => {
                println!(
                    "  {kind:6} fit: base {:.1} MB + {per_channel:.0} bytes per channel + \
                     {device:.0} bytes per {}",
                    base / 1024.0 / 1024.0,
                    if *kind == "hosts" { "host" } else { "device" }
                );
                per_device.insert(*kind, device);
            }
            None => println!("  {kind:6} fit: needs configurations that vary devices and channels"),
        }
    }
    if let (Some(host), Some(device)) = (per_device.get("hosts"), per_device.get("modbus")) {
        println!(
            "  per connection (a host less a device on a shared connection): {:.0} bytes",
            host - device
        );
    }
}
