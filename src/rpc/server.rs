//! Start-up and the listeners: [`start`] binds `rpc.listen`, builds the one RPC module, serves
//! it over HTTP and WebSocket (HTTPS and WSS with `rpc.tls`) behind the middleware (console,
//! API-key check, metrics, request guard, roles), and starts the MQTT command path. osgate
//! accepts the connections (and does the TLS handshake) itself, so each request knows its
//! client's address ([`PeerAddr`]). [`Management`] is what is running; stopping it ends both.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::server::{BatchRequestConfig, Server, ServerConfig, ServerHandle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    auth, configure, console, guard, metrics, module, mqtt, roles, session, RpcContext, MAX_BATCH,
    MAX_CONNECTIONS, MAX_REQUEST_BODY, MAX_RESPONSE_BODY, TLS_HANDSHAKE_TIMEOUT,
};
use crate::service::{GatewayService, ServiceHandle};

/// The running management endpoints; [`Management::stop`] ends them.
pub struct Management {
    /// Where the JSON-RPC server listens (`None`: no `rpc` section).
    pub addr: Option<SocketAddr>,
    // Dropping the ServerHandle stops the server, so it lives as long as this.
    server: Option<ServerHandle>,
    mqtt: Option<(CancellationToken, JoinHandle<()>)>,
}

impl Management {
    /// Stops the server and the MQTT command client.
    pub async fn stop(mut self) {
        if let Some(h) = self.server.take() {
            let _ = h.stop();
            let _ = tokio::time::timeout(Duration::from_secs(2), h.stopped()).await;
        }
        if let Some((token, task)) = self.mqtt.take() {
            token.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

/// Starts the JSON-RPC server (when the config has an `rpc` section) and the MQTT command path
/// (when it has an MQTT sink). A port that cannot be bound is an error: an operator who
/// configured management expects it to work.
pub async fn start(
    svc: &GatewayService,
    service: ServiceHandle,
    config_path: Option<std::path::PathBuf>,
) -> anyhow::Result<Management> {
    let cfg = svc.config();
    let tickets = Arc::new(session::Tickets::new());
    // Bound before the module is built so that its counters can be shown and counted.
    let bound = match &cfg.rpc {
        Some(rpc) => {
            let listener = crate::net::listen::bind(rpc.listen)
                .map_err(|e| anyhow::anyhow!("rpc.listen {}: cannot listen: {e}", rpc.listen))?;
            let addr = listener.local_addr()?;
            let limits = crate::net::listen::Listener::new(
                &svc.registry().listeners,
                "rpc",
                addr,
                rpc.limits.clone(),
            );
            Some((listener, addr, limits))
        }
        None => None,
    };
    let ctx = RpcContext {
        config: svc.shared_config(),
        registry: svc.registry().clone(),
        control: svc.control().clone(),
        service,
        tap: svc.readings().tap().clone(),
        started: svc.started(),
        tickets: tickets.clone(),
        subscribers: Arc::new(tokio::sync::Semaphore::new(
            cfg.rpc.as_ref().map_or(0, |r| r.max_subscribers),
        )),
        listener: bound.as_ref().map(|b| b.2.clone()),
        configure: configure::ConfigState::new(config_path, svc.previous_config()),
    };
    let module = module(ctx);
    let mut mgmt = Management {
        addr: None,
        server: None,
        mqtt: None,
    };
    if let (Some(rpc), Some((listener, addr, bounded))) = (&cfg.rpc, bound) {
        let open = rpc.api_keys.is_empty();
        if open {
            // Config validation refuses a non-loopback address without keys.
            tracing::warn!(listen = %rpc.listen, "rpc.api_keys is empty: the management API is open to every local process (loopback only); add a key");
        }
        let auth = auth::ApiKeyAuth::new(
            svc.shared_config(),
            open && rpc.listen.ip().is_loopback(),
            tickets,
            Some(bounded.stats().clone()),
        );
        let metrics = metrics::MetricsLayer::new(metrics::MetricsSource {
            registry: svc.registry().clone(),
            out: svc.readings().clone(),
            started: svc.started(),
        });
        let middleware = tower::ServiceBuilder::new()
            .layer(console::ConsoleLayer)
            .layer(tower_http::validate_request::ValidateRequestHeaderLayer::custom(auth))
            .layer(metrics)
            .layer(guard::GuardLayer);
        let limits = ServerConfig::builder()
            .max_request_body_size(MAX_REQUEST_BODY)
            .max_response_body_size(MAX_RESPONSE_BODY)
            .max_connections((rpc.limits.max_connections as u32).max(MAX_CONNECTIONS))
            .set_batch_request_config(BatchRequestConfig::Limit(MAX_BATCH))
            .build();
        let builder = Server::builder()
            .set_config(limits)
            .set_http_middleware(middleware)
            .set_rpc_middleware(
                jsonrpsee::server::middleware::rpc::RpcServiceBuilder::new()
                    .layer(roles::RoleLayer),
            );
        let acceptor = match &rpc.tls {
            Some(tls) => {
                let tls = tls
                    .server_config()
                    .map_err(|e| anyhow::anyhow!("rpc.tls: {e}"))?;
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
            }
            None => None,
        };
        if acceptor.is_none() && !rpc.listen.ip().is_loopback() {
            tracing::warn!(listen = %rpc.listen, "the JSON-RPC API listens on a non-loopback address without TLS: API keys and data cross the network in plain text; set rpc.tls");
        }
        let (stop, handle) = jsonrpsee::server::stop_channel();
        let tls = acceptor.is_some();
        let services = builder.to_service_builder();
        let methods = module.clone();
        // jsonrpsee serves the connections it is given: accept TCP, take a place at the
        // bounded listener (deadlines, connection cap: crate::net::listen), finish the TLS
        // handshake (with rpc.tls) in the connection's own task (a slow client holds up no
        // one), tag requests with the client's address, then serve the stream. Stopping the
        // handle ends the loop and drains the connections gracefully.
        tokio::spawn(async move {
            loop {
                let (sock, peer) = tokio::select! {
                    c = async {
                        bounded.room().await;
                        crate::net::accept(&listener, "JSON-RPC").await
                    } => match c {
                        Some(c) => c,
                        None => continue,
                    },
                    _ = stop.clone().shutdown() => break,
                };
                let Some(slot) = bounded.admit(peer) else {
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let svc = hyper_util::service::TowerToHyperService::new(WithPeer {
                    inner: services.clone().build(methods.clone(), stop.clone()),
                    peer,
                });
                let acceptor = acceptor.clone();
                let stop = stop.clone();
                let bounded = bounded.clone();
                tokio::spawn(async move {
                    match acceptor {
                        None => bounded.serve(slot, sock, svc, stop.shutdown()).await,
                        Some(acceptor) => {
                            let tls = match tokio::time::timeout(
                                TLS_HANDSHAKE_TIMEOUT,
                                acceptor.accept(sock),
                            )
                            .await
                            {
                                Ok(Ok(tls)) => tls,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %crate::net::describe_error(&e), "JSON-RPC TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "JSON-RPC TLS handshake timed out");
                                    return;
                                }
                            };
                            bounded.serve(slot, tls, svc, stop.shutdown()).await
                        }
                    }
                });
            }
        });
        mgmt.server = Some(handle);
        mgmt.addr = Some(addr);
        if tls {
            tracing::info!(%addr, keys = rpc.api_keys.len(), mutual_tls = rpc.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some()), "JSON-RPC management listening (HTTPS and WSS)");
        } else {
            tracing::info!(%addr, keys = rpc.api_keys.len(), "JSON-RPC management listening (HTTP and WebSocket)");
        }
    }
    if let Some(sink) = mqtt::command_sink(cfg) {
        let token = CancellationToken::new();
        let methods = cfg.rpc.as_ref().filter(|r| r.mqtt).map(|_| module.clone());
        let task = mqtt::spawn(
            sink,
            cfg.gateway.id.clone(),
            svc.control().clone(),
            methods,
            token.clone(),
        );
        mgmt.mqtt = Some((token, task));
    }
    Ok(mgmt)
}

/// The client address of an HTTP request, put into its extensions by the accept loop (the
/// API-key check lets loopback clients read `/metrics` without a key when configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Puts the client's [`PeerAddr`] into every request of one connection.
#[derive(Clone)]
struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S, B> tower::Service<http::Request<B>> for WithPeer<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> S::Future {
        req.extensions_mut().insert(PeerAddr(self.peer));
        self.inner.call(req)
    }
}
