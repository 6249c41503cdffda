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
//! the batch and counts it (DESIGN §6).

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::time::Instant;

use super::{set_health, write, Backoff, Fault, WriteSpec, DEFAULT_BACKOFF};
use crate::config::{ChannelSpec, DeviceSpec};
use crate::connectors::ConnectorContext;
use crate::control::{DeviceError, DeviceRequest, EnabledFlag, Inbox};
use crate::pipeline::DeviceOutput;
use crate::reading::{Timestamp, Value};
use crate::status::Health;

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
    ) -> impl Future<Output = Result<Value, DeviceError>> + Send;
}

struct Slot {
    out: DeviceOutput,
    enabled: EnabledFlag,
    on: bool,
    writes: Box<[(u32, WriteSpec)]>,
    timer: Option<Instant>,
    good: u32,
    bad: u32,
    first_bad: Option<Arc<str>>,
}

/// The devices of a listener, as [`Listener::map`] sees them.
#[derive(Default)]
pub struct Devices {
    slots: Vec<Slot>,
    touched: Vec<usize>,
}

impl Devices {
    /// The index of the device called `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| &**s.out.device() == name)
    }

    /// The index of channel `name` of device `dev`.
    pub fn channel(&self, dev: usize, name: &str) -> Option<usize> {
        self.slots.get(dev)?.out.channel_index(name)
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
        if !s.on {
            return None;
        }
        if s.good == 0 && s.bad == 0 {
            self.touched.push(dev);
        }
        Some(s)
    }

    /// A good value of channel `ch` of device `dev` (ignored while the device is disabled).
    pub fn push(&mut self, dev: usize, ch: usize, value: Value, ts: Timestamp) {
        if let Some(s) = self.touch(dev) {
            s.good += 1;
            s.out.push(ch, value, ts);
        }
    }

    /// Channel `ch` of device `dev` reported a failure.
    pub fn push_bad(&mut self, dev: usize, ch: usize, reason: Arc<str>, ts: Timestamp) {
        if let Some(s) = self.touch(dev) {
            s.bad += 1;
            s.first_bad.get_or_insert_with(|| reason.clone());
            s.out.push_bad(ch, reason, ts);
        }
    }
}

/// A listener and its devices, served by one task.
pub struct ListenerLine<L: Listener> {
    listener: L,
    devices: Devices,
    inbox: Inbox,
    ctx: ConnectorContext,
    backoff: Backoff,
}

impl<L: Listener> ListenerLine<L> {
    /// A line of no devices yet, fed by `listener`.
    pub fn new(ctx: &ConnectorContext, listener: L) -> Self {
        ListenerLine {
            listener,
            devices: Devices::default(),
            inbox: Inbox::new(),
            ctx: ctx.clone(),
            backoff: DEFAULT_BACKOFF,
        }
    }

    /// Sets the reconnect backoff (default [`DEFAULT_BACKOFF`]).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Adds a device (see [`super::Line::add`]).
    pub fn add<D, C>(
        &mut self,
        spec: &DeviceSpec<D, C>,
        writes: impl Fn(&ChannelSpec<C>) -> Option<WriteSpec>,
    ) {
        let index = self.devices.slots.len();
        let enabled =
            self.ctx
                .control
                .register(&self.ctx.name, &spec.name, spec.enabled, &self.inbox, index);
        let writes = spec
            .channels
            .iter()
            .enumerate()
            .filter_map(|(i, c)| writes(c).map(|w| (i as u32, w)))
            .collect();
        self.devices.slots.push(Slot {
            out: self.ctx.device_output(spec),
            enabled,
            on: false,
            writes,
            timer: None,
            good: 0,
            bad: 0,
            first_bad: None,
        });
    }

    /// Runs until the connector is cancelled.
    pub async fn run(mut self) {
        let token = self.ctx.shutdown.clone();
        let wake = self.inbox.wake.clone();
        let mut fault_kind = "";
        self.apply_enabled().await;
        loop {
            let timer = self.devices.slots.iter().filter_map(|s| s.timer).min();
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
                Some((i, req)) = self.inbox.requests.recv() => self.serve(i, req).await,
                _ = sleep => self.fire_timers(),
                msg = self.listener.next() => match msg {
                    Ok(m) => {
                        fault_kind = "";
                        self.backoff.reset();
                        self.listener.map(m, &mut self.devices);
                        self.settle().await;
                    }
                    Err(f) => {
                        let wait = self.backoff.next_delay();
                        if f.kind != fault_kind {
                            tracing::warn!(connector = %self.ctx.name, error = %f,
                                retry_in = ?wait, "connection lost; devices offline");
                            fault_kind = f.kind;
                        }
                        self.all_offline(&f.message).await;
                        tokio::select! {
                            biased;
                            _ = token.cancelled() => break,
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                },
            }
        }
        for s in &mut self.devices.slots {
            let _ = tokio::time::timeout(
                std::time::Duration::from_millis(200),
                s.out.set_status(|st| st.running = false),
            )
            .await;
        }
    }

    /// Sends the batches of the devices a message touched and updates their health.
    async fn settle(&mut self) {
        let ts = Timestamp::now();
        let touched = std::mem::take(&mut self.devices.touched);
        for &i in &touched {
            let s = &mut self.devices.slots[i];
            let (good, bad) = (s.good, s.bad);
            let reason = s.first_bad.take();
            s.good = 0;
            s.bad = 0;
            s.out.flush_or_drop();
            s.timer = s.out.next_timer();
            let (health, why) = match (good, bad) {
                (_, 0) => (Health::Online, None),
                (0, _) => (Health::Offline, reason.map(|r| r.to_string())),
                (g, b) => (
                    Health::Degraded,
                    Some(format!(
                        "{b} of {} channels failed: {}",
                        g + b,
                        reason.as_deref().unwrap_or("")
                    )),
                ),
            };
            let before = s.out.status().health;
            if before != health {
                let device = s.out.device().clone();
                match health {
                    Health::Online if before == Health::Unknown => {
                        tracing::debug!(connector = %self.ctx.name, device = %device, "device online")
                    }
                    Health::Online => tracing::info!(connector = %self.ctx.name,
                        device = %device, "device online again"),
                    _ => tracing::warn!(connector = %self.ctx.name, device = %device,
                        health = health.as_str(), error = why.as_deref().unwrap_or(""),
                        "device not healthy"),
                }
            }
            if health != Health::Online {
                self.ctx.health.counters.errors.fetch_add(1, Relaxed);
            }
            s.out
                .set_status(|st| set_health(st, health, bad, good > 0, why, ts))
                .await;
        }
        self.devices.touched = touched;
        self.devices.touched.clear();
    }

    /// Sends what the report timers of `every` and heartbeat transforms have due.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        for s in &mut self.devices.slots {
            if s.on && s.timer.is_some_and(|t| t <= now) {
                s.out.poll_timers(now);
                s.out.flush_or_drop();
                s.timer = s.out.next_timer();
            }
        }
    }

    async fn all_offline(&mut self, reason: &str) {
        let ts = Timestamp::now();
        for s in &mut self.devices.slots {
            if s.on && s.out.status().last_error.as_deref() != Some(reason) {
                let r = Some(reason.to_string());
                s.out
                    .set_status(|st| set_health(st, Health::Offline, 0, false, r, ts))
                    .await;
            }
        }
    }

    async fn apply_enabled(&mut self) {
        for s in &mut self.devices.slots {
            let on = s.enabled.load(Relaxed);
            if on == s.on && s.out.status().running == on {
                continue;
            }
            s.on = on;
            s.out
                .set_status(|st| {
                    st.running = on;
                    st.enabled = on;
                    if !on {
                        st.online = false;
                        st.health = Health::Unknown;
                        st.bad_channels = 0;
                    }
                })
                .await;
            if !on {
                s.timer = None;
            }
        }
    }

    async fn serve(&mut self, i: usize, req: DeviceRequest) {
        let Some(s) = self.devices.slots.get(i) else {
            return req.fail(DeviceError::UnknownDevice(format!("#{i}")));
        };
        let device = s.out.device().to_string();
        if !s.on {
            return req.fail(DeviceError::Disabled(device));
        }
        match req {
            DeviceRequest::Read { reply } => {
                let _ = reply.send(Err(DeviceError::Failed(format!(
                    "device \"{device}\" sends its values itself; it cannot be read on demand"
                ))));
            }
            DeviceRequest::Write {
                channel,
                value,
                reply,
            } => {
                let res = async {
                    let ch = s.out.channel_index(&channel).ok_or_else(|| {
                        DeviceError::UnknownChannel {
                            device: device.clone(),
                            channel: channel.clone(),
                        }
                    })?;
                    let spec = s
                        .writes
                        .iter()
                        .find(|(c, _)| *c as usize == ch)
                        .map(|(_, w)| *w)
                        .ok_or_else(|| DeviceError::NotWritable(channel.clone()))?;
                    let linear = s.out.linear(ch);
                    let raw = spec
                        .to_raw(&value, linear)
                        .map_err(|e| write::out_of_range(&channel, e))?;
                    let took = self.listener.write(i, ch, raw).await?;
                    Ok(write::to_engineering(took, linear).to_json())
                }
                .await;
                let _ = reply.send(res);
            }
        }
    }
}
