//! Hostile clients against the bounded listeners (the JSON-RPC port and an HTTP ingest port of
//! one real gateway process): thousands of connections that send a partial head, and thousands
//! that promise a 100 kB body and trickle it a byte a second. A well-behaved client must be
//! served every second within a second throughout, the slow ones must be closed by their
//! deadlines (or evicted for newcomers), and the gateway's resident memory (from /proc) must
//! stay within 25 MB of its idle figure and fall back near it afterwards.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::rpc::Rpc;
use crate::common::*;

const KEY: &str = "slow-test-key-0123456789";
const INGEST_KEY: &str = "ingest-key-0123";
/// Partial heads and trickling bodies, each, per port.
const HOSTILE: usize = 3000;
/// How long the hostile clients try to hold on.
const HOLD: Duration = Duration::from_secs(30);
/// The deadlines configured (head, and body before its minimum rate counts).
const DEADLINE: Duration = Duration::from_secs(5);
/// Slack for a loaded machine on top of a deadline.
const SLACK: Duration = Duration::from_secs(5);
/// The hostile clients connect over this time (this test is about clients that hold
/// connections; a connect flood meets the kernel's backlog and the firewall first).
const RAMP: Duration = Duration::from_secs(10);

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// How one hostile connection ended.
struct Ended {
    /// Seconds from its connect to the server closing it; `None`: still open at the end.
    after: Option<Duration>,
}

/// One hostile connection: sends `head` then, when `trickle`, a byte a second, until the
/// server closes it or `until`. `gate` bounds the connects in flight.
async fn hostile(
    port: u16,
    head: String,
    trickle: bool,
    until: Instant,
    gate: tokio::sync::OwnedSemaphorePermit,
    opened: Arc<AtomicUsize>,
) -> Option<Ended> {
    let mut s = tokio::time::timeout(TEST_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .ok()?
        .ok()?;
    let start = Instant::now();
    let sent = s.write_all(head.as_bytes()).await;
    drop(gate);
    opened.fetch_add(1, Relaxed);
    if sent.is_err() {
        return Some(Ended {
            after: Some(start.elapsed()),
        });
    }
    let mut buf = [0u8; 512];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Some(Ended { after: None });
        }
        let tick = if trickle {
            Duration::from_secs(1).min(left)
        } else {
            left
        };
        tokio::select! {
            r = s.read(&mut buf) => match r {
                // The server answered (a 408 or the like) or closed: closed either way once
                // the read side ends.
                Ok(n) if n > 0 => continue,
                _ => return Some(Ended { after: Some(start.elapsed()) }),
            },
            _ = tokio::time::sleep(tick) => {
                if trickle && s.write_all(b"x").await.is_err() {
                    return Some(Ended { after: Some(start.elapsed()) });
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_neither_starve_good_ones_nor_hold_memory() {
    let broker = Mosquitto::start();
    let rpc_port = free_port();
    let ingest_port = free_port();
    let limits = json!({"head_timeout": "5s", "body_timeout": "5s"});
    let mut cfg = sim_config(
        "gwslow",
        &broker.url(),
        json!([{"name": "d", "interval": "1s", "channels": [{"name": "c", "signal": "counter"}]}]),
        json!({}),
    );
    cfg["connectors"].as_array_mut().unwrap().push(json!({
        "name": "ingest", "protocol": "http", "mode": "listen",
        "listen": format!("127.0.0.1:{ingest_port}"), "api_keys": [INGEST_KEY],
        "limits": limits,
        "devices": [{"name": "meter", "channels": [{"name": "p", "pointer": "/p"}]}]}));
    cfg["rpc"] =
        json!({"listen": format!("127.0.0.1:{rpc_port}"), "api_keys": [KEY], "limits": limits});
    let gw = Gateway::start(&cfg);
    let rpc = Rpc::connect(KEY, rpc_port, &gw).await;
    assert!(wait_port(ingest_port, TEST_TIMEOUT), "ingest port");
    // A fresh connection per request: a newcomer must find room.
    let good = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let status_body = json!({"jsonrpc": "2.0", "id": 1, "method": "gateway.status"}).to_string();
    let ingest_url = format!("http://127.0.0.1:{ingest_port}/ingest/meter");
    let served = |what: &'static str| {
        let good = good.clone();
        let (rpc_url, ingest_url, status_body) =
            (rpc.url.clone(), ingest_url.clone(), status_body.clone());
        async move {
            let t = Instant::now();
            let ok = if what == "rpc" {
                good.post(&rpc_url)
                    .bearer_auth(KEY)
                    .header("content-type", "application/json")
                    .body(status_body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            } else {
                good.post(&ingest_url)
                    .header("x-api-key", INGEST_KEY)
                    .body(r#"{"p": 1}"#)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 202)
            };
            (ok, t.elapsed())
        }
    };
    // Warm up, then the idle figure.
    for _ in 0..20 {
        assert!(served("rpc").await.0 && served("ingest").await.0);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(gw.pid());

    // The hostile clients: per port, partial heads and trickling bodies (with a valid key, so
    // that they reach the body; a wrong key would be refused before it).
    let until = Instant::now() + HOLD;
    let ended = Arc::new(Mutex::new(Vec::new()));
    let opened = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(400));
    let mut tasks = tokio::task::JoinSet::new();
    let begin = tokio::time::Instant::now();
    let step = RAMP / (4 * HOSTILE) as u32;
    for (p, (port, path, auth)) in [
        (rpc_port, "/", format!("Authorization: Bearer {KEY}")),
        (
            ingest_port,
            "/ingest/meter",
            format!("X-API-Key: {INGEST_KEY}"),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        for i in 0..2 * HOSTILE {
            let trickle = i % 2 == 1;
            let head = if trickle {
                format!("POST {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
            } else {
                format!("POST {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Le")
            };
            let (ended, opened, gate) = (ended.clone(), opened.clone(), gate.clone());
            // The two ports' clients interleave over the ramp.
            let at = begin + step * (2 * i + p) as u32;
            tasks.spawn(async move {
                tokio::time::sleep_until(at).await;
                let permit = gate.acquire_owned().await.unwrap();
                if let Some(e) = hostile(port, head, trickle, until, permit, opened).await {
                    ended.lock().unwrap().push((trickle, e.after));
                }
            });
        }
    }

    // The good client, every second, while the hostile ones hold on and a little after.
    let mut peak = idle;
    let mut worst = Duration::ZERO;
    let mut failures = Vec::new();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < HOLD + Duration::from_secs(3) {
        let tick = started + Duration::from_secs(n);
        tokio::time::sleep_until(tick.into()).await;
        n += 1;
        let ((ok_r, t_r), (ok_i, t_i)) = tokio::join!(served("rpc"), served("ingest"));
        for (what, ok, t) in [("gateway.status", ok_r, t_r), ("ingest 202", ok_i, t_i)] {
            worst = worst.max(t);
            if !ok || t > Duration::from_secs(1) {
                failures.push(format!("{what} at {n}s: ok={ok} in {t:?}"));
            }
        }
        peak = peak.max(rss_kib(gw.pid()));
    }
    while tasks.join_next().await.is_some() {}
    let ended = std::mem::take(&mut *ended.lock().unwrap());

    // After they are gone: memory falls back near the idle figure.
    let mut after = rss_kib(gw.pid());
    let settle = Instant::now() + Duration::from_secs(10);
    while after > idle + 8 * 1024 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(500)).await;
        after = rss_kib(gw.pid());
    }
    let metrics = rpc
        .http
        .get(format!("{}metrics", rpc.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let cut = |listener: &str, cause: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("osgate_listener_cutoffs_total")
                    && l.contains(&format!("listener=\"{listener}\""))
                    && l.contains(&format!("cause=\"{cause}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let figures = format!(
        "idle {idle} KiB, peak {peak} KiB, after {after} KiB; worst good answer {worst:?}; \
         {} hostile connections opened, {} ended; cut-offs rpc head/body/evicted {}/{}/{}, \
         ingest {}/{}/{}",
        opened.load(Relaxed),
        ended.len(),
        cut("rpc", "head_timeout"),
        cut("rpc", "body_timeout"),
        cut("rpc", "evicted"),
        cut("ingest", "head_timeout"),
        cut("ingest", "body_timeout"),
        cut("ingest", "evicted"),
    );
    eprintln!("slow clients: {figures}");
    assert!(failures.is_empty(), "{failures:?}; {figures}");
    assert!(peak <= idle + 25 * 1024, "{figures}");
    assert!(after <= idle + 8 * 1024, "memory stayed: {figures}");
    // Every hostile connection was closed, none later than its deadline (plus slack): the
    // head deadline, or the body's (its few bytes add milliseconds to it).
    assert!(ended.len() >= 4 * HOSTILE * 9 / 10, "{figures}");
    let late: Vec<_> = ended
        .iter()
        .filter(|(_, after)| after.is_none_or(|a| a > DEADLINE + SLACK))
        .collect();
    assert!(
        late.is_empty(),
        "{} hostile connections outlived their deadline; {figures}",
        late.len()
    );
    for l in ["rpc", "ingest"] {
        let total = cut(l, "head_timeout") + cut(l, "body_timeout") + cut(l, "evicted");
        assert!(total as usize >= 2 * HOSTILE, "{l}: {figures}");
        assert!(
            cut(l, "head_timeout") > 0 && cut(l, "body_timeout") > 0,
            "{l}: {figures}"
        );
    }
    // Logged once per cause, not once per connection.
    let cut_lines = gw
        .log_json()
        .into_iter()
        .filter(|l| l["fields"]["cause"].is_string() && l["fields"]["listener"].is_string())
        .count();
    assert!(cut_lines <= 2 * 5, "{cut_lines} cut-off lines");
}
