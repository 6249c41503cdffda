//! Pipeline benchmark: the simulator at full speed → MQTT sink → mosquitto, QoS 1.
//!
//! Measures, in one run and against the same mosquitto:
//! 1. a bare rumqttc publisher sending the same payloads at QoS 1 with the same in-flight
//!    window (the limit the broker and client allow), counting PUBACKs;
//! 2. osgate (the release binary) with the simulator as load generator, `reading` format;
//! 3. the same with `device` format (one message per batch);
//! 4. osgate on `osgate.json.example` (embedded broker) for its resident memory.
//!
//! For osgate it reports readings/s delivered (acknowledged by the broker, from the sink's own
//! counters logged at stop), gateway CPU-seconds per 100k readings (from /proc) and peak RSS
//! (VmHWM). Run: `cargo build --release && cargo run --release --example bench_pipeline -- 60`
//! (argument: seconds per phase, default 60). Needs `mosquitto` on the PATH. See BENCHMARKS.md.
//!
//! `bench_pipeline config reading|device|idle PORT` prints a phase's gateway config for a broker
//! on PORT instead (`idle`: the `reading` config polled once an hour), to run the gateway by hand,
//! e.g. under `valgrind --tool=callgrind` for instruction counts per reading.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

mod common;
use common::{bin_dir, cpu_seconds, free_port, peak_rss_mb};

const INFLIGHT: u16 = 100;

/// CPU seconds (user + system) and peak RSS (kB) of a process.
fn proc_usage(pid: u32) -> (f64, u64) {
    (cpu_seconds(pid), (peak_rss_mb(pid) * 1024.0) as u64)
}

fn payload(i: u64) -> Vec<u8> {
    format!(
        "{{\"ts\":{},\"value\":{:.3},\"unit\":\"V\",\"quality\":\"good\"}}",
        1_795_000_000_000u64 + i,
        (i % 1000) as f64 * 0.123
    )
    .into_bytes()
}

/// Phase 1: a bare rumqttc publisher at QoS 1. Returns messages acknowledged per second and
/// this process's CPU-seconds per 100k of them (it runs nothing else meanwhile).
fn bare_rumqttc(port: u16, secs: u64) -> (f64, f64) {
    let cpu0 = cpu_seconds(std::process::id());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut o = MqttOptions::new("bench-bare", "127.0.0.1", port);
        o.set_inflight(INFLIGHT);
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = AsyncClient::new(o, INFLIGHT as usize * 2);
        let acked = Arc::new(AtomicU64::new(0));
        let a = acked.clone();
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(e) => panic!("bare publisher: {e}"),
                }
            }
        });
        let topics: Vec<String> = (0..5000)
            .map(|i| format!("telemetry/bench/d{}/c{}", i / 100, i % 100))
            .collect();
        let start = Instant::now();
        let end = start + Duration::from_secs(secs);
        let mut i = 0u64;
        while Instant::now() < end {
            let t = topics[(i % 5000) as usize].clone();
            client
                .publish(t, QoS::AtLeastOnce, false, payload(i))
                .await
                .unwrap();
            i += 1;
        }
        let n = acked.load(Ordering::Relaxed) as f64;
        let cpu = cpu_seconds(std::process::id()) - cpu0;
        (n / start.elapsed().as_secs_f64(), cpu / (n / 100_000.0))
    })
}

struct GwResult {
    rate: f64,
    cpu_per_100k: f64,
    rss_kb: u64,
}

/// Runs osgate on `config` for `secs`, then SIGTERM; reads the sink's final counters.
fn run_osgate(dir: &Path, config: &serde_json::Value, secs: u64) -> GwResult {
    let path = dir.join("bench.json");
    std::fs::write(&path, serde_json::to_vec(config).unwrap()).unwrap();
    let mut child = Command::new(bin_dir().join("osgate"))
        .arg("-c")
        .arg(&path)
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Measure from the first connection to the broker.
    let mut lines = Vec::new();
    let connected = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("osgate connected");
        let c = l.contains("connected to broker");
        lines.push(l);
        if c {
            break Instant::now();
        }
    };
    std::thread::sleep(Duration::from_secs(secs));
    let (_, rss) = proc_usage(pid);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    // Everything accepted before SIGTERM is acknowledged before exit: measure up to the exit
    // (the process is a zombie then, and /proc still has its CPU times).
    let cpu = loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.rsplit_once(") ").is_none_or(|x| x.1.starts_with('Z')) {
            break proc_usage(pid).0;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = connected.elapsed().as_secs_f64();
    let status = child.wait().unwrap();
    lines.extend(rx.try_iter());
    let summary = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|j| {
            j["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("sink stopped"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no sink summary (exit {status}); log:\n{}",
                lines.join("\n")
            )
        });
    let acked = summary["acked"].as_u64().unwrap() as f64;
    GwResult {
        rate: acked / elapsed,
        cpu_per_100k: cpu / (acked / 100_000.0),
        rss_kb: rss,
    }
}

fn sim_config(port: u16, format: &str) -> serde_json::Value {
    sim_config_every(port, format, "1ms")
}

fn sim_config_every(port: u16, format: &str, interval: &str) -> serde_json::Value {
    let devices: Vec<serde_json::Value> = (0..50)
        .map(|d| {
            serde_json::json!({"name": format!("d{d}"), "interval": interval, "channels":
                (0..100).map(|c| serde_json::json!({"name": format!("c{c}"), "signal": "sawtooth", "min": 0, "max": 1000, "period": "10s"})).collect::<Vec<_>>()})
        })
        .collect();
    serde_json::json!({
        "gateway": {"id": "bench", "shutdown_timeout": "30s"},
        "sinks": [{"name": "local", "type": "mqtt", "url": format!("mqtt://127.0.0.1:{port}"),
                   "qos": 1, "format": format, "inflight": INFLIGHT}],
        "connectors": [{"name": "sim", "protocol": "simulator", "devices": devices}]
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("config") {
        let port = args
            .get(3)
            .and_then(|p| p.parse().ok())
            .expect("config FORMAT PORT");
        let config = match args.get(2).map(String::as_str) {
            Some("idle") => sim_config_every(port, "reading", "1h"),
            Some(format @ ("reading" | "device")) => sim_config(port, format),
            other => panic!("config reading|device|idle PORT, not {other:?}"),
        };
        println!("{config}");
        return;
    }
    let secs: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    let (_mosq, port) = common::start_mosquitto(dir.path());
    println!(
        "phase length {secs} s, mosquitto on 127.0.0.1:{port}, QoS 1, in-flight window {INFLIGHT}"
    );

    let (bare, bare_cpu) = bare_rumqttc(port, secs);
    println!(
        "bare rumqttc publisher:   {bare:>10.0} msgs/s acknowledged, {bare_cpu:.3} CPU-s per 100k msgs"
    );

    let r = run_osgate(dir.path(), &sim_config(port, "reading"), secs);
    println!(
        "osgate, reading format:   {:>10.0} readings/s acknowledged ({:.0}% of bare), {:.3} CPU-s per 100k readings, peak RSS {:.1} MB",
        r.rate,
        100.0 * r.rate / bare,
        r.cpu_per_100k,
        r.rss_kb as f64 / 1024.0
    );
    let d = run_osgate(dir.path(), &sim_config(port, "device"), secs);
    println!(
        "osgate, device format:    {:>10.0} readings/s acknowledged ({:.0} msgs/s), {:.3} CPU-s per 100k readings, peak RSS {:.1} MB",
        d.rate,
        d.rate / 100.0,
        d.cpu_per_100k,
        d.rss_kb as f64 / 1024.0
    );

    // Resident memory on the example config (embedded broker on a free port).
    let mut example: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("osgate.json.example"),
        )
        .unwrap(),
    )
    .unwrap();
    let ep = free_port();
    example["broker"]["embedded"]["listen"] = serde_json::json!(format!("127.0.0.1:{ep}"));
    example["sinks"][0]["url"] = serde_json::json!(format!("mqtt://127.0.0.1:{ep}"));
    let e = run_osgate(dir.path(), &example, secs.min(20));
    println!(
        "osgate, example config:   peak RSS {:.1} MB",
        e.rss_kb as f64 / 1024.0
    );
}
