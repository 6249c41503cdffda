//! The pipeline between connectors and sinks: bounded queues, fan-out, full-policy, counters.
//!
//! Connectors fill a [`DeviceOutput`] per device (it runs the per-channel transforms and keeps
//! the batch), then [`DeviceOutput::flush`] hands the batch to the [`ReadingSender`], which puts
//! one `Arc` of it into the bounded queue of every sink. What happens when a sink's queue is
//! full is that sink's [`WhenFull`] policy: `block` (default) makes the connector wait, which
//! delays its next poll (counted as lag); `drop_newest` drops the batch for that sink and counts
//! it. Listener connectors use [`DeviceOutput::flush_or_drop`], which never waits. Each sink
//! takes [`Envelope`]s from its own queue.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::DeviceSpec;
use crate::reading::{Batch, Quality, Reading, Timestamp, Value};
use crate::status::{ConnectorHealth, DeviceStatus, SinkCounters};
use crate::transform::{Outcome, Transform};

/// Default capacity of a sink's queue, in batches.
pub const DEFAULT_QUEUE: usize = 128;

/// What a sink's queue carries.
#[derive(Debug, Clone)]
pub enum Envelope {
    /// Readings of one device.
    Batch(Arc<Batch>),
    /// A device's status changed.
    Status(Arc<DeviceStatus>),
}

/// What happens when a sink's queue is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// The connector waits (backpressure): pollers poll later, nothing is dropped.
    #[default]
    Block,
    /// The newest batch is dropped for this sink and counted.
    DropNewest,
}

/// The sending side of one sink's queue.
#[derive(Debug, Clone)]
pub struct SinkInput {
    tx: mpsc::Sender<Envelope>,
    when_full: WhenFull,
    counters: Arc<SinkCounters>,
}

/// Creates a sink's queue.
pub fn sink_queue(
    capacity: usize,
    when_full: WhenFull,
    counters: Arc<SinkCounters>,
) -> (SinkInput, mpsc::Receiver<Envelope>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        SinkInput {
            tx,
            when_full,
            counters,
        },
        rx,
    )
}

/// Fan-out to every sink's queue. Cheap to clone; all clones share the sink list, which the
/// service can replace at run time (reload) or empty (shutdown, which closes the queues).
#[derive(Debug, Clone)]
pub struct ReadingSender {
    sinks: Arc<ArcSwap<Vec<SinkInput>>>,
    tap: ReadingTap,
}

/// A live copy of every batch for observers (JSON-RPC `readings.subscribe`). It costs one
/// atomic load per batch while nobody listens; a listener that falls behind skips batches
/// (`RecvError::Lagged`) and never slows the pipeline.
#[derive(Debug, Clone)]
pub struct ReadingTap {
    tx: tokio::sync::broadcast::Sender<Arc<Batch>>,
    listeners: Arc<std::sync::atomic::AtomicUsize>,
}

/// A subscription to a [`ReadingTap`]; counts as a listener until dropped.
#[derive(Debug)]
pub struct TapReceiver {
    /// The batches.
    pub rx: tokio::sync::broadcast::Receiver<Arc<Batch>>,
    listeners: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for TapReceiver {
    fn drop(&mut self) {
        self.listeners.fetch_sub(1, Relaxed);
    }
}

impl ReadingTap {
    /// Batches kept for a slow listener before it starts skipping.
    pub const CAPACITY: usize = 1024;

    fn new() -> Self {
        ReadingTap {
            tx: tokio::sync::broadcast::channel(Self::CAPACITY).0,
            listeners: Arc::default(),
        }
    }

    /// Starts receiving every batch sent from now on.
    pub fn subscribe(&self) -> TapReceiver {
        self.listeners.fetch_add(1, Relaxed);
        TapReceiver {
            rx: self.tx.subscribe(),
            listeners: self.listeners.clone(),
        }
    }

    fn feed(&self, env: &Envelope) {
        if let Envelope::Batch(b) = env {
            if self.listeners.load(Relaxed) > 0 {
                let _ = self.tx.send(b.clone());
            }
        }
    }
}

impl ReadingSender {
    /// A sender that fans out to `sinks`.
    pub fn new(sinks: Vec<SinkInput>) -> Self {
        ReadingSender {
            sinks: Arc::new(ArcSwap::from_pointee(sinks)),
            tap: ReadingTap::new(),
        }
    }

    /// The live copy of every batch (shared by all clones of this sender).
    pub fn tap(&self) -> &ReadingTap {
        &self.tap
    }

    /// Replaces the sink list for every clone of this sender.
    pub fn replace_sinks(&self, sinks: Vec<SinkInput>) {
        self.sinks.store(Arc::new(sinks));
    }

    /// The batches waiting in each sink's queue right now, with that sink's counters (which
    /// identify it in the [`crate::status::StatusRegistry`]).
    pub fn queue_depths(&self) -> Vec<(Arc<SinkCounters>, usize)> {
        self.sinks
            .load()
            .iter()
            .map(|s| (s.counters.clone(), s.tx.max_capacity() - s.tx.capacity()))
            .collect()
    }

    /// Drops every sink queue's sender: once no connector holds a loaded list any more, the
    /// sinks see the end of their queue and flush.
    pub fn close(&self) {
        self.replace_sinks(Vec::new());
    }

    /// Sends to every sink, waiting where a sink's policy is `block`. Returns the number of
    /// readings dropped (queue full with `drop_newest`, or sink gone).
    pub async fn send(&self, env: Envelope) -> u64 {
        self.tap.feed(&env);
        let sinks = self.sinks.load_full();
        let mut dropped = 0;
        for s in sinks.iter() {
            let res = match s.when_full {
                WhenFull::Block => s.tx.send(env.clone()).await.is_ok(),
                WhenFull::DropNewest => s.tx.try_send(env.clone()).is_ok(),
            };
            if !res {
                let n = readings_in(&env);
                s.counters.dropped.fetch_add(n, Relaxed);
                dropped += n;
            }
        }
        dropped
    }

    /// Reserves room for `n` envelopes in the queue of every `block` sink, without waiting:
    /// `None` when one of them has less room (nothing reserved). A listener that can tell its
    /// source to retry (HTTP 503) asks first and sends with [`ReadingSender::send_reserved`],
    /// so its batches are either in every `block` queue or refused before any transform saw
    /// them, never lost silently.
    pub fn try_reserve(&self, n: usize) -> Option<Reserved> {
        let sinks = self.sinks.load_full();
        let mut permits = Vec::with_capacity(sinks.len());
        for s in sinks.iter() {
            let mut mine = Vec::new();
            if s.when_full == WhenFull::Block {
                for _ in 0..n {
                    match s.tx.clone().try_reserve_owned() {
                        Ok(p) => mine.push(p),
                        Err(mpsc::error::TrySendError::Full(_)) => return None,
                        // A sink that is gone: the send counts the drop.
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    }
                }
            }
            permits.push(mine);
        }
        Some(Reserved { sinks, permits })
    }

    /// The most envelopes [`ReadingSender::try_reserve`] can ever grant at once: the capacity
    /// of the smallest `block` sink queue (`usize::MAX` without one).
    pub fn reservable(&self) -> usize {
        self.sinks
            .load()
            .iter()
            .filter(|s| s.when_full == WhenFull::Block)
            .map(|s| s.tx.max_capacity())
            .min()
            .unwrap_or(usize::MAX)
    }

    /// Sends through room reserved by [`ReadingSender::try_reserve`] (one envelope's worth
    /// per call): into every `block` queue without waiting, and to `drop_newest` sinks as
    /// [`ReadingSender::try_send`] does. Returns the number of readings dropped.
    pub fn send_reserved(&self, room: &mut Reserved, env: Envelope) -> u64 {
        self.tap.feed(&env);
        let mut dropped = 0;
        for (s, permits) in room.sinks.iter().zip(room.permits.iter_mut()) {
            match permits.pop() {
                Some(p) => {
                    p.send(env.clone());
                }
                None => {
                    if s.tx.try_send(env.clone()).is_err() {
                        let n = readings_in(&env);
                        s.counters.dropped.fetch_add(n, Relaxed);
                        dropped += n;
                    }
                }
            }
        }
        dropped
    }

    /// Sends to every sink without ever waiting: a full queue drops the envelope for that sink
    /// (counted). Returns the number of readings dropped.
    pub fn try_send(&self, env: Envelope) -> u64 {
        self.tap.feed(&env);
        let sinks = self.sinks.load();
        let mut dropped = 0;
        for s in sinks.iter() {
            if s.tx.try_send(env.clone()).is_err() {
                let n = readings_in(&env);
                s.counters.dropped.fetch_add(n, Relaxed);
                dropped += n;
            }
        }
        dropped
    }
}

/// Room for envelopes in every `block` sink's queue ([`ReadingSender::try_reserve`]);
/// dropping it gives what was not used back.
#[derive(Debug)]
pub struct Reserved {
    sinks: Arc<Vec<SinkInput>>,
    /// Per sink, in order: the permits left of a `block` sink, none for the others.
    permits: Vec<Vec<mpsc::OwnedPermit<Envelope>>>,
}

fn readings_in(env: &Envelope) -> u64 {
    match env {
        Envelope::Batch(b) => b.readings.len() as u64,
        Envelope::Status(_) => 0,
    }
}

struct ChannelOut {
    name: Arc<str>,
    unit: Option<Arc<str>>,
    transform: Transform,
}

impl ChannelOut {
    /// A reading of this channel (names are shared, not copied).
    fn reading(&self, device: &Arc<str>, value: Value, ts: Timestamp, quality: Quality) -> Reading {
        Reading {
            device: device.clone(),
            channel: self.name.clone(),
            value,
            ts,
            quality,
            unit: self.unit.clone(),
        }
    }
}

/// Builds the batches of one device: names, units and transforms of its channels, indexed by
/// channel position, so a connector pushes values by index without any lookup or allocation.
pub struct DeviceOutput {
    connector: Arc<str>,
    device: Arc<str>,
    channels: Vec<ChannelOut>,
    readings: Vec<Reading>,
    now: Option<Instant>,
    out: ReadingSender,
    health: Arc<ConnectorHealth>,
    status: DeviceStatus,
    /// `status.last_ok` when the registry's entry was last updated.
    shared_ok: Option<Timestamp>,
}

/// How far the registry's `last_ok` of a device may lag behind, when nothing else changed:
/// a listener takes hundreds of messages a second, and the registry is shared by every
/// connector and the RPC server.
const LAST_OK_LAG_MS: i64 = 1000;

impl DeviceOutput {
    /// The output of `device` of `connector`. Transform configs were validated at config load,
    /// so building them cannot fail here.
    pub fn new<D, C>(
        connector: Arc<str>,
        device: &DeviceSpec<D, C>,
        out: ReadingSender,
        health: Arc<ConnectorHealth>,
    ) -> Self {
        let channels = device
            .channels
            .iter()
            .map(|c| ChannelOut {
                name: c.name.clone(),
                unit: c.unit.clone(),
                transform: Transform::new(c.transform()).expect("transform validated at load"),
            })
            .collect::<Vec<_>>();
        let status = DeviceStatus::new(connector.clone(), device.name.clone(), device.enabled);
        DeviceOutput {
            readings: Vec::new(),
            connector,
            device: device.name.clone(),
            channels,
            now: None,
            out,
            health,
            status,
            shared_ok: None,
        }
    }

    /// The device's name.
    pub fn device(&self) -> &Arc<str> {
        &self.device
    }

    /// The device's current status.
    pub fn status(&self) -> &DeviceStatus {
        &self.status
    }

    /// Adds a good value of channel `ch` (its position in the device's config).
    pub fn push(&mut self, ch: usize, value: Value, ts: Timestamp) {
        self.push_with_quality(ch, value, ts, Quality::Good);
    }

    /// Adds a bad reading (the read failed) for channel `ch`; its value is published as null.
    pub fn push_bad(&mut self, ch: usize, reason: Arc<str>, ts: Timestamp) {
        self.push_with_quality(ch, Value::F64(f64::NAN), ts, Quality::Bad(reason));
    }

    /// Adds a reading for channel `ch` with an explicit quality, running its transform.
    pub fn push_with_quality(&mut self, ch: usize, value: Value, ts: Timestamp, quality: Quality) {
        let now = *self.now.get_or_insert_with(Instant::now);
        let Some(c) = self.channels.get_mut(ch) else {
            return;
        };
        let reading = c.reading(&self.device, value, ts, quality);
        match c.transform.apply(reading, now) {
            Outcome::Emit(r) => self.add(r),
            Outcome::Suppressed => {
                self.health.counters.suppressed.fetch_add(1, Relaxed);
            }
            Outcome::Filtered => {
                self.health.counters.filtered.fetch_add(1, Relaxed);
            }
        }
    }

    /// A reading of channel `ch` through the stateless value steps of its transform, for an
    /// explicit read (`device.read`): not queued, no report strategy applied.
    pub fn convert(
        &self,
        ch: usize,
        value: Value,
        ts: Timestamp,
        quality: Quality,
    ) -> Option<Reading> {
        let c = self.channels.get(ch)?;
        Some(
            c.transform
                .convert(c.reading(&self.device, value, ts, quality)),
        )
    }

    /// The `(scale, offset)` of channel `ch`'s transform, if it has a linear step (writes
    /// reverse it).
    pub fn linear(&self, ch: usize) -> Option<(f64, f64)> {
        self.channels.get(ch)?.transform.linear()
    }

    /// For connectors that are pushed values instead of polling (listeners): adds the readings
    /// whose report timer is due at `now` (the latest value of an ended `every` period, an
    /// `on_change` heartbeat); send them with [`DeviceOutput::flush_or_drop`]. Pollers need
    /// not call it: their transforms check the timers at every poll.
    pub fn poll_timers(&mut self, now: Instant) {
        for i in 0..self.channels.len() {
            if let Some(r) = self.channels[i].transform.poll(now) {
                self.add(r);
            }
        }
    }

    /// Adds a reading to the pending batch. The batch's buffer is allocated at its first
    /// reading, sized for every channel, and handed on with the batch: an idle device holds
    /// no buffer.
    fn add(&mut self, r: Reading) {
        if !r.quality.is_good() {
            self.health.counters.bad.fetch_add(1, Relaxed);
        }
        if self.readings.capacity() == 0 {
            self.readings.reserve_exact(self.channels.len());
        }
        self.readings.push(r);
    }

    /// When [`DeviceOutput::poll_timers`] next has something to do (`None`: no timer pending),
    /// for a listener's `sleep_until`.
    pub fn next_timer(&self) -> Option<Instant> {
        self.channels
            .iter()
            .filter_map(|c| c.transform.next_deadline())
            .min()
    }

    /// Adds a channel found at run time (a listener's device announcing a new field); returns
    /// its index. `transform` was validated at config load.
    pub fn add_channel(
        &mut self,
        name: Arc<str>,
        unit: Option<Arc<str>>,
        transform: &crate::transform::TransformConfig,
    ) -> usize {
        self.channels.push(ChannelOut {
            name,
            unit,
            transform: Transform::new(transform).expect("transform validated at load"),
        });
        self.channels.len() - 1
    }

    /// The index of the channel called `name`, added (no transform) when the device has none
    /// of that name: for protocols whose devices describe their own values (an M-Bus meter
    /// without configured channels).
    pub fn named_channel(&mut self, name: &str, unit: Option<&str>) -> usize {
        match self.channel_index(name) {
            Some(i) => i,
            None => self.add_channel(
                name.into(),
                unit.map(Arc::from),
                &crate::transform::TransformConfig::IDENTITY,
            ),
        }
    }

    /// Sets the unit of channel `ch` (a unit the device announces at run time).
    pub fn set_unit(&mut self, ch: usize, unit: Option<Arc<str>>) {
        if let Some(c) = self.channels.get_mut(ch) {
            c.unit = unit;
        }
    }

    /// Number of channels.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// The index of the channel called `name`.
    pub fn channel_index(&self, name: &str) -> Option<usize> {
        self.channels.iter().position(|c| &*c.name == name)
    }

    fn take_batch(&mut self) -> Option<Envelope> {
        self.now = None;
        if self.readings.is_empty() {
            return None;
        }
        let readings = std::mem::take(&mut self.readings);
        let c = &self.health.counters;
        c.readings.fetch_add(readings.len() as u64, Relaxed);
        c.batches.fetch_add(1, Relaxed);
        Some(Envelope::Batch(Arc::new(Batch {
            connector: self.connector.clone(),
            device: self.device.clone(),
            readings,
        })))
    }

    /// Sends the pending readings as one batch, waiting while a `block` sink is full.
    pub async fn flush(&mut self) {
        if let Some(env) = self.take_batch() {
            if self.out.send(env).await > 0 {
                self.health.counters.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Sends the pending readings as one batch without waiting (listeners): where a sink's
    /// queue is full the batch is dropped for that sink and counted.
    pub fn flush_or_drop(&mut self) {
        if let Some(env) = self.take_batch() {
            if self.out.try_send(env) > 0 {
                self.health.counters.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Sends the pending readings as one batch through room reserved with
    /// [`ReadingSender::try_reserve`] (never waits; `drop_newest` sinks may still drop it).
    pub fn flush_reserved(&mut self, room: &mut Reserved) {
        if let Some(env) = self.take_batch() {
            if self.out.send_reserved(room, env) > 0 {
                self.health.counters.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Updates the device's status; publishes it (retained, on `status/{gateway}/{connector}/
    /// {device}`) and records it in the registry when a published field changed.
    ///
    /// Listeners call it for every message, so it copies no more than it must: the state is
    /// compared field by field, the registry's entry is updated in place, and not at all when
    /// only `last_ok` moved, by less than a second since the last update.
    pub async fn set_status(&mut self, update: impl FnOnce(&mut DeviceStatus)) {
        let before = self.status.state().to_owned();
        let errors = self.status.errors;
        update(&mut self.status);
        let changed = before.as_ref() != self.status.state();
        let recent = match (self.shared_ok, self.status.last_ok) {
            (Some(a), Some(b)) => (0..LAST_OK_LAG_MS).contains(&(b.0 - a.0)),
            (a, b) => a == b,
        };
        if !changed && errors == self.status.errors && recent {
            return;
        }
        self.shared_ok = self.status.last_ok;
        {
            let mut devices = self.health.devices.lock().expect("status lock");
            match devices.get_mut(&self.device) {
                Some(s) => s.update_from(&self.status),
                None => {
                    devices.insert(self.device.clone(), self.status.clone());
                }
            }
        }
        if changed {
            self.out
                .send(Envelope::Status(Arc::new(self.status.clone())))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChannelSpec, DeviceSpec};

    fn device(n: usize) -> DeviceSpec<(), ()> {
        DeviceSpec {
            name: "d".into(),
            enabled: true,
            interval: Default::default(),
            settings: (),
            channels: (0..n)
                .map(|i| ChannelSpec {
                    name: format!("c{i}").into(),
                    unit: Some("V".into()),
                    transform: None,
                    settings: (),
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn batch_reaches_every_sink_and_counts() {
        let c1 = Arc::new(SinkCounters::default());
        let c2 = Arc::new(SinkCounters::default());
        let (i1, mut r1) = sink_queue(4, WhenFull::Block, c1);
        let (i2, mut r2) = sink_queue(4, WhenFull::DropNewest, c2);
        let health = Arc::new(ConnectorHealth::default());
        let mut out = DeviceOutput::new(
            "x".into(),
            &device(2),
            ReadingSender::new(vec![i1, i2]),
            health.clone(),
        );
        out.push(0, Value::F64(1.0), Timestamp(1));
        out.push(1, Value::Bool(true), Timestamp(1));
        out.flush().await;
        for r in [&mut r1, &mut r2] {
            let Some(Envelope::Batch(b)) = r.recv().await else {
                panic!("no batch")
            };
            assert_eq!(b.readings.len(), 2);
            assert_eq!(&*b.readings[1].channel, "c1");
            assert_eq!(b.readings[0].unit.as_deref(), Some("V"));
        }
        assert_eq!(health.counters.readings.load(Relaxed), 2);
        assert_eq!(health.counters.batches.load(Relaxed), 1);
    }

    /// The output of a one-channel device into the sink queue `i`, and its connector's health.
    fn output(i: SinkInput) -> (DeviceOutput, Arc<ConnectorHealth>) {
        let health = Arc::new(ConnectorHealth::default());
        let tx = ReadingSender::new(vec![i]);
        (
            DeviceOutput::new("x".into(), &device(1), tx, health.clone()),
            health,
        )
    }

    #[tokio::test]
    async fn drop_newest_counts_when_full() {
        let c = Arc::new(SinkCounters::default());
        let (i, _r) = sink_queue(1, WhenFull::DropNewest, c.clone());
        let (mut out, health) = output(i);
        for _ in 0..3 {
            out.push(0, Value::U64(1), Timestamp(1));
            out.flush().await;
        }
        assert_eq!(c.dropped.load(Relaxed), 2);
        assert_eq!(health.counters.dropped.load(Relaxed), 2);
    }

    #[tokio::test]
    async fn reserved_room_is_all_or_nothing() {
        let (i1, mut r1) = sink_queue(1, WhenFull::Block, Arc::default());
        let (i2, _r2) = sink_queue(1, WhenFull::DropNewest, Arc::default());
        let health = Arc::new(ConnectorHealth::default());
        let tx = ReadingSender::new(vec![i1, i2]);
        let mut out = DeviceOutput::new("x".into(), &device(1), tx.clone(), health.clone());
        assert_eq!(tx.reservable(), 1);
        assert!(tx.try_reserve(2).is_none(), "one slot only");
        let mut room = tx.try_reserve(1).expect("room in an empty queue");
        assert!(tx.try_reserve(1).is_none(), "the one slot is reserved");
        out.push(0, Value::U64(7), Timestamp(1));
        out.flush_reserved(&mut room);
        drop(room);
        // The block queue is full now; the drop_newest one never refuses.
        assert!(tx.try_reserve(1).is_none());
        let Some(Envelope::Batch(b)) = r1.recv().await else {
            panic!("no batch")
        };
        assert_eq!(b.readings[0].value, Value::U64(7));
        assert!(
            tx.try_reserve(1).is_some(),
            "room again once the sink took it"
        );
        assert_eq!(health.counters.readings.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn the_registry_takes_last_ok_once_a_second_and_every_change_at_once() {
        let (i, mut r) = sink_queue(8, WhenFull::Block, Arc::default());
        let (mut out, health) = output(i);
        let shared = |h: &ConnectorHealth| {
            let devices = h.devices.lock().unwrap();
            let s = devices.get("d").expect("registered");
            (s.last_ok, s.errors, s.online)
        };
        let ok = |t| move |s: &mut DeviceStatus| (s.online, s.last_ok) = (true, Some(Timestamp(t)));
        out.set_status(ok(1_000)).await;
        assert!(
            matches!(r.recv().await, Some(Envelope::Status(_))),
            "online is published"
        );
        assert_eq!(shared(&health), (Some(Timestamp(1_000)), 0, true));
        out.set_status(ok(1_500)).await;
        assert_eq!(
            shared(&health),
            (Some(Timestamp(1_000)), 0, true),
            "half a second later"
        );
        out.set_status(ok(2_000)).await;
        assert_eq!(
            shared(&health),
            (Some(Timestamp(2_000)), 0, true),
            "a second later"
        );
        out.set_status(|s| s.errors += 1).await;
        assert_eq!(
            shared(&health),
            (Some(Timestamp(2_000)), 1, true),
            "a counted error"
        );
        out.set_status(ok(2_100)).await;
        out.set_status(|s| s.online = false).await;
        assert_eq!(
            shared(&health),
            (Some(Timestamp(2_100)), 1, false),
            "a change"
        );
    }

    #[tokio::test]
    async fn close_ends_the_sink_queue() {
        let (i, mut r) = sink_queue(1, WhenFull::Block, Arc::default());
        let tx = ReadingSender::new(vec![i]);
        tx.close();
        assert!(r.recv().await.is_none());
    }
}
