//! What the runtime keeps of every device, polled or listening: its output (transforms, batch,
//! status), its enabled flag, its writable channels, and its health. [`super::Line`] and
//! [`super::listener::ListenerLine`] both hold a [`Core`] per device, so enable/disable, write
//! checks, health verdicts and the one log line per transition are written once.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::write::{self, WriteSpec};
use super::Fault;
use crate::ConnectorContext;
use osgate_core::config::{ChannelSpec, DeviceSpec};
use osgate_core::control::{DeviceError, EnabledFlag, Inbox};
use osgate_core::pipeline::DeviceOutput;
use osgate_core::reading::{Timestamp, Value};
use osgate_core::status::Health;

/// Why a protocol could not write a value; the runtime names the device and channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// The value does not fit what the device takes (after the kit's own checks).
    Invalid(String),
    /// The device answered and refused it (the message says so).
    Refused(String),
    /// The device did not answer.
    Offline(String),
}

/// Good and bad channels of one poll or one message.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub good: u32,
    pub bad: u32,
    first_bad: Option<Arc<str>>,
}

impl Tally {
    pub fn bad(&mut self, reason: &Arc<str>) {
        self.bad += 1;
        if self.first_bad.is_none() {
            self.first_bad = Some(reason.clone());
        }
    }

    /// The health this outcome means: `fault` (no answer at all) or every channel bad →
    /// offline, some bad → degraded, else online; with the reason and the kind of failure.
    pub fn verdict(&self, fault: Option<&Fault>) -> Verdict {
        let (health, reason, kind) = match fault {
            Some(f) => (Health::Offline, Some(f.message.clone()), f.kind),
            None if self.bad == 0 => (Health::Online, None, ""),
            None => {
                let reason = self.first_bad.as_deref().unwrap_or("read failed");
                if self.good == 0 {
                    (Health::Offline, Some(reason.to_string()), "channels")
                } else {
                    let n = self.bad + self.good;
                    let msg = format!("{} of {n} channels failed: {reason}", self.bad);
                    (Health::Degraded, Some(msg), "channels")
                }
            }
        };
        Verdict {
            health,
            reason,
            kind,
            good: self.good,
            bad: self.bad,
        }
    }
}

/// A device's health after one outcome.
pub(super) struct Verdict {
    pub health: Health,
    reason: Option<String>,
    kind: &'static str,
    good: u32,
    bad: u32,
}

/// The per-device part every line keeps.
pub(super) struct Core {
    pub out: DeviceOutput,
    enabled: EnabledFlag,
    /// The enabled state in force (the flag may have changed since).
    pub on: bool,
    writes: Vec<(u32, WriteSpec)>,
    /// The kind of the last failure, so a new message of the same kind is not logged again.
    fault_kind: &'static str,
}

impl Core {
    /// A device of `ctx`'s connector, served by the task reading `inbox` as its `index`:
    /// registered for run-time control, its writable channels given by `writes`.
    pub fn new<D, C>(
        ctx: &ConnectorContext,
        spec: &DeviceSpec<D, C>,
        inbox: &Inbox,
        index: usize,
        writes: impl Fn(&ChannelSpec<C>) -> Option<WriteSpec>,
    ) -> Self {
        let enabled = ctx
            .control
            .register(&ctx.name, &spec.name, spec.enabled, inbox, index);
        Core {
            out: ctx.device_output(spec),
            enabled,
            on: false,
            writes: spec
                .channels
                .iter()
                .enumerate()
                .filter_map(|(i, c)| writes(c).map(|w| (i as u32, w)))
                .collect(),
            fault_kind: "",
        }
    }

    /// Replaces the write spec of channel `ch` (`None`: not writable).
    pub fn set_write(&mut self, ch: usize, spec: Option<WriteSpec>) {
        self.writes.retain(|(c, _)| *c as usize != ch);
        if let Some(w) = spec {
            self.writes.push((ch as u32, w));
        }
    }

    /// Applies the enabled flag if it changed (config at start, run-time overrides later);
    /// returns the new state when it did.
    pub async fn apply_enabled(&mut self) -> Option<bool> {
        let on = self.enabled.load(Relaxed);
        if on == self.on && self.out.status().running == on {
            return None;
        }
        self.on = on;
        self.out
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
        Some(on)
    }

    /// The enabled flag as it is now (config, then run-time overrides), before
    /// [`Core::apply_enabled`] puts it in force.
    pub fn enabled_now(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    /// Fails a request while the device is disabled.
    pub fn check_enabled(&self) -> Result<(), DeviceError> {
        if self.on {
            Ok(())
        } else {
            Err(DeviceError::Disabled(self.out.device().to_string()))
        }
    }

    /// Checks a write of `value` (engineering units) to `channel`: known, writable, of the
    /// channel's type and range. Returns the channel's index and the raw value to send.
    pub fn prepare_write(
        &self,
        channel: &str,
        value: &serde_json::Value,
    ) -> Result<(usize, Value), DeviceError> {
        self.check_enabled()?;
        let ch = self
            .out
            .channel_index(channel)
            .ok_or_else(|| DeviceError::UnknownChannel {
                device: self.out.device().to_string(),
                channel: channel.to_string(),
            })?;
        let spec = self
            .writes
            .iter()
            .find(|(c, _)| *c as usize == ch)
            .map(|(_, w)| *w)
            .ok_or_else(|| DeviceError::NotWritable(channel.to_string()))?;
        let raw = spec
            .to_raw(value, self.out.linear(ch))
            .map_err(|e| write::out_of_range(channel, e))?;
        Ok((ch, raw))
    }

    /// The answer to a write of channel `ch` that the protocol carried out: the value the
    /// device took, in engineering units, or the error in operator terms.
    pub fn write_done(
        &self,
        ctx: &ConnectorContext,
        ch: usize,
        channel: &str,
        took: Result<Value, WriteError>,
    ) -> Result<serde_json::Value, DeviceError> {
        let device = self.out.device();
        let raw = took.map_err(|e| match e {
            WriteError::Invalid(reason) => write::out_of_range(channel, reason),
            WriteError::Refused(m) => DeviceError::Failed(m),
            WriteError::Offline(m) => DeviceError::Offline(device.to_string(), m),
        })?;
        let written = write::to_engineering(raw, self.out.linear(ch));
        tracing::info!(connector = %ctx.name, device = %device, channel = %channel,
            value = %written, "write");
        Ok(written.to_json())
    }

    /// Records the health of one outcome: logs a transition once, counts a failure, and
    /// publishes the status when it changed. `retry_in` is the backoff of an offline poller.
    pub async fn record(&mut self, ctx: &ConnectorContext, v: Verdict, retry_in: Option<Duration>) {
        let before = self.out.status().health;
        let changed =
            before != v.health || (v.health == Health::Offline && self.fault_kind != v.kind);
        if changed {
            let (name, device) = (&ctx.name, self.out.device());
            let error = v.reason.as_deref().unwrap_or("");
            match v.health {
                Health::Offline => tracing::warn!(connector = %name, device = %device, error,
                    retry_in = ?retry_in.unwrap_or_default(), "device offline"),
                Health::Degraded => tracing::warn!(connector = %name, device = %device,
                    bad_channels = v.bad, error, "device degraded"),
                _ if before == Health::Unknown => {
                    tracing::debug!(connector = %name, device = %device, "device online")
                }
                _ => tracing::info!(connector = %name, device = %device, "device online again"),
            }
        }
        self.fault_kind = v.kind;
        if v.health != Health::Online {
            ctx.health.counters.errors.fetch_add(1, Relaxed);
        }
        let ts = Timestamp::now();
        self.out
            .set_status(|s| {
                s.running = true;
                s.online = v.health != Health::Offline;
                s.health = v.health;
                s.bad_channels = if v.health == Health::Degraded {
                    v.bad
                } else {
                    0
                };
                if v.good > 0 {
                    s.last_ok = Some(ts);
                }
                if v.health != Health::Online {
                    s.errors += 1;
                }
                s.last_error = v.reason;
            })
            .await;
    }

    /// Marks the device offline for a reason outside any poll (a lost connection, a task that
    /// panicked); `running` says whether a task still serves it. Counted; not logged here
    /// (the caller logs once for all its devices).
    pub async fn set_offline(&mut self, ctx: &ConnectorContext, reason: &str, running: bool) {
        if !self.enabled.load(Relaxed) {
            return;
        }
        ctx.health.counters.errors.fetch_add(1, Relaxed);
        self.fault_kind = "";
        let reason = reason.to_string();
        self.out
            .set_status(|s| {
                s.running = running;
                s.online = false;
                s.health = Health::Offline;
                s.bad_channels = 0;
                s.errors += 1;
                s.last_error = Some(reason);
            })
            .await;
    }
}
