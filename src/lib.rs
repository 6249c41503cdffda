//! osgate: an industrial IoT gateway. Connectors read devices, per-channel transforms shape the
//! values, bounded channels carry batches of readings, sinks export them (by default to a local
//! MQTT broker bridged to the cloud).
//!
//! # Layers
//! The workspace makes the layers a compiler fact; a lower one cannot import a higher one:
//! 1. `osgate-core` (`core/`): readings, transforms, the pipeline, status, control, the config
//!    toolkit, `net`, backoff and durations. Re-exported here under the same names
//!    ([`reading`], [`pipeline`], [`config`]…).
//! 2. `osgate-connectors` (`connectors/`): the connector kit and one folder per protocol, a
//!    cargo feature each, registered in one list ([`connectors`]).
//!    `osgate-sinks` (`sinks/`): where readings leave ([`sinks`]).
//! 3. This package: the process and the management around them:
//!    - [`config`]: the gateway's document (every section) and where it is loaded from, on
//!      the core's config toolkit.
//!    - [`app`]: a whole gateway, [`app::run`] — loading order, service, RPC, refresher,
//!      reloads; `main` adds the process around it (signals, systemd, exit codes), and tests
//!      run it in-process.
//!    - [`service`]: GatewayService — start, supervise, reload, stop.
//!    - [`rpc`]: JSON-RPC management (HTTP, WebSocket, MQTT commands), `GET /metrics` and the
//!      `osgate rpc` and `osgate health` clients.
//!    - [`telemetry`]: self-telemetry (process and host figures, pipeline counters).
//!    - [`broker`]: the optional embedded MQTT broker.
//!    - [`notify`]: the systemd notification protocol (`READY=1`, `WATCHDOG=1`, `STOPPING=1`).

pub use osgate_connectors as connectors;
pub use osgate_core::{
    audit, auth, backoff, control, duration, install_crypto_provider, memory, net, out, outln,
    pipeline, reading, runtime, size, status, transform, uplink,
};
pub use osgate_sinks as sinks;

pub mod app;
pub mod broker;
pub mod config;
pub mod notify;
pub mod rpc;
pub mod service;
pub mod telemetry;

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
