//! The embedded MQTT broker (`"broker": {"embedded": {"listen": "127.0.0.1:1883"}}`, cargo
//! feature `embedded-broker`): rumqttd inside the osgate process, so the example config runs on a
//! machine without mosquitto.
//!
//! rumqttd's `start()` blocks forever and has no shutdown API, so the broker gets its own thread
//! for the life of the process. Production points the MQTT sink at a local mosquitto bridged to
//! the cloud instead (docs/deployment.md, "Embedded broker and production"). Port 0 takes a free
//! port; [`start`] returns the address it listens on.

use crate::config::EmbeddedBrokerConfig;

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The address is taken or cannot be bound.
    #[error("broker.embedded.listen {addr}: the embedded broker cannot listen: {error}")]
    Bind {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The bind error (part of the message, not a separate cause, so it is printed once).
        error: std::io::Error,
    },
    /// The broker did not accept connections in time.
    #[error("embedded broker did not start listening on {0} within 5 s")]
    NotListening(std::net::SocketAddr),
    /// This build has no embedded broker.
    #[error("this osgate was built without the `embedded-broker` feature; remove broker.embedded or rebuild with it")]
    NotBuilt,
}

/// Starts the broker on its own thread and returns the address it accepts connections on.
#[cfg(feature = "embedded-broker")]
pub async fn start(cfg: &EmbeddedBrokerConfig) -> Result<std::net::SocketAddr, BrokerError> {
    use std::collections::HashMap;
    use std::time::Duration;

    let addr = cfg.listen;
    // rumqttd reports a failed bind only in its own log: check the address first (and learn
    // the port the system picks for port 0; rumqttd binds it again).
    let addr = std::net::TcpListener::bind(addr)
        .and_then(|l| l.local_addr())
        .map_err(|error| BrokerError::Bind { addr, error })?;

    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: 256 * 1024,
        max_inflight_count: 500,
        // Validation requires credentials beyond loopback; with them, no anonymous clients.
        auth: match (&cfg.username, &cfg.password) {
            (Some(u), Some(p)) => Some(HashMap::from([(u.clone(), p.clone())])),
            _ => None,
        },
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "v4-embedded".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 64,
            max_outgoing_packet_count: 200,
            // Small segments: the embedded broker is for demos and small sites, memory matters.
            max_segment_size: 256 * 1024,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    };
    // The broker's thread logs where its starter does (a gateway in a test has its own logs).
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            let _logs = tracing::dispatcher::set_default(&dispatch);
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .expect("spawn broker thread");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            tracing::info!(listen = %addr, "embedded MQTT broker running");
            return Ok(addr);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(BrokerError::NotListening(addr))
}

/// Without the feature, a configured embedded broker is an error.
#[cfg(not(feature = "embedded-broker"))]
pub async fn start(_cfg: &EmbeddedBrokerConfig) -> Result<std::net::SocketAddr, BrokerError> {
    Err(BrokerError::NotBuilt)
}
