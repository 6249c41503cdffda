//! Parsing only the parts of a JSON document that a set of pointers names.
//!
//! A listener's mapping usually reads two or three fields of a message that has dozens
//! (Tasmota's `ENERGY` object, a Shelly status). Parsed whole into a `serde_json::Value`, every
//! member costs a key string and a map entry, per message. [`JsonPaths`] is the pointers'
//! tokens as a tree; [`JsonPaths::parse`] builds the values on those paths and skips every other
//! member and element (serde_json still checks them as JSON, so a broken payload fails the
//! same way). Looking the pointers up in the result gives what they give in the whole document.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value as Json};

use super::payload::JsonPointer;

/// The tokens of a set of JSON pointers, as a tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JsonPaths {
    /// The whole value here is wanted (a pointer ends here).
    whole: bool,
    /// Members (or array elements, by decimal index) on the way to a wanted value.
    children: Vec<(Box<str>, JsonPaths)>,
}

impl JsonPaths {
    /// Adds a pointer. One that is not a pointer (see [`JsonPointer`]) finds nothing anyway.
    pub fn add(&mut self, p: &JsonPointer) {
        let Some(tokens) = p.tokens() else {
            return;
        };
        let mut node = self;
        for t in tokens {
            if node.whole {
                return;
            }
            let i = match node.children.iter().position(|(k, _)| k == t) {
                Some(i) => i,
                None => {
                    node.children.push((t.clone(), JsonPaths::default()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[i].1;
        }
        node.whole = true;
        node.children.clear();
    }

    /// Parses `text`, keeping the values on the paths; fails as `serde_json::from_str` does.
    pub fn parse(&self, text: &str) -> serde_json::Result<Json> {
        let mut de = serde_json::Deserializer::from_str(text);
        let v = self.deserialize(&mut de)?;
        de.end()?;
        Ok(v)
    }

    fn child(&self, token: &str) -> Option<&JsonPaths> {
        self.children
            .iter()
            .find(|(k, _)| &**k == token)
            .map(|(_, c)| c)
    }
}

impl<'de> DeserializeSeed<'de> for &JsonPaths {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        if self.whole {
            Json::deserialize(d)
        } else {
            d.deserialize_any(self)
        }
    }
}

/// On the way to a wanted value: a scalar here holds nothing a pointer could name below it,
/// so it becomes `null` (no copy of a string that is not wanted).
impl<'de> Visitor<'de> for &JsonPaths {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_str<E>(self, _: &str) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut out = Map::new();
        while let Some(Key(key)) = map.next_key()? {
            match self.child(&key) {
                Some(c) => {
                    let v = map.next_value_seed(c)?;
                    out.insert(key.into_owned(), v);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Json::Object(out))
    }

    /// Elements before the last wanted one keep their places as `null`; those after it are
    /// skipped without a place.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut out = Vec::new();
        let mut index = itoa::Buffer::new();
        let wanted = self
            .children
            .iter()
            .filter_map(|(k, _)| k.parse::<usize>().ok());
        let Some(last) = wanted.max() else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Json::Array(out));
        };
        while out.len() <= last {
            let next = match self.child(index.format(out.len())) {
                Some(c) => seq.next_element_seed(c)?,
                None => seq.next_element::<IgnoredAny>()?.map(|_| Json::Null),
            };
            match next {
                Some(v) => out.push(v),
                None => return Ok(Json::Array(out)),
            }
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Json::Array(out))
    }
}

/// An object key, borrowed from the text when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(ps: &[&str]) -> JsonPaths {
        let mut t = JsonPaths::default();
        for p in ps {
            t.add(&JsonPointer::new(p));
        }
        t
    }

    const TASMOTA: &str = r#"{"Time":"2026-12-07T10:00:00","ENERGY":{"TotalStartTime":"2026-01-01T00:00:00",
        "Total":12.5,"Yesterday":1.1,"Today":0.4,"Power":230,"ApparentPower":[231,232,{"x":1}],
        "Voltage":229.8,"Factor":0.99,"Current":1.004,"a~b":"tilde","c/d":"slash","esc\"aped":7}}"#;

    #[test]
    fn the_pointers_find_what_they_find_in_the_whole_document() {
        let whole: Json = serde_json::from_str(TASMOTA).unwrap();
        let sets: &[&[&str]] = &[
            &["/ENERGY/Power", "/ENERGY/Voltage", "/Time"],
            &[
                "/ENERGY/ApparentPower/1",
                "/ENERGY/ApparentPower/2/x",
                "/ENERGY/a~0b",
            ],
            &[
                "/ENERGY/c~1d",
                "/ENERGY/esc\"aped",
                "/ENERGY/ApparentPower/01",
                "/nope/x",
            ],
            &["/ENERGY", "/ENERGY/Power"],
            &[
                "/ENERGY/Power/x",
                "/Time/0",
                "/ENERGY/ApparentPower/9",
                "/ENERGY/ApparentPower/-",
            ],
            &[""],
        ];
        for set in sets {
            let pruned = paths(set).parse(TASMOTA).unwrap();
            for p in *set {
                let ptr = JsonPointer::new(p);
                assert_eq!(ptr.get(&pruned), ptr.get(&whole), "{p:?} of {set:?}");
            }
        }
        // What is not asked for is not built.
        let pruned = paths(&["/ENERGY/Power"]).parse(TASMOTA).unwrap();
        assert_eq!(pruned, serde_json::json!({"ENERGY": {"Power": 230}}));
        let pruned = paths(&["/l/1"])
            .parse(r#"{"l":[1,2,3,4],"m":[5]}"#)
            .unwrap();
        assert_eq!(pruned, serde_json::json!({"l": [null, 2]}));
    }

    #[test]
    fn broken_json_fails_as_it_does_whole() {
        let t = paths(&["/a"]);
        for bad in [
            "",
            "{",
            r#"{"a":1,}"#,
            r#"{"a":1} x"#,
            r#"{"b":[1,2}"#,
            r#"{"b":tru}"#,
            r#"{"a":1,"b":"\x"}"#,
        ] {
            assert!(t.parse(bad).is_err(), "{bad:?}");
            assert!(serde_json::from_str::<Json>(bad).is_err(), "{bad:?}");
        }
        assert_eq!(t.parse("5").unwrap(), Json::Null);
        assert_eq!(
            t.parse(r#"{"a":[1]}"#).unwrap(),
            serde_json::json!({"a": [1]})
        );
    }
}
