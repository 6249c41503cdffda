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
//! message, `map()` to readings, and `write()`; [`listener::ListenerLine`] does the rest. A
//! listener whose writes are answered on its stream waits for the answer with
//! [`reply::Replies`], which holds the messages that arrive meanwhile; one that connects (a
//! socket, a handshake) keeps the connect going across cancelled `next()` calls with
//! [`link::Link`], and notices a server gone silent with [`watchdog::Watchdog`].

mod core;
pub mod json_paths;
pub mod link;
pub mod listener;
pub mod payload;
pub mod reply;
pub mod watchdog;
pub mod write;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

pub use self::core::WriteError;
pub use osgate_core::backoff::Backoff;
pub use write::{ValueKind, WriteSpec, WriteType};

use self::core::{Core, Tally};
use super::ConnectorContext;
use osgate_core::config::{ChannelSpec, DeviceSpec};
use osgate_core::control::{DeviceError, DeviceRequest, Inbox};
use osgate_core::pipeline::DeviceOutput;
use osgate_core::reading::{Quality, Reading, Timestamp, Value};
use osgate_core::status::Health;

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
    ) -> impl Future<Output = Result<Value, WriteError>> + Send;

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
    /// The channels (indices in the device's config); shared by the devices of a line that
    /// have the same list ([`Line::add`]).
    pub channels: Arc<[u32]>,
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
                    channels: channels.into(),
                    next: now,
                })
                .collect(),
        }
    }

    /// The groups, in order of first appearance (their index is what [`Poll::due`] lists).
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// A device polled every `device` whose values are not configured channels (they come
    /// from the device itself, pushed with [`Poll::push_named`]).
    pub fn device_only(device: Duration) -> Self {
        Schedule {
            groups: vec![Group {
                interval: device,
                channels: Arc::new([]),
                next: Instant::now(),
            }],
        }
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
    tally: Tally,
}

impl<'a> Poll<'a> {
    fn new(groups: &'a [Group], due: &'a [usize], target: Target<'a>, offline: bool) -> Self {
        Poll {
            groups,
            due,
            target,
            offline,
            tally: Tally::default(),
        }
    }

    /// Indices of the groups due now ([`Schedule::groups`]); all of them for `device.read`.
    pub fn due(&self) -> &'a [usize] {
        self.due
    }

    /// The channels of group `g`.
    pub fn channels(&self, g: usize) -> &'a [u32] {
        &self.groups[g].channels
    }

    /// Every due channel, group by group (for protocols that read channel by channel).
    pub fn due_channels(&self) -> impl Iterator<Item = usize> + 'a {
        let groups = self.groups;
        self.due
            .iter()
            .flat_map(move |&g| groups[g].channels.iter().map(|&c| c as usize))
    }

    /// True while the device is offline: spend one attempt, not retries, on it.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// A good value of channel `ch`, read at `ts`.
    pub fn push(&mut self, ch: usize, value: Value, ts: Timestamp) {
        self.tally.good += 1;
        match &mut self.target {
            Target::Batch(out) => out.push(ch, value, ts),
            Target::Read(out, readings) => {
                readings.extend(out.convert(ch, value, ts, Quality::Good));
            }
        }
    }

    /// A good value of a channel the device itself names (not in its config): the channel
    /// is added on first use, with `unit` and no transform.
    pub fn push_named(&mut self, name: &str, unit: Option<&str>, value: Value, ts: Timestamp) {
        self.tally.good += 1;
        match &mut self.target {
            Target::Batch(out) => {
                let ch = out.named_channel(name, unit);
                out.push(ch, value, ts);
            }
            Target::Read(out, readings) => readings.push(Reading {
                device: out.device().clone(),
                channel: name.into(),
                value,
                ts,
                quality: Quality::Good,
                unit: unit.map(Arc::from),
            }),
        }
    }

    /// Channel `ch` could not be read, because of `reason`.
    pub fn push_bad(&mut self, ch: usize, reason: Arc<str>, ts: Timestamp) {
        self.tally.bad(&reason);
        match &mut self.target {
            Target::Batch(out) => out.push_bad(ch, reason, ts),
            Target::Read(out, readings) => {
                let q = Quality::Bad(reason);
                readings.extend(out.convert(ch, Value::F64(f64::NAN), ts, q));
            }
        }
    }
}

/// One device on a line.
struct Slot<D> {
    state: D,
    core: Core,
    groups: Vec<Group>,
    backoff: Backoff,
    retry_at: Option<Instant>,
}

impl<D> Slot<D> {
    fn next_due(&self) -> Option<Instant> {
        if !self.core.on {
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
        let core = Core::new(&self.ctx, spec, &self.inbox, self.devices.len(), writes);
        let mut groups = schedule.groups;
        // Devices of one model repeat the same channel lists (4 bytes a channel): keep one.
        if let Some(prev) = self.devices.last() {
            for g in &mut groups {
                if let Some(same) = prev.groups.iter().find(|p| p.channels == g.channels) {
                    g.channels = same.channels.clone();
                }
            }
        }
        self.devices.push(Slot {
            state,
            core,
            groups,
            backoff: self.backoff,
            retry_at: None,
        });
    }

    /// Polls until the connector is cancelled, serving requests and enable/disable between
    /// polls.
    pub async fn run(mut self) {
        // A Vec grows to 4 slots at its first push: a line of one device would keep room for
        // three more (~1 kB), multiplied by every such line.
        self.devices.shrink_to_fit();
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
                d.core.out.set_status(|s| s.running = false),
            )
            .await;
        }
    }

    /// Applies the enabled flags that changed (config at start, run-time overrides later).
    async fn apply_enabled(&mut self) {
        let now = Instant::now();
        for d in &mut self.devices {
            if d.core.apply_enabled().await == Some(true) {
                for g in &mut d.groups {
                    g.next = now;
                }
                d.retry_at = None;
            }
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
        let offline = d.core.out.status().health == Health::Offline;
        let mut poll = Poll::new(
            &d.groups,
            &self.due,
            Target::Batch(&mut d.core.out),
            offline,
        );
        let res = self.poller.poll(&mut d.state, &mut poll).await;
        let verdict = poll.tally.verdict(res.as_ref().err());
        tokio::select! {
            biased;
            _ = self.ctx.shutdown.cancelled() => return,
            _ = d.core.out.flush() => {}
        }
        let retry_in = if verdict.health == Health::Offline {
            let wait = d.backoff.next_delay();
            d.retry_at = Some(Instant::now() + wait);
            Some(wait)
        } else {
            d.backoff.reset();
            d.retry_at = None;
            None
        };
        d.core.record(&self.ctx, verdict, retry_in).await;
    }

    /// Serves a control request for device `i`.
    async fn serve(&mut self, i: usize, req: DeviceRequest) {
        let Some(d) = self.devices.get_mut(i) else {
            return req.fail(DeviceError::UnknownDevice(format!("#{i}")));
        };
        match req {
            DeviceRequest::Read { reply } => {
                let res = match d.core.check_enabled() {
                    Err(e) => Err(e),
                    Ok(()) => {
                        let due: Vec<usize> = (0..d.groups.len()).collect();
                        let mut readings = Vec::new();
                        let target = Target::Read(&d.core.out, &mut readings);
                        let mut poll = Poll::new(&d.groups, &due, target, false);
                        match self.poller.poll(&mut d.state, &mut poll).await {
                            Ok(()) => Ok(readings),
                            Err(f) => Err(DeviceError::Offline(
                                d.core.out.device().to_string(),
                                f.message,
                            )),
                        }
                    }
                };
                let _ = reply.send(res);
            }
            DeviceRequest::Write {
                channel,
                value,
                reply,
            } => {
                let res = match d.core.prepare_write(&channel, &value) {
                    Err(e) => Err(e),
                    Ok((ch, raw)) => {
                        let took = self.poller.write(&mut d.state, ch, raw).await;
                        d.core.write_done(&self.ctx, ch, &channel, took)
                    }
                };
                let _ = reply.send(res);
            }
        }
    }
}

/// How long a line that panicked waits before it is rebuilt: 1 s, doubling, at most 60 s.
pub const PANIC_BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// How `devices` devices that need no connection of their own are dealt to lines:
/// `(lines, devices per line)`. Consecutive devices share a line, at most `max_per_line` on
/// each, and there are at least as many lines as the runtime has worker threads (when there
/// are that many devices), so the lines keep every core busy.
pub fn shared_lines(devices: usize, max_per_line: usize) -> (usize, usize) {
    let workers = tokio::runtime::Handle::try_current().map_or(1, |h| h.metrics().num_workers());
    split_lines(devices, max_per_line, workers)
}

/// [`shared_lines`] for `workers` worker threads.
fn split_lines(devices: usize, max_per_line: usize, workers: usize) -> (usize, usize) {
    if devices == 0 {
        return (0, 0);
    }
    let lines = devices
        .div_ceil(max_per_line.max(1))
        .max(workers.clamp(1, devices));
    let per_line = devices.div_ceil(lines);
    (devices.div_ceil(per_line), per_line)
}

/// Runs the devices of one peer that takes at most `connections` connections (a Modbus gateway,
/// a PLC's PUT/GET resources): one line per connection, never more lines than devices (at least
/// one), the devices dealt to them in turn in config order (device `i` on line `i % lines`).
/// `line()` makes an empty line with its own connection (its poller and backoff), `add(line,
/// i)` puts device `i` on it. Lines run and are rebuilt as in [`run_lines`].
pub async fn run_connections<P: Poller>(
    ctx: &ConnectorContext,
    devices: usize,
    connections: usize,
    line: impl Fn() -> Line<P>,
    add: impl Fn(&mut Line<P>, usize),
) {
    let lines = connection_lines(devices, connections);
    run_lines(ctx, lines.len(), |l| {
        let mut line = line();
        for &i in &lines[l] {
            add(&mut line, i);
        }
        line
    })
    .await
}

/// The devices of each line of [`run_connections`].
fn connection_lines(devices: usize, connections: usize) -> Vec<Vec<usize>> {
    let lines = connections.clamp(1, devices.max(1));
    (0..lines)
        .map(|l| (l..devices).step_by(lines).collect())
        .collect()
}

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
            .map(|d| d.core.out.device().to_string())
            .collect();
        tracing::error!(connector = %ctx.name, devices = ?names, error = %msg, retry_in = ?wait,
            "device task panicked; restarting it");
        let reason = format!("device task panicked: {msg}");
        for d in &mut line.devices {
            // Nothing serves the device until the line is rebuilt.
            d.core.set_offline(ctx, &reason, false).await;
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
