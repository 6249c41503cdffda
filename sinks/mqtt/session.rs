//! The MQTT sink's loop: the outbox of readings and statuses, rendered when sent; the
//! session's events (connected, acknowledged, bridge states, down); the sink's queue; the
//! flush on stop. See the module docs of [`super`].

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::{LastWill, Publish, QoS, SubscribeFilter};
use tokio::time::{sleep_until, Instant};

use super::MqttSinkConfig;
use crate::format::{encode_device, encode_reading, Format, TopicTemplate};
use crate::{SinkContext, SinkError};
use osgate_core::backoff::Backoff;
use osgate_core::net::mqtt::{Ack, Delivery, Down, MqttSession, Outbox, SessionEvent, Weigh};
use osgate_core::pipeline::Envelope;
use osgate_core::reading::Batch;
use osgate_core::status::DeviceStatus;

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

/// The outbox is bounded by readings (`buffer`).
impl Weigh for Item {
    fn weight(&self) -> usize {
        self.readings() as usize
    }
}

/// The sink's state.
struct Sink {
    cfg: MqttSinkConfig,
    ctx: SinkContext,
    qos: QoS,
    topic: TopicTemplate,
    status_topic: Arc<str>,
    online: Bytes,
    offline: Bytes,
    /// Entries not acknowledged; its weight is readings.
    outbox: Outbox<Item>,
    window: usize,
    enc: BytesMut,
    device_status: BTreeMap<Arc<str>, Bytes>,
    dropping: bool,
    /// The bridge-state subscription was sent and not yet answered.
    uplink_pending: bool,
    /// The broker dropped the connection on the bridge-state subscription (some brokers, e.g.
    /// an embedded rumqttd, do on `$SYS` filters): not asked again.
    uplink_refused: bool,
}

/// Runs the MQTT sink until its queue ends and the outbox is flushed (or the deadline passes).
pub async fn run(cfg: MqttSinkConfig, ctx: SinkContext) -> Result<(), SinkError> {
    let client_id = cfg
        .client_id
        .replace("{gateway}", &ctx.gateway)
        .replace("{sink}", &ctx.name);
    let status_topic: Arc<str> = format!("status/{}", ctx.gateway).into();
    let offline = Bytes::from_static(b"{\"online\":false}");
    // How to connect: built into rumqttc options at every connect, so a rotated password file
    // or certificate is picked up.
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
    let backoff = Backoff::new(
        Duration::from_millis(100),
        cfg.backoff_max.0.max(Duration::from_millis(100)),
    );
    // Before anything is published: the bridge states come back as retained messages. A broker
    // that refuses it only loses the uplink view.
    let mqtt = MqttSession::new(settings, backoff, window + 8).subscribe(uplink_filters());
    let mut sink = Sink {
        qos: if cfg.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        },
        topic,
        status_topic,
        online,
        offline,
        outbox: Outbox::new(),
        window,
        enc: BytesMut::with_capacity(64 * 1024),
        device_status: BTreeMap::new(),
        dropping: false,
        uplink_pending: false,
        uplink_refused: false,
        cfg,
        ctx,
    };
    sink.run(mqtt).await
}

/// The bridge states of the broker ([`osgate_core::uplink::STATE_TOPICS`]), QoS 0.
fn uplink_filters() -> Vec<SubscribeFilter> {
    vec![SubscribeFilter::new(
        osgate_core::uplink::STATE_TOPICS.into(),
        QoS::AtMostOnce,
    )]
}

impl Sink {
    /// A connection attempt failed or a connection was lost: count it, keep the cause in the
    /// status, and log it once per change of cause (a broker that stays away, or a certificate
    /// that stays wrong, is not logged at every retry).
    fn link_down(&mut self, d: &Down) {
        self.ctx.counters.errors.fetch_add(1, Relaxed);
        self.ctx.counters.connected.store(false, Relaxed);
        self.ctx.uplink.forget_sink(&self.ctx.name);
        let name = &self.ctx.name;
        let err = &d.cause;
        if d.was_connected {
            tracing::warn!(sink = %name, broker = %self.cfg.url, error = %err, buffered = self.outbox.len(), "lost connection to broker; buffering and retrying");
        } else if d.new_cause {
            tracing::warn!(sink = %name, broker = %self.cfg.url, error = %err, "cannot connect to broker; retrying with backoff");
        } else {
            tracing::debug!(sink = %name, error = %err, "broker still unreachable");
        }
        if d.new_cause {
            self.ctx.counters.set_last_error(Some(err.clone()));
        }
    }

    /// Queues a retained status message (QoS 1), at the front when it must go out first.
    fn push_retained(&mut self, topic: Arc<str>, payload: Bytes, front: bool) {
        let item = Item::Raw {
            topic,
            payload,
            retain: true,
        };
        if front {
            self.outbox.push_front(item);
        } else {
            self.outbox.push_back(item);
        }
    }

    /// Takes one envelope from the queue into the outbox (or drops it when the outbox is full).
    fn accept(&mut self, env: Envelope) {
        match env {
            Envelope::Batch(batch) => {
                let n = batch.readings.len();
                self.ctx.counters.received.fetch_add(n as u64, Relaxed);
                let held = self.outbox.weight();
                if held + n > self.cfg.buffer {
                    self.ctx.counters.dropped.fetch_add(n as u64, Relaxed);
                    if !self.dropping {
                        self.dropping = true;
                        tracing::warn!(sink = %self.ctx.name, buffer = self.cfg.buffer,
                            "buffer full while the broker is away: dropping new readings (counted)");
                    }
                    return;
                }
                if self.dropping && held < self.cfg.buffer / 2 {
                    // The overflow ended (the backlog drained, not merely reconnected): a new
                    // one is logged again.
                    self.dropping = false;
                }
                match self.cfg.format {
                    Format::Reading => {
                        for idx in 0..n as u32 {
                            self.outbox.push_back(Item::Reading {
                                batch: batch.clone(),
                                idx,
                            });
                        }
                    }
                    Format::Device => self.outbox.push_back(Item::Device(batch)),
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

    /// Renders an entry into its publish.
    fn render(&mut self, item: &Item) -> Publish {
        self.enc.reserve(1024);
        let (topic, payload, retain, qos) = match item {
            Item::Reading { batch, idx } => {
                let r = &batch.readings[*idx as usize];
                encode_reading(&mut self.enc, r, false);
                let topic = self.topic.render(&batch.connector, &r.device, &r.channel);
                (topic, self.enc.split().freeze(), self.cfg.retain, self.qos)
            }
            Item::Device(batch) => {
                encode_device(&mut self.enc, batch, false);
                let topic = self.topic.render(&batch.connector, &batch.device, "");
                (topic, self.enc.split().freeze(), self.cfg.retain, self.qos)
            }
            Item::Raw {
                topic,
                payload,
                retain,
            } => (
                topic.to_string(),
                payload.clone(),
                *retain,
                QoS::AtLeastOnce,
            ),
        };
        let mut p = Publish::from_bytes(topic, qos, payload);
        p.retain = retain;
        p
    }

    /// Hands entries to the connection, in one batch, while the window has room.
    fn pump(&mut self, mqtt: &MqttSession) {
        let room = self.window.saturating_sub(self.outbox.in_flight());
        let n = room.min(self.outbox.unsent_len());
        if n == 0 {
            return;
        }
        let mut batch = Vec::with_capacity(n);
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(item) = self.outbox.pop() else { break };
            batch.push(self.render(&item));
            items.push(item);
        }
        if mqtt.publish(batch).is_err() {
            // The link task is gone (its Down event follows) or its queue is full.
            for item in items.into_iter().rev() {
                self.outbox.push_front(item);
            }
            return;
        }
        for item in items {
            self.outbox.handed(item);
        }
    }

    /// Publishes written (counted as published; at QoS 0 also acknowledged) and PUBACKs.
    fn on_acks(&mut self, acks: &[Ack]) {
        let (counters, name) = (&self.ctx.counters, &self.ctx.name);
        for a in acks {
            self.outbox.ack(*a, |d| match d {
                Delivery::Written(item) => {
                    counters.published.fetch_add(item.readings(), Relaxed);
                }
                Delivery::Done(item) => {
                    counters.acked.fetch_add(item.readings(), Relaxed);
                }
                Delivery::Stray(pkid) => {
                    tracing::debug!(sink = %name, pkid, "publish event without a pending entry");
                }
            });
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

    async fn run(&mut self, mut mqtt: MqttSession) -> Result<(), SinkError> {
        let name = self.ctx.name.clone();
        let mut input_open = true;
        let mut deadline: Option<Instant> = None;
        let mut offline_queued = false;
        let mut info_open = true;
        let mut uplink = self.ctx.uplink.subscribe();
        let far = Instant::now() + Duration::from_secs(86400 * 365);

        loop {
            let connected = mqtt.is_connected();
            if connected {
                self.pump(&mqtt);
            }
            self.ctx
                .counters
                .buffered
                .store(self.outbox.len() as u64, Relaxed);

            if !input_open && self.outbox.is_empty() {
                if connected && self.cfg.status && !offline_queued {
                    offline_queued = true;
                    let (topic, payload) = (self.status_topic.clone(), self.offline.clone());
                    self.push_retained(topic, payload, false);
                    continue;
                }
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let pending = self.outbox.len();
                tracing::warn!(sink = %name, pending, "flush deadline passed with messages unacknowledged");
                mqtt.abort();
                return Err(SinkError::FlushTimeout { pending });
            }

            // Connected: stay a few windows ahead of the broker (backpressure beyond that keeps
            // memory and latency low). Disconnected: take everything; beyond `buffer` readings
            // the newest are dropped and counted.
            let room = !connected || self.outbox.unsent_len() < self.window * 4;
            tokio::select! {
                biased;
                ev = mqtt.next() => match ev {
                    SessionEvent::Due => mqtt.connect(),
                    SessionEvent::Connected(c) => {
                        self.ctx.counters.connected.store(true, Relaxed);
                        self.ctx.counters.set_last_error(None);
                        if c.again {
                            tracing::info!(sink = %name, broker = %self.cfg.url, buffered = self.outbox.len(), "reconnected to broker");
                        } else {
                            tracing::info!(sink = %name, broker = %self.cfg.url, "connected to broker");
                        }
                        // The session asked for the bridge states before anything is published.
                        self.uplink_pending = !self.uplink_refused && c.subscribed;
                        self.on_connack();
                    }
                    SessionEvent::SubAck(_) => self.uplink_pending = false,
                    SessionEvent::Message(p) => {
                        if let Some((bridge, up)) = osgate_core::uplink::parse_state(&p.topic, &p.payload) {
                            let uplink = &self.ctx.uplink;
                            if uplink.bridges().iter().all(|b| b.name != bridge || b.connected != up) {
                                tracing::info!(sink = %name, %bridge, connected = up, "uplink bridge state");
                            }
                            let now = osgate_core::reading::Timestamp::now().0;
                            uplink.set(&self.ctx.name, bridge, up, now);
                        }
                    }
                    SessionEvent::Acks(acks) => {
                        self.on_acks(&acks);
                        mqtt.drain_acks(|acks| self.on_acks(acks));
                    }
                    SessionEvent::Down(d) => {
                        if std::mem::take(&mut self.uplink_pending) {
                            self.uplink_refused = true;
                            mqtt.set_subscriptions(Vec::new());
                            tracing::warn!(sink = %name, broker = %self.cfg.url,
                                "the connection ended before the broker answered the bridge-state \
                                 subscription; not asking this broker again (uplink unknown)");
                        }
                        self.outbox.requeue();
                        self.link_down(&d);
                    }
                    SessionEvent::Closed => {
                        self.uplink_pending = false;
                        self.ctx.uplink.forget_sink(&self.ctx.name);
                        self.outbox.requeue();
                    }
                },
                env = self.ctx.rx.recv(), if input_open && room => match env {
                    Some(env) => {
                        self.accept(env);
                        // Drain what is already queued without another wake-up.
                        while !connected || self.outbox.unsent_len() < self.window * 4 {
                            match self.ctx.rx.try_recv() {
                                Ok(env) => self.accept(env),
                                Err(_) => break,
                            }
                        }
                    }
                    None => {
                        input_open = false;
                        deadline = Some(Instant::now() + self.ctx.flush_timeout);
                        tracing::debug!(sink = %name, pending = self.outbox.len(), "queue closed; flushing");
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
                // A bridge of the broker went up or down (this sink's or another's view).
                Ok(()) = uplink.changed() => {
                    self.online = online_payload(&self.ctx);
                    if connected && self.cfg.status && input_open {
                        let (topic, payload) = (self.status_topic.clone(), self.online.clone());
                        self.push_retained(topic, payload, true);
                    }
                }
                _ = sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {}
            }
        }

        mqtt.close(Duration::from_secs(1)).await;
        self.ctx.counters.connected.store(false, Relaxed);
        self.ctx.uplink.forget_sink(&self.ctx.name);
        let c = self.ctx.counters.snapshot();
        tracing::info!(sink = %name, received = c.received, published = c.published, acked = c.acked,
            dropped = c.dropped, "sink stopped; every accepted reading acknowledged");
        Ok(())
    }
}

/// The retained `status/{gateway}` payload: online, version, start time and where the running
/// configuration came from (`config`: source, loaded, fetched, checked, last_error), and the
/// local broker's bridges (`uplink`: bridges, connected).
fn online_payload(ctx: &SinkContext) -> Bytes {
    let payload = serde_json::json!({
        "online": true,
        "version": ctx.version,
        "commit": ctx.commit,
        "started": ctx.started,
        "config": *ctx.config_info.borrow(),
        "uplink": ctx.uplink.to_json(),
    });
    Bytes::from(payload.to_string())
}
