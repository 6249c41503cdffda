//! Outbound connections: the one place where MQTT and HTTP clients are configured, with TLS and
//! credentials, for every part of osgate that connects somewhere (sinks, connectors, the
//! command client, the remote configuration, `osgate rpc`), plus the TLS of the RPC listener.
//!
//! - [`tls`]: the `tls` object ([`tls::TlsConfig`]), rustls client and server configs, and
//!   [`tls::describe_error`] for operator messages about failed connects.
//! - [`mqtt`]: broker URLs and `rumqttc::MqttOptions` ([`mqtt::MqttClientSettings`]).
//! - [`http`]: reqwest clients ([`http::HttpClientSettings`]).

pub mod http;
pub mod mqtt;
pub mod tls;

pub use tls::{describe_error, ServerTlsConfig, TlsConfig};
