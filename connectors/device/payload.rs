//! Decoding the documents that devices send or serve (MQTT messages, HTTP answers and pushes),
//! shared by every connector that receives text or JSON rather than registers:
//! - [`Pick`]: one channel's value out of a document: a JSON pointer (`/AM2301/Temperature`,
//!   arrays by index `/values/2`), a regex with a capture group over text, or the whole payload;
//! - [`JsonPointer`]: a pointer split into its tokens once, when the config is read;
//! - [`ValueType`]: how text becomes a value (number, bool words such as `ON`/`off`/`1`, text);
//! - [`leaves`]: every numeric and bool field of a JSON object, named by its key path;
//! - [`TimeParser`]: a device's own timestamp (epoch s/ms/µs/ns, RFC 3339, or ISO 8601 without
//!   an offset read in a configured time zone).
//!
//! Everything here is pure: errors are short operator-facing strings that the connector counts
//! and logs; nothing panics on any input.

use std::sync::Arc;

use regex_lite::Regex;
use serde::Deserialize;
use serde_json::Value as Json;

use osgate_core::reading::{Timestamp, Value};

/// How a text (a plain payload, a regex capture, a JSON string) becomes a value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueType {
    /// Numbers and bools stay what JSON says; text that reads as a number becomes one, then
    /// `true`/`false`/`on`/`off` (any case) become bools, anything else stays text.
    #[default]
    Auto,
    /// A number (a JSON number, or text that parses as one); anything else is an error.
    Number,
    /// A bool: JSON `true`/`false`, the numbers 0 and 1, or the words `true`/`false`,
    /// `on`/`off` (any case), `1`/`0`.
    Bool,
    /// Text, as it is (numbers and bools written as text).
    Text,
}

/// Parses `s` as a bool word: `true`/`false`, `on`/`off` (any case), `1`/`0`.
pub fn parse_bool(s: &str) -> Option<bool> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("on") || s == "1" {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") || s.eq_ignore_ascii_case("off") || s == "0" {
        Some(false)
    } else {
        None
    }
}

/// Parses `s` as a number: an integer when it is one, else a finite float.
pub fn parse_number(s: &str) -> Option<Value> {
    let s = s.trim();
    if let Ok(u) = s.parse::<u64>() {
        return Some(Value::U64(u));
    }
    if let Ok(i) = s.parse::<i64>() {
        return Some(Value::I64(i));
    }
    // `inf`/`nan` parse as floats but are no measurement.
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(Value::F64)
}

fn excerpt(s: &str) -> String {
    const MAX: usize = 40;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("\"{}…\"", &s[..i]),
        None => format!("\"{s}\""),
    }
}

impl ValueType {
    /// The value of text `s`.
    pub fn from_text(self, s: &str) -> Result<Value, String> {
        match self {
            ValueType::Auto => Ok(parse_number(s)
                .or_else(|| parse_bool(s).map(Value::Bool))
                .unwrap_or_else(|| Value::Text(s.into()))),
            ValueType::Number => {
                parse_number(s).ok_or_else(|| format!("{} is not a number", excerpt(s)))
            }
            ValueType::Bool => parse_bool(s)
                .map(Value::Bool)
                .ok_or_else(|| format!("{} is not a bool (true/false, on/off, 1/0)", excerpt(s))),
            ValueType::Text => Ok(Value::Text(s.into())),
        }
    }

    /// The value of a JSON value: numbers, bools and strings; `null`, objects and arrays are
    /// errors.
    pub fn from_json(self, v: &Json) -> Result<Value, String> {
        match (self, v) {
            (_, Json::String(s)) if self != ValueType::Auto => self.from_text(s),
            (ValueType::Auto, Json::String(s)) => Ok(Value::Text(s.as_str().into())),
            (ValueType::Text, Json::Number(n)) => Ok(Value::Text(n.to_string().into())),
            (ValueType::Text, Json::Bool(b)) => Ok(Value::Text(b.to_string().into())),
            (ValueType::Bool, Json::Number(n)) => match n.as_u64() {
                Some(0) => Ok(Value::Bool(false)),
                Some(1) => Ok(Value::Bool(true)),
                _ => Err(format!("{n} is not a bool (0 or 1)")),
            },
            (ValueType::Number, Json::Bool(b)) => Err(format!("{b} is not a number")),
            (_, Json::Null) => Err("the value is null".into()),
            (_, Json::Object(_)) => Err("an object, not a value".into()),
            (_, Json::Array(_)) => Err("an array, not a value (pick an element: /name/0)".into()),
            (_, v) => Value::from_json(v).ok_or_else(|| "not a value".into()),
        }
    }
}

/// Where a channel's value is in a document, compiled at config load.
#[derive(Debug, Clone)]
pub enum Pick {
    /// The whole payload (a plain number, bool word or text).
    Whole(ValueType),
    /// A JSON pointer (RFC 6901) into a JSON document.
    Pointer(JsonPointer, ValueType),
    /// The first capture group (or the whole match) of a regex over the text.
    Regex(Regex, ValueType),
}

impl PartialEq for Pick {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Pick::Whole(a), Pick::Whole(b)) => a == b,
            (Pick::Pointer(p, a), Pick::Pointer(q, b)) => p == q && a == b,
            (Pick::Regex(r, a), Pick::Regex(s, b)) => r.as_str() == s.as_str() && a == b,
            _ => false,
        }
    }
}

/// A JSON pointer (RFC 6901) split into its reference tokens once, when the config is read.
/// serde_json's `Value::pointer` splits and unescapes the text at every lookup (two
/// allocations per token), which a listener would pay for every message and channel.
#[derive(Debug, Clone)]
pub struct JsonPointer {
    text: Arc<str>,
    /// `None` for a text that is not a pointer (neither empty nor starting with `/`): it
    /// finds nothing, as with serde_json.
    tokens: Option<Box<[Box<str>]>>,
}

impl JsonPointer {
    /// The pointer written as `text` (`~1` stands for `/`, `~0` for `~`).
    pub fn new(text: &str) -> Self {
        let tokens = is_pointer(text).then(|| {
            text.split('/')
                .skip(1)
                .map(|t| t.replace("~1", "/").replace("~0", "~").into_boxed_str())
                .collect()
        });
        JsonPointer {
            text: text.into(),
            tokens,
        }
    }

    /// The pointer's tokens, unescaped; `None` for a text that is not a pointer.
    pub fn tokens(&self) -> Option<&[Box<str>]> {
        self.tokens.as_deref()
    }

    /// The value the pointer names in `doc`, as `serde_json::Value::pointer` finds it: object
    /// members by key, array elements by a decimal index without a sign or leading zeros.
    pub fn get<'a>(&self, doc: &'a Json) -> Option<&'a Json> {
        self.tokens.as_ref()?.iter().try_fold(doc, |v, t| match v {
            Json::Object(m) => m.get(&**t),
            Json::Array(a) => array_index(t).and_then(|i| a.get(i)),
            _ => None,
        })
    }
}

fn array_index(t: &str) -> Option<usize> {
    if t.starts_with('+') || (t.starts_with('0') && t.len() != 1) {
        return None;
    }
    t.parse().ok()
}

impl std::ops::Deref for JsonPointer {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for JsonPointer {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl From<&str> for JsonPointer {
    fn from(text: &str) -> Self {
        JsonPointer::new(text)
    }
}

/// True for a JSON pointer (RFC 6901): empty, or starting with `/`.
fn is_pointer(p: &str) -> bool {
    p.is_empty() || p.starts_with('/')
}

/// A JSON pointer as written in a config: empty, or starting with `/`.
pub fn check_pointer(p: &str) -> Result<(), String> {
    if is_pointer(p) {
        Ok(())
    } else {
        Err(format!(
            "\"{p}\" is not a JSON pointer: it starts with / (e.g. \"/{p}\")"
        ))
    }
}

impl Pick {
    /// Compiles a channel's `pointer` or `regex` (at most one; neither = the whole payload).
    /// The error names the field.
    pub fn new(
        pointer: Option<&str>,
        regex: Option<&str>,
        ty: ValueType,
    ) -> Result<Pick, (&'static str, String)> {
        match (pointer, regex) {
            (Some(_), Some(_)) => Err(("regex", "set either pointer or regex, not both".into())),
            (Some(p), None) => {
                check_pointer(p).map_err(|e| ("pointer", e))?;
                Ok(Pick::Pointer(p.into(), ty))
            }
            (None, Some(r)) => {
                let re = Regex::new(r).map_err(|e| ("regex", format!("invalid regex: {e}")))?;
                if re.captures_len() > 2 {
                    return Err((
                        "regex",
                        "has more than one capture group; the value is the first, so mark the others (?:…)"
                            .into(),
                    ));
                }
                Ok(Pick::Regex(re, ty))
            }
            (None, None) => Ok(Pick::Whole(ty)),
        }
    }

    /// True when the pick needs the payload parsed as JSON.
    pub fn needs_json(&self) -> bool {
        matches!(self, Pick::Pointer(..))
    }

    /// The value in a parsed JSON document (`doc`) or its text (`text`). `doc` is `None`
    /// when the payload is not JSON.
    pub fn get(&self, text: &str, doc: Option<&Json>) -> Result<Value, String> {
        match self {
            Pick::Whole(ty) => match doc {
                Some(d) if !d.is_string() || *ty != ValueType::Auto => ty.from_json(d),
                _ => ty.from_text(text),
            },
            Pick::Pointer(p, ty) => {
                let doc = doc.ok_or("the payload is not JSON")?;
                let v = p.get(doc).ok_or_else(|| format!("no {p} in the payload"))?;
                ty.from_json(v)
            }
            Pick::Regex(re, ty) => {
                let caps = re
                    .captures(text)
                    .ok_or_else(|| format!("regex {} does not match", excerpt(re.as_str())))?;
                let m = caps
                    .get(1)
                    .or_else(|| caps.get(0))
                    .map_or("", |m| m.as_str());
                ty.from_text(m)
            }
        }
    }
}

/// Calls `f(path, value)` for every number and bool in `doc`, named by its key path joined
/// with `.` (`AM2301.Temperature`, arrays by index: `values.0`); characters not allowed in a
/// topic level (`/`, `+`, `#`) become `_`. A bare number or bool is called with `""`.
/// Nesting deeper than 32 levels is not descended into.
pub fn leaves(doc: &Json, f: &mut impl FnMut(&str, Value)) {
    let mut path = String::new();
    walk(doc, &mut path, 0, f);
}

fn walk(v: &Json, path: &mut String, depth: usize, f: &mut impl FnMut(&str, Value)) {
    let mut child = |key: &str, v: &Json, path: &mut String| {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.extend(key.chars().map(|c| match c {
            '/' | '+' | '#' | '\0' => '_',
            c => c,
        }));
        walk(v, path, depth + 1, f);
        path.truncate(len);
    };
    match v {
        Json::Number(_) | Json::Bool(_) => {
            if let Some(value) = Value::from_json(v) {
                f(path, value);
            }
        }
        Json::Object(m) if depth < 32 => {
            for (k, v) in m {
                child(k, v, path);
            }
        }
        Json::Array(a) if depth < 32 => {
            let mut buf = itoa::Buffer::new();
            for (i, v) in a.iter().enumerate() {
                child(buf.format(i), v, path);
            }
        }
        _ => {}
    }
}

/// How a timestamp is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// Numbers by magnitude (seconds, milliseconds, microseconds or nanoseconds since the
    /// epoch); text as RFC 3339 / ISO 8601.
    #[default]
    Auto,
    /// RFC 3339 (`2026-12-01T10:00:00Z`, `…+01:00`); without an offset
    /// (`2026-12-01T10:00:00`, as Tasmota sends it) it is read in the `timezone`.
    Rfc3339,
    /// Same as `rfc3339` (ISO 8601 date and time, `T` or a space between them).
    Iso8601,
    /// Seconds since the epoch (fractions allowed).
    EpochS,
    /// Milliseconds since the epoch.
    EpochMs,
    /// Microseconds since the epoch.
    EpochUs,
    /// Nanoseconds since the epoch.
    EpochNs,
}

/// Where and how a device's own timestamp is read (`"timestamp": {"pointer": "/Time",
/// "format": "rfc3339", "timezone": "Europe/Berlin"}`). Without it, the receive time is used.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampConfig {
    /// JSON pointer of the timestamp in the payload (e.g. `/Time`, `/ts`).
    pub pointer: String,
    /// `auto` (default), `rfc3339`, `iso8601`, `epoch_s`, `epoch_ms`, `epoch_us`, `epoch_ns`.
    #[serde(default)]
    pub format: TimeFormat,
    /// IANA time zone for times written without an offset (default `UTC`), e.g.
    /// `Europe/Berlin`.
    #[serde(default)]
    pub timezone: Option<String>,
}

/// A compiled [`TimestampConfig`].
#[derive(Debug, Clone)]
pub struct TimeParser {
    /// The pointer.
    pub pointer: JsonPointer,
    format: TimeFormat,
    tz: jiff::tz::TimeZone,
}

impl PartialEq for TimeParser {
    fn eq(&self, other: &Self) -> bool {
        self.pointer == other.pointer && self.format == other.format && self.tz == other.tz
    }
}

impl TimestampConfig {
    /// Compiles the config; the error names the field.
    pub fn compile(&self) -> Result<TimeParser, (&'static str, String)> {
        check_pointer(&self.pointer).map_err(|e| ("pointer", e))?;
        let tz = match self.timezone.as_deref() {
            None | Some("UTC") | Some("utc") => jiff::tz::TimeZone::UTC,
            Some(name) => jiff::tz::TimeZone::get(name).map_err(|e| {
                (
                    "timezone",
                    format!(
                        "unknown time zone \"{name}\" (an IANA name such as Europe/Berlin): {e}"
                    ),
                )
            })?,
        };
        Ok(TimeParser {
            pointer: JsonPointer::new(&self.pointer),
            format: self.format,
            tz,
        })
    }
}

const MS_MIN: f64 = -62_135_596_800_000.0; // year 1
const MS_MAX: f64 = 253_402_300_799_999.0; // year 9999

impl TimeParser {
    /// The timestamp in `doc` (at the pointer).
    pub fn get(&self, doc: &Json) -> Result<Timestamp, String> {
        let v = self
            .pointer
            .get(doc)
            .ok_or_else(|| format!("no timestamp at {}", self.pointer))?;
        self.parse(v)
    }

    /// Parses a timestamp value (a number, or text).
    pub fn parse(&self, v: &Json) -> Result<Timestamp, String> {
        match v {
            Json::Number(n) => self.epoch(n.as_f64().unwrap_or(f64::NAN)),
            Json::String(s) => match s.trim().parse::<f64>() {
                Ok(f) if !matches!(self.format, TimeFormat::Rfc3339 | TimeFormat::Iso8601) => {
                    self.epoch(f)
                }
                _ => self.text(s),
            },
            other => Err(format!("timestamp {other} is neither a number nor text")),
        }
    }

    fn epoch(&self, n: f64) -> Result<Timestamp, String> {
        let per_ms = match self.format {
            TimeFormat::EpochS => 1e-3,
            TimeFormat::EpochMs => 1.0,
            TimeFormat::EpochUs => 1e3,
            TimeFormat::EpochNs => 1e6,
            TimeFormat::Auto => match n.abs() {
                a if a < 1e11 => 1e-3,
                a if a < 1e14 => 1.0,
                a if a < 1e17 => 1e3,
                _ => 1e6,
            },
            TimeFormat::Rfc3339 | TimeFormat::Iso8601 => {
                return Err(format!("timestamp {n} is a number, not RFC 3339 text"))
            }
        };
        let ms = (n / per_ms).round();
        if !(MS_MIN..=MS_MAX).contains(&ms) {
            return Err(format!("timestamp {n} is out of range"));
        }
        Ok(Timestamp(ms as i64))
    }

    fn text(&self, s: &str) -> Result<Timestamp, String> {
        if matches!(
            self.format,
            TimeFormat::EpochS | TimeFormat::EpochMs | TimeFormat::EpochUs | TimeFormat::EpochNs
        ) {
            return Err(format!("timestamp {} is not a number", excerpt(s)));
        }
        let s = s.trim();
        // Only text with an offset (`Z`, `+01:00`) can be an instant; trying it on local time
        // (Tasmota's `2024-05-01T12:00:00`) would build an error for every message.
        if has_offset(s) {
            if let Ok(ts) = s.parse::<jiff::Timestamp>() {
                return Ok(Timestamp(ts.as_millisecond()));
            }
        }
        let dt = s
            .parse::<jiff::civil::DateTime>()
            .map_err(|_| format!("timestamp {} is not RFC 3339 / ISO 8601", excerpt(s)))?;
        let ts = self
            .tz
            .to_timestamp(dt)
            .map_err(|e| format!("timestamp {}: {e}", excerpt(s)))?;
        Ok(Timestamp(ts.as_millisecond()))
    }
}

/// True when date-and-time text may end in a UTC offset: a `Z`, `+` or `-` after the date
/// (`2024-05-01`, whose dashes are skipped).
fn has_offset(s: &str) -> bool {
    s.get(10..)
        .is_some_and(|time| time.contains(['Z', 'z', '+', '-']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parser(format: TimeFormat, tz: Option<&str>) -> TimeParser {
        TimestampConfig {
            pointer: "/t".into(),
            format,
            timezone: tz.map(Into::into),
        }
        .compile()
        .unwrap()
    }

    #[test]
    fn pointers_find_what_serde_json_finds() {
        let doc = json!({"a": {"b": [10, {"c": true}]}, "a/b": 1, "m~n": 2, "": 3, " ": 4,
                         "list": [0, 1, 2], "01": 5});
        for p in [
            "",
            "/",
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/1/c",
            "/a/b/2",
            "/a~1b",
            "/m~0n",
            "/ ",
            "/list/01",
            "/list/+1",
            "/list/-",
            "/list/1",
            "/01",
            "/a/b/1/c/d",
            "/nope",
            "a",
            "/a/b/x",
            "~1",
            "/a//b",
        ] {
            assert_eq!(JsonPointer::new(p).get(&doc), doc.pointer(p), "{p:?}");
        }
        assert_eq!(JsonPointer::new("/list/2").get(&doc), Some(&json!(2)));
        assert_eq!(JsonPointer::new("/m~0n").to_string(), "/m~0n");
    }

    #[test]
    fn text_values() {
        let a = ValueType::Auto;
        assert_eq!(a.from_text("21.5").unwrap(), Value::F64(21.5));
        assert_eq!(a.from_text(" -3 ").unwrap(), Value::I64(-3));
        assert_eq!(a.from_text("1").unwrap(), Value::U64(1));
        assert_eq!(a.from_text("ON").unwrap(), Value::Bool(true));
        assert_eq!(a.from_text("off").unwrap(), Value::Bool(false));
        assert_eq!(a.from_text("nan").unwrap(), Value::Text("nan".into()));
        assert_eq!(a.from_text("idle").unwrap(), Value::Text("idle".into()));
        let b = ValueType::Bool;
        for (s, v) in [("ON", true), ("Off", false), ("1", true), ("0", false)] {
            assert_eq!(b.from_text(s).unwrap(), Value::Bool(v), "{s}");
        }
        assert!(b.from_text("2").unwrap_err().contains("not a bool"));
        assert!(ValueType::Number
            .from_text("12a")
            .unwrap_err()
            .contains("\"12a\" is not a number"));
        assert_eq!(
            ValueType::Text.from_text("12").unwrap(),
            Value::Text("12".into())
        );
    }

    #[test]
    fn json_values() {
        let a = ValueType::Auto;
        assert_eq!(a.from_json(&json!(3)).unwrap(), Value::U64(3));
        assert_eq!(
            a.from_json(&json!("21.5")).unwrap(),
            Value::Text("21.5".into())
        );
        assert_eq!(
            ValueType::Number.from_json(&json!("21.5")).unwrap(),
            Value::F64(21.5)
        );
        assert_eq!(
            ValueType::Bool.from_json(&json!(1)).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            ValueType::Bool.from_json(&json!("OFF")).unwrap(),
            Value::Bool(false)
        );
        assert!(a.from_json(&json!(null)).unwrap_err().contains("null"));
        assert!(a.from_json(&json!({})).unwrap_err().contains("object"));
        assert!(a.from_json(&json!([1])).unwrap_err().contains("array"));
        assert!(ValueType::Number.from_json(&json!(true)).is_err());
    }

    #[test]
    fn picks() {
        let doc = json!({"AM2301": {"Temperature": 21.5}, "v": [1, 2, 3], "s": "state=run"});
        let p = Pick::new(Some("/AM2301/Temperature"), None, ValueType::Auto).unwrap();
        assert_eq!(p.get("", Some(&doc)).unwrap(), Value::F64(21.5));
        let p = Pick::new(Some("/v/2"), None, ValueType::Auto).unwrap();
        assert_eq!(p.get("", Some(&doc)).unwrap(), Value::U64(3));
        let p = Pick::new(Some("/missing"), None, ValueType::Auto).unwrap();
        assert_eq!(
            p.get("", Some(&doc)).unwrap_err(),
            "no /missing in the payload"
        );
        assert_eq!(p.get("x", None).unwrap_err(), "the payload is not JSON");
        let p = Pick::new(None, Some(r"state=(\w+)"), ValueType::Auto).unwrap();
        assert_eq!(
            p.get("a state=run b", None).unwrap(),
            Value::Text("run".into())
        );
        assert!(p
            .get("nothing", None)
            .unwrap_err()
            .contains("does not match"));
        let p = Pick::new(None, Some(r"P=([0-9.]+)W"), ValueType::Number).unwrap();
        assert_eq!(p.get("P=12.5W", None).unwrap(), Value::F64(12.5));
        let w = Pick::new(None, None, ValueType::Auto).unwrap();
        assert_eq!(w.get("42", Some(&json!(42))).unwrap(), Value::U64(42));
        assert_eq!(w.get("ON", None).unwrap(), Value::Bool(true));
        assert_eq!(
            Pick::new(Some("a"), None, ValueType::Auto).unwrap_err().0,
            "pointer"
        );
        assert_eq!(
            Pick::new(None, Some("("), ValueType::Auto).unwrap_err().0,
            "regex"
        );
        assert_eq!(
            Pick::new(None, Some("(a)(b)"), ValueType::Auto)
                .unwrap_err()
                .0,
            "regex"
        );
        assert_eq!(
            Pick::new(Some("/a"), Some("a"), ValueType::Auto)
                .unwrap_err()
                .0,
            "regex"
        );
    }

    #[test]
    fn every_leaf_by_key_path() {
        let doc =
            json!({"temperature": 21.5, "state": "ON", "nested": {"a/b": true, "arr": [1, -2]}});
        let mut got = vec![];
        leaves(&doc, &mut |k, v| got.push((k.to_string(), v)));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("nested.a_b".to_string(), Value::Bool(true)),
                ("nested.arr.0".to_string(), Value::U64(1)),
                ("nested.arr.1".to_string(), Value::I64(-2)),
                ("temperature".to_string(), Value::F64(21.5)),
            ]
        );
        let mut deep = json!(1);
        for _ in 0..100 {
            deep = json!({ "x": deep });
        }
        let mut n = 0;
        leaves(&deep, &mut |_, _| n += 1);
        assert_eq!(n, 0);
    }

    #[test]
    fn timestamps() {
        let auto = parser(TimeFormat::Auto, None);
        assert_eq!(
            auto.parse(&json!(1_732_350_000)).unwrap(),
            Timestamp(1_732_350_000_000)
        );
        assert_eq!(
            auto.parse(&json!(1_732_350_000_123i64)).unwrap(),
            Timestamp(1_732_350_000_123)
        );
        assert_eq!(
            auto.parse(&json!(1_732_350_000_123_456i64)).unwrap(),
            Timestamp(1_732_350_000_123)
        );
        assert_eq!(
            auto.parse(&json!("1732350000.5")).unwrap(),
            Timestamp(1_732_350_000_500)
        );
        // Every form of offset: `Z`, `z`, `+hh:mm`, `-hh:mm`.
        for (text, ms) in [
            ("2024-11-23T08:20:00Z", 1_732_350_000_000),
            ("2024-11-23T09:20:00+01:00", 1_732_350_000_000),
            ("2024-11-23T03:20:00.250-05:00", 1_732_350_000_250),
            ("2024-11-23 08:20:00z", 1_732_350_000_000),
        ] {
            assert_eq!(auto.parse(&json!(text)).unwrap(), Timestamp(ms), "{text}");
        }
        // Tasmota: no offset, UTC by default.
        let rfc = parser(TimeFormat::Rfc3339, None);
        assert_eq!(
            rfc.parse(&json!("2024-11-23T08:20:00")).unwrap(),
            Timestamp(1_732_350_000_000)
        );
        assert!(rfc.parse(&json!(1_732_350_000)).is_err());
        let berlin = parser(TimeFormat::Iso8601, Some("Europe/Berlin"));
        assert_eq!(
            berlin.parse(&json!("2024-11-23T09:20:00")).unwrap(),
            Timestamp(1_732_350_000_000)
        );
        assert_eq!(
            berlin.parse(&json!("2024-07-01 10:00:00")).unwrap(),
            Timestamp(1_719_820_800_000)
        );
        let ms = parser(TimeFormat::EpochMs, None);
        assert_eq!(
            ms.parse(&json!(1_732_350_000_123i64)).unwrap(),
            Timestamp(1_732_350_000_123)
        );
        assert!(ms
            .parse(&json!("yesterday"))
            .unwrap_err()
            .contains("not a number"));
        assert!(auto
            .parse(&json!(1e300))
            .unwrap_err()
            .contains("out of range"));
        assert!(auto.parse(&json!(null)).is_err());
        assert!(auto.parse(&json!("soon")).unwrap_err().contains("RFC 3339"));
        assert_eq!(
            auto.get(&json!({"t": 1_732_350_000})).unwrap(),
            Timestamp(1_732_350_000_000)
        );
        assert!(auto
            .get(&json!({}))
            .unwrap_err()
            .contains("no timestamp at /t"));
        let bad = TimestampConfig {
            pointer: "/t".into(),
            format: TimeFormat::Auto,
            timezone: Some("Mars/Olympus".into()),
        };
        assert_eq!(bad.compile().unwrap_err().0, "timezone");
    }
}
