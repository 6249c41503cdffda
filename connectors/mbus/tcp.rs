//! The TCP transport of the M-Bus connector: a level converter (or serial device server) in
//! transparent mode, and the baud rate of the M-Bus behind it.
//!
//! The converter forwards bytes, but the meters still talk at the bus's baud rate: the answer
//! timeout, the idle time between frames and the gap allowed inside a frame all follow it
//! ([`super::link::Timing`]). `"tcp": "host:port"` keeps the M-Bus default of 2400 baud;
//! `"tcp": {"address": "host:port", "baud": 9600}` names the converter's serial side.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A TCP level converter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSettings {
    /// `host:port` of the converter.
    pub address: String,
    /// Baud rate of the M-Bus on the converter's serial side (default 2400): 300, 600, 1200,
    /// 2400, 4800, 9600, 19200 or 38400.
    pub baud: u32,
}

/// The object form, `{"address": "host:port", "baud": 9600}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Full {
    address: String,
    #[serde(default = "super::default_baud")]
    baud: u32,
}

impl<'de> Deserialize<'de> for TcpSettings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TcpSettings;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"host:port\" or {\"address\": \"host:port\", \"baud\": 2400}")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<TcpSettings, E> {
                Ok(TcpSettings {
                    address: v.to_string(),
                    baud: super::default_baud(),
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TcpSettings, A::Error> {
                let f = Full::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(TcpSettings {
                    address: f.address,
                    baud: f.baud,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_parse() {
        let s: TcpSettings = serde_json::from_str(r#""10.0.0.5:10001""#).unwrap();
        assert_eq!((s.address.as_str(), s.baud), ("10.0.0.5:10001", 2400));
        let s: TcpSettings =
            serde_json::from_str(r#"{"address": "10.0.0.5:10001", "baud": 9600}"#).unwrap();
        assert_eq!((s.address.as_str(), s.baud), ("10.0.0.5:10001", 9600));
        let s: TcpSettings = serde_json::from_str(r#"{"address": "h:1"}"#).unwrap();
        assert_eq!(s.baud, 2400);
        let e = serde_json::from_str::<TcpSettings>(r#"{"address": "h:1", "bauds": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `bauds`"), "{e}");
        assert!(serde_json::from_str::<TcpSettings>("5").is_err());
    }
}
