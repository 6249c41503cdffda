//! osgate's core: what every layer above it shares, and nothing that knows of a protocol,
//! a sink or the process.
//!
//! - [`reading`]: Reading, Value, Quality, Batch — the one data type that flows.
//! - [`transform`]: per-channel transforms (scale, deadband, report strategies…).
//! - [`pipeline`]: device outputs, bounded sink queues, fan-out, full-policy.
//! - [`status`]: counters and device health.
//! - [`uplink`]: the local broker's bridges to the cloud, as the MQTT sinks see them.
//! - [`control`]: run-time device control (enable/disable, read now, write).
//! - [`config`]: the config toolkit (errors with paths, `${VAR}`, the device/channel parser).
//! - [`net`]: outbound MQTT and HTTP clients with TLS and credentials, server TLS, accepting.
//! - [`auth`]: API keys with names and roles, as requests present them, compared in constant
//!   time.
//! - [`audit`]: the audit trail of changes (log and `events/{gateway}`).
//! - [`backoff`], [`duration`], [`size`]: leaves (capped exponential backoff, `"500ms"`,
//!   `"256KiB"`).
//! - [`out`]: stdout of the one-shot commands (a closed pipe is a normal end).
//!
//! The layers above: the connectors crate (`connectors/`) and the sinks crate (`sinks/`) use
//! this one; the `osgate` package (the service, management, the process) uses all three. A
//! lower layer cannot import a higher one: Cargo refuses the cycle.

// `broker_config!` names its default functions by this path, inside this crate too (tests).
#[cfg(test)]
extern crate self as osgate_core;

pub mod audit;
pub mod auth;
pub mod backoff;
pub mod config;
pub mod control;
pub mod duration;
pub mod memory;
pub mod net;
pub mod out;
pub mod pipeline;
pub mod reading;
pub mod size;
pub mod status;
pub mod transform;
pub mod uplink;

/// Builds the tokio runtime of a command: multi-thread for the gateway, current-thread for the
/// one-shot tools (`osgate rpc`, `osgate modbus`). A failure is reported on stderr and becomes
/// exit code 1.
pub fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    let mut b = if multi_thread {
        memory::limit_malloc_arenas();
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    b.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the runtime: {e}");
        std::process::ExitCode::from(1)
    })
}

/// Installs the process-wide rustls crypto provider (ring). Call once, first thing in `main`:
/// reqwest and rumqttc are built without a provider of their own (`rustls-no-provider`), and a
/// reqwest client built before a process provider is installed panics, even for `http://`.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
