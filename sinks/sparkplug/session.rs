//! The edge node's MQTT session: one rumqttc connection at a time, each with its own `bdSeq`
//! and its NDEATH as the will; subscriptions to NCMD, DCMD and the primary host's STATE; births
//! once subscribed (and the host online); then data, QoS 1, in order.
//!
//! Messages are queued as [`Item`]s and rendered when sent, so `seq` follows the order on the
//! wire and a birth carries the values current at that moment. What the broker acknowledged
//! leaves the queue (PUBACKs come in order at QoS 1). When the connection drops, or the
//! primary host goes offline (NDEATH, disconnect, reconnect with the next `bdSeq`), the data
//! not acknowledged stays, bounded by `buffer` readings, and is sent after the next births
//! flagged `is_historical`; births and deaths are not kept, they are made again.
//!
//! Data arrive as batches and device statuses from the sink's queue (see [`super::node`] for
//! what is sent); commands arrive as MQTT messages; a DCMD write runs in a task of its own
//! through the device control registry and reports back, so that the next reading of the
//! written channel is sent even when it did not change.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use rumqttc::{LastWill, Publish, QoS, SubscribeFilter};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use super::bdseq::{state_dir, BdSeqStore};
use super::command::{command_value, write};
use super::host::{state_topic, Host, HostChange};
use super::node::{Changed, DeviceState, Node, Update, REBIRTH};
use super::proto::{DataType, Metric, MetricValue, Payload};
use super::SparkplugSinkConfig;
use crate::{SinkContext, SinkError};
use osgate_core::backoff::Backoff;
use osgate_core::net::mqtt::{Ack, Delivery, Down, MqttSession, Outbox, SessionEvent, Weigh};
use osgate_core::pipeline::Envelope;
use osgate_core::reading::{Batch, Timestamp};
use osgate_core::status::{DeviceStatus, Health};

/// The device of the gateway's self-telemetry (the `osgate` package's
/// `config::TELEMETRY_DEVICE`): its readings are node metrics.
const TELEMETRY_DEVICE: &str = "_gateway";
/// Largest MQTT packet in and out (a DBIRTH of thousands of channels fits).
const MAX_PACKET: usize = 16 * 1024 * 1024;

/// A message to send, rendered when it is sent.
#[derive(Debug)]
enum Item {
    NBirth,
    DBirth {
        device: Arc<str>,
        /// Readings of the batch that made the birth (counted as delivered with it).
        readings: u64,
    },
    DDeath(Arc<str>),
    /// DDATA (or NDATA with `node`); `changed: None` means every reading (held data).
    Data {
        batch: Arc<Batch>,
        changed: Option<Changed>,
        historical: bool,
        node: bool,
    },
    NDeath,
}

impl Item {
    fn readings(&self) -> u64 {
        match self {
            Item::DBirth { readings, .. } => *readings,
            Item::Data { batch, node, .. } if !node => match self.changed() {
                Some(c) => c.idx.len() as u64,
                None => batch.readings.len() as u64,
            },
            _ => 0,
        }
    }

    fn changed(&self) -> Option<&Changed> {
        match self {
            Item::Data { changed, .. } => changed.as_ref(),
            _ => None,
        }
    }

    /// Device data kept when the connection drops.
    fn is_held(&self) -> bool {
        matches!(self, Item::Data { node: false, .. })
    }
}

/// The outbox is bounded by the readings of held device data (`buffer`); births, deaths and
/// node data weigh nothing (they are not kept).
impl Weigh for Item {
    fn weight(&self) -> usize {
        if self.is_held() {
            self.readings() as usize
        } else {
            0
        }
    }
}

/// A finished DCMD write: the channel whose next reading confirms it.
type WriteDone = (Arc<str>, Arc<str>);

struct Session {
    cfg: SparkplugSinkConfig,
    ctx: SinkContext,
    node: Node,
    host: Option<Host>,
    host_topic: Option<String>,
    ncmd_topic: String,
    dcmd_prefix: String,
    bdseq: BdSeqStore,
    /// NBIRTH queued on this connection (births and data may go out).
    born: bool,
    /// What is not acknowledged; the weight of its unsent part is the device readings held
    /// (bounded by `buffer`).
    outbox: Outbox<Item>,
    window: usize,
    dropping: bool,
    last_bad_command: Option<String>,
    writes: mpsc::UnboundedSender<WriteDone>,
    /// The primary host went away: the NDEATH is queued, and the connection ends once the
    /// broker acknowledged it.
    leaving: bool,
}

/// Runs the edge node (see the module docs).
pub async fn run(cfg: SparkplugSinkConfig, ctx: SinkContext) -> Result<(), SinkError> {
    let client_id = cfg
        .client_id
        .replace("{gateway}", &ctx.gateway)
        .replace("{sink}", &ctx.name);
    let mut settings = cfg.client_settings(client_id);
    settings.inflight = Some(cfg.inflight);
    settings.max_packet_size = Some(MAX_PACKET);
    let edge = cfg.edge_node_id.replace("{gateway}", &ctx.gateway);
    let node = Node::new(&cfg.group_id, &edge);
    let (writes, done) = mpsc::unbounded_channel();
    let host_topic = cfg.primary_host_id.as_deref().map(state_topic);
    let ncmd_topic = node.node_topic("NCMD");
    let dcmd_prefix = node.device_topic("DCMD", "");
    // NCMD, DCMD and the primary host's STATE, subscribed again on every ConnAck.
    let mut filters = vec![
        SubscribeFilter::new(ncmd_topic.clone(), QoS::AtLeastOnce),
        SubscribeFilter::new(format!("{dcmd_prefix}+"), QoS::AtLeastOnce),
    ];
    if let Some(t) = &host_topic {
        filters.push(SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
    }
    let backoff = Backoff::new(
        Duration::from_millis(100),
        cfg.backoff_max.0.max(Duration::from_millis(100)),
    );
    let window = cfg.inflight as usize;
    let mqtt = MqttSession::new(settings, backoff, window + 16).subscribe(filters);
    let mut s = Session {
        host: cfg.primary_host_id.as_ref().map(|_| Host::default()),
        host_topic,
        ncmd_topic,
        dcmd_prefix,
        bdseq: BdSeqStore::open(&state_dir(cfg.state_dir.as_deref()), &ctx.name),
        node,
        born: false,
        outbox: Outbox::new(),
        window,
        dropping: false,
        last_bad_command: None,
        writes,
        leaving: false,
        cfg,
        ctx,
    };
    s.run(mqtt, done).await
}

impl Session {
    /// Starts a connection attempt with the next `bdSeq` in its will.
    fn connect(&mut self, mqtt: &mut MqttSession) {
        self.node.bd_seq = self.bdseq.take_next();
        let will = self.node.ndeath(Timestamp::now()).encode_to_vec();
        mqtt.settings_mut().last_will = Some(LastWill::new(
            self.node.node_topic("NDEATH"),
            will,
            QoS::AtLeastOnce,
            false,
        ));
        mqtt.connect();
    }

    fn link_down(&mut self, d: &Down) {
        self.ctx.counters.errors.fetch_add(1, Relaxed);
        self.ctx.counters.connected.store(false, Relaxed);
        let name = &self.ctx.name;
        let err = &d.cause;
        if d.was_connected {
            tracing::warn!(sink = %name, broker = %self.cfg.url, error = %err, held = self.outbox.unsent_weight(), "lost connection to broker; holding data and retrying");
        } else if d.new_cause {
            tracing::warn!(sink = %name, broker = %self.cfg.url, error = %err, "cannot connect to broker; retrying with backoff");
        }
        if d.new_cause {
            self.ctx.counters.set_last_error(Some(err.clone()));
        }
    }

    /// Queues the births: NBIRTH, then a DBIRTH per live device; at the front after a
    /// (re)connect, so they precede held data, at the back for a rebirth of a running node.
    fn birth(&mut self, front: bool) {
        self.born = true;
        let mut items = vec![Item::NBirth];
        items.extend(
            self.node
                .live_devices()
                .into_iter()
                .map(|device| Item::DBirth {
                    device,
                    readings: 0,
                }),
        );
        if front {
            for it in items.into_iter().rev() {
                self.outbox.push_front(it);
            }
        } else {
            for it in items {
                self.outbox.push_back(it);
            }
        }
    }

    /// Keeps the device data not acknowledged (as historical) and forgets births and deaths:
    /// the connection ended.
    fn requeue(&mut self) {
        self.outbox.requeue();
        self.outbox.retain_map(|it| match it {
            Item::Data {
                batch, node: false, ..
            } => Some(Item::Data {
                batch,
                changed: None,
                historical: true,
                node: false,
            }),
            _ => None,
        });
        self.born = false;
        self.leaving = false;
        self.node.unborn();
    }

    fn push_held(&mut self, item: Item) {
        self.outbox.push_back(item);
    }

    /// Takes one envelope from the queue.
    fn accept(&mut self, env: Envelope) {
        match env {
            Envelope::Batch(batch) => {
                let n = batch.readings.len() as u64;
                self.ctx.counters.received.fetch_add(n, Relaxed);
                if &*batch.device == TELEMETRY_DEVICE {
                    // The node's own metrics: always current, never held (a birth carries them).
                    self.ctx.counters.acked.fetch_add(n, Relaxed);
                    match self.node.node_batch(&batch) {
                        Update::Birth if self.born => self.birth(false),
                        Update::Data(c) if self.born => self.outbox.push_back(Item::Data {
                            batch,
                            changed: Some(c),
                            historical: false,
                            node: true,
                        }),
                        _ => {}
                    }
                    return;
                }
                let update = self.node.device_batch(&batch);
                if !self.born {
                    // Held until the next births, sent as history.
                    if update == Update::Nothing {
                        self.ctx.counters.acked.fetch_add(n, Relaxed);
                        return;
                    }
                    let held = self.outbox.unsent_weight();
                    if held + n as usize > self.cfg.buffer {
                        self.ctx.counters.dropped.fetch_add(n, Relaxed);
                        if !self.dropping {
                            self.dropping = true;
                            tracing::warn!(sink = %self.ctx.name, buffer = self.cfg.buffer,
                                "buffer full while the node cannot publish: dropping new readings (counted)");
                        }
                        return;
                    }
                    if self.dropping && held < self.cfg.buffer / 2 {
                        self.dropping = false;
                    }
                    if held == 0 {
                        tracing::info!(sink = %self.ctx.name, "node not born: holding data (sent as history after the births)");
                    }
                    self.push_held(Item::Data {
                        batch,
                        changed: None,
                        historical: true,
                        node: false,
                    });
                    return;
                }
                match update {
                    Update::Nothing => {
                        self.ctx.counters.acked.fetch_add(n, Relaxed);
                    }
                    Update::Birth => {
                        self.outbox.push_back(Item::DBirth {
                            device: batch.device.clone(),
                            readings: n,
                        });
                    }
                    Update::Data(c) => {
                        // Unchanged readings are delivered by not being repeated.
                        self.ctx
                            .counters
                            .acked
                            .fetch_add(n - c.idx.len() as u64, Relaxed);
                        self.push_held(Item::Data {
                            batch,
                            changed: Some(c),
                            historical: false,
                            node: false,
                        });
                    }
                }
            }
            Envelope::Status(st) => self.device_status(&st),
        }
    }

    fn device_status(&mut self, st: &DeviceStatus) {
        let state = if !st.running || !st.enabled || st.health == Health::Offline {
            DeviceState::Dead
        } else if matches!(st.health, Health::Online | Health::Degraded) {
            DeviceState::Alive
        } else {
            DeviceState::Unknown
        };
        if self.node.device_state(&st.device, state) && self.born {
            self.outbox.push_back(Item::DDeath(st.device.clone()));
        }
    }

    /// Renders an item into (topic, payload); `None` when there is nothing to send any more
    /// (a DBIRTH of a device that died meanwhile, data of a device not born).
    fn render(&mut self, item: &Item) -> Option<(String, Vec<u8>)> {
        let now = Timestamp::now();
        let (topic, payload) = match item {
            Item::NBirth => (self.node.node_topic("NBIRTH"), self.node.nbirth(now)),
            Item::DBirth { device, .. } => (
                self.node.device_topic("DBIRTH", device),
                self.node.dbirth(device, now)?,
            ),
            Item::DDeath(device) => (
                self.node.device_topic("DDEATH", device),
                self.node.ddeath(now),
            ),
            Item::Data {
                batch,
                changed,
                historical,
                node,
            } => {
                if *node {
                    let p = self.node.data(batch, changed.as_ref(), false, true, now);
                    (self.node.node_topic("NDATA"), p)
                } else {
                    if !self.node.is_born(&batch.device) {
                        return None;
                    }
                    let p = self
                        .node
                        .data(batch, changed.as_ref(), *historical, false, now);
                    (self.node.device_topic("DDATA", &batch.device), p)
                }
            }
            Item::NDeath => (self.node.node_topic("NDEATH"), self.node.ndeath(now)),
        };
        Some((topic, payload.encode_to_vec()))
    }

    /// Hands items to the connection, in one batch, while the window has room.
    fn pump(&mut self, mqtt: &MqttSession) {
        let mut batch = Vec::new();
        let mut items = Vec::new();
        while self.outbox.in_flight() + items.len() < self.window {
            let Some(item) = self.outbox.pop() else {
                break;
            };
            let Some((topic, payload)) = self.render(&item) else {
                // Data of a device that died before it went out.
                self.ctx
                    .counters
                    .dropped
                    .fetch_add(item.readings(), Relaxed);
                continue;
            };
            batch.push(Publish::new(topic, QoS::AtLeastOnce, payload));
            let leaving = self.leaving && matches!(item, Item::NDeath);
            items.push(item);
            if leaving {
                // Nothing more on this connection: what is left goes out after the next births.
                self.born = false;
                self.node.unborn();
                break;
            }
        }
        if let Err(batch) = mqtt.publish(batch) {
            // The link task is gone (its Down event follows) or its queue is full.
            debug_assert_eq!(batch.len(), items.len());
            for item in items.into_iter().rev() {
                self.outbox.push_front(item);
            }
            return;
        }
        for item in items {
            self.ctx
                .counters
                .published
                .fetch_add(item.readings(), Relaxed);
            self.outbox.handed(item);
        }
    }

    /// Takes PUBACKs (and the packets written before them); true when one of them
    /// acknowledged an NDEATH.
    fn on_acks(&mut self, acks: &[Ack]) -> bool {
        let counters = &self.ctx.counters;
        let mut death = false;
        for a in acks {
            self.outbox.ack(*a, |d| {
                if let Delivery::Done(it) = d {
                    death |= matches!(it, Item::NDeath);
                    counters.acked.fetch_add(it.readings(), Relaxed);
                }
            });
        }
        death
    }

    /// The session subscribed to NCMD, DCMD and the host's STATE already.
    fn on_connack(&mut self) {
        match (&mut self.host, &self.host_topic) {
            (Some(h), Some(t)) => {
                h.reconnected();
                tracing::info!(sink = %self.ctx.name, host = %t, "waiting for the primary host to be online");
            }
            _ => self.birth(true),
        }
    }

    /// An incoming message: the host's STATE, NCMD or DCMD. Returns true when the node must
    /// disconnect (its primary host went offline).
    fn on_message(&mut self, topic: &str, payload: &[u8]) -> bool {
        if self.host_topic.as_deref() == Some(topic) {
            let change = self
                .host
                .as_mut()
                .map_or(HostChange::None, |h| h.take(payload));
            match change {
                HostChange::Online => {
                    tracing::info!(sink = %self.ctx.name, held = self.outbox.unsent_weight(), "primary host online: birth");
                    if !self.born {
                        self.birth(true);
                    }
                }
                HostChange::Offline => {
                    tracing::warn!(sink = %self.ctx.name, "primary host offline: NDEATH, holding data until it is back");
                    return true;
                }
                HostChange::None => {}
            }
            return false;
        }
        let decoded = Payload::decode(payload);
        if topic == self.ncmd_topic {
            match decoded {
                Ok(p) => {
                    let rebirth = p.metrics.iter().any(|m| {
                        (m.name.as_deref() == Some(REBIRTH)
                            || m.alias == Some(self.node.rebirth_alias()))
                            && m.value == Some(MetricValue::BooleanValue(true))
                    });
                    if rebirth && self.born {
                        tracing::info!(sink = %self.ctx.name, "rebirth requested");
                        self.birth(false);
                    }
                }
                Err(e) => self.bad_command(format!("NCMD: {e}")),
            }
            return false;
        }
        if let Some(device) = topic.strip_prefix(self.dcmd_prefix.as_str()) {
            match decoded {
                Ok(p) => {
                    for m in &p.metrics {
                        self.dcmd(device, m);
                    }
                }
                Err(e) => self.bad_command(format!("DCMD {device}: {e}")),
            }
        }
        false
    }

    fn bad_command(&mut self, why: String) {
        self.ctx.counters.errors.fetch_add(1, Relaxed);
        if self.last_bad_command.as_deref() != Some(why.as_str()) {
            tracing::warn!(sink = %self.ctx.name, error = %why, "Sparkplug command ignored");
            self.last_bad_command = Some(why);
        }
    }

    /// One metric of a DCMD: a write through the device control registry, in a task.
    fn dcmd(&mut self, device: &str, m: &Metric) {
        let (name, dtype) = match (&m.name, m.alias) {
            (Some(n), _) => (
                Arc::<str>::from(n.as_str()),
                self.node.device_metric_type(device, n),
            ),
            (None, Some(a)) => match self.node.device_metric(device, a) {
                Some((n, t)) => (n, Some(t)),
                None => {
                    return self.bad_command(format!("DCMD {device}: unknown alias {a}"));
                }
            },
            (None, None) => {
                return self.bad_command(format!("DCMD {device}: a metric without name or alias"))
            }
        };
        let dtype = m.datatype.and_then(DataType::from_u32).or(dtype);
        let Some(value) = command_value(m, dtype) else {
            return self.bad_command(format!("DCMD {device}/{name}: no value osgate can write"));
        };
        let control = self.ctx.control.clone();
        let done = self.writes.clone();
        let device: Arc<str> = device.into();
        let gateway = self.ctx.gateway.clone();
        tokio::spawn(async move {
            if write(&control, &gateway, &device, &name, value)
                .await
                .is_ok()
            {
                let _ = done.send((device, name));
            }
        });
    }

    async fn run(
        &mut self,
        mut mqtt: MqttSession,
        mut done: mpsc::UnboundedReceiver<WriteDone>,
    ) -> Result<(), SinkError> {
        let name = self.ctx.name.clone();
        let mut input_open = true;
        let mut deadline: Option<Instant> = None;
        let mut ndeath_queued = false;
        let far = Instant::now() + Duration::from_secs(86400 * 365);

        loop {
            let connected = mqtt.is_connected();
            if connected && self.born {
                self.pump(&mqtt);
            }
            let held = self.outbox.unsent_weight();
            self.ctx.counters.buffered.store(held as u64, Relaxed);

            if !input_open {
                let flushed = self.outbox.is_empty();
                if flushed && connected && self.born && !ndeath_queued {
                    // A clean stop: the host learns at once, not after the keep-alive.
                    ndeath_queued = true;
                    self.outbox.push_back(Item::NDeath);
                    continue;
                }
                if flushed || (held == 0 && !(connected && self.born)) {
                    break;
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                // Held data, unsent or not acknowledged.
                let pending = self.outbox.weight();
                mqtt.abort();
                if pending == 0 {
                    break;
                }
                tracing::warn!(sink = %name, pending, "flush deadline passed with data undelivered");
                return Err(SinkError::FlushTimeout { pending });
            }

            let room = !(connected && self.born) || self.outbox.unsent_len() < self.window * 4;
            // Connect only while there is something to send.
            let wanted = mqtt.is_linked() || input_open || held > 0;
            tokio::select! {
                biased;
                ev = mqtt.next(), if wanted => match ev {
                    SessionEvent::Due => self.connect(&mut mqtt),
                    SessionEvent::Connected(_) => {
                        self.ctx.counters.connected.store(true, Relaxed);
                        self.ctx.counters.set_last_error(None);
                        tracing::info!(sink = %name, broker = %self.cfg.url, bd_seq = self.node.bd_seq,
                            held = self.outbox.unsent_weight(), "connected to broker as a Sparkplug edge node");
                        self.on_connack();
                    }
                    SessionEvent::Acks(acks) => {
                        if self.on_acks(&acks) && self.leaving {
                            // The host has our NDEATH: end this connection; the next one
                            // (with the next bdSeq) waits for the host.
                            self.leaving = false;
                            mqtt.disconnect();
                        }
                    }
                    SessionEvent::Message(p) => {
                        if self.on_message(&p.topic, &p.payload) {
                            // Primary host offline: NDEATH first (ahead of any data), the
                            // disconnect once it is acknowledged.
                            if self.born {
                                self.leaving = true;
                                self.outbox.push_front(Item::NDeath);
                            } else {
                                mqtt.disconnect();
                            }
                        }
                    }
                    SessionEvent::SubAck(_) => {}
                    SessionEvent::Down(d) => {
                        self.requeue();
                        self.link_down(&d);
                    }
                    SessionEvent::Closed => {
                        self.requeue();
                        self.ctx.counters.connected.store(false, Relaxed);
                    }
                },
                w = done.recv() => {
                    if let Some((device, channel)) = w {
                        self.node.confirm_next(&device, &channel);
                    }
                }
                env = self.ctx.rx.recv(), if input_open && room => match env {
                    Some(env) => {
                        self.accept(env);
                        while !(connected && self.born) || self.outbox.unsent_len() < self.window * 4 {
                            match self.ctx.rx.try_recv() {
                                Ok(env) => self.accept(env),
                                Err(_) => break,
                            }
                        }
                    }
                    None => {
                        input_open = false;
                        deadline = Some(Instant::now() + self.ctx.flush_timeout);
                    }
                },
                _ = sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {}
            }
        }

        mqtt.close(Duration::from_secs(1)).await;
        self.ctx.counters.connected.store(false, Relaxed);
        let c = self.ctx.counters.snapshot();
        tracing::info!(sink = %name, received = c.received, published = c.published, acked = c.acked,
            dropped = c.dropped, "Sparkplug edge node stopped");
        Ok(())
    }
}
