//! Helpers the end-to-end benchmarks share (`mod common;` in each benchmark): child processes
//! that are killed on drop, free ports, a process's CPU time and peak RSS from /proc, medians.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// Kills and reaps a child when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where the `osgate` binary under test is: `$OSGATE_BIN_DIR` when set (e.g. `target/dist`
/// to measure the shipped build with benchmarks built by `--release`), otherwise the target
/// dir of the running example (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("OSGATE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    examples_dir()
}

/// The target dir of the running example (`target/<profile>`), where its sibling examples
/// (`examples/modbus_sim`) are.
pub fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/examples/<bench> → target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits (up to 10 s) until something accepts connections on `port`.
pub fn wait_port(port: u16) {
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
    // CLK_TCK is 100 on Linux for all practical purposes.
    ticks / 100.0
}

/// Peak resident set size of a process, in MB.
pub fn peak_rss_mb(pid: u32) -> f64 {
    status_kb(pid, "VmHWM:") / 1024.0
}

/// Current resident set size of a process, in MB.
pub fn rss_mb(pid: u32) -> f64 {
    status_kb(pid, "VmRSS:") / 1024.0
}

/// A `kB` field of `/proc/<pid>/status` (`VmHWM:`, `VmRSS:`…); 0 when absent.
fn status_kb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// The median (of a non-empty list).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Starts mosquitto on a free loopback port (config in `dir`, no persistence, no queue
/// limits); returns it and its port once it listens.
pub fn start_mosquitto(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_queued_messages 0\nmax_inflight_messages 0\nuser root\n"
        ),
    )
    .expect("write mosquitto.conf");
    let p = Proc(
        std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn mosquitto (is it installed?)"),
    );
    wait_port(port);
    (p, port)
}

/// Subscribes (on `rt`) to `telemetry/{gateway}/#` on the broker at `port` and counts the
/// readings that arrive: one per message, or with `per_message` false (the `device` format)
/// the number of values in each message.
pub fn count_readings(
    rt: &tokio::runtime::Runtime,
    port: u16,
    gateway: &str,
    per_message: bool,
) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
    use std::sync::atomic::Ordering::Relaxed;
    let readings = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = readings.clone();
    let filter = format!("telemetry/{gateway}/#");
    rt.spawn(async move {
        use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
        let mut opts = MqttOptions::new("bench-sub", "127.0.0.1", port);
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(opts, 100);
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client.try_subscribe(filter.as_str(), QoS::AtMostOnce);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let n = if per_message {
                        1
                    } else {
                        serde_json::from_slice::<serde_json::Value>(&p.payload)
                            .ok()
                            .and_then(|v| v["values"].as_object().map(|o| o.len() as u64))
                            .unwrap_or(0)
                    };
                    count.fetch_add(n, Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    readings
}

/// Writes `config` to `dir/osgate.json` and starts the release gateway on it (logging warnings
/// only, to nowhere).
pub fn start_gateway(dir: &Path, config: &serde_json::Value) -> Proc {
    let path = dir.join("osgate.json");
    std::fs::write(&path, config.to_string()).expect("write config");
    spawn_gateway(&path, std::process::Stdio::null())
}

/// Starts the gateway under test ([`bin_dir`]) on the config file at `path`, logging warnings
/// only, to nowhere; its standard output goes to `stdout`.
pub fn spawn_gateway(path: &Path, stdout: std::process::Stdio) -> Proc {
    Proc(
        std::process::Command::new(bin_dir().join("osgate"))
            .arg("-c")
            .arg(path)
            .env("RUST_LOG", "warn")
            .stdout(stdout)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn osgate (build it with --release, or set OSGATE_BIN_DIR)"),
    )
}

/// Reads lines from a child's output until one starts with `prefix`; returns its rest.
pub fn wait_line(r: &mut impl std::io::BufRead, prefix: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).expect("read child output") == 0 {
            panic!("child exited before printing {prefix}");
        }
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest.trim().to_string();
        }
    }
}

/// utime + stime of this process's children that have been waited for (a build: cargo and
/// every rustc it ran), in seconds.
pub fn children_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("proc stat");
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[13].parse::<f64>().unwrap_or(0.0) + f[14].parse::<f64>().unwrap_or(0.0)) / 100.0
}
