//! Secrets at rest: files osgate writes that may hold secrets are created `0600`
//! ([`create_private`]), and `osgate check` warns when a configuration file holding literal
//! secrets (not `${VAR}` references) can be read by other users ([`exposure_warning`]) and
//! lists each API key by name and role, never the key ([`key_lines`]).

use std::io::Write as _;
use std::path::Path;

use serde_json::Value;

/// Field names whose values are secrets (as `gateway.config` redacts them).
const SECRET_FIELDS: &[&str] = &["password", "token", "secret", "api_key"];

/// Creates (or truncates) `path` readable and writable by its owner only (`0600`), whatever the
/// umask, and writes `bytes` to it, synced.
pub fn create_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // A file that existed keeps its mode on open: tighten it.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Makes `dir` (`0700`) and the files in it (`0600`) private to their owner, where they are
/// not already: for key material a library wrote with the process's umask. Failures are
/// logged, not fatal.
pub fn restrict_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let tighten = |p: &Path, mode: u32| {
        let Ok(m) = std::fs::metadata(p) else { return };
        if m.permissions().mode() & 0o077 != 0 {
            if let Err(e) = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)) {
                tracing::warn!(path = %p.display(), error = %e, "cannot make a key file private");
            }
        }
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    tighten(dir, 0o700);
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_file()) {
            tighten(&e.path(), 0o600);
        }
    }
}

/// A value that is one `${VAR}` reference (or only references), not a literal.
fn is_reference(s: &str) -> bool {
    let mut rest = s.trim();
    if rest.is_empty() {
        return true;
    }
    while let Some(r) = rest.strip_prefix("${") {
        match r.find('}') {
            Some(end) => rest = r[end + 1..].trim_start(),
            None => return false,
        }
    }
    rest.is_empty()
}

fn walk(v: &Value, path: &str, secret: bool, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                let key = k.to_ascii_lowercase();
                let is_secret = key == "api_keys"
                    || key == "headers"
                    || SECRET_FIELDS
                        .iter()
                        .any(|s| key == *s || key.ends_with(&format!("_{s}")));
                walk(v, &format!("{path}.{k}"), secret || is_secret, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                walk(v, &format!("{path}[{i}]"), secret, out);
            }
        }
        // A named key's `name` and `role` are not secrets.
        Value::String(s)
            if secret
                && !is_reference(s)
                && !(path.ends_with(".name") || path.ends_with(".role")) =>
        {
            out.push(path.trim_start_matches('.').to_string());
        }
        _ => {}
    }
}

/// The paths of literal secrets in a configuration source (`rpc.api_keys[0]`, …).
pub fn literal_secrets(source: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<Value>(source) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(&v, "", false, &mut out);
    out
}

/// The warning `osgate check` prints when `path` holds literal secrets and other users may
/// read it.
pub fn exposure_warning(path: &Path, source: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    if mode & 0o044 == 0 {
        return None;
    }
    let found = literal_secrets(source);
    let first = found.first()?;
    Some(format!(
        "warning: {} holds literal secrets ({first}{}) and is readable by {} (mode {:o}): use ${{VAR}} references or `chmod 600 {}`",
        path.display(),
        if found.len() > 1 {
            format!(" and {} more", found.len() - 1)
        } else {
            String::new()
        },
        if mode & 0o004 != 0 { "every user" } else { "its group" },
        mode & 0o777,
        path.display()
    ))
}

/// One line per API key of the source: `rpc key scada (viewer)`, `connector ingest key key1`.
/// Never the key itself.
pub fn key_lines(source: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<Value>(source) else {
        return Vec::new();
    };
    let keys = |list: &Value| -> Vec<(String, String)> {
        list.as_array()
            .map(|a| {
                a.iter()
                    .enumerate()
                    .map(|(i, k)| {
                        let name = k["name"]
                            .as_str()
                            .map_or_else(|| format!("key{}", i + 1), str::to_string);
                        let role = k["role"].as_str().unwrap_or("admin").to_string();
                        (name, role)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for (name, role) in keys(&v["rpc"]["api_keys"]) {
        out.push(format!("rpc key {name} ({role})"));
    }
    for c in v["connectors"].as_array().into_iter().flatten() {
        let cname = c["name"].as_str().unwrap_or("?");
        for (name, _) in keys(&c["api_keys"]) {
            out.push(format!("connector {cname} key {name}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"{
        "rpc": {"api_keys": ["plain-secret-1", {"name": "scada", "key": "${SCADA_KEY}", "role": "viewer"}]},
        "sinks": [{"url": "mqtt://b", "password": "${PW}", "username": "u"}],
        "connectors": [{"name": "ingest", "api_keys": [{"name": "dev", "key": "lit"}]}]
    }"#;

    #[test]
    fn literal_secrets_are_found_and_references_are_not() {
        assert_eq!(
            literal_secrets(SRC),
            ["connectors[0].api_keys[0].key", "rpc.api_keys[0]"]
        );
        assert!(is_reference("${A}"));
        assert!(is_reference(" ${A}${B} "));
        assert!(!is_reference("x${A}"));
        assert!(!is_reference("${A"));
    }

    #[test]
    fn keys_are_listed_by_name_and_role() {
        let lines = key_lines(SRC);
        assert_eq!(
            lines,
            [
                "rpc key key1 (admin)",
                "rpc key scada (viewer)",
                "connector ingest key dev"
            ]
        );
        assert!(!lines.concat().contains("plain-secret"));
    }

    #[test]
    fn private_files_are_0600_and_readable_configs_are_flagged() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(&p, SRC).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let w = exposure_warning(&p, SRC).unwrap();
        assert!(w.contains("api_keys[0]") && w.contains("and 1 more"), "{w}");
        assert!(w.contains("every user") && w.contains("mode 644"), "{w}");
        create_private(&p, SRC.as_bytes()).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(exposure_warning(&p, SRC), None);
        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        let pem = private.join("private.pem");
        std::fs::write(&pem, "k").unwrap();
        std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o644)).unwrap();
        restrict_dir(&private);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&private), mode(&pem)), (0o700, 0o600));
        let clean = r#"{"rpc": {"api_keys": ["${K}"]}}"#;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(exposure_warning(&p, clean), None);
    }
}
