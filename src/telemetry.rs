//! Self-telemetry: the gateway's own figures as readings of device `_gateway`, published every
//! `telemetry.interval` through the sinks like any other reading (so they are persisted and
//! bridged with the rest): `telemetry/{gateway}/_gateway/{metric}`.
//!
//! Metrics (channel names; each a topic level):
//! - `cpu_percent` (`%`): process CPU time (user + system, `/proc/self/stat`) over wall time
//!   since the previous publication, in percent of one core (a busy 4-core gateway shows 400).
//! - `memory_rss_bytes` (`B`): resident memory (`VmRSS` of `/proc/self/status`).
//! - `disk_free_bytes` (`B`): space available to osgate on the filesystem of the state
//!   directory (`telemetry.disk_path`, else `$STATE_DIRECTORY`, else the working directory).
//! - `net_rx_bytes`, `net_tx_bytes` (`B`): bytes received and sent since boot, summed over
//!   every interface but loopback (`/proc/net/dev`).
//! - `load_1m`: the host's 1-minute load average (`/proc/loadavg`).
//! - `uptime_seconds` (`s`): time since the gateway started.
//! - `connector.{name}.{counter}` and `sink.{name}.{counter}`: the counters `gateway.status`
//!   returns, by the same names (`connector.plc.readings`, `connector.plc.errors`,
//!   `sink.local.acked`, `sink.local.connected`…).
//!
//! Reading `/proc` costs a few small file reads per interval and never panics: a file that is
//! missing or unreadable skips its metric, with one warning per metric for the process's life.
//! The same readers feed `GET /metrics` ([`crate::rpc::metrics`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::config::{GatewayConfig, TELEMETRY_DEVICE};
use crate::pipeline::{Envelope, ReadingSender};
use crate::reading::{Batch, Quality, Reading, Timestamp, Value};
use crate::status::StatusRegistry;

/// Process CPU time (user + system) in seconds since the process started.
pub fn cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    let ticks = parse_stat_ticks(&text)?;
    let hz = rustix::param::clock_ticks_per_second();
    (hz > 0).then(|| ticks as f64 / hz as f64)
}

/// Resident memory of this process in bytes.
pub fn rss_bytes() -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// Bytes available to an unprivileged user on the filesystem holding `path`.
pub fn disk_free_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Bytes received and sent since boot, summed over every interface except loopback.
pub fn net_bytes() -> Option<(u64, u64)> {
    parse_net_dev(&std::fs::read_to_string("/proc/net/dev").ok()?)
}

/// The host's 1-minute load average.
pub fn load_1m() -> Option<f64> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

/// utime + stime (clock ticks) from `/proc/self/stat`; fields are counted after the command
/// name's closing parenthesis, since the name itself may hold spaces and parentheses.
fn parse_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ")": state is field 3 of proc(5); utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS:   1234 kB` → bytes.
fn parse_vm_rss(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line["VmRSS:".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Sums receive and transmit bytes of `/proc/net/dev`, loopback left out.
fn parse_net_dev(text: &str) -> Option<(u64, u64)> {
    let mut rx = 0u64;
    let mut tx = 0u64;
    let mut seen = false;
    for line in text.lines().skip(2) {
        let Some((iface, data)) = line.split_once(':') else {
            continue;
        };
        if iface.trim() == "lo" {
            seen = true;
            continue;
        }
        let f: Vec<&str> = data.split_ascii_whitespace().collect();
        // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit.
        let (Some(r), Some(t)) = (f.first(), f.get(8)) else {
            continue;
        };
        let (Ok(r), Ok(t)) = (r.parse::<u64>(), t.parse::<u64>()) else {
            continue;
        };
        rx = rx.saturating_add(r);
        tx = tx.saturating_add(t);
        seen = true;
    }
    seen.then_some((rx, tx))
}

/// First field of `/proc/loadavg`.
fn parse_loadavg(text: &str) -> Option<f64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// The directory whose filesystem `disk_free_bytes` reports.
fn disk_path(cfg: &GatewayConfig) -> PathBuf {
    if let Some(p) = &cfg.telemetry.disk_path {
        return p.clone();
    }
    // systemd sets STATE_DIRECTORY (several paths are separated by ':').
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .map(PathBuf::from)
        })
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// What the telemetry task reads and where it sends.
pub struct TelemetryContext {
    /// The configuration in force (interval, gateway id, disk path), current across reloads.
    pub config: Arc<ArcSwap<GatewayConfig>>,
    /// The counters published as `connector.…` and `sink.…`.
    pub registry: Arc<StatusRegistry>,
    /// The fan-out to the sinks.
    pub out: ReadingSender,
    /// When the gateway started (ms since the epoch, as in `gateway.status`).
    pub started: i64,
    /// Ends the task.
    pub shutdown: CancellationToken,
}

/// Takes one set of figures at a time; remembers the previous CPU sample for the percentage
/// and which metrics were already reported missing.
struct Sampler {
    cpu: Option<(f64, Instant)>,
    warned: Vec<&'static str>,
    device: Arc<str>,
    percent: Arc<str>,
    bytes: Arc<str>,
    seconds: Arc<str>,
}

impl Sampler {
    fn new() -> Self {
        Sampler {
            cpu: cpu_seconds().map(|s| (s, Instant::now())),
            warned: Vec::new(),
            device: TELEMETRY_DEVICE.into(),
            percent: "%".into(),
            bytes: "B".into(),
            seconds: "s".into(),
        }
    }

    /// A value, or one warning naming the metric the first time it cannot be read.
    fn got<T>(&mut self, metric: &'static str, source: &str, v: Option<T>) -> Option<T> {
        if v.is_none() && !self.warned.contains(&metric) {
            self.warned.push(metric);
            tracing::warn!(%metric, %source, "self-telemetry: cannot read this figure here; it is left out");
        }
        v
    }

    fn reading(
        &self,
        channel: &str,
        value: Value,
        unit: Option<&Arc<str>>,
        ts: Timestamp,
    ) -> Reading {
        Reading {
            device: self.device.clone(),
            channel: channel.into(),
            value,
            ts,
            quality: Quality::Good,
            unit: unit.cloned(),
        }
    }

    /// Every metric of one publication.
    fn sample(&mut self, ctx: &TelemetryContext, cfg: &GatewayConfig) -> Vec<Reading> {
        let ts = Timestamp::now();
        let mut out = Vec::with_capacity(32);
        let now = Instant::now();
        if let Some(cpu) = self.got("cpu_percent", "/proc/self/stat", cpu_seconds()) {
            if let Some((prev, at)) = self.cpu {
                let wall = now.duration_since(at).as_secs_f64();
                if wall > 0.0 {
                    let pct = ((cpu - prev) / wall * 100.0).max(0.0);
                    let pct = (pct * 100.0).round() / 100.0;
                    out.push(self.reading("cpu_percent", Value::F64(pct), Some(&self.percent), ts));
                }
            }
            self.cpu = Some((cpu, now));
        }
        if let Some(rss) = self.got("memory_rss_bytes", "/proc/self/status", rss_bytes()) {
            out.push(self.reading("memory_rss_bytes", Value::U64(rss), Some(&self.bytes), ts));
        }
        let path = disk_path(cfg);
        if let Some(free) = self.got("disk_free_bytes", "statvfs", disk_free_bytes(&path)) {
            out.push(self.reading("disk_free_bytes", Value::U64(free), Some(&self.bytes), ts));
        }
        if let Some((rx, tx)) = self.got("net_rx_bytes", "/proc/net/dev", net_bytes()) {
            out.push(self.reading("net_rx_bytes", Value::U64(rx), Some(&self.bytes), ts));
            out.push(self.reading("net_tx_bytes", Value::U64(tx), Some(&self.bytes), ts));
        }
        if let Some(load) = self.got("load_1m", "/proc/loadavg", load_1m()) {
            out.push(self.reading("load_1m", Value::F64(load), None, ts));
        }
        let up = ((ts.0 - ctx.started).max(0) / 1000) as u64;
        out.push(self.reading("uptime_seconds", Value::U64(up), Some(&self.seconds), ts));
        for (name, health) in ctx.registry.connectors() {
            let snap = serde_json::to_value(health.counters.snapshot()).unwrap_or_default();
            self.counters(&mut out, "connector", &name, &snap, ts);
        }
        for (name, counters) in ctx.registry.sinks() {
            let snap = serde_json::to_value(counters.snapshot()).unwrap_or_default();
            self.counters(&mut out, "sink", &name, &snap, ts);
        }
        out
    }

    /// `{kind}.{name}.{field}` for each number and flag of a `gateway.status` counter object.
    fn counters(
        &self,
        out: &mut Vec<Reading>,
        kind: &str,
        name: &str,
        snap: &serde_json::Value,
        ts: Timestamp,
    ) {
        let Some(fields) = snap.as_object() else {
            return;
        };
        for (field, v) in fields {
            let value = match v {
                serde_json::Value::Number(n) => match n.as_u64() {
                    Some(u) => Value::U64(u),
                    None => continue,
                },
                serde_json::Value::Bool(b) => Value::Bool(*b),
                _ => continue,
            };
            let channel = format!("{kind}.{name}.{field}");
            out.push(self.reading(&channel, value, None, ts));
        }
    }
}

/// Publishes the figures every `telemetry.interval` (re-read after each publication, so a
/// reload applies at the next one) while `telemetry.enabled`, until `ctx.shutdown`.
pub async fn run(ctx: TelemetryContext) {
    let mut sampler = Sampler::new();
    let mut next = tokio::time::Instant::now() + interval(&ctx.config.load());
    loop {
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let cfg = ctx.config.load_full();
        next += interval(&cfg);
        // Never catch up on missed publications (a sink that pushed back): one, then on.
        next = next.max(tokio::time::Instant::now());
        if !cfg.telemetry.enabled {
            continue;
        }
        let readings = sampler.sample(&ctx, &cfg);
        let batch = Batch {
            connector: sampler.device.clone(),
            device: sampler.device.clone(),
            readings,
        };
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => return,
            _ = ctx.out.send(Envelope::Batch(Arc::new(batch))) => {}
        }
    }
}

fn interval(cfg: &GatewayConfig) -> Duration {
    cfg.telemetry
        .interval
        .0
        .max(crate::config::MIN_TELEMETRY_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_ticks_survive_odd_command_names() {
        let line =
            "1234 (os gate) (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 5000 0 0";
        assert_eq!(parse_stat_ticks(line), Some(300));
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn rss_loadavg_and_net_dev_parse() {
        assert_eq!(
            parse_vm_rss("Name:\tosgate\nVmRSS:\t   12345 kB\nVmSwap: 0 kB\n"),
            Some(12345 * 1024)
        );
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert_eq!(parse_loadavg("0.52 0.40 0.33 2/345 6789\n"), Some(0.52));
        assert_eq!(parse_loadavg(""), None);
        let dev = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 9999999     100    0    0    0     0          0         0  9999999     100    0    0    0     0       0          0
  eth0: 1000      10    0    0    0     0          0         0     2000      20    0    0    0     0       0          0
 wlan0:  500       5    0    0    0     0          0         0      300       3    0    0    0     0       0          0
";
        assert_eq!(parse_net_dev(dev), Some((1500, 2300)));
        assert_eq!(parse_net_dev("header\nheader\n"), None);
    }

    #[test]
    fn this_process_can_be_measured() {
        assert!(rss_bytes().is_some_and(|b| b > 0));
        assert!(cpu_seconds().is_some_and(|s| s >= 0.0));
        assert!(disk_free_bytes(Path::new(".")).is_some());
        assert!(disk_free_bytes(Path::new("/no/such/dir")).is_none());
    }
}
