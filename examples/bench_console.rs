//! Web console benchmark: what one browser on the console costs the gateway, and how the
//! devices page copes with a thousand devices.
//!
//! 1. A gateway (release build) with one simulator device of `--channels` channels (default
//!    1000) polled every second, an MQTT sink to mosquitto and the JSON-RPC listener. Each run
//!    measures the gateway's CPU (percent of one core) and RSS over `--secs` seconds without a
//!    browser, then with one headless chromium showing that device's page (live readings over
//!    the WebSocket, repainted by the page at most four times a second).
//! 2. A gateway with `--devices` simulator devices (default 1000) of one channel each: the
//!    devices page's time until every row shows, the time of one keystroke in the name filter,
//!    and the longest main-thread task (Long Tasks API) over 10 s of two-second refreshes.
//!
//! ```text
//! cargo build --release --bin osgate --example bench_console
//! target/release/examples/bench_console [--runs 3] [--secs 30] [--channels 1000] [--devices 1000]
//! ```
//! Needs `mosquitto`, `/usr/bin/chromium` and `/usr/bin/chromedriver`, and Python with selenium
//! (`OSGATE_TEST_PYTHON`, else `.venv/bin/python3`, as `.ci/run` makes it). The browser is driven
//! by `tests/peers/console_browser.py` (phases `hold` and `devices`). Every child process is
//! killed when the benchmark ends.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;
use common::{cpu_seconds, free_port, median, rss_mb, wait_port, Proc};
use serde_json::{json, Value};

/// Options.
#[derive(Debug, Parser)]
struct Args {
    /// Number of runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Measured seconds per window (after a 5 s settling time).
    #[arg(long, default_value_t = 30)]
    secs: u64,
    /// Channels of the one device whose page the browser shows.
    #[arg(long, default_value_t = 1000)]
    channels: usize,
    /// Devices on the devices page.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
}

const KEY: &str = "bench-key-0123456789";

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("OSGATE_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python3")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/console_browser.py")
}

/// A gateway with the simulator `devices` (each `channels` sine channels, polled every
/// `interval`), an MQTT sink to the broker on `broker` and the JSON-RPC listener on `rpc`.
fn config(broker: u16, rpc: u16, devices: usize, channels: usize, interval: &str) -> Value {
    let devices: Vec<Value> = (0..devices)
        .map(|d| {
            let chans: Vec<Value> = (0..channels)
                .map(|c| {
                    json!({"name": format!("c{c}"), "signal": "sine", "min": 0, "max": 100,
                                "period": format!("{}s", 20 + c % 40), "unit": "°C"})
                })
                .collect();
            json!({"name": format!("dev-{d}"), "interval": interval, "channels": chans})
        })
        .collect();
    json!({
        "gateway": {"id": "bench"},
        "rpc": {"listen": format!("127.0.0.1:{rpc}"), "api_keys": [KEY]},
        "sinks": [{"name": "local", "type": "mqtt", "url": format!("mqtt://127.0.0.1:{broker}")}],
        "connectors": [{"name": "sim", "protocol": "simulator", "devices": devices}]
    })
}

/// Runs a browser phase to its end; returns its `FIG name value` lines.
fn browser(phase: &str, url: &str, args: &[(&str, String)]) -> BTreeMap<String, f64> {
    let out = Command::new(python())
        .arg(script())
        .args([phase, url, "/tmp/osgate-bench-console-shots"])
        .args(args.iter().map(|(k, v)| format!("{k}={v}")))
        .stdin(Stdio::null())
        .output()
        .expect("run the browser script (selenium installed?)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser phase {phase} failed:\n{text}"
    );
    figures(&text)
}

fn figures(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("FIG "))
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// The gateway's CPU (percent of one core) over `secs`, and its RSS (MB) at the end.
fn window(pid: u32, secs: u64) -> (f64, f64) {
    let c0 = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(secs));
    let c1 = cpu_seconds(pid);
    ((c1 - c0) / secs as f64 * 100.0, rss_mb(pid))
}

fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("temp dir");
    let (_mosquitto, broker) = common::start_mosquitto(dir.path());

    // 1. One browser on a device of many channels.
    let rpc = free_port();
    let gw_dir = dir.path().join("one");
    std::fs::create_dir_all(&gw_dir).unwrap();
    let gw = common::start_gateway(&gw_dir, &config(broker, rpc, 1, args.channels, "1s"));
    wait_port(rpc);
    let pid = gw.0.id();
    let url = format!("http://127.0.0.1:{rpc}/");
    std::thread::sleep(Duration::from_secs(5));
    let (mut idle, mut busy) = (Vec::new(), Vec::new());
    for run in 1..=args.runs {
        let (cpu, rss) = window(pid, args.secs);
        println!("run {run}: without a browser: CPU {cpu:.2} % of a core, RSS {rss:.1} MB");
        idle.push((cpu, rss));
        let mut child = Proc(
            Command::new(python())
                .arg(script())
                .args(["hold", &url, "/tmp/osgate-bench-console-shots"])
                .arg(format!("key={KEY}"))
                .arg("device=dev-0")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("run the browser script"),
        );
        let mut lines = BufReader::new(child.0.stdout.take().unwrap());
        let _ = common::wait_line(&mut lines, "ok ready");
        std::thread::sleep(Duration::from_secs(5));
        let (cpu, rss) = window(pid, args.secs);
        println!("run {run}: with a browser:    CPU {cpu:.2} % of a core, RSS {rss:.1} MB");
        busy.push((cpu, rss));
        drop(child.0.stdin.take());
        let rest: String = lines
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
            .join("\n");
        let _ = child.0.wait();
        if let Some(rows) = figures(&rest).get("rows") {
            println!("run {run}: the page showed {rows} channel rows");
        }
    }
    drop(gw);
    let med = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(v.iter().map(f).collect());
    let (ci, ri) = (med(&idle, |x| x.0), med(&idle, |x| x.1));
    let (cb, rb) = (med(&busy, |x| x.0), med(&busy, |x| x.1));
    println!(
        "median: without {ci:.2} % / {ri:.1} MB, with a browser {cb:.2} % / {rb:.1} MB: \
         +{:.2} % of a core, +{:.1} MB (RSS before any browser: {:.1} MB)",
        cb - ci,
        rb - ri,
        idle[0].1
    );

    // 2. The devices page with many devices.
    let rpc = free_port();
    let gw_dir = dir.path().join("many");
    std::fs::create_dir_all(&gw_dir).unwrap();
    let gw = common::start_gateway(&gw_dir, &config(broker, rpc, args.devices, 1, "5s"));
    wait_port(rpc);
    std::thread::sleep(Duration::from_secs(3));
    let url = format!("http://127.0.0.1:{rpc}/");
    let mut figs: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in 1..=args.runs {
        let f = browser(
            "devices",
            &url,
            &[
                ("key", KEY.to_string()),
                ("count", args.devices.to_string()),
            ],
        );
        println!("run {run}: devices page: {f:?}");
        for (k, v) in f {
            figs.entry(k).or_default().push(v);
        }
    }
    drop(gw);
    for (k, v) in figs {
        println!("median {k}: {:.1}", median(v));
    }
}
