//! Topic templates and JSON payloads, shared by the sinks.
//!
//! Payloads are written by hand into a reusable buffer (itoa/ryu for numbers, serde_json only
//! for string escaping): this runs once per published reading, so it avoids building
//! `serde_json::Value`s. Shapes (sinks/README.md, "Topics and payloads"):
//! - `reading`: `{"ts":1732350000123,"value":230.1,"unit":"V","quality":"good"}`
//!   (`"reason":"…"` follows a bad or stale quality)
//! - `device`: `{"ts":…,"values":{"voltage_l1":230.1,…}}` (`"errors":{"ch":"reason"}` lists
//!   channels whose reading was bad)

use bytes::{BufMut, BytesMut};
use serde::Deserialize;

use osgate_core::reading::{Batch, Reading, Value};

/// The message shape of a sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One message per reading on `telemetry/{gateway}/{device}/{channel}`.
    #[default]
    Reading,
    /// One message per batch on `telemetry/{gateway}/{device}`.
    Device,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Device,
    Channel,
    Connector,
}

/// A compiled topic template: `{gateway}` and `{sink}` are fixed at build time; `{device}`,
/// `{channel}` and `{connector}` are filled per message.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicTemplate {
    parts: Vec<Part>,
    len_hint: usize,
}

impl TopicTemplate {
    /// Compiles `template`. Unknown placeholders are an error naming them.
    pub fn compile(template: &str, gateway: &str, sink: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = template;
        while let Some(i) = rest.find('{') {
            lit.push_str(&rest[..i]);
            let Some(end) = rest[i..].find('}') else {
                return Err(format!("unclosed '{{' in topic template \"{template}\""));
            };
            let name = &rest[i + 1..i + end];
            match name {
                "gateway" => lit.push_str(gateway),
                "sink" => lit.push_str(sink),
                "device" | "channel" | "connector" => {
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(match name {
                        "device" => Part::Device,
                        "channel" => Part::Channel,
                        _ => Part::Connector,
                    });
                }
                other => {
                    return Err(format!(
                        "unknown placeholder {{{other}}} in topic template \"{template}\", expected {{gateway}}, {{device}}, {{channel}}, {{connector}} or {{sink}}"
                    ))
                }
            }
            rest = &rest[i + end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        let len_hint = parts
            .iter()
            .map(|p| match p {
                Part::Lit(s) => s.len(),
                _ => 16,
            })
            .sum();
        Ok(TopicTemplate { parts, len_hint })
    }

    /// True if the template uses `{channel}`.
    pub fn has_channel(&self) -> bool {
        self.parts.contains(&Part::Channel)
    }

    /// Renders the topic for one message.
    pub fn render(&self, connector: &str, device: &str, channel: &str) -> String {
        let mut s = String::with_capacity(self.len_hint);
        for p in &self.parts {
            s.push_str(match p {
                Part::Lit(l) => l,
                Part::Device => device,
                Part::Channel => channel,
                Part::Connector => connector,
            });
        }
        s
    }
}

/// Appends a JSON string (quoted, escaped).
pub fn push_str(buf: &mut BytesMut, s: &str) {
    // Fast path: nothing to escape.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        buf.put_u8(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.put_u8(b'"');
    } else {
        serde_json::to_writer((&mut *buf).writer(), s).expect("writing to a Vec cannot fail");
    }
}

/// Appends a JSON value (NaN and infinities as `null`).
pub fn push_value(buf: &mut BytesMut, v: &Value) {
    match v {
        Value::Bool(b) => buf.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::I64(i) => buf.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::U64(u) => buf.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes()),
        Value::F64(f) if f.is_finite() => {
            buf.extend_from_slice(ryu::Buffer::new().format_finite(*f).as_bytes())
        }
        Value::F64(_) => buf.extend_from_slice(b"null"),
        Value::Text(s) => push_str(buf, s),
    }
}

/// Appends the `reading`-format payload of `r`. With `names`, `"device"` and `"channel"` come
/// first (stdout sink, where the topic does not carry them).
pub fn encode_reading(buf: &mut BytesMut, r: &Reading, names: bool) {
    buf.put_u8(b'{');
    if names {
        buf.extend_from_slice(b"\"device\":");
        push_str(buf, &r.device);
        buf.extend_from_slice(b",\"channel\":");
        push_str(buf, &r.channel);
        buf.put_u8(b',');
    }
    buf.extend_from_slice(b"\"ts\":");
    buf.extend_from_slice(itoa::Buffer::new().format(r.ts.0).as_bytes());
    buf.extend_from_slice(b",\"value\":");
    push_value(buf, &r.value);
    if let Some(u) = &r.unit {
        buf.extend_from_slice(b",\"unit\":");
        push_str(buf, u);
    }
    buf.extend_from_slice(b",\"quality\":\"");
    buf.extend_from_slice(r.quality.as_str().as_bytes());
    buf.put_u8(b'"');
    if let Some(reason) = r.quality.reason() {
        buf.extend_from_slice(b",\"reason\":");
        push_str(buf, reason);
    }
    buf.put_u8(b'}');
}

/// Appends the `device`-format payload of a batch. With `names`, `"device"` comes first.
pub fn encode_device(buf: &mut BytesMut, b: &Batch, names: bool) {
    buf.put_u8(b'{');
    if names {
        buf.extend_from_slice(b"\"device\":");
        push_str(buf, &b.device);
        buf.put_u8(b',');
    }
    buf.extend_from_slice(b"\"ts\":");
    buf.extend_from_slice(itoa::Buffer::new().format(b.ts().0).as_bytes());
    buf.extend_from_slice(b",\"values\":{");
    let mut first = true;
    for r in b.readings.iter().filter(|r| r.quality.is_good()) {
        if !first {
            buf.put_u8(b',');
        }
        first = false;
        push_str(buf, &r.channel);
        buf.put_u8(b':');
        push_value(buf, &r.value);
    }
    buf.put_u8(b'}');
    let mut bad = b
        .readings
        .iter()
        .filter(|r| !r.quality.is_good())
        .peekable();
    if bad.peek().is_some() {
        buf.extend_from_slice(b",\"errors\":{");
        let mut first = true;
        for r in bad {
            if !first {
                buf.put_u8(b',');
            }
            first = false;
            push_str(buf, &r.channel);
            buf.put_u8(b':');
            push_str(buf, r.quality.reason().unwrap_or(r.quality.as_str()));
        }
        buf.put_u8(b'}');
    }
    buf.put_u8(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use osgate_core::reading::{Quality, Timestamp};
    use serde_json::json;

    fn reading(ch: &str, v: Value, q: Quality) -> Reading {
        Reading {
            device: "meter-1".into(),
            channel: ch.into(),
            value: v,
            ts: Timestamp(1732350000123),
            quality: q,
            unit: Some("V".into()),
        }
    }

    fn parse(buf: &[u8]) -> serde_json::Value {
        serde_json::from_slice(buf).unwrap()
    }

    #[test]
    fn reading_payload_matches_design() {
        let mut b = BytesMut::new();
        encode_reading(
            &mut b,
            &reading("v", Value::F64(230.1), Quality::Good),
            false,
        );
        assert_eq!(
            parse(&b),
            json!({"ts":1732350000123i64,"value":230.1,"unit":"V","quality":"good"})
        );
        b.clear();
        encode_reading(
            &mut b,
            &reading("v\"x", Value::F64(f64::NAN), Quality::Bad("timeout".into())),
            true,
        );
        assert_eq!(
            parse(&b),
            json!({"device":"meter-1","channel":"v\"x","ts":1732350000123i64,"value":null,"unit":"V","quality":"bad","reason":"timeout"})
        );
    }

    #[test]
    fn device_payload_matches_design() {
        let batch = Batch {
            connector: "c".into(),
            device: "meter-1".into(),
            readings: vec![
                reading("a", Value::U64(1), Quality::Good),
                reading("b", Value::Text("on".into()), Quality::Good),
                reading(
                    "c",
                    Value::F64(f64::NAN),
                    Quality::Bad("illegal data address".into()),
                ),
            ],
        };
        let mut b = BytesMut::new();
        encode_device(&mut b, &batch, false);
        assert_eq!(
            parse(&b),
            json!({"ts":1732350000123i64,"values":{"a":1,"b":"on"},"errors":{"c":"illegal data address"}})
        );
    }

    #[test]
    fn templates_render_and_reject_unknown_placeholders() {
        let t =
            TopicTemplate::compile("telemetry/{gateway}/{device}/{channel}", "gw", "s").unwrap();
        assert_eq!(t.render("c", "d", "ch"), "telemetry/gw/d/ch");
        assert!(t.has_channel());
        let e = TopicTemplate::compile("x/{devcie}", "gw", "s").unwrap_err();
        assert!(e.contains("{devcie}"), "{e}");
    }
}
