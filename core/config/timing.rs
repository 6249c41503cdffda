//! The settings that connectors reaching devices share, parsed, defaulted and checked once:
//! `timeout`, `backoff` and `backoff_max` on the connector, `interval` on each device.
//!
//! A protocol says which of them it takes and with which defaults and least values
//! ([`TimingRules`], given to the parser); [`super::spec::parse_spec`] takes those keys out of
//! the connector's and devices' objects before the protocol's own settings are read (so they are
//! listed with them in "unknown field" messages), and every problem is reported at its key:
//! a value below the protocol's least, and a `backoff_max` shorter than `backoff` (these with
//! the protocol's own semantic checks, which still run). The values
//! land in [`super::ConnectorSpec::timing`] and [`super::DeviceSpec::interval`]. A protocol that
//! takes none of them (the default, [`TimingRules::NONE`]) is unaffected.

use serde_json::{Map, Value};

use super::error::{deserialize_at, join, ConfigError};
use crate::backoff::Backoff;
use crate::duration::Dur;

/// `timeout`: how long one answer (or a connection) may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutRule {
    /// Its default; `None` when the protocol works it out from other settings (M-Bus: from
    /// the baud rate).
    pub default: Option<Dur>,
    /// Its least value; zero: any value greater than 0.
    pub min: Dur,
}

/// `backoff` and `backoff_max`: the first wait before a failed device (or connection) is tried
/// again, doubling per failure, and the longest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffRule {
    /// Default of `backoff`.
    pub backoff: Dur,
    /// Default of `backoff_max`.
    pub backoff_max: Dur,
}

/// A device's `interval`: the time between two polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalRule {
    /// Its default.
    pub default: Dur,
    /// Its least value.
    pub min: Dur,
}

/// Which shared settings a protocol takes, with its defaults and least values (`None`: it
/// does not take that key, which stays the protocol's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimingRules {
    /// The connector's `timeout`.
    pub timeout: Option<TimeoutRule>,
    /// The connector's `backoff` and `backoff_max`.
    pub backoff: Option<BackoffRule>,
    /// Each device's `interval`.
    pub interval: Option<IntervalRule>,
}

/// The usual backoff: 1 s, doubling, at most 30 s.
pub const BACKOFF: BackoffRule = BackoffRule {
    backoff: Dur::from_secs(1),
    backoff_max: Dur::from_secs(30),
};

impl TimingRules {
    /// Takes none of the shared settings.
    pub const NONE: TimingRules = TimingRules {
        timeout: None,
        backoff: None,
        interval: None,
    };

    /// What a poller of request/answer devices takes (Modbus, S7): `timeout` (default `1s`, the
    /// time for one answer or a connection), `backoff` (`1s`) and `backoff_max` (`30s`), each
    /// device's `interval` (`1s`, at least `1ms`; channels may override it).
    pub const POLLER: TimingRules = TimingRules {
        timeout: Some(TimeoutRule {
            default: Some(Dur::from_secs(1)),
            min: Dur::from_secs(0),
        }),
        backoff: Some(BACKOFF),
        interval: Some(IntervalRule {
            default: Dur::from_secs(1),
            min: Dur::from_millis(1),
        }),
    };

    /// The connector keys taken.
    pub fn connector_keys(&self) -> impl Iterator<Item = &'static str> {
        let t: &[&str] = if self.timeout.is_some() {
            &["timeout"]
        } else {
            &[]
        };
        let b: &[&str] = if self.backoff.is_some() {
            &["backoff", "backoff_max"]
        } else {
            &[]
        };
        t.iter().chain(b).copied()
    }

    /// The device keys taken.
    pub fn device_keys(&self) -> &'static [&'static str] {
        if self.interval.is_some() {
            &["interval"]
        } else {
            &[]
        }
    }

    /// Takes the connector's shared settings out of `obj` (the connector at `path`), with
    /// the defaults for those not given. A value that is not a duration goes to `errs`; one
    /// the protocol does not allow goes to `checks` (semantic problems, reported with the
    /// protocol's own).
    pub fn take_connector(
        &self,
        obj: &mut Map<String, Value>,
        path: &str,
        errs: &mut Vec<ConfigError>,
        checks: &mut Vec<ConfigError>,
    ) -> Timing {
        let mut t = Timing::default();
        if let Some(rule) = self.timeout {
            t.timeout = take(obj, "timeout", path, errs).or(rule.default);
            if let Some(d) = t.timeout {
                check_min(d, rule.min, &join(path, "timeout"), checks);
            }
        }
        if let Some(rule) = self.backoff {
            let backoff = take(obj, "backoff", path, errs);
            let backoff_max = take(obj, "backoff_max", path, errs);
            t.backoff = backoff.unwrap_or(rule.backoff);
            t.backoff_max = backoff_max.unwrap_or(rule.backoff_max);
            if t.backoff_max < t.backoff {
                checks.push(ConfigError::new(
                    join(path, "backoff_max"),
                    format!("must be at least backoff ({})", t.backoff),
                ));
            }
        }
        t
    }

    /// Takes a device's `interval` out of `obj` (the device at `path`); the default when not
    /// given, or when the protocol takes no interval. Problems go to `errs` and `checks` as
    /// in [`TimingRules::take_connector`].
    pub fn take_device(
        &self,
        obj: &mut Map<String, Value>,
        path: &str,
        errs: &mut Vec<ConfigError>,
        checks: &mut Vec<ConfigError>,
    ) -> Dur {
        let Some(rule) = self.interval else {
            return Timing::INTERVAL;
        };
        let d = take(obj, "interval", path, errs).unwrap_or(rule.default);
        check_min(d, rule.min, &join(path, "interval"), checks);
        d
    }
}

/// A connector's shared settings, as parsed ([`TimingRules::take_connector`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `timeout`; `None` when the protocol takes none or works its default out itself.
    pub timeout: Option<Dur>,
    /// `backoff`: the first wait before a failed device or connection is tried again.
    pub backoff: Dur,
    /// `backoff_max`: the longest wait between attempts.
    pub backoff_max: Dur,
}

impl Timing {
    /// A device's interval when its protocol takes none.
    pub const INTERVAL: Dur = Dur::from_secs(1);

    /// The retry backoff these settings describe.
    pub fn retry(&self) -> Backoff {
        Backoff::new(self.backoff.0, self.backoff_max.0)
    }

    /// The `timeout` (for protocols with a default, always given).
    pub fn timeout_or(&self, default: std::time::Duration) -> std::time::Duration {
        self.timeout.map_or(default, |d| d.0)
    }
}

impl Default for Timing {
    /// No timeout, the usual backoff ([`BACKOFF`]).
    fn default() -> Self {
        Timing {
            timeout: None,
            backoff: BACKOFF.backoff,
            backoff_max: BACKOFF.backoff_max,
        }
    }
}

/// Takes `key` out of `obj` as a duration; `None` when absent or invalid (then reported).
fn take(
    obj: &mut Map<String, Value>,
    key: &str,
    path: &str,
    errs: &mut Vec<ConfigError>,
) -> Option<Dur> {
    let v = obj.remove(key)?;
    deserialize_at::<Dur>(v, &join(path, key), &[])
        .map_err(|e| errs.push(e))
        .ok()
}

fn check_min(d: Dur, min: Dur, at: &str, errs: &mut Vec<ConfigError>) {
    if min.0.is_zero() {
        if d.0.is_zero() {
            errs.push(ConfigError::new(at, "must be greater than 0"));
        }
    } else if d < min {
        errs.push(ConfigError::new(
            at,
            format!("must be at least {min}, got {d}"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RULES: TimingRules = TimingRules {
        timeout: Some(TimeoutRule {
            default: Some(Dur::from_secs(1)),
            min: Dur::from_millis(100),
        }),
        backoff: Some(BackoffRule {
            backoff: Dur::from_secs(5),
            backoff_max: Dur::from_secs(300),
        }),
        interval: Some(IntervalRule {
            default: Dur::from_secs(60),
            min: Dur::from_millis(10),
        }),
    };

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!("an object"),
        }
    }

    #[test]
    fn given_values_are_taken_out_and_the_rest_defaulted() {
        let mut o = obj(json!({"timeout": "250ms", "backoff_max": "1m", "transport": 1}));
        let mut errs = Vec::new();
        let t = RULES.take_connector(&mut o, "c", &mut errs, &mut Vec::new());
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(t.timeout, Some(Dur::from_millis(250)));
        assert_eq!(
            (t.backoff, t.backoff_max),
            (Dur::from_secs(5), Dur::from_secs(60))
        );
        assert_eq!(t.retry(), Backoff::new(t.backoff.0, t.backoff_max.0));
        assert_eq!(o.keys().collect::<Vec<_>>(), ["transport"]);
        let mut d = obj(json!({"unit_id": 1}));
        let iv = RULES.take_device(&mut d, "c.devices[0]", &mut errs, &mut Vec::new());
        assert_eq!(iv, Dur::from_secs(60));
        assert!(errs.is_empty());
    }

    #[test]
    fn keys_a_protocol_does_not_take_stay_its_own() {
        let mut o = obj(json!({"timeout": "5s", "backoff_max": "1m"}));
        let mut errs = Vec::new();
        let t = TimingRules::NONE.take_connector(&mut o, "c", &mut errs, &mut Vec::new());
        assert_eq!(t, Timing::default());
        assert_eq!(o.len(), 2);
        let mut d = obj(json!({"interval": "5s"}));
        let iv = TimingRules::NONE.take_device(&mut d, "d", &mut errs, &mut Vec::new());
        assert_eq!(iv, Timing::INTERVAL);
        assert_eq!(d.len(), 1);
        assert!(errs.is_empty());
        assert_eq!(TimingRules::NONE.connector_keys().count(), 0);
        assert_eq!(
            RULES.connector_keys().collect::<Vec<_>>(),
            ["timeout", "backoff", "backoff_max"]
        );
    }

    #[test]
    fn every_problem_is_reported_at_its_key() {
        let mut o = obj(json!({"timeout": "10ms", "backoff": "10m"}));
        let (mut errs, mut checks) = (Vec::new(), Vec::new());
        RULES.take_connector(&mut o, "c", &mut errs, &mut checks);
        let mut d = obj(json!({"interval": "1ms"}));
        RULES.take_device(&mut d, "c.devices[2]", &mut errs, &mut checks);
        let mut d = obj(json!({"interval": 5}));
        RULES.take_device(&mut d, "c.devices[3]", &mut errs, &mut checks);
        let got: Vec<String> = checks.iter().map(ToString::to_string).collect();
        assert_eq!(got[0], "c.timeout: must be at least 100ms, got 10ms");
        assert_eq!(got[1], "c.backoff_max: must be at least backoff (10m)");
        assert_eq!(
            got[2],
            "c.devices[2].interval: must be at least 10ms, got 1ms"
        );
        assert_eq!(got.len(), 3);
        // Not a duration at all: a parse error.
        assert_eq!(errs.len(), 1, "{errs:?}");
        let e = errs[0].to_string();
        assert!(e.starts_with("c.devices[3].interval: "), "{e}");

        let zero = TimingRules {
            timeout: Some(TimeoutRule {
                default: None,
                min: Dur::default(),
            }),
            ..TimingRules::NONE
        };
        let (mut errs, mut checks) = (Vec::new(), Vec::new());
        let t = zero.take_connector(&mut obj(json!({})), "c", &mut errs, &mut checks);
        assert_eq!(t.timeout, None);
        assert_eq!(t.timeout_or(std::time::Duration::from_secs(3)).as_secs(), 3);
        zero.take_connector(
            &mut obj(json!({"timeout": "0s"})),
            "c",
            &mut errs,
            &mut checks,
        );
        assert_eq!(checks[0].to_string(), "c.timeout: must be greater than 0");
    }
}
