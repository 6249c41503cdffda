//! The device runtime every connector shares (the connector kit).
//!
//! A connector supplies only what is protocol-specific; the runtime owns the rest, the same for
//! every protocol:
//! - the poll [`Schedule`]: the device's interval and per-channel intervals, lag counted when a
//!   poll starts more than an interval late (backpressure from the sinks, a slow line);
//! - the enabled flag (config, then run-time overrides) and the status that says so;
//! - the request queue: `device.read` (poll now, nothing to the pipeline) and `device.write`
//!   (checked, `scale`/`offset` reversed and range-checked in [`mod@write`], then sent);
//! - one [`Backoff`] per device;
//! - device health: online / degraded (some channels failed) / offline (no answer, or every
//!   channel failed, with the reason), `last_ok`, `errors`, `last_error`, published on
//!   `status/{gateway}/{connector}/{device}`, one log line per transition, never one per poll;
//! - cancellation, and panic capture: a line task that panics is reported as an error of each of
//!   its devices and rebuilt after a backoff ([`run_lines`]).
//!
//! **Pollers** implement [`Poller`]: `poll()` reads the due channels of one device and pushes a
//! value or a failure for each into the [`Poll`]; `write()` sends one raw value. A [`Line`] is one
//! task serving one or more devices in turn through one poller: a serial bus or a TCP gateway
//! shared by several units is one line with many devices, a device with a connection of its own
//! is a line of one. **Listeners** implement [`listener::Listener`]: a cancel-safe `next()`
//! message, `map()` to readings, and `write()`; [`listener::ListenerLine`] does the rest.

pub mod listener;
pub mod write;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

pub use crate::backoff::Backoff;
pub use write::{ValueKind, WriteSpec};

use super::ConnectorContext;
use crate::config::{ChannelSpec, DeviceSpec};
use crate::control::{DeviceError, DeviceRequest, EnabledFlag, Inbox};
use crate::pipeline::DeviceOutput;
use crate::reading::{Quality, Reading, Timestamp, Value};
use crate::status::{DeviceStatus, Health};

/// A device that did not answer at all (no connection, timeout, garbled frame): the whole poll
/// failed, the device goes offline with this reason and is retried after its backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// A stable label of the kind of failure (`timeout`, `io`…): a change of kind is logged, a
    /// new message of the same kind is not.
    pub kind: &'static str,
    /// What happened, for operators.
    pub message: String,
}

impl Fault {
    /// A fault of `kind` with `message`.
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Fault {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The protocol part of a polling connector, for one line (one connection or serial port).
pub trait Poller: Send + 'static {
    /// What the protocol keeps per device (unit id, planned requests…).
    type Device: Send + 'static;

    /// Reads the due channels of `device` ([`Poll::due`]) and pushes a value or a failure for
    /// each ([`Poll::push`], [`Poll::push_bad`]); stamp values when the answer arrives. `Err`
    /// when the device did not answer at all: push the channels not read as bad first.
    fn poll(
        &mut self,
        device: &mut Self::Device,
        poll: &mut Poll<'_>,
    ) -> impl Future<Output = Result<(), Fault>> + Send;

    /// Writes `raw` (already checked and unscaled by the kit, see [`WriteSpec`]) to channel
    /// `ch` of `device`; returns the raw value the device now holds.
    fn write(
        &mut self,
        device: &mut Self::Device,
        ch: usize,
        raw: Value,
    ) -> impl Future<Output = Result<Value, DeviceError>> + Send;

    /// Called once when the line stops (close the connection).
    fn close(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Channels polled at one interval.
#[derive(Debug)]
pub struct Group {
    /// The interval.
    pub interval: Duration,
    /// The channels (indices in the device's config).
    pub channels: Box<[u32]>,
    next: Instant,
}

/// A device's poll schedule: its channels grouped by interval (the device's, or a channel's
/// own), each group due on its own.
#[derive(Debug, Default)]
pub struct Schedule {
    groups: Vec<Group>,
}

impl Schedule {
    /// Groups the channels by interval: `intervals` yields each channel's own interval, if it
    /// has one; the others use `device`.
    pub fn new(device: Duration, intervals: impl IntoIterator<Item = Option<Duration>>) -> Self {
        let mut groups: Vec<(Duration, Vec<u32>)> = Vec::new();
        for (i, iv) in intervals.into_iter().enumerate() {
            let iv = iv.unwrap_or(device);
            match groups.iter_mut().find(|(d, _)| *d == iv) {
                Some((_, chans)) => chans.push(i as u32),
                None => groups.push((iv, vec![i as u32])),
            }
        }
        let now = Instant::now();
        Schedule {
            groups: groups
                .into_iter()
                .map(|(interval, channels)| Group {
                    interval,
                    channels: channels.into_boxed_slice(),
                    next: now,
                })
                .collect(),
        }
    }

    /// The groups, in order of first appearance (their index is what [`Poll::due`] lists).
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Every device's channels at its own interval (no per-channel intervals).
    pub fn every(device: Duration, channels: usize) -> Self {
        Self::new(device, std::iter::repeat_n(None, channels))
    }
}

enum Target<'a> {
    /// A scheduled poll: readings go through the transforms into the device's batch.
    Batch(&'a mut DeviceOutput),
    /// `device.read`: readings through the value steps only, returned to the caller.
    Read(&'a DeviceOutput, &'a mut Vec<Reading>),
}

/// One poll of one device, handed to [`Poller::poll`].
pub struct Poll<'a> {
    groups: &'a [Group],
    due: &'a [usize],
    target: Target<'a>,
    offline: bool,
    good: u32,
    bad: u32,
    first_bad: Option<Arc<str>>,
}

impl Poll<'_> {
    /// Indices of the groups due now ([`Schedule::groups`]); all of them for `device.read`.
    pub fn due(&self) -> &[usize] {
        self.due
    }

    /// The channels of group `g`.
    pub fn channels(&self, g: usize) -> &[u32] {
        &self.groups[g].channels
    }

    /// True while the device is offline: spend one attempt, not retries, on it.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// A good value of channel `ch`, read at `ts`.
    pub fn push(&mut self, ch: usize, value: Value, ts: Timestamp) {
        self.good += 1;
        match &mut self.target {
            Target::Batch(out) => out.push(ch, value, ts),
            Target::Read(out, readings) => {
                readings.extend(out.convert(ch, value, ts, Quality::Good));
            }
        }
    }

    /// Channel `ch` could not be read, because of `reason`.
    pub fn push_bad(&mut self, ch: usize, reason: Arc<str>, ts: Timestamp) {
        self.bad += 1;
        if self.first_bad.is_none() {
            self.first_bad = Some(reason.clone());
        }
        match &mut self.target {
            Target::Batch(out) => out.push_bad(ch, reason, ts),
            Target::Read(out, readings) => {
                let q = Quality::Bad(reason);
                readings.extend(out.convert(ch, Value::F64(f64::NAN), ts, q));
            }
        }
    }
}

/// What one poll says about a device's health.
fn verdict(res: &Result<(), Fault>, poll: &Poll<'_>) -> (Health, Option<String>, &'static str) {
    match res {
        Err(f) => (Health::Offline, Some(f.message.clone()), f.kind),
        Ok(()) if poll.bad > 0 => {
            let reason = poll.first_bad.as_deref().unwrap_or("read failed");
            if poll.good == 0 {
                (Health::Offline, Some(reason.to_string()), "channels")
            } else {
                let n = poll.bad + poll.good;
                let msg = format!("{} of {n} channels failed: {reason}", poll.bad);
                (Health::Degraded, Some(msg), "channels")
            }
        }
        Ok(()) => (Health::Online, None, ""),
    }
}

/// One device on a line.
struct Slot<D> {
    state: D,
    out: DeviceOutput,
    groups: Vec<Group>,
    enabled: EnabledFlag,
    on: bool,
    backoff: Backoff,
    retry_at: Option<Instant>,
    /// The kind of the last failure, so a new message of the same kind is not logged again.
    fault_kind: &'static str,
    writes: Box<[(u32, WriteSpec)]>,
}

impl<D> Slot<D> {
    fn next_due(&self) -> Option<Instant> {
        if !self.on {
            return None;
        }
        let due = self.groups.iter().map(|g| g.next).min()?;
        Some(self.retry_at.map_or(due, |r| r.max(due)))
    }
}

/// One task serving one or more devices in turn through one [`Poller`].
pub struct Line<P: Poller> {
    poller: P,
    devices: Vec<Slot<P::Device>>,
    inbox: Inbox,
    ctx: ConnectorContext,
    backoff: Backoff,
    due: Vec<usize>,
}

/// The default device backoff: 1 s, doubling, at most 30 s.
pub const DEFAULT_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

impl<P: Poller> Line<P> {
    /// An empty line polling through `poller`.
    pub fn new(ctx: &ConnectorContext, poller: P) -> Self {
        Line {
            poller,
            devices: Vec::new(),
            inbox: Inbox::new(),
            ctx: ctx.clone(),
            backoff: DEFAULT_BACKOFF,
            due: Vec::new(),
        }
    }

    /// Sets the backoff of the line's devices after a failed poll (default [`DEFAULT_BACKOFF`]).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Adds a device: its output (transforms, status), its schedule, the protocol's state, and
    /// which channels are writable (`writes` gives a channel's [`WriteSpec`], `None` when it is
    /// read-only). Registers the device for run-time control.
    pub fn add<D, C>(
        &mut self,
        spec: &DeviceSpec<D, C>,
        schedule: Schedule,
        state: P::Device,
        writes: impl Fn(&ChannelSpec<C>) -> Option<WriteSpec>,
    ) {
        let enabled = self.ctx.control.register(
            &self.ctx.name,
            &spec.name,
            spec.enabled,
            &self.inbox,
            self.devices.len(),
        );
        let writes: Box<[(u32, WriteSpec)]> = spec
            .channels
            .iter()
            .enumerate()
            .filter_map(|(i, c)| writes(c).map(|w| (i as u32, w)))
            .collect();
        self.devices.push(Slot {
            state,
            out: self.ctx.device_output(spec),
            groups: schedule.groups,
            enabled,
            on: false,
            backoff: self.backoff,
            retry_at: None,
            fault_kind: "",
            writes,
        });
    }

    /// Number of devices on the line.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// True when the line has no device.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Polls until the connector is cancelled, serving requests and enable/disable between
    /// polls.
    pub async fn run(mut self) {
        let token = self.ctx.shutdown.clone();
        let wake = self.inbox.wake.clone();
        self.apply_enabled().await;
        loop {
            let next = self.devices.iter().filter_map(Slot::next_due).min();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = token.cancelled() => break,
                _ = wake.notified() => {
                    self.apply_enabled().await;
                    continue;
                }
                Some((i, req)) = self.inbox.requests.recv() => {
                    self.serve(i, req).await;
                    continue;
                }
                _ = sleep => {}
            }
            let now = Instant::now();
            for i in 0..self.devices.len() {
                if token.is_cancelled() {
                    break;
                }
                if self.devices[i].next_due().is_some_and(|at| at <= now) {
                    self.poll(i, now).await;
                }
            }
        }
        self.poller.close().await;
        for d in &mut self.devices {
            // Best effort: a full queue at shutdown must not hold the stop up.
            let _ = tokio::time::timeout(
                Duration::from_millis(200),
                d.out.set_status(|s| s.running = false),
            )
            .await;
        }
    }

    /// Applies the enabled flags that changed (config at start, run-time overrides later).
    async fn apply_enabled(&mut self) {
        let now = Instant::now();
        for d in &mut self.devices {
            let on = d.enabled.load(Relaxed);
            if on == d.on && d.out.status().running == on {
                continue;
            }
            d.on = on;
            if on {
                for g in &mut d.groups {
                    g.next = now;
                }
                d.retry_at = None;
            }
            d.out
                .set_status(|s| {
                    s.running = on;
                    s.enabled = on;
                    if !on {
                        s.online = false;
                        s.health = Health::Unknown;
                        s.bad_channels = 0;
                    }
                })
                .await;
        }
    }

    /// Polls the due groups of device `i`, sends one batch, and updates its health.
    async fn poll(&mut self, i: usize, now: Instant) {
        let d = &mut self.devices[i];
        self.due.clear();
        for (g, group) in d.groups.iter_mut().enumerate() {
            if group.next > now {
                continue;
            }
            self.due.push(g);
            group.next += group.interval;
            if group.next <= now {
                // Started more than an interval late (slow line or backpressure).
                self.ctx.health.counters.lagged.fetch_add(1, Relaxed);
                group.next = now + group.interval;
            }
        }
        let offline = d.out.status().health == Health::Offline;
        let mut poll = Poll {
            groups: &d.groups,
            due: &self.due,
            target: Target::Batch(&mut d.out),
            offline,
            good: 0,
            bad: 0,
            first_bad: None,
        };
        let res = self.poller.poll(&mut d.state, &mut poll).await;
        let (health, reason, kind) = verdict(&res, &poll);
        let (good, bad) = (poll.good, poll.bad);
        let token = &self.ctx.shutdown;
        tokio::select! {
            biased;
            _ = token.cancelled() => return,
            _ = d.out.flush() => {}
        }
        let before = d.out.status().health;
        let retry_in = match health {
            Health::Offline => {
                let wait = d.backoff.next_delay();
                d.retry_at = Some(Instant::now() + wait);
                Some(wait)
            }
            _ => {
                d.backoff.reset();
                d.retry_at = None;
                None
            }
        };
        let name = &self.ctx.name;
        let device = d.out.device().clone();
        let changed = before != health || (health == Health::Offline && d.fault_kind != kind);
        if changed {
            match health {
                Health::Offline => tracing::warn!(
                    connector = %name, device = %device, error = reason.as_deref().unwrap_or(""),
                    retry_in = ?retry_in.unwrap_or_default(), "device offline"
                ),
                Health::Degraded => tracing::warn!(
                    connector = %name, device = %device, bad_channels = bad,
                    error = reason.as_deref().unwrap_or(""), "device degraded"
                ),
                _ if before == Health::Unknown => {
                    tracing::debug!(connector = %name, device = %device, "device online")
                }
                _ => tracing::info!(connector = %name, device = %device, "device online again"),
            }
        }
        d.fault_kind = kind;
        if health != Health::Online {
            self.ctx.health.counters.errors.fetch_add(1, Relaxed);
        }
        let ts = Timestamp::now();
        d.out
            .set_status(|s| set_health(s, health, bad, good > 0, reason, ts))
            .await;
    }

    /// Serves a control request for device `i`.
    async fn serve(&mut self, i: usize, req: DeviceRequest) {
        let Some(d) = self.devices.get_mut(i) else {
            return req.fail(DeviceError::UnknownDevice(format!("#{i}")));
        };
        if !d.on {
            return req.fail(DeviceError::Disabled(d.out.device().to_string()));
        }
        match req {
            DeviceRequest::Read { reply } => {
                let due: Vec<usize> = (0..d.groups.len()).collect();
                let mut readings = Vec::new();
                let mut poll = Poll {
                    groups: &d.groups,
                    due: &due,
                    target: Target::Read(&d.out, &mut readings),
                    offline: false,
                    good: 0,
                    bad: 0,
                    first_bad: None,
                };
                let res = self.poller.poll(&mut d.state, &mut poll).await;
                let _ = reply.send(match res {
                    Ok(()) => Ok(readings),
                    Err(f) => Err(DeviceError::Offline(d.out.device().to_string(), f.message)),
                });
            }
            DeviceRequest::Write {
                channel,
                value,
                reply,
            } => {
                let res = self.write(i, &channel, &value).await;
                let _ = reply.send(res);
            }
        }
    }

    /// Checks a write in engineering units, sends it raw, answers in engineering units.
    async fn write(
        &mut self,
        i: usize,
        channel: &str,
        value: &serde_json::Value,
    ) -> Result<serde_json::Value, DeviceError> {
        let d = &mut self.devices[i];
        let device = d.out.device().clone();
        let ch = d
            .out
            .channel_index(channel)
            .ok_or_else(|| DeviceError::UnknownChannel {
                device: device.to_string(),
                channel: channel.to_string(),
            })?;
        let spec = d
            .writes
            .iter()
            .find(|(c, _)| *c as usize == ch)
            .map(|(_, w)| *w)
            .ok_or_else(|| DeviceError::NotWritable(channel.to_string()))?;
        let linear = d.out.linear(ch);
        let raw = spec
            .to_raw(value, linear)
            .map_err(|e| write::out_of_range(channel, e))?;
        let took = self
            .poller
            .write(&mut d.state, ch, raw)
            .await
            .map_err(|e| match e {
                // The protocol knows the channel by index; name it.
                DeviceError::OutOfRange { reason, .. } => write::out_of_range(channel, reason),
                e => e,
            })?;
        let written = write::to_engineering(took, linear);
        tracing::info!(connector = %self.ctx.name, device = %device, channel = %channel,
            value = %written, "write");
        Ok(written.to_json())
    }
}

/// The status after a poll (or a message) with this outcome.
pub fn set_health(
    s: &mut DeviceStatus,
    health: Health,
    bad: u32,
    some_good: bool,
    reason: Option<String>,
    ts: Timestamp,
) {
    s.running = true;
    s.online = health != Health::Offline;
    s.health = health;
    s.bad_channels = if health == Health::Degraded { bad } else { 0 };
    if some_good {
        s.last_ok = Some(ts);
    }
    if health != Health::Online {
        s.errors += 1;
    }
    s.last_error = reason;
}

/// How long a line that panicked waits before it is rebuilt: 1 s, doubling, at most 60 s.
pub const PANIC_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// A line that ran this long before it panicked starts its backoff afresh.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Runs `n` lines, line `i` built by `build(i)`, each in its own task, until the connector is
/// cancelled. A line whose task panics is reported as an error of each of its devices (status
/// offline, `last_error` "device task panicked: …"), logged, and rebuilt with `build(i)` after a
/// backoff; the other lines keep running.
pub async fn run_lines<P: Poller>(
    ctx: &ConnectorContext,
    n: usize,
    build: impl Fn(usize) -> Line<P>,
) {
    if n == 0 {
        // Nothing to poll (yet): idle until stopped rather than end as if failed.
        return ctx.shutdown.cancelled().await;
    }
    let mut tasks = JoinSet::new();
    let mut ids = std::collections::HashMap::new();
    let mut backoffs = vec![PANIC_BACKOFF; n];
    let mut started = vec![Instant::now(); n];
    for i in 0..n {
        let h = tasks.spawn(build(i).run());
        ids.insert(h.id(), i);
    }
    while let Some(res) = tasks.join_next_with_id().await {
        let (id, err) = match res {
            Ok((id, ())) => {
                ids.remove(&id);
                continue;
            }
            Err(e) => (e.id(), e),
        };
        let Some(i) = ids.remove(&id) else { continue };
        if !err.is_panic() || ctx.shutdown.is_cancelled() {
            continue;
        }
        let msg = panic_message(err.into_panic());
        if started[i].elapsed() >= STABLE_AFTER {
            backoffs[i].reset();
        }
        let wait = backoffs[i].next_delay();
        let mut line = build(i);
        let names: Vec<String> = line
            .devices
            .iter()
            .map(|d| d.out.device().to_string())
            .collect();
        tracing::error!(connector = %ctx.name, devices = ?names, error = %msg, retry_in = ?wait,
            "device task panicked; restarting it");
        let reason = format!("device task panicked: {msg}");
        let ts = Timestamp::now();
        for d in &mut line.devices {
            ctx.health.counters.errors.fetch_add(1, Relaxed);
            let r = Some(reason.clone());
            d.out
                .set_status(|s| {
                    set_health(s, Health::Offline, 0, false, r, ts);
                    // Nothing serves the device until the line is rebuilt.
                    s.running = false;
                })
                .await;
        }
        started[i] = Instant::now() + wait;
        let token = ctx.shutdown.clone();
        let h = tasks.spawn(async move {
            tokio::select! {
                biased;
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            line.run().await
        });
        ids.insert(h.id(), i);
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => match p.downcast::<&'static str>() {
            Ok(s) => s.to_string(),
            Err(_) => "unknown panic".to_string(),
        },
    }
}
