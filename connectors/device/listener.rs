//! The runtime of listener connectors: devices that push their data (MQTT subscriptions, HTTP
//! ingest, Z-Wave JS events, OPC-UA subscriptions) instead of being polled.
//!
//! A connector implements [`Listener`]: `next()` waits for the next message (connecting first
//! when needed), `map()` turns it into readings of the listener's devices through [`Devices`],
//! and `write()` sends a raw value. [`ListenerLine::run`] owns the rest, as [`super::Line`] does
//! for pollers: the enabled flags, `device.read`/`device.write` requests (writes checked and
//! unscaled in one place), the report timers of `every`/heartbeat transforms, device health
//! (a device is online when its message was good, degraded or offline when some or all of its
//! channels were bad, and every device goes offline with the reason when the connection is
//! lost), one log line per transition, and reconnects with [`super::Backoff`]. Readings never
//! wait for a full sink queue: a listener cannot slow its source down, so a full queue drops
//! the batch and counts it (drop-newest) — unless the listener can make its source retry: then
//! it asks for room first ([`Devices::try_reserve`]) and refuses the message when there is
//! none (HTTP ingest answers 503).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::core::{Core, Tally, WriteError};
use super::{Backoff, Fault, WriteSpec, DEFAULT_BACKOFF};
use crate::ConnectorContext;
use osgate_core::config::spec::check_name;
use osgate_core::config::{ChannelSpec, DeviceSpec};
use osgate_core::control::{DeviceError, DeviceRequest, Inbox};
use osgate_core::pipeline::Reserved;
use osgate_core::reading::{Timestamp, Value};
use osgate_core::status::{Health, InputCounters};
use osgate_core::transform::TransformConfig;

/// The protocol part of a listening connector.
pub trait Listener: Send + 'static {
    /// One incoming message.
    type Msg: Send;

    /// Waits for the next message, connecting (again) first when needed. Must be cancel-safe:
    /// the runtime drops the future to serve a request or a timer and calls again. `Err` when
    /// the connection failed or dropped: every device goes offline with the reason, and the
    /// runtime calls again after a backoff.
    fn next(&mut self) -> impl Future<Output = Result<Self::Msg, Fault>> + Send;

    /// Turns a message into readings ([`Devices::push`]); unknown devices or channels are the
    /// listener's to count or ignore.
    fn map(&mut self, msg: Self::Msg, devices: &mut Devices);

    /// Writes `raw` (checked and unscaled by the kit) to channel `ch` of device `device`;
    /// returns the raw value the device took.
    fn write(
        &mut self,
        device: usize,
        ch: usize,
        raw: Value,
    ) -> impl Future<Output = Result<Value, WriteError>> + Send;
}

struct Slot {
    core: Core,
    /// When the report timers of the device's transforms next have something to send.
    timer: Option<Instant>,
    /// When the device goes offline for sending nothing (`stale_after`).
    stale_at: Option<Instant>,
    /// What the current message brought.
    tally: Tally,
    /// The current message touched the device (values or a [`Devices::report`]).
    touched: bool,
    /// What the current message said of the device's reachability ([`Devices::report`]).
    fault: Option<Fault>,
}

/// Most channels one device may gain at run time ([`Devices::channel_or_add`]).
pub const MAX_CHANNELS: usize = 1024;

/// Most messages taken in one burst before requests and timers get their turn.
const BURST: usize = 64;

/// The output of `f` if it is ready at the first poll; `f` is dropped otherwise (which is why
/// [`Listener::next`] must be cancel-safe).
fn ready_now<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// The devices of a listener, as [`Listener::map`] sees them: the configured ones, and those
/// created at run time when the connector accepts new devices ([`ListenerLine::accept_new`]).
pub struct Devices {
    slots: Vec<Slot>,
    touched: Vec<usize>,
    by_name: HashMap<Arc<str>, usize>,
    ctx: ConnectorContext,
    inbox: Inbox,
    /// Devices that may still be created at run time.
    new_left: usize,
    refused_logged: bool,
}

impl Devices {
    fn new(ctx: &ConnectorContext) -> Self {
        Devices {
            slots: Vec::new(),
            touched: Vec::new(),
            by_name: HashMap::new(),
            ctx: ctx.clone(),
            inbox: Inbox::new(),
            new_left: 0,
            refused_logged: false,
        }
    }

    fn add<D, C>(
        &mut self,
        spec: &DeviceSpec<D, C>,
        writes: impl Fn(&ChannelSpec<C>) -> Option<WriteSpec>,
    ) -> usize {
        let index = self.slots.len();
        let core = Core::new(&self.ctx, spec, &self.inbox, index, writes);
        self.by_name.insert(spec.name.clone(), index);
        self.slots.push(Slot {
            core,
            timer: None,
            stale_at: None,
            tally: Tally::default(),
            touched: false,
            fault: None,
        });
        index
    }

    /// The index of the device called `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The index of the device called `name`, created when it is new and the connector
    /// accepts new devices ([`ListenerLine::accept_new`]) up to its maximum; `None` (counted
    /// as `refused`, logged once) otherwise. A new device starts with no channels: add them
    /// with [`Devices::channel_or_add`].
    pub fn find_or_create(&mut self, name: &str) -> Option<usize> {
        if let Some(i) = self.find(name) {
            return Some(i);
        }
        if self.new_left == 0 || check_name(name).is_err() {
            self.ctx.health.counters.refused.fetch_add(1, Relaxed);
            if !self.refused_logged {
                self.refused_logged = true;
                tracing::warn!(connector = %self.ctx.name, device = %name,
                    "message of an unknown device refused (new devices are not accepted, \
                     the maximum is reached, or the name cannot be a topic level); counted \
                     as refused, logged once");
            }
            return None;
        }
        self.new_left -= 1;
        let spec: DeviceSpec<(), ()> = DeviceSpec {
            name: name.into(),
            enabled: true,
            interval: Default::default(),
            settings: (),
            channels: Vec::new(),
        };
        let i = self.add(&spec, |_| None);
        // In force at once: the message that created it is being mapped now. The line
        // publishes its status when it wakes.
        let core = &mut self.slots[i].core;
        core.on = core.enabled_now();
        self.inbox.wake.notify_one();
        tracing::info!(connector = %self.ctx.name, device = %name, "new device");
        Some(i)
    }

    /// The index of channel `name` of device `dev`.
    pub fn channel(&self, dev: usize, name: &str) -> Option<usize> {
        self.slots.get(dev)?.core.out.channel_index(name)
    }

    /// The index of channel `name` of device `dev`, added with `unit` and `transform` when
    /// the device does not have it yet (at most [`MAX_CHANNELS`] per device; beyond that
    /// `None`, counted as `refused`).
    pub fn channel_or_add(
        &mut self,
        dev: usize,
        name: &str,
        unit: Option<&Arc<str>>,
        transform: &TransformConfig,
    ) -> Option<usize> {
        let out = &mut self.slots.get_mut(dev)?.core.out;
        if let Some(c) = out.channel_index(name) {
            return Some(c);
        }
        if out.channel_count() >= MAX_CHANNELS || check_name(name).is_err() {
            self.ctx.health.counters.refused.fetch_add(1, Relaxed);
            return None;
        }
        Some(out.add_channel(name.into(), unit.cloned(), transform))
    }

    /// True when device `dev` is enabled (a disabled device's readings are ignored).
    pub fn is_enabled(&self, dev: usize) -> bool {
        self.slots.get(dev).is_some_and(|s| s.core.on)
    }

    /// Room for `n` batches in every `block` sink's queue, or `None` when one has less: for
    /// a listener that can make its source retry (HTTP 503) instead of dropping. Push a
    /// message's readings after it was granted, then send each batch with
    /// [`Devices::flush_reserved`].
    pub fn try_reserve(&self, n: usize) -> Option<Reserved> {
        self.ctx.out.try_reserve(n)
    }

    /// The most batches [`Devices::try_reserve`] can ever grant at once (the smallest `block`
    /// sink queue): a message that needs more must be refused as too large.
    pub fn reservable(&self) -> usize {
        self.ctx.out.reservable()
    }

    /// Sends device `dev`'s pending readings now as one batch, through `room` (never waits,
    /// never drops for a `block` sink); the runtime still records the device's health after
    /// `map()`.
    pub fn flush_reserved(&mut self, dev: usize, room: &mut Reserved) {
        if let Some(s) = self.slots.get_mut(dev) {
            s.core.out.flush_reserved(room);
        }
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when there is no device.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn touch(&mut self, dev: usize) -> Option<&mut Slot> {
        let s = self.slots.get_mut(dev)?;
        if !s.core.on {
            return None;
        }
        if !s.touched {
            s.touched = true;
            self.touched.push(dev);
        }
        Some(s)
    }

    /// What a message says of device `dev` itself, besides its values: reachable (`None`:
    /// online, unless its channels say otherwise) or not (`Some`: offline with the fault's
    /// reason, e.g. a Z-Wave node reported dead, a last will). Recorded with the message's
    /// values; the last report of a message wins.
    pub fn report(&mut self, dev: usize, fault: Option<Fault>) {
        if let Some(s) = self.touch(dev) {
            s.fault = fault;
        }
    }

    /// Replaces the [`WriteSpec`] of channel `ch` of device `dev` (`None`: not writable), for
    /// protocols that learn a value's type and range at run time (Z-Wave value metadata).
    pub fn set_write(&mut self, dev: usize, ch: usize, spec: Option<WriteSpec>) {
        if let Some(s) = self.slots.get_mut(dev) {
            s.core.set_write(ch, spec);
        }
    }

    /// Sets the unit of channel `ch` of device `dev` for its next readings, for protocols
    /// that announce units at run time.
    pub fn set_unit(&mut self, dev: usize, ch: usize, unit: Option<Arc<str>>) {
        if let Some(s) = self.slots.get_mut(dev) {
            s.core.out.set_unit(ch, unit);
        }
    }

    /// A good value of channel `ch` of device `dev` (ignored while the device is disabled).
    pub fn push(&mut self, dev: usize, ch: usize, value: Value, ts: Timestamp) {
        if let Some(s) = self.touch(dev) {
            s.tally.good += 1;
            s.core.out.push(ch, value, ts);
        }
    }

    /// Channel `ch` of device `dev` reported a failure.
    pub fn push_bad(&mut self, dev: usize, ch: usize, reason: Arc<str>, ts: Timestamp) {
        if let Some(s) = self.touch(dev) {
            s.tally.bad(&reason);
            s.core.out.push_bad(ch, reason, ts);
        }
    }
}

/// One input of a listener (an MQTT mapping, an HTTP endpoint): counts its messages and bad
/// ones (visible in `connectors.list`), and logs a change between good and bad payloads once,
/// never once per message.
pub struct Input {
    counters: Arc<InputCounters>,
    failing: bool,
}

impl Input {
    /// The inputs named `names` of `ctx`'s connector, counters kept across restarts.
    pub fn all(ctx: &ConnectorContext, names: &[Arc<str>]) -> Vec<Input> {
        ctx.health
            .set_inputs(names)
            .into_iter()
            .map(|counters| Input {
                counters,
                failing: false,
            })
            .collect()
    }

    /// A message this input took and decoded.
    pub fn good(&mut self, ctx: &ConnectorContext, name: &str) {
        self.counters.messages.fetch_add(1, Relaxed);
        if self.failing {
            self.failing = false;
            tracing::info!(connector = %ctx.name, input = %name, "payloads decode again");
        }
    }

    /// A message this input took but could not decode, and why.
    pub fn bad(&mut self, ctx: &ConnectorContext, name: &str, why: &str) {
        self.counters.messages.fetch_add(1, Relaxed);
        self.counters.bad.fetch_add(1, Relaxed);
        ctx.health.counters.errors.fetch_add(1, Relaxed);
        if !self.failing {
            self.failing = true;
            tracing::warn!(connector = %ctx.name, input = %name, error = %why,
                "bad payload; counted per input, logged again only after good ones");
        }
        *self.counters.last_error.lock().expect("status lock") = Some(why.to_string());
    }
}

/// A listener and its devices, served by one task.
pub struct ListenerLine<L: Listener> {
    listener: L,
    devices: Devices,
    ctx: ConnectorContext,
    backoff: Backoff,
    stale_after: Option<Duration>,
    backpressure: bool,
}

impl<L: Listener> ListenerLine<L> {
    /// A line of no devices yet, fed by `listener`.
    pub fn new(ctx: &ConnectorContext, listener: L) -> Self {
        ListenerLine {
            listener,
            devices: Devices::new(ctx),
            ctx: ctx.clone(),
            backoff: DEFAULT_BACKOFF,
            stale_after: None,
            backpressure: false,
        }
    }

    /// Sets the reconnect backoff (default [`DEFAULT_BACKOFF`]).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Accepts up to `max` devices not in the config, created on their first message
    /// ([`Devices::find_or_create`]); by default none are.
    pub fn accept_new(mut self, max: usize) -> Self {
        self.devices.new_left = max;
        self
    }

    /// For sources that hold messages while osgate is busy (an MQTT broker): a batch waits
    /// for room in a sink queue whose `when_full` is `block`, so the source is read more
    /// slowly instead of readings being dropped. Without it (the default) a full queue drops
    /// the batch and counts it: a source that cannot wait is never stalled.
    pub fn with_backpressure(mut self) -> Self {
        self.backpressure = true;
        self
    }

    /// A device that sent nothing for `after` goes offline with that reason (until its next
    /// message).
    pub fn with_stale_after(mut self, after: Option<Duration>) -> Self {
        self.stale_after = after;
        self
    }

    /// Adds a device (see [`super::Line::add`]).
    pub fn add<D, C>(
        &mut self,
        spec: &DeviceSpec<D, C>,
        writes: impl Fn(&ChannelSpec<C>) -> Option<WriteSpec>,
    ) {
        self.devices.add(spec, writes);
    }

    /// Runs until the connector is cancelled.
    pub async fn run(mut self) {
        let token = self.ctx.shutdown.clone();
        let wake = self.devices.inbox.wake.clone();
        let mut fault_kind = "";
        self.apply_enabled().await;
        if let Some(after) = self.stale_after {
            // A device that never sends goes offline too.
            let at = Instant::now() + after;
            for s in &mut self.devices.slots {
                s.stale_at = Some(at);
            }
        }
        loop {
            let timer = self
                .devices
                .slots
                .iter()
                .flat_map(|s| [s.timer, s.stale_at])
                .flatten()
                .min();
            let sleep = async {
                match timer {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = token.cancelled() => break,
                _ = wake.notified() => self.apply_enabled().await,
                Some((i, req)) = self.devices.inbox.requests.recv() => self.serve(i, req).await,
                _ = sleep => self.fire_timers().await,
                msg = self.listener.next() => {
                    let mut msg = msg;
                    // A burst (messages already in the connection's buffer) is taken in one
                    // go, without a trip through the select per message.
                    let mut burst = 0;
                    loop {
                        match msg {
                            Ok(m) => {
                                fault_kind = "";
                                self.backoff.reset();
                                self.ctx.health.counters.messages.fetch_add(1, Relaxed);
                                self.listener.map(m, &mut self.devices);
                                self.settle().await;
                            }
                            Err(f) => {
                                // Cancelled during the backoff: the check below ends the loop.
                                self.fault(f, &mut fault_kind).await;
                                break;
                            }
                        }
                        burst += 1;
                        if burst == BURST {
                            break;
                        }
                        match ready_now(self.listener.next()) {
                            Some(m) => msg = m,
                            None => break,
                        }
                    }
                    if token.is_cancelled() {
                        break;
                    }
                }
            }
        }
        for s in &mut self.devices.slots {
            let _ = tokio::time::timeout(
                std::time::Duration::from_millis(200),
                s.core.out.set_status(|st| st.running = false),
            )
            .await;
        }
    }

    /// A lost connection: every device offline with the reason (logged once per kind), then
    /// the backoff (cut short when the connector is cancelled).
    async fn fault(&mut self, f: Fault, fault_kind: &mut &'static str) {
        let wait = self.backoff.next_delay();
        if f.kind != *fault_kind {
            tracing::warn!(connector = %self.ctx.name, error = %f,
                retry_in = ?wait, "connection lost; devices offline");
            *fault_kind = f.kind;
        }
        for s in &mut self.devices.slots {
            s.core.set_offline(&self.ctx, &f.message, true).await;
        }
        let token = self.ctx.shutdown.clone();
        tokio::select! {
            biased;
            _ = token.cancelled() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }

    /// Sends the batches of the devices a message touched and records their health.
    async fn settle(&mut self) {
        let touched = std::mem::take(&mut self.devices.touched);
        for &i in &touched {
            let s = &mut self.devices.slots[i];
            s.touched = false;
            let fault = s.fault.take();
            let verdict = std::mem::take(&mut s.tally).verdict(fault.as_ref());
            if self.backpressure {
                s.core.out.flush().await;
            } else {
                s.core.out.flush_or_drop();
            }
            s.timer = s.core.out.next_timer();
            s.stale_at = self.stale_after.map(|d| Instant::now() + d);
            s.core.record(&self.ctx, verdict, None).await;
        }
        self.devices.touched = touched;
        self.devices.touched.clear();
    }

    /// Sends what the report timers of `every` and heartbeat transforms have due, and takes
    /// devices that went quiet for `stale_after` offline.
    async fn fire_timers(&mut self) {
        let now = Instant::now();
        for s in &mut self.devices.slots {
            if s.core.on && s.timer.is_some_and(|t| t <= now) {
                s.core.out.poll_timers(now);
                s.core.out.flush_or_drop();
                s.timer = s.core.out.next_timer();
            }
            if s.stale_at.is_some_and(|t| t <= now) {
                s.stale_at = None;
                let after = self.stale_after.unwrap_or_default();
                if s.core.on && s.core.out.status().health != Health::Offline {
                    let msg = format!("no message for {}", humantime::format_duration(after));
                    let v = Tally::default().verdict(Some(&Fault::new("stale", msg)));
                    s.core.record(&self.ctx, v, None).await;
                }
            }
        }
    }

    async fn apply_enabled(&mut self) {
        for s in &mut self.devices.slots {
            if s.core.apply_enabled().await == Some(false) {
                s.timer = None;
            }
        }
    }

    async fn serve(&mut self, i: usize, req: DeviceRequest) {
        let Some(s) = self.devices.slots.get_mut(i) else {
            return req.fail(DeviceError::UnknownDevice(format!("#{i}")));
        };
        match req {
            DeviceRequest::Read { reply } => {
                let device = s.core.out.device();
                let _ = reply.send(s.core.check_enabled().and(Err(DeviceError::Failed(format!(
                    "device \"{device}\" sends its values itself; it cannot be read on demand"
                )))));
            }
            DeviceRequest::Write {
                channel,
                value,
                reply,
            } => {
                let res = match s.core.prepare_write(&channel, &value) {
                    Err(e) => Err(e),
                    Ok((ch, raw)) => {
                        let took = self.listener.write(i, ch, raw).await;
                        s.core.write_done(&self.ctx, ch, &channel, took)
                    }
                };
                let _ = reply.send(res);
            }
        }
    }
}
