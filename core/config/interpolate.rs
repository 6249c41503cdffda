//! `${VAR}` in string values, replaced from the environment so secrets stay out of files.

use serde_json::Value;

use super::error::{join, ConfigError};

/// Replaces `${VAR}` in every string with the variable's value; `$${` stays a literal `${`.
pub fn interpolate(
    v: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Vec<ConfigError>,
) {
    match v {
        Value::String(s) if s.contains('$') => match interpolate_str(s, env) {
            Ok(new) => *s = new,
            Err(e) => errs.push(ConfigError::new(path, e)),
        },
        Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                interpolate(x, &format!("{path}[{i}]"), env, errs);
            }
        }
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                interpolate(x, &join(path, k), env, errs);
            }
        }
        _ => {}
    }
}

/// Replaces `${VAR}` in one string (see [`interpolate`]).
pub fn interpolate_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else {
                return Err(format!("unclosed \"${{\" in \"{s}\""));
            };
            let name = &tail[..end];
            match env(name) {
                Some(val) => out.push_str(&val),
                None => {
                    return Err(format!(
                        "environment variable {name} is not set (used as ${{{name}}})"
                    ))
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cret".to_string())
    }

    #[test]
    fn interpolates_and_escapes() {
        assert_eq!(
            interpolate_str("Bearer ${TOKEN}", &env).unwrap(),
            "Bearer s3cret"
        );
        assert_eq!(
            interpolate_str("a $${TOKEN} $5", &env).unwrap(),
            "a ${TOKEN} $5"
        );
        assert!(interpolate_str("${NOPE}", &env)
            .unwrap_err()
            .contains("NOPE"));
        assert!(interpolate_str("${TOKEN", &env)
            .unwrap_err()
            .contains("unclosed"));
    }
}
