//! What the bounded listeners ([`super::listen`]) cut off, counted per cause and logged once
//! per cause per minute, and shown in `/metrics` ([`Listeners::metrics_text`]): the families
//! `osgate_listener_connections{listener,addr}` and
//! `osgate_listener_cutoffs_total{listener,addr,cause}`.
//!
//! A gateway's listeners are listed in its own [`Listeners`], not in the process: two gateways
//! in one process (the in-process test harness) each show only theirs, and a caller that
//! configured port 0 learns the bound port there ([`Listeners::addr`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Why a connection was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Cause {
    /// The head did not arrive within `head_timeout`.
    HeadTimeout,
    /// The body arrived slower than the minimum rate.
    BodyTimeout,
    /// No request within `idle_timeout`.
    IdleTimeout,
    /// Closed to make room for a newcomer at `max_connections`.
    Evicted,
    /// A newcomer closed at once: `max_connections` were all busy.
    Refused,
    /// The peer is locked out after repeated wrong keys (HTTP 429).
    LockedOut,
    /// A live-reading subscription refused: `rpc.max_subscribers` are open.
    Subscribers,
}

impl Cause {
    const ALL: [Cause; 7] = [
        Cause::HeadTimeout,
        Cause::BodyTimeout,
        Cause::IdleTimeout,
        Cause::Evicted,
        Cause::Refused,
        Cause::LockedOut,
        Cause::Subscribers,
    ];

    /// The label in `/metrics` and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::HeadTimeout => "head_timeout",
            Cause::BodyTimeout => "body_timeout",
            Cause::IdleTimeout => "idle_timeout",
            Cause::Evicted => "evicted",
            Cause::Refused => "refused",
            Cause::LockedOut => "locked_out",
            Cause::Subscribers => "subscribers",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            Cause::HeadTimeout => "a client did not send its request head within head_timeout; connection closed",
            Cause::BodyTimeout => "a client sent its request body slower than body_min_rate; connection closed",
            Cause::IdleTimeout => "a client sent no request within idle_timeout; connection closed",
            Cause::Evicted => "max_connections reached: the connection that waited longest was closed to make room",
            Cause::Refused => "max_connections reached and all are busy: a new connection was closed",
            Cause::LockedOut => "a client is locked out after repeated wrong keys: answering 429",
            Cause::Subscribers => "max_subscribers reached: a live-reading subscription was refused",
        }
    }
}

/// Counters of one listener, shown in `/metrics`.
pub struct ListenerStats {
    /// `rpc` or the ingest connector's name.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    cutoffs: [AtomicU64; Cause::ALL.len()],
    open: AtomicU64,
    logged: Mutex<[Option<Instant>; Cause::ALL.len()]>,
}

impl ListenerStats {
    fn new(name: &str, addr: SocketAddr) -> Arc<Self> {
        Arc::new(ListenerStats {
            name: name.to_string(),
            addr,
            cutoffs: Default::default(),
            open: AtomicU64::new(0),
            logged: Mutex::new([None; Cause::ALL.len()]),
        })
    }

    /// One more open connection (`+1`) or one fewer (`-1`).
    pub(crate) fn opened(&self, delta: i64) {
        if delta >= 0 {
            self.open.fetch_add(delta as u64, Relaxed);
        } else {
            self.open.fetch_sub(delta.unsigned_abs(), Relaxed);
        }
    }

    /// Open connections now.
    pub fn open(&self) -> u64 {
        self.open.load(Relaxed)
    }

    /// Counts a cut-off of `cause` and logs it, once per cause per minute.
    pub fn cut(&self, cause: Cause, peer: Option<SocketAddr>) {
        let n = self.cutoffs[cause as usize].fetch_add(1, Relaxed) + 1;
        let now = Instant::now();
        let mut logged = self.logged.lock().expect("listener log lock");
        let last = &mut logged[cause as usize];
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60)) {
            *last = Some(now);
            tracing::warn!(listener = %self.name, addr = %self.addr, cause = cause.as_str(),
                peer = peer.map(|p| p.to_string()), total = n, "{} (logged once a minute per cause; counted in /metrics)", cause.explain());
        }
    }

    /// Cut-offs of `cause` so far.
    pub fn cutoffs(&self, cause: Cause) -> u64 {
        self.cutoffs[cause as usize].load(Relaxed)
    }
}

/// The listeners of one gateway (the JSON-RPC server, HTTP ingests), each listed while its
/// counters live. Clones share the list.
#[derive(Clone, Default)]
pub struct Listeners(Arc<Mutex<Vec<Weak<ListenerStats>>>>);

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.live().iter().map(|s| (&s.name, s.addr)))
            .finish()
    }
}

impl Listeners {
    /// The counters of listener `name` on `addr` (the bound address), listed while they live.
    pub fn add(&self, name: &str, addr: SocketAddr) -> Arc<ListenerStats> {
        let stats = ListenerStats::new(name, addr);
        let mut r = self.0.lock().expect("listener registry");
        r.retain(|w| w.strong_count() > 0);
        r.push(Arc::downgrade(&stats));
        stats
    }

    fn live(&self) -> Vec<Arc<ListenerStats>> {
        let mut r = self.0.lock().expect("listener registry");
        r.retain(|w| w.strong_count() > 0);
        r.iter().filter_map(Weak::upgrade).collect()
    }

    /// Where the listener named `name` listens now (the newest, after a restart).
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.live()
            .iter()
            .rev()
            .find(|s| s.name == name)
            .map(|s| s.addr)
    }

    /// Every live listener: its name and address.
    pub fn all(&self) -> Vec<(String, SocketAddr)> {
        self.live()
            .iter()
            .map(|s| (s.name.clone(), s.addr))
            .collect()
    }

    /// The listener families of `/metrics` (text format 0.0.4).
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write as _;
        let live = self.live();
        let mut out = String::new();
        out.push_str("# HELP osgate_listener_connections Open connections of a listener.\n");
        out.push_str("# TYPE osgate_listener_connections gauge\n");
        let label = |s: &ListenerStats| {
            format!(
                "listener=\"{}\",addr=\"{}\"",
                s.name.replace('\\', "\\\\").replace('"', "\\\""),
                s.addr
            )
        };
        for s in &live {
            let _ = writeln!(
                out,
                "osgate_listener_connections{{{}}} {}",
                label(s),
                s.open.load(Relaxed)
            );
        }
        out.push_str(
            "# HELP osgate_listener_cutoffs_total Connections and requests cut off, by cause.\n",
        );
        out.push_str("# TYPE osgate_listener_cutoffs_total counter\n");
        for s in &live {
            for c in Cause::ALL {
                let _ = writeln!(
                    out,
                    "osgate_listener_cutoffs_total{{{},cause=\"{}\"}} {}",
                    label(s),
                    c.as_str(),
                    s.cutoffs(c)
                );
            }
        }
        out
    }
}
