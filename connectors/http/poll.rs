//! Poll mode of the HTTP connector: one request per endpoint and interval, channel values
//! picked out of the answer.
//!
//! Devices whose requests are identical (method, URL, body, headers, auth, timeout) are one
//! *endpoint*: one [`Line`] of the kit with one [`Endpoint`] poller and the devices on it. The
//! endpoint keeps the latest answer and hands it to every device polled within half the
//! shortest interval of its devices, so N devices on one URL cost one request per interval.
//! Answers go to the devices as they are: a failed request (no answer, timeout, non-2xx, too
//! big) is a [`Fault`] of every due channel; a body that is not JSON makes the pointer channels
//! bad with the parse error (regex channels still read the text); a missing pointer makes that
//! channel bad. Every answer is counted on the endpoint's input (`connectors.list`).
//!
//! `ETag`: when the server sends one, the next request carries `If-None-Match`; a `304 Not
//! Modified` is the previous answer received again: the same values are decoded and published
//! (stamped with the time of the 304 unless a timestamp pointer says otherwise), the device
//! stays online, and `on_change`/`deadband` transforms suppress the repeats.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use http::StatusCode;
use serde_json::Value as Json;
use tokio::time::Instant;

use super::{Auth, HttpChannel, HttpPollConfig, Method, PollDevice, PollSettings};
use osgate_core::config::ChannelSpec;
use crate::device::listener::Input;
use crate::device::payload::{Pick, TimeParser, ValueType};
use crate::device::{self, Fault, Line, Poll, Poller, Schedule, ValueKind, WriteError, WriteSpec};
use crate::{ConnectorContext, ConnectorError, Running};
use osgate_core::net::http::HttpClientSettings;
use osgate_core::reading::{Timestamp, Value};

/// Checks what can be checked before it runs (the TLS files, the requests) and returns the
/// running connector: one line per endpoint.
pub fn build(spec: Arc<HttpPollConfig>, ctx: ConnectorContext) -> Result<Running, ConnectorError> {
    let s = &spec.settings;
    let timeout = spec.timing.timeout_or(Duration::from_secs(5));
    let mut client = HttpClientSettings::new(timeout);
    client.tls = s.tls.clone();
    let client = client.build().map_err(ConnectorError::Setup)?;
    let mut keys: HashMap<Key, usize> = HashMap::new();
    let mut endpoints: Vec<(Key, Vec<usize>)> = Vec::new();
    for (i, d) in spec.devices.iter().enumerate() {
        let key = Key::of(s, &d.settings, timeout);
        match keys.get(&key) {
            Some(&e) => endpoints[e].1.push(i),
            None => {
                keys.insert(key.clone(), endpoints.len());
                endpoints.push((key, vec![i]));
            }
        }
    }
    let endpoints = endpoints
        .into_iter()
        .map(|(key, devices)| {
            let reuse_for = if devices.len() > 1 {
                devices
                    .iter()
                    .map(|&i| spec.devices[i].interval.0)
                    .min()
                    .unwrap_or_default()
                    / 2
            } else {
                Duration::ZERO
            };
            let needs_json = devices.iter().any(|&i| {
                let d = &spec.devices[i];
                d.settings.timestamp.is_some()
                    || d.channels.iter().any(|c| {
                        c.settings
                            .pick()
                            .is_ok_and(|p| p.needs_json() || is_whole(&p))
                    })
            });
            Ok(Arc::new(Request::new(
                key, devices, reuse_for, needs_json, s,
            )?))
        })
        .collect::<Result<Vec<_>, ConnectorError>>()?;
    let names: Vec<Arc<str>> = endpoints.iter().map(|e| e.name.clone()).collect();
    let backoff = spec.timing.retry();
    Ok(Box::pin(async move {
        let inputs: Mutex<Vec<Option<Input>>> =
            Mutex::new(Input::all(&ctx, &names).into_iter().map(Some).collect());
        device::run_lines(&ctx, endpoints.len(), |i| {
            let req = endpoints[i].clone();
            // A line rebuilt after a panic takes its input again (same counters).
            let input = inputs.lock().expect("inputs")[i]
                .take()
                .unwrap_or_else(|| Input::all(&ctx, &names).swap_remove(i));
            let devices = req.devices.clone();
            let mut line = Line::new(&ctx, Endpoint::new(client.clone(), req, input, &ctx))
                .with_backoff(backoff);
            for di in devices {
                let d = &spec.devices[di];
                let schedule = Schedule::every(d.interval.0, d.channels.len());
                line.add(d, schedule, HttpDevice::new(d), write_spec);
            }
            line
        })
        .await;
        Ok(())
    }))
}

fn is_whole(p: &Pick) -> bool {
    matches!(p, Pick::Whole(_))
}

/// What makes two devices' requests the same endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    method: Method,
    url: String,
    body: Option<String>,
    content_type: Option<String>,
    /// Names lower-cased; the device's override the connector's.
    headers: BTreeMap<String, String>,
    auth: Option<Auth>,
    timeout: Duration,
}

impl Key {
    /// The endpoint of device `d` of the connector `s` whose `timeout` is `timeout`.
    fn of(s: &PollSettings, d: &PollDevice, timeout: Duration) -> Key {
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in s.headers.iter().chain(&d.headers) {
            headers.insert(k.to_ascii_lowercase(), v.clone());
        }
        Key {
            method: d.method,
            url: d.url.clone(),
            body: d.body.clone(),
            content_type: d.content_type.clone(),
            headers,
            auth: d.auth.clone().or_else(|| s.auth.clone()),
            timeout: d.timeout.map_or(timeout, |t| t.0),
        }
    }
}

/// One endpoint's request, ready to send.
#[derive(Debug)]
struct Request {
    /// `GET http://host/path` (no query: it may hold a secret), for the input counters.
    name: Arc<str>,
    method: reqwest::Method,
    url: reqwest::Url,
    headers: HeaderMap,
    body: Option<Bytes>,
    auth: Option<Auth>,
    timeout: Duration,
    max_body: usize,
    /// The devices on it (indices in the config).
    devices: Vec<usize>,
    /// How long an answer serves the other devices.
    reuse_for: Duration,
    /// Some device reads JSON: parse answers.
    needs_json: bool,
}

fn setup(e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::Setup(e.to_string())
}

/// Header map of validated `(name, value)` pairs.
fn header_map<'a>(
    pairs: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<HeaderMap, ConnectorError> {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(setup)?;
        map.insert(name, HeaderValue::from_str(v).map_err(setup)?);
    }
    Ok(map)
}

impl Request {
    fn new(
        key: Key,
        devices: Vec<usize>,
        reuse_for: Duration,
        needs_json: bool,
        s: &PollSettings,
    ) -> Result<Request, ConnectorError> {
        let url = reqwest::Url::parse(&key.url).map_err(|e| ConnectorError::Address {
            address: key.url.clone(),
            reason: e.to_string(),
        })?;
        let mut headers = header_map(&key.headers)?;
        if key.body.is_some() {
            let ct = key.content_type.as_deref().unwrap_or("application/json");
            headers.insert(CONTENT_TYPE, HeaderValue::from_str(ct).map_err(setup)?);
        }
        let method = key.method.as_reqwest();
        let port = url.port().map_or(String::new(), |p| format!(":{p}"));
        let name = format!(
            "{method} {}://{}{port}{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.path()
        );
        Ok(Request {
            name: name.into(),
            method,
            url,
            headers,
            body: key.body.map(Bytes::from),
            auth: key.auth,
            timeout: key.timeout,
            max_body: s.max_body.bytes(),
            devices,
            reuse_for,
            needs_json,
        })
    }

    fn builder(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        url: reqwest::Url,
    ) -> reqwest::RequestBuilder {
        let b = client
            .request(method, url)
            .headers(self.headers.clone())
            .timeout(self.timeout);
        match &self.auth {
            None => b,
            Some(Auth::Bearer(t)) => b.bearer_auth(t),
            Some(Auth::Basic { username, password }) => b.basic_auth(username, Some(password)),
        }
    }
}

/// An answer's body.
#[derive(Debug)]
struct Doc {
    text: String,
    /// The parsed body when some device reads JSON, or why it is not JSON.
    json: Option<Result<Json, Arc<str>>>,
}

/// The poller of one endpoint.
pub struct Endpoint {
    client: reqwest::Client,
    req: Arc<Request>,
    input: Input,
    ctx: ConnectorContext,
    /// The server's `ETag` of `last_good`.
    etag: Option<HeaderValue>,
    last_good: Option<Arc<Doc>>,
    /// The latest outcome: when it came, its timestamp, and the body or the failure.
    latest: Option<(Instant, Timestamp, Result<Arc<Doc>, Fault>)>,
}

/// The decoding of one device on an endpoint.
pub struct HttpDevice {
    picks: Box<[Pick]>,
    ts: Option<TimeParser>,
    writes: Box<[(u32, WriteRequest)]>,
}

/// A channel's write request.
#[derive(Debug)]
struct WriteRequest {
    method: reqwest::Method,
    url: String,
    body: Option<String>,
    headers: HeaderMap,
}

impl HttpDevice {
    fn new(d: &osgate_core::config::DeviceSpec<PollDevice, HttpChannel>) -> Self {
        let picks = d
            .channels
            .iter()
            .map(|c| c.settings.pick().unwrap_or(Pick::Whole(ValueType::Auto)))
            .collect();
        let writes = d
            .channels
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let w = c.settings.write.as_deref()?;
                let mut headers = header_map(&w.headers).ok()?;
                let body = match w.method {
                    Method::Get => None,
                    _ => Some(w.body.clone().unwrap_or_else(|| "{value}".into())),
                };
                if body.is_some() {
                    let ct = w.content_type.as_deref().unwrap_or("application/json");
                    headers.insert(CONTENT_TYPE, HeaderValue::from_str(ct).ok()?);
                }
                Some((
                    i as u32,
                    WriteRequest {
                        method: w.method.as_reqwest(),
                        url: w.url.clone().unwrap_or_else(|| d.settings.url.clone()),
                        body,
                        headers,
                    },
                ))
            })
            .collect();
        HttpDevice {
            picks,
            ts: d.settings.timestamp.as_ref().and_then(|t| t.compile().ok()),
            writes,
        }
    }
}

/// The kit's view of a writable channel.
fn write_spec(c: &ChannelSpec<HttpChannel>) -> Option<WriteSpec> {
    let w = c.settings.write.as_deref()?;
    let kind = match c.settings.value_type {
        ValueType::Bool => ValueKind::Bool,
        ValueType::Text => ValueKind::Text,
        ValueType::Auto | ValueType::Number => ValueKind::Float,
    };
    Some(WriteSpec {
        kind,
        min: w.min,
        max: w.max,
    })
}

/// At most `max` bytes of text for a message: lossy UTF-8, trimmed, `…` when cut.
fn excerpt(bytes: &[u8], max: usize) -> String {
    let cut = bytes.len() > max;
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]);
    let s = s.trim();
    if cut {
        format!("{s}…")
    } else {
        s.to_string()
    }
}

/// Percent-encodes everything but the unreserved characters of RFC 3986.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads the body, failing once it is longer than `max`.
async fn read_body(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, Fault> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_big(max));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport_fault(&e, None))? {
        if body.len() + chunk.len() > max {
            return Err(too_big(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn too_big(max: usize) -> Fault {
    Fault::new(
        "too_big",
        format!("the answer is larger than max_body ({max} bytes)"),
    )
}

fn transport_fault(e: &reqwest::Error, timeout: Option<Duration>) -> Fault {
    if e.is_timeout() {
        let within = timeout.map_or(String::new(), |t| {
            format!(" within {}", humantime::format_duration(t))
        });
        Fault::new("timeout", format!("no answer{within} (timeout)"))
    } else if e.is_connect() {
        Fault::new("connect", osgate_core::net::describe_error(e))
    } else {
        Fault::new("io", osgate_core::net::describe_error(e))
    }
}

impl Endpoint {
    fn new(
        client: reqwest::Client,
        req: Arc<Request>,
        input: Input,
        ctx: &ConnectorContext,
    ) -> Self {
        Endpoint {
            client,
            req,
            input,
            ctx: ctx.clone(),
            etag: None,
            last_good: None,
            latest: None,
        }
    }

    /// The answer for a device polled now: the latest one while it is fresh enough to share,
    /// else a new request.
    async fn answer(&mut self) -> (Timestamp, Result<Arc<Doc>, Fault>) {
        if let Some((at, ts, res)) = &self.latest {
            if at.elapsed() < self.req.reuse_for {
                return (*ts, res.clone());
            }
        }
        let res = self.fetch().await;
        let ts = Timestamp::now();
        let name = self.req.name.clone();
        match &res {
            Ok(doc) => match &doc.json {
                Some(Err(e)) => self.input.bad(&self.ctx, &name, e),
                _ => self.input.good(&self.ctx, &name),
            },
            // Only answers are messages of the input; no answer at all is the device's fault.
            Err(f) if matches!(f.kind, "http_status" | "too_big") => {
                self.input.bad(&self.ctx, &name, &f.message)
            }
            Err(_) => {}
        }
        self.latest = Some((Instant::now(), ts, res.clone()));
        (ts, res)
    }

    async fn fetch(&mut self) -> Result<Arc<Doc>, Fault> {
        let req = &self.req;
        let mut b = req.builder(&self.client, req.method.clone(), req.url.clone());
        if let Some(body) = &req.body {
            b = b.body(body.clone());
        }
        if let (Some(tag), Some(_)) = (&self.etag, &self.last_good) {
            b = b.header(IF_NONE_MATCH, tag.clone());
        }
        let resp = b
            .send()
            .await
            .map_err(|e| transport_fault(&e, Some(req.timeout)))?;
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED {
            return self.last_good.clone().ok_or_else(|| {
                Fault::new(
                    "http_status",
                    "HTTP 304 Not Modified, but nothing was read before",
                )
            });
        }
        if !status.is_success() {
            let body = read_body(resp, 64 << 10).await.unwrap_or_default();
            let more = if body.is_empty() {
                String::new()
            } else {
                format!(": {}", excerpt(&body, 200))
            };
            return Err(Fault::new("http_status", format!("HTTP {status}{more}")));
        }
        let etag = resp.headers().get(ETAG).cloned();
        let body = read_body(resp, req.max_body).await?;
        let text = String::from_utf8(body)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let json = req.needs_json.then(|| {
            serde_json::from_str::<Json>(&text).map_err(|e| Arc::from(format!("invalid JSON: {e}")))
        });
        let good = !matches!(json, Some(Err(_)));
        let doc = Arc::new(Doc { text, json });
        match etag {
            Some(tag) if good => {
                self.etag = Some(tag);
                self.last_good = Some(doc.clone());
            }
            _ => {
                self.etag = None;
                self.last_good = None;
            }
        }
        Ok(doc)
    }
}

impl Poller for Endpoint {
    type Device = HttpDevice;

    async fn poll(&mut self, dev: &mut HttpDevice, poll: &mut Poll<'_>) -> Result<(), Fault> {
        let (received, answer) = self.answer().await;
        let doc = match answer {
            Ok(doc) => doc,
            Err(f) => {
                let reason: Arc<str> = f.message.as_str().into();
                for ch in poll.due_channels() {
                    poll.push_bad(ch, reason.clone(), received);
                }
                return Err(f);
            }
        };
        let json = doc.json.as_ref().map(|j| j.as_ref());
        let ts = match (&dev.ts, json) {
            (None, _) => Ok(received),
            (Some(p), Some(Ok(j))) => p.get(j).map_err(|e| format!("timestamp: {e}")),
            (Some(_), Some(Err(e))) => Err(e.to_string()),
            (Some(_), None) => Err("timestamp: the answer was not parsed".to_string()),
        };
        let ts = match ts {
            Ok(ts) => ts,
            Err(e) => {
                let reason: Arc<str> = e.into();
                for ch in poll.due_channels() {
                    poll.push_bad(ch, reason.clone(), received);
                }
                return Ok(());
            }
        };
        for ch in poll.due_channels() {
            let pick = &dev.picks[ch];
            let value = match json {
                Some(Err(e)) if pick.needs_json() => Err(e.to_string()),
                Some(Ok(j)) => pick.get(&doc.text, Some(j)),
                _ => pick.get(&doc.text, None),
            };
            match value {
                Ok(v) => poll.push(ch, v, ts),
                Err(e) => poll.push_bad(ch, e.into(), ts),
            }
        }
        Ok(())
    }

    async fn write(
        &mut self,
        dev: &mut HttpDevice,
        ch: usize,
        raw: Value,
    ) -> Result<Value, WriteError> {
        let Some((_, w)) = dev.writes.iter().find(|(c, _)| *c as usize == ch) else {
            return Err(WriteError::Refused(
                "the channel has no write request".into(),
            ));
        };
        let json = raw.to_json().to_string();
        let plain = match &raw {
            Value::Text(t) => t.to_string(),
            _ => json.clone(),
        };
        let url = w.url.replace("{value}", &percent_encode(&plain));
        let url = reqwest::Url::parse(&url)
            .map_err(|e| WriteError::Invalid(format!("the write URL with the value: {e}")))?;
        let mut b = self
            .req
            .builder(&self.client, w.method.clone(), url)
            .headers(w.headers.clone());
        if let Some(body) = &w.body {
            b = b.body(body.replace("{value}", &json));
        }
        let resp = b.send().await.map_err(|e| {
            WriteError::Offline(transport_fault(&e, Some(self.req.timeout)).message)
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(raw);
        }
        let body = read_body(resp, 64 << 10).await.unwrap_or_default();
        let more = if body.is_empty() {
            String::new()
        } else {
            format!(": {}", excerpt(&body, 200))
        };
        Err(WriteError::Refused(format!(
            "the device answered HTTP {status}{more}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_helpers() {
        assert_eq!(percent_encode("a b/ü"), "a%20b%2F%C3%BC");
        assert_eq!(excerpt(b"  short  ", 200), "short");
        assert_eq!(excerpt(b"abcdef", 3), "abc…");
    }
}
