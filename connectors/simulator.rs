//! The simulator connector (`"protocol": "simulator"`): signals generated in-process.
//!
//! Each channel follows a signal (`sine`, `sawtooth`/`ramp`, `random_walk`, `counter`, `square`,
//! `bool`, `constant`) between `min` and `max` with a `period`; each device ticks at its own
//! `interval`. The connector kit (`connectors/device`) owns scheduling, requests, health and
//! writes; this file is only the signals. It serves demos, tests, and — with many devices and
//! channels at a short interval — as the load generator for benchmarks: every tick is one
//! batch, and when the sinks push back the next tick waits (counted as lag), so it runs exactly
//! as fast as the pipeline delivers.
//!
//! Devices share lines (tasks) of the kit, up to [`DEVICES_PER_LINE`] each, as the devices
//! behind one Modbus connection do: a line polls its due devices in turn and serves their
//! requests (`device.read`, `device.write`) and enable/disable between polls. A simulated
//! device is a generator that only computes, a few microseconds per poll, so a device waits
//! no time worth mentioning for its line mates; what sharing saves is a task, a request queue
//! and a batch in flight per device (BENCHMARKS.md, "Memory scaling"). When the sinks push
//! back, a device whose batch waits for room holds up the rest of its line, which is then
//! late (and counts lag) as it would be on lines of its own. A panic in a generator would
//! take its line mates offline with it until the line is rebuilt.

use std::f64::consts::TAU;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::device::{self, Fault, Line, Poll, Poller, Schedule, ValueKind, WriteError, WriteSpec};
use super::{ConnectorContext, ConnectorError, Running};
use crate::config::{ChannelSpec, ConfigError, ConnectorSpec, Dur};
use crate::reading::{Timestamp, Value};

/// A parsed simulator connector.
pub type SimulatorConfig = ConnectorSpec<SimulatorSettings, SimulatorDevice, SimulatorChannel>;

/// Connector-level settings (none yet).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorSettings {}

/// Device settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorDevice {
    /// Time between two readings of every channel (default `1s`, at least `1ms`).
    #[serde(default = "default_interval")]
    pub interval: Dur,
}

fn default_interval() -> Dur {
    Dur::from_secs(1)
}

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

/// A number that may be left out, in the 8 bytes of an `f64` (`Option<f64>` takes 16): NaN,
/// which JSON cannot carry, stands for "not set".
#[derive(Clone, Copy, Deserialize)]
#[serde(from = "Option<f64>")]
pub struct OptF64(f64);

impl OptF64 {
    /// Not set.
    pub const NONE: OptF64 = OptF64(f64::NAN);

    /// The number, if set.
    pub fn get(self) -> Option<f64> {
        (!self.0.is_nan()).then_some(self.0)
    }
}

impl Default for OptF64 {
    fn default() -> Self {
        Self::NONE
    }
}

impl From<Option<f64>> for OptF64 {
    fn from(v: Option<f64>) -> Self {
        v.map_or(Self::NONE, OptF64)
    }
}

impl PartialEq for OptF64 {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl std::fmt::Debug for OptF64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
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

/// Semantic checks of a simulator connector.
pub fn validate(spec: &SimulatorConfig, path: &str, errs: &mut Vec<ConfigError>) {
    for (di, d) in spec.devices.iter().enumerate() {
        let dpath = format!("{path}.devices[{di}]");
        if d.settings.interval.0 < Duration::from_millis(1) {
            errs.push(ConfigError::new(
                format!("{dpath}.interval"),
                format!("must be at least 1ms, got {}", d.settings.interval),
            ));
        }
        for (ci, c) in d.channels.iter().enumerate() {
            let cpath = format!("{dpath}.channels[{ci}]");
            let s = &c.settings;
            if let (Some(lo), Some(hi)) = (s.min.get(), s.max.get()) {
                if lo >= hi || lo.is_nan() || hi.is_nan() {
                    errs.push(ConfigError::new(
                        format!("{cpath}.max"),
                        format!("must be greater than min ({lo}), got {hi}"),
                    ));
                }
            }
            if let Some(p) = s.period.get() {
                if p <= 0.0 {
                    errs.push(ConfigError::new(
                        format!("{cpath}.period"),
                        "must be greater than 0",
                    ));
                }
            }
            match (s.signal, &s.value) {
                (Signal::Constant, None) => errs.push(ConfigError::new(
                    format!("{cpath}.value"),
                    "missing: a constant signal needs a value",
                )),
                (Signal::Constant, Some(v)) if Value::from_json(v).is_none() => {
                    errs.push(ConfigError::new(
                        format!("{cpath}.value"),
                        format!("expected a number, bool or string, got {v}"),
                    ))
                }
                (Signal::Constant, Some(_)) => {}
                (_, Some(_)) => errs.push(ConfigError::new(
                    format!("{cpath}.value"),
                    "only a constant signal takes a value",
                )),
                _ => {}
            }
            if s.signal == Signal::Counter && s.min.get().is_some_and(|m| m < 0.0) {
                errs.push(ConfigError::new(
                    format!("{cpath}.min"),
                    "a counter starts at 0 or above",
                ));
            }
        }
    }
}

/// A channel's settings with their defaults filled in.
struct Shape {
    lo: f64,
    hi: f64,
    period: f64,
    step: f64,
}

impl Shape {
    fn of(s: &SimulatorChannel) -> Self {
        let lo = s.min.get().unwrap_or(0.0);
        let counter = s.signal == Signal::Counter;
        // A counter never wraps without a max; the other signals stay within [0, 100].
        let hi = s
            .max
            .get()
            .unwrap_or(if counter { f64::INFINITY } else { 100.0 });
        Shape {
            lo,
            hi,
            period: s.period.get().unwrap_or(60.0),
            step: match s.step.get() {
                Some(step) => step,
                None if counter => 1.0,
                None => (hi - lo) * 0.01,
            },
        }
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
        let moving: Vec<u64> = settings
            .into_iter()
            .enumerate()
            .map(|(ch, s)| {
                if let Some(v) = s.value.as_deref().and_then(Value::from_json) {
                    fixed.push((ch as u32, v));
                }
                let Shape { lo, hi, .. } = Shape::of(s);
                match s.signal {
                    Signal::Counter => {
                        stateful = true;
                        lo.max(0.0) as u64
                    }
                    Signal::RandomWalk => {
                        stateful = true;
                        ((lo + hi) / 2.0).to_bits()
                    }
                    _ => 0,
                }
            })
            .collect();
        let moving = if stateful {
            moving.into()
        } else {
            Box::default()
        };
        DeviceSignals {
            device,
            moving,
            fixed,
        }
    }

    /// Makes `raw` (checked by the kit against the channel's [`WriteSpec`]) the value of
    /// channel `ch`, with settings `s`, until the next write; returns it as stored.
    pub fn write(&mut self, ch: usize, s: &SimulatorChannel, raw: Value) -> Result<Value, String> {
        let value = match (s.signal, raw) {
            (Signal::Counter, v) => match v {
                Value::U64(u) => Value::U64(u),
                other => return Err(format!("expected an unsigned integer, got {other}")),
            },
            (Signal::Bool, Value::Bool(b)) => Value::Bool(b),
            (Signal::Bool, other) => return Err(format!("expected true or false, got {other}")),
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
        let Shape {
            lo,
            hi,
            period,
            step,
        } = Shape::of(s);
        let phase = (t / period).fract();
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
                *state = if (next as f64) > hi {
                    lo.max(0.0) as u64
                } else {
                    next
                };
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

/// How the simulator's `devices` are dealt to lines: `(lines, devices per line)`. Consecutive
/// devices share a line, at most [`DEVICES_PER_LINE`] on each, and there are at least as many
/// lines as `workers` (the runtime's worker threads, when there are that many devices) so that
/// generating load keeps every core busy.
fn line_split(devices: usize, workers: usize) -> (usize, usize) {
    if devices == 0 {
        return (0, 0);
    }
    let lines = devices
        .div_ceil(DEVICES_PER_LINE)
        .max(workers.clamp(1, devices));
    let per_line = devices.div_ceil(lines);
    (devices.div_ceil(per_line), per_line)
}

/// Checks what can be checked before the simulator runs (nothing can fail), and returns it
/// running: the devices on lines of up to [`DEVICES_PER_LINE`], each device on its own
/// interval.
pub fn build(spec: Arc<SimulatorConfig>, ctx: ConnectorContext) -> Result<Running, ConnectorError> {
    Ok(Box::pin(async move {
        let start = Instant::now();
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        let (lines, per_line) = line_split(spec.devices.len(), workers);
        device::run_lines(&ctx, lines, |l| {
            let mut line = Line::new(
                &ctx,
                Signals {
                    start,
                    spec: spec.clone(),
                },
            );
            let first = l * per_line;
            for (i, d) in spec.devices.iter().enumerate().skip(first).take(per_line) {
                let signals = DeviceSignals::new(i, d.channels.iter().map(|c| &c.settings));
                let schedule = Schedule::every(d.settings.interval.0, d.channels.len());
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
    let (lo, hi) = match s.signal {
        Signal::Constant | Signal::Counter => (s.min.get(), s.max.get()),
        _ => (
            Some(s.min.get().unwrap_or(0.0)),
            Some(s.max.get().unwrap_or(100.0)),
        ),
    };
    // min/max bound the signal, before the channel's scale/offset: the kit checks writes in
    // engineering units, so the bounds are scaled the same way.
    let t = c.transform();
    let eng = |v: f64| v * t.scale.unwrap_or(1.0) + t.offset.unwrap_or(0.0);
    let (lo, hi) = (lo.map(eng), hi.map(eng));
    let (lo, hi) = if t.scale.is_some_and(|s| s < 0.0) {
        (hi, lo)
    } else {
        (lo, hi)
    };
    Some(WriteSpec {
        kind,
        min: lo.filter(|_| numeric),
        max: hi.filter(|_| numeric),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(signal: Signal) -> SimulatorChannel {
        SimulatorChannel {
            signal,
            min: Some(10.0).into(),
            max: Some(20.0).into(),
            period: Some(10.0).into(),
            value: None,
            step: OptF64::NONE,
            writable: true,
        }
    }

    #[test]
    fn signals_stay_in_range_and_have_their_shape() {
        let run = |signal, times: &[f64]| -> Vec<Value> {
            let s = ch(signal);
            let mut g = DeviceSignals::new(0, [&s]);
            times.iter().map(|&t| g.next(0, &s, t)).collect()
        };
        assert_eq!(
            run(Signal::Sine, &[0.0, 2.5]),
            [Value::F64(15.0), Value::F64(20.0)]
        );
        assert_eq!(run(Signal::Sawtooth, &[5.0]), [Value::F64(15.0)]);
        assert_eq!(
            run(Signal::Square, &[1.0, 6.0]),
            [Value::F64(10.0), Value::F64(20.0)]
        );
        assert_eq!(run(Signal::Bool, &[6.0]), [Value::Bool(true)]);
        let times: Vec<f64> = (0..1000).map(f64::from).collect();
        let walk = run(Signal::RandomWalk, &times);
        assert!(
            walk.windows(2).any(|w| w[0] != w[1]),
            "the walk never moved"
        );
        for v in walk {
            let Value::F64(v) = v else { panic!() };
            assert!((10.0..=20.0).contains(&v));
        }
    }

    #[test]
    fn writes_replace_the_signal_within_its_range() {
        let (sine, saw) = (ch(Signal::Sine), ch(Signal::Sawtooth));
        let mut g = DeviceSignals::new(0, [&sine, &saw]);
        assert_eq!(g.write(1, &saw, Value::F64(12.5)), Ok(Value::F64(12.5)));
        assert_eq!(g.next(1, &saw, 3.0), Value::F64(12.5));
        assert_eq!(g.next(0, &sine, 0.0), Value::F64(15.0), "the other channel");
        assert_eq!(g.write(1, &saw, Value::F64(11.0)), Ok(Value::F64(11.0)));
        assert_eq!(g.next(1, &saw, 3.0), Value::F64(11.0));
        // A constant is a fixed value from the start, which a write replaces.
        let constant = SimulatorChannel {
            value: Some(Box::new(serde_json::json!("idle"))),
            ..ch(Signal::Constant)
        };
        let mut k = DeviceSignals::new(0, [&sine, &constant, &saw]);
        assert_eq!(k.next(1, &constant, 0.0), Value::Text("idle".into()));
        assert_eq!(k.next(2, &saw, 5.0), Value::F64(15.0));
        assert_eq!(k.write(2, &saw, Value::F64(19.0)), Ok(Value::F64(19.0)));
        assert_eq!(k.write(0, &sine, Value::F64(18.0)), Ok(Value::F64(18.0)));
        let now: Vec<Value> = [&sine, &constant, &saw]
            .into_iter()
            .enumerate()
            .map(|(c, s)| k.next(c, s, 5.0))
            .collect();
        assert_eq!(
            now,
            [
                Value::F64(18.0),
                Value::Text("idle".into()),
                Value::F64(19.0)
            ]
        );
        let spec = write_spec(&ChannelSpec {
            name: "c".into(),
            unit: None,
            transform: None,
            settings: ch(Signal::Sine),
        })
        .expect("writable");
        assert!(spec
            .to_raw(&serde_json::json!(25), None)
            .unwrap_err()
            .contains("outside"));
        assert!(spec.to_raw(&serde_json::json!("x"), None).is_err());
        let bool_ = ch(Signal::Bool);
        let mut b = DeviceSignals::new(0, [&bool_]);
        assert_eq!(b.write(0, &bool_, Value::Bool(true)), Ok(Value::Bool(true)));
        assert!(b.write(0, &bool_, Value::U64(1)).is_err());
    }

    #[test]
    fn devices_are_dealt_to_lines_of_at_most_a_hundred() {
        assert_eq!(line_split(0, 2), (0, 0));
        assert_eq!(line_split(1, 2), (1, 1));
        assert_eq!(line_split(3, 2), (2, 2));
        assert_eq!(line_split(10, 1), (1, 10));
        // At least one line per worker thread, so load generation uses every core.
        assert_eq!(line_split(50, 2), (2, 25));
        assert_eq!(line_split(1000, 2), (10, 100));
        assert_eq!(line_split(1001, 2), (11, 91));
        for (n, w) in [(1, 1), (7, 4), (99, 2), (101, 1), (1000, 16), (12345, 2)] {
            let (lines, per) = line_split(n, w);
            assert!(per <= DEVICES_PER_LINE, "{n} on {w}: {per} per line");
            assert!(
                (lines - 1) * per < n && n <= lines * per,
                "{n} on {w}: no line empty"
            );
        }
    }

    #[test]
    fn settings_left_out_are_none_and_periods_are_seconds() {
        let parse = |v| serde_json::from_value::<SimulatorChannel>(v).expect("valid");
        let s = parse(serde_json::json!({"signal": "sine", "min": -2, "period": "1m30s"}));
        assert_eq!(
            (s.min.get(), s.max.get(), s.period.get(), s.step.get()),
            (Some(-2.0), None, Some(90.0), None)
        );
        let s = parse(serde_json::json!({"signal": "ramp", "max": null, "period": "250ms"}));
        assert_eq!((s.max.get(), s.period.get()), (None, Some(0.25)));
        // Equal settings compare equal (a reload keeps the connector), unset ones included.
        assert_eq!(s, s.clone());
        assert_ne!(
            parse(serde_json::json!({"signal": "sine", "min": 0})),
            parse(serde_json::json!({"signal": "sine"}))
        );
        // A hundred thousand channels: the settings fit in 48 bytes.
        assert!(std::mem::size_of::<SimulatorChannel>() <= 48);
    }

    #[test]
    fn counter_counts_and_wraps() {
        let s = SimulatorChannel {
            min: Some(0.0).into(),
            max: Some(2.0).into(),
            ..ch(Signal::Counter)
        };
        let mut c = DeviceSignals::new(0, [&s]);
        let v: Vec<Value> = (0..4).map(|i| c.next(0, &s, i as f64)).collect();
        assert_eq!(
            v,
            vec![Value::U64(0), Value::U64(1), Value::U64(2), Value::U64(0)]
        );
        let s = SimulatorChannel {
            min: OptF64::NONE,
            max: OptF64::NONE,
            ..ch(Signal::Counter)
        };
        let mut c = DeviceSignals::new(0, [&s]);
        assert_eq!(c.next(0, &s, 0.0), Value::U64(0));
        assert_eq!(c.next(0, &s, 0.0), Value::U64(1));
    }
}
