//! API keys with names and roles, and the constant-time check of a presented key: the one
//! scheme of every listener that takes keys (the JSON-RPC server and the HTTP ingest).
//!
//! A key is configured as a plain string (an `admin` key named `key1`, `key2`… by position, so
//! no older configuration breaks) or as `{"name": "scada", "key": "${SCADA_KEY}", "role":
//! "viewer"}`. A request presents it as `Authorization: Bearer <key>` or `X-API-Key: <key>`.
//!
//! Comparison is constant-time: both sides are hashed (SHA-256, so the time does not depend on
//! the key's length either) and the digests compared with `subtle`, against every configured
//! key without stopping at the first match, so timing tells an attacker nothing about how much
//! of a guess was right. Keys are never logged; names and roles are.
//!
//! This module is in the core, below the RPC layer and the connectors, so both use it.

use std::borrow::Cow;
use std::fmt;

use http::{header, HeaderMap};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// What a key may do, least to most. The method table is in `rpc::roles`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Status, lists, live readings, `/metrics`.
    Viewer,
    /// A viewer that also reads and writes devices and starts and stops them.
    Operator,
    /// Everything, including reloading and changing the configuration.
    Admin,
}

impl Role {
    /// The name used in configuration, answers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn admin() -> Role {
    Role::Admin
}

/// One configured key.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(from = "KeyForm", into = "KeyObject")]
pub struct ApiKey {
    /// Shown in logs, audit events and `session.whoami` (default `key1`, `key2`… by position).
    pub name: Option<String>,
    /// The secret (`${VAR}` to keep it out of the file).
    pub key: String,
    /// What it may do (default `admin`).
    pub role: Role,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("key", &"***")
            .field("role", &self.role)
            .finish()
    }
}

/// The named form of a key.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct KeyObject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    key: String,
    #[serde(default = "admin")]
    role: Role,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "a key string or {\"name\", \"key\", \"role\"}")]
enum KeyForm {
    Plain(String),
    Named(KeyObject),
}

impl From<KeyForm> for ApiKey {
    fn from(f: KeyForm) -> Self {
        match f {
            KeyForm::Plain(key) => ApiKey {
                name: None,
                key,
                role: Role::Admin,
            },
            KeyForm::Named(o) => ApiKey {
                name: o.name,
                key: o.key,
                role: o.role,
            },
        }
    }
}

impl From<ApiKey> for KeyObject {
    fn from(k: ApiKey) -> Self {
        KeyObject {
            name: k.name,
            key: k.key,
            role: k.role,
        }
    }
}

impl ApiKey {
    /// A plain (admin) key.
    pub fn plain(key: impl Into<String>) -> Self {
        ApiKey {
            name: None,
            key: key.into(),
            role: Role::Admin,
        }
    }

    /// Its name, `key{index + 1}` when the configuration gives none.
    pub fn name_at(&self, index: usize) -> Cow<'_, str> {
        match &self.name {
            Some(n) => Cow::Borrowed(n),
            None => Cow::Owned(format!("key{}", index + 1)),
        }
    }
}

/// Who made a request: the name and role of the key it presented (or of the ticket it
/// redeemed). Put into the request's extensions by the listener's key check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's name; `local` for a loopback server without keys.
    pub name: String,
    /// The key's role.
    pub role: Role,
}

/// Checks `keys` (by their names where a name is missing or used twice, and their lengths)
/// and pushes one message per problem: `(path, message)`, the path relative to the list, e.g.
/// `[1].name`.
pub fn check_keys(keys: &[ApiKey], min_len: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut seen: Vec<Cow<'_, str>> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        if k.key.trim().len() < min_len.max(1) {
            let field = if k.name.is_some() { ".key" } else { "" };
            out.push((
                format!("[{i}]{field}"),
                if min_len <= 1 {
                    "must not be empty".to_string()
                } else {
                    format!("too short: use at least {min_len} characters (random, e.g. `openssl rand -hex 16`)")
                },
            ));
        }
        let name = k.name_at(i);
        if name.trim().is_empty() {
            out.push((format!("[{i}].name"), "must not be empty".into()));
        } else if seen.contains(&name) {
            out.push((
                format!("[{i}].name"),
                format!(
                    "duplicate key name \"{name}\": names tell keys apart in logs and audit events"
                ),
            ));
        }
        seen.push(name);
    }
    out
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

/// The index of the key in `keys` equal to `presented`, in time independent of the keys'
/// contents and of which one matched.
pub fn find_key(keys: &[ApiKey], presented: &[u8]) -> Option<usize> {
    let p = ring::digest::digest(&ring::digest::SHA256, presented);
    let mut found = subtle::CtOption::new(0u64, subtle::Choice::from(0));
    for (i, k) in keys.iter().enumerate() {
        let d = ring::digest::digest(&ring::digest::SHA256, k.key.as_bytes());
        let hit = d.as_ref().ct_eq(p.as_ref());
        found = subtle::CtOption::new(i as u64, hit).or_else(|| found);
    }
    Option::<u64>::from(found).map(|i| i as usize)
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

/// The caller `presented` identifies among `keys`, if any.
pub fn identify(keys: &[ApiKey], presented: &[u8]) -> Option<Caller> {
    find_key(keys, presented).map(|i| Caller {
        name: keys[i].name_at(i).into_owned(),
        role: keys[i].role,
    })
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

    fn keys() -> Vec<ApiKey> {
        serde_json::from_str(
            r#"["k-bar-1", {"name": "scada", "key": "another-key", "role": "viewer"},
                {"key": "third-key", "role": "operator"}]"#,
        )
        .unwrap()
    }

    #[test]
    fn plain_strings_are_admin_keys_named_by_position() {
        let k = keys();
        assert_eq!(k[0], ApiKey::plain("k-bar-1"));
        assert_eq!(k[0].name_at(0), "key1");
        assert_eq!(k[1].name_at(1), "scada");
        assert_eq!(k[1].role, Role::Viewer);
        assert_eq!(k[2].name_at(2), "key3");
        assert_eq!(k[2].role, Role::Operator);
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        let bad = serde_json::from_str::<Vec<ApiKey>>(r#"[{"key": "x", "role": "root"}]"#);
        assert!(bad.is_err());
        let unknown = serde_json::from_str::<Vec<ApiKey>>(r#"[{"key": "x", "rolle": "admin"}]"#);
        assert!(unknown.is_err());
        assert!(!format!("{:?}", k[1]).contains("another-key"));
    }

    #[test]
    fn keys_match_exactly_and_name_the_caller() {
        let k = keys();
        assert_eq!(find_key(&k, b"k-bar-1"), Some(0));
        assert_eq!(
            identify(&k, b"another-key"),
            Some(Caller {
                name: "scada".into(),
                role: Role::Viewer
            })
        );
        assert_eq!(find_key(&k, b"third-key"), Some(2));
        assert_eq!(find_key(&k, b"k-bar-"), None);
        assert_eq!(find_key(&k, b"k-bar-12"), None);
        assert_eq!(find_key(&k, b""), None);
        assert_eq!(find_key(&[], b"k-bar-1"), None);
    }

    #[test]
    fn names_must_differ_and_keys_be_long_enough() {
        let k: Vec<ApiKey> =
            serde_json::from_str(r#"["long-enough", {"name": "key1", "key": "abc"}]"#).unwrap();
        let e = check_keys(&k, 6);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].0, "[1].key");
        assert!(e[1].1.contains("duplicate key name \"key1\""));
    }

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
