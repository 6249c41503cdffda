//! The simulator connector (`"protocol": "simulator"`): signals generated in-process.
//!
//! Each channel follows a signal (`sine`, `sawtooth`/`ramp`, `random_walk`, `counter`, `square`,
//! `bool`, `constant`) between `min` and `max` with a `period`; each device ticks at its own
//! `interval` in its own task (a line of one device of the connector kit, `connectors/device`,
//! which owns scheduling, requests, health and writes: this file is only the signals). It serves demos, tests, and — with many devices and channels at a
//! short interval — as the load generator for benchmarks: every tick is one batch, and when the
//! sinks push back the next tick waits (counted as lag), so it runs exactly as fast as the
//! pipeline delivers.

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

/// Channel settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorChannel {
    /// The signal shape.
    pub signal: Signal,
    /// Lower bound (default 0; for `counter`, the start value).
    #[serde(default)]
    pub min: Option<f64>,
    /// Upper bound (default 100; a `counter` wraps to `min` past it, and never wraps without it).
    #[serde(default)]
    pub max: Option<f64>,
    /// Cycle length of `sine`, `sawtooth`, `square`, `bool` (default `60s`).
    #[serde(default)]
    pub period: Option<Dur>,
    /// The value of a `constant` (number, bool or string). Boxed: only constants have one.
    #[serde(default)]
    pub value: Option<Box<serde_json::Value>>,
    /// Step of `counter` (default 1) and largest step of `random_walk` (default 1% of the range).
    #[serde(default)]
    pub step: Option<f64>,
    /// Accept writes (`device.write`, MQTT commands): the written value replaces the signal
    /// until the next write. Numbers must lie within `min`/`max` when they are set.
    #[serde(default)]
    pub writable: bool,
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
            if let (Some(lo), Some(hi)) = (s.min, s.max) {
                if lo >= hi || lo.is_nan() || hi.is_nan() {
                    errs.push(ConfigError::new(
                        format!("{cpath}.max"),
                        format!("must be greater than min ({lo}), got {hi}"),
                    ));
                }
            }
            if let Some(p) = s.period {
                if p.0.is_zero() {
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
            if s.signal == Signal::Counter && s.min.is_some_and(|m| m < 0.0) {
                errs.push(ConfigError::new(
                    format!("{cpath}.min"),
                    "a counter starts at 0 or above",
                ));
            }
        }
    }
}

/// The running state of one channel's signal.
#[derive(Debug, Clone)]
pub struct Generator {
    signal: Signal,
    lo: f64,
    hi: f64,
    period: f64,
    step: f64,
    walk: f64,
    count: u64,
    /// The value that replaces the signal: a `constant`'s value, or the last one written.
    fixed: Option<Value>,
}

impl Generator {
    /// A generator for a channel's settings.
    pub fn new(s: &SimulatorChannel) -> Self {
        let lo = s.min.unwrap_or(0.0);
        let hi = s.max.unwrap_or(100.0);
        let step = match s.signal {
            Signal::Counter => s.step.unwrap_or(1.0),
            _ => s.step.unwrap_or((hi - lo) * 0.01),
        };
        Generator {
            signal: s.signal,
            lo,
            hi: if s.signal == Signal::Counter {
                s.max.unwrap_or(f64::INFINITY)
            } else {
                hi
            },
            period: s.period.map_or(60.0, |p| p.0.as_secs_f64()),
            step,
            walk: (lo + hi) / 2.0,
            count: lo.max(0.0) as u64,
            fixed: s.value.as_deref().and_then(Value::from_json),
        }
    }

    /// Makes `raw` (checked by the kit against the channel's [`WriteSpec`]) the channel's
    /// value until the next write; returns it as stored.
    pub fn write(&mut self, raw: Value) -> Result<Value, String> {
        let value = match (self.signal, raw) {
            (Signal::Counter, v) => match v {
                Value::U64(u) => Value::U64(u),
                other => return Err(format!("expected an unsigned integer, got {other}")),
            },
            (Signal::Bool, Value::Bool(b)) => Value::Bool(b),
            (Signal::Bool, other) => return Err(format!("expected true or false, got {other}")),
            (_, v) => v,
        };
        self.fixed = Some(value.clone());
        Ok(value)
    }

    /// The value at `t` seconds after start (called once per tick).
    pub fn next(&mut self, t: f64) -> Value {
        if let Some(v) = &self.fixed {
            return v.clone();
        }
        let phase = (t / self.period).fract();
        match self.signal {
            Signal::Sine => {
                Value::F64(self.lo + (self.hi - self.lo) * (0.5 + 0.5 * (TAU * phase).sin()))
            }
            Signal::Sawtooth => Value::F64(self.lo + (self.hi - self.lo) * phase),
            Signal::Square => Value::F64(if phase < 0.5 { self.lo } else { self.hi }),
            Signal::Bool => Value::Bool(phase >= 0.5),
            Signal::RandomWalk => {
                self.walk += (fastrand::f64() * 2.0 - 1.0) * self.step;
                self.walk = self.walk.clamp(self.lo, self.hi);
                Value::F64(self.walk)
            }
            Signal::Counter => {
                let v = self.count;
                let next = self.count.saturating_add(self.step.max(1.0) as u64);
                self.count = if (next as f64) > self.hi {
                    self.lo.max(0.0) as u64
                } else {
                    next
                };
                Value::U64(v)
            }
            // A constant has `fixed` (validated at load).
            Signal::Constant => Value::F64(f64::NAN),
        }
    }
}

/// Checks what can be checked before the simulator runs (nothing can fail), and returns it
/// running: one line (task) per device, each on its own interval.
pub fn build(spec: Arc<SimulatorConfig>, ctx: ConnectorContext) -> Result<Running, ConnectorError> {
    Ok(Box::pin(async move {
        let start = Instant::now();
        device::run_lines(&ctx, spec.devices.len(), |i| {
            let d = &spec.devices[i];
            let gens = d
                .channels
                .iter()
                .map(|c| Generator::new(&c.settings))
                .collect();
            let mut line = Line::new(&ctx, Signals { start });
            let schedule = Schedule::every(d.settings.interval.0, d.channels.len());
            line.add(d, schedule, gens, write_spec);
            line
        })
        .await;
        Ok(())
    }))
}

/// The simulator's half of the device runtime: the generators of a device's channels.
struct Signals {
    start: Instant,
}

impl Poller for Signals {
    type Device = Vec<Generator>;

    async fn poll(&mut self, gens: &mut Vec<Generator>, poll: &mut Poll<'_>) -> Result<(), Fault> {
        let ts = Timestamp::now();
        let t = self.start.elapsed().as_secs_f64();
        for ch in poll.due_channels() {
            poll.push(ch, gens[ch].next(t), ts);
        }
        Ok(())
    }

    async fn write(
        &mut self,
        gens: &mut Vec<Generator>,
        ch: usize,
        raw: Value,
    ) -> Result<Value, WriteError> {
        gens[ch].write(raw).map_err(WriteError::Invalid)
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
        Signal::Constant | Signal::Counter => (s.min, s.max),
        _ => (Some(s.min.unwrap_or(0.0)), Some(s.max.unwrap_or(100.0))),
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
            min: Some(10.0),
            max: Some(20.0),
            period: Some(Dur::from_secs(10)),
            value: None,
            step: None,
            writable: true,
        }
    }

    #[test]
    fn signals_stay_in_range_and_have_their_shape() {
        let mut sine = Generator::new(&ch(Signal::Sine));
        assert_eq!(sine.next(0.0), Value::F64(15.0));
        assert_eq!(sine.next(2.5), Value::F64(20.0));
        let mut saw = Generator::new(&ch(Signal::Sawtooth));
        assert_eq!(saw.next(5.0), Value::F64(15.0));
        let mut sq = Generator::new(&ch(Signal::Square));
        assert_eq!(sq.next(1.0), Value::F64(10.0));
        assert_eq!(sq.next(6.0), Value::F64(20.0));
        let mut b = Generator::new(&ch(Signal::Bool));
        assert_eq!(b.next(6.0), Value::Bool(true));
        let mut w = Generator::new(&ch(Signal::RandomWalk));
        for i in 0..1000 {
            let Value::F64(v) = w.next(i as f64) else {
                panic!()
            };
            assert!((10.0..=20.0).contains(&v));
        }
    }

    #[test]
    fn writes_replace_the_signal_within_its_range() {
        let mut g = Generator::new(&ch(Signal::Sine));
        assert_eq!(g.write(Value::F64(12.5)), Ok(Value::F64(12.5)));
        assert_eq!(g.next(3.0), Value::F64(12.5));
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
        let mut b = Generator::new(&ch(Signal::Bool));
        assert_eq!(b.write(Value::Bool(true)), Ok(Value::Bool(true)));
        assert!(b.write(Value::U64(1)).is_err());
    }

    #[test]
    fn counter_counts_and_wraps() {
        let mut c = Generator::new(&SimulatorChannel {
            min: Some(0.0),
            max: Some(2.0),
            ..ch(Signal::Counter)
        });
        let v: Vec<Value> = (0..4).map(|i| c.next(i as f64)).collect();
        assert_eq!(
            v,
            vec![Value::U64(0), Value::U64(1), Value::U64(2), Value::U64(0)]
        );
        let mut c = Generator::new(&SimulatorChannel {
            min: None,
            max: None,
            ..ch(Signal::Counter)
        });
        assert_eq!(c.next(0.0), Value::U64(0));
        assert_eq!(c.next(0.0), Value::U64(1));
    }
}
