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
use http::{header, HeaderMap, Request, Response, StatusCode};
use jsonrpsee::server::HttpBody;
use subtle::ConstantTimeEq;
use tower_http::validate_request::ValidateRequest;

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

/// The key a request presents: `Authorization: Bearer <key>`, else `X-API-Key: <key>`.
pub fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.as_bytes();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
            return Some(v[7..].trim_ascii());
        }
    }
    headers.get("x-api-key").map(|v| v.as_bytes().trim_ascii())
}

/// True when `presented` equals one of `keys`, in time independent of the keys' contents.
pub fn key_matches<K: AsRef<[u8]>>(keys: &[K], presented: &[u8]) -> bool {
    let p = ring::digest::digest(&ring::digest::SHA256, presented);
    let mut ok = subtle::Choice::from(0);
    for k in keys {
        let d = ring::digest::digest(&ring::digest::SHA256, k.as_ref());
        ok |= d.as_ref().ct_eq(p.as_ref());
    }
    ok.into()
}

/// A loopback address, also as an IPv4-mapped IPv6 address (a listener on `[::]`).
pub fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        v4 => v4.is_loopback(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_includes_mapped_addresses() {
        for (ip, want) in [
            ("127.0.0.1", true),
            ("127.8.9.1", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:10.0.0.1", false),
            ("10.0.0.1", false),
            ("fe80::1", false),
        ] {
            assert_eq!(is_loopback(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn keys_match_exactly() {
        let keys = ["k-bar-1", "another-key"];
        assert!(key_matches(&keys, b"k-bar-1"));
        assert!(key_matches(&keys, b"another-key"));
        assert!(!key_matches(&keys, b"k-bar-"));
        assert!(!key_matches(&keys, b"k-bar-12"));
        assert!(!key_matches(&keys, b""));
        assert!(!key_matches::<&str>(&[], b"k-bar-1"));
    }

    #[test]
    fn key_comes_from_bearer_or_x_api_key() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert("x-api-key", "abc".parse().unwrap());
        assert_eq!(presented_key(&h), Some(&b"abc"[..]));
        h.insert(header::AUTHORIZATION, "bearer  xyz ".parse().unwrap());
        assert_eq!(presented_key(&h), Some(&b"xyz"[..]));
        h.insert(header::AUTHORIZATION, "Basic Zm9v".parse().unwrap());
        assert_eq!(presented_key(&h), Some(&b"abc"[..]));
    }
}
