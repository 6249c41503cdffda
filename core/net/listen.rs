//! Bounded HTTP/1 listeners: what the JSON-RPC/metrics server and the HTTP ingest share so
//! that slow, idle or numerous clients cannot hold memory or starve a well-behaved client.
//!
//! Every connection of a [`Listener`] is in one phase, each with its deadline
//! ([`ListenLimits`]):
//!
//! | phase | from | deadline | cause when cut off |
//! |---|---|---|---|
//! | idle | the accept, or the end of the last answer | `idle_timeout` | `idle_timeout` |
//! | head | the first byte of a request | `head_timeout` | `head_timeout` |
//! | body | the complete head | `body_timeout` + bytes received / `body_min_rate` | `body_timeout` |
//! | busy | the complete body | none (the method runs) | |
//!
//! A head may be at most `max_head` bytes (hyper's read buffer). Bodies are read with
//! [`read_body`]: copied out of hyper's buffer as they arrive (a one-byte chunk would otherwise
//! pin hyper's whole 8 KiB buffer), never sized from `Content-Length`.
//!
//! At most `max_connections` connections are open. A newcomer beyond that takes the place of
//! the connection that has waited longest in the idle, head or body phase, preferring one that
//! never completed a request, so hostile clients cannot starve a well-behaved one; only when
//! every connection is busy is the newcomer closed. Each cut-off is counted per cause
//! ([`super::cutoffs`]: in `/metrics` as `osgate_listener_cutoffs_total`) and logged once per
//! cause per minute. Memory is thus bounded by `max_connections` × (`max_head` + the body limit).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

pub use super::cutoffs::{Cause, ListenerStats, Listeners};
use crate::duration::Dur;
use crate::size::Size;

/// Listener settings (`rpc.limits`, and `limits` of an HTTP ingest); the defaults hold on a LAN.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenLimits {
    /// Time a client has to send a whole request head once it started one (default `10s`).
    pub head_timeout: Dur,
    /// Time a request body may take before [`Self::body_min_rate`] counts (default `10s`).
    pub body_timeout: Dur,
    /// Slowest body accepted after `body_timeout`, in bytes per second (default `1KiB`): a body
    /// of n bytes must arrive within `body_timeout` + n / `body_min_rate`.
    #[serde(serialize_with = "as_text")]
    pub body_min_rate: Size,
    /// Time an open connection may wait for its next request (default `30s`).
    pub idle_timeout: Dur,
    /// Most open connections (default 256); a newcomer beyond takes the place of the
    /// connection that waited longest.
    pub max_connections: usize,
    /// Largest request head (default `16KiB`, at least `8KiB`).
    #[serde(serialize_with = "as_text")]
    pub max_head: Size,
}

fn as_text<S: serde::Serializer>(v: &Size, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl Default for ListenLimits {
    fn default() -> Self {
        ListenLimits {
            head_timeout: Dur::from_secs(10),
            body_timeout: Dur::from_secs(10),
            body_min_rate: Size(1024),
            idle_timeout: Dur::from_secs(30),
            max_connections: 256,
            max_head: Size(16 * 1024),
        }
    }
}

/// hyper's smallest read buffer.
const MIN_HEAD: u64 = 8192;

impl ListenLimits {
    /// Semantic checks; `(field, message)` per problem.
    pub fn check(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (f, d) in [
            ("head_timeout", self.head_timeout),
            ("body_timeout", self.body_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if d.0 < Duration::from_millis(100) {
                out.push((f, format!("{d} is too short: use at least 100ms")));
            }
        }
        if self.body_min_rate.0 == 0 {
            out.push(("body_min_rate", "must be at least 1 byte per second".into()));
        }
        if self.max_connections == 0 {
            out.push(("max_connections", "must be at least 1".into()));
        }
        if self.max_head.0 < MIN_HEAD {
            out.push((
                "max_head",
                format!("{} is too small: use at least 8KiB", self.max_head),
            ));
        }
        out
    }
}

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BODY: u8 = 2;
const BUSY: u8 = 3;

/// One open connection's phase, shared by its reader, its service and its watchdog.
struct Conn {
    id: u64,
    phase: AtomicU8,
    /// When the phase began, ms since the listener's epoch.
    since: AtomicU64,
    /// Body bytes received in the body phase.
    received: AtomicU64,
    /// It completed a request.
    proven: AtomicBool,
    /// Wakes the watchdog: a phase changed (its deadline may be earlier now).
    changed: Notify,
    evict: Notify,
}

struct Table {
    conns: HashMap<u64, Arc<Conn>>,
    next: u64,
    /// More than half full since the last release of memory.
    pressed: bool,
}

/// A bounded listener's shared state: limits, open connections, counters.
pub struct Listener {
    limits: ListenLimits,
    stats: Arc<ListenerStats>,
    table: Mutex<Table>,
    epoch: Instant,
    /// Connection tasks alive: those in the table and those evicted but not yet ended.
    alive: AtomicU64,
    /// A connection task ended.
    freed: Notify,
}

/// A connection's place at the listener; freed on drop.
pub struct Slot {
    listener: Arc<Listener>,
    conn: Arc<Conn>,
    peer: SocketAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.listener.alive.fetch_sub(1, Relaxed);
        self.listener.freed.notify_one();
        let mut t = self.listener.table.lock().expect("listener table");
        if t.conns.remove(&self.conn.id).is_some() {
            self.listener.stats.opened(-1);
        }
        // A flood is over when the table, once more than half full, is down to an eighth:
        // give the memory its connections used back to the system.
        let max = self.listener.limits.max_connections;
        if t.conns.len() >= max / 2 {
            t.pressed = true;
        } else if t.pressed && t.conns.len() <= max / 8 {
            t.pressed = false;
            drop(t);
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(release_free_memory)),
                Err(_) => release_free_memory(),
            }
        }
    }
}

/// Returns the allocator's free pages to the system (glibc keeps what a burst of connections
/// freed, in every arena, until the process ends otherwise).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only releases free memory; it takes the allocator's locks.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Binds a listening socket with a backlog deep enough for a burst of connections (the
/// kernel caps it at `net.core.somaxconn`): with a short one, a newcomer's SYN is dropped
/// while the queue is full and it waits a second or more to retry.
pub fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The listen backlog asked for.
pub const BACKLOG: u32 = 4096;

impl Listener {
    /// A listener named `name` (`rpc`, or the connector's name) on `addr` (the bound address),
    /// listed in the gateway's `listeners`.
    pub fn new(
        listeners: &Listeners,
        name: &str,
        addr: SocketAddr,
        limits: ListenLimits,
    ) -> Arc<Self> {
        let stats = listeners.add(name, addr);
        Arc::new(Listener {
            limits,
            stats,
            table: Mutex::new(Table {
                conns: HashMap::new(),
                next: 0,
                pressed: false,
            }),
            epoch: Instant::now(),
            alive: AtomicU64::new(0),
            freed: Notify::new(),
        })
    }

    /// Waits until fewer than `max_connections` and a quarter connection tasks are alive
    /// (evicted ones end as soon as they run): the accept loop calls it first, so that a
    /// burst waits in the kernel's backlog instead of in memory.
    pub async fn room(&self) {
        let max = self.limits.max_connections as u64;
        let most = max + max.div_ceil(4);
        loop {
            let freed = self.freed.notified();
            if self.alive.load(Relaxed) < most {
                return;
            }
            freed.await;
        }
    }

    /// Its counters.
    pub fn stats(&self) -> &Arc<ListenerStats> {
        &self.stats
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A place for a new connection from `peer`: at `max_connections` the longest-waiting
    /// idle, head or body connection is evicted for it; `None` when all are busy.
    pub fn admit(self: &Arc<Self>, peer: SocketAddr) -> Option<Slot> {
        let now = self.now_ms();
        let mut t = self.table.lock().expect("listener table");
        if t.conns.len() >= self.limits.max_connections {
            let victim = t
                .conns
                .values()
                .filter(|c| c.phase.load(Relaxed) != BUSY)
                .min_by_key(|c| (c.proven.load(Relaxed), c.since.load(Relaxed)))
                .map(|c| c.id);
            match victim.and_then(|id| t.conns.remove(&id)) {
                Some(c) => {
                    c.evict.notify_one();
                    self.stats.opened(-1);
                    t.pressed = true;
                    drop(t);
                    self.stats.cut(Cause::Evicted, None);
                    t = self.table.lock().expect("listener table");
                }
                None => {
                    drop(t);
                    self.stats.cut(Cause::Refused, Some(peer));
                    return None;
                }
            }
        }
        t.next += 1;
        let conn = Arc::new(Conn {
            id: t.next,
            phase: AtomicU8::new(IDLE),
            since: AtomicU64::new(now),
            received: AtomicU64::new(0),
            proven: AtomicBool::new(false),
            changed: Notify::new(),
            evict: Notify::new(),
        });
        t.conns.insert(conn.id, conn.clone());
        self.stats.opened(1);
        self.alive.fetch_add(1, Relaxed);
        Some(Slot {
            listener: self.clone(),
            conn,
            peer,
        })
    }

    /// The deadline of `conn`'s phase, and the cause if it passes.
    fn deadline(&self, conn: &Conn) -> Option<(Instant, Cause)> {
        let since = self.epoch + Duration::from_millis(conn.since.load(Relaxed));
        let l = &self.limits;
        match conn.phase.load(Relaxed) {
            IDLE => Some((since + l.idle_timeout.0, Cause::IdleTimeout)),
            HEAD => Some((since + l.head_timeout.0, Cause::HeadTimeout)),
            BODY => {
                let got = conn.received.load(Relaxed);
                let extra =
                    Duration::from_millis(got.saturating_mul(1000) / l.body_min_rate.0.max(1));
                Some((since + l.body_timeout.0 + extra, Cause::BodyTimeout))
            }
            _ => None,
        }
    }

    /// Serves one HTTP/1 connection (with upgrades) with `service` until it ends, passes a
    /// deadline, is evicted, or `shutdown` completes (then it is closed gracefully).
    pub async fn serve<I, S, B>(
        self: &Arc<Self>,
        slot: Slot,
        io: I,
        service: S,
        shutdown: impl Future<Output = ()>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let conn = slot.conn.clone();
        let io = Tracked {
            inner: io,
            conn: conn.clone(),
            listener: self.clone(),
        };
        let svc = Phased {
            inner: service,
            meter: BodyMeter {
                conn: conn.clone(),
                listener: self.clone(),
            },
        };
        let served = hyper::server::conn::http1::Builder::new()
            .max_buf_size((self.limits.max_head.0.max(MIN_HEAD)) as usize)
            .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
            .with_upgrades();
        tokio::pin!(served, shutdown);
        loop {
            let deadline = self.deadline(&conn);
            let at = deadline.map_or_else(
                || tokio::time::Instant::now() + Duration::from_secs(3600),
                |(d, _)| d.into(),
            );
            tokio::select! {
                r = &mut served => {
                    if let Err(e) = r {
                        tracing::debug!(listener = %self.stats.name, peer = %slot.peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = &mut shutdown => {
                    served.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), served).await;
                    return;
                }
                _ = conn.evict.notified() => return,
                _ = conn.changed.notified() => {}
                _ = tokio::time::sleep_until(at) => {
                    if let Some((d, cause)) = self.deadline(&conn) {
                        if Instant::now() >= d {
                            self.stats.cut(cause, Some(slot.peer));
                            return;
                        }
                    }
                }
            }
        }
    }

    fn set_phase(&self, conn: &Conn, phase: u8) {
        conn.since.store(self.now_ms(), Relaxed);
        conn.phase.store(phase, Relaxed);
        conn.changed.notify_one();
    }
}

/// The reader: the first byte of a request ends the idle phase.
struct Tracked<I> {
    inner: I,
    conn: Arc<Conn>,
    listener: Arc<Listener>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && self.conn.phase.load(Relaxed) == IDLE {
            self.listener.set_phase(&self.conn, HEAD);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Tracks one request's body; in the request's extensions for [`read_body`].
#[derive(Clone)]
pub struct BodyMeter {
    conn: Arc<Conn>,
    listener: Arc<Listener>,
}

impl BodyMeter {
    fn add(&self, n: usize) {
        self.conn.received.fetch_add(n as u64, Relaxed);
    }

    fn done(&self) {
        if self.conn.phase.load(Relaxed) == BODY {
            self.listener.set_phase(&self.conn, BUSY);
        }
    }
}

/// The service wrapper: a request's head is complete when it is called; its answer ends it.
struct Phased<S> {
    inner: S,
    meter: BodyMeter,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Phased<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, S::Error>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let m = &self.meter;
        m.conn.received.store(0, Relaxed);
        m.listener.set_phase(&m.conn, BODY);
        req.extensions_mut().insert(m.clone());
        let fut = self.inner.call(req);
        let m = m.clone();
        Box::pin(async move {
            let r = fut.await;
            m.conn.proven.store(true, Relaxed);
            m.listener.set_phase(&m.conn, IDLE);
            r
        })
    }
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// More than the limit.
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    /// The client went away or sent a broken body.
    #[error("could not read the body: {0}")]
    Broken(String),
}

/// Reads a whole body of at most `limit` bytes, copying each chunk out of the server's buffer
/// as it arrives (never sized from `Content-Length`), and reports progress to the connection's
/// body deadline when `meter` is given (from the request's extensions).
pub async fn read_body<B>(
    mut body: B,
    limit: usize,
    meter: Option<&BodyMeter>,
) -> Result<Bytes, BodyError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut out: Vec<u8> = Vec::new();
    let res = loop {
        match body.frame().await {
            None => break Ok(Bytes::from(out)),
            Some(Err(e)) => break Err(BodyError::Broken(e.to_string())),
            Some(Ok(f)) => {
                let Ok(data) = f.into_data() else { continue };
                if out.len() + data.len() > limit {
                    break Err(BodyError::TooLarge(limit));
                }
                if let Some(m) = meter {
                    m.add(data.len());
                }
                out.extend_from_slice(&data);
            }
        }
    };
    if let Some(m) = meter {
        m.done();
    }
    res
}

/// Reads and discards up to `limit` more bytes of `body` (so an answer like 413 reaches a
/// client that is still sending), reporting progress like [`read_body`].
pub async fn drain<B>(mut body: B, limit: u64, meter: Option<&BodyMeter>)
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let mut seen = 0u64;
    while seen <= limit {
        match body.frame().await {
            Some(Ok(f)) => {
                let n = f.data_ref().map_or(0, |d| d.len());
                seen += n as u64;
                if let Some(m) = meter {
                    m.add(n);
                }
            }
            _ => break,
        }
    }
    if let Some(m) = meter {
        m.done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    #[test]
    fn defaults_are_valid_and_checks_name_fields() {
        assert!(ListenLimits::default().check().is_empty());
        let l: ListenLimits = serde_json::from_str(
            r#"{"head_timeout": "1ms", "max_connections": 0, "max_head": "1KiB"}"#,
        )
        .unwrap();
        let fields: Vec<_> = l.check().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["head_timeout", "max_connections", "max_head"]);
        assert!(serde_json::from_str::<ListenLimits>(r#"{"max_conns": 1}"#).is_err());
    }

    #[tokio::test]
    async fn newcomers_evict_the_longest_waiting_unproven_connection() {
        let limits = ListenLimits {
            max_connections: 3,
            ..Default::default()
        };
        let listeners = Listeners::default();
        let l = Listener::new(&listeners, "t", addr(), limits);
        let a = l.admit(addr()).unwrap();
        let b = l.admit(addr()).unwrap();
        let c = l.admit(addr()).unwrap();
        // a completed a request (proven), b is busy, c is the oldest unproven one.
        a.conn.proven.store(true, Relaxed);
        l.set_phase(&b.conn, BUSY);
        let d = l.admit(addr()).expect("room is made");
        assert!(l.table.lock().unwrap().conns.contains_key(&a.conn.id));
        assert!(!l.table.lock().unwrap().conns.contains_key(&c.conn.id));
        assert_eq!(l.stats().cutoffs(Cause::Evicted), 1);
        // Then the proven idle one goes; then nothing but busy ones: refused.
        l.set_phase(&d.conn, BUSY);
        let e = l.admit(addr()).unwrap();
        assert!(!l.table.lock().unwrap().conns.contains_key(&a.conn.id));
        l.set_phase(&e.conn, BUSY);
        assert!(l.admit(addr()).is_none());
        assert_eq!(l.stats().cutoffs(Cause::Refused), 1);
        drop((b, d, e));
        assert_eq!(l.stats.open(), 0);
        assert!(listeners.metrics_text().contains("cause=\"evicted\"} 2"));
        assert_eq!(listeners.addr("t"), Some(addr()));
        assert_eq!(listeners.addr("u"), None);
    }

    #[tokio::test]
    async fn the_body_deadline_grows_with_the_bytes_received() {
        let limits = ListenLimits {
            body_min_rate: Size(100),
            ..Default::default()
        };
        let l = Listener::new(&Listeners::default(), "t", addr(), limits);
        let s = l.admit(addr()).unwrap();
        l.set_phase(&s.conn, BODY);
        let (d0, cause) = l.deadline(&s.conn).unwrap();
        assert_eq!(cause, Cause::BodyTimeout);
        s.conn.received.store(250, Relaxed);
        let (d1, _) = l.deadline(&s.conn).unwrap();
        assert_eq!(d1 - d0, Duration::from_millis(2500));
        l.set_phase(&s.conn, BUSY);
        assert!(l.deadline(&s.conn).is_none());
    }
}
