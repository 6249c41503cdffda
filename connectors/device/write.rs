//! Writes in engineering units, checked and turned into the device's raw value in one place
//! for every connector: the value's type against the channel's, `min`/`max` in engineering
//! units, then the channel's `scale`/`offset` reversed (`x = (y - offset) / scale`), then the
//! raw value against the range of the device's type. The connector only sends the raw value;
//! what the device took is scaled forward again for the answer. A writable channel whose
//! transform a write cannot reverse (`expr`, `rate`) is refused when the config is parsed, for
//! every protocol (`osgate_core::config::spec::parse_spec`).

use osgate_core::control::DeviceError;
use osgate_core::reading::Value;

/// The kind of value a writable channel takes on the device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueKind {
    /// `true`/`false` (also `1`/`0`, `"ON"`/`"OFF"`).
    Bool,
    /// A whole number within `min..=max` on the device (after `scale`/`offset` are reversed;
    /// fractions are rounded to the nearest).
    Integer {
        /// Smallest raw value.
        min: f64,
        /// Largest raw value.
        max: f64,
    },
    /// Any finite number.
    Float,
    /// Text.
    Text,
}

impl ValueKind {
    /// The integer range of an unsigned type of `bits` bits.
    pub fn unsigned(bits: u32) -> Self {
        ValueKind::Integer {
            min: 0.0,
            max: 2f64.powi(bits as i32) - 1.0,
        }
    }

    /// The integer range of a signed type of `bits` bits.
    pub fn signed(bits: u32) -> Self {
        let half = 2f64.powi(bits as i32 - 1);
        ValueKind::Integer {
            min: -half,
            max: half - 1.0,
        }
    }
}

/// What a write to a channel takes, as a channel's `"type"` says it where the protocol cannot
/// tell (MQTT commands, OPC-UA nodes, whose own type is learnt only from the device).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteType {
    /// Any finite number.
    #[default]
    Number,
    /// A whole number.
    Integer,
    /// `true`/`false`.
    Bool,
    /// Text.
    Text,
}

impl WriteType {
    /// The kind of value the kit checks a write against.
    pub fn kind(self) -> ValueKind {
        match self {
            WriteType::Number => ValueKind::Float,
            WriteType::Integer => ValueKind::signed(64),
            WriteType::Bool => ValueKind::Bool,
            WriteType::Text => ValueKind::Text,
        }
    }
}

/// What the kit needs to know about a writable channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriteSpec {
    /// The raw value's kind on the device.
    pub kind: ValueKind,
    /// Smallest value accepted, in engineering units.
    pub min: Option<f64>,
    /// Largest value accepted, in engineering units.
    pub max: Option<f64>,
}

impl WriteSpec {
    /// A channel of `kind` without a range of its own.
    pub fn new(kind: ValueKind) -> Self {
        WriteSpec {
            kind,
            min: None,
            max: None,
        }
    }

    /// Checks `value` (engineering units) and turns it into the raw value to send; `linear` is
    /// the channel's `(scale, offset)`. Errors are operator messages.
    pub fn to_raw(
        &self,
        value: &serde_json::Value,
        linear: Option<(f64, f64)>,
    ) -> Result<Value, String> {
        match self.kind {
            ValueKind::Bool => return to_bool(value).map(Value::Bool),
            ValueKind::Text => {
                return match value {
                    serde_json::Value::String(s) => Ok(Value::Text(s.as_str().into())),
                    other => Err(format!("expected text, got {other}")),
                }
            }
            ValueKind::Integer { .. } | ValueKind::Float => {}
        }
        let y = match value {
            serde_json::Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            other => return Err(format!("expected a number, got {other}")),
        };
        if !y.is_finite() {
            return Err(format!("{y} is not a finite number"));
        }
        if self.min.is_some_and(|lo| y < lo) || self.max.is_some_and(|hi| y > hi) {
            let lo = self.min.map_or("-∞".to_string(), |v| v.to_string());
            let hi = self.max.map_or("∞".to_string(), |v| v.to_string());
            return Err(format!("{y} is outside [{lo}, {hi}]"));
        }
        let x = match linear {
            Some((scale, offset)) => {
                if scale == 0.0 {
                    return Err("the channel's scale is 0: a write cannot be reversed".into());
                }
                (y - offset) / scale
            }
            None => y,
        };
        match self.kind {
            ValueKind::Integer { min, max } => {
                let r = x.round();
                if !(r >= min && r <= max) {
                    return Err(format!(
                        "{y} is {x} on the device, outside its range {min}..={max}"
                    ));
                }
                // Exact: an integer as the user wrote it stays an integer.
                Ok(if r < 0.0 {
                    Value::I64(r as i64)
                } else {
                    Value::U64(r as u64)
                })
            }
            _ => Ok(Value::F64(x)),
        }
    }
}

/// Applies `y = x · scale + offset` to a value the device took (the answer of a write).
pub fn to_engineering(raw: Value, linear: Option<(f64, f64)>) -> Value {
    match (linear, raw.as_f64()) {
        (Some((s, o)), Some(x)) if !matches!(raw, Value::Bool(_)) => Value::F64(x * s + o),
        _ => raw,
    }
}

fn to_bool(v: &serde_json::Value) -> Result<bool, String> {
    match v {
        serde_json::Value::Bool(b) => Ok(*b),
        serde_json::Value::Number(n) if n.as_f64() == Some(1.0) => Ok(true),
        serde_json::Value::Number(n) if n.as_f64() == Some(0.0) => Ok(false),
        serde_json::Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "on" | "1" => Ok(true),
            "false" | "off" | "0" => Ok(false),
            _ => Err(format!("expected true or false, got \"{s}\"")),
        },
        other => Err(format!("expected true or false, got {other}")),
    }
}

/// The [`DeviceError`] for a value [`WriteSpec::to_raw`] refused.
pub fn out_of_range(channel: &str, reason: String) -> DeviceError {
    DeviceError::OutOfRange {
        channel: channel.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_protocol_refuses_a_writable_channel_a_write_cannot_reverse() {
        let cases = [
            (
                json!({"protocol": "simulator"}),
                json!({"signal": "constant", "value": 1, "writable": true}),
                "",
            ),
            (
                json!({"protocol": "zwave", "url": "ws://h:3000"}),
                json!({"command_class": 37, "property": "currentValue", "writable": true}),
                "",
            ),
            (
                json!({"protocol": "opcua", "url": "opc.tcp://h:4840/"}),
                json!({"node": "ns=2;s=T", "writable": true}),
                "",
            ),
            (
                json!({"protocol": "mqtt", "url": "mqtt://h", "mappings": [{"topic": "a/{device}"}]}),
                json!({"writable": true, "command": {"topic": "t"}}),
                "",
            ),
            (
                json!({"protocol": "modbus", "transport": {"tcp": "h:502"}}),
                json!({"table": "holding", "address": 1, "writable": true}),
                " into a register value",
            ),
            (
                json!({"protocol": "s7", "host": "h"}),
                json!({"address": "MW2", "writable": true}),
                " into the PLC's value",
            ),
            (
                json!({"protocol": "http", "mode": "poll"}),
                json!({"pointer": "/c", "write": {"url": "http://h/w"}}),
                "",
            ),
        ];
        for (connector, channel, into) in cases {
            for key in ["expr", "rate"] {
                let mut c = connector.clone();
                let mut ch = channel.clone();
                ch["name"] = json!("c");
                ch[key] = if key == "expr" {
                    json!("x * 2")
                } else {
                    json!(true)
                };
                let mut dev = json!({"name": "d", "channels": [ch]});
                match c["protocol"].as_str() {
                    Some("zwave") => dev["node"] = json!(2),
                    Some("http") => dev["url"] = json!("http://h/"),
                    _ => {}
                }
                c["name"] = json!("x");
                c["devices"] = json!([dev]);
                let errs = crate::parse_test::<()>(c.clone()).unwrap_err();
                let want = format!(
                    "connectors[0] \"x\".devices[0].channels[0].{key}: a writable channel cannot use {key}: a written value could not be turned back{into}"
                );
                assert!(
                    errs.iter().any(|e| e.to_string() == want),
                    "{c}: {want} not in {errs:?}"
                );
            }
        }
    }

    #[test]
    fn reverses_scale_and_checks_both_ranges() {
        let u16s = WriteSpec::new(ValueKind::unsigned(16));
        // 23.5 °C at scale 0.1 is 235 on the device.
        assert_eq!(
            u16s.to_raw(&json!(23.5), Some((0.1, 0.0))),
            Ok(Value::U64(235))
        );
        assert_eq!(u16s.to_raw(&json!(7), None), Ok(Value::U64(7)));
        // offset: y = x * 2 + 10 → x = (30 - 10) / 2
        assert_eq!(
            u16s.to_raw(&json!(30), Some((2.0, 10.0))),
            Ok(Value::U64(10))
        );
        assert!(u16s
            .to_raw(&json!(70000), None)
            .unwrap_err()
            .contains("65535"));
        assert!(u16s.to_raw(&json!(-1), None).is_err());
        assert!(u16s
            .to_raw(&json!("x"), None)
            .unwrap_err()
            .contains("number"));
        let i16s = WriteSpec::new(ValueKind::signed(16));
        assert_eq!(i16s.to_raw(&json!(-5), None), Ok(Value::I64(-5)));
        assert!(i16s.to_raw(&json!(32768), None).is_err());
        let ranged = WriteSpec {
            kind: ValueKind::Float,
            min: Some(0.0),
            max: Some(100.0),
        };
        assert_eq!(ranged.to_raw(&json!(42.5), None), Ok(Value::F64(42.5)));
        let e = ranged.to_raw(&json!(142.5), None).unwrap_err();
        assert!(e.contains("142.5") && e.contains("[0, 100]"), "{e}");
        assert!(ranged.to_raw(&json!(42), Some((0.0, 1.0))).is_err());
    }

    #[test]
    fn bools_and_text() {
        let b = WriteSpec::new(ValueKind::Bool);
        assert_eq!(b.to_raw(&json!(true), None), Ok(Value::Bool(true)));
        assert_eq!(b.to_raw(&json!(0), None), Ok(Value::Bool(false)));
        assert_eq!(b.to_raw(&json!("ON"), None), Ok(Value::Bool(true)));
        assert!(b.to_raw(&json!(2), None).is_err());
        let t = WriteSpec::new(ValueKind::Text);
        assert_eq!(t.to_raw(&json!("ab"), None), Ok(Value::Text("ab".into())));
        assert!(t.to_raw(&json!(1), None).is_err());
    }

    #[test]
    fn answers_in_engineering_units() {
        assert_eq!(
            to_engineering(Value::U64(235), Some((0.1, 0.0))),
            Value::F64(23.5)
        );
        assert_eq!(to_engineering(Value::U64(7), None), Value::U64(7));
        assert_eq!(
            to_engineering(Value::Bool(true), Some((2.0, 0.0))),
            Value::Bool(true)
        );
    }
}
