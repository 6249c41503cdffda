//! Secrets out of sight: [`redact`] masks a configuration as written (`${VAR}` not yet
//! replaced) for `gateway.config`: API keys, passwords, tokens, request headers and passwords
//! inside URLs become `***`. `configure::unmask` reverses it for a configuration sent back.

use serde_json::Value;

/// Hides secrets in a configuration (as written, `${VAR}` not yet replaced): API keys,
/// passwords, tokens, request headers and passwords inside URLs.
pub fn redact(v: &Value) -> Value {
    const HIDDEN: &str = "***";
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let key = k.to_ascii_lowercase();
                    let out = if key == "api_keys" {
                        match v {
                            Value::Array(a) => {
                                Value::Array(a.iter().map(|_| HIDDEN.into()).collect())
                            }
                            _ => HIDDEN.into(),
                        }
                    } else if key == "headers" {
                        match v {
                            Value::Object(h) => Value::Object(
                                h.keys().map(|k| (k.clone(), HIDDEN.into())).collect(),
                            ),
                            _ => HIDDEN.into(),
                        }
                    } else if ["password", "token", "secret", "api_key"]
                        .iter()
                        .any(|s| key == *s || key.ends_with(&format!("_{s}")))
                        && !v.is_null()
                    {
                        HIDDEN.into()
                    } else {
                        redact(v)
                    };
                    (k.clone(), out)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(redact).collect()),
        Value::String(s) => Value::String(redact_url(s)),
        other => other.clone(),
    }
}

/// `scheme://user:password@host…` → `scheme://user:***@host…`.
fn redact_url(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let masked = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                user.to_string()
            };
            format!("{scheme}://{masked}@{host}{}", &rest[authority_end..])
        }
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redaction_hides_keys_passwords_headers_and_url_passwords() {
        let src = json!({
            "rpc": {"listen": "127.0.0.1:1", "api_keys": ["secret-key-1", "secret-key-2"]},
            "remote": {"url": "https://fleet/cfg", "headers": {"Authorization": "Bearer abc"}},
            "sinks": [{"name": "m", "url": "mqtt://user:pw@broker:1883", "password": "${MQ_PW}", "username": "u"}],
            "connectors": [{"name": "c", "token": "t0k", "password": null}]
        });
        let r = redact(&src);
        let text = r.to_string();
        for secret in [
            "secret-key-1",
            "secret-key-2",
            "Bearer abc",
            "pw@",
            "${MQ_PW}",
            "t0k",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(r["rpc"]["api_keys"], json!(["***", "***"]));
        assert_eq!(r["sinks"][0]["url"], "mqtt://user:***@broker:1883");
        assert_eq!(r["sinks"][0]["username"], "u");
        assert_eq!(r["remote"]["url"], "https://fleet/cfg");
        assert_eq!(r["connectors"][0]["password"], Value::Null);
    }

    #[test]
    fn urls_without_password_stay() {
        assert_eq!(redact_url("mqtt://host:1883/x@y"), "mqtt://host:1883/x@y");
        assert_eq!(redact_url("mqtt://user@host"), "mqtt://user@host");
        assert_eq!(redact_url("plain text"), "plain text");
    }
}
