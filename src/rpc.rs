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
//! Method names, params and results are part of the public interface (docs/management.md,
//! "JSON-RPC").
//!
//! [`ServiceCommand`]: crate::service::ServiceCommand

pub mod auth;
mod channels;
pub mod client;
pub mod configure;
pub mod console;
pub mod guard;
pub mod health;
#[cfg(feature = "mbus")]
mod mbus;
pub mod metrics;
pub mod mqtt;
pub mod roles;
pub mod session;
mod tools;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonrpsee::server::{
    BatchRequestConfig, PendingSubscriptionSink, Server, ServerConfig, ServerHandle,
    SubscriptionMessage,
};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::RpcModule;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::GatewayConfig;
use crate::connectors::ConnectorConfig;
use crate::control::{ControlRegistry, DeviceError};
use crate::pipeline::ReadingTap;
use crate::reading::{Batch, Reading, Timestamp};
use crate::service::{ConnectorAction, GatewayService, ServiceHandle};
use crate::status::{DeviceStatus, StatusRegistry};

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

/// osgate's application error codes: 1000–1999, outside the range JSON-RPC and jsonrpsee use
/// for themselves (-32768..-32000), so a code always says who answered. The table is in
/// `docs/security.md` ("Error codes"); the move from the -320xx numbers is in CHANGELOG.md.
pub mod codes {
    /// No such device.
    pub const UNKNOWN_DEVICE: i32 = 1001;
    /// No such channel on the device.
    pub const UNKNOWN_CHANNEL: i32 = 1002;
    /// The channel is not writable.
    pub const NOT_WRITABLE: i32 = 1003;
    /// The value does not fit the channel's type or range.
    pub const OUT_OF_RANGE: i32 = 1004;
    /// The device is disabled.
    pub const DISABLED: i32 = 1005;
    /// The device does not answer (or its connector is stopped).
    pub const OFFLINE: i32 = 1006;
    /// The device answered with an error.
    pub const DEVICE_FAILED: i32 = 1007;
    /// No such connector.
    pub const UNKNOWN_CONNECTOR: i32 = 1010;
    /// The connector could not be changed.
    pub const CONNECTOR_FAILED: i32 = 1011;
    /// The reload was rejected; the running configuration stays.
    pub const RELOAD_FAILED: i32 = 1020;
    /// `config.apply`/`config.rollback`: the configuration is invalid (`data.errors`).
    pub const CONFIG_INVALID: i32 = 1021;
    /// `config.apply`/`config.rollback`: a fleet server owns the configuration.
    pub const CONFIG_REMOTE: i32 = 1022;
    /// `config.apply`/`config.rollback`: the configuration file cannot be written.
    pub const CONFIG_NOT_SAVED: i32 = 1023;
    /// `config.rollback`: there is no previous configuration.
    pub const NO_PREVIOUS: i32 = 1024;
    /// A batch request holds more than [`MAX_BATCH`](super::MAX_BATCH) calls.
    pub const BATCH_TOO_LARGE: i32 = 1030;
    /// The method streams notifications and needs a WebSocket (called over HTTP or MQTT).
    pub const WEBSOCKET_REQUIRED: i32 = 1031;
    /// The key's role does not allow the method (`rpc::roles`); nothing ran.
    pub const FORBIDDEN: i32 = 1040;
    /// `rpc.max_subscribers` live-reading subscriptions are open already.
    pub const TOO_MANY_SUBSCRIBERS: i32 = 1041;
}

/// What every method reads.
pub struct RpcContext {
    config: Arc<ArcSwap<GatewayConfig>>,
    registry: Arc<StatusRegistry>,
    control: Arc<ControlRegistry>,
    service: ServiceHandle,
    tap: ReadingTap,
    started: i64,
    tickets: Arc<session::Tickets>,
    subscribers: Arc<tokio::sync::Semaphore>,
    listener: Option<Arc<crate::net::listen::Listener>>,
    configure: configure::ConfigState,
}

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

// ---- parameters ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectorParams {
    connector: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicesParams {
    #[serde(default)]
    connector: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceParams {
    device: String,
    #[serde(default)]
    connector: Option<String>,
    /// `device.status` adds the configured channels ([`channels`]).
    #[serde(default)]
    channels: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteParams {
    device: String,
    channel: String,
    value: Value,
    #[serde(default)]
    connector: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeParams {
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    channel: Option<String>,
}

/// Parses `params` as every method would (the request-parsing property test).
#[cfg(test)]
pub(crate) fn parse_all_params(params: Option<&str>) {
    let p = Params::new(params);
    let _ = p.parse::<ConnectorParams>();
    let _ = p.parse::<DeviceParams>();
    let _ = p.parse::<WriteParams>();
    let _ = parse_optional::<DevicesParams>(&p);
    let _ = parse_optional::<SubscribeParams>(&p);
}

/// Cases per property test of request parsers (`OSGATE_FUZZ_CASES`, default 256).
#[cfg(test)]
pub(crate) fn fuzz_cases() -> u32 {
    crate::config::fuzz_cases()
}

/// Params that may be left out entirely (`null`, absent, `[]`, `{}`).
fn parse_optional<T: Default + serde::de::DeserializeOwned>(
    params: &Params<'_>,
) -> Result<T, ErrorObjectOwned> {
    if params.as_str().is_none() {
        return Ok(T::default());
    }
    params.parse()
}

fn app_error(code: i32, message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code, message.into(), None::<()>)
}

fn device_error(e: DeviceError) -> ErrorObjectOwned {
    let code = match &e {
        DeviceError::UnknownDevice(_) => codes::UNKNOWN_DEVICE,
        DeviceError::UnknownChannel { .. } => codes::UNKNOWN_CHANNEL,
        DeviceError::NotWritable(_) => codes::NOT_WRITABLE,
        DeviceError::OutOfRange { .. } => codes::OUT_OF_RANGE,
        DeviceError::Disabled(_) => codes::DISABLED,
        DeviceError::Offline(..) => codes::OFFLINE,
        DeviceError::Failed(_) => codes::DEVICE_FAILED,
    };
    app_error(code, e.to_string())
}

// ---- views ----

impl RpcContext {
    /// Records one change made by a call (who and from where come from its extensions).
    #[allow(clippy::too_many_arguments)]
    fn audit<T, E: std::fmt::Display>(
        &self,
        ext: &jsonrpsee::Extensions,
        method: &str,
        connector: Option<&str>,
        device: Option<&str>,
        channel: Option<&str>,
        value: Option<&Value>,
        result: &Result<T, E>,
    ) {
        let caller = ext
            .get::<crate::auth::Caller>()
            .cloned()
            .unwrap_or_else(roles::local);
        let err = result.as_ref().err().map(|e| e.to_string());
        self.control.audit().record(&crate::audit::AuditEvent {
            gateway: &self.config.load().gateway.id,
            who: &caller.name,
            peer: ext.get::<PeerAddr>().map(|p| p.0),
            method,
            connector,
            device,
            channel,
            value,
            before: None,
            result: err.as_deref().map_or(Ok(()), Err),
        });
    }

    fn connector_config(&self, cfg: &GatewayConfig, name: &str) -> Option<ConnectorConfig> {
        cfg.connectors.iter().find(|c| &*c.name == name).cloned()
    }

    /// The connector serving `device`: the one given (checked), else looked up.
    fn resolve(&self, device: &str, connector: Option<&str>) -> Result<String, ErrorObjectOwned> {
        let cfg = self.config.load();
        let owner = cfg
            .connectors
            .iter()
            .find(|c| c.devices.iter().any(|d| &**d == device))
            .map(|c| c.name.to_string())
            .or_else(|| self.control.connector_of(device).map(|c| c.to_string()));
        match (owner, connector) {
            (Some(o), None) => Ok(o),
            (Some(o), Some(c)) if o == c => Ok(o),
            (Some(_), Some(c)) if self.connector_config(&cfg, c).is_none() => Err(app_error(
                codes::UNKNOWN_CONNECTOR,
                format!("unknown connector \"{c}\""),
            )),
            _ => Err(device_error(DeviceError::UnknownDevice(device.to_string()))),
        }
    }

    fn connector_enabled(&self, c: &ConnectorConfig) -> bool {
        self.control
            .connector_override(&c.name)
            .unwrap_or(c.enabled)
    }

    fn device_view(
        &self,
        connector: &str,
        connector_on: bool,
        device: &str,
        st: Option<&DeviceStatus>,
    ) -> Value {
        let enabled = self
            .control
            .device_enabled(connector, device)
            .or(st.map(|s| s.enabled))
            .unwrap_or(true);
        json!({
            "connector": connector,
            "device": device,
            "running": connector_on && enabled && st.is_some_and(|s| s.running),
            "online": connector_on && st.is_some_and(|s| s.online),
            "health": match st {
                Some(s) if connector_on && enabled => s.health.as_str(),
                _ => "stopped",
            },
            "bad_channels": st.map_or(0, |s| s.bad_channels),
            "enabled": enabled,
            "last_ok": st.and_then(|s| s.last_ok).map(|t| t.0),
            "errors": st.map_or(0, |s| s.errors),
            "last_error": st.and_then(|s| s.last_error.clone()),
        })
    }

    fn connector_view(&self, c: &ConnectorConfig) -> Value {
        let name = &c.name;
        let on = self.connector_enabled(c);
        let health = self
            .registry
            .connectors()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| h);
        let statuses = health
            .as_ref()
            .map(|h| h.devices.lock().expect("status lock").clone())
            .unwrap_or_default();
        // The configured devices, then those a listener created at run time.
        let devices: Vec<Value> = c
            .devices
            .iter()
            .chain(statuses.keys().filter(|d| !c.devices.contains(d)))
            .map(|d| self.device_view(name, on, d, statuses.get(d)))
            .collect();
        let inputs = health
            .as_ref()
            .map(|h| h.inputs_snapshot())
            .unwrap_or_default();
        let degraded = devices
            .iter()
            .any(|d| d["enabled"] == true && d["health"] != "online");
        json!({
            "name": &**name,
            "protocol": c.protocol,
            "enabled": on,
            "running": on,
            "health": if !on { "stopped" } else if degraded { "degraded" } else { "ok" },
            "counters": health.as_ref().map(|h| h.counters.snapshot()).unwrap_or_default(),
            "last_error": health.as_ref().and_then(|h| h.last_error.lock().expect("status lock").clone()),
            "inputs": inputs,
            "devices": devices,
        })
    }

    fn connectors(&self) -> Vec<Value> {
        let cfg = self.config.load();
        cfg.connectors
            .iter()
            .map(|c| self.connector_view(c))
            .collect()
    }

    fn sinks(&self) -> Vec<Value> {
        let cfg = self.config.load();
        let counters = self.registry.sinks();
        cfg.sinks
            .iter()
            .map(|s| {
                let c = counters
                    .iter()
                    .find(|(n, _)| **n == *s.name())
                    .map(|(_, c)| c.snapshot());
                let health = match &c {
                    _ if !s.common.enabled => "stopped",
                    Some(c) if !c.connected && c.last_error.is_some() => "disconnected",
                    Some(c) if c.buffered > 0 => "backlog",
                    _ => "ok",
                };
                json!({
                    "name": s.name(),
                    "type": s.raw.get("type").cloned().unwrap_or(Value::Null),
                    "enabled": s.common.enabled,
                    "health": health,
                    "connected": c.as_ref().is_some_and(|c| c.connected),
                    "last_error": c.as_ref().and_then(|c| c.last_error.clone()),
                    "counters": c.unwrap_or_default(),
                })
            })
            .collect()
    }

    fn status(&self) -> Value {
        let now = Timestamp::now().0;
        let cfg = self.config.load();
        let info = self.registry.config.borrow().clone();
        let mut config = serde_json::to_value(&info).unwrap_or_else(|_| json!({}));
        if let Some(o) = config.as_object_mut() {
            o.insert("age_ms".into(), info.age_ms(now).into());
        }
        json!({
            "gateway": cfg.gateway.id,
            "version": crate::VERSION,
            "commit": crate::COMMIT,
            "started": self.started,
            "uptime_s": (now - self.started).max(0) / 1000,
            "config": config,
            "connectors": self.connectors(),
            "sinks": self.sinks(),
            "uplink": self.registry.uplink.to_json(),
        })
    }
}

fn reading_json(r: &Reading) -> Value {
    let mut m = Map::new();
    m.insert("channel".into(), r.channel.to_string().into());
    m.insert("value".into(), r.value.to_json());
    m.insert("ts".into(), r.ts.0.into());
    m.insert("quality".into(), r.quality.as_str().into());
    if let Some(reason) = r.quality.reason() {
        m.insert("reason".into(), reason.into());
    }
    if let Some(u) = &r.unit {
        m.insert("unit".into(), u.to_string().into());
    }
    Value::Object(m)
}

/// A batch as sent to `readings.subscribe` subscribers, keeping only `channel` if given.
fn batch_json(b: &Batch, channel: Option<&str>) -> Option<Value> {
    let readings: Vec<Value> = b
        .readings
        .iter()
        .filter(|r| channel.is_none_or(|c| *r.channel == *c))
        .map(reading_json)
        .collect();
    if readings.is_empty() {
        return None;
    }
    Some(json!({"connector": &*b.connector, "device": &*b.device, "readings": readings}))
}

/// Hides secrets in a configuration (as written, `${VAR}` not yet replaced): API keys,
/// passwords, tokens, request headers and passwords inside URLs.
pub fn redact(v: &Value) -> Value {
    const HIDDEN: &str = "***";
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let key = k.to_ascii_lowercase();
                    let out = if key == "api_keys" {
                        match v {
                            Value::Array(a) => {
                                Value::Array(a.iter().map(|_| HIDDEN.into()).collect())
                            }
                            _ => HIDDEN.into(),
                        }
                    } else if key == "headers" {
                        match v {
                            Value::Object(h) => Value::Object(
                                h.keys().map(|k| (k.clone(), HIDDEN.into())).collect(),
                            ),
                            _ => HIDDEN.into(),
                        }
                    } else if ["password", "token", "secret", "api_key"]
                        .iter()
                        .any(|s| key == *s || key.ends_with(&format!("_{s}")))
                        && !v.is_null()
                    {
                        HIDDEN.into()
                    } else {
                        redact(v)
                    };
                    (k.clone(), out)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        Value::String(s) => Value::String(redact_url(s)),
        other => other.clone(),
    }
}

/// `scheme://user:password@host…` → `scheme://user:***@host…`.
fn redact_url(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{masked}@{host}{}", &rest[authority_end..])
        }
        None => s.to_string(),
    }
}

// ---- the module ----

fn register(
    m: &mut RpcModule<RpcContext>,
    name: &'static str,
    f: impl Fn(Params<'_>, &RpcContext) -> Result<Value, ErrorObjectOwned> + Send + Sync + 'static,
) {
    m.register_method(name, move |p, ctx, _| f(p, ctx))
        .expect("method names are unique");
}

/// Builds the RPC module (HTTP, WebSocket and MQTT all serve this one).
fn module(ctx: RpcContext) -> RpcModule<RpcContext> {
    let mut m = RpcModule::new(ctx);
    #[cfg(feature = "mbus")]
    mbus::register(&mut m);
    session::register(&mut m);
    configure::register(&mut m);
    tools::register(&mut m);
    register(&mut m, "gateway.status", |_, ctx| Ok(ctx.status()));
    register(&mut m, "gateway.config", |_, ctx| {
        let source: Value = serde_json::from_str(&ctx.config.load().source)
            .map_err(|e| ErrorObjectOwned::owned(-32603, e.to_string(), None::<()>))?;
        Ok(redact(&source))
    });
    register(&mut m, "connectors.list", |_, ctx| {
        Ok(ctx.connectors().into())
    });
    register(&mut m, "connector.status", |p, ctx| {
        let p: ConnectorParams = p.parse()?;
        let cfg = ctx.config.load();
        ctx.connector_config(&cfg, &p.connector)
            .map(|c| ctx.connector_view(&c))
            .ok_or_else(|| {
                app_error(
                    codes::UNKNOWN_CONNECTOR,
                    format!("unknown connector \"{}\"", p.connector),
                )
            })
    });
    register(&mut m, "devices.list", |p, ctx| {
        let p: DevicesParams = parse_optional(&p)?;
        let cfg = ctx.config.load();
        if let Some(c) = &p.connector {
            if ctx.connector_config(&cfg, c).is_none() {
                return Err(app_error(
                    codes::UNKNOWN_CONNECTOR,
                    format!("unknown connector \"{c}\""),
                ));
            }
        }
        let devices: Vec<Value> = ctx
            .connectors()
            .into_iter()
            .filter(|c| p.connector.as_deref().is_none_or(|n| c["name"] == n))
            .flat_map(|mut c| match c["devices"].take() {
                Value::Array(d) => d,
                _ => Vec::new(),
            })
            .collect();
        Ok(devices.into())
    });
    register(&mut m, "device.status", |p, ctx| {
        let p: DeviceParams = p.parse()?;
        let connector = ctx.resolve(&p.device, p.connector.as_deref())?;
        let cfg = ctx.config.load();
        let c = ctx
            .connector_config(&cfg, &connector)
            .ok_or_else(|| device_error(DeviceError::UnknownDevice(p.device.clone())))?;
        let view = ctx.connector_view(&c);
        let mut found = view["devices"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["device"] == p.device.as_str()))
            .cloned()
            .unwrap_or(Value::Null);
        if p.channels && found.is_object() {
            found["channels"] = channels::of(&cfg.source, &p.device).into();
        }
        Ok(found)
    });
    for (name, enabled) in [("device.enable", true), ("device.disable", false)] {
        m.register_method(name, move |p, ctx, ext| {
            let p: DeviceParams = p.parse()?;
            let connector = ctx.resolve(&p.device, p.connector.as_deref())?;
            let res = ctx
                .control
                .set_device_enabled(&connector, &p.device, enabled)
                .map_err(device_error);
            ctx.audit(ext, name, Some(&connector), Some(&p.device), None, None, &res);
            res?;
            tracing::info!(%connector, device = %p.device, enabled, "device enabled/disabled over RPC");
            Ok::<_, ErrorObjectOwned>(
                json!({"connector": connector, "device": p.device, "enabled": enabled}),
            )
        })
        .expect("unique");
    }
    m.register_async_method("gateway.reload", |_, ctx, ext| async move {
        let res = ctx.service.reload(None).await;
        ctx.audit(&ext, "gateway.reload", None, None, None, None, &res);
        match res {
            Ok(s) => Ok(json!({
                "connectors_started": s.connectors_started,
                "connectors_stopped": s.connectors_stopped,
                "connectors_kept": s.connectors_kept,
                "sinks_started": s.sinks_started,
                "sinks_stopped": s.sinks_stopped,
            })),
            Err(e) => Err(app_error(
                codes::RELOAD_FAILED,
                format!("reload rejected: {e}"),
            )),
        }
    })
    .expect("unique");
    for (name, action) in [
        ("connector.enable", ConnectorAction::Enable),
        ("connector.disable", ConnectorAction::Disable),
        ("connector.restart", ConnectorAction::Restart),
    ] {
        m.register_async_method(name, move |p, ctx, ext| async move {
            let p: ConnectorParams = p.parse()?;
            if ctx
                .connector_config(&ctx.config.load(), &p.connector)
                .is_none()
            {
                return Err(app_error(
                    codes::UNKNOWN_CONNECTOR,
                    format!("unknown connector \"{}\"", p.connector),
                ));
            }
            let res = ctx.service.connector(&p.connector, action).await;
            ctx.audit(&ext, name, Some(&p.connector), None, None, None, &res);
            let running = res.map_err(|e| app_error(codes::CONNECTOR_FAILED, e))?;
            Ok::<_, ErrorObjectOwned>(json!({"connector": p.connector, "running": running}))
        })
        .expect("unique");
    }
    m.register_async_method("device.read", |p, ctx, _| async move {
        let p: DeviceParams = p.parse()?;
        let connector = ctx.resolve(&p.device, p.connector.as_deref())?;
        let readings =
            tokio::time::timeout(DEVICE_TIMEOUT, ctx.control.read(&connector, &p.device))
                .await
                .unwrap_or_else(|_| {
                    Err(DeviceError::Offline(
                        p.device.clone(),
                        format!("no answer within {DEVICE_TIMEOUT:?}"),
                    ))
                })
                .map_err(device_error)?;
        let readings: Vec<Value> = readings.iter().map(reading_json).collect();
        Ok::<_, ErrorObjectOwned>(
            json!({"connector": connector, "device": p.device, "readings": readings}),
        )
    })
    .expect("unique");
    m.register_async_method("device.write", |p, ctx, ext| async move {
        let p: WriteParams = p.parse()?;
        let connector = ctx.resolve(&p.device, p.connector.as_deref())?;
        let res = write(
            &ctx.control,
            &connector,
            &p.device,
            &p.channel,
            p.value.clone(),
        )
        .await;
        let value = res.as_ref().unwrap_or(&p.value);
        ctx.audit(
            &ext,
            "device.write",
            Some(&connector),
            Some(&p.device),
            Some(&p.channel),
            Some(value),
            &res,
        );
        let written = res.map_err(device_error)?;
        Ok::<_, ErrorObjectOwned>(json!({
            "connector": connector, "device": p.device, "channel": p.channel, "value": written,
        }))
    })
    .expect("unique");
    m.register_subscription(
        "readings.subscribe",
        "readings",
        "readings.unsubscribe",
        subscribe,
    )
    .expect("unique");
    m
}

/// The one write path of `device.write` and MQTT commands.
pub async fn write(
    control: &ControlRegistry,
    connector: &str,
    device: &str,
    channel: &str,
    value: Value,
) -> Result<Value, DeviceError> {
    let res = tokio::time::timeout(
        DEVICE_TIMEOUT,
        control.write(connector, device, channel, value),
    )
    .await
    .unwrap_or_else(|_| {
        Err(DeviceError::Offline(
            device.to_string(),
            format!("no answer within {DEVICE_TIMEOUT:?}"),
        ))
    });
    match &res {
        Ok(v) => tracing::info!(%connector, %device, %channel, value = %v, "channel written"),
        Err(e) => tracing::warn!(%connector, %device, %channel, error = %e, "write refused"),
    }
    res
}

async fn subscribe(
    params: Params<'static>,
    pending: PendingSubscriptionSink,
    ctx: Arc<RpcContext>,
    _: jsonrpsee::Extensions,
) -> jsonrpsee::core::SubscriptionResult {
    let p: SubscribeParams = match parse_optional(&params) {
        Ok(p) => p,
        Err(e) => {
            pending.reject(e).await;
            return Ok(());
        }
    };
    if let Some(d) = &p.device {
        if let Err(e) = ctx.resolve(d, None) {
            pending.reject(e).await;
            return Ok(());
        }
    }
    // At most rpc.max_subscribers at once: each holds a queue of batches.
    let Ok(_permit) = ctx.subscribers.clone().try_acquire_owned() else {
        if let Some(l) = &ctx.listener {
            l.stats().cut(crate::net::listen::Cause::Subscribers, None);
        }
        pending
            .reject(app_error(
                codes::TOO_MANY_SUBSCRIBERS,
                format!(
                    "{} live-reading subscriptions are open, the most rpc.max_subscribers allows; close one or raise it",
                    ctx.config.load().rpc.as_ref().map_or(0, |r| r.max_subscribers)
                ),
            ))
            .await;
        return Ok(());
    };
    // Subscribe before accepting so that nothing sent after the answer is missed.
    let mut tap = ctx.tap.subscribe();
    let mut sink = pending.accept().await?;
    loop {
        tokio::select! {
            _ = sink.closed() => break,
            r = tap.rx.recv() => match r {
                Ok(b) => {
                    if p.device.as_deref().is_some_and(|d| *b.device != *d) {
                        continue;
                    }
                    let Some(v) = batch_json(&b, p.channel.as_deref()) else { continue };
                    let msg = SubscriptionMessage::from(serde_json::value::to_raw_value(&v)?);
                    // A full connection buffer skips this batch: a slow client never slows
                    // the pipeline.
                    if let Err(jsonrpsee::core::server::TrySendError::Closed(_)) = sink.try_send(msg) {
                        break;
                    }
                }
                Err(RecvError::Lagged(n)) => tracing::debug!(skipped = n, "slow readings subscriber skipped batches"),
                Err(RecvError::Closed) => break,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_keys_passwords_headers_and_url_passwords() {
        let src = json!({
            "rpc": {"listen": "127.0.0.1:1", "api_keys": ["secret-key-1", "secret-key-2"]},
            "remote": {"url": "https://fleet/cfg", "headers": {"Authorization": "Bearer abc"}},
            "sinks": [{"name": "m", "url": "mqtt://user:pw@broker:1883", "password": "${MQ_PW}", "username": "u"}],
            "connectors": [{"name": "c", "token": "t0k", "password": null}]
        });
        let r = redact(&src);
        let text = r.to_string();
        for secret in [
            "secret-key-1",
            "secret-key-2",
            "Bearer abc",
            "pw@",
            "${MQ_PW}",
            "t0k",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(r["rpc"]["api_keys"], json!(["***", "***"]));
        assert_eq!(r["sinks"][0]["url"], "mqtt://user:***@broker:1883");
        assert_eq!(r["sinks"][0]["username"], "u");
        assert_eq!(r["remote"]["url"], "https://fleet/cfg");
        assert_eq!(r["connectors"][0]["password"], Value::Null);
    }

    #[tokio::test]
    async fn the_tap_feeds_listeners_only_and_a_slow_one_skips() {
        use crate::pipeline::{Envelope, ReadingSender};
        let out = ReadingSender::new(Vec::new());
        let batch = |n: u64| {
            Envelope::Batch(Arc::new(Batch {
                connector: "c".into(),
                device: "d".into(),
                readings: vec![Reading {
                    device: "d".into(),
                    channel: "x".into(),
                    value: crate::reading::Value::U64(n),
                    ts: Timestamp(n as i64),
                    quality: crate::reading::Quality::Good,
                    unit: None,
                }],
            }))
        };
        // Nobody listens: nothing is kept.
        out.try_send(batch(0));
        let mut slow = out.tap().subscribe();
        assert!(slow.rx.is_empty());
        // A listener that never reads: sending never waits, the listener lags.
        let n = ReadingTap::CAPACITY as u64 + 10;
        for i in 1..=n {
            tokio::time::timeout(Duration::from_secs(1), out.send(batch(i)))
                .await
                .expect("the tap never blocks the pipeline");
        }
        assert!(matches!(slow.rx.recv().await, Err(RecvError::Lagged(10))));
        let next = slow.rx.recv().await.unwrap();
        assert_eq!(next.readings[0].value, crate::reading::Value::U64(11));
        drop(slow);
        let fresh = out.tap().subscribe();
        out.try_send(batch(99));
        drop(fresh);
    }

    #[test]
    fn urls_without_password_stay() {
        assert_eq!(redact_url("mqtt://host:1883/x@y"), "mqtt://host:1883/x@y");
        assert_eq!(redact_url("mqtt://user@host"), "mqtt://user@host");
        assert_eq!(redact_url("plain text"), "plain text");
    }

    #[test]
    fn batch_filter_keeps_the_channel_asked_for() {
        use crate::reading::{Quality, Value as V};
        let r = |c: &str| Reading {
            device: "d".into(),
            channel: c.into(),
            value: V::U64(1),
            ts: Timestamp(5),
            quality: Quality::Good,
            unit: None,
        };
        let b = Batch {
            connector: "c".into(),
            device: "d".into(),
            readings: vec![r("a"), r("b")],
        };
        assert_eq!(
            batch_json(&b, None).unwrap()["readings"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let only = batch_json(&b, Some("b")).unwrap();
        assert_eq!(
            only["readings"],
            json!([{"channel": "b", "value": 1, "ts": 5, "quality": "good"}])
        );
        assert!(batch_json(&b, Some("zz")).is_none());
    }
}
