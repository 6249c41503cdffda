//! Durations written as strings in the config (`"500ms"`, `"15s"`, `"5m"`, `"1h 30m"`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration from the config. Accepts humantime strings; a bare number is rejected so that
/// `"interval": 1000` cannot silently mean milliseconds to one reader and seconds to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    /// Builds a duration from milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }

    /// Builds a duration from seconds.
    pub const fn from_secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }

    /// The std duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Dur> for Duration {
    fn from(d: Dur) -> Duration {
        d.0
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// Parses `"500ms"`, `"15s"`, `"5m"`, `"1h 30m"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|_| {
        format!("invalid duration \"{s}\": expected a number with a unit, e.g. \"500ms\", \"15s\", \"5m\"")
    })
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"500ms\", \"15s\" or \"5m\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur, E> {
                parse_duration(s).map(Dur).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let p = |s: &str| {
            serde_json::from_value::<Dur>(serde_json::json!(s))
                .unwrap()
                .0
        };
        assert_eq!(p("500ms"), Duration::from_millis(500));
        assert_eq!(p("15s"), Duration::from_secs(15));
        assert_eq!(p("5m"), Duration::from_secs(300));
        assert_eq!(p("1h 30m"), Duration::from_secs(5400));
    }

    #[test]
    fn rejects_numbers_and_garbage() {
        let e = serde_json::from_value::<Dur>(serde_json::json!(1000)).unwrap_err();
        assert!(e.to_string().contains("duration string"), "{e}");
        let e = serde_json::from_value::<Dur>(serde_json::json!("5x")).unwrap_err();
        assert!(e.to_string().contains("invalid duration \"5x\""), "{e}");
    }
}
