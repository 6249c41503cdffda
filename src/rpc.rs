//! Management through JSON-RPC 2.0 (jsonrpsee): what the gateway is doing, reload, connectors
//! and devices on and off, read now, write set-points, live readings.
//!
//! [`start`] serves one [`RpcModule`] over HTTP and WebSocket on `rpc.listen` (no `rpc` section:
//! no server) behind the API-key check of [`auth`] — over HTTPS and WSS with `rpc.tls`; osgate
//! accepts the connections (and does the TLS handshake) itself, so each request knows its
//! client's address ([`PeerAddr`]) — with `GET /metrics` ([`metrics`]) and the web console
//! ([`console`], `GET /`) on the same port, and
//! starts the MQTT command path of
//! [`mqtt`] (`command/{gateway}/{device}/{channel}/set`, and the opt-in
//! `rpc/{gateway}/request`). Methods answer from the shared health and control registries;
//! reloads and connector changes go through the service loop as [`ServiceCommand`]s, so they
//! never overlap. [`client`] is the `osgate rpc` command, [`health`] `osgate health`.
//!
//! One file per part: `server` (start-up, listeners), `context` (what every method reads and
//! the lookups they share), `params`, [`codes`], and the method families, each registering its
//! own methods into the one module that every transport serves: `status` (`gateway.status`, `gateway.config`,
//! `connectors.list`, `connector.status`, `devices.list`, `device.status`), `lifecycle`
//! (`gateway.reload`, `connector.*`, `device.enable`/`disable`), `device` (`device.read`,
//! `device.write`), `readings` (`readings.subscribe`), [`configure`] (`config.*`), [`session`]
//! (`session.*`), `tools` (the protocols' field tools) and `mbus` (`mbus.scan`).
//!
//! Method names, params and results are part of the public interface (docs/management.md,
//! "JSON-RPC").
//!
//! [`ServiceCommand`]: crate::service::ServiceCommand

pub mod auth;
mod channels;
pub mod client;
pub mod codes;
pub mod configure;
pub mod console;
mod context;
mod device;
pub mod guard;
pub mod health;
mod lifecycle;
#[cfg(feature = "mbus")]
mod mbus;
pub mod metrics;
pub mod mqtt;
mod params;
mod readings;
mod redaction;
pub mod roles;
mod server;
pub mod session;
mod status;
mod tools;

use std::time::Duration;

use jsonrpsee::RpcModule;

use codes::app_error;
pub use context::RpcContext;
pub use device::write;
#[cfg(test)]
pub(crate) use params::{fuzz_cases, parse_all_params};
pub use redaction::redact;
pub use server::{start, Management, PeerAddr};

/// Largest request body accepted (HTTP body or WebSocket message); larger ones are refused
/// before they are parsed.
pub const MAX_REQUEST_BODY: u32 = 256 * 1024;
/// Largest response body.
pub const MAX_RESPONSE_BODY: u32 = 16 * 1024 * 1024;
/// Most calls in one batch request.
pub const MAX_BATCH: u32 = 32;
/// Most simultaneous connections.
pub const MAX_CONNECTIONS: u32 = 64;
/// How long a client may take for the TLS handshake (with `rpc.tls`).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `device.read` and `device.write` wait for the device.
pub const DEVICE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the RPC module (HTTP, WebSocket and MQTT all serve this one).
fn module(ctx: RpcContext) -> RpcModule<RpcContext> {
    let mut m = RpcModule::new(ctx);
    #[cfg(feature = "mbus")]
    mbus::register(&mut m);
    session::register(&mut m);
    configure::register(&mut m);
    tools::register(&mut m);
    status::register(&mut m);
    lifecycle::register(&mut m);
    device::register(&mut m);
    readings::register(&mut m);
    m
}
