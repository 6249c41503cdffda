//! The transform keys of a channel's config: their types (the user reference), parsing and
//! checks. [`super::Transform`] is compiled from a checked [`TransformConfig`].

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::Expr;
use crate::duration::Dur;

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
    pub(super) fn threshold(self, last: f64) -> f64 {
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
    /// and report keys do not change what a write means). The connector parser rejects such
    /// writable channels at config load, for every protocol (`config::spec::parse_spec`).
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
