//! Reading the `-c` file: the JSON text as a [`Document`] (its connector list kept as text),
//! `OSGATE_SECTION__FIELD` environment overrides merged in with figment, then
//! [`from_document`]; and [`LoadError`], what can go wrong before a configuration is in force.

use std::path::{Path, PathBuf};

use serde_json::Value;

use osgate_core::config::{ConfigErrors, Document};

use super::{from_document, GatewayConfig};

/// Errors while reading a configuration file (before it can be validated).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is missing, unreadable or not valid JSON, or an env override is malformed.
    #[error("cannot read configuration {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The configuration was read but is invalid.
    #[error("{path}: {errors}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        errors: ConfigErrors,
    },
    /// Remote, cache and local file were all tried and none is usable.
    #[error("no usable configuration: {}", reasons.join("; "))]
    NoUsableSource {
        /// Why each source was rejected, in the order tried.
        reasons: Vec<String>,
    },
}

/// Reads the configuration document at `path` with `OSGATE_SECTION__FIELD` env overrides
/// merged in (before interpolation and validation).
pub fn read_file(path: &Path) -> Result<Document, LoadError> {
    let err = |message: String| LoadError::Read {
        path: path.to_path_buf(),
        message,
    };
    // The file is read as a `Document` (its device lists stay text); going through figment's
    // value tree cost many times the memory on configs with thousands of channels.
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut doc = Document::parse(&text).map_err(|e| err(e.to_string()))?;
    drop(text);
    merge_env_overrides(&mut doc).map_err(err)?;
    Ok(doc)
}

/// Merges the `OSGATE_SECTION__FIELD` environment overrides into `doc`, as [`read_file`] does
/// (a configuration given over the management API gets them like the file it replaces).
pub fn merge_env_overrides(doc: &mut Document) -> Result<(), String> {
    use figment::providers::Env;
    // figment reads and types the overrides; only nested keys (`OSGATE_RPC__LISTEN`): plain
    // `OSGATE_*` variables are secrets for `${VAR}` interpolation, not overrides.
    let overrides: Value = figment::Figment::new()
        .merge(
            Env::prefixed("OSGATE_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        )
        .extract()
        .map_err(|e| format!("environment override: {e}"))?;
    doc.merge(overrides)
        .map_err(|e| format!("environment override: {e}"))?;
    doc.env_overrides = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter_map(|k| {
            let rest = k.strip_prefix("OSGATE_")?;
            rest.contains("__")
                .then(|| (k.clone(), rest.to_lowercase().replace("__", ".")))
        })
        .collect();
    Ok(())
}

/// Reads and validates the configuration file at `path` (env overrides and `${VAR}` applied).
pub fn load_file(path: &Path) -> Result<GatewayConfig, LoadError> {
    let doc = read_file(path)?;
    from_document(doc, &|k| std::env::var(k).ok()).map_err(|errors| LoadError::Invalid {
        path: path.to_path_buf(),
        errors,
    })
}
