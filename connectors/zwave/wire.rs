//! The Z-Wave JS Server wire format, as far as osgate reads it: value ids, value metadata, node
//! states (the `start_listening` snapshot and `ready` events), node events, command results,
//! and the channel names derived from a value id. Pure types and functions; the connection and
//! the mapping to readings are in the parent module.
//!
//! Frames are parsed in two steps: a [`Head`] borrowed from the text (its `type`, `messageId`,
//! and the event's name and node), so the frequent `statistics updated` events are dropped
//! without allocating, then the part an event carries (`args`, `nodeState`) when it is wanted.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use osgate_core::reading::Value;

/// A value id's `property` or `propertyKey`: a number or a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Prop {
    /// A number (`65537`, a configuration parameter number).
    Int(i64),
    /// A name (`"currentValue"`, `"Air temperature"`).
    Str(Box<str>),
}

impl fmt::Display for Prop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prop::Int(i) => write!(f, "{i}"),
            Prop::Str(s) => write!(f, "\"{s}\""),
        }
    }
}

impl<'de> Deserialize<'de> for Prop {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Prop;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Prop, E> {
                Ok(Prop::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Prop, E> {
                i64::try_from(v)
                    .map(Prop::Int)
                    .map_err(|_| E::custom("number too large"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Prop, E> {
                if v.fract() == 0.0 && v.abs() < 9e15 {
                    Ok(Prop::Int(v as i64))
                } else {
                    Err(E::custom(format!("expected a whole number, got {v}")))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Prop, E> {
                Ok(Prop::Str(v.into()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A value id: `(commandClass, endpoint, property, propertyKey)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ValueKey {
    /// The command class (`49` Multilevel Sensor, `37` Binary Switch, `50` Meter…).
    #[serde(rename = "commandClass")]
    pub cc: u16,
    /// The endpoint (0: the node itself).
    pub endpoint: u16,
    /// The property.
    pub property: Prop,
    /// The property key, when the property has several (a meter's scales).
    #[serde(rename = "propertyKey", skip_serializing_if = "Option::is_none")]
    pub key: Option<Prop>,
}

impl fmt::Display for ValueKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command class {}, endpoint {}, property {}",
            self.cc, self.endpoint, self.property
        )?;
        if let Some(k) = &self.key {
            write!(f, ", property key {k}")?;
        }
        Ok(())
    }
}

impl ValueKey {
    /// The value a write of this one goes to: a `currentValue` is set through its
    /// `targetValue` (zwave-js refuses writes to `currentValue`), as Home Assistant does.
    pub fn write_target(&self) -> ValueKey {
        match &self.property {
            Prop::Str(p) if &**p == "currentValue" => ValueKey {
                property: Prop::Str("targetValue".into()),
                ..self.clone()
            },
            _ => self.clone(),
        }
    }
}

/// A value as zwave-js holds it: the scalars osgate publishes, or something else (a list, an
/// object, a duration) that it skips.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// `true`/`false`.
    Bool(bool),
    /// Any number.
    Num(f64),
    /// Text.
    Text(Arc<str>),
    /// `null`, a list or an object: not published.
    Other,
}

impl Scalar {
    /// The reading's value, `None` for [`Scalar::Other`].
    pub fn value(&self) -> Option<Value> {
        match self {
            Scalar::Bool(b) => Some(Value::Bool(*b)),
            Scalar::Num(n) => Some(Value::F64(*n)),
            Scalar::Text(t) => Some(Value::Text(t.clone())),
            Scalar::Other => None,
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Num(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Num(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Num(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.into()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Scalar, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut a: A) -> Result<Scalar, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// The type of a value (`metadata.type`), as far as writes care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaType {
    /// `number`.
    Number,
    /// `boolean`.
    Boolean,
    /// `string`.
    String,
    /// Anything else (`any`, `duration`, `color`, `buffer`, lists): not written by osgate.
    Other,
}

/// A value's metadata (`metadata` of a value, `metadata updated`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Meta {
    /// Its type.
    #[serde(rename = "type", deserialize_with = "meta_type")]
    pub kind: MetaType,
    /// Its unit (`°C`, `kWh`).
    #[serde(default, deserialize_with = "opt_arc")]
    pub unit: Option<Arc<str>>,
    /// Smallest value a write may set (device units).
    #[serde(default)]
    pub min: Option<f64>,
    /// Largest value a write may set (device units).
    #[serde(default)]
    pub max: Option<f64>,
    /// Whether the value can be read (default true).
    #[serde(default = "yes")]
    pub readable: bool,
    /// Whether the value can be written (default true, as in zwave-js).
    #[serde(default = "yes")]
    pub writeable: bool,
    /// A secret (a user code): never published.
    #[serde(default)]
    pub secret: bool,
    /// Enumerated states (`{"0": "Off", "1": "Heat"}`): their names are published beside the
    /// value, and a write outside them is refused.
    #[serde(default)]
    pub states: Option<Box<super::states::States>>,
    /// Values outside `states` may be written too (configuration parameters).
    #[serde(default, rename = "allowManualEntry")]
    pub allow_manual_entry: bool,
}

fn opt_arc<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<str>>, D::Error> {
    Ok(Option::<Cow<str>>::deserialize(d)?.map(|s| Arc::from(&*s)))
}

fn yes() -> bool {
    true
}

fn meta_type<'de, D: Deserializer<'de>>(d: D) -> Result<MetaType, D::Error> {
    let s = Cow::<str>::deserialize(d)?;
    Ok(match &*s {
        "number" => MetaType::Number,
        "boolean" => MetaType::Boolean,
        "string" => MetaType::String,
        _ => MetaType::Other,
    })
}

/// A value as node states list it (its id, names, metadata and current value), and the
/// `args` of `value updated`, `value added`, `value notification` and `metadata updated`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeValue {
    /// The command class.
    pub command_class: u16,
    /// The endpoint.
    #[serde(default)]
    pub endpoint: u16,
    /// The property.
    pub property: Prop,
    /// The property key.
    #[serde(default)]
    pub property_key: Option<Prop>,
    /// The property's name (`Air temperature`).
    #[serde(default)]
    pub property_name: Option<String>,
    /// The property key's name (`Electric_kWh_Consumed`).
    #[serde(default)]
    pub property_key_name: Option<String>,
    /// Its metadata (node states, `metadata updated`).
    #[serde(default)]
    pub metadata: Option<Meta>,
    /// The value (node states, where it is absent while zwave-js does not know it, and
    /// `value notification`).
    #[serde(default)]
    pub value: Option<Scalar>,
    /// The new value (`value updated`, `value added`).
    #[serde(default)]
    pub new_value: Option<Scalar>,
}

impl NodeValue {
    /// Its value id.
    pub fn key(&self) -> ValueKey {
        ValueKey {
            cc: self.command_class,
            endpoint: self.endpoint,
            property: self.property.clone(),
            key: self.property_key.clone(),
        }
    }
}

/// Node status: `0` unknown, `1` asleep, `2` awake, `3` dead, `4` alive.
pub const STATUS_DEAD: u8 = 3;

/// A node as `start_listening` and `ready` events give it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    /// The node id.
    pub node_id: u16,
    /// Its user-given name (`node.set_name`).
    #[serde(default)]
    pub name: Option<String>,
    /// Its status (see [`STATUS_DEAD`]).
    #[serde(default)]
    pub status: u8,
    /// Whether zwave-js has interviewed it (its values are known).
    #[serde(default)]
    pub ready: bool,
    /// Where its interview is (a name or a number, by schema).
    #[serde(default)]
    pub interview_stage: Option<Prop>,
    /// Its values.
    #[serde(default)]
    pub values: Vec<NodeValue>,
    /// The controller itself (never a device of its own).
    #[serde(default)]
    pub is_controller_node: bool,
}

/// The `version` frame the server sends on connect.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    /// The zwave-js driver's version.
    #[serde(default)]
    pub driver_version: String,
    /// The server's version.
    #[serde(default)]
    pub server_version: String,
    /// The network's home id.
    #[serde(default)]
    pub home_id: Option<u64>,
    /// Oldest API schema the server speaks.
    #[serde(default)]
    pub min_schema_version: u32,
    /// Newest API schema the server speaks.
    #[serde(default)]
    pub max_schema_version: u32,
}

/// The `start_listening` result: `result.state.nodes`.
#[derive(Debug, Deserialize)]
pub struct Listening {
    /// `result`.
    pub result: ListeningResult,
}

/// `result` of `start_listening`.
#[derive(Debug, Deserialize)]
pub struct ListeningResult {
    /// `state`.
    pub state: ListeningState,
}

/// `result.state` of `start_listening`.
#[derive(Debug, Deserialize)]
pub struct ListeningState {
    /// Every node of the network, the controller included.
    #[serde(default)]
    pub nodes: Vec<NodeState>,
}

/// What every frame starts with, borrowed from its text.
#[derive(Debug, Deserialize)]
pub struct Head<'a> {
    /// `version`, `result` or `event`.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// The request a result answers.
    #[serde(rename = "messageId", borrow, default)]
    pub message_id: Option<Cow<'a, str>>,
    /// The event, parsed with [`EventHead`] when wanted.
    #[serde(borrow, default)]
    pub event: Option<&'a RawValue>,
}

/// An event's source, name and node, and its parts, still unparsed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventHead<'a> {
    /// `node`, `controller` or `driver`.
    #[serde(borrow, default)]
    pub source: Cow<'a, str>,
    /// `value updated`, `ready`, `dead`…
    #[serde(borrow)]
    pub event: Cow<'a, str>,
    /// The node of a node event.
    #[serde(default)]
    pub node_id: Option<u16>,
    /// `args` of value events.
    #[serde(borrow, default)]
    pub args: Option<&'a RawValue>,
    /// `nodeState` of `ready`.
    #[serde(borrow, default)]
    pub node_state: Option<&'a RawValue>,
}

/// A command's result frame.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandResult {
    /// Whether the server ran the command (a failed `set_value` may still say `true`).
    pub success: bool,
    /// Why it did not (`node_not_found`, `zwave_error`…).
    #[serde(default)]
    pub error_code: Option<String>,
    /// The server's message.
    #[serde(default)]
    pub message: Option<String>,
    /// zwave-js's message of a `zwave_error`.
    #[serde(default)]
    pub zwave_error_message: Option<String>,
    /// The command's answer.
    #[serde(default)]
    pub result: Option<SetValueAnswer>,
}

/// `result` of `node.set_value`: `{"result": {"status": …}}` (schema ≥ 29) or
/// `{"success": bool}` (older).
#[derive(Debug, Default, Deserialize)]
pub struct SetValueAnswer {
    /// The set-value result.
    #[serde(default)]
    pub result: Option<SetValueResult>,
    /// The answer of schemas before 29.
    #[serde(default)]
    pub success: Option<bool>,
}

/// zwave-js's `SetValueResult`.
#[derive(Debug, Deserialize)]
pub struct SetValueResult {
    /// `SetValueStatus`: 255 success, 254 success unsupervised, 1 working; 0 no device
    /// support, 2 fail, 3 endpoint not found, 4 not implemented, 5 invalid value.
    pub status: u8,
    /// Why it failed.
    #[serde(default)]
    pub message: Option<String>,
}

impl CommandResult {
    /// `Ok` when the value was set (or is being set), else the reason.
    pub fn set_value_outcome(&self) -> Result<(), String> {
        if !self.success {
            let code = self.error_code.as_deref().unwrap_or("error");
            let msg = self
                .zwave_error_message
                .as_deref()
                .or(self.message.as_deref())
                .filter(|m| !m.is_empty());
            return Err(match msg {
                Some(m) => format!("{code}: {m}"),
                None => code.to_string(),
            });
        }
        let answer = self.result.as_ref();
        if let Some(r) = answer.and_then(|a| a.result.as_ref()) {
            let name = match r.status {
                255 | 254 | 1 => return Ok(()),
                0 => "no device support",
                2 => "failed",
                3 => "endpoint not found",
                4 => "not implemented",
                5 => "invalid value",
                _ => "unknown status",
            };
            let why = r.message.as_deref().unwrap_or("");
            return Err(format!("{name} (status {}){}{why}", r.status, sep(why)));
        }
        match answer.and_then(|a| a.success) {
            Some(false) => Err("the node refused the value".into()),
            _ => Ok(()),
        }
    }
}

fn sep(s: &str) -> &'static str {
    if s.is_empty() {
        ""
    } else {
        ": "
    }
}

/// The channel name a value gets on a device without configured channels: its property name
/// (or the property key's name for a generic `value`, as meters have), snake case, with the
/// endpoint as a suffix when not 0: `air_temperature`, `electric_kwh_consumed`,
/// `current_value_ep2`.
pub fn derive_name(
    property: &Prop,
    property_name: Option<&str>,
    key: Option<&Prop>,
    key_name: Option<&str>,
    endpoint: u16,
) -> String {
    let prop = match (property_name, property) {
        (Some(n), _) if !n.is_empty() => n.to_string(),
        (_, Prop::Str(s)) => s.to_string(),
        (_, Prop::Int(i)) => i.to_string(),
    };
    let key = match (key_name, key) {
        (Some(n), _) if !n.is_empty() => Some(n.to_string()),
        (_, Some(Prop::Str(s))) => Some(s.to_string()),
        (_, Some(Prop::Int(i))) => Some(i.to_string()),
        _ => None,
    };
    let mut out = match key {
        Some(k) if prop == "value" => snake(&k),
        Some(k) => format!("{}_{}", snake(&prop), snake(&k)),
        None => snake(&prop),
    };
    if out.is_empty() {
        out.push_str("value");
    }
    if endpoint != 0 {
        out.push_str("_ep");
        out.push_str(&endpoint.to_string());
    }
    out
}

/// Lower snake case: words split at anything not a letter or digit; a name without such
/// separators (`currentValue`) is split at its camel-case humps, one with them keeps its
/// words (`Electric_kWh_Consumed` → `electric_kwh_consumed`).
pub fn snake(s: &str) -> String {
    let camel = s.chars().all(|c| c.is_ascii_alphanumeric());
    let mut out = String::with_capacity(s.len() + 4);
    let mut prev_lower = false;
    let mut gap = false;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            if (gap || (camel && prev_lower && c.is_ascii_uppercase())) && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
            out.push(c.to_ascii_lowercase());
        } else {
            gap = true;
            prev_lower = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derived_from_value_ids() {
        let p = |s: &str| Prop::Str(s.into());
        assert_eq!(
            derive_name(
                &p("Air temperature"),
                Some("Air temperature"),
                None,
                None,
                0
            ),
            "air_temperature"
        );
        assert_eq!(
            derive_name(
                &p("value"),
                Some("value"),
                Some(&Prop::Int(65537)),
                Some("Electric_kWh_Consumed"),
                0
            ),
            "electric_kwh_consumed"
        );
        assert_eq!(
            derive_name(&p("currentValue"), None, None, None, 2),
            "current_value_ep2"
        );
        assert_eq!(
            derive_name(
                &p("Home Security"),
                None,
                Some(&p("Motion sensor status")),
                None,
                0
            ),
            "home_security_motion_sensor_status"
        );
        assert_eq!(derive_name(&Prop::Int(3), None, None, None, 0), "3");
        assert_eq!(derive_name(&p("°"), None, None, None, 0), "value");
        assert_eq!(snake("firmwareVersions"), "firmware_versions");
        assert_eq!(snake("productID"), "product_id");
    }

    #[test]
    fn current_value_is_written_through_target_value() {
        let k = ValueKey {
            cc: 37,
            endpoint: 0,
            property: Prop::Str("currentValue".into()),
            key: None,
        };
        let t = k.write_target();
        assert_eq!(t.property, Prop::Str("targetValue".into()));
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            serde_json::json!({"commandClass": 37, "endpoint": 0, "property": "targetValue"})
        );
        let m = ValueKey {
            cc: 50,
            endpoint: 0,
            property: Prop::Str("value".into()),
            key: Some(Prop::Int(65537)),
        };
        assert_eq!(m.write_target(), m);
        assert_eq!(serde_json::to_value(&m).unwrap()["propertyKey"], 65537);
    }

    #[test]
    fn set_value_answers() {
        let r = |s: &str| {
            serde_json::from_str::<CommandResult>(s)
                .unwrap()
                .set_value_outcome()
        };
        assert_eq!(
            r(r#"{"success":true,"result":{"result":{"status":254}}}"#),
            Ok(())
        );
        assert_eq!(
            r(r#"{"success":true,"result":{"result":{"status":255}}}"#),
            Ok(())
        );
        let e =
            r(r#"{"success":true,"result":{"result":{"status":5,"message":"must be boolean"}}}"#)
                .unwrap_err();
        assert_eq!(e, "invalid value (status 5): must be boolean");
        assert!(r(r#"{"success":true,"result":{"result":{"status":4}}}"#)
            .unwrap_err()
            .contains("not implemented"));
        let e = r(
            r#"{"success":false,"errorCode":"node_not_found","message":"","args":{"nodeId":99}}"#,
        )
        .unwrap_err();
        assert_eq!(e, "node_not_found");
        let e = r(r#"{"success":false,"errorCode":"zwave_error","zwaveErrorCode":5,"zwaveErrorMessage":"timeout"}"#)
            .unwrap_err();
        assert_eq!(e, "zwave_error: timeout");
        assert_eq!(r(r#"{"success":true,"result":{"success":true}}"#), Ok(()));
        assert!(r(r#"{"success":true,"result":{"success":false}}"#).is_err());
    }

    #[test]
    fn frames_parse_and_odd_values_are_skipped() {
        let text = r#"{"type":"event","event":{"source":"node","event":"statistics updated","nodeId":2,"statistics":{"rtt":65.3}}}"#;
        let h: Head = serde_json::from_str(text).unwrap();
        assert_eq!(h.kind, "event");
        let e: EventHead = serde_json::from_str(h.event.unwrap().get()).unwrap();
        assert_eq!((&*e.event, e.node_id), ("statistics updated", Some(2)));
        let n: NodeState = serde_json::from_str(
            r#"{"nodeId":3,"status":4,"ready":true,"interviewStage":"Complete","values":[
              {"endpoint":0,"commandClass":50,"property":"value","propertyKey":65537,"propertyKeyName":"Electric_kWh_Consumed",
               "metadata":{"type":"number","readable":true,"writeable":false,"unit":"kWh","ccSpecific":{"meterType":1}},"value":100.07},
              {"endpoint":0,"commandClass":134,"property":"firmwareVersions","metadata":{"type":"string[]"},"value":["1.0"]},
              {"endpoint":0,"commandClass":37,"property":"targetValue","metadata":{"type":"boolean","writeable":true}}]}"#,
        )
        .unwrap();
        assert_eq!(n.values.len(), 3);
        let m = n.values[0].metadata.as_ref().unwrap();
        assert_eq!((m.kind, m.unit.as_deref()), (MetaType::Number, Some("kWh")));
        assert_eq!(n.values[0].value, Some(Scalar::Num(100.07)));
        assert_eq!(n.values[1].value, Some(Scalar::Other));
        assert_eq!(n.values[1].metadata.as_ref().unwrap().kind, MetaType::Other);
        assert_eq!(n.values[2].value, None);
        assert_eq!(n.interview_stage, Some(Prop::Str("Complete".into())));
    }
}
