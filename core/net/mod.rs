//! Outbound connections: the one place where MQTT and HTTP clients are configured, with TLS and
//! credentials, for every part of osgate that connects somewhere (sinks, connectors, the
//! command client, the remote configuration, `osgate rpc`), plus the TLS of the RPC listener.
//!
//! - [`tls`]: the `tls` object ([`tls::TlsConfig`]), rustls client and server configs.
//! - [`cause`]: why a connect failed, in words ([`describe_error`]).
//! - [`mqtt`]: broker URLs and `rumqttc::MqttOptions` ([`mqtt::MqttClientSettings`]), the
//!   broker fields of configs, the session driver ([`mqtt::MqttSession`]) and the outbox.
//! - [`http`]: reqwest clients ([`http::HttpClientSettings`]).
//! - [`lockout`], [`listen`], [`cutoffs`]: what the inbound listeners (the JSON-RPC server and the HTTP
//!   ingest) share besides their keys ([`crate::auth`]): failed-key lockout, bounded
//!   connections.

pub mod cause;
pub mod cutoffs;
pub mod http;
pub mod listen;
pub mod lockout;
pub mod mqtt;
pub mod tls;

pub use cause::describe_error;
pub use tls::{ServerTlsConfig, TlsConfig};

/// Accepts the next connection of a server's accept loop. A failed accept (out of file
/// descriptors and the like) is logged as `what`'s and answered with a short pause rather than
/// a spin; then `None`, and the loop goes round again.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    what: &str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener.accept().await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "{what} accept failed");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            None
        }
    }
}
