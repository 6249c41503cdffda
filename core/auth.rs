//! API keys as requests present them, and their comparison in constant time.
//!
//! Shared by every listener that takes a key (the JSON-RPC server, the HTTP ingest), so a
//! connector never imports the management layer to check one. Comparison hashes both sides
//! (SHA-256, so the time does not depend on the key's length either) and compares the digests
//! with `subtle`, against every configured key without stopping at the first match. Keys are
//! never logged.

use http::{header, HeaderMap};
use subtle::ConstantTimeEq;

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
