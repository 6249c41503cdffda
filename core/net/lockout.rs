//! Failed keys cost time: per-peer counting of wrong or missing API keys on a listener.
//!
//! A peer (an IP address) that presents [`FAILURES`] wrong keys within [`WINDOW`] is locked out
//! for [`LOCKOUT`]: its requests get HTTP 429 with `Retry-After` before any key is looked at,
//! while other peers are served as before. A failed authentication is logged once per peer per
//! minute (with the count since), not once per request, so a guessing client cannot flood the
//! log. At most [`MAX_PEERS`] peers are remembered, so memory stays bounded too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures within [`WINDOW`] that lock a peer out.
pub const FAILURES: u32 = 10;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long a peer stays locked out.
pub const LOCKOUT: Duration = Duration::from_secs(60);
/// Peers remembered at most; the stalest is forgotten first.
pub const MAX_PEERS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Peer {
    window_start: Instant,
    failures: u32,
    locked_until: Option<Instant>,
    logged: Option<Instant>,
    unlogged: u32,
    seen: Instant,
}

/// The failure book of one listener.
#[derive(Debug, Default)]
pub struct AuthFailures {
    peers: Mutex<HashMap<IpAddr, Peer>>,
}

impl AuthFailures {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// The time `ip` is still locked out, if it is.
    pub fn locked(&self, ip: IpAddr) -> Option<Duration> {
        self.locked_at(ip, Instant::now())
    }

    fn locked_at(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let peers = self.peers.lock().expect("auth failures lock");
        peers
            .get(&ip)
            .and_then(|p| p.locked_until)
            .filter(|u| *u > now)
            .map(|u| u - now)
    }

    /// Records a failed authentication from `ip` on `listener` (logged once a minute per peer).
    /// Returns true when this failure locked the peer out.
    pub fn failed(&self, ip: IpAddr, listener: &str) -> bool {
        self.failed_at(ip, listener, Instant::now())
    }

    fn failed_at(&self, ip: IpAddr, listener: &str, now: Instant) -> bool {
        let mut peers = self.peers.lock().expect("auth failures lock");
        if peers.len() >= MAX_PEERS && !peers.contains_key(&ip) {
            peers.retain(|_, p| now.duration_since(p.seen) < WINDOW.max(LOCKOUT));
            if peers.len() >= MAX_PEERS {
                if let Some(oldest) = peers.iter().min_by_key(|(_, p)| p.seen).map(|(k, _)| *k) {
                    peers.remove(&oldest);
                }
            }
        }
        let p = peers.entry(ip).or_insert(Peer {
            window_start: now,
            failures: 0,
            locked_until: None,
            logged: None,
            unlogged: 0,
            seen: now,
        });
        p.seen = now;
        if now.duration_since(p.window_start) >= WINDOW {
            p.window_start = now;
            p.failures = 0;
        }
        p.failures += 1;
        p.unlogged += 1;
        let lock = p.failures >= FAILURES && p.locked_until.is_none_or(|u| u <= now);
        if lock {
            p.locked_until = Some(now + LOCKOUT);
            p.failures = 0;
            p.window_start = now;
        }
        if lock
            || p.logged
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            let n = std::mem::take(&mut p.unlogged);
            p.logged = Some(now);
            if lock {
                tracing::warn!(%listener, peer = %ip, failures = n, lockout = ?LOCKOUT,
                    "repeated wrong API keys: peer locked out (HTTP 429)");
            } else {
                tracing::warn!(%listener, peer = %ip, failures = n,
                    "request refused: missing or wrong API key (logged once a minute per peer)");
            }
        }
        lock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_in_a_minute_lock_one_peer_out() {
        let book = AuthFailures::new();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..FAILURES - 1 {
            assert!(!book.failed_at(a, "t", t0 + Duration::from_secs(i as u64)));
        }
        assert_eq!(book.locked_at(a, t0 + Duration::from_secs(10)), None);
        assert!(book.failed_at(a, "t", t0 + Duration::from_secs(10)));
        let left = book.locked_at(a, t0 + Duration::from_secs(20)).unwrap();
        assert_eq!(left, Duration::from_secs(50));
        assert_eq!(book.locked_at(b, t0 + Duration::from_secs(20)), None);
        assert_eq!(book.locked_at(a, t0 + Duration::from_secs(71)), None);
    }

    #[test]
    fn failures_spread_out_never_lock() {
        let book = AuthFailures::new();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..50u64 {
            assert!(!book.failed_at(a, "t", t0 + Duration::from_secs(i * 7)));
        }
    }

    #[test]
    fn the_book_is_bounded() {
        let book = AuthFailures::new();
        let t0 = Instant::now();
        for i in 0..(MAX_PEERS as u32 + 10) {
            book.failed_at(IpAddr::from(i.to_be_bytes()), "t", t0);
        }
        assert!(book.peers.lock().unwrap().len() <= MAX_PEERS);
    }
}
