//! API-key check in front of the JSON-RPC server (HTTP requests and WebSocket handshakes).
//!
//! A request must carry `Authorization: Bearer <key>` or `X-API-Key: <key>` matching one of
//! `rpc.api_keys`; otherwise it gets HTTP 401 and never reaches a method. The keys are read from
//! the configuration in force, so a reload rotates them without a restart.
//!
//! Comparison is constant-time: both sides are hashed (SHA-256, so the time does not depend on
//! the key's length either) and the digests compared with `subtle`, against every configured
//! key without stopping at the first match, so timing tells an attacker nothing about how much
//! of a guess was right. Keys are never logged.
//!
//! One exception, opt-in: with `rpc.metrics_without_key_on_loopback`, `GET /metrics` from a
//! client on a loopback address (the [`super::PeerAddr`] the accept loop records) passes
//! without a key; every other request still needs one.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{header, Request, Response, StatusCode};
use jsonrpsee::server::HttpBody;
use tower_http::validate_request::ValidateRequest;

pub use osgate_core::auth::{is_loopback, key_matches, presented_key};

use crate::config::GatewayConfig;

/// The validator for `tower_http::validate_request::ValidateRequestHeaderLayer::custom`.
#[derive(Clone)]
pub struct ApiKeyAuth {
    config: Arc<ArcSwap<GatewayConfig>>,
    open_without_keys: bool,
}

impl ApiKeyAuth {
    /// Checks keys against `config`'s `rpc.api_keys`. With no keys configured requests pass
    /// only when `open_without_keys` (the server is bound to loopback), else all are refused.
    pub fn new(config: Arc<ArcSwap<GatewayConfig>>, open_without_keys: bool) -> Self {
        ApiKeyAuth {
            config,
            open_without_keys,
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

impl<B> ValidateRequest<B> for ApiKeyAuth {
    type ResponseBody = HttpBody;

    fn validate(&mut self, request: &mut Request<B>) -> Result<(), Response<HttpBody>> {
        let cfg = self.config.load();
        if cfg
            .rpc
            .as_ref()
            .is_some_and(|r| r.metrics_without_key_on_loopback)
            && super::metrics::is_metrics_request(request)
            && request
                .extensions()
                .get::<super::PeerAddr>()
                .is_some_and(|p| is_loopback(p.0.ip()))
        {
            return Ok(());
        }
        let keys = cfg.rpc.as_ref().map_or(&[][..], |r| r.api_keys.as_slice());
        if keys.is_empty() {
            return if self.open_without_keys {
                Ok(())
            } else {
                Err(unauthorized())
            };
        }
        match presented_key(request.headers()) {
            Some(k) if key_matches(keys, k) => Ok(()),
            _ => {
                tracing::debug!(uri = %request.uri(), "management request refused: missing or wrong API key");
                Err(unauthorized())
            }
        }
    }
}
