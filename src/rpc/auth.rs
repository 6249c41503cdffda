//! API-key check in front of the JSON-RPC server (HTTP requests and WebSocket handshakes).
//!
//! A request must carry `Authorization: Bearer <key>` or `X-API-Key: <key>` matching one of
//! `rpc.api_keys` (or, for a WebSocket upgrade, `?ticket=<t>` from `session.ticket`,
//! [`super::session`]); otherwise it gets HTTP 401 and never reaches a method. The caller's
//! name and role ([`Caller`]) go into the request's extensions, for the role check
//! ([`super::roles`]), `session.whoami` and the audit trail. The keys are read from the
//! configuration in force, so a reload rotates them without a restart. Matching is
//! constant-time ([`crate::auth`]); keys are never logged.
//!
//! A peer that presents wrong keys repeatedly is locked out for a while (HTTP 429 with
//! `Retry-After`, [`crate::net::lockout`]); other peers are unaffected.
//!
//! One exception, opt-in: with `rpc.metrics_without_key_on_loopback`, `GET /metrics` from a
//! client on a loopback address (the [`super::PeerAddr`] the accept loop records) passes
//! without a key; every other request still needs one.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{header, Request, Response, StatusCode};
use jsonrpsee::server::HttpBody;
use tower_http::validate_request::ValidateRequest;

use super::roles::OverWebSocket;
use super::session::{ticket_in_query, Tickets};
use crate::auth::{identify, Caller};
use crate::config::GatewayConfig;
use crate::net::listen::{Cause, ListenerStats};
use crate::net::lockout::AuthFailures;

pub use crate::auth::{is_loopback, key_matches, presented_key};

/// The validator for `tower_http::validate_request::ValidateRequestHeaderLayer::custom`.
#[derive(Clone)]
pub struct ApiKeyAuth {
    config: Arc<ArcSwap<GatewayConfig>>,
    open_without_keys: bool,
    failures: Arc<AuthFailures>,
    tickets: Arc<Tickets>,
    stats: Option<Arc<ListenerStats>>,
}

impl ApiKeyAuth {
    /// Checks keys against `config`'s `rpc.api_keys`. With no keys configured requests pass
    /// only when `open_without_keys` (the server is bound to loopback), else all are refused.
    /// `tickets` are redeemed by WebSocket upgrades; `stats` count lockouts.
    pub fn new(
        config: Arc<ArcSwap<GatewayConfig>>,
        open_without_keys: bool,
        tickets: Arc<Tickets>,
        stats: Option<Arc<ListenerStats>>,
    ) -> Self {
        ApiKeyAuth {
            config,
            open_without_keys,
            failures: Arc::new(AuthFailures::new()),
            tickets,
            stats,
        }
    }
}

fn unauthorized() -> Response<HttpBody> {
    let mut r = Response::new(HttpBody::from(
        r#"{"error":"unauthorized: missing or wrong API key (Authorization: Bearer <key> or X-API-Key)"}"#,
    ));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// HTTP 429 with `Retry-After` (whole seconds, at least 1).
pub fn locked_out(retry_after: std::time::Duration) -> Response<HttpBody> {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let mut r = Response::new(HttpBody::from(
        r#"{"error":"too many wrong API keys from this address; retry later"}"#,
    ));
    *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(secs.max(1)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

impl<B> ValidateRequest<B> for ApiKeyAuth {
    type ResponseBody = HttpBody;

    fn validate(&mut self, request: &mut Request<B>) -> Result<(), Response<HttpBody>> {
        let peer = request.extensions().get::<super::PeerAddr>().map(|p| p.0);
        if let Some(left) = peer.and_then(|p| self.failures.locked(p.ip())) {
            if let Some(s) = &self.stats {
                s.cut(Cause::LockedOut, peer);
            }
            return Err(locked_out(left));
        }
        if is_upgrade(request) {
            request.extensions_mut().insert(OverWebSocket);
        }
        let cfg = self.config.load();
        if cfg
            .rpc
            .as_ref()
            .is_some_and(|r| r.metrics_without_key_on_loopback)
            && super::metrics::is_metrics_request(request)
            && peer.is_some_and(|p| is_loopback(p.ip()))
        {
            return Ok(());
        }
        let keys = cfg.rpc.as_ref().map_or(&[][..], |r| r.api_keys.as_slice());
        if keys.is_empty() && self.open_without_keys {
            request.extensions_mut().insert(super::roles::local());
            return Ok(());
        }
        let caller: Option<Caller> = match presented_key(request.headers()) {
            Some(k) => identify(keys, k),
            None if is_upgrade(request) => {
                ticket_in_query(request.uri().query()).and_then(|t| self.tickets.redeem(t))
            }
            None => None,
        };
        match caller {
            Some(c) => {
                request.extensions_mut().insert(c);
                Ok(())
            }
            None => {
                if let Some(p) = peer {
                    if self.failures.failed(p.ip(), "rpc") {
                        if let Some(s) = &self.stats {
                            s.cut(Cause::LockedOut, peer);
                        }
                    }
                }
                Err(unauthorized())
            }
        }
    }
}
