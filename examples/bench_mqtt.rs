//! MQTT connector benchmark: a publisher floods a source mosquitto with Tasmota-shaped JSON
//! messages; how fast do they come out of osgate (MQTT connector → MQTT sink → a second
//! mosquitto), against a bare rumqttc subscriber reading the same flood from the same broker?
//!
//! Each run, in turn:
//! 1. **bare**: a rumqttc subscriber (QoS 1, like the connector) on the source broker; the
//!    publisher sends `--messages` messages at QoS 1 (in-flight window 100); the rate is
//!    messages received / time from the first publish to the last message received;
//! 2. **osgate ingest**: the release binary with one MQTT connector on the source broker (two
//!    channels per message by JSON pointer, the device from a topic capture, the timestamp from
//!    the payload); the rate at which messages become readings in the sink queue, counted by the
//!    gateway (`connectors.list` over JSON-RPC, polled every 50 ms). The sink's broker is absent,
//!    so the sink only buffers: the connector's own figure;
//! 3. **osgate to a broker**: the same with the MQTT sink (QoS 1, `format: device`) on a second
//!    mosquitto, where a subscriber counts the messages: the whole path, with a second broker
//!    and subscriber on the same 2 cores.
//!
//! Gateway CPU is utime+stime of the osgate process over the flood (from `/proc`).
//!
//! ```text
//! cargo build --release --bin osgate --example bench_mqtt
//! target/release/examples/bench_mqtt [--runs 3] [--messages 200000] [--devices 100]
//! ```
//! Needs `mosquitto` on the PATH. Every child process is killed when the benchmark ends.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;

mod common;
use common::{cpu_seconds, median, peak_rss_mb, start_mosquitto};

/// Options.
#[derive(Debug, Parser)]
struct Args {
    /// Number of runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Messages per flood.
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Devices the messages are spread over (topics `tele/dev-N/SENSOR`).
    #[arg(long, default_value_t = 100)]
    devices: u64,
    /// Internal: run as the bare subscriber process on this port (prints `ready` once
    /// subscribed and `done` at the `--messages`th message).
    #[arg(long, hide = true)]
    subscriber: Option<u16>,
}

/// A subscriber counting the messages on `filter` at `port`; returns the counter, the time
/// of the last message (ms since `t0`) and the handle that stops it (it must not go on
/// taking the floods of the later phases from the broker).
fn counter(
    rt: &tokio::runtime::Runtime,
    port: u16,
    id: &str,
    filter: &str,
    t0: Instant,
) -> Counted {
    let n = Arc::new(AtomicU64::new(0));
    let last = Arc::new(AtomicU64::new(0));
    let (n2, last2, filter, id) = (n.clone(), last.clone(), filter.to_string(), id.to_string());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let task = rt.spawn(async move {
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_inflight(100);
        let (client, mut el) = AsyncClient::new(opts, 100);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    n2.fetch_add(1, Ordering::Relaxed);
                    last2.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("subscribed");
    (n, last, task.abort_handle())
}

/// A count of messages, the time of the last one (ms since the phase's start), and the
/// handle that stops the task counting them.
type Counted = (Arc<AtomicU64>, Arc<AtomicU64>, tokio::task::AbortHandle);

/// A subscriber in a process of its own, as osgate is: `mosquitto_sub` (QoS 1, one line per
/// payload) or this benchmark as a bare rumqttc subscriber (`--subscriber`: `ready`, then
/// `done` at the last message). A thread of this process reads its lines; returns the process,
/// the count and the time of the last message (ms since `t0`) once it is subscribed (it said
/// `ready`, or a probe message came through).
fn subscriber_proc(
    rt: &tokio::runtime::Runtime,
    cmd: &mut std::process::Command,
    port: u16,
    expect: u64,
    t0: Instant,
) -> (common::Proc, Arc<AtomicU64>, Arc<AtomicU64>) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the subscriber");
    let out = child.stdout.take().expect("stdout");
    let n = Arc::new(AtomicU64::new(0));
    let last = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicU64::new(0));
    let (n2, last2, ready2) = (n.clone(), last.clone(), ready.clone());
    std::thread::spawn(move || {
        for line in std::io::BufReader::with_capacity(1 << 16, out).split(b'\n') {
            let Ok(line) = line else { break };
            if line == b"probe" || line == b"ready" {
                ready2.store(1, Ordering::Relaxed);
            } else if line == b"done" {
                n2.store(expect, Ordering::Relaxed);
                last2.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
            } else {
                n2.fetch_add(1, Ordering::Relaxed);
                last2.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
        }
    });
    let until = Instant::now() + Duration::from_secs(10);
    while ready.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < until, "the subscriber did not subscribe");
        rt.block_on(async {
            let opts = MqttOptions::new("bench-probe", "127.0.0.1", port);
            let (client, mut el) = AsyncClient::new(opts, 10);
            client
                .publish("tele/probe/SENSOR", QoS::AtLeastOnce, false, "probe")
                .await
                .expect("probe");
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                while !matches!(
                    el.poll().await,
                    Ok(Event::Incoming(Packet::PubAck(_))) | Err(_)
                ) {}
            })
            .await;
        });
    }
    (common::Proc(child), n, last)
}

/// `--subscriber`: a bare rumqttc subscriber (QoS 1, current-thread runtime) that counts
/// `n` messages on `tele/+/SENSOR` and says `ready` and `done` on stdout.
fn subscriber_process(port: u16, n: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let id = format!("bench-bare-proc-{}", std::process::id());
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_inflight(100);
        let (client, mut el) = AsyncClient::new(opts, 100);
        let mut count = 0;
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe("tele/+/SENSOR", QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => println!("ready"),
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic != "tele/probe/SENSOR" => {
                    count += 1;
                    if count == n {
                        println!("done");
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("subscriber: {e}"),
            }
        }
    });
}

/// Polls the gateway's connector counters over JSON-RPC every 50 ms (each answer lists every
/// device, so polling faster costs the gateway a measurable share of its CPU): messages ingested (two
/// readings each) and the time the count last changed (ms since `t0`).
fn ingested(rt: &tokio::runtime::Runtime, port: u16, t0: Instant) -> Counted {
    let n = Arc::new(AtomicU64::new(0));
    let last = Arc::new(AtomicU64::new(0));
    let (n2, last2) = (n.clone(), last.clone());
    let task = rt.spawn(async move {
        let client = reqwest::Client::new();
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "connectors.list"});
        loop {
            let r = client
                .post(format!("http://127.0.0.1:{port}/"))
                .bearer_auth("bench-key-0123456789")
                .json(&body)
                .send()
                .await;
            if let Ok(r) = r {
                if let Ok(v) = r.json::<serde_json::Value>().await {
                    let readings = v["result"][0]["counters"]["readings"].as_u64().unwrap_or(0);
                    let msgs = readings / 2;
                    if msgs != n2.load(Ordering::Relaxed) {
                        n2.store(msgs, Ordering::Relaxed);
                        last2.store(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (n, last, task.abort_handle())
}

/// Publishes `n` messages at QoS 1 over `devices` topics; returns when all are acknowledged.
fn flood(rt: &tokio::runtime::Runtime, port: u16, n: u64, devices: u64, offset: u64) {
    rt.block_on(async move {
        let mut opts = MqttOptions::new(format!("bench-pub-{offset}"), "127.0.0.1", port);
        opts.set_inflight(100);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(opts, 1000);
        let driver = tokio::spawn(async move {
            let mut acked = 0;
            while acked < n {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                    Ok(_) => {}
                    Err(e) => panic!("publisher: {e}"),
                }
            }
        });
        for i in 0..n {
            let t = 20.0 + (i % 100) as f64 / 10.0;
            let payload = format!(
                r#"{{"Time":"2026-12-01T10:{:02}:{:02}","AM2301":{{"Temperature":{t:.1},"Humidity":{}}},"TempUnit":"C"}}"#,
                (i / 60) % 60,
                i % 60,
                40 + i % 20
            );
            client
                .publish(
                    format!("tele/dev-{}/SENSOR", (i + offset) % devices),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                )
                .await
                .expect("publish");
        }
        driver.await.expect("publisher driver");
    });
}

/// Waits until `count` reaches `n` (or 60 s pass); returns the time of the last message.
fn wait_count(count: &AtomicU64, last: &AtomicU64, n: u64) -> Duration {
    let until = Instant::now() + Duration::from_secs(60);
    while count.load(Ordering::Relaxed) < n && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        count.load(Ordering::Relaxed) >= n,
        "only {} of {n} messages arrived",
        count.load(Ordering::Relaxed)
    );
    Duration::from_millis(last.load(Ordering::Relaxed))
}

struct Figures {
    bare: Measured,
    /// CPU-s per 100k messages of the bare subscriber alone: this process's CPU with it,
    /// less this process's CPU for the same flood without a subscriber.
    bare_cpu: f64,
    /// The same rumqttc subscriber in a process of its own.
    bare_proc: Measured,
    /// `mosquitto_sub` in a process of its own.
    sub: Measured,
    ingest: Measured,
    broker: Measured,
}

/// The gateway's config: the benchmark's connector, and `sink`.
fn config(sport: u16, run: usize, phase: &str, sink: serde_json::Value) -> serde_json::Value {
    json!({
        "gateway": {"id": "bench"},
        "sinks": [sink],
        "connectors": [{"name": "src", "protocol": "mqtt",
            "url": format!("mqtt://127.0.0.1:{sport}"),
            "client_id": format!("bench-osgate-{run}-{phase}"),
            "accept_new_devices": true,
            "mappings": [{"topic": "tele/{device}/SENSOR", "format": "json",
                "timestamp": {"pointer": "/Time", "format": "rfc3339"},
                "channels": [{"name": "temperature", "pointer": "/AM2301/Temperature", "unit": "°C"},
                             {"name": "humidity", "pointer": "/AM2301/Humidity", "unit": "%"}]}]}]
    })
}

/// Starts osgate on `cfg`, waits until every device has delivered (the connector has
/// subscribed), floods, and returns (messages/s, CPU-s per 100k messages, peak RSS).
fn measure_osgate(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    dir: &std::path::Path,
    name: &str,
    cfg: &serde_json::Value,
    (sport, broker_pid): (u16, u32),
    counted: impl FnOnce(&mut std::process::Child, Instant) -> Counted,
) -> Measured {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec(cfg).unwrap()).unwrap();
    let mut gw = common::spawn_gateway(&path, Stdio::piped());
    let pid = gw.0.id();
    let t0 = Instant::now();
    let (count, last, stop) = counted(&mut gw.0, t0);
    let until = Instant::now() + Duration::from_secs(30);
    while count.load(Ordering::Relaxed) < args.devices {
        assert!(Instant::now() < until, "osgate delivered nothing");
        flood(rt, sport, args.devices, args.devices, 0);
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(500));
    let base = count.load(Ordering::Relaxed);
    let cpu0 = [
        cpu_seconds(pid),
        cpu_seconds(std::process::id()),
        cpu_seconds(broker_pid),
    ];
    let start = t0.elapsed();
    flood(rt, sport, args.messages, args.devices, 0);
    let end = wait_count(&count, &last, base + args.messages);
    let per_100k = |cpu: f64| cpu / args.messages as f64 * 100_000.0;
    let m = Measured {
        per_s: args.messages as f64 / (end - start).as_secs_f64(),
        cpu: per_100k(cpu_seconds(pid) - cpu0[0]),
        bench_cpu: per_100k(cpu_seconds(std::process::id()) - cpu0[1]),
        broker_cpu: per_100k(cpu_seconds(broker_pid) - cpu0[2]),
        rss: peak_rss_mb(pid),
    };
    stop.abort();
    m
}

/// What one flood measured: messages/s, and CPU-s per 100k messages of the measured process,
/// of this benchmark's own process (the publisher, plus the bare subscriber or the counter)
/// and of the source broker.
struct Measured {
    per_s: f64,
    cpu: f64,
    bench_cpu: f64,
    broker_cpu: f64,
    rss: f64,
}

fn run_once(args: &Args, dir: &std::path::Path, run: usize) -> Figures {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (source, sport) = start_mosquitto(dir);
    let source_pid = source.0.id();

    // 0. the publisher alone (no subscriber): this process's CPU without a subscriber.
    let cpu0 = cpu_seconds(std::process::id());
    flood(&rt, sport, args.messages, args.devices, 0);
    let publisher_cpu = (cpu_seconds(std::process::id()) - cpu0) / args.messages as f64 * 1e5;

    // 1. bare subscriber
    let t0 = Instant::now();
    let (count, last, bare_sub) = counter(
        &rt,
        sport,
        &format!("bench-bare-{run}"),
        "tele/+/SENSOR",
        t0,
    );
    let start = t0.elapsed();
    let cpu0 = [cpu_seconds(std::process::id()), cpu_seconds(source_pid)];
    flood(&rt, sport, args.messages, args.devices, 0);
    let end = wait_count(&count, &last, args.messages);
    let per_100k = |cpu: f64| cpu / args.messages as f64 * 100_000.0;
    let bare = Measured {
        per_s: args.messages as f64 / (end - start).as_secs_f64(),
        cpu: 0.0,
        bench_cpu: per_100k(cpu_seconds(std::process::id()) - cpu0[0]),
        broker_cpu: per_100k(cpu_seconds(source_pid) - cpu0[1]),
        rss: 0.0,
    };
    let bare_cpu = (bare.bench_cpu - publisher_cpu).max(0.0);
    bare_sub.abort();

    // 1b. subscribers in processes of their own, as osgate is: the same rumqttc subscriber,
    //     and mosquitto_sub.
    let separate = |cmd: &mut std::process::Command| {
        let t0 = Instant::now();
        let (proc, count, last) = subscriber_proc(&rt, cmd, sport, args.messages, t0);
        let pid = proc.0.id();
        let start = t0.elapsed();
        let cpu0 = [cpu_seconds(pid), cpu_seconds(source_pid)];
        flood(&rt, sport, args.messages, args.devices, 0);
        let end = wait_count(&count, &last, args.messages);
        Measured {
            per_s: args.messages as f64 / (end - start).as_secs_f64(),
            cpu: per_100k(cpu_seconds(pid) - cpu0[0]),
            bench_cpu: 0.0,
            broker_cpu: per_100k(cpu_seconds(source_pid) - cpu0[1]),
            rss: 0.0,
        }
    };
    let exe = std::env::current_exe().expect("own path");
    let bare_proc = separate(std::process::Command::new(&exe).args([
        "--subscriber",
        &sport.to_string(),
        "--messages",
        &args.messages.to_string(),
    ]));
    let sub = separate(std::process::Command::new("mosquitto_sub").args([
        "-h",
        "127.0.0.1",
        "-p",
        &sport.to_string(),
        "-q",
        "1",
        "-i",
        &format!("bench-sub-{run}"),
        "-t",
        "tele/+/SENSOR",
    ]));

    // 2. osgate ingest: what the connector hands to the sink queue, counted by the gateway
    //    itself (`connectors.list` over JSON-RPC). The sink's broker is not there, so the sink
    //    only buffers: nothing downstream competes for the two cores.
    let rpc_port = common::free_port();
    let nowhere = common::free_port();
    let mut cfg = config(
        sport,
        run,
        "ingest",
        json!({"name": "local", "type": "mqtt", "url": format!("mqtt://127.0.0.1:{nowhere}"),
               "qos": 1, "format": "device", "status": false, "buffer": 10_000_000}),
    );
    cfg["rpc"] =
        json!({"listen": format!("127.0.0.1:{rpc_port}"), "api_keys": ["bench-key-0123456789"]});
    let ingest = measure_osgate(
        &rt,
        args,
        dir,
        &format!("ingest-{run}"),
        &cfg,
        (sport, source_pid),
        |_, t0| ingested(&rt, rpc_port, t0),
    );

    // 3. osgate into the MQTT sink on a second broker.
    let (_local, lport) = start_mosquitto(dir);
    let cfg = config(
        sport,
        run,
        "broker",
        json!({"name": "local", "type": "mqtt", "url": format!("mqtt://127.0.0.1:{lport}"),
               "qos": 1, "format": "device", "status": false}),
    );
    let broker = measure_osgate(
        &rt,
        args,
        dir,
        &format!("broker-{run}"),
        &cfg,
        (sport, source_pid),
        |_, t0| {
            counter(
                &rt,
                lport,
                &format!("bench-out-{run}"),
                "telemetry/bench/#",
                t0,
            )
        },
    );
    rt.shutdown_timeout(Duration::from_secs(1));
    Figures {
        bare,
        bare_cpu,
        bare_proc,
        sub,
        ingest,
        broker,
    }
}

fn main() {
    osgate::install_crypto_provider();
    let args = Args::parse();
    if let Some(port) = args.subscriber {
        return subscriber_process(port, args.messages);
    }
    let dir = tempfile::Builder::new()
        .prefix("osgate-bench-mqtt")
        .tempdir()
        .expect("temp dir");
    println!(
        "mqtt bench: {} Tasmota-shaped messages (2 channels each) over {} devices, QoS 1",
        args.messages, args.devices
    );
    let mut all = Vec::new();
    for i in 0..args.runs.max(1) {
        let f = run_once(&args, dir.path(), i);
        for (what, m) in [("bare process", &f.bare_proc), ("mosquitto_sub", &f.sub)] {
            println!(
                "  run {}: {what} {:.0} msgs/s, {:.3} CPU-s per 100k msgs, ingest {:.0} % and \
                 to a broker {:.0} % of it, source broker {:.3} CPU-s per 100k msgs",
                i + 1,
                m.per_s,
                m.cpu,
                f.ingest.per_s / m.per_s * 100.0,
                f.broker.per_s / m.per_s * 100.0,
                m.broker_cpu,
            );
        }
        println!(
            "  run {}: bare {:.0} msgs/s, {:.3} CPU-s per 100k msgs | ingest {:.0} msgs/s = {:.0} \
             readings/s ({:.0} % of bare), {:.3} CPU-s per 100k msgs, peak RSS {:.1} MB | to a \
             broker {:.0} msgs/s ({:.0} % of bare), {:.3} CPU-s per 100k msgs | source broker \
             {:.3} / {:.3} / {:.3} CPU-s per 100k msgs (bare / ingest / to a broker)",
            i + 1,
            f.bare.per_s,
            f.bare_cpu,
            f.ingest.per_s,
            f.ingest.per_s * 2.0,
            f.ingest.per_s / f.bare.per_s * 100.0,
            f.ingest.cpu,
            f.ingest.rss,
            f.broker.per_s,
            f.broker.per_s / f.bare.per_s * 100.0,
            f.broker.cpu,
            f.bare.broker_cpu,
            f.ingest.broker_cpu,
            f.broker.broker_cpu,
        );
        all.push(f);
    }
    let m = |f: &dyn Fn(&Figures) -> f64| median(all.iter().map(f).collect());
    type Pick = fn(&Figures) -> &Measured;
    let picks: [(&str, Pick); 2] = [
        ("bare process", |f| &f.bare_proc),
        ("mosquitto_sub", |f| &f.sub),
    ];
    for (what, pick) in picks {
        println!(
            "  median: {what} {:.0} msgs/s, {:.3} CPU-s per 100k msgs, ingest {:.0} % and to a \
             broker {:.0} % of it, source broker {:.3} CPU-s per 100k msgs",
            m(&|f| pick(f).per_s),
            m(&|f| pick(f).cpu),
            m(&|f| f.ingest.per_s / pick(f).per_s * 100.0),
            m(&|f| f.broker.per_s / pick(f).per_s * 100.0),
            m(&|f| pick(f).broker_cpu),
        );
    }
    println!(
        "  median: bare {:.0} msgs/s, {:.3} CPU-s per 100k msgs | ingest {:.0} msgs/s = {:.0} \
         readings/s, {:.0} % of bare, {:.3} CPU-s per 100k msgs, peak RSS {:.1} MB | to a broker \
         {:.0} msgs/s, {:.0} % of bare, {:.3} CPU-s per 100k msgs | source broker {:.3} / {:.3} / \
         {:.3} CPU-s per 100k msgs",
        m(&|f| f.bare.per_s),
        m(&|f| f.bare_cpu),
        m(&|f| f.ingest.per_s),
        m(&|f| f.ingest.per_s * 2.0),
        m(&|f| f.ingest.per_s / f.bare.per_s * 100.0),
        m(&|f| f.ingest.cpu),
        m(&|f| f.ingest.rss),
        m(&|f| f.broker.per_s),
        m(&|f| f.broker.per_s / f.bare.per_s * 100.0),
        m(&|f| f.broker.cpu),
        m(&|f| f.bare.broker_cpu),
        m(&|f| f.ingest.broker_cpu),
        m(&|f| f.broker.broker_cpu),
    );
}
