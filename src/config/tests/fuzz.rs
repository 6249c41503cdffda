//! Property test over the configuration loader: structural mutations of
//! `osgate.json.example` (keys deleted, wrong types, huge numbers, unicode, unknown keys,
//! nesting up to 100 000 levels) must give a configuration or configuration errors, never a
//! panic. It runs inside `cargo test` with a bounded number of cases (`OSGATE_FUZZ_CASES`,
//! default 256; CI runs more in a step of its own).

use proptest::prelude::*;
use serde_json::Value;

use crate::config::parse::{guard_panics, parse_document};
use crate::config::{remote, Document};

/// Cases per property: `OSGATE_FUZZ_CASES`, else 256.
pub fn fuzz_cases() -> u32 {
    std::env::var("OSGATE_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

/// One structural change, applied at the node picked by `at` (an index into every node).
#[derive(Debug, Clone)]
enum Mutation {
    Delete,
    Replace(Value),
    /// Replaced by `depth` nested arrays (or objects), written into the text afterwards.
    Deep {
        depth: usize,
        objects: bool,
    },
    AddKey(String, Value),
}

fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(Value::from(1e308)),
        Just(Value::from(-1e308)),
        Just(Value::from(u64::MAX)),
        Just(Value::from(i64::MIN)),
        Just(Value::from(0)),
        Just(Value::from(-1)),
        ".{0,40}".prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "\u{0}",
            "é",
            "°C",
            "🦀🦀",
            "\u{202e}rtl",
            "\u{feff}",
            "a/b",
            "#",
            "+",
            "${X}",
            "${",
            "$${X}",
            "1x",
            "500ms",
            "-5s",
            "99999999999999999999h",
            "mqtt://",
            "tcp://h:1",
            "mqtt://127.0.0.1:0",
            "0.0.0.0:1883",
            "[::1]:1",
            "ABCD",
            "f23",
        ])
        .prop_map(Value::from),
        Just(Value::Array(vec![])),
        Just(Value::Object(Default::default())),
        Just(serde_json::json!([1, "a", null, {"x": []}])),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::Delete),
        4 => odd_value().prop_map(Mutation::Replace),
        2 => (
            prop_oneof![
                1usize..140,
                prop::sample::select(vec![127usize, 128, 129, 1_000, 10_000, 100_000])
            ],
            any::<bool>()
        )
            .prop_map(|(depth, objects)| Mutation::Deep { depth, objects }),
        2 => (".{0,12}", odd_value()).prop_map(|(k, v)| Mutation::AddKey(k, v)),
    ]
}

/// Every node of `v`, depth first: `v` itself, then its children.
fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

/// Applies `m` at node number `at` (of `count(v)`), never at the root itself.
fn apply(v: &mut Value, mut at: usize, m: &Mutation, marker: &mut Vec<(String, String)>) {
    fn walk(
        v: &mut Value,
        at: &mut usize,
        m: &Mutation,
        marker: &mut Vec<(String, String)>,
    ) -> bool {
        let children: Vec<String> = match v {
            Value::Object(o) => o.keys().cloned().collect(),
            Value::Array(a) => (0..a.len()).map(|i| i.to_string()).collect(),
            _ => return false,
        };
        for key in children {
            if *at == 0 {
                match (v, m) {
                    (Value::Object(o), Mutation::Delete) => {
                        o.remove(&key);
                    }
                    (Value::Array(a), Mutation::Delete) => {
                        a.remove(key.parse::<usize>().unwrap_or(0));
                    }
                    (parent, m) => {
                        let slot = match parent {
                            Value::Object(o) => o.get_mut(&key),
                            Value::Array(a) => a.get_mut(key.parse::<usize>().unwrap_or(0)),
                            _ => None,
                        };
                        if let Some(slot) = slot {
                            match m {
                                Mutation::Replace(x) => *slot = x.clone(),
                                Mutation::Deep { depth, objects } => {
                                    let id = format!("\u{1}deep{}", marker.len());
                                    let (open, close) = if *objects {
                                        ("{\"a\":", "}")
                                    } else {
                                        ("[", "]")
                                    };
                                    let text =
                                        format!("{}0{}", open.repeat(*depth), close.repeat(*depth));
                                    marker.push((Value::from(id.clone()).to_string(), text));
                                    *slot = Value::from(id);
                                }
                                Mutation::AddKey(k, x) => match slot {
                                    Value::Object(o) => {
                                        o.insert(k.clone(), x.clone());
                                    }
                                    other => *other = x.clone(),
                                },
                                Mutation::Delete => {}
                            }
                        }
                    }
                }
                return true;
            }
            *at -= 1;
            let child = match v {
                Value::Object(o) => o.get_mut(&key),
                Value::Array(a) => a.get_mut(key.parse::<usize>().unwrap_or(0)),
                _ => None,
            };
            if let Some(c) = child {
                if walk(c, at, m, marker) {
                    return true;
                }
            }
        }
        false
    }
    walk(v, &mut at, m, marker);
}

/// The example config as JSON text after `muts`.
fn mutated(muts: &[(usize, Mutation)]) -> String {
    let mut v: Value = serde_json::from_str(include_str!("../../../osgate.json.example")).unwrap();
    let mut markers = Vec::new();
    for (at, m) in muts {
        let n = count(&v).saturating_sub(1).max(1);
        apply(&mut v, at % n, m, &mut markers);
    }
    let mut text = v.to_string();
    for (marker, deep) in markers {
        text = text.replace(&marker, &deep);
    }
    text
}

/// Loads `text` as a local file and as a remote body would be: a configuration or errors that
/// each say something; never a panic (the loader's own panic guard is bypassed here).
fn load_all_ways(text: &str) {
    let env = |k: &str| (k == "X").then(|| "x".to_string());
    if let Ok(doc) = Document::parse(text.as_bytes()) {
        if let Err(errs) = parse_document(doc, &env) {
            assert!(!errs.0.is_empty());
            assert!(errs.0.iter().all(|e| !e.message.is_empty()), "{errs}");
        }
    }
    // A remote body: parse_body goes through from_document, whose guard would hide a panic,
    // so this checks its own parsing around the document.
    let _ = remote::parse_body(text.as_bytes(), &Value::Null, &env);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), ..ProptestConfig::default() })]

    #[test]
    fn mutated_example_configs_never_panic(
        muts in prop::collection::vec((any::<usize>(), mutation()), 1..6)
    ) {
        load_all_ways(&mutated(&muts));
    }

    #[test]
    fn truncated_or_garbled_text_never_panics(cut in any::<usize>(), byte in any::<u8>(), at in any::<usize>()) {
        let text = include_str!("../../../osgate.json.example");
        let mut bytes = text.as_bytes()[..cut % text.len()].to_vec();
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = byte;
        }
        if let Ok(doc) = Document::parse(&bytes) {
            let _ = parse_document(doc, &|_| None);
        }
    }
}

/// A former crash: an array nested 200 levels deep in a channel.
#[test]
fn deeply_nested_channel_field_is_a_config_error() {
    for depth in [129, 200, 100_000] {
        let text = include_str!("../../../osgate.json.example").replacen(
            "\"signal\": \"sine\",",
            &format!(
                "\"signal\": \"sine\", \"x\": {}0{},",
                "[".repeat(depth),
                "]".repeat(depth)
            ),
            1,
        );
        let errs = parse_document(Document::parse(text.as_bytes()).unwrap(), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            errs.contains(
                "connectors[0] \"demo\".devices[0].channels[0]: nested more than 128 levels deep"
            ),
            "{errs}"
        );
        let e = remote::parse_body(text.as_bytes(), &Value::Null, &|_| None).unwrap_err();
        assert!(e.contains("nested more than 128 levels deep"), "{e}");
    }
}

/// A panic inside parsing becomes a configuration error, not a dead process.
#[test]
fn a_panic_while_parsing_is_a_config_error() {
    let errs = guard_panics(|| panic!("boom")).unwrap_err();
    assert!(errs.to_string().contains("internal error"), "{errs}");
    assert!(errs.to_string().contains("boom"), "{errs}");
}
