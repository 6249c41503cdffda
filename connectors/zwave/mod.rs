//! The Z-Wave connector (`"protocol": "zwave"`): a client of Z-Wave JS Server, as Home
//! Assistant is, so osgate works with every USB stick the zwave-js driver supports.
//!
//! One connector is one WebSocket connection (`ws://` or `wss://`, TLS by [`osgate_core::net::tls`]).
//! On connect it negotiates the API schema (`set_api_schema`, the newest both sides speak) and
//! sends `start_listening`, whose answer is the state of every node; after that the server
//! pushes events. Devices are nodes (by id or name); channels are value ids (command class,
//! endpoint, property, property key) with the unit of the value's metadata. A device without
//! configured channels publishes every readable value under a name derived from its value id
//! ([`wire::derive_name`]). The node state and the `value updated`, `value added`,
//! `value notification`, `metadata updated`, `ready`, `alive`/`dead` events become readings and
//! device health; `statistics updated` events are dropped as soon as their name is read.
//!
//! Writes go through `node.set_value`; a channel reading a `currentValue` writes its
//! `targetValue`, and the `value updated` that follows confirms it. The type of a write comes
//! from the value's metadata (the kit checks it before [`Listener::write`]), its range is
//! checked here on the device's raw value. A `set_value` answered with `success: true` whose
//! status is a failure is a failed write.
//!
//! The server can vanish without a close frame (it exits when it loses the stick): when it has
//! sent nothing for `ping_interval` a ping goes out, and no frame within `timeout` drops the
//! connection. The kit's [`ListenerLine`] then takes every device offline and reconnects with
//! backoff; the fresh `start_listening` state resyncs: values that changed while osgate was away
//! are published, values that did not are not published again.

pub mod wire;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Deserializer};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::either::Either;

use super::device::listener::{Devices, Input, Listener, ListenerLine};
use super::device::{Backoff, Fault, ValueKind, WriteError, WriteSpec};
use super::{ConnectorContext, ConnectorError, Running};
use osgate_core::config::{ConfigError, ConnectorSpec, Dur};
use osgate_core::net::TlsConfig;
use osgate_core::reading::{Timestamp, Value};
use osgate_core::transform::TransformConfig;

use wire::{
    CommandResult, EventHead, Head, Listening, Meta, MetaType, NodeState, NodeValue, Prop, Scalar,
    ValueKey, Version, STATUS_DEAD,
};

/// A parsed Z-Wave connector.
pub type ZwaveConfig = ConnectorSpec<ZwaveSettings, ZwaveDevice, ZwaveChannel>;

/// Connector settings: the server and how its connection is watched.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZwaveSettings {
    /// Z-Wave JS Server URL: `ws://host:port` (its default port is 3000) or, with TLS (a proxy
    /// in front of the server), `wss://host:port`.
    pub url: String,
    /// TLS settings for `wss://` (`ca_file`, `cert_file`, `key_file`, `server_name`,
    /// `insecure_skip_verify`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// When the server has sent nothing for this long, a ping goes out (default `10s`).
    #[serde(default = "default_ping_interval")]
    pub ping_interval: Dur,
    /// How long the connect and handshake, a ping's answer and a write's answer may take
    /// (default `10s`); a ping not answered in time drops the connection.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// A device that sends nothing for this long goes offline with that reason (default:
    /// never; battery nodes may report only every few hours).
    #[serde(default)]
    pub stale_after: Option<Dur>,
    /// Longest wait between reconnect attempts (default `30s`; the first is 1 s and doubles).
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Dur,
}

fn default_ping_interval() -> Dur {
    Dur::from_secs(10)
}
fn default_timeout() -> Dur {
    Dur::from_secs(10)
}
fn default_backoff_max() -> Dur {
    Dur::from_secs(30)
}

/// Device settings: which node it is.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZwaveDevice {
    /// The node: its id (`3`) or its name in zwave-js (`"Kitchen plug"`).
    pub node: NodeRef,
}

/// A node, by id or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NodeRef {
    /// The node id (1–4000).
    Id(u16),
    /// The node's name as set in zwave-js.
    Name(String),
}

impl<'de> Deserialize<'de> for NodeRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Prop::deserialize(d)? {
            Prop::Int(i) => u16::try_from(i)
                .map(NodeRef::Id)
                .map_err(|_| serde::de::Error::custom(format!("node id {i} is outside 1..=4000"))),
            Prop::Str(s) => Ok(NodeRef::Name(s.into())),
        }
    }
}

/// Channel settings: the value id, and whether it may be written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZwaveChannel {
    /// The command class (`49` Multilevel Sensor, `37` Binary Switch, `50` Meter…).
    pub command_class: u16,
    /// The endpoint (default 0, the node itself).
    #[serde(default)]
    pub endpoint: u16,
    /// The property: a name (`"currentValue"`, `"Air temperature"`) or a number.
    pub property: Prop,
    /// The property key, when the property has several (`65537`: a meter's kWh).
    #[serde(default)]
    pub property_key: Option<Prop>,
    /// Accept writes (`device.write`, MQTT commands); a `currentValue` is written through its
    /// `targetValue`. The type and range come from the value's metadata.
    #[serde(default)]
    pub writable: bool,
}

impl ZwaveChannel {
    fn key(&self) -> ValueKey {
        ValueKey {
            cc: self.command_class,
            endpoint: self.endpoint,
            property: self.property.clone(),
            key: self.property_key.clone(),
        }
    }
}

/// The newest API schema osgate was tested with; it asks for this one or the server's newest
/// if that is older.
const SCHEMA: u32 = 44;
/// `"protocol": "zwave"` in the protocol registry.
pub const PROTOCOL: crate::Protocol = crate::Protocol {
    name: "zwave",
    parse: |p, entry| p.spec(entry, validate, build),
    tool: None,
};


/// Semantic checks: URL, TLS, timers, nodes, value ids.
pub fn validate(spec: &ZwaveConfig, path: &str, errs: &mut Vec<ConfigError>) {
    let s = &spec.settings;
    match Target::parse(&s.url) {
        Err(e) => errs.push(ConfigError::new(format!("{path}.url"), e)),
        Ok(t) => match (&s.tls, t.tls) {
            (Some(_), false) => errs.push(ConfigError::new(
                format!("{path}.tls"),
                "TLS settings need a wss:// URL",
            )),
            (Some(tls), true) => tls.validate(&format!("{path}.tls"), errs),
            _ => {}
        },
    }
    for (field, d) in [("ping_interval", s.ping_interval), ("timeout", s.timeout)] {
        if d.0 < Duration::from_millis(100) {
            errs.push(ConfigError::new(
                format!("{path}.{field}"),
                "must be at least 100ms",
            ));
        }
    }
    let mut nodes: HashMap<&NodeRef, usize> = HashMap::new();
    for (i, d) in spec.devices.iter().enumerate() {
        let dpath = format!("{path}.devices[{i}]");
        match &d.settings.node {
            NodeRef::Id(n) if !(1..=4000).contains(n) => errs.push(ConfigError::new(
                format!("{dpath}.node"),
                format!("node id {n} is outside 1..=4000"),
            )),
            NodeRef::Name(n) if n.trim().is_empty() => errs.push(ConfigError::new(
                format!("{dpath}.node"),
                "a node name must not be empty",
            )),
            _ => {}
        }
        if let Some(j) = nodes.insert(&d.settings.node, i) {
            errs.push(ConfigError::new(
                format!("{dpath}.node"),
                format!("the same node as devices[{j}]"),
            ));
        }
        let mut keys: HashMap<ValueKey, usize> = HashMap::new();
        for (ci, c) in d.channels.iter().enumerate() {
            if let Some(j) = keys.insert(c.settings.key(), ci) {
                errs.push(ConfigError::new(
                    format!("{dpath}.channels[{ci}]"),
                    format!("the same value id as channels[{j}]"),
                ));
            }
            if c.settings.command_class == 0 {
                errs.push(ConfigError::new(
                    format!("{dpath}.channels[{ci}].command_class"),
                    "must not be 0",
                ));
            }
        }
    }
}

/// Where the server is: host, port, TLS or not, and the URL for the WebSocket request.
#[derive(Debug, Clone)]
struct Target {
    url: String,
    host: String,
    port: u16,
    tls: bool,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("\"{url}\" is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            other => {
                return Err(format!(
                    "\"{url}\": expected ws:// or wss://, got {}",
                    other.map_or("no scheme".into(), |s| format!("{s}://"))
                ))
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("\"{url}\" has no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target {
            url: url.to_string(),
            host,
            port,
            tls,
        })
    }
}

/// Builds the connector: checks the URL and the TLS files.
pub fn build(spec: Arc<ZwaveConfig>, ctx: ConnectorContext) -> Result<Running, ConnectorError> {
    let s = &spec.settings;
    let target = Target::parse(&s.url).map_err(|reason| ConnectorError::Address {
        address: s.url.clone(),
        reason,
    })?;
    let tls = if target.tls {
        let cfg = s
            .tls
            .clone()
            .unwrap_or_default()
            .client_config()
            .map_err(|e| ConnectorError::Setup(format!("tls: {e}")))?;
        let name = s
            .tls
            .as_ref()
            .and_then(|t| t.server_name.clone())
            .unwrap_or_else(|| target.host.clone());
        let name = rustls::pki_types::ServerName::try_from(name)
            .map_err(|e| ConnectorError::Setup(format!("tls: server name: {e}")))?;
        Some((
            tokio_rustls::TlsConnector::from(Arc::new(cfg)),
            name.to_owned(),
        ))
    } else {
        None
    };
    let mut node_dev = HashMap::new();
    let devs: Vec<Dev> = spec
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if let NodeRef::Id(n) = d.settings.node {
                node_dev.insert(n, i);
            }
            Dev::new(d.name.clone(), d.settings.node.clone(), &d.channels)
        })
        .collect();
    let listener = ZwaveListener {
        target: Arc::new(Connect {
            target,
            tls,
            timeout: s.timeout.0,
        }),
        conn: Conn::Idle,
        lost: None,
        pending: VecDeque::new(),
        ping_interval: s.ping_interval.0,
        timeout: s.timeout.0,
        ping_at: Instant::now(),
        ping_sent: false,
        next_id: 0,
        devs,
        node_dev,
        nodes: HashMap::new(),
        logged: HashSet::new(),
        input: Input::all(&ctx, &["server".into()])
            .pop()
            .expect("one input"),
        ctx: ctx.clone(),
    };
    let mut line = ListenerLine::new(&ctx, listener)
        .with_backoff(Backoff::new(Duration::from_secs(1), s.backoff_max.0))
        .with_stale_after(s.stale_after.map(|d| d.0));
    for d in &spec.devices {
        // Writable channels get their write spec once the value's metadata is known.
        line.add(d, |_| None);
    }
    Ok(Box::pin(async move {
        line.run().await;
        Ok(())
    }))
}

/// A configured device: its node and its channels' value ids.
struct Dev {
    name: Arc<str>,
    node: NodeRef,
    /// The node id, once known (from the config, or found by name).
    node_id: Option<u16>,
    /// Publish every readable value (no channels configured).
    auto: bool,
    /// Channel by the value id it reads.
    reads: HashMap<ValueKey, u32>,
    /// Writable channel by the value id it writes (`targetValue` for a `currentValue`).
    writes: HashMap<ValueKey, u32>,
    /// Per channel: the value id written, and whether the config gave a unit.
    chans: Vec<(ValueKey, bool)>,
}

impl Dev {
    fn new(
        name: Arc<str>,
        node: NodeRef,
        channels: &[osgate_core::config::ChannelSpec<ZwaveChannel>],
    ) -> Dev {
        let mut reads = HashMap::new();
        let mut writes = HashMap::new();
        let mut chans = Vec::with_capacity(channels.len());
        for (i, c) in channels.iter().enumerate() {
            let key = c.settings.key();
            let target = key.write_target();
            if c.settings.writable {
                writes.insert(target.clone(), i as u32);
            }
            reads.insert(key, i as u32);
            chans.push((target, c.unit.is_some()));
        }
        Dev {
            name,
            node_id: match node {
                NodeRef::Id(n) => Some(n),
                NodeRef::Name(_) => None,
            },
            node,
            auto: channels.is_empty(),
            reads,
            writes,
            chans,
        }
    }
}

/// What the listener knows of one value of a mapped node.
#[derive(Debug, Default)]
struct Val {
    meta: Option<Meta>,
    /// The last value published (state values only), so a resync does not publish it again.
    last: Option<Scalar>,
    /// Its channel on an automatic device, once it has one.
    ch: Option<u32>,
}

/// A mapped node's values and automatic channel names.
#[derive(Debug, Default)]
struct Node {
    values: HashMap<ValueKey, Val>,
    names: HashSet<String>,
}

/// One message for [`Listener::map`], stamped when it arrived.
#[derive(Debug)]
enum Msg {
    /// The state of every node after a (re)connect.
    Snapshot(Vec<NodeState>, Timestamp),
    /// A node's full state (`ready`).
    Node(Box<NodeState>, Timestamp),
    /// A value event of a node.
    Value {
        node: u16,
        kind: ValueEvent,
        args: Box<NodeValue>,
        ts: Timestamp,
    },
    /// The node is reachable (`alive`, `wake up`) or not (`dead`, `node removed`).
    Reach(u16, Option<Fault>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueEvent {
    /// `value updated`, `value added`: a state value.
    State,
    /// `value notification`: a stateless event (Central Scene).
    Notification,
    /// `metadata updated`.
    Metadata,
}

type Stream = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;
type Ws = WebSocketStream<Stream>;
type Connecting =
    Pin<Box<dyn Future<Output = Result<(Ws, Version, u32, Vec<NodeState>), Fault>> + Send>>;

enum Conn {
    Idle,
    /// The connect and handshake in progress, kept across cancelled `next()` calls.
    Connecting(Connecting),
    Open(Box<Ws>),
}

/// What a connect needs.
struct Connect {
    target: Target,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    timeout: Duration,
}

impl Connect {
    /// Connects, negotiates the schema and starts listening; returns the connection, the
    /// server's version, the schema and every node's state.
    async fn open(self: Arc<Self>) -> Result<(Ws, Version, u32, Vec<NodeState>), Fault> {
        let t = &self.target;
        let limit = self.timeout;
        let run = async {
            let tcp = TcpStream::connect((t.host.as_str(), t.port))
                .await
                .map_err(|e| Fault::new("connect", format!("{}: {e}", t.url)))?;
            let _ = tcp.set_nodelay(true);
            let stream = match &self.tls {
                None => Either::Left(tcp),
                Some((connector, name)) => {
                    Either::Right(connector.connect(name.clone(), tcp).await.map_err(|e| {
                        Fault::new(
                            "tls",
                            format!("{}: {}", t.url, osgate_core::net::describe_error(&e)),
                        )
                    })?)
                }
            };
            let (mut ws, _) = tokio_tungstenite::client_async(t.url.as_str(), stream)
                .await
                .map_err(|e| Fault::new("websocket", format!("{}: {e}", t.url)))?;
            let version: Version = serde_json::from_str(
                &handshake_frame(&mut ws, "version", None).await?,
            )
            .map_err(|e| Fault::new("protocol", format!("{}: bad version frame: {e}", t.url)))?;
            let schema = SCHEMA.min(version.max_schema_version);
            if schema < version.min_schema_version {
                return Err(Fault::new(
                    "schema",
                    format!(
                        "{}: the server needs API schema {} or newer; osgate speaks up to {SCHEMA}",
                        t.url, version.min_schema_version
                    ),
                ));
            }
            let cmd = format!(
                r#"{{"messageId":"schema","command":"set_api_schema","schemaVersion":{schema}}}"#
            );
            request(&mut ws, cmd, "schema", &t.url).await?;
            let cmd = r#"{"messageId":"listen","command":"start_listening"}"#.to_string();
            let text = request(&mut ws, cmd, "listen", &t.url).await?;
            let state: Listening = serde_json::from_str(&text).map_err(|e| {
                Fault::new(
                    "protocol",
                    format!("{}: bad start_listening answer: {e}", t.url),
                )
            })?;
            Ok((ws, version, schema, state.result.state.nodes))
        };
        match tokio::time::timeout(limit, run).await {
            Ok(r) => r,
            Err(_) => Err(Fault::new(
                "timeout",
                format!(
                    "{}: no answer to the handshake within {}",
                    t.url,
                    humantime::format_duration(limit)
                ),
            )),
        }
    }
}

/// Sends `cmd` and waits for its successful result (by `id`); returns the result's text.
async fn request(ws: &mut Ws, cmd: String, id: &str, url: &str) -> Result<String, Fault> {
    ws.send(Message::text(cmd))
        .await
        .map_err(|e| ws_fault(url, &e))?;
    let text = handshake_frame(ws, "result", Some(id)).await?;
    let r: CommandResult = serde_json::from_str(&text)
        .map_err(|e| Fault::new("protocol", format!("{url}: bad result frame: {e}")))?;
    if !r.success {
        let code = r.error_code.as_deref().unwrap_or("error");
        let what = if id == "schema" {
            "set_api_schema"
        } else {
            "start_listening"
        };
        return Err(Fault::new(
            "protocol",
            format!("{url}: {what} failed: {code}"),
        ));
    }
    Ok(text)
}

/// The next frame of `kind` (and `id`) during the handshake; others are skipped.
async fn handshake_frame(ws: &mut Ws, kind: &str, id: Option<&str>) -> Result<String, Fault> {
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None => {
                return Err(Fault::new(
                    "closed",
                    "the server closed the connection during the handshake",
                ))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ws_fault("server", &e)),
        };
        let Ok(h) = serde_json::from_str::<Head>(&text) else {
            continue;
        };
        if h.kind == kind && (id.is_none() || h.message_id.as_deref() == id) {
            return Ok(text.as_str().to_string());
        }
    }
}

fn ws_fault(url: &str, e: &tungstenite::Error) -> Fault {
    let kind = match e {
        tungstenite::Error::Io(_) => "io",
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => "closed",
        _ => "websocket",
    };
    Fault::new(kind, format!("{url}: {e}"))
}

/// What one text frame is.
enum Frame {
    /// A message for `map()`.
    Msg(Msg),
    /// A command's result, unparsed.
    Result(String),
    /// Nothing osgate uses.
    Skip,
}

/// The protocol side of one Z-Wave connector.
struct ZwaveListener {
    target: Arc<Connect>,
    conn: Conn,
    /// A connection lost during a write, reported by the next `next()`.
    lost: Option<Fault>,
    /// Messages that arrived while a write waited for its result.
    pending: VecDeque<Msg>,
    ping_interval: Duration,
    timeout: Duration,
    /// When the connection is pinged (or, with a ping out, given up).
    ping_at: Instant,
    ping_sent: bool,
    next_id: u64,
    devs: Vec<Dev>,
    /// Device by node id.
    node_dev: HashMap<u16, usize>,
    /// Values of mapped nodes.
    nodes: HashMap<u16, Node>,
    /// Controller and driver events already logged.
    logged: HashSet<String>,
    input: Input,
    ctx: ConnectorContext,
}

impl ZwaveListener {
    fn url(&self) -> &str {
        &self.target.target.url
    }

    /// The next text frame of the open connection, pinging the server when it has been quiet;
    /// cancel-safe (the ping deadline lives in `self`).
    async fn recv(&mut self) -> Result<tungstenite::Utf8Bytes, Fault> {
        loop {
            let Conn::Open(ws) = &mut self.conn else {
                return Err(Fault::new("closed", "not connected"));
            };
            let frame = match tokio::time::timeout_at(self.ping_at, ws.next()).await {
                Err(_) if self.ping_sent => {
                    return Err(Fault::new(
                        "timeout",
                        format!(
                            "{}: no answer to a ping within {} (the server is gone)",
                            self.target.target.url,
                            humantime::format_duration(self.timeout)
                        ),
                    ))
                }
                Err(_) => {
                    ws.send(Message::Ping(Default::default()))
                        .await
                        .map_err(|e| ws_fault(&self.target.target.url, &e))?;
                    self.ping_sent = true;
                    self.ping_at = Instant::now() + self.timeout;
                    continue;
                }
                Ok(None) => {
                    return Err(Fault::new(
                        "closed",
                        format!("{}: the server closed the connection", self.url()),
                    ))
                }
                Ok(Some(Err(e))) => return Err(ws_fault(&self.target.target.url, &e)),
                Ok(Some(Ok(m))) => m,
            };
            self.ping_sent = false;
            self.ping_at = Instant::now() + self.ping_interval;
            match frame {
                Message::Text(t) => return Ok(t),
                Message::Close(c) => {
                    let why = c.map(|c| c.reason.to_string()).unwrap_or_default();
                    return Err(Fault::new(
                        "closed",
                        format!("{}: the server closed the connection {why}", self.url()),
                    ));
                }
                _ => continue,
            }
        }
    }

    /// Classifies a frame; events of nodes no device maps, and `statistics updated`, are
    /// skipped before anything is allocated.
    fn frame(&mut self, text: &str) -> Frame {
        let ts = Timestamp::now();
        let head: Head = match serde_json::from_str(text) {
            Ok(h) => h,
            Err(e) => {
                self.input
                    .bad(&self.ctx, "server", &format!("invalid frame: {e}"));
                return Frame::Skip;
            }
        };
        match &*head.kind {
            "result" => return Frame::Result(text.to_string()),
            "event" => {}
            _ => return Frame::Skip,
        }
        let Some(raw) = head.event else {
            return Frame::Skip;
        };
        let ev: EventHead = match serde_json::from_str(raw.get()) {
            Ok(e) => e,
            Err(e) => {
                self.input
                    .bad(&self.ctx, "server", &format!("invalid event: {e}"));
                return Frame::Skip;
            }
        };
        if ev.event == "statistics updated" {
            return Frame::Skip;
        }
        self.input.good(&self.ctx, "server");
        if ev.source != "node" {
            let what = format!("{} {}", ev.source, ev.event);
            if self.logged.insert(what) {
                tracing::info!(connector = %self.ctx.name, source = %ev.source, event = %ev.event,
                    "Z-Wave event (each kind logged once)");
            }
            return Frame::Skip;
        }
        let Some(node) = ev.node_id else {
            return Frame::Skip;
        };
        let by_name = self.devs.iter().any(|d| d.node_id.is_none());
        let wanted = self.node_dev.contains_key(&node) || (by_name && ev.event == "ready");
        if !wanted {
            return Frame::Skip;
        }
        let kind = match &*ev.event {
            "value updated" | "value added" => ValueEvent::State,
            "value notification" => ValueEvent::Notification,
            "metadata updated" => ValueEvent::Metadata,
            "ready" => {
                let Some(raw) = ev.node_state else {
                    return Frame::Skip;
                };
                return match serde_json::from_str::<NodeState>(raw.get()) {
                    Ok(n) => Frame::Msg(Msg::Node(Box::new(n), ts)),
                    Err(e) => {
                        self.input
                            .bad(&self.ctx, "server", &format!("invalid node state: {e}"));
                        Frame::Skip
                    }
                };
            }
            "alive" | "wake up" => return Frame::Msg(Msg::Reach(node, None)),
            "dead" => {
                let f = Fault::new("dead", format!("node {node} is dead (it does not answer)"));
                return Frame::Msg(Msg::Reach(node, Some(f)));
            }
            "node removed" => {
                let f = Fault::new(
                    "removed",
                    format!("node {node} was removed from the network"),
                );
                return Frame::Msg(Msg::Reach(node, Some(f)));
            }
            "interview failed" => {
                tracing::warn!(connector = %self.ctx.name, node, "Z-Wave interview failed");
                return Frame::Skip;
            }
            _ => return Frame::Skip,
        };
        let Some(raw) = ev.args else {
            return Frame::Skip;
        };
        match serde_json::from_str::<NodeValue>(raw.get()) {
            Ok(args) => Frame::Msg(Msg::Value {
                node,
                kind,
                args: Box::new(args),
                ts,
            }),
            Err(e) => {
                self.input
                    .bad(&self.ctx, "server", &format!("invalid value event: {e}"));
                Frame::Skip
            }
        }
    }

    /// The device of `node`, if one is configured for it.
    fn dev_of(&self, node: u16) -> Option<usize> {
        self.node_dev.get(&node).copied()
    }

    /// Binds devices configured by node name to the node of that name.
    fn bind_name(&mut self, n: &NodeState) {
        let Some(name) = &n.name else { return };
        if self.node_dev.contains_key(&n.node_id) {
            return;
        }
        if let Some(i) = self
            .devs
            .iter()
            .position(|d| matches!(&d.node, NodeRef::Name(m) if m == name) && d.node_id.is_none())
        {
            self.devs[i].node_id = Some(n.node_id);
            self.node_dev.insert(n.node_id, i);
            tracing::info!(connector = %self.ctx.name, node = n.node_id, name = %name,
                "node found by name");
        }
    }

    /// A node's full state: health, metadata, and the values that are new or changed.
    fn node_state(&mut self, n: NodeState, ts: Timestamp, devices: &mut Devices) {
        self.bind_name(&n);
        let Some(dev) = self.dev_of(n.node_id) else {
            return;
        };
        let fault = if n.status == STATUS_DEAD {
            Some(Fault::new(
                "dead",
                format!("node {} is dead (it does not answer)", n.node_id),
            ))
        } else if !n.ready {
            let stage = n.interview_stage.as_ref().map(|s| s.to_string());
            Some(Fault::new(
                "interview",
                format!(
                    "node {} is not ready yet (interview stage {})",
                    n.node_id,
                    stage.as_deref().unwrap_or("unknown")
                ),
            ))
        } else {
            None
        };
        let ready = n.ready;
        let mut seen = HashSet::new();
        for v in n.values {
            let key = v.key();
            if let Some(meta) = v.metadata {
                self.set_meta(dev, n.node_id, &key, meta, devices);
            }
            if let Some(value) = v.value {
                let changed = self
                    .nodes
                    .get(&n.node_id)
                    .and_then(|nd| nd.values.get(&key))
                    .is_none_or(|val| val.last.as_ref() != Some(&value));
                if changed {
                    self.push(
                        dev,
                        n.node_id,
                        &key,
                        value.clone(),
                        ts,
                        v.property_name.as_deref(),
                        v.property_key_name.as_deref(),
                        devices,
                    );
                    self.val(n.node_id, &key).last = Some(value);
                }
            }
            seen.insert(key);
        }
        if ready {
            // A configured value id the node does not have is a config mistake: say so.
            let missing: Vec<(u32, ValueKey)> = self.devs[dev]
                .reads
                .iter()
                .filter(|(k, _)| !seen.contains(*k))
                .map(|(k, c)| (*c, k.clone()))
                .collect();
            for (ch, key) in missing {
                let why: Arc<str> = format!("node {} has no value with {key}", n.node_id).into();
                devices.push_bad(dev, ch as usize, why, ts);
            }
        }
        devices.report(dev, fault);
    }

    fn val(&mut self, node: u16, key: &ValueKey) -> &mut Val {
        self.nodes
            .entry(node)
            .or_default()
            .values
            .entry(key.clone())
            .or_default()
    }

    /// New metadata of a value: the unit of its channel, the write spec of the channel
    /// writing it.
    fn set_meta(
        &mut self,
        dev: usize,
        node: u16,
        key: &ValueKey,
        meta: Meta,
        devices: &mut Devices,
    ) {
        let d = &self.devs[dev];
        if let Some(&ch) = d.reads.get(key) {
            if !d.chans[ch as usize].1 {
                devices.set_unit(dev, ch as usize, meta.unit.clone());
            }
        }
        if let Some(&ch) = d.writes.get(key) {
            let spec = write_spec(&meta);
            if spec.is_none() {
                tracing::warn!(connector = %self.ctx.name, device = %d.name,
                    node, value = %key, "a writable channel's value cannot be written (zwave-js says it is read-only or of a type osgate does not write)");
            }
            devices.set_write(dev, ch as usize, spec);
        }
        let auto_ch = self
            .nodes
            .get(&node)
            .and_then(|n| n.values.get(key))
            .and_then(|v| v.ch);
        if let (true, Some(ch)) = (d.auto, auto_ch) {
            devices.set_unit(dev, ch as usize, meta.unit.clone());
        }
        self.val(node, key).meta = Some(meta);
    }

    /// Publishes `value` of `key` on its channel (configured, or derived on an automatic
    /// device when the value is readable).
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        dev: usize,
        node: u16,
        key: &ValueKey,
        value: Scalar,
        ts: Timestamp,
        name: Option<&str>,
        key_name: Option<&str>,
        devices: &mut Devices,
    ) {
        let Some(value) = value.value() else { return };
        let d = &self.devs[dev];
        let ch = if d.auto {
            let nd = self.nodes.entry(node).or_default();
            let val = nd.values.entry(key.clone()).or_default();
            match val.ch {
                Some(c) => c as usize,
                None => {
                    let hidden = val.meta.as_ref().is_some_and(|m| !m.readable || m.secret);
                    if hidden {
                        return;
                    }
                    let mut n = wire::derive_name(
                        &key.property,
                        name,
                        key.key.as_ref(),
                        key_name,
                        key.endpoint,
                    );
                    if nd.names.contains(&n) {
                        n = format!("{n}_cc{}", key.cc);
                    }
                    let unit = val.meta.as_ref().and_then(|m| m.unit.clone());
                    let Some(c) =
                        devices.channel_or_add(dev, &n, unit.as_ref(), &TransformConfig::default())
                    else {
                        return;
                    };
                    nd.names.insert(n);
                    val.ch = Some(c as u32);
                    c
                }
            }
        } else {
            match d.reads.get(key) {
                Some(&c) => c as usize,
                None => return,
            }
        };
        devices.push(dev, ch, value, ts);
    }

    /// Sends `node.set_value` and waits for its result, keeping the events that arrive
    /// meanwhile for `next()`.
    async fn set_value(
        &mut self,
        node: u16,
        key: &ValueKey,
        raw: &Value,
    ) -> Result<(), WriteError> {
        if !matches!(self.conn, Conn::Open(_)) {
            return Err(WriteError::Offline(format!(
                "not connected to {}",
                self.url()
            )));
        }
        self.next_id += 1;
        let id = format!("w{}", self.next_id);
        let cmd = serde_json::json!({
            "messageId": id, "command": "node.set_value", "nodeId": node,
            "valueId": key, "value": raw.to_json(),
        });
        let limit = self.timeout;
        let wait = async {
            if let Conn::Open(ws) = &mut self.conn {
                ws.send(Message::text(cmd.to_string()))
                    .await
                    .map_err(|e| ws_fault(&self.target.target.url, &e))?;
            }
            loop {
                let text = self.recv().await?;
                match self.frame(&text) {
                    Frame::Result(t) => {
                        let head: Head = serde_json::from_str(&t)
                            .map_err(|e| Fault::new("protocol", e.to_string()))?;
                        if head.message_id.as_deref() == Some(id.as_str()) {
                            return Ok::<String, Fault>(t);
                        }
                    }
                    Frame::Msg(m) => self.pending.push_back(m),
                    Frame::Skip => {}
                }
            }
        };
        let text = match tokio::time::timeout(limit, wait).await {
            Ok(Ok(t)) => t,
            Ok(Err(f)) => {
                let msg = f.message.clone();
                self.conn = Conn::Idle;
                self.lost = Some(f);
                return Err(WriteError::Offline(msg));
            }
            Err(_) => {
                return Err(WriteError::Offline(format!(
                    "no answer to node.set_value within {}",
                    humantime::format_duration(limit)
                )))
            }
        };
        let r: CommandResult = serde_json::from_str(&text)
            .map_err(|e| WriteError::Refused(format!("bad answer to node.set_value: {e}")))?;
        r.set_value_outcome()
            .map_err(|e| WriteError::Refused(format!("node {node}, {key}: {e}")))
    }
}

/// The write spec a value's metadata gives: its type (the kit checks it); `None` when it is
/// read-only or of a type osgate does not write.
fn write_spec(meta: &Meta) -> Option<WriteSpec> {
    if !meta.writeable {
        return None;
    }
    let kind = match meta.kind {
        MetaType::Boolean => ValueKind::Bool,
        MetaType::Number => ValueKind::Float,
        MetaType::String => ValueKind::Text,
        MetaType::Other => return None,
    };
    Some(WriteSpec::new(kind))
}

/// Checks a raw number against the metadata's range (device units, after the kit reversed
/// the channel's scale and offset).
fn check_range(meta: &Meta, raw: &Value) -> Result<(), String> {
    let Some(x) = raw.as_f64().filter(|_| !matches!(raw, Value::Bool(_))) else {
        return Ok(());
    };
    if meta.min.is_some_and(|lo| x < lo) || meta.max.is_some_and(|hi| x > hi) {
        let lo = meta.min.map_or("-∞".to_string(), |v| v.to_string());
        let hi = meta.max.map_or("∞".to_string(), |v| v.to_string());
        return Err(format!("{x} is outside the value's range [{lo}, {hi}]"));
    }
    Ok(())
}

impl Listener for ZwaveListener {
    type Msg = Msg;

    async fn next(&mut self) -> Result<Msg, Fault> {
        if let Some(m) = self.pending.pop_front() {
            return Ok(m);
        }
        if let Some(f) = self.lost.take() {
            return Err(f);
        }
        loop {
            match &mut self.conn {
                Conn::Idle => {
                    self.conn = Conn::Connecting(Box::pin(self.target.clone().open()));
                }
                Conn::Connecting(fut) => {
                    let res = fut.await;
                    match res {
                        Ok((ws, version, schema, nodes)) => {
                            tracing::info!(connector = %self.ctx.name, server = %self.url(),
                                server_version = %version.server_version,
                                driver_version = %version.driver_version,
                                home_id = ?version.home_id, schema, nodes = nodes.len(),
                                "connected to Z-Wave JS Server");
                            self.conn = Conn::Open(Box::new(ws));
                            self.ping_sent = false;
                            self.ping_at = Instant::now() + self.ping_interval;
                            return Ok(Msg::Snapshot(nodes, Timestamp::now()));
                        }
                        Err(f) => {
                            self.conn = Conn::Idle;
                            return Err(f);
                        }
                    }
                }
                Conn::Open(_) => {
                    let text = match self.recv().await {
                        Ok(t) => t,
                        Err(f) => {
                            self.conn = Conn::Idle;
                            return Err(f);
                        }
                    };
                    if let Frame::Msg(m) = self.frame(&text) {
                        return Ok(m);
                    }
                }
            }
        }
    }

    fn map(&mut self, msg: Msg, devices: &mut Devices) {
        match msg {
            Msg::Snapshot(nodes, ts) => {
                let mut present = HashSet::new();
                for n in nodes {
                    present.insert(n.node_id);
                    self.node_state(n, ts, devices);
                }
                for (i, d) in self.devs.iter().enumerate() {
                    let missing = match (&d.node, d.node_id) {
                        (_, Some(id)) => !present.contains(&id),
                        (NodeRef::Name(_), None) => true,
                        _ => false,
                    };
                    if missing {
                        let what = match &d.node {
                            NodeRef::Id(n) => format!("node {n}"),
                            NodeRef::Name(n) => format!("no node named \"{n}\""),
                        };
                        let f = Fault::new(
                            "unknown node",
                            format!("{what} is not in the Z-Wave network"),
                        );
                        devices.report(i, Some(f));
                    }
                }
            }
            Msg::Node(n, ts) => self.node_state(*n, ts, devices),
            Msg::Reach(node, fault) => {
                if let Some(dev) = self.dev_of(node) {
                    devices.report(dev, fault);
                }
            }
            Msg::Value {
                node,
                kind,
                args,
                ts,
            } => {
                let Some(dev) = self.dev_of(node) else { return };
                let key = args.key();
                let args = *args;
                match kind {
                    ValueEvent::Metadata => {
                        if let Some(meta) = args.metadata {
                            self.set_meta(dev, node, &key, meta, devices);
                        }
                    }
                    ValueEvent::State => {
                        if let Some(v) = args.new_value {
                            self.push(
                                dev,
                                node,
                                &key,
                                v.clone(),
                                ts,
                                args.property_name.as_deref(),
                                args.property_key_name.as_deref(),
                                devices,
                            );
                            self.val(node, &key).last = Some(v);
                        }
                    }
                    ValueEvent::Notification => {
                        if let Some(v) = args.value {
                            self.push(
                                dev,
                                node,
                                &key,
                                v,
                                ts,
                                args.property_name.as_deref(),
                                args.property_key_name.as_deref(),
                                devices,
                            );
                        }
                    }
                }
            }
        }
    }

    async fn write(&mut self, device: usize, ch: usize, raw: Value) -> Result<Value, WriteError> {
        let Some(d) = self.devs.get(device) else {
            return Err(WriteError::Invalid("not a configured device".into()));
        };
        let Some((target, _)) = d.chans.get(ch) else {
            return Err(WriteError::Invalid("not a configured channel".into()));
        };
        let Some(node) = d.node_id else {
            return Err(WriteError::Offline(
                "the node was not found on the server".into(),
            ));
        };
        let target = target.clone();
        if let Some(meta) = self
            .nodes
            .get(&node)
            .and_then(|n| n.values.get(&target))
            .and_then(|v| v.meta.as_ref())
        {
            check_range(meta, &raw).map_err(WriteError::Invalid)?;
        }
        self.set_value(node, &target, &raw).await?;
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Parses as the gateway does (`ConnectorConfig::from_raw`: parse, then `validate`).
    fn parse(v: serde_json::Value) -> Result<Arc<ZwaveConfig>, Vec<ConfigError>> {
        let mut errs = Vec::new();
        let raw = serde_json::value::to_raw_value(&v).unwrap();
        let c = crate::ConnectorConfig::from_raw(0, &raw, &|_| None, &mut errs);
        match c.as_ref().and_then(|c| c.kind.spec::<ZwaveConfig>()) {
            Some(spec) if errs.is_empty() => Ok(spec.clone()),
            _ => Err(errs),
        }
    }

    #[test]
    fn the_documented_shape_parses() {
        let spec = parse(json!({
            "name": "zwave", "protocol": "zwave", "url": "ws://127.0.0.1:3000",
            "devices": [ { "name": "living-room", "node": 2 },
                         { "name": "plug", "node": "Kitchen plug", "channels": [
                           { "name": "on", "command_class": 37, "endpoint": 0, "property": "currentValue", "writable": true },
                           { "name": "energy", "command_class": 50, "property": "value", "property_key": 65537 } ] } ]
        }))
        .unwrap();
        assert_eq!(spec.devices[0].settings.node, NodeRef::Id(2));
        assert_eq!(
            spec.devices[1].settings.node,
            NodeRef::Name("Kitchen plug".into())
        );
        let c = &spec.devices[1].channels[1].settings;
        assert_eq!(c.property_key, Some(Prop::Int(65537)));
        let dev = Dev::new("plug".into(), NodeRef::Id(3), &spec.devices[1].channels);
        assert_eq!(dev.chans[0].0.property, Prop::Str("targetValue".into()));
        assert!(dev.writes.contains_key(&dev.chans[0].0));
        assert!(!dev.auto);
    }

    #[test]
    fn mistakes_name_the_field() {
        let errs = parse(json!({
            "name": "zwave", "protocol": "zwave", "url": "http://h:3000", "timeout": "1ms",
            "devices": [ { "name": "a", "node": 0 }, { "name": "b", "node": 5 }, { "name": "c", "node": 5,
                "channels": [ { "name": "x", "command_class": 37, "property": "currentValue" },
                              { "name": "y", "command_class": 37, "property": "currentValue" } ] } ]
        }))
        .unwrap_err();
        let p = "connectors[0] \"zwave\".";
        let paths: Vec<String> = errs.iter().map(|e| e.path.replace(p, "")).collect();
        for want in [
            "url",
            "timeout",
            "devices[0].node",
            "devices[2].node",
            "devices[2].channels[1]",
        ] {
            assert!(
                paths.iter().any(|p| p == want),
                "{want} missing in {errs:?}"
            );
        }
        let errs = parse(
            json!({"name": "zwave", "protocol": "zwave", "url": "ws://h:3000",
            "tls": {}, "devices": []}),
        )
        .unwrap_err();
        assert_eq!(errs[0].path, "connectors[0] \"zwave\".tls");
        assert!(parse(json!({"name": "zwave", "protocol": "zwave", "url": "ws://h", "devices": [
            {"name": "a", "node": 2, "channels": [{"name": "x", "command_class": 37, "property": {"a": 1}}]}]}))
        .is_err());
    }

    #[test]
    fn write_specs_and_ranges_come_from_metadata() {
        let meta = |s: &str| serde_json::from_str::<Meta>(s).unwrap();
        let b = meta(r#"{"type":"boolean","writeable":true}"#);
        assert_eq!(write_spec(&b).unwrap().kind, ValueKind::Bool);
        assert!(write_spec(&meta(r#"{"type":"number","writeable":false}"#)).is_none());
        assert!(write_spec(&meta(r#"{"type":"duration"}"#)).is_none());
        let dim = meta(r#"{"type":"number","min":0,"max":99}"#);
        assert_eq!(write_spec(&dim).unwrap().kind, ValueKind::Float);
        assert!(check_range(&dim, &Value::F64(50.0)).is_ok());
        assert!(check_range(&dim, &Value::F64(100.0))
            .unwrap_err()
            .contains("[0, 99]"));
        assert!(check_range(&b, &Value::Bool(true)).is_ok());
    }

    #[test]
    fn urls() {
        let t = Target::parse("wss://[::1]:8443/zwave").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("::1", 8443, true));
        let t = Target::parse("ws://zwave.local").unwrap();
        assert_eq!((t.port, t.tls), (80, false));
        assert!(Target::parse("mqtt://h").is_err());
    }
}
