//! The channels of one device as its configuration declares them, for `device.status` with
//! `"channels": true`: name, unit, and for a writable channel what a write takes (`writable`,
//! `type`, `min`, `max`, in engineering units). The web console shows them before the first
//! reading arrives and offers a write, with its range, only where one is possible; a key that
//! may not read the whole configuration (`gateway.config`) still gets these few facts.
//!
//! They come from the configuration as written (the same source `gateway.config` masks), so
//! every protocol's channels are covered by the same keys; nothing else of a channel's
//! settings (addresses, topics, credentials) is passed on.

use serde_json::{Map, Value};

/// The channel settings passed on; all other keys of a channel stay on the gateway.
const KEYS: &[&str] = &["name", "unit", "writable", "type", "min", "max"];

/// The channels of `device` in the configuration `source` (JSON), in their configured order;
/// empty when the device has none configured (channels learnt at run time) or is not there.
pub fn of(source: &str, device: &str) -> Vec<Value> {
    let Ok(cfg) = serde_json::from_str::<Value>(source) else {
        return Vec::new();
    };
    let connectors = cfg["connectors"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    connectors
        .iter()
        .filter_map(|c| c["devices"].as_array())
        .flatten()
        .filter(|d| d["name"] == device)
        .filter_map(|d| d["channels"].as_array())
        .flatten()
        .filter(|ch| ch["name"].is_string())
        .map(|ch| {
            let picked: Map<String, Value> = KEYS
                .iter()
                .filter_map(|k| ch.get(*k).map(|v| (k.to_string(), v.clone())))
                .collect();
            Value::Object(picked)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_devices_channels_and_only_the_safe_keys() {
        let src = json!({"connectors": [
            {"name": "a", "devices": [{"name": "other", "channels": [{"name": "x"}]}]},
            {"name": "b", "password": "p", "devices": [{"name": "boiler", "channels": [
                {"name": "t", "unit": "°C", "address": 7, "topic": "secret/topic"},
                {"name": "sp", "writable": true, "min": 0, "max": 100, "type": "integer"},
                {"unit": "no name"}
            ]}]}
        ]})
        .to_string();
        assert_eq!(
            of(&src, "boiler"),
            vec![
                json!({"name": "t", "unit": "°C"}),
                json!({"name": "sp", "writable": true, "min": 0, "max": 100, "type": "integer"}),
            ]
        );
        assert!(of(&src, "nope").is_empty());
        assert!(of("not json", "boiler").is_empty());
    }
}
