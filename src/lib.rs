//! osgate: an industrial IoT gateway. Connectors read devices, per-channel transforms shape the
//! values, bounded channels carry batches of readings, sinks export them (by default to a local
//! MQTT broker bridged to the cloud).
//!
//! # Layout
//! In pipeline order:
//! - [`config`]: the schema, loading (file, env overrides, `${VAR}`), validation with paths.
//! - [`app`]: the process — loading order, service, RPC, refresher, signals — `run(path, shutdown)`.
//! - [`service`]: GatewayService — start, supervise, reload, stop.
//! - [`connectors`]: one module per protocol (`connectors/` at the top of the repository).
//! - [`reading`]: Reading, Value, Quality, Batch — the one data type that flows.
//! - [`transform`]: per-channel transforms (scale, deadband, report strategies…).
//! - [`pipeline`]: device outputs, bounded sink queues, fan-out, full-policy.
//! - [`sinks`]: one module per sink type (`sinks/` at the top of the repository).
//! - [`status`]: counters and device health.
//! - [`control`]: run-time device control (enable/disable, read now, write).
//! - [`backoff`]: the one capped exponential `Backoff` (a leaf).
//! - [`duration`]: `Dur`, durations written as strings in the config (a leaf: no crate imports).
//! - [`size`]: `Size`, byte sizes written as `"256KiB"` in the config (a leaf).
//! - [`broker`]: the optional embedded MQTT broker.
//! - [`net`]: outbound MQTT and HTTP clients with TLS and credentials, and the RPC listener's TLS.
//! - [`out`]: stdout of the one-shot commands (a closed pipe is a normal end).
//! - [`rpc`]: JSON-RPC management (HTTP, WebSocket, MQTT commands), `GET /metrics` and the
//!   `osgate rpc` and `osgate health` clients.
//! - [`telemetry`]: self-telemetry (process and host figures, pipeline counters) as readings.
//! - [`notify`]: the systemd notification protocol (`READY=1`, `WATCHDOG=1`, `STOPPING=1`).

pub mod app;
pub mod audit;
pub mod backoff;
pub mod broker;
pub mod config;
#[path = "../connectors/mod.rs"]
pub mod connectors;
pub mod control;
pub mod duration;
pub mod net;
pub mod notify;
pub mod out;
pub mod pipeline;
pub mod reading;
pub mod rpc;
pub mod service;
#[path = "../sinks/mod.rs"]
pub mod sinks;
pub mod size;
pub mod status;
pub mod telemetry;
pub mod transform;
pub mod uplink;

/// The version of this build (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit this binary was built from (`build.rs`): 12 hex digits, `-dirty` when the
/// tree had changes, the `OSGATE_GIT_COMMIT` build variable without git, else `unknown`.
pub const COMMIT: &str = env!("OSGATE_COMMIT");

/// What `osgate --version` prints after the name: `0.1.0 (commit 0123456789ab)`.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("OSGATE_COMMIT"),
    ")"
);

/// Builds the tokio runtime of a command: multi-thread for the gateway, current-thread for the
/// one-shot tools (`osgate rpc`, `osgate modbus`). A failure is reported on stderr and becomes
/// exit code 1.
pub fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    let mut b = if multi_thread {
        limit_malloc_arenas();
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the runtime: {e}");
        std::process::ExitCode::from(1)
    })
}

/// Caps glibc's malloc at two arenas. By default every thread that allocates may get an arena
/// of its own (up to 8 per core), each keeping freed memory for reuse; the gateway's worker
/// and blocking threads then hold several MB of mostly idle heap (BENCHMARKS.md, "Memory
/// scaling"). `MALLOC_ARENA_MAX` in the environment still wins: glibc reads it first.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        /// `M_ARENA_MAX` from glibc's `malloc.h`.
        const M_ARENA_MAX: std::ffi::c_int = -8;
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only sets a tunable; it is called before the runtime starts
            // its threads.
            unsafe {
                mallopt(M_ARENA_MAX, 2);
            }
        }
    }
}

/// Installs the process-wide rustls crypto provider (ring). Call once, first thing in `main`:
/// with more than one provider compiled in, rustls cannot pick one itself (STACK.md).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
