//! Byte sizes written in the config: `"256KiB"`, `"1MiB"`, `"64kB"`, or a plain number of bytes.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A size in bytes from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Size(pub u64);

impl Size {
    /// The size in bytes, saturated to `usize`.
    pub fn bytes(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (n, u) in UNITS {
            if self.0 >= n && self.0 % n == 0 {
                return write!(f, "{} {u}", self.0 / n);
            }
        }
        write!(f, "{} bytes", self.0)
    }
}

/// Parses `"256KiB"`, `"1 MiB"`, `"64kB"` (1000s), `"512B"` or `"4096"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "invalid size \"{s}\": expected e.g. \"256KiB\", \"1MiB\" or a number of bytes"
            ))
        }
    };
    let n: f64 = num.parse().map_err(|_| {
        format!("invalid size \"{s}\": expected e.g. \"256KiB\", \"1MiB\" or a number of bytes")
    })?;
    let bytes = (n * mult as f64).round();
    if !(0.0..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("invalid size \"{s}\": too large"));
    }
    Ok(bytes as u64)
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"256KiB\", \"1MiB\" or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Size, E> {
                Ok(Size(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Size, E> {
                u64::try_from(n)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Size, E> {
                parse_size(s).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("256KiB").unwrap(), 262_144);
        assert_eq!(parse_size("1 MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("64kB").unwrap(), 64_000);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert!(parse_size("12 parsecs")
            .unwrap_err()
            .contains("invalid size"));
        assert!(parse_size("").is_err());
        let s: Size = serde_json::from_value(serde_json::json!(1024)).unwrap();
        assert_eq!(s.to_string(), "1 KiB");
        assert!(serde_json::from_value::<Size>(serde_json::json!(-1)).is_err());
    }
}
