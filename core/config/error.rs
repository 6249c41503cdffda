//! Configuration errors: each names its place (`connectors[1] "plc".devices[0].channels[2].type`)
//! and all of them are collected and reported at once.

use std::fmt;

/// One problem in the configuration, with the place it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: `sinks[0] "local".qos`, `connectors[1] "plc".devices[0].channels[2].type`.
    pub path: String,
    /// What is wrong, with the offending value and what is allowed.
    pub message: String,
}

impl ConfigError {
    /// A new error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// Joins a base path and a field (`a.b` + `c` → `a.b.c`, `a` + `[2]` → `a[2]`).
pub fn join(base: &str, field: &str) -> String {
    if base.is_empty() {
        field.to_string()
    } else if field.is_empty() {
        base.to_string()
    } else if field.starts_with('[') {
        format!("{base}{field}")
    } else {
        format!("{base}.{field}")
    }
}

/// Deserializes `value` into `T`, turning a serde error into a [`ConfigError`] whose path is
/// `base` plus the path inside the value. `extra_fields` are the keys the caller already took
/// out of the object (common fields), listed in "unknown field" messages so that they show every
/// field the user may write.
pub fn deserialize_at<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    base: &str,
    extra_fields: &[&str],
) -> Result<T, ConfigError> {
    // Only the deserializing is generic: the error's wording is compiled once, not once per
    // settings type of every protocol.
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| located(e, base, extra_fields))
}

/// The [`ConfigError`] of [`deserialize_at`].
fn located(
    e: serde_path_to_error::Error<serde_json::Error>,
    base: &str,
    extra_fields: &[&str],
) -> ConfigError {
    let inner = e.path().to_string();
    let inner = if inner == "." { String::new() } else { inner };
    let msg = e.inner().to_string();
    let msg = strip_serde_position(&msg);
    // Turn serde's "unknown field `x`, expected one of `a`, `b`" into a path that names `x`.
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some((name, tail)) = rest.split_once('`') {
            let mut expected: Vec<String> = extra_fields.iter().map(|s| s.to_string()).collect();
            let tail = tail.trim_start_matches(", ");
            let listed = tail
                .trim_start_matches("expected one of ")
                .trim_start_matches("expected ")
                .trim_start_matches("there are no fields");
            for f in listed.replace("` or `", "`,`").split(',') {
                let f = f.trim().trim_matches('`');
                if !f.is_empty() && !expected.iter().any(|x| x == f) {
                    expected.push(f.to_string());
                }
            }
            // serde_path_to_error already ends the path with the unknown key.
            let at = if inner == name || inner.ends_with(&format!(".{name}")) {
                join(base, &inner)
            } else {
                join(&join(base, &inner), name)
            };
            return ConfigError::new(
                at,
                format!("unknown field, expected one of: {}", expected.join(", ")),
            );
        }
    }
    ConfigError::new(join(base, &inner), plain_words(&msg))
}

/// What a Rust type in a serde message means to someone writing JSON.
fn expected_words(rust: &str) -> Option<&'static str> {
    Some(match rust {
        "f32" | "f64" => "a number",
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "usize" | "u128" => "a whole number, 0 or more",
        "i8" => "a whole number from -128 to 127",
        "i16" => "a whole number from -32768 to 32767",
        "i32" | "i64" | "isize" | "i128" => "a whole number",
        "a boolean" => "true or false",
        "a sequence" => "an array",
        "a map" => "an object",
        "a string" => "a string",
        _ => return None,
    })
}

/// serde's `invalid type: string "20", expected f64` in words: `expected a number, got the
/// string "20"`. Messages of other shapes are kept as they are.
pub(crate) fn plain_words(msg: &str) -> String {
    let parsed = msg
        .strip_prefix("invalid type: ")
        .or_else(|| msg.strip_prefix("invalid value: "))
        .and_then(|rest| rest.rsplit_once(", expected "));
    let Some((got, expected)) = parsed else {
        return msg.to_string();
    };
    let Some(words) = expected_words(expected.trim()) else {
        return msg.to_string();
    };
    // `string "20"`, `integer `70000``, `floating point `1.5``, `map`, `sequence`, `boolean `true``.
    let got = got.replace('`', "");
    let got = if let Some(v) = got.strip_prefix("string ") {
        format!("the string {v}")
    } else if let Some(v) = got
        .strip_prefix("integer ")
        .or_else(|| got.strip_prefix("floating point "))
    {
        v.to_string()
    } else if let Some(v) = got.strip_prefix("boolean ") {
        v.to_string()
    } else {
        match got.as_str() {
            "map" => "an object".to_string(),
            "sequence" => "an array".to_string(),
            "null" | "unit value" => "null".to_string(),
            other => other.to_string(),
        }
    };
    format!("expected {words}, got {got}")
}

fn strip_serde_position(msg: &str) -> String {
    // serde_json appends " at line X column Y" only when parsing text; values have none, but
    // keep this robust for both.
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct S {
        a: u32,
        b: Option<String>,
    }

    #[test]
    fn unknown_field_names_itself_and_lists_all_fields() {
        let e = deserialize_at::<S>(serde_json::json!({"a": 1, "c": 2}), "x[0]", &["name"])
            .unwrap_err();
        assert_eq!(e.path, "x[0].c");
        assert_eq!(e.message, "unknown field, expected one of: name, a, b");
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = deserialize_at::<S>(serde_json::json!({"a": "one"}), "x", &[]).unwrap_err();
        assert_eq!(e.path, "x.a");
        assert_eq!(
            e.message,
            "expected a whole number from 0 to 4294967295, got the string \"one\""
        );
    }

    #[test]
    fn type_errors_speak_json_not_rust() {
        for (serde, words) in [
            (
                "invalid type: string \"20\", expected f64",
                "expected a number, got the string \"20\"",
            ),
            (
                "invalid type: string \"1\", expected u8",
                "expected a whole number from 0 to 255, got the string \"1\"",
            ),
            (
                "invalid value: integer `70000`, expected u16",
                "expected a whole number from 0 to 65535, got 70000",
            ),
            (
                "invalid type: floating point `1.5`, expected i64",
                "expected a whole number, got 1.5",
            ),
            (
                "invalid type: map, expected a boolean",
                "expected true or false, got an object",
            ),
            (
                "invalid type: integer `5`, expected a string",
                "expected a string, got 5",
            ),
            (
                "unknown variant `x`, expected `a` or `b`",
                "unknown variant `x`, expected `a` or `b`",
            ),
            (
                "invalid type: string \"x\", expected a duration",
                "invalid type: string \"x\", expected a duration",
            ),
        ] {
            assert_eq!(plain_words(serde), words);
        }
    }
}
