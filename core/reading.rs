//! The one data type that flows through osgate: [`Reading`]s grouped in [`Batch`]es.
//!
//! Connectors build readings (usually through [`crate::pipeline::DeviceOutput`], which also runs
//! the per-channel transforms), send them as one [`Batch`] per device poll or message, and the
//! pipeline hands each batch to every sink behind an `Arc`, so fan-out never copies readings.
//! Names are `Arc<str>`: cloning one into a reading is a reference-count increment, not an
//! allocation.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, UTC.
///
/// Taken when the value was *read* from the device (or carried in the device's own message),
/// never when it is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0
    }
}

/// A reading's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A boolean (coil, discrete input, bit of a register, switch state).
    Bool(bool),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer (counters, u64 registers).
    U64(u64),
    /// A floating-point number. NaN and infinities are published as JSON `null`.
    F64(f64),
    /// Text (string registers, status words rendered as text).
    Text(Arc<str>),
}

impl Value {
    /// The value as a float, for numeric transforms; `None` for text.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::I64(v) => Some(*v as f64),
            Value::U64(v) => Some(*v as f64),
            Value::F64(v) => Some(*v),
            Value::Text(_) => None,
        }
    }

    /// Converts a JSON value (from a config or an RPC call) into a reading value.
    pub fn from_json(v: &serde_json::Value) -> Option<Value> {
        match v {
            serde_json::Value::Bool(b) => Some(Value::Bool(*b)),
            serde_json::Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    Some(Value::U64(u))
                } else if let Some(i) = n.as_i64() {
                    Some(Value::I64(i))
                } else {
                    n.as_f64().map(Value::F64)
                }
            }
            serde_json::Value::String(s) => Some(Value::Text(s.as_str().into())),
            _ => None,
        }
    }

    /// The value as JSON (NaN and infinities become `null`).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Bool(b) => (*b).into(),
            Value::I64(v) => (*v).into(),
            Value::U64(v) => (*v).into(),
            Value::F64(v) => serde_json::Number::from_f64(*v)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Text(s) => serde_json::Value::String(s.to_string()),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Text(s) => write!(f, "{s}"),
        }
    }
}

/// How far a reading can be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Quality {
    /// Read from the device without error.
    #[default]
    Good,
    /// The read failed or the value is invalid; the reason says why.
    Bad(Arc<str>),
    /// The value is old (e.g. the device stopped answering); the reason says why.
    Stale(Arc<str>),
}

impl Quality {
    /// `"good"`, `"bad"` or `"stale"`, as published.
    pub fn as_str(&self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Bad(_) => "bad",
            Quality::Stale(_) => "stale",
        }
    }

    /// The reason for a bad or stale quality.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Quality::Good => None,
            Quality::Bad(r) | Quality::Stale(r) => Some(r),
        }
    }

    /// True for [`Quality::Good`].
    pub fn is_good(&self) -> bool {
        matches!(self, Quality::Good)
    }
}

/// One value of one channel of one device at one time.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Device name (unique within the gateway).
    pub device: Arc<str>,
    /// Channel name (unique within the device).
    pub channel: Arc<str>,
    /// The value.
    pub value: Value,
    /// When the value was read.
    pub ts: Timestamp,
    /// Good, bad or stale.
    pub quality: Quality,
    /// Engineering unit, if configured.
    pub unit: Option<Arc<str>>,
}

/// All readings of one device from one poll or one message.
///
/// Connectors send batches, not single readings: one channel send per batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The connector that produced the batch.
    pub connector: Arc<str>,
    /// The device the readings belong to.
    pub device: Arc<str>,
    /// The readings, in channel order.
    pub readings: Vec<Reading>,
}

impl Batch {
    /// The newest timestamp in the batch (the batch's time in `device` format).
    pub fn ts(&self) -> Timestamp {
        self.readings
            .iter()
            .map(|r| r.ts)
            .max()
            .unwrap_or_else(Timestamp::now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_of_values() {
        for (json, want) in [
            (serde_json::json!(true), Value::Bool(true)),
            (serde_json::json!(42), Value::U64(42)),
            (serde_json::json!(-3), Value::I64(-3)),
            (serde_json::json!(1.5), Value::F64(1.5)),
            (serde_json::json!("on"), Value::Text("on".into())),
        ] {
            let v = Value::from_json(&json).unwrap();
            assert_eq!(v, want);
            assert_eq!(v.to_json(), json);
        }
        assert_eq!(Value::F64(f64::NAN).to_json(), serde_json::Value::Null);
        assert!(Value::from_json(&serde_json::json!([1])).is_none());
    }

    #[test]
    fn batch_ts_is_newest() {
        let r = |ts| Reading {
            device: "d".into(),
            channel: "c".into(),
            value: Value::U64(1),
            ts: Timestamp(ts),
            quality: Quality::Good,
            unit: None,
        };
        let b = Batch {
            connector: "x".into(),
            device: "d".into(),
            readings: vec![r(5), r(9), r(7)],
        };
        assert_eq!(b.ts(), Timestamp(9));
    }
}
