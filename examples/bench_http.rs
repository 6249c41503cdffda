//! HTTP ingest benchmark: HTTP clients → osgate (HTTP listener → MQTT sink) → mosquitto → a
//! counting subscriber, side by side with a minimal hyper server that only parses the same
//! bodies (the limit of HTTP + JSON on this machine), in one run.
//!
//! Each request is `POST /ingest/bench` with a list of `--objects` objects of `--channels`
//! numbers and a `ts` (default 10 × 20 = 200 readings), sent by `--clients` concurrent
//! keep-alive clients as fast as they are answered. For each run it reports, for the gateway:
//! requests/s answered 202, readings/s accepted, readings/s delivered (counted by the
//! subscriber), gateway CPU-seconds per 100k readings and its peak RSS; for the bare server:
//! requests/s, readings/s parsed, CPU-seconds per 100k readings; then the median of the runs.
//! Both servers run as their own processes (the bare one is this binary with `--bare PORT`), so
//! /proc gives each one's CPU; the load generator runs in this process.
//!
//! ```text
//! cargo build --release --bin osgate --example bench_http
//! target/release/examples/bench_http [--runs 3] [--secs 10] [--clients 8] [--objects 10]
//!                                    [--channels 20] [--format device|reading]
//! ```
//! Needs `mosquitto` on the PATH. Every child process is killed when the benchmark ends.

mod common;

use std::convert::Infallible;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use common::{cpu_seconds, free_port, median, peak_rss_mb, wait_port, Proc};
use http_body_util::{BodyExt, Full};
use serde_json::json;

/// Options.
#[derive(Debug, Parser)]
struct Args {
    /// Number of runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Measured seconds per server and run (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Concurrent clients (keep-alive connections).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Objects per request body.
    #[arg(long, default_value_t = 10)]
    objects: usize,
    /// Numbers per object (the device's channels).
    #[arg(long, default_value_t = 20)]
    channels: usize,
    /// MQTT sink format: `device` (one message per batch) or `reading` (one per value).
    #[arg(long, default_value = "device")]
    format: String,
    /// Internal: serve the bare parser on this port and nothing else.
    #[arg(long, hide = true)]
    bare: Option<u16>,
}

/// The bare server: hyper, the body collected and parsed as JSON, 202. Nothing else.
fn serve_bare(port: u16) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let _ = sock.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let n = body
                            .ok()
                            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                            .and_then(|v| v.as_array().map(Vec::len))
                            .unwrap_or(0);
                        let mut r = hyper::Response::new(Full::new(Bytes::from(format!(
                            "{{\"accepted\":{n}}}"
                        ))));
                        *r.status_mut() = hyper::StatusCode::ACCEPTED;
                        Ok::<_, Infallible>(r)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                    .await;
            });
        }
    });
}

/// Request bodies: `n` different ones, so nothing is cached anywhere.
fn bodies(args: &Args, n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|b| {
            let items: Vec<_> = (0..args.objects)
                .map(|o| {
                    let mut obj = serde_json::Map::new();
                    for c in 0..args.channels {
                        obj.insert(
                            format!("c{c}"),
                            json!((b * 1000 + o * 10 + c) as f64 / 10.0),
                        );
                    }
                    obj.insert(
                        "ts".into(),
                        json!(1_790_000_000_000i64 + (b * 100 + o) as i64),
                    );
                    serde_json::Value::Object(obj)
                })
                .collect();
            Bytes::from(serde_json::Value::Array(items).to_string())
        })
        .collect()
}

#[derive(Default)]
struct Load {
    ok: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
}

/// Posts from `clients` tasks until `stop`; counts the answers.
fn start_load(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    url: String,
    stop: Arc<AtomicBool>,
) -> Arc<Load> {
    let load = Arc::new(Load::default());
    let bodies = Arc::new(bodies(args, 64));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()
        .expect("client");
    for i in 0..args.clients {
        let (load, bodies, client, url, stop) = (
            load.clone(),
            bodies.clone(),
            client.clone(),
            url.clone(),
            stop.clone(),
        );
        rt.spawn(async move {
            let mut k = i;
            while !stop.load(Relaxed) {
                k = (k + 1) % bodies.len();
                let r = client
                    .post(&url)
                    .header("x-api-key", "bench-key")
                    .header("content-type", "application/json")
                    .body(bodies[k].clone())
                    .send()
                    .await;
                let c = match r.as_ref().map(|r| r.status().as_u16()) {
                    Ok(202) => &load.ok,
                    Ok(503) => &load.refused,
                    _ => &load.failed,
                };
                c.fetch_add(1, Relaxed);
                if let Ok(r) = r {
                    let _ = r.bytes().await;
                }
            }
        });
    }
    load
}

#[derive(Debug, Clone, Copy)]
struct Side {
    requests_per_s: f64,
    readings_per_s: f64,
    delivered_per_s: f64,
    refused_per_s: f64,
    cpu_s_per_100k: f64,
    cpu_share: f64,
    peak_rss_mb: f64,
}

/// Loads `url` for the measured time; the server is process `pid`; `delivered` counts what
/// came out the far end (if anything).
fn measure(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    url: String,
    pid: u32,
    delivered: &AtomicU64,
) -> Side {
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(rt, args, url, stop.clone());
    std::thread::sleep(Duration::from_secs(2));
    let per = (args.objects * args.channels) as f64;
    let (q0, x0, d0, c0, t0) = (
        load.ok.load(Relaxed),
        load.refused.load(Relaxed),
        delivered.load(Relaxed),
        cpu_seconds(pid),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(args.secs));
    let (q1, x1, d1, c1, secs) = (
        load.ok.load(Relaxed),
        load.refused.load(Relaxed),
        delivered.load(Relaxed),
        cpu_seconds(pid),
        t0.elapsed().as_secs_f64(),
    );
    stop.store(true, Relaxed);
    assert_eq!(load.failed.load(Relaxed), 0, "requests failed");
    let readings = (q1 - q0) as f64 * per;
    let cpu = c1 - c0;
    Side {
        requests_per_s: (q1 - q0) as f64 / secs,
        readings_per_s: readings / secs,
        delivered_per_s: (d1 - d0) as f64 / secs,
        refused_per_s: (x1 - x0) as f64 / secs,
        cpu_s_per_100k: if readings > 0.0 {
            cpu / readings * 100_000.0
        } else {
            f64::NAN
        },
        cpu_share: cpu / secs,
        peak_rss_mb: peak_rss_mb(pid),
    }
}

fn run_once(args: &Args, dir: &Path) -> (Side, Side) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    osgate::install_crypto_provider();

    let (_mosquitto, mport) = common::start_mosquitto(dir);

    // gateway
    let port = free_port();
    let channels: Vec<_> = (0..args.channels)
        .map(|c| json!({"name": format!("c{c}")}))
        .collect();
    let config = json!({
        "gateway": {"id": "bench"},
        "sinks": [{"name": "local", "type": "mqtt", "url": format!("mqtt://127.0.0.1:{mport}"),
                   "qos": 1, "format": args.format, "status": false}],
        "connectors": [{"name": "ingest", "protocol": "http", "mode": "listen",
                        "listen": format!("127.0.0.1:{port}"), "api_keys": ["bench-key"],
                        "devices": [{"name": "bench", "channels": channels}]}]
    });
    let gw = common::start_gateway(dir, &config);
    wait_port(port);

    let delivered = common::count_readings(&rt, mport, "bench", args.format != "device");
    let url = format!("http://127.0.0.1:{port}/ingest/bench");
    let gateway = measure(&rt, args, url, gw.0.id(), &delivered);
    drop(gw);

    // the bare parser
    let bport = free_port();
    let bare = Proc(
        Command::new(std::env::current_exe().expect("exe"))
            .args(["--bare", &bport.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the bare server"),
    );
    wait_port(bport);
    let none = AtomicU64::new(0);
    let url = format!("http://127.0.0.1:{bport}/ingest/bench");
    let bare_side = measure(&rt, args, url, bare.0.id(), &none);
    rt.shutdown_timeout(Duration::from_secs(1));
    (gateway, bare_side)
}

fn main() {
    let args = Args::parse();
    if let Some(port) = args.bare {
        return serve_bare(port);
    }
    let dir = tempfile::Builder::new()
        .prefix("osgate-bench")
        .tempdir()
        .expect("temp dir");
    println!(
        "http ingest bench: {} clients, {} objects x {} numbers = {} readings per request, \
         format {}, {} s per server and run",
        args.clients,
        args.objects,
        args.channels,
        args.objects * args.channels,
        args.format,
        args.secs
    );
    let mut runs = Vec::new();
    for i in 0..args.runs.max(1) {
        let (g, b) = run_once(&args, dir.path());
        println!(
            "  run {}: gateway {:.0} req/s, {:.0} readings/s accepted, {:.0} delivered, \
             {:.0} refused (503)/s, {:.3} CPU-s per 100k readings ({:.0}% of one core), \
             peak RSS {:.1} MB | bare hyper+serde_json {:.0} req/s, {:.0} readings/s, \
             {:.3} CPU-s per 100k ({:.0}% of one core)",
            i + 1,
            g.requests_per_s,
            g.readings_per_s,
            g.delivered_per_s,
            g.refused_per_s,
            g.cpu_s_per_100k,
            g.cpu_share * 100.0,
            g.peak_rss_mb,
            b.requests_per_s,
            b.readings_per_s,
            b.cpu_s_per_100k,
            b.cpu_share * 100.0
        );
        let _ = std::io::stdout().flush();
        runs.push((g, b));
    }
    let m = |f: &dyn Fn(&(Side, Side)) -> f64| median(runs.iter().map(f).collect());
    println!(
        "  median: gateway {:.0} req/s, {:.0} readings/s accepted, {:.0} delivered, \
         {:.3} CPU-s per 100k readings, peak RSS {:.1} MB | bare {:.0} req/s, \
         {:.0} readings/s, {:.3} CPU-s per 100k",
        m(&|r| r.0.requests_per_s),
        m(&|r| r.0.readings_per_s),
        m(&|r| r.0.delivered_per_s),
        m(&|r| r.0.cpu_s_per_100k),
        m(&|r| r.0.peak_rss_mb),
        m(&|r| r.1.requests_per_s),
        m(&|r| r.1.readings_per_s),
        m(&|r| r.1.cpu_s_per_100k),
    );
}
