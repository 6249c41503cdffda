//! Benchmark: cost of the per-channel transform per reading.
//!
//! Run with `cargo run --release --example bench_transform`. For each transform chain it applies
//! the transform to readings of a slowly varying raw signal (built the way `DeviceOutput::push`
//! builds them, outside the timed section) and drops the result; a baseline loop only drops the
//! readings. Each case runs `RUNS` times over `N` readings and prints the median ns/reading and
//! the median minus the baseline (the transform's own cost). Optional argument: N.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use osgate::reading::{Quality, Reading, Timestamp, Value};
use osgate::transform::{Outcome, Transform, TransformConfig};

const RUNS: usize = 7;

struct Names {
    device: Arc<str>,
    channel: Arc<str>,
    unit: Option<Arc<str>>,
}

impl Names {
    fn reading(&self, value: Value, ts: i64) -> Reading {
        Reading {
            device: self.device.clone(),
            channel: self.channel.clone(),
            value,
            ts: Timestamp(ts),
            quality: Quality::Good,
            unit: self.unit.clone(),
        }
    }
}

/// The value of reading `i`: a slow sine in raw register units, like a polled sensor.
fn raw(i: usize) -> Value {
    Value::U64((2000.0 + 1000.0 * (i as f64 * 0.001).sin()) as u64)
}

/// Readings are built in chunks outside the timed section, so only `apply` and dropping the
/// result are timed (dropping is the baseline, the same with and without a transform).
const CHUNK: usize = 10_000;

/// One timed pass; returns ns per reading.
fn pass(n: usize, names: &Names, mut t: Option<&mut Transform>) -> f64 {
    let now = tokio::time::Instant::now();
    let mut chunk: Vec<Reading> = Vec::with_capacity(CHUNK);
    let mut timed = std::time::Duration::ZERO;
    let mut emitted = 0usize;
    let mut i = 0;
    while i < n {
        chunk.extend((i..(i + CHUNK).min(n)).map(|k| names.reading(raw(k), k as i64)));
        i += chunk.len();
        let start = StdInstant::now();
        for r in chunk.drain(..) {
            match &mut t {
                Some(t) => {
                    if let Outcome::Emit(r) = t.apply(r, now) {
                        black_box(&r);
                        emitted += 1;
                    }
                }
                None => {
                    black_box(&r);
                    emitted += 1;
                }
            }
        }
        timed += start.elapsed();
    }
    black_box(emitted);
    timed.as_nanos() as f64 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let names = Names {
        device: "boiler".into(),
        channel: "temperature".into(),
        unit: Some("°C".into()),
    };
    let cases: &[(&str, serde_json::Value)] = &[
        ("identity", serde_json::json!({})),
        (
            "scale+offset",
            serde_json::json!({"scale": 0.1, "offset": -40}),
        ),
        (
            "scale+deadband",
            serde_json::json!({"scale": 0.1, "deadband": 0.5}),
        ),
        (
            "scale+round+deadband+heartbeat",
            serde_json::json!({"scale": 0.1, "round": 1, "deadband": 0.5, "heartbeat": "1m"}),
        ),
        (
            "filter+rate",
            serde_json::json!({"filter": {"min": 0}, "rate": true}),
        ),
        ("expr", serde_json::json!({"expr": "(x - 32) / 1.8"})),
    ];
    // Warm up caches and the allocator.
    pass(n / 10, &names, None);
    let base = median((0..RUNS).map(|_| pass(n, &names, None)).collect());
    println!("bench_transform: {n} readings x {RUNS} runs, median ns/reading");
    println!("{:<34} {:>8.1}  (drop a reading)", "baseline", base);
    for (name, cfg) in cases {
        let cfg: TransformConfig = serde_json::from_value(cfg.clone()).expect("config");
        let runs: Vec<f64> = (0..RUNS)
            .map(|_| {
                let mut t = Transform::new(&cfg).expect("valid");
                pass(n, &names, Some(&mut t))
            })
            .collect();
        let m = median(runs);
        println!(
            "{:<34} {:>8.1}  transform {:>6.1}",
            name,
            m,
            (m - base).max(0.0)
        );
    }
}
