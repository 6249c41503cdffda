//! A configuration document as read, before validation, kept small for big device lists.
//!
//! A `serde_json::Value` tree costs about ten times its JSON text (a three-key channel object is
//! a B-tree node of some 600 bytes plus its strings), so a 10 000-channel config would need
//! megabytes for a moment just to be read. A [`Document`] therefore holds every top-level
//! section as a `Value` except `connectors`, which stays JSON text; [`Entry`] then takes a
//! connector or a device apart with its `devices`/`channels` list still as text, and each
//! channel becomes a `Value` only while it is parsed. The largest tree ever built is one
//! channel's.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The top level of a configuration: sections as values, `connectors` as JSON text.
#[derive(Debug, Clone, Default)]
pub struct Document {
    sections: Map<String, Value>,
    connectors: Option<Box<RawValue>>,
    /// Environment overrides merged in: (variable, dotted path it sets), so errors at those
    /// places can name the variable.
    pub env_overrides: Vec<(String, String)>,
}

/// Why a text is not a configuration document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentError {
    /// Not JSON at all.
    Syntax(String),
    /// JSON, but not an object.
    NotAnObject,
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocumentError::Syntax(e) => write!(f, "not valid JSON: {e}"),
            DocumentError::NotAnObject => f.write_str("the configuration must be a JSON object"),
        }
    }
}

impl Document {
    /// Reads a document from JSON text.
    pub fn parse(text: &[u8]) -> Result<Document, DocumentError> {
        serde_json::from_slice::<Document>(text).map_err(|e| {
            if e.is_data() {
                DocumentError::NotAnObject
            } else {
                DocumentError::Syntax(describe_json_error(&e))
            }
        })
    }

    /// A document from a value (small configs: tests, probes). `None` when it is not an object.
    pub fn from_value(value: Value) -> Option<Document> {
        let Value::Object(mut sections) = value else {
            return None;
        };
        let connectors = sections.remove("connectors").map(to_raw);
        Some(Document {
            sections,
            connectors,
            env_overrides: Vec::new(),
        })
    }

    /// A top-level section (not `connectors`).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.sections.get(key)
    }

    /// Sets a top-level section (not `connectors`).
    pub fn insert(&mut self, key: &str, value: Value) {
        self.sections.insert(key.to_string(), value);
    }

    /// Takes a top-level section (not `connectors`) out.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.sections.remove(key)
    }

    /// Merges `over` in as figment does: objects merge key by key, anything else replaces.
    /// Fails only when `over` merges into a `connectors` list that cannot be read as a tree
    /// (nested too deeply); the document is then left as it was.
    pub fn merge(&mut self, over: Value) -> Result<(), DocumentError> {
        let Value::Object(over) = over else {
            return Ok(());
        };
        for (k, v) in over {
            if k == "connectors" {
                // Rare (an override of a list): the one place the list becomes a tree.
                let mut base = match &self.connectors {
                    Some(raw) if v.is_object() => value_of(raw).map_err(DocumentError::Syntax)?,
                    _ => Value::Null,
                };
                merge(&mut base, v);
                self.connectors = Some(to_raw(base));
            } else {
                match self.sections.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        self.sections.insert(k, v);
                    }
                }
            }
        }
        Ok(())
    }

    /// The document as compact JSON text, keys in the order a `Value` would print them.
    pub fn to_text(&self) -> String {
        let mut keys: Vec<&str> = self.sections.keys().map(String::as_str).collect();
        if self.connectors.is_some() {
            keys.push("connectors");
            keys.sort_unstable();
        }
        let mut out = String::with_capacity(self.connectors.as_ref().map_or(0, |c| c.get().len()));
        out.push('{');
        for (i, k) in keys.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&Value::from(k).to_string());
            out.push(':');
            match (k, &self.connectors) {
                ("connectors", Some(raw)) => minify_into(&mut out, raw.get()),
                _ => out.push_str(&self.sections[k].to_string()),
            }
        }
        out.push('}');
        out
    }

    /// Splits the document into its sections and the `connectors` text.
    pub fn into_parts(self) -> (Map<String, Value>, Option<Box<RawValue>>) {
        (self.sections, self.connectors)
    }
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Document;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Document, A::Error> {
                let mut doc = Document::default();
                while let Some(k) = m.next_key::<String>()? {
                    if k == "connectors" {
                        doc.connectors = Some(m.next_value()?);
                    } else {
                        let v = m.next_value()?;
                        doc.sections.insert(k, v);
                    }
                }
                Ok(doc)
            }
        }
        d.deserialize_map(V)
    }
}

/// Merges `over` into `base` as figment does: objects merge key by key, anything else replaces.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn to_raw(v: Value) -> Box<RawValue> {
    // A `Value` has string keys and finite numbers, so it always serializes; the text form of
    // a value that did not would be `null` (reported by validation, never a panic).
    serde_json::value::to_raw_value(&v).unwrap_or_default()
}

/// Deepest nesting of arrays and objects a configuration may use (serde_json's limit for a
/// value tree). Raw text skips nested values without a limit, so a too-deep value is found
/// only when its part of the document becomes a tree, and reported then.
pub const MAX_DEPTH: usize = 128;

/// Parses `raw` into a value (one channel: small). `raw` is valid JSON (it was checked when it
/// was read) but may be nested deeper than a tree can be ([`MAX_DEPTH`]): that is an error
/// message, never a panic.
pub fn value_of(raw: &RawValue) -> Result<Value, String> {
    serde_json::from_str(raw.get()).map_err(|e| describe_json_error(&e))
}

/// A serde_json error in words a person can act on (the depth limit named as such).
pub fn describe_json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.strip_prefix("recursion limit exceeded") {
        Some(at) => format!("nested more than {MAX_DEPTH} levels deep{at}"),
        None => text,
    }
}

/// `raw` as short text for an error message: its first 60 characters.
fn excerpt(raw: &RawValue) -> String {
    let s = raw.get();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Appends valid JSON `json` to `out` without the whitespace between tokens.
fn minify_into(out: &mut String, json: &str) {
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !c.is_ascii_whitespace() {
            out.push(c);
            in_string = c == '"';
        }
    }
}

/// A config object taken apart: its fields as values, except one list (`devices` of a
/// connector, `channels` of a device), whose elements stay JSON text.
#[derive(Debug, Default)]
pub struct Entry<'a> {
    /// Every other field.
    pub fields: Map<String, Value>,
    /// The list, as written (absent: `None`).
    pub list: Option<&'a RawValue>,
}

impl<'a> Entry<'a> {
    /// Takes `raw` apart around the list field `list_key`. The error says why it cannot be:
    /// not an object, or a field nested too deeply.
    pub fn parse(raw: &'a RawValue, list_key: &'static str) -> Result<Entry<'a>, String> {
        if !raw.get().starts_with('{') {
            return Err(format!("expected an object, got {}", excerpt(raw)));
        }
        let mut de = serde_json::Deserializer::from_str(raw.get());
        EntrySeed(list_key)
            .deserialize(&mut de)
            .map_err(|e| describe_json_error(&e))
    }

    /// The list's elements, as written. A list that is not an array is reported at
    /// `path.list_key` (and yields nothing); `null` or absent is empty.
    pub fn items(
        &self,
        list_key: &str,
        path: &str,
        errs: &mut Vec<super::ConfigError>,
    ) -> Vec<&'a RawValue> {
        list_items(self.list, list_key, path, errs)
    }
}

/// The elements of the list `list_key` at `path`, as written. A list that is not an array is
/// reported at `path.list_key` (and yields nothing); `null` or absent is empty.
pub fn list_items<'a>(
    list: Option<&'a RawValue>,
    list_key: &str,
    path: &str,
    errs: &mut Vec<super::ConfigError>,
) -> Vec<&'a RawValue> {
    let Some(raw) = list else {
        return Vec::new();
    };
    match serde_json::from_str::<Vec<&RawValue>>(raw.get()) {
        Ok(items) => items,
        Err(_) if raw.get() == "null" => Vec::new(),
        Err(_) => {
            errs.push(super::ConfigError::new(
                super::join(path, list_key),
                format!("expected an array, got {}", excerpt(raw)),
            ));
            Vec::new()
        }
    }
}

struct EntrySeed(&'static str);

impl<'de> DeserializeSeed<'de> for EntrySeed {
    type Value = Entry<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Entry<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed {
    type Value = Entry<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Entry<'de>, A::Error> {
        let mut e = Entry::default();
        while let Some(k) = m.next_key::<String>()? {
            if k == self.0 {
                e.list = Some(m.next_value()?);
            } else {
                let v: Value = m.next_value()?;
                e.fields.insert(k, v);
            }
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_connectors_as_text_and_prints_like_a_value() {
        let text = br#"{ "gateway": {"id": "a"},
            "connectors": [ {"name": "x y", "s": "a \" b\\"} ], "sinks": [] }"#;
        let doc = Document::parse(text).unwrap();
        let v: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(doc.to_text(), v.to_string());
        assert_eq!(doc.get("gateway"), Some(&json!({"id": "a"})));
    }

    #[test]
    fn tells_syntax_from_shape() {
        assert_eq!(
            Document::parse(b"[1]").unwrap_err(),
            DocumentError::NotAnObject
        );
        assert!(matches!(
            Document::parse(b"{\"a\":").unwrap_err(),
            DocumentError::Syntax(_)
        ));
    }

    #[test]
    fn merges_overrides_into_sections_and_lists() {
        let mut doc = Document::from_value(json!({"gateway": {"id": "a", "x": 1},
            "connectors": [1]}))
        .unwrap();
        doc.merge(
            json!({"gateway": {"id": "b"}, "rpc": {"listen": "127.0.0.1:1"},
            "connectors": {"0": 2}}),
        )
        .unwrap();
        let v: Value = serde_json::from_str(&doc.to_text()).unwrap();
        assert_eq!(
            v,
            json!({"gateway": {"id": "b", "x": 1}, "rpc": {"listen": "127.0.0.1:1"},
                   "connectors": {"0": 2}})
        );
    }

    #[test]
    fn entry_keeps_its_list_as_text() {
        let raw: Box<RawValue> =
            serde_json::from_str(r#"{"name": "d", "channels": [{"a": 1}, 2], "x": true}"#).unwrap();
        let e = Entry::parse(&raw, "channels").unwrap();
        assert_eq!(
            e.fields,
            json!({"name": "d", "x": true}).as_object().unwrap().clone()
        );
        let mut errs = Vec::new();
        let items = e.items("channels", "p", &mut errs);
        assert_eq!(
            items.iter().map(|r| r.get()).collect::<Vec<_>>(),
            [r#"{"a": 1}"#, "2"]
        );
        let raw: Box<RawValue> = serde_json::from_str(r#"{"channels": 5}"#).unwrap();
        let e = Entry::parse(&raw, "channels").unwrap();
        assert!(e.items("channels", "p", &mut errs).is_empty());
        assert_eq!(errs[0].to_string(), "p.channels: expected an array, got 5");
        let raw: Box<RawValue> = serde_json::from_str("[1]").unwrap();
        assert_eq!(
            Entry::parse(&raw, "channels").unwrap_err(),
            "expected an object, got [1]"
        );
    }

    #[test]
    fn too_deep_values_are_errors_not_panics() {
        let deep = |n: usize| format!("{}0{}", "[".repeat(n), "]".repeat(n));
        // Raw text is skipped without a depth limit; the tree is where it is found.
        let raw: Box<RawValue> = serde_json::from_str(&deep(100_000)).unwrap();
        let e = value_of(&raw).unwrap_err();
        assert!(e.starts_with("nested more than 128 levels deep"), "{e}");
        let text = format!(r#"{{"name": "d", "x": {}}}"#, deep(200));
        let raw: Box<RawValue> = serde_json::from_str(&text).unwrap();
        let e = Entry::parse(&raw, "channels").unwrap_err();
        assert!(e.starts_with("nested more than 128 levels deep"), "{e}");
        let mut doc =
            Document::parse(format!(r#"{{"connectors": {}}}"#, deep(300)).as_bytes()).unwrap();
        assert!(doc.merge(json!({"connectors": {"0": 1}})).is_err());
        let e = Document::parse(format!(r#"{{"gateway": {}}}"#, deep(300)).as_bytes()).unwrap_err();
        assert!(
            e.to_string().contains("nested more than 128 levels deep"),
            "{e}"
        );
    }
}
