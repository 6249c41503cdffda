//! What a new configuration changes: the connectors and sinks it starts, stops, restarts and
//! keeps. [`predict`] answers it for `config.check` before anything is applied, by the same
//! rules as the service's hot reload (a connector restarts when its configuration differs, every
//! one when the `gateway` section does; run-time enable/disable overrides count); [`from_reload`]
//! turns what a reload did into the same shape for `config.apply`.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::config::GatewayConfig;
use crate::connectors::ConnectorConfig;
use crate::service::ReloadSummary;

/// Names per kind of change, each list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Started: not running before.
    pub started: Vec<String>,
    /// Stopped: running before, not after.
    pub stopped: Vec<String>,
    /// Stopped and started again with the new configuration.
    pub restarted: Vec<String>,
    /// Left running untouched.
    pub kept: Vec<String>,
}

/// The change set of `config.check` and `config.apply`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChangeSet {
    /// Connectors.
    #[serde(flatten)]
    pub connectors: Changes,
    /// Sinks.
    pub sinks: Changes,
}

/// Sorts running-before and running-after names into the four lists; `same(name)` says whether
/// a name in both runs an unchanged configuration.
fn classify(
    before: &BTreeSet<String>,
    after: &BTreeSet<String>,
    same: impl Fn(&str) -> bool,
) -> Changes {
    let mut c = Changes::default();
    for n in after {
        if !before.contains(n) {
            c.started.push(n.clone());
        } else if same(n) {
            c.kept.push(n.clone());
        } else {
            c.restarted.push(n.clone());
        }
    }
    c.stopped = before.difference(after).cloned().collect();
    c
}

/// What applying `new` over `current` would change. `wanted` says whether a connector should run
/// (its run-time override, else its `enabled`), as the service decides it.
pub fn predict(
    current: &GatewayConfig,
    new: &GatewayConfig,
    wanted: impl Fn(&ConnectorConfig) -> bool,
) -> ChangeSet {
    let everything = new.gateway != current.gateway;
    let running = |cfg: &GatewayConfig| -> BTreeSet<String> {
        cfg.connectors
            .iter()
            .filter(|c| wanted(c))
            .map(|c| c.name.to_string())
            .collect()
    };
    let find =
        |cfg: &GatewayConfig, n: &str| cfg.connectors.iter().find(|c| &*c.name == n).cloned();
    let connectors = classify(&running(current), &running(new), |n| {
        !everything && find(current, n) == find(new, n)
    });
    let sinks_on = |cfg: &GatewayConfig| -> BTreeSet<String> {
        cfg.sinks
            .iter()
            .filter(|s| s.common.enabled)
            .map(|s| s.name().to_string())
            .collect()
    };
    let raw = |cfg: &GatewayConfig, n: &str| {
        cfg.sinks
            .iter()
            .find(|s| s.name() == n)
            .map(|s| s.raw.clone())
    };
    let sinks = classify(&sinks_on(current), &sinks_on(new), |n| {
        !everything && raw(current, n) == raw(new, n)
    });
    ChangeSet { connectors, sinks }
}

/// What a reload did, as a change set: a name both stopped and started was restarted. Sinks
/// kept are the enabled sinks of `new` that the reload did not start.
pub fn from_reload(s: &ReloadSummary, new: &GatewayConfig) -> ChangeSet {
    let split = |started: &[String], stopped: &[String]| {
        let (st, sp): (BTreeSet<_>, BTreeSet<_>) = (
            started.iter().cloned().collect(),
            stopped.iter().cloned().collect(),
        );
        (
            st.difference(&sp).cloned().collect::<Vec<_>>(),
            sp.difference(&st).cloned().collect::<Vec<_>>(),
            st.intersection(&sp).cloned().collect::<Vec<_>>(),
        )
    };
    let (started, stopped, restarted) = split(&s.connectors_started, &s.connectors_stopped);
    let mut kept = s.connectors_kept.clone();
    kept.sort();
    let connectors = Changes {
        started,
        stopped,
        restarted,
        kept,
    };
    let (started, stopped, restarted) = split(&s.sinks_started, &s.sinks_stopped);
    let mut kept: Vec<String> = new
        .sinks
        .iter()
        .filter(|c| c.common.enabled && !s.sinks_started.iter().any(|n| n == c.name()))
        .map(|c| c.name().to_string())
        .collect();
    kept.sort();
    let sinks = Changes {
        started,
        stopped,
        restarted,
        kept,
    };
    ChangeSet { connectors, sinks }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: serde_json::Value) -> GatewayConfig {
        crate::config::from_value(v, &|_| None).expect("valid")
    }

    fn sim(name: &str, interval: &str, enabled: bool) -> serde_json::Value {
        json!({"name": name, "protocol": "simulator", "enabled": enabled, "devices": [
            {"name": format!("{name}-d"), "interval": interval,
             "channels": [{"name": "x", "signal": "counter"}]}]})
    }

    fn base(connectors: serde_json::Value, sinks: serde_json::Value) -> GatewayConfig {
        cfg(json!({"gateway": {"id": "g"}, "connectors": connectors, "sinks": sinks}))
    }

    #[test]
    fn connectors_and_sinks_sort_into_the_four_lists() {
        let s = |n: &str, queue: u32| json!({"name": n, "type": "stdout", "queue": queue});
        let old = base(
            json!([
                sim("same", "1s", true),
                sim("changed", "1s", true),
                sim("gone", "1s", true),
                sim("off", "1s", false)
            ]),
            json!([s("keep", 8), s("edit", 8), s("drop", 8)]),
        );
        let new = base(
            json!([
                sim("same", "1s", true),
                sim("changed", "2s", true),
                sim("added", "1s", true),
                sim("off", "1s", true)
            ]),
            json!([s("keep", 8), s("edit", 9), s("more", 8)]),
        );
        let c = predict(&old, &new, |c| c.enabled);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            json!({
                "started": ["added", "off"], "stopped": ["gone"], "restarted": ["changed"],
                "kept": ["same"],
                "sinks": {"started": ["more"], "stopped": ["drop"], "restarted": ["edit"], "kept": ["keep"]}
            })
        );
        // A run-time override wins over the config: "gone" was disabled at run time.
        let c = predict(&old, &new, |c| c.enabled && &*c.name != "gone");
        assert!(c.connectors.stopped.is_empty());
    }

    #[test]
    fn a_new_gateway_section_restarts_everything() {
        let old = base(json!([sim("a", "1s", true)]), json!([]));
        let mut new = base(json!([sim("a", "1s", true)]), json!([]));
        new.gateway.id = "other".into();
        let c = predict(&old, &new, |c| c.enabled);
        assert_eq!(c.connectors.restarted, ["a"]);
        assert!(c.connectors.kept.is_empty());
    }

    #[test]
    fn a_reload_summary_becomes_a_change_set() {
        let new = base(
            json!([]),
            json!([{"name": "k", "type": "stdout"}, {"name": "r", "type": "stdout"}]),
        );
        let s = ReloadSummary {
            connectors_started: vec!["b".into(), "a".into()],
            connectors_stopped: vec!["a".into(), "z".into()],
            connectors_kept: vec!["m".into()],
            sinks_started: vec!["r".into()],
            sinks_stopped: vec!["r".into(), "x".into()],
        };
        let c = from_reload(&s, &new);
        assert_eq!(c.connectors.started, ["b"]);
        assert_eq!(c.connectors.stopped, ["z"]);
        assert_eq!(c.connectors.restarted, ["a"]);
        assert_eq!(c.connectors.kept, ["m"]);
        assert_eq!(c.sinks.restarted, ["r"]);
        assert_eq!(c.sinks.stopped, ["x"]);
        assert_eq!(c.sinks.kept, ["k"]);
    }
}
