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
use std::sync::Arc;

use tokio::time::Instant;

use super::core::{Core, Tally, WriteError};
use super::{Backoff, Fault, WriteSpec, DEFAULT_BACKOFF};
use crate::config::{ChannelSpec, DeviceSpec};
use crate::connectors::ConnectorContext;
use crate::control::{DeviceError, DeviceRequest, Inbox};
use crate::reading::{Timestamp, Value};

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
    /// What the current message brought.
    tally: Tally,
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
        self.slots
            .iter()
            .position(|s| &**s.core.out.device() == name)
    }

    /// The index of channel `name` of device `dev`.
    pub fn channel(&self, dev: usize, name: &str) -> Option<usize> {
        self.slots.get(dev)?.core.out.channel_index(name)
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
        if s.tally.good == 0 && s.tally.bad == 0 {
            self.touched.push(dev);
        }
        Some(s)
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
        let core = Core::new(&self.ctx, spec, &self.inbox, index, writes);
        self.devices.slots.push(Slot {
            core,
            timer: None,
            tally: Tally::default(),
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
                        for s in &mut self.devices.slots {
                            s.core.set_offline(&self.ctx, &f.message, true).await;
                        }
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
                s.core.out.set_status(|st| st.running = false),
            )
            .await;
        }
    }

    /// Sends the batches of the devices a message touched and records their health.
    async fn settle(&mut self) {
        let touched = std::mem::take(&mut self.devices.touched);
        for &i in &touched {
            let s = &mut self.devices.slots[i];
            let verdict = std::mem::take(&mut s.tally).verdict(None);
            s.core.out.flush_or_drop();
            s.timer = s.core.out.next_timer();
            s.core.record(&self.ctx, verdict, None).await;
        }
        self.devices.touched = touched;
        self.devices.touched.clear();
    }

    /// Sends what the report timers of `every` and heartbeat transforms have due.
    fn fire_timers(&mut self) {
        let now = Instant::now();
        for s in &mut self.devices.slots {
            if s.core.on && s.timer.is_some_and(|t| t <= now) {
                s.core.out.poll_timers(now);
                s.core.out.flush_or_drop();
                s.timer = s.core.out.next_timer();
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
        let Some(s) = self.devices.slots.get(i) else {
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
