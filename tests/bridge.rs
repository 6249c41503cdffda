//! The shipped bridge (`examples/mosquitto/mosquitto.conf`) carries every reading to a cloud
//! broker through an uplink outage. Two real mosquittos: "local" runs the shipped file with only
//! its addresses, ports, paths and CA file replaced, "cloud" listens with TLS. osgate publishes
//! counters (every value distinct) to local; a persistent QoS 1 subscriber on cloud must see every
//! value of every channel, also those produced while cloud was down. The example container
//! config (`examples/docker/osgate.json`) is checked here too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;

/// The shipped local broker configuration.
const SHIPPED: &str = include_str!("../examples/mosquitto/mosquitto.conf");

/// How long the cloud broker is away while the counters keep counting.
const OUTAGE: Duration = Duration::from_secs(10);

/// The shipped file for a broker on 127.0.0.1:`port` with its files in `dir`, bridged to
/// 127.0.0.1:`cloud_port` trusting `ca`. Every other line is kept as shipped.
fn local_conf(port: u16, dir: &Path, cloud_port: u16, ca: &Path) -> String {
    let mut replaced = BTreeSet::new();
    // The harness runs as root: mosquitto would otherwise switch to the `mosquitto` user, who
    // cannot write the test's temp dir.
    let mut out = String::from("user root\n");
    for line in SHIPPED.lines() {
        let key = line.split_whitespace().next().unwrap_or("");
        let new = match key {
            "listener" => format!("listener {port} 127.0.0.1"),
            "persistence_location" => format!("persistence_location {}/", dir.display()),
            "log_dest" => format!("log_dest file {}/mosquitto.log", dir.display()),
            "address" => format!("address 127.0.0.1:{cloud_port}"),
            "bridge_cafile" => format!("bridge_cafile {}", ca.display()),
            _ => line.to_string(),
        };
        if new != line {
            assert!(replaced.insert(key), "{key} twice in the shipped file");
        }
        out.push_str(&new);
        out.push('\n');
    }
    assert_eq!(
        replaced.len(),
        5,
        "the shipped file lacks a line the test replaces: only {replaced:?}"
    );
    out
}

/// Counter values per channel topic, kept up to date message by message (the bridge probe and
/// other topics are left out).
struct Tally(BTreeMap<String, BTreeSet<u64>>);

impl Tally {
    fn new(channels: &[String]) -> Tally {
        Tally(
            channels
                .iter()
                .map(|c| (c.clone(), BTreeSet::new()))
                .collect(),
        )
    }

    fn add(&mut self, m: &Msg) {
        if let (Some(set), Some(v)) = (self.0.get_mut(&m.topic), m.json["value"].as_u64()) {
            set.insert(v);
        }
    }

    /// The highest value per channel (0 for a channel without any).
    fn highest(&self) -> BTreeMap<String, u64> {
        self.0
            .iter()
            .map(|(c, s)| (c.clone(), s.last().copied().unwrap_or(0)))
            .collect()
    }

    /// Every channel has every value 0..=last, and last >= `bound`'s.
    fn complete_past(&self, bound: &BTreeMap<String, u64>) -> bool {
        self.0.iter().all(|(c, vals)| {
            let last = vals.last().copied().unwrap_or(0);
            last >= bound[c] && vals.len() as u64 == last + 1
        })
    }

    /// Per channel: how many values, the last, the first few missing.
    fn report(&self) -> String {
        let lines: Vec<String> = self
            .0
            .iter()
            .map(|(c, vals)| {
                let last = vals.last().copied().unwrap_or(0);
                let missing: Vec<u64> = (0..=last).filter(|v| !vals.contains(v)).take(5).collect();
                format!(
                    "{c}: {} values, last {last}, missing {missing:?}",
                    vals.len()
                )
            })
            .collect();
        lines.join("\n")
    }
}

/// Reads `sub` into `tally` until `done` holds (true) or `within` passes (false).
async fn tally_until(
    sub: &mut Subscriber,
    tally: &mut Tally,
    within: Duration,
    done: impl Fn(&Tally) -> bool,
) -> bool {
    let until = Instant::now() + within;
    while !done(tally) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match sub.try_next(left).await {
            Some(m) => tally.add(&m),
            None => return done(tally),
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_delivers_every_reading_through_a_cloud_outage() {
    let certs = certs::Certs::generate();
    let mut cloud = Mosquitto::start_tls(&certs, false);
    let (cloud_port, ca) = (cloud.port, certs.ca.cert.clone());
    let local = Mosquitto::start_file(move |port, dir| local_conf(port, dir, cloud_port, &ca));
    let trust = osgate::net::TlsConfig {
        ca_file: Some(certs.ca.cert.clone()),
        ..Default::default()
    };
    let mut up = Subscriber::connect_tls(cloud.port, "telemetry/gwb/#", &trust).await;
    // The bridge is up once a message published on local reaches cloud.
    local
        .publish_until_answered("telemetry/gwb/probe", "{}", &mut up)
        .await;

    // 2 devices × 3 counters every 20 ms: 300 readings/s, ~3000 during the outage — three times
    // mosquitto's default queue limit (1000 messages), so the shipped limits are what carries them.
    let devices: Vec<_> = ["d1", "d2"]
        .iter()
        .map(|d| {
            json!({"name": d, "interval": "20ms", "channels": [
            {"name": "a", "signal": "counter"}, {"name": "b", "signal": "counter"},
            {"name": "c", "signal": "counter"}]})
        })
        .collect();
    let channels: Vec<String> = ["d1", "d2"]
        .iter()
        .flat_map(|d| ["a", "b", "c"].map(|c| format!("telemetry/gwb/{d}/{c}")))
        .collect();
    let _gw = InProc::start(&sim_config("gwb", &local.url(), json!(devices), json!({}))).await;
    // What osgate produced, seen on local (which stays up throughout).
    let mut produced = Subscriber::connect(local.port, "telemetry/gwb/#").await;

    let mut at_cloud = Tally::new(&channels);
    let live = tally_until(&mut up, &mut at_cloud, TEST_TIMEOUT, |t| {
        t.0.values().all(|v| v.len() >= 25)
    })
    .await;
    assert!(live, "readings did not reach cloud through the bridge");

    cloud.stop();
    let before = at_cloud.highest();
    tokio::time::sleep(OUTAGE).await; // the outage itself: time is the point here
    produced.drain();
    let mut at_local = Tally::new(&channels);
    produced.seen.iter().for_each(|m| at_local.add(m));
    let at_restart = at_local.highest();
    cloud.restart();
    let restarted = Instant::now();

    let during: u64 = channels.iter().map(|c| at_restart[c] - before[c]).sum();
    assert!(
        during > 1000,
        "only {during} readings were produced during the outage; the test needs more than \
         mosquitto's default queue (1000) to mean anything"
    );
    // Wait until every channel is complete past what was produced by the restart. Queued and
    // live readings interleave after the reconnect (QoS 1 promises no order across a reconnect),
    // so "complete" is only known once the gaps have closed. The bridge reconnects with backoff
    // (`restart_timeout 2 15`): allow for its longest wait.
    let complete = tally_until(&mut up, &mut at_cloud, Duration::from_secs(60), |t| {
        t.complete_past(&at_restart)
    })
    .await;
    assert!(
        complete,
        "cloud did not get every reading within 60 s of its restart (produced by the restart: \
         {at_restart:?}):\n{}\nlocal broker log:\n{}",
        at_cloud.report(),
        local.log_text()
    );
    eprintln!(
        "bridge: {during} readings produced during the {OUTAGE:?} outage, all at cloud {:.1} s \
         after its restart",
        restarted.elapsed().as_secs_f64()
    );
}

#[test]
fn the_container_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/docker/osgate.json");
    let out = std::process::Command::new(osgate_bin())
        .arg("check")
        .arg("-c")
        .arg(&path)
        .env("OSGATE_API_KEY", "container-example-key")
        .output()
        .expect("run osgate check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("rpc on 0.0.0.0:8580"), "{stdout}");
}
