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

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use exmex::prelude::*;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use tokio::time::Instant;

use crate::duration::Dur;
use crate::reading::{Quality, Reading, Value};

/// The channel config keys that belong to the transform (every connector accepts them).
pub const TRANSFORM_KEYS: &[&str] = &[
    "scale",
    "offset",
    "round",
    "deadband",
    "report",
    "heartbeat",
    "filter",
    "rate",
    "expr",
];

/// Largest accepted `round`: an f64 holds 15–17 significant digits, more decimals mean nothing.
pub const MAX_ROUND: u32 = 15;

/// The transform part of a channel's config (the user reference for the transform keys).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// Multiply the value by this factor (finite, not 0). Example: `"scale": 0.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Add this after scaling (finite). Example: `"offset": -40`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<f64>,
    /// Round to this many decimals (0–15). Rounds floats only; integers stay as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
    /// Report only when the value moved *more* than this from the last *reported* value:
    /// absolute (`0.5`) or relative to the last reported value (`"2%"`). Implies
    /// `"report": "on_change"`. Compared after every value step, on the value as published.
    /// Bool and text values have no distance: for them any change is a change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband: Option<Deadband>,
    /// When a reading is sent: `"always"` (default; `"on_change"` when a `deadband` is set),
    /// `"on_change"` or `{"every": "5m"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    /// With `on_change`: also send the current value when nothing was sent for this long
    /// (`"30s"`), so a quiet value is not mistaken for a dead sensor. The heartbeat message is
    /// the latest reading, with the time it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Dur>,
    /// Drop (or mark bad) impossible values: `{"min": 0, "max": 100, "action": "drop"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterConfig>,
    /// Report the change per time instead of the value (counters): `true` (per second) or
    /// `{"per": "1h", "wrap": 65536}`. `false` is the same as leaving it out.
    #[serde(
        default,
        deserialize_with = "deserialize_rate",
        skip_serializing_if = "Option::is_none"
    )]
    pub rate: Option<RateConfig>,
    /// An expression of the value `x`, e.g. `"(x - 32) / 1.8"`. Operators `+ - * / ^`,
    /// functions `abs sqrt exp ln log10 log2 sin cos tan floor ceil round trunc min(a, b)
    /// max(a, b)` and more, constants `PI`, `E`. Compiled once when the config is loaded;
    /// a mistake is a config error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
}

/// A deadband: absolute, or a percentage of the last reported value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Deadband {
    /// Written as a number: `0.5`.
    Absolute(f64),
    /// Written as a string with `%`: `"2%"` (stored as 2.0). With a last reported value of 0
    /// every change is reported.
    Percent(f64),
}

impl Deadband {
    /// The largest change that is not reported, relative to the last reported value `last`.
    fn threshold(self, last: f64) -> f64 {
        match self {
            Deadband::Absolute(d) => d,
            Deadband::Percent(p) => last.abs() * p / 100.0,
        }
    }
}

impl<'de> Deserialize<'de> for Deadband {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Deadband;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number (absolute) or a percentage string such as \"2%\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Deadband, E> {
                Ok(Deadband::Absolute(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Deadband, E> {
                Ok(Deadband::Absolute(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Deadband, E> {
                Ok(Deadband::Absolute(v as f64))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Deadband, E> {
                s.trim()
                    .strip_suffix('%')
                    .and_then(|n| n.trim().parse::<f64>().ok())
                    .map(Deadband::Percent)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "invalid deadband \"{s}\": expected a number (absolute) or a \
                             percentage such as \"2%\""
                        ))
                    })
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Deadband {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Deadband::Absolute(d) => s.serialize_f64(*d),
            Deadband::Percent(p) => s.collect_str(&format_args!("{p}%")),
        }
    }
}

/// When a value is reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// `"always"`: every reading.
    #[default]
    Always,
    /// `"on_change"`: the first reading, then a reading whose value moved more than the
    /// `deadband` (any change without one) or whose quality changed, plus `heartbeat`s.
    OnChange,
    /// `{"every": "5m"}`: one reading per period, the latest. The first reading is sent at once
    /// (so a new channel shows a value without waiting a period); after that, at the end of
    /// each period the latest reading of that period is sent (at the first poll at or after
    /// the period's end). A period without any reading sends nothing.
    Every(Dur),
}

/// What a filter does with an out-of-range value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterAction {
    /// `"drop"` (default): the reading is not sent; counted as `filtered`.
    #[default]
    Drop,
    /// `"bad"`: sent with quality bad and a reason (`"value 120 above filter max 100"`);
    /// counted as `bad`.
    Bad,
}

/// `"filter": {"min": 0, "max": 100, "action": "drop"}`: the accepted range (inclusive), on
/// the value as it would be published. At least one of `min`, `max`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Smallest accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest accepted value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// `"drop"` (default) or `"bad"`.
    #[serde(default)]
    pub action: FilterAction,
}

/// `"rate": {"per": "1s", "wrap": 65536}`: report the change per `per` instead of the value.
///
/// The time between two readings is taken from their timestamps (the time of the reading). The
/// first reading only sets the baseline and is not sent. A value lower than the previous one is
/// a *wrap* when `wrap` is set and the implied increase (`wrap - previous + value`) is less than
/// half of `wrap`; otherwise it is a *reset* (device restart): the reading becomes the new
/// baseline and is not sent, so a reset never shows as a huge negative or positive spike.
/// Readings that are not sent here count as `suppressed`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// The time unit of the rate (default `"1s"`; `"1h"` turns Wh counters into W).
    #[serde(default = "one_second")]
    pub per: Dur,
    /// The counter's modulus, where it wraps to 0 (e.g. `65536` for a 16-bit register,
    /// `4294967296` for 32 bits). Without it every drop is a reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrap: Option<f64>,
}

fn one_second() -> Dur {
    Dur::from_secs(1)
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            per: one_second(),
            wrap: None,
        }
    }
}

/// `rate`: `true`, `false` or an options object.
fn deserialize_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RateConfig>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<RateConfig>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("true, false or an object such as {\"per\": \"1s\", \"wrap\": 65536}")
        }
        fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
            Ok(b.then(RateConfig::default))
        }
        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            RateConfig::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_any(V)
}

impl TransformConfig {
    /// No transform keys: every reading passes through unchanged.
    pub const IDENTITY: TransformConfig = TransformConfig {
        scale: None,
        offset: None,
        round: None,
        deadband: None,
        report: None,
        heartbeat: None,
        filter: None,
        rate: None,
        expr: None,
    };

    /// True when the transform passes every reading through unchanged.
    pub fn is_identity(&self) -> bool {
        *self == TransformConfig::IDENTITY
    }

    /// The report strategy in effect: `report`, or `on_change` when only a deadband is set.
    pub fn effective_report(&self) -> Report {
        self.report.unwrap_or(if self.deadband.is_some() {
            Report::OnChange
        } else {
            Report::Always
        })
    }

    /// The key that keeps a written value from being turned back into a raw device value
    /// (`expr`, `rate`), if any: only `scale` and `offset` can be reversed (`round`, `filter`
    /// and report keys do not change what a write means). Connectors with writable channels
    /// use it to reject such channels at config load.
    pub fn irreversible_key(&self) -> Option<&'static str> {
        if self.expr.is_some() {
            Some("expr")
        } else if self.rate.is_some() {
            Some("rate")
        } else {
            None
        }
    }

    /// Semantic checks, including compiling `expr`. Each problem is `(field, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs: Vec<(String, String)> = Vec::new();
        let mut err = |f: &str, m: String| errs.push((f.to_string(), m));
        if let Some(s) = self.scale {
            if !s.is_finite() || s == 0.0 {
                err(
                    "scale",
                    format!("must be a finite number other than 0, got {s}"),
                );
            }
        }
        if let Some(o) = self.offset {
            if !o.is_finite() {
                err("offset", format!("must be a finite number, got {o}"));
            }
        }
        if let Some(r) = self.round {
            if r > MAX_ROUND {
                err(
                    "round",
                    format!("must be 0 to {MAX_ROUND} decimals, got {r}"),
                );
            }
        }
        let report = self.effective_report();
        if let Some(d) = self.deadband {
            let (v, what) = match d {
                Deadband::Absolute(v) => (v, ""),
                Deadband::Percent(v) => (v, "%"),
            };
            if !v.is_finite() || v < 0.0 {
                err("deadband", format!("must be ≥ 0, got {v}{what}"));
            }
            match report {
                Report::OnChange => {}
                Report::Always => err(
                    "deadband",
                    "needs \"report\": \"on_change\" (the default with a deadband); with \
                     \"always\" every value is sent anyway"
                        .into(),
                ),
                Report::Every(_) => err(
                    "deadband",
                    "cannot be combined with \"report\": {\"every\": …}, which sends one value \
                     per period whatever it is"
                        .into(),
                ),
            }
        }
        if let Some(h) = self.heartbeat {
            if h.0.is_zero() {
                err("heartbeat", "must be longer than 0".into());
            }
            if report != Report::OnChange {
                err(
                    "heartbeat",
                    "needs \"report\": \"on_change\" or a deadband (with \"always\" or \
                     \"every\" values are sent regularly anyway)"
                        .into(),
                );
            }
        }
        if let Some(Report::Every(p)) = self.report {
            if p.0.is_zero() {
                err("report.every", "must be longer than 0".into());
            }
        }
        if let Some(f) = self.filter {
            if f.min.is_none() && f.max.is_none() {
                err("filter", "needs \"min\", \"max\" or both".into());
            }
            for (k, v) in [("filter.min", f.min), ("filter.max", f.max)] {
                if v.is_some_and(|v| !v.is_finite()) {
                    err(k, "must be a finite number".into());
                }
            }
            if let (Some(lo), Some(hi)) = (f.min, f.max) {
                if lo > hi {
                    err("filter.max", format!("must be ≥ min ({lo}), got {hi}"));
                }
            }
        }
        if let Some(r) = self.rate {
            if r.per.0.is_zero() {
                err("rate.per", "must be longer than 0".into());
            }
            if let Some(w) = r.wrap {
                if !w.is_finite() || w <= 0.0 {
                    err("rate.wrap", format!("must be a number > 0, got {w}"));
                }
            }
        }
        if let Some(e) = &self.expr {
            if let Err(m) = Expr::compile(e) {
                err("expr", m);
            }
        }
        errs
    }
}

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
