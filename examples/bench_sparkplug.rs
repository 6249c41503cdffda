//! Sparkplug B sink benchmark: 100 devices × 100 channels of the simulator at full speed, once
//! through the MQTT sink in `device` format and once through the Sparkplug B sink, each to the
//! same mosquitto, QoS 1, in-flight 100.
//!
//! Every channel is a sine of its own period, so every value changes at every poll and
//! Sparkplug's DDATA carries all 100 metrics of a device, like the `device` format's message:
//! the same work, the encoding and the protocol apart. The simulator polls every 1 ms, far more
//! than can be delivered, so backpressure sets the pace.
//!
//! A subscriber in this process counts what arrives: for `device`, the messages, for Sparkplug,
//! the DDATA messages; every 64th is decoded (JSON, or protobuf with osgate's schema) for the
//! number of values per message (100 when every value changes).
//! After a warm-up of 3 s, for `--secs` seconds: metrics/s and messages/s arriving, and the
//! gateway's CPU (utime+stime from `/proc`) per metric.
//!
//! ```text
//! cargo build --release --bin osgate --example bench_sparkplug
//! target/release/examples/bench_sparkplug [--runs 3] [--secs 20]
//! ```
//! Needs `mosquitto` on the PATH. Every child process is killed when the benchmark ends.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use prost::Message as _;
use serde_json::json;

mod common;
use common::{cpu_seconds, median, start_gateway, start_mosquitto};

use osgate::sinks::sparkplug::proto::Payload;

/// Options.
#[derive(Debug, Parser)]
struct Args {
    /// Number of runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds measured per phase (after a 3 s warm-up).
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Devices.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Channels per device.
    #[arg(long, default_value_t = 100)]
    channels: usize,
}

/// Messages that arrived, and the values of the messages sampled.
#[derive(Default)]
struct Counts {
    messages: AtomicU64,
    sampled: AtomicU64,
    metrics: AtomicU64,
}

/// Subscribes to `filter` and counts messages and values; `sparkplug` decodes Sparkplug B
/// payloads, else the `device` format's JSON.
fn subscribe(
    rt: &tokio::runtime::Runtime,
    port: u16,
    filter: &str,
    sparkplug: bool,
) -> Arc<Counts> {
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    let filter = filter.to_string();
    rt.spawn(async move {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let mut opts = MqttOptions::new(format!("bench-sub-{sparkplug}"), "127.0.0.1", port);
        opts.set_max_packet_size(1 << 24, 1 << 24);
        let (client, mut el) = AsyncClient::new(opts, 100);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(filter.as_str(), QoS::AtMostOnce);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if sparkplug && !p.topic.contains("/DDATA/") {
                        continue;
                    }
                    // Decoding every message would make this subscriber the bottleneck (the
                    // broker buffers for a slow subscriber, it does not slow the gateway):
                    // every 64th message is decoded and its values counted, and the count of
                    // values is the messages times the values per message seen.
                    let n = c.messages.fetch_add(1, Relaxed);
                    if n % 64 == 0 {
                        let values = if sparkplug {
                            Payload::decode(&p.payload[..]).map_or(0, |x| x.metrics.len() as u64)
                        } else {
                            serde_json::from_slice::<serde_json::Value>(&p.payload)
                                .ok()
                                .and_then(|v| v["values"].as_object().map(|o| o.len() as u64))
                                .unwrap_or(0)
                        };
                        c.sampled.fetch_add(1, Relaxed);
                        c.metrics.fetch_add(values, Relaxed);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    counts
}

struct Figures {
    metrics_per_s: f64,
    messages_per_s: f64,
    cpu_us_per_metric: f64,
}

fn phase(args: &Args, port: u16, sparkplug: bool) -> Figures {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gw = format!("bench-{}", if sparkplug { "sp" } else { "dev" });
    let url = format!("mqtt://127.0.0.1:{port}");
    let sink = if sparkplug {
        json!({"name": "sp", "type": "sparkplug", "url": url, "group_id": "bench",
               "inflight": 100, "state_dir": dir.path()})
    } else {
        json!({"name": "mq", "type": "mqtt", "url": url, "qos": 1, "format": "device",
               "inflight": 100})
    };
    let devices: Vec<_> = (0..args.devices)
        .map(|d| {
            let channels: Vec<_> = (0..args.channels)
                .map(|c| {
                    json!({"name": format!("ch{c}"), "signal": "sine",
                                "period": format!("{}s", 7 + c), "unit": "V"})
                })
                .collect();
            json!({"name": format!("dev{d}"), "interval": "1ms", "channels": channels})
        })
        .collect();
    let cfg = json!({
        "gateway": {"id": gw},
        "telemetry": {"enabled": false},
        "sinks": [sink],
        "connectors": [{"name": "sim", "protocol": "simulator", "devices": devices}]
    });
    let filter = if sparkplug {
        "spBv1.0/bench/#".to_string()
    } else {
        format!("telemetry/{gw}/#")
    };
    let counts = subscribe(&rt, port, &filter, sparkplug);
    std::thread::sleep(Duration::from_millis(300));
    let proc = start_gateway(dir.path(), &cfg);
    let pid = proc.0.id();
    std::thread::sleep(Duration::from_secs(3));
    let (n0, c0, t0) = (
        counts.messages.load(Relaxed),
        cpu_seconds(pid),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(args.secs));
    let (n1, c1, t1) = (
        counts.messages.load(Relaxed),
        cpu_seconds(pid),
        Instant::now(),
    );
    drop(proc);
    rt.shutdown_timeout(Duration::from_secs(1));
    let dt = (t1 - t0).as_secs_f64();
    let per_message =
        counts.metrics.load(Relaxed) as f64 / counts.sampled.load(Relaxed).max(1) as f64;
    let metrics = (n1 - n0) as f64 * per_message;
    Figures {
        metrics_per_s: metrics / dt,
        messages_per_s: (n1 - n0) as f64 / dt,
        cpu_us_per_metric: (c1 - c0) * 1e6 / metrics.max(1.0),
    }
}

fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().unwrap();
    let (_mosquitto, port) = start_mosquitto(dir.path());
    let mut rows: Vec<(&str, Vec<Figures>)> =
        vec![("device", Vec::new()), ("sparkplug", Vec::new())];
    for run in 1..=args.runs {
        for (name, figs) in rows.iter_mut() {
            let f = phase(&args, port, *name == "sparkplug");
            println!(
                "run {run} {name:>9}: {:>10.0} metrics/s {:>8.0} msgs/s {:>6.3} µs CPU per metric",
                f.metrics_per_s, f.messages_per_s, f.cpu_us_per_metric
            );
            figs.push(f);
        }
    }
    println!("median of {} runs:", args.runs);
    for (name, figs) in &rows {
        println!(
            "{name:>9}: {:>10.0} metrics/s {:>8.0} msgs/s {:>6.3} µs CPU per metric",
            median(figs.iter().map(|f| f.metrics_per_s).collect()),
            median(figs.iter().map(|f| f.messages_per_s).collect()),
            median(figs.iter().map(|f| f.cpu_us_per_metric).collect()),
        );
    }
}
