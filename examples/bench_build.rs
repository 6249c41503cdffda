//! What a cargo feature costs: clean build time (debug and release) and release binary size,
//! with the default features and with the default features minus one (e.g. `opcua`).
//!
//! Each build runs `cargo build [--release] --bin osgate` in a fresh, empty target directory
//! (under `--dir`, default the system temp dir; it is deleted after each build), so every
//! dependency is compiled; the registry and the sources are not touched. The binary size is
//! that of the release `osgate` as built (`debug = "line-tables-only"`) and after `strip`.
//! Prints one line per build and a table of medians.
//!
//! ```sh
//! cargo run --release --example bench_build -- opcua 3                  # feature, runs
//! cargo run --release --example bench_build -- opcua 1 /dev/shm release  # RAM dirs, one profile
//! ```
//!
//! Besides wall time it reports the CPU time of the build (cargo and every rustc: user +
//! system), which a machine shared with other builds disturbs much less than wall time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

mod common;
use common::{children_cpu_seconds, median};

/// The default features of Cargo.toml, read from the manifest.
fn default_features(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).expect("read Cargo.toml");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("default = ["))
        .expect("a `default = [...]` line in [features]");
    let inner = line.split_once('[').unwrap().1.rsplit_once(']').unwrap().0;
    inner
        .split(',')
        .map(|f| f.trim().trim_matches('"').to_string())
        .filter(|f| !f.is_empty())
        .collect()
}

struct Build {
    secs: f64,
    cpu: f64,
    size: Option<(u64, u64)>,
}

/// One clean build of `features`; `release` or debug.
fn build(root: &Path, base: &Path, features: &[String], release: bool, n: usize) -> Build {
    let target = base.join(format!("osgate-bench-build-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&target);
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root)
        .args([
            "build",
            "--quiet",
            "--bin",
            "osgate",
            "--no-default-features",
        ])
        .arg("--features")
        .arg(features.join(","))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS");
    if release {
        cmd.arg("--release");
    }
    let t = Instant::now();
    let cpu0 = children_cpu_seconds();
    let st = cmd.status().expect("run cargo");
    let secs = t.elapsed().as_secs_f64();
    let cpu = children_cpu_seconds() - cpu0;
    assert!(st.success(), "cargo build failed");
    let size = release.then(|| {
        let bin = target.join("release/osgate");
        let full = std::fs::metadata(&bin).expect("binary").len();
        let stripped = target.join("osgate.stripped");
        let ok = Command::new("strip")
            .arg("-o")
            .arg(&stripped)
            .arg(&bin)
            .status()
            .is_ok_and(|s| s.success());
        let small = if ok {
            std::fs::metadata(&stripped).map(|m| m.len()).unwrap_or(0)
        } else {
            0
        };
        (full, small)
    });
    let _ = std::fs::remove_dir_all(&target);
    Build { secs, cpu, size }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let feature = args.next().unwrap_or_else(|| "opcua".into());
    let runs: usize = args.next().map_or(1, |r| r.parse().expect("runs"));
    let base = args.next().map_or_else(std::env::temp_dir, PathBuf::from);
    let only = args.next();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let with = default_features(&root.join("Cargo.toml"));
    assert!(
        with.contains(&feature),
        "{feature} is not a default feature: {with:?}"
    );
    let without: Vec<String> = with.iter().filter(|f| **f != feature).cloned().collect();
    let mut n = 0;
    let mut rows = Vec::new();
    for release in [false, true] {
        let profile = if release { "release" } else { "debug" };
        if only.as_deref().is_some_and(|p| p != profile) {
            continue;
        }
        for (label, feats) in [("with", &with), ("without", &without)] {
            let mut secs = Vec::new();
            let mut cpus = Vec::new();
            let mut sizes = Vec::new();
            for run in 1..=runs {
                n += 1;
                let b = build(&root, &base, feats, release, n);
                println!(
                    "{profile} {label} {feature} run {run}: {:.1} s, CPU {:.1} s{}",
                    b.secs,
                    b.cpu,
                    b.size.map_or(String::new(), |(f, s)| format!(
                        ", binary {f} bytes, stripped {s} bytes"
                    ))
                );
                secs.push(b.secs);
                cpus.push(b.cpu);
                sizes.extend(b.size);
            }
            rows.push((
                profile,
                label,
                median(secs),
                median(cpus),
                sizes.last().copied(),
            ));
        }
    }
    println!(
        "\n| build | {feature} | clean build, wall (median of {runs}) | CPU | binary | stripped |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for (profile, label, secs, cpu, size) in rows {
        let (f, s) = size.map_or(("–".into(), "–".into()), |(f, s)| {
            (
                format!("{:.2} MB", f as f64 / 1e6),
                format!("{:.2} MB", s as f64 / 1e6),
            )
        });
        println!("| {profile} | {label} | {secs:.0} s | {cpu:.0} s | {f} | {s} |");
    }
}
