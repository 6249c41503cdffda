//! Per-channel transforms: scaling, deadband, report strategies, filters, rate, expressions.
//!
//! A [`Transform`] is built once per channel from its [`TransformConfig`] (the transform keys of
//! the channel's config object, see [`TRANSFORM_KEYS`]) and applied by
//! [`crate::pipeline::DeviceOutput::push`] to every reading before it enters the pipeline, so
//! every connector gets the same behaviour. Pure logic: no I/O, time is passed in.

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::Dur;
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

/// The transform part of a channel's config.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// Multiply the value by this factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
    /// Add this to the (scaled) value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<f64>,
    /// Round to this many decimals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
    /// Report only when the value moved more than this from the last reported value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadband: Option<f64>,
    /// `"always"` (default) or `"on_change"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    /// With `on_change`: also report the current value if nothing was reported for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Dur>,
}

/// When a value is reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// Every value.
    #[default]
    Always,
    /// Only values that differ from the last reported one (by more than the deadband).
    OnChange,
}

impl TransformConfig {
    /// True when the transform passes every reading through unchanged.
    pub fn is_identity(&self) -> bool {
        *self == TransformConfig::default()
    }

    /// Semantic checks. Each problem is `(field, message)`.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        if let Some(d) = self.deadband {
            if d.is_nan() || d < 0.0 {
                errs.push(("deadband".into(), format!("must be ≥ 0, got {d}")));
            }
        }
        if self.heartbeat.is_some() && self.report != Some(Report::OnChange) {
            errs.push((
                "heartbeat".into(),
                "needs \"report\": \"on_change\" (with \"always\" every value is sent anyway)"
                    .into(),
            ));
        }
        errs
    }
}

/// What [`Transform::apply`] decided for a reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Publish this reading.
    Emit(Reading),
    /// Not reported (deadband, on_change, every): normal, not counted as a drop.
    Suppressed,
    /// Dropped by a filter; counted.
    Filtered,
}

/// A channel's compiled transform with its state (last reported value and time).
#[derive(Debug, Clone)]
pub struct Transform {
    cfg: TransformConfig,
    last: Option<(Value, Instant)>,
}

impl Transform {
    /// Compiles a transform. Errors are `(field, message)`.
    pub fn new(cfg: &TransformConfig) -> Result<Transform, (String, String)> {
        if let Some(e) = cfg.validate().into_iter().next() {
            return Err(e);
        }
        Ok(Transform {
            cfg: cfg.clone(),
            last: None,
        })
    }

    /// The stateless value steps only (scale, offset, round…), without report strategies or
    /// state: what an explicit read (`device.read`) returns.
    pub fn convert(&self, mut reading: Reading) -> Reading {
        if self.cfg.scale.is_some() || self.cfg.offset.is_some() || self.cfg.round.is_some() {
            match reading.value.as_f64() {
                Some(x) => {
                    let mut y = x * self.cfg.scale.unwrap_or(1.0) + self.cfg.offset.unwrap_or(0.0);
                    if let Some(d) = self.cfg.round {
                        let p = 10f64.powi(d as i32);
                        y = (y * p).round() / p;
                    }
                    reading.value = Value::F64(y);
                }
                None => {
                    reading.quality =
                        Quality::Bad("non-numeric value for a numeric transform".into());
                }
            }
        }
        reading
    }

    /// Applies the transform to one reading; `now` is the monotonic time of the poll.
    pub fn apply(&mut self, reading: Reading, now: Instant) -> Outcome {
        if self.cfg.is_identity() {
            return Outcome::Emit(reading);
        }
        let reading = self.convert(reading);
        if !reading.quality.is_good() {
            return Outcome::Emit(reading);
        }
        if self.cfg.report == Some(Report::OnChange) {
            if let Some((last, at)) = &self.last {
                let heartbeat_due = self
                    .cfg
                    .heartbeat
                    .is_some_and(|h| now.duration_since(*at) >= h.0);
                let changed = match (last.as_f64(), reading.value.as_f64()) {
                    (Some(a), Some(b)) => (a - b).abs() > self.cfg.deadband.unwrap_or(0.0),
                    _ => *last != reading.value,
                };
                if !changed && !heartbeat_due {
                    return Outcome::Suppressed;
                }
            }
            self.last = Some((reading.value.clone(), now));
        }
        Outcome::Emit(reading)
    }
}
