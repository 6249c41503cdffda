//! M-Bus decoder benchmark: every valid frame of the libmbus corpus (`tests/data/mbus/libmbus/
//! test-frames`) decoded the way the poller does for a meter without configured channels —
//! frame check, records with units and scaling, derived names, reading values — repeatedly.
//! Reports frames and records decoded per second and the heap bytes and allocations per frame
//! (counted by a global allocator wrapper), against what a 2400-baud bus can carry.
//!
//! ```text
//! cargo run --release --example bench_mbus -- [rounds (default 2000)] [runs (default 5)]
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use osgate::connectors::mbus::{frame, json, poller};

/// Counts heap bytes and allocations.
struct Counting;

static BYTES: AtomicU64 = AtomicU64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What the poller does with one telegram: records, names, values and units. Returns the
/// number of records.
fn decode(t: &[u8]) -> usize {
    let telegrams = [t];
    let Ok(recs) = poller::decode_borrowed(&telegrams) else {
        return 0;
    };
    let names = json::unique_names(&recs);
    let mut n = 0;
    for (r, name) in recs.iter().zip(&names) {
        if let Some(v) = poller::reading_value(&r.value) {
            std::hint::black_box((name, v, r.unit_text()));
            n += 1;
        }
    }
    n
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/mbus/libmbus/test-frames"
    );
    let mut frames = Vec::new();
    for e in std::fs::read_dir(dir).expect("corpus dir") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "hex") {
            let text = std::fs::read_to_string(&p).expect("read frame");
            if let Ok(f) = frame::parse_hex(&text) {
                if frame::parse(&f).is_ok() {
                    frames.push(f);
                }
            }
        }
    }
    let bytes: usize = frames.iter().map(Vec::len).sum();
    let records: usize = frames.iter().map(|f| decode(f)).sum();
    println!(
        "mbus decode bench: {} corpus frames ({} bytes, {} records with values), {rounds} rounds x {runs} runs",
        frames.len(),
        bytes,
        records
    );
    let mut rates = Vec::new();
    let (mut per_frame_bytes, mut per_frame_allocs) = (0.0, 0.0);
    for run in 0..runs {
        let (b0, a0) = (BYTES.load(Relaxed), ALLOCS.load(Relaxed));
        let t0 = Instant::now();
        let mut n = 0usize;
        for _ in 0..rounds {
            for f in &frames {
                n += decode(std::hint::black_box(f));
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let decoded = rounds as f64 * frames.len() as f64;
        per_frame_bytes = (BYTES.load(Relaxed) - b0) as f64 / decoded;
        per_frame_allocs = (ALLOCS.load(Relaxed) - a0) as f64 / decoded;
        let fps = decoded / secs;
        println!(
            "  run {}: {:.0} frames/s, {:.0} records/s, {:.0} bytes and {:.1} allocations per frame",
            run + 1,
            fps,
            n as f64 / secs,
            per_frame_bytes,
            per_frame_allocs
        );
        rates.push(fps);
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    // 2400 baud, 11 bits per character (8E1), the corpus's mean frame length.
    let bus_fps = 2400.0 / 11.0 / (bytes as f64 / frames.len() as f64);
    println!(
        "  median: {median:.0} frames/s ({per_frame_bytes:.0} bytes, {per_frame_allocs:.1} allocations per frame); \
         a 2400-baud bus carries {bus_fps:.2} such frames/s: the decoder is {:.0}x faster ({:.1} orders of magnitude)",
        median / bus_fps,
        (median / bus_fps).log10()
    );
}
