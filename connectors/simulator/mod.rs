//! The simulator connector (`"protocol": "simulator"`): signals generated in-process.
//!
//! Each channel follows a signal (`sine`, `sawtooth`/`ramp`, `random_walk`, `counter`, `square`,
//! `bool`, `constant`) between `min` and `max` with a `period`; each device ticks at its own
//! `interval`. The connector kit owns scheduling, requests, health and writes; this file is only
//! the signals. It serves demos, tests and, with many devices at a short interval, as the load
//! generator of the benchmarks: a tick is one batch, and when the sinks push back the next tick
//! waits (counted as lag), so it runs exactly as fast as the pipeline delivers. Devices share
//! the kit's lines (tasks), [`DEVICES_PER_LINE`] each: a generator only computes, so sharing
//! costs a device no time and saves a task, a request queue and a batch in flight per device.

use std::f64::consts::TAU;
use std::sync::Arc;

use serde::Deserialize;
use tokio::time::Instant;

use super::device::{self, Fault, Line, Poll, Poller, Schedule, ValueKind, WriteError, WriteSpec};
use super::{ConnectorContext, ConnectorError, Running};
use osgate_core::config::timing::{IntervalRule, TimingRules};
use osgate_core::config::{ChannelSpec, ConfigError, ConnectorSpec, Dur, OptF64};
use osgate_core::reading::{Timestamp, Value};

/// A parsed simulator connector.
pub type SimulatorConfig = ConnectorSpec<SimulatorSettings, SimulatorDevice, SimulatorChannel>;

/// Connector-level settings (none yet).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorSettings {}

/// Device settings: none besides the shared `interval` ([`TIMING`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorDevice {}

/// The shared settings the simulator takes: each device's `interval`, the time between two
/// readings of every channel (default `1s`, at least `1ms`).
pub const TIMING: TimingRules = TimingRules {
    interval: Some(IntervalRule {
        default: Dur::from_secs(1),
        min: Dur::from_millis(1),
    }),
    ..TimingRules::NONE
};

/// Channel settings. Kept for as long as the connector runs, so they are compact: numbers
/// that may be left out are [`OptF64`]s (8 bytes, not 16), and a gateway may simulate a
/// hundred thousand channels.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorChannel {
    /// The signal shape.
    pub signal: Signal,
    /// Lower bound (default 0; for `counter`, the start value).
    #[serde(default)]
    pub min: OptF64,
    /// Upper bound (default 100; a `counter` wraps to `min` past it, and never wraps without it).
    #[serde(default)]
    pub max: OptF64,
    /// Cycle length of `sine`, `sawtooth`, `square`, `bool`, in seconds (written as a
    /// duration; default `60s`).
    #[serde(default, deserialize_with = "seconds")]
    pub period: OptF64,
    /// The value of a `constant` (number, bool or string). Boxed: only constants have one.
    #[serde(default)]
    pub value: Option<Box<serde_json::Value>>,
    /// Step of `counter` (default 1) and largest step of `random_walk` (default 1% of the range).
    #[serde(default)]
    pub step: OptF64,
    /// Accept writes (`device.write`, MQTT commands): the written value replaces the signal
    /// until the next write. Numbers must lie within `min`/`max` when they are set.
    #[serde(default)]
    pub writable: bool,
}

/// A duration (`"10s"`, `"500ms"`) as seconds.
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<OptF64, D::Error> {
    let period = Option::<Dur>::deserialize(d)?;
    Ok(period.map(|p| p.0.as_secs_f64()).into())
}

/// Signal shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// `min + (max-min)·(½ + ½·sin(2πt/period))`.
    Sine,
    /// Rises linearly from `min` to `max` every period, then jumps back.
    #[serde(alias = "ramp")]
    Sawtooth,
    /// Moves by a random step each tick, kept within `[min, max]`.
    RandomWalk,
    /// An unsigned integer that grows by `step` each tick.
    Counter,
    /// `min` for the first half of each period, `max` for the second.
    Square,
    /// `false` for the first half of each period, `true` for the second.
    Bool,
    /// Always `value`.
    Constant,
}

/// `"protocol": "simulator"` in the protocol registry.
pub const PROTOCOL: crate::Protocol = crate::Protocol {
    name: "simulator",
    parse: |p, entry| p.with_timing(TIMING).spec(entry, validate, build),
    tool: None,
};

/// Semantic checks of a simulator connector.
pub fn validate(spec: &SimulatorConfig, path: &str, errs: &mut Vec<ConfigError>) {
    for (di, d) in spec.devices.iter().enumerate() {
        for (ci, c) in d.channels.iter().enumerate() {
            let s = &c.settings;
            let mut err = |field: &str, msg: String| {
                let at = format!("{path}.devices[{di}].channels[{ci}].{field}");
                errs.push(ConfigError::new(at, msg));
            };
            if let (Some(lo), Some(hi)) = (s.min.get(), s.max.get()) {
                if lo >= hi || lo.is_nan() || hi.is_nan() {
                    err("max", format!("must be greater than min ({lo}), got {hi}"));
                }
            }
            if s.period.get().is_some_and(|p| p <= 0.0) {
                err("period", "must be greater than 0".into());
            }
            match (s.signal, s.value.as_deref()) {
                (Signal::Constant, None) => {
                    err("value", "missing: a constant signal needs a value".into())
                }
                (Signal::Constant, Some(v)) if Value::from_json(v).is_none() => {
                    err("value", format!("expected a number, bool or string, got {v}"))
                }
                (Signal::Constant, _) | (_, None) => {}
                (_, Some(_)) => err("value", "only a constant signal takes a value".into()),
            }
            if s.signal == Signal::Counter && s.min.get().is_some_and(|m| m < 0.0) {
                err("min", "a counter starts at 0 or above".into());
            }
        }
    }
}

/// A channel's settings with their defaults filled in.
#[derive(Clone, Copy)]
struct Shape {
    lo: f64,
    hi: f64,
    period: f64,
    step: f64,
}

impl Shape {
    fn of(s: &SimulatorChannel) -> Self {
        let (lo, counter) = (s.min.get().unwrap_or(0.0), s.signal == Signal::Counter);
        // A counter never wraps without a max; the other signals stay within [0, 100].
        let hi = (s.max.get()).unwrap_or(if counter { f64::INFINITY } else { 100.0 });
        let step = (s.step.get()).unwrap_or(if counter { 1.0 } else { (hi - lo) * 0.01 });
        let period = s.period.get().unwrap_or(60.0);
        Shape { lo, hi, period, step }
    }
}

/// The running state of one device's signals. Their settings stay in the config
/// ([`SimulatorChannel`], passed to every call): a gateway may simulate a hundred thousand
/// channels, and each keeps only what moves: 8 bytes for a counter or a random walk, none for
/// the signals that are functions of time.
#[derive(Debug, Clone)]
pub struct DeviceSignals {
    /// The device's index in the connector's config.
    device: usize,
    /// Per channel: a `counter`'s next value, or a `random_walk`'s position (the bits of an
    /// `f64`). The other signals are functions of time and keep nothing: a device with
    /// neither keeps an empty list.
    moving: Box<[u64]>,
    /// The channels whose value replaces the signal (a `constant`'s value, or the last one
    /// written), by channel index, in order: few channels have one.
    fixed: Vec<(u32, Value)>,
}

impl DeviceSignals {
    /// The signals of device `device` of the config, whose channels have `settings`.
    pub fn new<'a>(
        device: usize,
        settings: impl IntoIterator<Item = &'a SimulatorChannel>,
    ) -> Self {
        let (mut fixed, mut stateful) = (Vec::new(), false);
        let moving: Box<[u64]> = (settings.into_iter().enumerate())
            .map(|(ch, s)| {
                if let Some(v) = s.value.as_deref().and_then(Value::from_json) {
                    fixed.push((ch as u32, v));
                }
                let Shape { lo, hi, .. } = Shape::of(s);
                stateful |= matches!(s.signal, Signal::Counter | Signal::RandomWalk);
                match s.signal {
                    Signal::Counter => lo.max(0.0) as u64,
                    Signal::RandomWalk => ((lo + hi) / 2.0).to_bits(),
                    _ => 0,
                }
            })
            .collect();
        // A device whose signals are all functions of time keeps nothing.
        let moving = if stateful { moving } else { Box::default() };
        DeviceSignals { device, moving, fixed }
    }

    /// Makes `raw` (checked by the kit against the channel's [`WriteSpec`]) the value of
    /// channel `ch`, with settings `s`, until the next write; returns it as stored.
    pub fn write(&mut self, ch: usize, s: &SimulatorChannel, raw: Value) -> Result<Value, String> {
        let value = match (s.signal, raw) {
            (Signal::Counter, v @ Value::U64(_)) | (Signal::Bool, v @ Value::Bool(_)) => v,
            (Signal::Counter, v) => return Err(format!("expected an unsigned integer, got {v}")),
            (Signal::Bool, v) => return Err(format!("expected true or false, got {v}")),
            (_, v) => v,
        };
        let ch = ch as u32;
        match self.fixed.binary_search_by_key(&ch, |(c, _)| *c) {
            Ok(i) => self.fixed[i].1 = value.clone(),
            Err(i) => self.fixed.insert(i, (ch, value.clone())),
        }
        Ok(value)
    }

    /// The value of channel `ch`, with settings `s`, at `t` seconds after start (called once
    /// per tick).
    pub fn next(&mut self, ch: usize, s: &SimulatorChannel, t: f64) -> Value {
        if !self.fixed.is_empty() {
            if let Ok(i) = self.fixed.binary_search_by_key(&(ch as u32), |(c, _)| *c) {
                return self.fixed[i].1.clone();
            }
        }
        let shape = Shape::of(s);
        let (Shape { lo, hi, step, .. }, phase) = (shape, (t / shape.period).fract());
        match s.signal {
            Signal::Sine => Value::F64(lo + (hi - lo) * (0.5 + 0.5 * (TAU * phase).sin())),
            Signal::Sawtooth => Value::F64(lo + (hi - lo) * phase),
            Signal::Square => Value::F64(if phase < 0.5 { lo } else { hi }),
            Signal::Bool => Value::Bool(phase >= 0.5),
            Signal::RandomWalk => {
                let state = &mut self.moving[ch];
                let walk = f64::from_bits(*state) + (fastrand::f64() * 2.0 - 1.0) * step;
                let walk = walk.clamp(lo, hi);
                *state = walk.to_bits();
                Value::F64(walk)
            }
            Signal::Counter => {
                let state = &mut self.moving[ch];
                let v = *state;
                let next = v.saturating_add(step.max(1.0) as u64);
                let wrap = (next as f64) > hi;
                *state = if wrap { lo.max(0.0) as u64 } else { next };
                Value::U64(v)
            }
            // A constant has a fixed value (validated at load).
            Signal::Constant => Value::F64(f64::NAN),
        }
    }
}

/// Most devices one line (task) serves. A line's own cost (its task, its request queue, the
/// batch it may hold while the sinks push back) is then paid once per hundred devices, and at
/// most one batch per line waits for room in the sink queues at the top of a cycle.
pub const DEVICES_PER_LINE: usize = 100;

/// Checks what can be checked before the simulator runs (nothing can fail), and returns it
/// running: the devices on lines of up to [`DEVICES_PER_LINE`], each device on its own
/// interval.
pub fn build(spec: Arc<SimulatorConfig>, ctx: ConnectorContext) -> Result<Running, ConnectorError> {
    Ok(Box::pin(async move {
        let start = Instant::now();
        let (lines, per_line) = device::shared_lines(spec.devices.len(), DEVICES_PER_LINE);
        device::run_lines(&ctx, lines, |l| {
            let (first, own) = (l * per_line, spec.clone());
            let mut line = Line::new(&ctx, Signals { start, spec: own });
            for (i, d) in spec.devices.iter().enumerate().skip(first).take(per_line) {
                let signals = DeviceSignals::new(i, d.channels.iter().map(|c| &c.settings));
                let schedule = Schedule::every(d.interval.0, d.channels.len());
                line.add(d, schedule, signals, write_spec);
            }
            line
        })
        .await;
        Ok(())
    }))
}

/// The simulator's half of the device runtime: the connector's config, and the clock the
/// signals follow.
struct Signals {
    start: Instant,
    spec: Arc<SimulatorConfig>,
}

impl Poller for Signals {
    type Device = DeviceSignals;

    async fn poll(&mut self, dev: &mut DeviceSignals, poll: &mut Poll<'_>) -> Result<(), Fault> {
        let ts = Timestamp::now();
        let t = self.start.elapsed().as_secs_f64();
        let channels = &self.spec.devices[dev.device].channels;
        for ch in poll.due_channels() {
            poll.push(ch, dev.next(ch, &channels[ch].settings, t), ts);
        }
        Ok(())
    }

    async fn write(
        &mut self,
        dev: &mut DeviceSignals,
        ch: usize,
        raw: Value,
    ) -> Result<Value, WriteError> {
        let s = &self.spec.devices[dev.device].channels[ch].settings;
        dev.write(ch, s, raw).map_err(WriteError::Invalid)
    }
}

/// What a write to a `writable` channel may be: the signal's type, within `min`/`max` (both
/// in engineering units, after the channel's `scale`/`offset`).
fn write_spec(c: &ChannelSpec<SimulatorChannel>) -> Option<WriteSpec> {
    let s = &c.settings;
    if !s.writable {
        return None;
    }
    let kind = match (s.signal, s.value.as_deref().and_then(Value::from_json)) {
        (Signal::Bool, _) | (Signal::Constant, Some(Value::Bool(_))) => ValueKind::Bool,
        (Signal::Constant, Some(Value::Text(_))) => ValueKind::Text,
        (Signal::Counter, _) => ValueKind::unsigned(64),
        _ => ValueKind::Float,
    };
    let numeric = !matches!(kind, ValueKind::Bool | ValueKind::Text);
    let (lo, hi) = match (s.signal, Shape::of(s)) {
        (Signal::Constant | Signal::Counter, _) => (s.min.get(), s.max.get()),
        (_, shape) => (Some(shape.lo), Some(shape.hi)),
    };
    // min/max bound the signal before the channel's scale/offset, and the kit checks writes
    // in engineering units: the bounds are scaled the same way.
    let t = c.transform();
    let eng = |v: Option<f64>| v.map(|v| v * t.scale.unwrap_or(1.0) + t.offset.unwrap_or(0.0));
    let (mut min, mut max) = (eng(lo).filter(|_| numeric), eng(hi).filter(|_| numeric));
    if t.scale.is_some_and(|s| s < 0.0) {
        std::mem::swap(&mut min, &mut max);
    }
    Some(WriteSpec { kind, min, max })
}

#[cfg(test)]
mod tests;
