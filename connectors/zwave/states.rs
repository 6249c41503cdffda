//! Enumerated states of a Z-Wave value (`metadata.states`, e.g. a thermostat's mode `0` Off,
//! `1` Heat, `2` Cool): the name of the state a value is in, published beside the value, and
//! the check that refuses a write outside them (unless zwave-js allows manual entry), naming
//! the allowed ones.

use std::fmt;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::wire::Scalar;
use osgate_core::reading::Value;

/// The states of a value: its raw value as zwave-js writes it (`"1"`, `"true"`) and the name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct States(Box<[(Box<str>, Arc<str>)]>);

impl States {
    /// The name of the state `v` is in, if it is one.
    pub fn name_of(&self, v: &Scalar) -> Option<Arc<str>> {
        let key = match v {
            Scalar::Num(n) => number_key(*n),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Text(t) => t.to_string(),
            Scalar::Other => return None,
        };
        self.find(&key)
    }

    /// `Ok` when `raw` (a value about to be written) is one of the states, else the refusal
    /// naming the allowed ones.
    pub fn check(&self, raw: &Value) -> Result<(), String> {
        if self.0.is_empty() {
            return Ok(());
        }
        let key = match raw {
            Value::Bool(b) => b.to_string(),
            Value::Text(t) => t.to_string(),
            other => match other.as_f64() {
                Some(x) => number_key(x),
                None => return Ok(()),
            },
        };
        if self.find(&key).is_some() {
            return Ok(());
        }
        Err(format!(
            "{key} is not one of the value's states; allowed: {}",
            self.allowed()
        ))
    }

    /// The states as `0 (Off), 1 (Heat), 2 (Cool)`.
    pub fn allowed(&self) -> String {
        let list: Vec<String> = self.0.iter().map(|(k, n)| format!("{k} ({n})")).collect();
        list.join(", ")
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn find(&self, key: &str) -> Option<Arc<str>> {
        self.0
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, n)| n.clone())
    }
}

/// A number as a state key: integers without a fraction (`1`, not `1.0`).
fn number_key(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        x.to_string()
    }
}

impl<'de> Deserialize<'de> for States {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = States;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of state values and names")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<States, A::Error> {
                let mut v: Vec<(Box<str>, Arc<str>)> = Vec::new();
                while let Some((k, name)) = m.next_entry::<String, serde_json::Value>()? {
                    let name: Arc<str> = match name {
                        serde_json::Value::String(s) => s.into(),
                        other => other.to_string().into(),
                    };
                    v.push((k.into(), name));
                }
                Ok(States(v.into()))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode() -> States {
        serde_json::from_str(r#"{"0": "Off", "1": "Heat", "2": "Cool"}"#).unwrap()
    }

    #[test]
    fn names_of_values() {
        let s = mode();
        assert_eq!(s.name_of(&Scalar::Num(1.0)).as_deref(), Some("Heat"));
        assert_eq!(s.name_of(&Scalar::Num(0.0)).as_deref(), Some("Off"));
        assert_eq!(s.name_of(&Scalar::Num(7.0)), None);
        assert_eq!(s.name_of(&Scalar::Other), None);
        let b: States = serde_json::from_str(r#"{"true": "Open", "false": "Closed"}"#).unwrap();
        assert_eq!(b.name_of(&Scalar::Bool(false)).as_deref(), Some("Closed"));
        assert!(serde_json::from_str::<States>("[1, 2]").is_err());
    }

    #[test]
    fn writes_outside_the_states_are_refused_with_the_list() {
        let s = mode();
        assert!(s.check(&Value::F64(2.0)).is_ok());
        assert!(s.check(&Value::I64(1)).is_ok());
        let e = s.check(&Value::F64(5.0)).unwrap_err();
        assert_eq!(
            e,
            "5 is not one of the value's states; allowed: 0 (Off), 1 (Heat), 2 (Cool)"
        );
        assert!(s.check(&Value::F64(1.5)).is_err());
        assert!(States::default().check(&Value::F64(5.0)).is_ok());
        assert!(States::default().is_empty());
    }
}
