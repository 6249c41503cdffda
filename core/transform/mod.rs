//! Per-channel transforms: scaling, expressions, rate, filters, deadband and report strategies.
//!
//! A [`Transform`] is built once per channel from its [`TransformConfig`] (the transform keys of
//! the channel's config object, see [`TRANSFORM_KEYS`]) and applied by
//! [`crate::pipeline::DeviceOutput::push`] to every reading before it enters the pipeline, so
//! every connector gets the same behaviour. Pure logic: no I/O, time is passed in.
//!
//! # Order of steps (fixed)
//!
//! 1. **Check**: a `NaN` or infinite value is marked bad (`"value is NaN or infinite"`).
//! 2. **`scale`, `offset`**: `value × scale + offset`.
//! 3. **`expr`**: the expression, with `x` = the value after step 2.
//! 4. **`rate`**: the change per `per` (default per second) against the previous reading.
//! 5. **`round`**: to `round` decimals.
//! 6. **`filter`**: `min`/`max` on the value as it would be published; out of range is dropped
//!    or marked bad (`action`).
//! 7. **Report**: `always`, `on_change` (with `deadband`, `heartbeat`) or `{"every": …}`
//!    decide whether the reading is sent now.
//!
//! Steps 2–6 are *numeric*: they need a number. A bool or text value on a channel with a numeric
//! step passes through unchanged with quality bad (`"bool or text value for a numeric
//! transform"`). Integer values (`u64` counters, `i64`) stay integers unless a step changes them
//! (`scale`, `offset`, `expr`, `rate` produce floats; `round` and `filter` keep an integer as it
//! is). The reading's timestamp is never changed; its quality is only ever made worse, and each
//! bad quality set here carries a reason.
//!
//! A reading that is already bad or stale (a failed read) keeps its quality and reason, is never
//! used as a deadband or rate reference, and counts as a change for `on_change` when its quality
//! differs from the last reported one: a consumer always learns that a channel went bad and that
//! it came back, even if the value itself did not move. Repeated readings with the same bad
//! quality and reason are one "no change" under `on_change`.
//!
//! Pollers call [`Transform::apply`] once per poll, so `every` and `heartbeat` are evaluated at
//! poll times (a heartbeat can be late by up to one poll interval). Connectors that are pushed
//! values (listeners) also call [`crate::pipeline::DeviceOutput::poll_timers`] at
//! [`crate::pipeline::DeviceOutput::next_timer`], which runs [`Transform::poll`].

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use exmex::prelude::*;
use tokio::time::Instant;

use crate::reading::{Quality, Reading, Value};

mod config;
pub use config::*;

/// What [`Transform::apply`] decided for a reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Publish this reading.
    Emit(Reading),
    /// Not reported (deadband, on_change, every, rate baseline): normal, not a loss.
    Suppressed,
    /// Dropped by a filter; counted.
    Filtered,
}

/// A compiled `expr` of the variable `x`.
#[derive(Debug, Clone)]
struct Expr(FlatEx<f64>);

impl Expr {
    fn compile(src: &str) -> Result<Expr, String> {
        let ex =
            exmex::parse::<f64>(src).map_err(|e| format!("invalid expression \"{src}\": {e}"))?;
        match ex.var_names() {
            [x] if x == "x" => {}
            [] => {
                return Err(format!(
                    "expression \"{src}\" does not use the value x, so every reading would be \
                     the same constant"
                ))
            }
            names => {
                let other: Vec<&str> = names
                    .iter()
                    .map(String::as_str)
                    .filter(|n| *n != "x")
                    .collect();
                return Err(format!(
                    "expression \"{src}\" uses unknown name(s) {}: the only variable is x \
                     (the value)",
                    other.join(", ")
                ));
            }
        }
        Ok(Expr(ex))
    }

    fn eval(&self, x: f64) -> f64 {
        // Only fails for a wrong number of variables, which compile() rules out.
        self.0.eval(&[x]).unwrap_or(f64::NAN)
    }
}

/// A number for the rate step: integers are kept exact (a u64 counter beyond 2^53).
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

#[derive(Debug, Clone)]
struct RateState {
    per_secs: f64,
    wrap: Option<f64>,
    prev: Option<(Num, i64)>,
}

impl RateState {
    /// The rate of `v` at `ts_ms` since the previous reading, or `None` (no previous reading,
    /// reset, no time passed). The caller then keeps `v` as the new baseline either way.
    fn rate(&self, v: Num, ts_ms: i64) -> Option<f64> {
        let (p, pts) = self.prev?;
        let dt_ms = ts_ms.checked_sub(pts)?;
        if dt_ms <= 0 {
            return None;
        }
        let mut delta = match (p, v) {
            (Num::Int(a), Num::Int(b)) => (b - a) as f64,
            _ => v.f() - p.f(),
        };
        if delta < 0.0 {
            let w = self.wrap?;
            let wrapped = w - p.f() + v.f();
            if !(p.f() < w && v.f() >= 0.0 && wrapped >= 0.0 && wrapped < w / 2.0) {
                return None;
            }
            delta = wrapped;
        }
        Some(delta * self.per_secs / (dt_ms as f64 / 1000.0))
    }
}

/// How readings are reported, compiled.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Always,
    OnChange {
        deadband: Option<Deadband>,
        heartbeat: Option<Duration>,
    },
    Every(Duration),
}

/// The last reported value, quality and when.
#[derive(Debug, Clone)]
struct Sent {
    value: Value,
    quality: Quality,
    at: Instant,
}

macro_rules! static_reason {
    ($name:ident, $text:expr) => {
        static $name: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from($text));
    };
}
static_reason!(NOT_FINITE, "value is NaN or infinite");
static_reason!(NON_NUMERIC, "bool or text value for a numeric transform");
static_reason!(RESULT_NOT_FINITE, "transform result is NaN or infinite");

/// What the value steps decided.
enum Step<'a> {
    Keep,
    /// No rate for this reading (baseline, reset).
    Suppress,
    /// Out of the filter's range, with `action: drop`; the reason is for explicit reads.
    Drop(&'a Arc<str>),
}

static_reason!(
    NO_RATE,
    "no rate: needs a previous reading (first reading or counter reset)"
);

/// Stores `r` in `slot`, reusing its allocation.
fn keep(slot: &mut Option<Box<Reading>>, r: Reading) {
    match slot {
        Some(b) => **b = r,
        None => *slot = Some(Box::new(r)),
    }
}

/// A channel's compiled transform with its state. A channel without transform keys (most
/// channels of a big device list) keeps no state at all: one null pointer.
#[derive(Debug, Clone)]
pub struct Transform(Option<Box<Compiled>>);

impl Transform {
    /// Compiles a transform. The first problem is returned as `(field, message)`.
    pub fn new(cfg: &TransformConfig) -> Result<Transform, (String, String)> {
        if cfg.is_identity() {
            return Ok(Transform(None));
        }
        Compiled::new(cfg).map(|c| Transform(Some(Box::new(c))))
    }

    /// Applies the transform to one reading; `now` is the monotonic time of the poll.
    pub fn apply(&mut self, mut reading: Reading, now: Instant) -> Outcome {
        match &mut self.0 {
            Some(c) => c.apply(reading, now),
            None => {
                mark_not_finite(&mut reading);
                Outcome::Emit(reading)
            }
        }
    }

    /// Timer hook for connectors that are pushed values rather than polling: returns the reading
    /// due at `now`, if any (the latest reading of an ended `every` period, or a heartbeat).
    pub fn poll(&mut self, now: Instant) -> Option<Reading> {
        self.0.as_mut()?.poll(now)
    }

    /// When [`Transform::poll`] next has something to do (`None`: nothing pending).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.0.as_ref()?.next_deadline()
    }

    /// The `(scale, offset)` of the linear step, if the transform has one. A write reverses
    /// it (`x = (y - offset) / scale`, see `connectors/device`) and applies it again to the
    /// value the device took; writable channels cannot have `expr` or `rate` (rejected at
    /// config load through [`TransformConfig::irreversible_key`]).
    pub fn linear(&self) -> Option<(f64, f64)> {
        self.0.as_ref()?.linear
    }

    /// The stateless value steps only (1–6 of the module docs), without report strategy and
    /// without changing any state: what an explicit read (`device.read`) returns. A `rate` is
    /// computed against the previous polled reading; where there is none, and where the filter
    /// would drop the value, the reading is returned with quality bad and the reason.
    pub fn convert(&self, mut reading: Reading) -> Reading {
        match &self.0 {
            Some(c) => c.convert(reading),
            None => {
                mark_not_finite(&mut reading);
                reading
            }
        }
    }
}

/// The compiled steps and state of a transform that does something.
#[derive(Debug, Clone)]
struct Compiled {
    numeric: bool,
    linear: Option<(f64, f64)>,
    /// Boxed: a compiled expression is large (kilobytes), most channels have none.
    expr: Option<Box<Expr>>,
    rate: Option<RateState>,
    round: Option<f64>,
    filter: Option<(FilterConfig, Arc<str>, Arc<str>)>,
    mode: Mode,
    /// Last reported value (on_change).
    last: Option<Sent>,
    /// The latest reading (on_change with heartbeat), sent by a timer heartbeat. Boxed, like
    /// `pending`: only some channels need it, and a gateway may run tens of thousands of
    /// channels; the box is reused, so storing a reading does not allocate.
    latest: Option<Box<Reading>>,
    /// The latest reading of the current period (every).
    pending: Option<Box<Reading>>,
    /// End of the current period (every).
    due: Option<Instant>,
}

impl Compiled {
    fn new(cfg: &TransformConfig) -> Result<Compiled, (String, String)> {
        if let Some(e) = cfg.validate().into_iter().next() {
            return Err(e);
        }
        let expr = match &cfg.expr {
            Some(src) => Some(Box::new(
                Expr::compile(src).map_err(|m| ("expr".to_string(), m))?,
            )),
            None => None,
        };
        let linear = (cfg.scale.is_some() || cfg.offset.is_some())
            .then(|| (cfg.scale.unwrap_or(1.0), cfg.offset.unwrap_or(0.0)));
        let filter = cfg.filter.map(|f| {
            let lo = f.min.map_or_else(String::new, |v| v.to_string());
            let hi = f.max.map_or_else(String::new, |v| v.to_string());
            (
                f,
                Arc::from(format!("value below filter min {lo}")),
                Arc::from(format!("value above filter max {hi}")),
            )
        });
        let mode = match cfg.effective_report() {
            Report::Always => Mode::Always,
            Report::OnChange => Mode::OnChange {
                deadband: cfg.deadband,
                heartbeat: cfg.heartbeat.map(|h| h.0),
            },
            Report::Every(p) => Mode::Every(p.0),
        };
        let numeric = linear.is_some()
            || expr.is_some()
            || cfg.rate.is_some()
            || cfg.round.is_some()
            || filter.is_some();
        Ok(Compiled {
            numeric,
            linear,
            expr,
            rate: cfg.rate.map(|r| RateState {
                per_secs: r.per.0.as_secs_f64(),
                wrap: r.wrap,
                prev: None,
            }),
            round: cfg.round.map(|d| 10f64.powi(d as i32)),
            filter,
            mode,
            last: None,
            latest: None,
            pending: None,
            due: None,
        })
    }

    fn apply(&mut self, mut reading: Reading, now: Instant) -> Outcome {
        if self.numeric {
            let (step, baseline) = self.value_steps(&mut reading);
            let step = match step {
                Step::Keep => None,
                Step::Suppress => Some(Outcome::Suppressed),
                Step::Drop(_) => Some(Outcome::Filtered),
            };
            if let (Some(rate), Some(b)) = (&mut self.rate, baseline) {
                rate.prev = Some(b);
            }
            if let Some(o) = step {
                return o;
            }
        } else {
            mark_not_finite(&mut reading);
        }
        match self.mode {
            Mode::Always => Outcome::Emit(reading),
            Mode::OnChange {
                deadband,
                heartbeat,
            } => {
                let send = match &self.last {
                    None => true,
                    Some(last) => {
                        changed(last, &reading, deadband)
                            || heartbeat.is_some_and(|h| now.duration_since(last.at) >= h)
                    }
                };
                if send {
                    self.last = Some(Sent {
                        value: reading.value.clone(),
                        quality: reading.quality.clone(),
                        at: now,
                    });
                    if heartbeat.is_some() {
                        keep(&mut self.latest, reading.clone());
                    }
                    Outcome::Emit(reading)
                } else {
                    if heartbeat.is_some() {
                        // Kept for a timer heartbeat; moving it here costs no more than
                        // dropping it, so the frequent suppressed path stays cheap.
                        keep(&mut self.latest, reading);
                    }
                    Outcome::Suppressed
                }
            }
            Mode::Every(period) => match self.due {
                Some(due) if now < due => {
                    keep(&mut self.pending, reading);
                    Outcome::Suppressed
                }
                _ => {
                    self.pending = None;
                    self.advance_due(now, period);
                    Outcome::Emit(reading)
                }
            },
        }
    }

    fn poll(&mut self, now: Instant) -> Option<Reading> {
        match self.mode {
            Mode::Always => None,
            Mode::OnChange {
                heartbeat: Some(h), ..
            } => {
                let last = self.last.as_mut()?;
                if now.duration_since(last.at) < h {
                    return None;
                }
                let r = Reading::clone(self.latest.as_deref()?);
                last.value = r.value.clone();
                last.quality = r.quality.clone();
                last.at = now;
                Some(r)
            }
            Mode::OnChange { .. } => None,
            Mode::Every(period) => {
                if self.due.is_some_and(|d| now >= d) {
                    let r = self.pending.take()?;
                    self.advance_due(now, period);
                    Some(*r)
                } else {
                    None
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        match self.mode {
            Mode::OnChange {
                heartbeat: Some(h), ..
            } if self.latest.is_some() => self.last.as_ref().map(|l| l.at + h),
            Mode::Every(_) if self.pending.is_some() => self.due,
            _ => None,
        }
    }

    /// Starts the next period: periods stay aligned to the first report, unless a whole period
    /// went by without a reading, then the next one starts now.
    fn advance_due(&mut self, now: Instant, period: Duration) {
        let next = match self.due {
            Some(d) => d + period,
            None => now + period,
        };
        self.due = Some(if next <= now { now + period } else { next });
    }

    fn convert(&self, mut reading: Reading) -> Reading {
        if !self.numeric {
            mark_not_finite(&mut reading);
            return reading;
        }
        match self.value_steps(&mut reading).0 {
            Step::Keep => {}
            Step::Suppress => {
                reading.value = Value::F64(f64::NAN);
                make_bad(&mut reading, &NO_RATE);
            }
            Step::Drop(why) => make_bad(&mut reading, why),
        }
        reading
    }

    /// Steps 1–6 (see the module docs) on one reading. Returns the decision and, with `rate`,
    /// the new rate baseline to keep (a good finite value and its time).
    fn value_steps(&self, r: &mut Reading) -> (Step<'_>, Option<(Num, i64)>) {
        let (x, int) = match r.value {
            Value::F64(v) => (v, None),
            Value::U64(v) => (v as f64, Some(v as i128)),
            Value::I64(v) => (v as f64, Some(v as i128)),
            Value::Bool(_) | Value::Text(_) => {
                make_bad(r, &NON_NUMERIC);
                return (Step::Keep, None);
            }
        };
        if !x.is_finite() {
            make_bad(r, &NOT_FINITE);
            return (Step::Keep, None);
        }
        let mut y = x;
        let mut changed = false;
        if let Some((s, o)) = self.linear {
            y = y * s + o;
            changed = true;
        }
        if let Some(e) = &self.expr {
            y = e.eval(y);
            changed = true;
        }
        let mut baseline = None;
        if let Some(rate) = &self.rate {
            if !r.quality.is_good() {
                // A bad or stale reading has no meaningful rate; it is not a baseline either.
                r.value = Value::F64(f64::NAN);
                return (Step::Keep, None);
            }
            if !y.is_finite() {
                r.value = Value::F64(y);
                make_bad(r, &RESULT_NOT_FINITE);
                return (Step::Keep, None);
            }
            let n = match int {
                Some(i) if !changed => Num::Int(i),
                _ => Num::Float(y),
            };
            baseline = Some((n, r.ts.0));
            match rate.rate(n, r.ts.0) {
                Some(v) => y = v,
                None => return (Step::Suppress, baseline),
            }
            changed = true;
        }
        if let Some(p) = self.round {
            if changed || int.is_none() {
                y = round_to(y, p);
                changed = true;
            }
        }
        if !y.is_finite() {
            r.value = Value::F64(y);
            make_bad(r, &RESULT_NOT_FINITE);
            return (Step::Keep, baseline);
        }
        if let Some((f, below, above)) = &self.filter {
            let out = if f.min.is_some_and(|lo| y < lo) {
                Some(below)
            } else if f.max.is_some_and(|hi| y > hi) {
                Some(above)
            } else {
                None
            };
            if let Some(why) = out {
                match f.action {
                    FilterAction::Drop => return (Step::Drop(why), baseline),
                    FilterAction::Bad => make_bad(r, why),
                }
            }
        }
        if changed {
            r.value = Value::F64(y);
        }
        (Step::Keep, baseline)
    }
}

/// Rounds `y` to the decimals given by `p = 10^decimals`. Values too large for the scaled
/// number to have a fraction are already as rounded as an f64 can be and are returned as is.
pub fn round_to(y: f64, p: f64) -> f64 {
    let s = y * p;
    if s.abs() >= 4.5e15 || !s.is_finite() {
        return y;
    }
    s.round() / p
}

/// Marks a good reading bad (a reading already bad or stale keeps its own reason).
fn make_bad(r: &mut Reading, why: &Arc<str>) {
    if r.quality.is_good() {
        r.quality = Quality::Bad(why.clone());
    }
}

fn mark_not_finite(r: &mut Reading) {
    if let Value::F64(v) = r.value {
        if !v.is_finite() {
            make_bad(r, &NOT_FINITE);
        }
    }
}

/// True when `r` is worth reporting after `last` (on_change).
fn changed(last: &Sent, r: &Reading, deadband: Option<Deadband>) -> bool {
    if last.quality != r.quality {
        return true;
    }
    if !r.quality.is_good() {
        // Same bad/stale quality and reason: nothing new to tell.
        return false;
    }
    let (diff, base) = match (&last.value, &r.value) {
        (Value::U64(a), Value::U64(b)) => (a.abs_diff(*b) as f64, *a as f64),
        (Value::I64(a), Value::I64(b)) => (a.abs_diff(*b) as f64, *a as f64),
        (Value::Bool(_), _) | (_, Value::Bool(_)) | (Value::Text(_), _) | (_, Value::Text(_)) => {
            return last.value != r.value
        }
        (a, b) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => ((a - b).abs(), a),
            _ => return last.value != r.value,
        },
    };
    match deadband {
        None => diff > 0.0,
        Some(d) => diff > d.threshold(base),
    }
}
