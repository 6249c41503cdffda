//! The generic shape every connector's config shares: connector → devices → channels.
//!
//! A connector entry is `{ "name", "protocol", "enabled"?, <protocol settings…>, "devices": [
//! { "name", "enabled"?, <device settings…>, "channels": [ { "name", "unit"?, <transform keys…>,
//! <channel settings…> } ] } ] }`. [`parse_spec`] peels off the common keys and deserializes the
//! rest into the protocol's own `S`/`D`/`C` structs (each `deny_unknown_fields`), one object at a
//! time, so a config with several mistakes reports all of them, each with its full path. The
//! transform keys of a channel become its [`TransformConfig`], so every connector gets transforms
//! without declaring them. Devices and channels are read from the connector's JSON text one at a
//! time (see [`super::Document`]): memory for parsing stays at one channel's tree, whatever the
//! size of the device list.

use std::collections::HashSet;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::document::{value_of, Entry};
use super::error::{deserialize_at, join, ConfigError};
use super::interpolate;
use super::timing::{Timing, TimingRules};
use crate::duration::Dur;
use crate::transform::{TransformConfig, TRANSFORM_KEYS};

/// A parsed connector: common fields plus the protocol's settings `S`, device settings `D` and
/// channel settings `C`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorSpec<S, D, C> {
    /// Unique connector name.
    pub name: Arc<str>,
    /// `false` starts the connector disabled.
    pub enabled: bool,
    /// The shared `timeout`, `backoff` and `backoff_max`, as the protocol takes them
    /// ([`TimingRules`]).
    pub timing: Timing,
    /// Protocol-level settings (transport…).
    pub settings: S,
    /// The devices this connector serves.
    pub devices: Vec<DeviceSpec<D, C>>,
}

/// A parsed device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec<D, C> {
    /// Device name, unique within the gateway (it is a topic level).
    pub name: Arc<str>,
    /// `false` starts the device disabled.
    pub enabled: bool,
    /// Time between two polls (`interval`), for protocols that take it ([`TimingRules`]);
    /// [`Timing::INTERVAL`] otherwise, unused.
    pub interval: Dur,
    /// Protocol-specific device settings (unit id…).
    pub settings: D,
    /// The device's channels.
    pub channels: Vec<ChannelSpec<C>>,
}

/// A parsed channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSpec<C> {
    /// Channel name, unique within the device.
    pub name: Arc<str>,
    /// Engineering unit published with each reading.
    pub unit: Option<Arc<str>>,
    /// Transform keys of the channel (`scale`, `deadband`, `report`, …); `None` when it has
    /// none. Boxed: most channels have none, and a gateway may hold tens of thousands.
    pub transform: Option<Box<TransformConfig>>,
    /// Protocol-specific channel settings (address, type, signal…).
    pub settings: C,
}

impl<C> ChannelSpec<C> {
    /// The channel's transform config ([`TransformConfig::IDENTITY`] when it has none).
    pub fn transform(&self) -> &TransformConfig {
        self.transform
            .as_deref()
            .unwrap_or(&TransformConfig::IDENTITY)
    }
}

/// A channel embedded in a protocol's own settings (an MQTT mapping's channels, an HTTP
/// endpoint's) parses like a device's: `name`, `unit`, the transform keys and the protocol's
/// `C`, every problem reported with its field.
impl<'de, C: DeserializeOwned> serde::Deserialize<'de> for ChannelSpec<C> {
    fn deserialize<De: serde::Deserializer<'de>>(d: De) -> Result<Self, De::Error> {
        let v = <Value as serde::Deserialize>::deserialize(d)?;
        let mut errs = Vec::new();
        match parse_channel::<C>(v, "", &mut errs) {
            Some(c) if errs.is_empty() => Ok(c),
            _ => Err(serde::de::Error::custom(
                errs.iter()
                    .map(|e| {
                        if e.path.is_empty() {
                            e.message.clone()
                        } else {
                            format!("{}: {}", e.path, e.message)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }
}

/// What the parser does for a protocol beyond the common keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The shared settings the protocol takes ([`super::timing`]).
    pub timing: TimingRules,
    /// What a written value becomes on the device (`"a register value"`), named when a
    /// writable channel's transform cannot be reversed; `None`: not named.
    pub writes_into: Option<&'static str>,
}

impl Rules {
    /// No shared settings, writes into nothing named.
    pub const NONE: Rules = Rules {
        timing: TimingRules::NONE,
        writes_into: None,
    };
}

/// Connector keys handled here, not by the protocol.
pub const CONNECTOR_COMMON: &[&str] = &["name", "protocol", "enabled", "devices"];
/// Device keys handled here.
pub const DEVICE_COMMON: &[&str] = &["name", "enabled", "channels"];
/// Channel keys handled here (besides [`TRANSFORM_KEYS`]).
pub const CHANNEL_COMMON: &[&str] = &["name", "unit"];

/// Checks a name that becomes a topic level: non-empty, no `/`, `+`, `#`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("must not be empty".into())
    } else if let Some(c) = name.chars().find(|c| matches!(c, '/' | '+' | '#' | '\0')) {
        Err(format!(
            "\"{name}\" contains '{c}', which is not allowed in a topic level"
        ))
    } else {
        Ok(())
    }
}

fn take_name(obj: &mut Map<String, Value>, path: &str, errs: &mut Vec<ConfigError>) -> Arc<str> {
    match obj.remove("name") {
        Some(Value::String(s)) => {
            if let Err(e) = check_name(&s) {
                errs.push(ConfigError::new(join(path, "name"), e));
            }
            s.into()
        }
        Some(other) => {
            errs.push(ConfigError::new(
                join(path, "name"),
                format!("expected a string, got {other}"),
            ));
            "".into()
        }
        None => {
            errs.push(ConfigError::new(join(path, "name"), "missing field"));
            "".into()
        }
    }
}

fn take_bool(
    obj: &mut Map<String, Value>,
    key: &str,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> bool {
    match obj.remove(key) {
        None => true,
        Some(Value::Bool(b)) => b,
        Some(other) => {
            errs.push(ConfigError::new(
                join(path, key),
                format!("expected true or false, got {other}"),
            ));
            true
        }
    }
}

/// The label of the connector at `index` in error paths: `connectors[1] "plc"`.
pub fn connector_path(index: usize, fields: &Map<String, Value>) -> String {
    match fields.get("name").and_then(Value::as_str) {
        Some(n) => format!("connectors[{index}] \"{n}\""),
        None => format!("connectors[{index}]"),
    }
}

/// Parses one connector entry (already known to be an object with a known `protocol`), its
/// own fields already interpolated. Devices and channels are taken from the entry's text one at
/// a time, `${VAR}` in their strings replaced from `env`, so no tree of the whole device list
/// is ever built. The shared settings `rules` names are taken out before the protocol's own
/// ([`super::timing`]). A writable channel (`"writable": true`, or a `write` request) must
/// have a transform a write can reverse: no `expr` or `rate`, whatever the protocol. Problems
/// are pushed to `errs`; the returned spec is only meaningful when none were added.
pub fn parse_spec<S, D, C>(
    entry: Entry<'_>,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    rules: &Rules,
    errs: &mut Vec<ConfigError>,
) -> Option<ConnectorSpec<S, D, C>>
where
    S: DeserializeOwned,
    D: DeserializeOwned,
    C: DeserializeOwned,
{
    let mut parts = Parts::<S, D, C> {
        settings: None,
        devices: Vec::new(),
        device: None,
        channels: Vec::new(),
    };
    let (name, enabled, timing) = walk(entry, path, env, rules, errs, &mut parts)?;
    Some(ConnectorSpec {
        name,
        enabled,
        timing,
        settings: parts.settings?,
        devices: parts.devices,
    })
}

/// What [`walk`] hands to the protocol's types: the objects left once the common keys are out.
/// The walk is compiled once; only these few lines are compiled per protocol.
/// Each takes an object at `path` whose `common` keys were taken out before.
trait Build {
    /// The connector's own settings.
    fn settings(&mut self, v: Value, path: &str, common: &[&str]) -> Done;
    /// The settings of the next device; its channels follow, then [`Build::end_device`].
    fn device(&mut self, v: Value, path: &str, common: &[&str]) -> Done;
    /// A channel of that device: its common parts in `head` (`None` when they had errors).
    fn channel(&mut self, head: Option<Head>, v: Value, path: &str, common: &[&str]) -> Done;
    /// The device is complete; kept when its settings and channels parsed.
    fn end_device(&mut self, name: Arc<str>, enabled: bool, interval: Dur);
}

/// What a [`Build`] step gives back: the problem with the object, if any.
type Done = Result<(), ConfigError>;

/// The common parts of a channel.
struct Head {
    name: Arc<str>,
    unit: Option<Arc<str>>,
    transform: Option<Box<TransformConfig>>,
}

/// A connector being built from its parts ([`Build`]).
struct Parts<S, D, C> {
    settings: Option<S>,
    devices: Vec<DeviceSpec<D, C>>,
    /// The settings of the device being read.
    device: Option<D>,
    channels: Vec<ChannelSpec<C>>,
}

impl<S: DeserializeOwned, D: DeserializeOwned, C: DeserializeOwned> Build for Parts<S, D, C> {
    fn settings(&mut self, v: Value, path: &str, common: &[&str]) -> Done {
        self.settings = Some(deserialize_at(v, path, common)?);
        Ok(())
    }

    fn device(&mut self, v: Value, path: &str, common: &[&str]) -> Done {
        self.device = Some(deserialize_at(v, path, common)?);
        Ok(())
    }

    fn channel(&mut self, head: Option<Head>, v: Value, path: &str, common: &[&str]) -> Done {
        let settings = deserialize_at(v, path, common)?;
        if let Some(h) = head {
            let (name, unit, transform) = (h.name, h.unit, h.transform);
            self.channels.push(ChannelSpec {
                name,
                unit,
                transform,
                settings,
            });
        }
        Ok(())
    }

    fn end_device(&mut self, name: Arc<str>, enabled: bool, interval: Dur) {
        let channels = std::mem::take(&mut self.channels);
        if let Some(settings) = self.device.take() {
            let device = DeviceSpec {
                name,
                enabled,
                interval,
                settings,
                channels,
            };
            self.devices.push(device);
        }
    }
}

/// [`parse_spec`] without the protocol's types: the connector's name, `enabled` and timing
/// (`None` when a problem was found), its settings, devices and channels handed to `b`.
fn walk(
    entry: Entry<'_>,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    rules: &Rules,
    errs: &mut Vec<ConfigError>,
    b: &mut dyn Build,
) -> Option<(Arc<str>, bool, Timing)> {
    let before = errs.len();
    let devices_raw = entry.items("devices", path, errs);
    let mut obj = entry.fields;
    let name = take_name(&mut obj, path, errs);
    obj.remove("protocol");
    let enabled = take_bool(&mut obj, "enabled", path, errs);
    // Values the protocol does not allow: reported, but the protocol's checks still run.
    let mut checks = Vec::new();
    let timing = rules
        .timing
        .take_connector(&mut obj, path, errs, &mut checks);
    let mut common = CONNECTOR_COMMON.to_vec();
    common.extend(rules.timing.connector_keys());
    if let Err(e) = b.settings(Value::Object(obj), path, &common) {
        errs.push(e);
    }
    let mut device_common = DEVICE_COMMON.to_vec();
    device_common.extend_from_slice(rules.timing.device_keys());
    let channel_common = channel_keys();

    let mut device_names: HashSet<Arc<str>> = HashSet::new();
    // Channel names and units shared across the connector's devices: devices of one model
    // repeat the same names, which then cost one allocation, not one per device.
    let mut shared: HashSet<Arc<str>> = HashSet::new();
    for (di, raw) in devices_raw.into_iter().enumerate() {
        let dpath = format!("{path}.devices[{di}]");
        let dentry = match Entry::parse(raw, "channels") {
            Ok(e) => e,
            Err(e) => {
                errs.push(ConfigError::new(dpath, e));
                continue;
            }
        };
        let channels_raw = dentry.items("channels", &dpath, errs);
        let mut dobj = dentry.fields;
        for (k, v) in dobj.iter_mut() {
            interpolate(v, &join(&dpath, k), env, errs);
        }
        let dname = take_name(&mut dobj, &dpath, errs);
        if !dname.is_empty() && !device_names.insert(dname.clone()) {
            errs.push(ConfigError::new(
                join(&dpath, "name"),
                format!("duplicate device name \"{dname}\" in this connector"),
            ));
        }
        let denabled = take_bool(&mut dobj, "enabled", &dpath, errs);
        let interval = rules
            .timing
            .take_device(&mut dobj, &dpath, errs, &mut checks);
        if let Err(e) = b.device(Value::Object(dobj), &dpath, &device_common) {
            errs.push(e);
        }
        let mut channel_names: HashSet<String> = HashSet::new();
        for (ci, raw) in channels_raw.into_iter().enumerate() {
            let cpath = format!("{dpath}.channels[{ci}]");
            // One channel's tree at a time: small, dropped before the next.
            let mut cv = match value_of(raw) {
                Ok(v) => v,
                Err(e) => {
                    errs.push(ConfigError::new(cpath, e));
                    continue;
                }
            };
            interpolate(&mut cv, &cpath, env, errs);
            if let Some(n) = cv.get("name").and_then(Value::as_str) {
                if !channel_names.insert(n.to_string()) {
                    errs.push(ConfigError::new(
                        join(&cpath, "name"),
                        format!("duplicate channel name \"{n}\" in device \"{dname}\""),
                    ));
                }
            }
            let writable = is_writable(&cv);
            let Value::Object(mut cobj) = cv else {
                errs.push(ConfigError::new(cpath, "expected an object"));
                continue;
            };
            let mut head = channel_head(&mut cobj, &cpath, errs);
            if let Some(h) = &mut head {
                let t = h.transform.as_deref().unwrap_or(&TransformConfig::IDENTITY);
                if writable {
                    check_reversible(t, &cpath, rules.writes_into, &mut checks);
                }
                h.name = intern(&mut shared, std::mem::take(&mut h.name));
                h.unit = h.unit.take().map(|u| intern(&mut shared, u));
            }
            if let Err(e) = b.channel(head, Value::Object(cobj), &cpath, &channel_common) {
                errs.push(e);
            }
        }
        b.end_device(dname, denabled, interval);
    }
    if errs.len() > before {
        return None;
    }
    errs.append(&mut checks);
    Some((name, enabled, timing))
}

/// The copy of `s` in `set` (added when it has none).
fn intern(set: &mut HashSet<Arc<str>>, s: Arc<str>) -> Arc<str> {
    match set.get(&s) {
        Some(known) => known.clone(),
        None => {
            set.insert(s.clone());
            s
        }
    }
}

/// [`parse_spec`] of a connector given as a value, without `${VAR}` interpolation and without
/// shared settings (tests and tools that build a connector in code).
pub fn parse_spec_value<S, D, C>(
    value: Value,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<ConnectorSpec<S, D, C>>
where
    S: DeserializeOwned,
    D: DeserializeOwned,
    C: DeserializeOwned,
{
    let raw = serde_json::value::to_raw_value(&value).unwrap_or_default();
    let entry = match Entry::parse(&raw, "devices") {
        Ok(e) => e,
        Err(e) => {
            errs.push(ConfigError::new(path, e));
            return None;
        }
    };
    parse_spec(entry, path, &|_| None, &Rules::NONE, errs)
}

/// [`parse_spec_value`], then the protocol's semantic checks (`validate`): the spec, or every
/// problem found (tests of a protocol's config).
pub fn parse_checked<S, D, C>(
    value: Value,
    path: &str,
    validate: fn(&ConnectorSpec<S, D, C>, &str, &mut Vec<ConfigError>),
) -> Result<ConnectorSpec<S, D, C>, Vec<ConfigError>>
where
    S: DeserializeOwned,
    D: DeserializeOwned,
    C: DeserializeOwned,
{
    let mut errs = Vec::new();
    let spec = parse_spec_value(value, path, &mut errs);
    if let Some(s) = &spec {
        validate(s, path, &mut errs);
    }
    match spec {
        Some(s) if errs.is_empty() => Ok(s),
        _ => Err(errs),
    }
}

/// True when a channel takes writes, as every protocol says it: `"writable": true`, or a
/// `write` request (HTTP).
fn is_writable(channel: &Value) -> bool {
    channel.get("writable") == Some(&Value::Bool(true))
        || channel.get("write").is_some_and(|w| !w.is_null())
}

/// A writable channel's value is turned back into the device's raw value by reversing `scale`
/// and `offset`; a step nothing can undo (`expr`, `rate`) is refused at its key, at `cpath`.
/// (`scale` 0 is refused for every channel by the transform's own checks.)
fn check_reversible(
    t: &TransformConfig,
    cpath: &str,
    writes_into: Option<&str>,
    errs: &mut Vec<ConfigError>,
) {
    if let Some(key) = t.irreversible_key() {
        let into = writes_into.map_or(String::new(), |v| format!(" into {v}"));
        errs.push(ConfigError::new(
            join(cpath, key),
            format!(
                "a writable channel cannot use {key}: a written value could not be turned back{into}"
            ),
        ));
    }
}

/// A channel on its own: its common parts ([`channel_head`]) and the protocol's `C`.
fn parse_channel<C: DeserializeOwned>(
    value: Value,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<ChannelSpec<C>> {
    let Value::Object(mut obj) = value else {
        errs.push(ConfigError::new(path, "expected an object"));
        return None;
    };
    let head = channel_head(&mut obj, path, errs);
    let settings = deserialize_at::<C>(Value::Object(obj), path, &channel_keys())
        .map_err(|e| errs.push(e))
        .ok();
    let Head {
        name,
        unit,
        transform,
    } = head?;
    Some(ChannelSpec {
        name,
        unit,
        transform,
        settings: settings?,
    })
}

/// The keys of a channel that are not the protocol's (named in "unknown field" errors).
fn channel_keys() -> Vec<&'static str> {
    [CHANNEL_COMMON, TRANSFORM_KEYS].concat()
}

/// Takes a channel's common parts out of its object: its name, unit and transform (`None`
/// when one of them is wrong, the problems pushed to `errs`).
fn channel_head(
    obj: &mut Map<String, Value>,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<Head> {
    let before = errs.len();
    let name = take_name(obj, path, errs);
    let unit = match obj.remove("unit") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(Arc::<str>::from(s)),
        Some(other) => {
            errs.push(ConfigError::new(
                join(path, "unit"),
                format!("expected a string, got {other}"),
            ));
            None
        }
    };
    let mut tmap = Map::new();
    for k in TRANSFORM_KEYS {
        if let Some(v) = obj.remove(*k) {
            tmap.insert((*k).to_string(), v);
        }
    }
    let transform = deserialize_at::<TransformConfig>(Value::Object(tmap), path, &[])
        .map_err(|e| errs.push(e))
        .ok()?;
    // validate() lists every problem (Transform::new stops at the first).
    for (field, msg) in transform.validate() {
        errs.push(ConfigError::new(join(path, &field), msg));
    }
    let transform = (!transform.is_identity()).then(|| Box::new(transform));
    (errs.len() == before).then_some(Head {
        name,
        unit,
        transform,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct S {
        #[serde(default)]
        host: Option<String>,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct D {
        interval: u32,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct C {
        address: u16,
    }

    #[test]
    fn parses_common_and_specific_fields() {
        let v = json!({"name": "plc", "protocol": "x", "host": "h",
            "devices": [{"name": "m1", "interval": 5, "channels": [
                {"name": "v", "unit": "V", "address": 3, "scale": 0.1}]}]});
        let mut errs = vec![];
        let s = parse_spec_value::<S, D, C>(v, "connectors[0] \"plc\"", &mut errs).unwrap();
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(&*s.name, "plc");
        assert_eq!(s.devices[0].channels[0].settings, C { address: 3 });
        assert_eq!(s.devices[0].channels[0].transform().scale, Some(0.1));
        assert_eq!(s.devices[0].channels[0].unit.as_deref(), Some("V"));
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let v = json!({"name": "plc", "protocol": "x",
            "devices": [{"name": "m1", "interval": "x", "channels": [
                {"name": "v", "adress": 3},
                {"name": "v", "address": 70000},
                {"name": "a/b", "address": 1, "deadband": -1}]}]});
        let mut errs = vec![];
        assert!(parse_spec_value::<S, D, C>(v, "connectors[0] \"plc\"", &mut errs).is_none());
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        let p = "connectors[0] \"plc\".devices[0]";
        assert!(
            paths.contains(&format!("{p}.interval").as_str()),
            "{errs:?}"
        );
        assert!(
            paths.contains(&format!("{p}.channels[0].adress").as_str()),
            "{errs:?}"
        );
        assert!(
            paths.contains(&format!("{p}.channels[1].name").as_str()),
            "{errs:?}"
        );
        assert!(
            paths.contains(&format!("{p}.channels[1].address").as_str()),
            "{errs:?}"
        );
        assert!(
            paths.contains(&format!("{p}.channels[2].name").as_str()),
            "{errs:?}"
        );
        assert!(
            paths.contains(&format!("{p}.channels[2].deadband").as_str()),
            "{errs:?}"
        );
        let unknown = errs.iter().find(|e| e.path.ends_with("adress")).unwrap();
        assert!(unknown.message.contains("address") && unknown.message.contains("scale"));
    }

    #[test]
    fn shared_settings_are_taken_listed_and_checked() {
        use crate::config::timing::{IntervalRule, TimeoutRule, BACKOFF};
        let rules = TimingRules {
            timeout: Some(TimeoutRule {
                default: Some(Dur::from_secs(1)),
                min: Dur::from_millis(100),
            }),
            backoff: Some(BACKOFF),
            interval: Some(IntervalRule {
                default: Dur::from_secs(10),
                min: Dur::from_millis(10),
            }),
        };
        let parse = |v: Value, errs: &mut Vec<ConfigError>| {
            let raw = serde_json::value::to_raw_value(&v).unwrap();
            let entry = Entry::parse(&raw, "devices").unwrap();
            let rules = Rules {
                timing: rules,
                writes_into: None,
            };
            parse_spec::<S, D, C>(entry, "c", &|_| None, &rules, errs)
        };
        let mut errs = vec![];
        let v = json!({"name": "plc", "host": "h", "timeout": "2s", "backoff_max": "1m",
            "devices": [{"name": "a", "interval": 3, "channels": []},
                        {"name": "b", "interval": "5s", "channels": []}]});
        // `interval` is the kit's here, so D's own `interval` is missing.
        assert!(parse(v, &mut errs).is_none());
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert_eq!(errs[0].path, "c.devices[0].interval", "{errs:?}");
        assert!(
            errs[1].message.contains("missing field `interval`"),
            "{errs:?}"
        );

        let mut errs = vec![];
        let v = json!({"name": "plc", "timeout": "50ms", "backoff": "2m", "retries": 1,
            "devices": []});
        assert!(parse(v, &mut errs).is_none());
        let unknown = errs.iter().find(|e| e.path == "c.retries").unwrap();
        for key in ["timeout", "backoff", "backoff_max", "host"] {
            assert!(unknown.message.contains(key), "{unknown:?}");
        }

        // Values out of bounds are reported with the spec, so the protocol's checks run too.
        let mut errs = vec![];
        let v = json!({"name": "plc", "timeout": "50ms", "backoff": "2m", "devices": []});
        let spec: ConnectorSpec<S, (), C> = {
            let raw = serde_json::value::to_raw_value(&v).unwrap();
            let entry = Entry::parse(&raw, "devices").unwrap();
            let rules = Rules {
                timing: rules,
                writes_into: None,
            };
            parse_spec(entry, "c", &|_| None, &rules, &mut errs).unwrap()
        };
        assert_eq!(spec.timing.timeout, Some(Dur::from_millis(50)));
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["c.timeout", "c.backoff_max"]);
    }

    #[test]
    fn writable_channels_must_be_reversible_whatever_the_protocol() {
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        struct W {
            #[serde(default)]
            writable: bool,
            #[serde(default)]
            write: Option<Value>,
        }
        let v = json!({"name": "plc", "devices": [{"name": "m1", "interval": 1, "channels": [
            {"name": "a", "writable": true, "expr": "x * 2"},
            {"name": "b", "write": {"url": "u"}, "rate": true},
            {"name": "c", "writable": false, "expr": "x * 2"},
            {"name": "d", "writable": true, "scale": 0.1, "offset": 3, "round": 1},
            {"name": "e", "write": null, "rate": true}]}]});
        let parse = |writes_into| {
            let raw = serde_json::value::to_raw_value(&v).unwrap();
            let entry = Entry::parse(&raw, "devices").unwrap();
            let rules = Rules {
                timing: TimingRules::NONE,
                writes_into,
            };
            let mut errs = vec![];
            let spec = parse_spec::<S, D, W>(entry, "p", &|_| None, &rules, &mut errs);
            // Semantic: the spec is there for the protocol's own checks.
            assert!(spec.is_some());
            errs.into_iter().map(|e| e.to_string()).collect::<Vec<_>>()
        };
        let p = "p.devices[0].channels";
        assert_eq!(
            parse(None),
            [
                format!("{p}[0].expr: a writable channel cannot use expr: a written value could not be turned back"),
                format!("{p}[1].rate: a writable channel cannot use rate: a written value could not be turned back"),
            ]
        );
        assert!(parse(Some("a register value"))[0].ends_with("turned back into a register value"));
    }

    #[test]
    fn names_must_be_topic_safe() {
        assert!(check_name("boiler-1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a+b").is_err());
        assert!(check_name("a#").is_err());
    }
}

/// A number that may be left out, in the 8 bytes of an `f64` (`Option<f64>` takes 16): NaN,
/// which JSON cannot carry, stands for "not set".
#[derive(Clone, Copy, serde::Deserialize)]
#[serde(from = "Option<f64>")]
pub struct OptF64(f64);

impl OptF64 {
    /// Not set.
    pub const NONE: OptF64 = OptF64(f64::NAN);

    /// The number, if set.
    pub fn get(self) -> Option<f64> {
        (!self.0.is_nan()).then_some(self.0)
    }
}

impl Default for OptF64 {
    fn default() -> Self {
        Self::NONE
    }
}

impl From<Option<f64>> for OptF64 {
    fn from(v: Option<f64>) -> Self {
        v.map_or(Self::NONE, OptF64)
    }
}

impl PartialEq for OptF64 {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl std::fmt::Debug for OptF64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}
