//! The simulator connector (`"protocol": "simulator"`): signals generated in-process.
//!
//! Each channel follows a signal (`sine`, `sawtooth`/`ramp`, `random_walk`, `counter`, `square`,
//! `bool`, `constant`) between `min` and `max` with a `period`; each device ticks at its own
//! `interval` in its own task. It serves demos, tests, and — with many devices and channels at a
//! short interval — as the load generator for benchmarks: every tick is one batch, and when the
//! sinks push back the next tick waits (counted as lag), so it runs exactly as fast as the
//! pipeline delivers.

use std::f64::consts::TAU;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde::Deserialize;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::{ConnectorContext, ConnectorError};
use crate::config::{ConfigError, ConnectorSpec, DeviceSpec, Dur};
use crate::control::{DeviceError, DeviceRequest};
use crate::pipeline::DeviceOutput;
use crate::reading::{Quality, Timestamp, Value};

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
    /// The value of a `constant` (number, bool or string).
    #[serde(default)]
    pub value: Option<serde_json::Value>,
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
    constant: Option<Value>,
    written: Option<Value>,
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
            constant: s.value.as_ref().and_then(Value::from_json),
            written: None,
        }
    }

    /// Checks a value written to the channel and makes it the channel's value; returns the value
    /// as stored.
    pub fn write(&mut self, v: &serde_json::Value) -> Result<Value, String> {
        let value = Value::from_json(v)
            .ok_or_else(|| format!("expected a number, bool or string, got {v}"))?;
        let value = match (self.signal, value) {
            (Signal::Bool, Value::Bool(b)) => Value::Bool(b),
            (Signal::Bool, other) => return Err(format!("expected true or false, got {other}")),
            (Signal::Counter, Value::U64(u)) if (u as f64) >= self.lo && (u as f64) <= self.hi => {
                Value::U64(u)
            }
            (Signal::Counter, other) => {
                return Err(format!(
                    "expected an unsigned integer in [{}, {}], got {other}",
                    self.lo, self.hi
                ))
            }
            (Signal::Constant, v) => match (&self.constant, &v) {
                (Some(Value::Text(_)), Value::Text(_)) | (Some(Value::Bool(_)), Value::Bool(_)) => {
                    v
                }
                (Some(Value::Text(_) | Value::Bool(_)), _)
                | (_, Value::Text(_) | Value::Bool(_)) => {
                    return Err(format!("expected the constant's type, got {v}"))
                }
                _ => v,
            },
            (_, v) => match v {
                Value::Bool(_) | Value::Text(_) => {
                    return Err(format!("expected a number, got {v}"))
                }
                _ => {
                    let x = v.as_f64().unwrap_or(f64::NAN);
                    if !(x >= self.lo && x <= self.hi) {
                        return Err(format!("{x} is outside [{}, {}]", self.lo, self.hi));
                    }
                    Value::F64(x)
                }
            },
        };
        self.written = Some(value.clone());
        Ok(value)
    }

    /// The value at `t` seconds after start (called once per tick).
    pub fn next(&mut self, t: f64) -> Value {
        if let Some(v) = &self.written {
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
            Signal::Constant => self.constant.clone().unwrap_or(Value::F64(f64::NAN)),
        }
    }
}

/// Runs the simulator: one task per device, until `ctx.shutdown` is cancelled.
pub async fn run(spec: &SimulatorConfig, ctx: ConnectorContext) -> Result<(), ConnectorError> {
    let mut tasks = JoinSet::new();
    for device in &spec.devices {
        tasks.spawn(run_device(device.clone(), ctx.clone()));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn run_device(device: DeviceSpec<SimulatorDevice, SimulatorChannel>, ctx: ConnectorContext) {
    let mut out = ctx.device_output(&device);
    let mut control = ctx.register_device(&device);
    let token = ctx.shutdown.clone();
    let mut gens: Vec<Generator> = device
        .channels
        .iter()
        .map(|c| Generator::new(&c.settings))
        .collect();
    let interval = device.settings.interval.0;
    let start = Instant::now();
    'enabled: loop {
        // Disabled: not running, requests refused, until enabled again or stopped.
        while !control.is_enabled() {
            out.set_status(|s| {
                s.running = false;
                s.enabled = false;
            })
            .await;
            tokio::select! {
                biased;
                _ = token.cancelled() => return,
                r = control.enabled.changed() => if r.is_err() { token.cancelled().await; return },
                Some(req) = control.requests.recv() => req.fail(DeviceError::Disabled(device.name.to_string())),
            }
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        out.set_status(|s| {
            s.running = true;
            s.online = true;
            s.enabled = true;
            s.last_ok = Some(Timestamp::now());
        })
        .await;
        loop {
            let scheduled = tokio::select! {
                biased;
                _ = token.cancelled() => break 'enabled,
                _ = control.enabled.changed() => continue 'enabled,
                Some(req) = control.requests.recv() => {
                    handle_request(req, &device, &mut gens, &out, start);
                    continue;
                }
                at = tick.tick() => at,
            };
            if scheduled.elapsed() > interval {
                ctx.health.counters.lagged.fetch_add(1, Relaxed);
            }
            let ts = Timestamp::now();
            let t = start.elapsed().as_secs_f64();
            for (i, g) in gens.iter_mut().enumerate() {
                out.push(i, g.next(t), ts);
            }
            tokio::select! {
                biased;
                _ = token.cancelled() => break 'enabled,
                _ = out.flush() => {}
            }
        }
    }
    // Best effort: a full queue at shutdown must not hold the stop up.
    let _ = tokio::time::timeout(
        Duration::from_millis(200),
        out.set_status(|s| s.running = false),
    )
    .await;
}

fn handle_request(
    req: DeviceRequest,
    device: &DeviceSpec<SimulatorDevice, SimulatorChannel>,
    gens: &mut [Generator],
    out: &DeviceOutput,
    start: Instant,
) {
    match req {
        DeviceRequest::Read { reply } => {
            let ts = Timestamp::now();
            let t = start.elapsed().as_secs_f64();
            let readings = gens
                .iter_mut()
                .enumerate()
                .filter_map(|(i, g)| out.convert(i, g.next(t), ts, Quality::Good))
                .collect();
            let _ = reply.send(Ok(readings));
        }
        DeviceRequest::Write {
            channel,
            value,
            reply,
        } => {
            let res = match device.channels.iter().position(|c| *c.name == *channel) {
                None => Err(DeviceError::UnknownChannel {
                    device: device.name.to_string(),
                    channel,
                }),
                Some(i) if !device.channels[i].settings.writable => {
                    Err(DeviceError::NotWritable(channel))
                }
                Some(i) => gens[i]
                    .write(&value)
                    .map(|v| v.to_json())
                    .map_err(|reason| DeviceError::OutOfRange { channel, reason }),
            };
            let _ = reply.send(res);
        }
    }
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
        assert_eq!(g.write(&serde_json::json!(12.5)), Ok(Value::F64(12.5)));
        assert_eq!(g.next(3.0), Value::F64(12.5));
        assert!(g
            .write(&serde_json::json!(25))
            .unwrap_err()
            .contains("outside"));
        assert!(g.write(&serde_json::json!("x")).is_err());
        let mut b = Generator::new(&ch(Signal::Bool));
        assert_eq!(b.write(&serde_json::json!(true)), Ok(Value::Bool(true)));
        assert!(b.write(&serde_json::json!(1)).is_err());
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
