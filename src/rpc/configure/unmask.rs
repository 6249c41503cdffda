//! Masked secrets back to their values: `gateway.config` shows API keys, passwords, tokens,
//! headers and URL passwords as `***` ([`super::super::redact`]); a configuration edited from
//! that view and sent back to `config.check`/`config.apply` carries the masks. A value that is
//! exactly what the view showed for a secret means "unchanged", so it takes the value in force
//! again. List elements are matched by their `name` (a connector or sink moved in the list keeps
//! its secrets), else by position.

use serde_json::Value;

/// Replaces, in `new`, every masked value that `gateway.config` showed for `current` with the
/// value of `current`. Returns whether anything was replaced.
pub fn unmask(new: &mut Value, current: &Value) -> bool {
    let shown = super::super::redact(current);
    walk(new, current, &shown)
}

fn walk(new: &mut Value, cur: &Value, shown: &Value) -> bool {
    match (new, cur, shown) {
        (Value::Object(n), Value::Object(c), Value::Object(s)) => {
            let mut changed = false;
            for (k, v) in n.iter_mut() {
                if let (Some(cv), Some(sv)) = (c.get(k), s.get(k)) {
                    changed |= walk(v, cv, sv);
                }
            }
            changed
        }
        (Value::Array(n), Value::Array(c), Value::Array(s)) => {
            let mut changed = false;
            for (i, v) in n.iter_mut().enumerate() {
                let j = match v.get("name").and_then(Value::as_str) {
                    Some(name) => c
                        .iter()
                        .position(|x| x.get("name").and_then(Value::as_str) == Some(name)),
                    None => (i < c.len()).then_some(i),
                };
                if let Some(j) = j {
                    changed |= walk(v, &c[j], &s[j]);
                }
            }
            changed
        }
        (n, c, s) => {
            if *n == *s && *s != *c {
                *n = c.clone();
                true
            } else {
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_sent_back_take_the_values_in_force() {
        let current = json!({
            "rpc": {"api_keys": ["k1-secret", "k2-secret"]},
            "sinks": [
                {"name": "a", "url": "mqtt://u:pw@h", "password": "${PW}"},
                {"name": "b", "url": "mqtt://h", "password": "plain"}
            ],
            "remote": {"headers": {"Authorization": "Bearer t"}}
        });
        let shown = crate::rpc::redact(&current);
        let mut new = shown.clone();
        // The sinks swapped places, one password really changed, a sink was added.
        new["sinks"] = json!([
            shown["sinks"][1].clone(),
            {"name": "a", "url": "mqtt://u:***@h", "password": "new-pw"},
            {"name": "c", "password": "***"}
        ]);
        assert!(unmask(&mut new, &current));
        assert_eq!(new["rpc"]["api_keys"], current["rpc"]["api_keys"]);
        assert_eq!(new["remote"], current["remote"]);
        assert_eq!(new["sinks"][0], current["sinks"][1]);
        assert_eq!(new["sinks"][1]["url"], "mqtt://u:pw@h");
        assert_eq!(new["sinks"][1]["password"], "new-pw");
        assert_eq!(
            new["sinks"][2]["password"], "***",
            "nothing to take it from"
        );
    }

    #[test]
    fn a_config_without_masks_is_left_alone() {
        let current = json!({"sinks": [{"name": "a", "password": "x"}]});
        let mut new = json!({"sinks": [{"name": "a", "password": "y"}], "gateway": {"id": "g"}});
        let before = new.clone();
        assert!(!unmask(&mut new, &current));
        assert_eq!(new, before);
    }
}
