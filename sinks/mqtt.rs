//! The MQTT sink (`"type": "mqtt"`): publishes readings to a broker — by default the local
//! mosquitto that is bridged to the cloud.
//!
//! Delivery contract: a reading counts as delivered only when the broker acknowledged it
//! (PUBACK at QoS 1). rumqttc alone cannot give that: it drops what it had queued when the broker
//! lost the session (a reconnect whose ConnAck has no session present), and its event loop
//! reconnects at once, without backoff. So this sink keeps its own bounded **outbox**: an entry
//! leaves it only on its PUBACK; when the connection drops, every unacknowledged entry goes back
//! to the front of the outbox and is re-sent on the next connection (at-least-once). Each
//! connection gets a fresh rumqttc client and event loop, so no stale request of rumqttc's
//! replays behind our back.
//!
//! Tasks: the sink task owns the outbox and publishes; a link task per connection polls the
//! rumqttc `EventLoop` (never blocked) and reports `ConnAck`, `Publish(pkid)` and `PubAck(pkid)`.
//! rumqttc hands out packet ids in request order, so the n-th `Outgoing::Publish` belongs to the
//! n-th entry we handed over; the pkid then maps to the entry until its PUBACK.
//!
//! Entries keep an `Arc` of their batch, not an encoded message: topic and payload are rendered
//! when (re-)sent, so the outbox costs a few bytes per reading while the broker is away.
//!
//! Health: `status/{gateway}` carries a retained `{"online":true,…,"config":{"source":…}}` after
//! every ConnAck and whenever the configuration's source or last error changes (mosquitto
//! publishes our will when *it* restarts), the last will `{"online":false}`, and an
//! explicit offline message on a clean stop. Device status messages are retained and re-sent
//! after every reconnect.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, Outgoing, Packet, QoS};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use super::format::{encode_device, encode_reading, Format, TopicTemplate};
use super::{SinkContext, SinkError};
use osgate_core::backoff::Backoff;
use osgate_core::config::{ConfigError, Dur};
use osgate_core::net::mqtt::MqttClientSettings;
use osgate_core::net::TlsConfig;
use osgate_core::pipeline::Envelope;
use osgate_core::reading::Batch;
use osgate_core::status::DeviceStatus;

/// Settings of the MQTT sink.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSinkConfig {
    /// Broker URL: `mqtt://host[:port]` (default port 1883) or, with TLS, `mqtts://host[:port]`
    /// (default port 8883); no other scheme. IPv6 as `[::1]:1883`.
    pub url: String,
    /// Client id; `{gateway}` and `{sink}` are replaced. Stable, so the broker keeps the session.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// 1 (default: delivered = acknowledged) or 0 (fire and forget).
    #[serde(default = "default_qos", deserialize_with = "zero_or_one")]
    pub qos: u8,
    /// `reading` (default): a message per reading; `device`: a message per batch.
    #[serde(default)]
    pub format: Format,
    /// Topic template. Default `telemetry/{gateway}/{device}/{channel}` (`reading`) or
    /// `telemetry/{gateway}/{device}` (`device`).
    #[serde(default)]
    pub topic: Option<String>,
    /// Publish `status/{gateway}` (online, last will) and device status topics (default true).
    #[serde(default = "yes")]
    pub status: bool,
    /// Retain telemetry messages (default false).
    #[serde(default)]
    pub retain: bool,
    /// User name for the broker.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for the broker (use `${VAR}`).
    #[serde(default)]
    pub password: Option<String>,
    /// File holding the password (trailing newline ignored), instead of `password`; read at
    /// every connect.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS settings (`ca_file`, `cert_file`, `key_file`, `server_name`,
    /// `insecure_skip_verify`); needs an `mqtts://` URL. `mqtts://` without it verifies the
    /// broker against the built-in roots.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// MQTT keep-alive (default `30s`; at least `1s`).
    #[serde(default = "default_keep_alive")]
    pub keep_alive: Dur,
    /// Start a clean session on connect (default false: the broker keeps our session).
    #[serde(default)]
    pub clean_session: bool,
    /// Readings the sink holds while the broker is away (default 100000; about 150 bytes each). When
    /// full, new readings are dropped and counted. While connected the sink takes new readings
    /// only as fast as the broker acknowledges them (a few windows ahead), so the connectors
    /// feel backpressure instead.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
    /// QoS 1 messages in flight without PUBACK (default 100).
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    /// Longest wait between reconnect attempts (default `5s`; the first wait is 100 ms and
    /// doubles).
    #[serde(default = "default_backoff_max")]
    pub backoff_max: Dur,
}

fn yes() -> bool {
    true
}
fn default_client_id() -> String {
    "osgate-{gateway}-{sink}".into()
}
/// `qos` as the user wrote it: 0 or 1, and an error that says so for anything else.
fn zero_or_one<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    match v.as_u64() {
        Some(n @ 0..=1) => Ok(n as u8),
        _ => Err(serde::de::Error::custom(format!(
            "expected 0 or 1, got {v}"
        ))),
    }
}

fn default_qos() -> u8 {
    1
}
fn default_keep_alive() -> Dur {
    Dur::from_secs(30)
}
fn default_buffer() -> usize {
    100_000
}
fn default_inflight() -> u16 {
    100
}
fn default_backoff_max() -> Dur {
    Dur::from_secs(5)
}

impl MqttSinkConfig {
    /// Semantic checks: the connection's (URL, TLS, credentials, keep-alive, client id: see
    /// [`MqttClientSettings::validate`]) and the sink's own.
    pub fn validate(&self, path: &str, errs: &mut Vec<ConfigError>) {
        self.client_settings(self.client_id.clone())
            .validate(path, errs);
        if self.qos > 1 {
            errs.push(ConfigError::new(
                format!("{path}.qos"),
                format!("{} is not supported, expected 0 or 1", self.qos),
            ));
        }
        if self.buffer == 0 {
            errs.push(ConfigError::new(
                format!("{path}.buffer"),
                "must be at least 1",
            ));
        }
        if self.inflight == 0 {
            errs.push(ConfigError::new(
                format!("{path}.inflight"),
                "must be at least 1",
            ));
        }
        if let Some(t) = &self.topic {
            match TopicTemplate::compile(t, "g", "s") {
                Ok(tpl) if self.format == Format::Reading && !tpl.has_channel() => {
                    errs.push(ConfigError::new(
                        format!("{path}.topic"),
                        "with format \"reading\" the topic must contain {channel}",
                    ))
                }
                Ok(_) => {}
                Err(e) => errs.push(ConfigError::new(format!("{path}.topic"), e)),
            }
        }
    }

    /// The connection settings shared with other MQTT clients of the same broker (the command
    /// client): URL, session, credentials, TLS. `client_id` is final.
    pub fn client_settings(&self, client_id: String) -> MqttClientSettings {
        let mut s = MqttClientSettings::new(self.url.clone(), client_id);
        s.keep_alive = self.keep_alive.0;
        s.clean_session = self.clean_session;
        s.username = self.username.clone();
        s.password = self.password.clone();
        s.password_file = self.password_file.clone();
        s.tls = self.tls.clone();
        s
    }

    fn template(&self) -> &str {
        match (&self.topic, self.format) {
            (Some(t), _) => t,
            (None, Format::Reading) => "telemetry/{gateway}/{device}/{channel}",
            (None, Format::Device) => "telemetry/{gateway}/{device}",
        }
    }
}

/// What the outbox holds: references into batches, rendered when sent.
#[derive(Debug)]
enum Item {
    Reading {
        batch: Arc<Batch>,
        idx: u32,
    },
    Device(Arc<Batch>),
    Raw {
        topic: Arc<str>,
        payload: Bytes,
        retain: bool,
    },
}

impl Item {
    fn readings(&self) -> u64 {
        match self {
            Item::Reading { .. } => 1,
            Item::Device(b) => b.readings.len() as u64,
            Item::Raw { .. } => 0,
        }
    }
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    item: Item,
}

/// What the link task reports.
#[derive(Debug)]
enum LinkEvent {
    ConnAck,
    /// Publishes written and PUBACKs received, in order, batched: one message (and at most one
    /// wake-up of the sink task) per burst the event loop handled.
    Acks(Vec<Ack>),
    Down(String),
    Closed,
}

#[derive(Debug, Clone, Copy)]
enum Ack {
    Sent(u16),
    Acked(u16),
}

fn ack_of(ev: &Event) -> Option<Ack> {
    match ev {
        Event::Incoming(Packet::PubAck(a)) => Some(Ack::Acked(a.pkid)),
        Event::Outgoing(Outgoing::Publish(pkid)) => Some(Ack::Sent(*pkid)),
        _ => None,
    }
}

struct Link {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<LinkEvent>,
    task: JoinHandle<()>,
    connected: bool,
}

async fn drive(mut el: EventLoop, tx: mpsc::UnboundedSender<LinkEvent>) {
    let mut acks = Vec::new();
    loop {
        let ev = match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => LinkEvent::ConnAck,
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                let _ = tx.send(LinkEvent::Closed);
                return;
            }
            Ok(ev) => {
                let Some(a) = ack_of(&ev) else { continue };
                acks.push(a);
                // rumqttc buffers the events of a burst (many PUBACKs read at once) and hands
                // them out one poll at a time; take the buffered ones now. Only already
                // produced events are taken, so no poll future is ever dropped half-way.
                while let Some(a) = el.state.events.front().and_then(ack_of) {
                    el.state.events.pop_front();
                    acks.push(a);
                }
                LinkEvent::Acks(std::mem::take(&mut acks))
            }
            Err(e) => {
                let _ = tx.send(LinkEvent::Down(osgate_core::net::describe_error(&e)));
                return;
            }
        };
        if tx.send(ev).is_err() {
            return;
        }
    }
}

/// The sink's state.
struct Sink {
    cfg: MqttSinkConfig,
    ctx: SinkContext,
    /// How to connect (built into rumqttc options at every connect, so a rotated password
    /// file or certificate is picked up).
    settings: MqttClientSettings,
    qos: QoS,
    topic: TopicTemplate,
    status_topic: Arc<str>,
    online: Bytes,
    offline: Bytes,
    unsent: VecDeque<Entry>,
    awaiting: VecDeque<Entry>,
    inflight: Vec<Option<Entry>>,
    inflight_len: usize,
    /// Readings in the outbox (unsent, awaiting a packet id, in flight).
    held: usize,
    window: usize,
    seq: u64,
    enc: BytesMut,
    device_status: BTreeMap<Arc<str>, Bytes>,
    dropping: bool,
    ever_connected: bool,
    /// The cause of the last failed connect, logged once per change.
    last_error: Option<String>,
}

/// Runs the MQTT sink until its queue ends and the outbox is flushed (or the deadline passes).
pub async fn run(cfg: MqttSinkConfig, ctx: SinkContext) -> Result<(), SinkError> {
    let client_id = cfg
        .client_id
        .replace("{gateway}", &ctx.gateway)
        .replace("{sink}", &ctx.name);
    let status_topic: Arc<str> = format!("status/{}", ctx.gateway).into();
    let offline = Bytes::from_static(b"{\"online\":false}");
    let mut settings = cfg.client_settings(client_id);
    settings.inflight = Some(cfg.inflight);
    settings.max_packet_size = Some(256 * 1024);
    if cfg.status {
        settings.last_will = Some(LastWill::new(
            status_topic.to_string(),
            offline.clone(),
            QoS::AtLeastOnce,
            true,
        ));
    }
    let topic =
        TopicTemplate::compile(cfg.template(), &ctx.gateway, &ctx.name).expect("validated at load");
    let online = online_payload(&ctx);
    let window = cfg.inflight as usize * 2;
    let mut sink = Sink {
        qos: if cfg.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        },
        settings,
        topic,
        status_topic,
        online,
        offline,
        unsent: VecDeque::new(),
        awaiting: VecDeque::new(),
        inflight: (0..=cfg.inflight as usize).map(|_| None).collect(),
        inflight_len: 0,
        held: 0,
        window,
        seq: 0,
        enc: BytesMut::with_capacity(64 * 1024),
        device_status: BTreeMap::new(),
        dropping: false,
        ever_connected: false,
        last_error: None,
        cfg,
        ctx,
    };
    sink.run().await
}

impl Sink {
    /// Starts a connection attempt. Options that cannot be built (a TLS or password file gone
    /// since the config was checked) fail the attempt like a refused connect: the sink keeps
    /// buffering and retries with backoff, and never falls back to plain text.
    fn connect(&self) -> Result<Link, String> {
        let opts = self.settings.options().map_err(|e| e.to_string())?;
        let (client, el) = AsyncClient::new(opts, self.window + 8);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(el, tx));
        Ok(Link {
            client,
            events,
            task,
            connected: false,
        })
    }

    /// A connection attempt failed or a connection was lost: count it, keep the cause in the
    /// status, and log it once per change of cause (a broker that stays away, or a certificate
    /// that stays wrong, is not logged at every retry).
    fn link_down(&mut self, err: String, was_connected: bool) {
        self.ctx.counters.errors.fetch_add(1, Relaxed);
        self.ctx.counters.connected.store(false, Relaxed);
        let name = &self.ctx.name;
        let changed = self.last_error.as_deref() != Some(err.as_str());
        if was_connected {
            tracing::warn!(sink = %name, broker = %self.cfg.url, error = %err, buffered = self.len(), "lost connection to broker; buffering and retrying");
        } else if changed {
            tracing::warn!(sink = %name, broker = %self.cfg.url, error = %err, "cannot connect to broker; retrying with backoff");
        } else {
            tracing::debug!(sink = %name, error = %err, "broker still unreachable");
        }
        if changed {
            self.ctx.counters.set_last_error(Some(err.clone()));
            self.last_error = Some(err);
        }
    }

    fn len(&self) -> usize {
        self.unsent.len() + self.awaiting.len() + self.inflight_len
    }

    fn push_item(&mut self, item: Item, front: bool) {
        self.seq += 1;
        self.held += item.readings() as usize;
        let e = Entry {
            seq: self.seq,
            item,
        };
        if front {
            self.unsent.push_front(e);
        } else {
            self.unsent.push_back(e);
        }
    }

    /// Queues a retained status message (QoS 1), at the front when it must go out first.
    fn push_retained(&mut self, topic: Arc<str>, payload: Bytes, front: bool) {
        let item = Item::Raw {
            topic,
            payload,
            retain: true,
        };
        self.push_item(item, front);
    }

    /// Takes one envelope from the queue into the outbox (or drops it when the outbox is full).
    fn accept(&mut self, env: Envelope) {
        match env {
            Envelope::Batch(batch) => {
                let n = batch.readings.len();
                self.ctx.counters.received.fetch_add(n as u64, Relaxed);
                if self.held + n > self.cfg.buffer {
                    self.ctx.counters.dropped.fetch_add(n as u64, Relaxed);
                    if !self.dropping {
                        self.dropping = true;
                        tracing::warn!(sink = %self.ctx.name, buffer = self.cfg.buffer,
                            "buffer full while the broker is away: dropping new readings (counted)");
                    }
                    return;
                }
                if self.dropping && self.held < self.cfg.buffer / 2 {
                    // The overflow ended (the backlog drained, not merely reconnected): a new
                    // one is logged again.
                    self.dropping = false;
                }
                match self.cfg.format {
                    Format::Reading => {
                        for idx in 0..n as u32 {
                            self.push_item(
                                Item::Reading {
                                    batch: batch.clone(),
                                    idx,
                                },
                                false,
                            );
                        }
                    }
                    Format::Device => self.push_item(Item::Device(batch), false),
                }
            }
            Envelope::Status(st) => {
                if !self.cfg.status {
                    return;
                }
                let (topic, payload) = self.device_status_message(&st);
                self.device_status.insert(topic.clone(), payload.clone());
                self.push_retained(topic, payload, false);
            }
        }
    }

    fn device_status_message(&self, st: &DeviceStatus) -> (Arc<str>, Bytes) {
        let topic: Arc<str> =
            format!("{}/{}/{}", self.status_topic, st.connector, st.device).into();
        let payload = serde_json::to_vec(st).expect("status serializes");
        (topic, Bytes::from(payload))
    }

    /// Renders an entry into (topic, payload, retain).
    fn render(&mut self, item: &Item) -> (String, Bytes, bool) {
        self.enc.reserve(1024);
        match item {
            Item::Reading { batch, idx } => {
                let r = &batch.readings[*idx as usize];
                encode_reading(&mut self.enc, r, false);
                let topic = self.topic.render(&batch.connector, &r.device, &r.channel);
                (topic, self.enc.split().freeze(), self.cfg.retain)
            }
            Item::Device(batch) => {
                encode_device(&mut self.enc, batch, false);
                let topic = self.topic.render(&batch.connector, &batch.device, "");
                (topic, self.enc.split().freeze(), self.cfg.retain)
            }
            Item::Raw {
                topic,
                payload,
                retain,
            } => (topic.to_string(), payload.clone(), *retain),
        }
    }

    /// Hands entries to the client while the window has room.
    async fn pump(&mut self, link: &Link) {
        while self.awaiting.len() + self.inflight_len < self.window {
            let Some(e) = self.unsent.pop_front() else {
                break;
            };
            let (topic, payload, retain) = self.render(&e.item);
            let qos = if matches!(e.item, Item::Raw { .. }) {
                QoS::AtLeastOnce
            } else {
                self.qos
            };
            if link
                .client
                .publish_bytes(topic, qos, retain, payload)
                .await
                .is_err()
            {
                // The link task is gone; its Down event follows.
                self.unsent.push_front(e);
                break;
            }
            self.awaiting.push_back(e);
        }
    }

    fn on_sent(&mut self, pkid: u16) {
        let Some(e) = self.awaiting.pop_front() else {
            tracing::debug!(sink = %self.ctx.name, pkid, "publish event without a pending entry");
            return;
        };
        let n = e.item.readings();
        self.ctx.counters.published.fetch_add(n, Relaxed);
        if pkid == 0 {
            self.ctx.counters.acked.fetch_add(n, Relaxed);
            self.held -= n as usize;
            return;
        }
        match self.inflight.get_mut(pkid as usize) {
            Some(slot) => {
                if let Some(old) = slot.replace(e) {
                    // Cannot happen with an in-order broker; keep the entry rather than lose it.
                    self.unsent.push_front(old);
                } else {
                    self.inflight_len += 1;
                }
            }
            None => self.unsent.push_front(e),
        }
    }

    fn on_acked(&mut self, pkid: u16) {
        if let Some(e) = self.inflight.get_mut(pkid as usize).and_then(Option::take) {
            self.inflight_len -= 1;
            self.held -= e.item.readings() as usize;
            self.ctx
                .counters
                .acked
                .fetch_add(e.item.readings(), Relaxed);
        }
    }

    fn on_acks(&mut self, acks: &[Ack]) {
        for a in acks {
            match *a {
                Ack::Sent(pkid) => self.on_sent(pkid),
                Ack::Acked(pkid) => self.on_acked(pkid),
            }
        }
    }

    /// Handles the `Sent`/`Acked` events already queued, without a wake-up per event; returns
    /// the first other event, to be handled next.
    fn drain_acks(&mut self, link: &mut Link) -> Option<LinkEvent> {
        for _ in 0..256 {
            match link.events.try_recv() {
                Ok(LinkEvent::Acks(acks)) => self.on_acks(&acks),
                Ok(other) => return Some(other),
                Err(_) => return None,
            }
        }
        None
    }

    /// Puts every unacknowledged entry back at the front of the outbox, oldest first.
    fn requeue(&mut self) {
        let mut back: Vec<Entry> = self.awaiting.drain(..).collect();
        back.extend(self.inflight.iter_mut().filter_map(Option::take));
        self.inflight_len = 0;
        back.sort_by_key(|e| e.seq);
        for e in back.into_iter().rev() {
            self.unsent.push_front(e);
        }
    }

    fn on_connack(&mut self) {
        if self.cfg.status {
            // Device statuses first, then online (pushed to the front last, so sent first).
            let statuses: Vec<_> = self
                .device_status
                .iter()
                .map(|(t, p)| (t.clone(), p.clone()))
                .collect();
            for (topic, payload) in statuses.into_iter().rev() {
                self.push_retained(topic, payload, true);
            }
            let (topic, payload) = (self.status_topic.clone(), self.online.clone());
            self.push_retained(topic, payload, true);
        }
    }

    async fn run(&mut self) -> Result<(), SinkError> {
        let name = self.ctx.name.clone();
        let mut backoff = Backoff::new(
            Duration::from_millis(100),
            self.cfg.backoff_max.0.max(Duration::from_millis(100)),
        );
        let mut link: Option<Link> = None;
        let mut reconnect_at = Instant::now();
        let mut input_open = true;
        let mut deadline: Option<Instant> = None;
        let mut offline_queued = false;
        let mut info_open = true;
        // A non-ack event met while draining acks, handled on the next turn.
        let mut stash: Option<LinkEvent> = None;
        let far = Instant::now() + Duration::from_secs(86400 * 365);

        loop {
            let connected = link.as_ref().is_some_and(|l| l.connected);
            if connected {
                // pump needs `&mut self` and the link: take the link out for the call.
                let l = link.take().expect("connected link");
                self.pump(&l).await;
                link = Some(l);
            }
            self.ctx.counters.buffered.store(self.len() as u64, Relaxed);

            if !input_open && self.len() == 0 {
                if connected && self.cfg.status && !offline_queued {
                    offline_queued = true;
                    let (topic, payload) = (self.status_topic.clone(), self.offline.clone());
                    self.push_retained(topic, payload, false);
                    continue;
                }
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let pending = self.len();
                tracing::warn!(sink = %name, pending, "flush deadline passed with messages unacknowledged");
                if let Some(l) = link.take() {
                    l.task.abort();
                }
                return Err(SinkError::FlushTimeout { pending });
            }

            // Connected: stay a few windows ahead of the broker (backpressure beyond that keeps
            // memory and latency low). Disconnected: take everything; beyond `buffer` readings
            // the newest are dropped and counted.
            let room = !connected || self.unsent.len() < self.window * 4;
            let link_active = link.is_some();
            tokio::select! {
                biased;
                ev = async {
                    match stash.take() {
                        Some(e) => Some(e),
                        None => link.as_mut().expect("active link").events.recv().await,
                    }
                }, if link_active => {
                    match ev {
                        Some(LinkEvent::ConnAck) => {
                            let l = link.as_mut().expect("active link");
                            l.connected = true;
                            backoff.reset();
                            self.ctx.counters.connected.store(true, Relaxed);
                            self.ctx.counters.set_last_error(None);
                            self.last_error = None;
                            if self.ever_connected {
                                tracing::info!(sink = %name, broker = %self.cfg.url, buffered = self.len(), "reconnected to broker");
                            } else {
                                tracing::info!(sink = %name, broker = %self.cfg.url, "connected to broker");
                            }
                            self.ever_connected = true;
                            self.on_connack();
                        }
                        Some(LinkEvent::Acks(acks)) => {
                            self.on_acks(&acks);
                            stash = self.drain_acks(link.as_mut().expect("active link"));
                        }
                        Some(LinkEvent::Down(err)) => {
                            stash = None;
                            let was = link.take().is_some_and(|l| l.connected);
                            self.requeue();
                            self.link_down(err, was);
                            reconnect_at = Instant::now() + backoff.next_delay();
                        }
                        Some(LinkEvent::Closed) | None => {
                            stash = None;
                            link = None;
                            self.requeue();
                            reconnect_at = Instant::now();
                        }
                    }
                }
                env = self.ctx.rx.recv(), if input_open && room => match env {
                    Some(env) => {
                        self.accept(env);
                        // Drain what is already queued without another wake-up.
                        while !connected || self.unsent.len() < self.window * 4 {
                            match self.ctx.rx.try_recv() {
                                Ok(env) => self.accept(env),
                                Err(_) => break,
                            }
                        }
                    }
                    None => {
                        input_open = false;
                        deadline = Some(Instant::now() + self.ctx.flush_timeout);
                        tracing::debug!(sink = %name, pending = self.len(), "queue closed; flushing");
                    }
                },
                changed = self.ctx.config_info.changed(), if info_open => {
                    // A reload or a refresh error: the retained status says so at once.
                    if changed.is_err() {
                        info_open = false;
                    } else {
                        self.online = online_payload(&self.ctx);
                        if connected && self.cfg.status && input_open {
                            let (topic, payload) = (self.status_topic.clone(), self.online.clone());
                            self.push_retained(topic, payload, true);
                        }
                    }
                }
                _ = sleep_until(reconnect_at), if !link_active => {
                    match self.connect() {
                        Ok(l) => link = Some(l),
                        Err(e) => {
                            self.link_down(e, false);
                            reconnect_at = Instant::now() + backoff.next_delay();
                        }
                    }
                }
                _ = sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {}
            }
        }

        if let Some(l) = link.take() {
            let _ = l.client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_secs(1), l.task).await;
        }
        self.ctx.counters.connected.store(false, Relaxed);
        let c = self.ctx.counters.snapshot();
        tracing::info!(sink = %name, received = c.received, published = c.published, acked = c.acked,
            dropped = c.dropped, "sink stopped; every accepted reading acknowledged");
        Ok(())
    }
}

/// The retained `status/{gateway}` payload: online, version, start time and where the running
/// configuration came from (`config`: source, loaded, fetched, checked, last_error).
fn online_payload(ctx: &SinkContext) -> Bytes {
    let payload = serde_json::json!({
        "online": true,
        "version": ctx.version,
        "commit": ctx.commit,
        "started": ctx.started,
        "config": *ctx.config_info.borrow(),
    });
    Bytes::from(payload.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(v: serde_json::Value) -> MqttSinkConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn tls_needs_mqtts_and_is_checked_at_load() {
        let mut errs = Vec::new();
        cfg(serde_json::json!({"url": "mqtt://h", "tls": {}})).validate("s", &mut errs);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "s.tls");
        assert!(errs[0].message.contains("plain text"));
        errs.clear();
        cfg(serde_json::json!({"url": "mqtts://h"})).validate("s", &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        cfg(serde_json::json!({"url": "mqtts://h", "tls": {"ca_file": "/nonexistent.pem"}}))
            .validate("s", &mut errs);
        assert_eq!(errs[0].path, "s.tls.ca_file");
        assert!(errs[0].message.contains("/nonexistent.pem: cannot read"));
        let bad: Result<MqttSinkConfig, _> =
            serde_json::from_value(serde_json::json!({"url": "mqtts://h", "tls": {"ca": "x"}}));
        assert!(bad.is_err());
    }
}
