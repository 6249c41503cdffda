//! Listen mode of the HTTP connector: an ingest server for devices and webhooks that push.
//!
//! `POST /ingest/{device}` with a JSON object (`{"temperature": 21.5, "ts": 1732350000123}`)
//! or a list of them. Each connection is served by hyper in its own task, which checks the
//! request — route, method, API key (constant time, the JSON-RPC scheme: `Authorization:
//! Bearer` or `X-API-Key`), size, JSON — and hands the parsed body to the connector's one
//! [`ListenerLine`] task, which maps it to readings ([`Ingest`]) and answers:
//!
//! | answer | when |
//! |---|---|
//! | 202 `{"accepted": n}` | the readings are in every `block` sink's queue |
//! | 400 `{"error": …}` | not JSON, not an object or list of objects, a value of the wrong type, a bad timestamp, no value of any channel |
//! | 401 | no key or a wrong key |
//! | 429 + `Retry-After` | this address sent repeated wrong keys ([`osgate_core::net::lockout`]) |
//! | 404 | another path, or an unknown device (unless `accept_new_devices` allows it) |
//! | 405 | not a POST |
//! | 409 | the device is disabled |
//! | 413 | the body is larger than `max_body`, or has more objects than the smallest sink queue holds |
//! | 503 + `Retry-After` | a `block` sink's queue is full: nothing was taken, send it again |
//!
//! A request is all or nothing: one bad object refuses the whole body, and the readings go to
//! the pipeline (one batch per object) only after room for them was reserved in every `block` sink's queue
//! (`Devices::try_reserve`), so a 202 is never followed by a silent drop there and a 503 leaves
//! no trace (transforms did not see it). `drop_newest` sinks drop and count as their policy says.
//!
//! Connections are bounded as the JSON-RPC server's are ([`osgate_core::net::listen`], settings in
//! `limits`): deadlines for the head, the body (a minimum rate) and idle keep-alive, a
//! connection cap that keeps room for newcomers, bodies copied as they arrive.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value as Json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{HttpListenConfig, ListenDevice};
use osgate_core::config::DeviceSpec;
use crate::device::listener::{Devices, Input, Listener, ListenerLine};
use crate::device::payload::{leaves, Pick, TimeParser, TimestampConfig};
use crate::device::{Fault, WriteError};
use crate::{ConnectorContext, ConnectorError, Running};
use osgate_core::reading::{Timestamp, Value};
use osgate_core::auth::{find_key, presented_key, ApiKey};
use osgate_core::net::listen::{read_body, BodyError, BodyMeter, Listener as Bounded};
use osgate_core::net::lockout::AuthFailures;
use osgate_core::transform::TransformConfig;

/// Bodies waiting for the line task; beyond that a request waits (up to [`LINE_WAIT`]).
const QUEUE: usize = 256;
/// Longest a request waits for the line task before it is answered 503.
const LINE_WAIT: Duration = Duration::from_secs(5);
/// Time a client has for the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Seconds a client is told to wait before it sends a refused body again.
const RETRY_AFTER: &str = "1";

/// Checks the address and the TLS files, and returns the running connector: the server is
/// bound when it starts (so a reload can stop the old one first).
pub fn build(
    spec: Arc<HttpListenConfig>,
    ctx: ConnectorContext,
) -> Result<Running, ConnectorError> {
    let s = &spec.settings;
    let addr: SocketAddr = s.listen.parse().map_err(|e| ConnectorError::Address {
        address: s.listen.clone(),
        reason: format!("{e}"),
    })?;
    let tls = match &s.tls {
        None => None,
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            t.server_config()
                .map_err(|e| ConnectorError::Setup(format!("tls: {e}")))?,
        ))),
    };
    let stamp = |t: &TimestampConfig| -> Result<Stamp, ConnectorError> {
        Ok(Stamp {
            parser: t
                .compile()
                .map_err(|(f, e)| ConnectorError::Setup(format!("timestamp.{f}: {e}")))?,
            required: true,
        })
    };
    let default_ts = match &s.timestamp {
        Some(t) => stamp(t)?,
        None => Stamp {
            parser: TimestampConfig {
                pointer: "/ts".into(),
                format: Default::default(),
                timezone: None,
            }
            .compile()
            .expect("a valid default"),
            required: false,
        },
    };
    let mut decoders = Vec::with_capacity(spec.devices.len());
    for d in &spec.devices {
        decoders.push(Decoder::new(
            d,
            d.settings.timestamp.as_ref().map(stamp).transpose()?,
        ));
    }
    let keys: Arc<[ApiKey]> = s.api_keys.clone().into();
    let max_body = s.max_body.bytes();
    Ok(Box::pin(async move {
        let spec = spec.clone();
        let s = &spec.settings;
        let listener = osgate_core::net::listen::bind(addr).map_err(|e| ConnectorError::Address {
            address: s.listen.clone(),
            reason: format!("cannot listen: {e}"),
        })?;
        // Port 0 takes a free port: the bound address is what is logged and listed.
        let addr = listener.local_addr().unwrap_or(addr);
        if keys.is_empty() {
            tracing::warn!(connector = %ctx.name, listen = %addr,
                "HTTP ingest without api_keys: open to every local process (loopback only)");
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let bounded = Bounded::new(&ctx.listeners, &ctx.name, addr, s.limits.clone());
        let server = Arc::new(Server {
            keys,
            max_body,
            tx,
            failures: AuthFailures::new(),
            bounded,
        });
        let task = tokio::spawn(serve(listener, tls, server, ctx.shutdown.clone()));
        tracing::info!(connector = %ctx.name, listen = %addr, "HTTP ingest listening");
        let name: Arc<str> = "POST /ingest/{device}".into();
        let input = Input::all(&ctx, std::slice::from_ref(&name))
            .pop()
            .expect("one input");
        let ingest = Ingest {
            rx,
            default_ts,
            decoders,
            scratch: Vec::new(),
            ends: Vec::new(),
            input,
            name,
            ctx: ctx.clone(),
            full: false,
        };
        let mut line = ListenerLine::new(&ctx, ingest)
            .accept_new(s.accept_new_devices)
            .with_stale_after(s.stale_after.map(|d| d.0));
        for d in &spec.devices {
            line.add(d, |_| None);
        }
        line.run().await;
        task.abort();
        let _ = task.await;
        Ok(())
    }))
}

/// Where a device's timestamps are.
struct Stamp {
    parser: TimeParser,
    /// Set explicitly: an object without it is refused (else it gets the receive time).
    required: bool,
}

/// How a configured device's objects become readings.
struct Decoder {
    /// Per channel; none: every number and bool of the object, by key path.
    picks: Box<[Pick]>,
    stamp: Option<Stamp>,
}

impl Decoder {
    fn new(d: &DeviceSpec<ListenDevice, super::HttpChannel>, stamp: Option<Stamp>) -> Self {
        Decoder {
            picks: d
                .channels
                .iter()
                .filter_map(|c| c.settings.pick_in_object(&c.name).ok())
                .collect(),
            stamp,
        }
    }
}

/// One request's body, for the line task.
pub struct Push {
    device: String,
    doc: Json,
    received: Timestamp,
    reply: oneshot::Sender<Outcome>,
}

/// What the line made of a body.
#[derive(Debug)]
enum Outcome {
    Accepted(usize),
    Bad(String),
    UnknownDevice,
    Disabled,
    Full,
    /// More objects than the smallest sink queue holds (its capacity).
    TooMany(usize),
}

/// The listener: maps pushed bodies to readings of its devices.
pub struct Ingest {
    rx: mpsc::Receiver<Push>,
    default_ts: Stamp,
    decoders: Vec<Decoder>,
    /// The readings of the body being mapped (kept: no allocation per request once warm).
    scratch: Vec<(usize, Value, Timestamp)>,
    /// Where each object's readings end in `scratch`.
    ends: Vec<usize>,
    input: Input,
    name: Arc<str>,
    ctx: ConnectorContext,
    /// The last body was refused for a full pipeline (logged once per episode).
    full: bool,
}

/// The path [`leaves`] gives the value at JSON pointer `p` (so the timestamp is no channel).
fn leaf_path(p: &str) -> String {
    p.trim_start_matches('/')
        .split('/')
        .map(|k| k.replace("~1", "_").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}

impl Ingest {
    fn decode(&mut self, msg: &Push, devices: &mut Devices) -> Outcome {
        let Some(dev) = devices.find_or_create(&msg.device) else {
            return Outcome::UnknownDevice;
        };
        if !devices.is_enabled(dev) {
            return Outcome::Disabled;
        }
        let Ingest {
            decoders,
            scratch,
            ends,
            default_ts,
            ..
        } = self;
        let decoder = decoders.get(dev).filter(|d| !d.picks.is_empty());
        let stamp = decoders
            .get(dev)
            .and_then(|d| d.stamp.as_ref())
            .unwrap_or(default_ts);
        let items = match &msg.doc {
            Json::Array(a) => a.as_slice(),
            one => std::slice::from_ref(one),
        };
        let list = msg.doc.is_array();
        let at = |i: usize, e: String| {
            if list {
                format!("item {i}: {e}")
            } else {
                e
            }
        };
        let skip = leaf_path(&stamp.parser.pointer);
        scratch.clear();
        ends.clear();
        for (i, item) in items.iter().enumerate() {
            let ts = match stamp.parser.pointer.get(item) {
                None if !stamp.required => msg.received,
                None => {
                    return Outcome::Bad(at(i, format!("no timestamp at {}", stamp.parser.pointer)))
                }
                Some(v) => match stamp.parser.parse(v) {
                    Ok(ts) => ts,
                    Err(e) => return Outcome::Bad(at(i, format!("{}: {e}", stamp.parser.pointer))),
                },
            };
            let before = scratch.len();
            match decoder {
                Some(d) => {
                    for (ch, pick) in d.picks.iter().enumerate() {
                        let Pick::Pointer(p, ty) = pick else { continue };
                        // A channel absent from an object is not in this message.
                        let Some(v) = p.get(item) else { continue };
                        match ty.from_json(v) {
                            Ok(v) => scratch.push((ch, v, ts)),
                            Err(e) => return Outcome::Bad(at(i, format!("{p}: {e}"))),
                        }
                    }
                }
                None => leaves(item, &mut |path, v| {
                    if path == skip {
                        return;
                    }
                    if let Some(ch) =
                        devices.channel_or_add(dev, path, None, &TransformConfig::IDENTITY)
                    {
                        scratch.push((ch, v, ts));
                    }
                }),
            }
            if scratch.len() == before {
                let expected = match decoder {
                    Some(d) => d
                        .picks
                        .iter()
                        .take(3)
                        .filter_map(|p| match p {
                            Pick::Pointer(p, _) => Some(p.to_string()),
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    None => "a number or bool field".into(),
                };
                return Outcome::Bad(at(
                    i,
                    format!(
                        "no value for device \"{}\" (expected {expected})",
                        msg.device
                    ),
                ));
            }
            ends.push(scratch.len());
        }
        // One batch per object: a batch is one moment of one device (the `device` format
        // publishes it as one message with one timestamp).
        let most = devices.reservable();
        if ends.len() > most {
            return Outcome::TooMany(most);
        }
        let Some(mut room) = devices.try_reserve(ends.len()) else {
            return Outcome::Full;
        };
        let n = scratch.len();
        let mut start = 0;
        for &end in ends.iter() {
            for (ch, v, ts) in scratch[start..end].iter().cloned() {
                devices.push(dev, ch, v, ts);
            }
            devices.flush_reserved(dev, &mut room);
            start = end;
        }
        Outcome::Accepted(n)
    }
}

impl Listener for Ingest {
    type Msg = Push;

    async fn next(&mut self) -> Result<Push, Fault> {
        match self.rx.recv().await {
            Some(p) => Ok(p),
            // The server is gone (only at shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn map(&mut self, msg: Push, devices: &mut Devices) {
        let outcome = self.decode(&msg, devices);
        match &outcome {
            Outcome::Accepted(_) => self.input.good(&self.ctx, &self.name),
            Outcome::Bad(e) => self.input.bad(&self.ctx, &self.name, e),
            _ => {}
        }
        let full = matches!(outcome, Outcome::Full);
        if full != self.full {
            self.full = full;
            if full {
                tracing::warn!(connector = %self.ctx.name,
                    "a sink's queue is full: answering 503 with Retry-After until it has room");
            } else {
                tracing::info!(connector = %self.ctx.name, "sink queues have room again");
            }
        }
        // The client may have given up: then it sends the body again.
        let _ = msg.reply.send(outcome);
    }

    async fn write(&mut self, _: usize, _: usize, _: Value) -> Result<Value, WriteError> {
        Err(WriteError::Refused(
            "devices of an HTTP ingest post their values; they cannot be written".into(),
        ))
    }
}

/// What every connection's handler shares.
struct Server {
    keys: Arc<[ApiKey]>,
    max_body: usize,
    tx: mpsc::Sender<Push>,
    failures: AuthFailures,
    bounded: Arc<Bounded>,
}

/// Accepts connections until `token` is cancelled; each in its own task (TLS handshake first).
async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    server: Arc<Server>,
    token: CancellationToken,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (sock, peer) = tokio::select! {
            _ = token.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            c = async {
                server.bounded.room().await;
                osgate_core::net::accept(&listener, "HTTP ingest").await
            } => match c {
                Some(c) => c,
                None => continue,
            },
        };
        let Some(slot) = server.bounded.admit(peer) else {
            continue;
        };
        let _ = sock.set_nodelay(true);
        let server = server.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            match tls {
                None => connection(sock, slot, peer, server).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                        Ok(Ok(s)) => connection(s, slot, peer, server).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %osgate_core::net::describe_error(&e), "HTTP ingest TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "HTTP ingest TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn connection<I>(io: I, slot: osgate_core::net::listen::Slot, peer: SocketAddr, server: Arc<Server>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let bounded = server.bounded.clone();
    let svc = hyper::service::service_fn(move |req| {
        let server = server.clone();
        async move { Ok::<_, Infallible>(server.handle(req, peer).await) }
    });
    bounded
        .serve(slot, io, svc, std::future::pending::<()>())
        .await;
}

fn answer(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    answer(status, serde_json::json!({ "error": msg }).to_string())
}

fn busy(msg: &str) -> Response<Full<Bytes>> {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, msg);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER));
    r
}

/// Decodes `%XX` escapes of a path segment; `None` when it is not valid UTF-8 after.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Server {
    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        if let Some(left) = self.failures.locked(peer.ip()) {
            self.bounded
                .stats()
                .cut(osgate_core::net::listen::Cause::LockedOut, Some(peer));
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many wrong API keys from this address; retry later",
            );
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            return r;
        }
        let Some(raw) = req
            .uri()
            .path()
            .strip_prefix("/ingest/")
            .filter(|d| !d.is_empty() && !d.contains('/'))
        else {
            return error(StatusCode::NOT_FOUND, "not found: POST /ingest/{device}");
        };
        let Some(device) = percent_decode(raw) else {
            return error(
                StatusCode::BAD_REQUEST,
                "the device name is not valid percent-encoded UTF-8",
            );
        };
        if req.method() != Method::POST {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "only POST is accepted");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return r;
        }
        if !self.keys.is_empty()
            && presented_key(req.headers()).is_none_or(|k| find_key(&self.keys, k).is_none())
        {
            self.failures.failed(peer.ip(), &self.bounded.stats().name);
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key (Authorization: Bearer <key> or X-API-Key)",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        let too_big = || {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body is larger than max_body ({} bytes)", self.max_body),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return too_big();
        }
        let meter = req.extensions().get::<BodyMeter>().cloned();
        let body = match read_body(req.into_body(), self.max_body, meter.as_ref()).await {
            Ok(b) => b,
            Err(BodyError::TooLarge(_)) => return too_big(),
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        let doc: Json = match serde_json::from_slice(&body) {
            Ok(d) => d,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")),
        };
        let shape = match &doc {
            Json::Object(_) => None,
            Json::Array(a) if a.is_empty() => Some("the list is empty".to_string()),
            Json::Array(a) => a
                .iter()
                .position(|x| !x.is_object())
                .map(|i| format!("item {i} is not a JSON object")),
            _ => Some("the body must be a JSON object or a list of objects".to_string()),
        };
        if let Some(msg) = shape {
            return error(StatusCode::BAD_REQUEST, &msg);
        }
        let (reply, outcome) = oneshot::channel();
        let push = Push {
            device,
            doc,
            received: Timestamp::now(),
            reply,
        };
        match tokio::time::timeout(LINE_WAIT, self.tx.send(push)).await {
            Ok(Ok(())) => {}
            _ => return busy("the gateway is busy; retry later"),
        }
        match tokio::time::timeout(LINE_WAIT, outcome).await {
            Ok(Ok(Outcome::Accepted(n))) => {
                answer(StatusCode::ACCEPTED, format!("{{\"accepted\":{n}}}"))
            }
            Ok(Ok(Outcome::Bad(msg))) => error(StatusCode::BAD_REQUEST, &msg),
            Ok(Ok(Outcome::UnknownDevice)) => error(StatusCode::NOT_FOUND, "unknown device"),
            Ok(Ok(Outcome::Disabled)) => error(StatusCode::CONFLICT, "the device is disabled"),
            Ok(Ok(Outcome::Full)) => busy("the pipeline is full; send the body again later"),
            Ok(Ok(Outcome::TooMany(most))) => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("more objects than the gateway takes in one request (at most {most}: the smallest sink queue); send them in several"),
            ),
            // The line did not answer in time (its queue is stuck behind a full sink).
            _ => busy("the gateway is busy; send the body again later"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_helpers() {
        assert_eq!(percent_decode("boiler%201").as_deref(), Some("boiler 1"));
        assert_eq!(percent_decode("w%C3%BC").as_deref(), Some("wü"));
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("cut%4"), None);
        assert_eq!(leaf_path("/ts"), "ts");
        assert_eq!(leaf_path("/meta/time"), "meta.time");
    }
}
