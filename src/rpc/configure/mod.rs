//! Changing the configuration over the management API: `config.check`, `config.apply`,
//! `config.rollback` (the web console's configuration page, and scripts through `osgate rpc`).
//!
//! A configuration given here goes through exactly what the `-c` file goes through at start:
//! `OSGATE_SECTION__FIELD` environment overrides, `${VAR}` interpolation, every check, each
//! problem reported at its path as `osgate check` prints it. Masked secrets sent back as
//! `gateway.config` showed them keep their values (`unmask`).
//!
//! `config.apply` hot-reloads it through the service (only what changed restarts; a connector
//! that cannot be built refuses the whole change) and saves it to the `-c` file, keeping the
//! file it replaces as `<file>.prev` (`persist`): the file stays the configuration in force,
//! for a restart, a SIGHUP and the engineer who opens it. The new text is written next to the
//! file before anything is applied, so a file that cannot be written refuses the change with
//! nothing changed. A gateway whose configuration comes from a fleet server (a `remote` section)
//! refuses both apply and rollback: the fleet owns it.
//!
//! `config.rollback` applies the configuration in force before the last apply or reload (kept
//! by the service), or after a restart `<file>.prev`, the same way; rolling back twice returns.
//! One change at a time: the methods hold a lock from check to save.

pub mod changes;
mod persist;
mod unmask;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::RpcModule;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::{app_error, codes, RpcContext};
use crate::config::remote::ConfigSource;
use crate::config::{self, ConfigError, Document, DocumentError, GatewayConfig};
use crate::reading::Timestamp;

/// What the configuration methods keep.
pub struct ConfigState {
    /// The `-c` file (`None`: a gateway without one cannot save, so it cannot apply).
    path: Option<PathBuf>,
    /// The configuration before the last apply or reload, kept by the service.
    previous: Arc<ArcSwapOption<GatewayConfig>>,
    /// One check-apply-save at a time.
    lock: tokio::sync::Mutex<()>,
}

impl ConfigState {
    /// The state for a gateway run from `path`; `previous` is the service's
    /// [`crate::service::GatewayService::previous_config`].
    pub fn new(path: Option<PathBuf>, previous: Arc<ArcSwapOption<GatewayConfig>>) -> Self {
        ConfigState {
            path,
            previous,
            lock: tokio::sync::Mutex::new(()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigParams {
    config: Box<RawValue>,
}

/// A valid configuration and the text to save for it.
struct Checked {
    config: GatewayConfig,
    text: String,
}

fn error_list(errs: &[ConfigError]) -> Value {
    errs.iter()
        .map(|e| json!({"path": e.path, "message": e.message}))
        .collect()
}

/// Reads `raw` as the loader reads the `-c` file; masked secrets take the values in force. A
/// JSON string is the configuration's text (an editor's content, saved with its layout).
fn check_text(raw: &str, current: &GatewayConfig) -> Result<Checked, Vec<ConfigError>> {
    let one = |m: String| vec![ConfigError::new("", m)];
    let text: String;
    let raw = match serde_json::from_str::<String>(raw) {
        Ok(t) => {
            text = t;
            text.as_str()
        }
        Err(_) => raw,
    };
    let mut value: Value =
        serde_json::from_str(raw).map_err(|e| one(format!("not valid JSON: {e}")))?;
    let in_force: Value = serde_json::from_str(&current.source).unwrap_or(Value::Null);
    // Saved as given, unless secrets had to be put back.
    let text = if unmask::unmask(&mut value, &in_force) {
        serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
    } else {
        raw.to_string()
    };
    let mut doc =
        Document::from_value(value).ok_or_else(|| one(DocumentError::NotAnObject.to_string()))?;
    config::merge_env_overrides(&mut doc).map_err(one)?;
    let config = config::from_document(doc, &|k| std::env::var(k).ok()).map_err(|e| e.0)?;
    Ok(Checked { config, text })
}

fn invalid(errs: &[ConfigError]) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        codes::CONFIG_INVALID,
        format!("{}; nothing applied", config::ConfigErrors(errs.to_vec())),
        Some(json!({"errors": error_list(errs)})),
    )
}

/// Refuses a change when a fleet server owns the configuration.
fn refuse_remote(ctx: &RpcContext) -> Result<(), ErrorObjectOwned> {
    let cfg = ctx.config.load();
    let source = ctx.registry.config.borrow().source;
    match &cfg.remote {
        Some(r) => Err(app_error(
            codes::CONFIG_REMOTE,
            format!(
                "the configuration is managed by the fleet server {} (remote.url): change it there",
                r.url
            ),
        )),
        None if source != ConfigSource::Local => Err(app_error(
            codes::CONFIG_REMOTE,
            "the configuration in force came from a fleet server: change it there",
        )),
        None => Ok(()),
    }
}

/// Saves and applies `checked`; the result of `config.apply` and `config.rollback`.
async fn apply(ctx: &RpcContext, checked: Checked) -> Result<Value, ErrorObjectOwned> {
    let Some(path) = ctx.configure.path.as_deref() else {
        return Err(app_error(
            codes::CONFIG_NOT_SAVED,
            "this gateway runs without a configuration file to save to; nothing applied",
        ));
    };
    let staged = persist::stage(path, checked.text.as_bytes()).map_err(|e| {
        app_error(
            codes::CONFIG_NOT_SAVED,
            format!(
                "cannot write next to {}: {e}; nothing applied (a restart must find the applied configuration)",
                path.display()
            ),
        )
    })?;
    let new = checked.config.clone();
    let summary = ctx
        .service
        .reload(Some(checked.config))
        .await
        .map_err(|e| app_error(codes::RELOAD_FAILED, format!("reload rejected: {e}")))?;
    let saved = staged.commit();
    let now = Timestamp::now().0;
    ctx.registry.config.send_modify(|i| {
        i.source = ConfigSource::Local;
        i.loaded = now;
        i.fetched = None;
    });
    let changes = changes::from_reload(&summary, &new);
    if let Err(e) = saved {
        tracing::error!(file = %path.display(), error = %e, "configuration applied but not saved; a restart brings back the previous one");
        return Err(app_error(
            codes::CONFIG_NOT_SAVED,
            format!(
                "applied, but {} could not be replaced ({e}): a restart would bring back the previous configuration",
                path.display()
            ),
        ));
    }
    tracing::info!(file = %path.display(), previous = %persist::prev_path(path).display(), "configuration applied over the management API and saved");
    Ok(json!({
        "ok": true,
        "applied": true,
        "errors": [],
        "changes": changes,
        "file": path.display().to_string(),
    }))
}

/// The text to roll back to: the previous configuration in force (as `<file>.prev` has it when
/// that is the same, to keep its layout), else `<file>.prev` alone (after a restart).
fn previous_text(ctx: &RpcContext) -> Result<String, ErrorObjectOwned> {
    let on_disk = ctx
        .configure
        .path
        .as_deref()
        .and_then(|p| std::fs::read_to_string(persist::prev_path(p)).ok());
    let parsed = |t: &str| serde_json::from_str::<Value>(t).ok();
    match ctx.configure.previous.load_full() {
        Some(prev) => Ok(match on_disk {
            Some(t) if parsed(&t).is_some() && parsed(&t) == parsed(&prev.source) => t,
            _ => {
                let v = parsed(&prev.source).unwrap_or(Value::Null);
                serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
            }
        }),
        None => on_disk.ok_or_else(|| {
            app_error(
                codes::NO_PREVIOUS,
                "no previous configuration: nothing was applied or reloaded since the start, and there is no <file>.prev",
            )
        }),
    }
}

/// Registers `config.check`, `config.apply` and `config.rollback`.
pub(super) fn register(m: &mut RpcModule<RpcContext>) {
    m.register_async_method("config.check", |p: Params<'static>, ctx, _| async move {
        let p: ConfigParams = p.parse()?;
        let current = ctx.config.load_full();
        Ok::<_, ErrorObjectOwned>(match check_text(p.config.get(), &current) {
            Ok(c) => json!({
                "ok": true,
                "errors": [],
                "changes": changes::predict(&current, &c.config, |c| ctx.connector_enabled(c)),
            }),
            Err(errs) => json!({"ok": false, "errors": error_list(&errs), "changes": null}),
        })
    })
    .expect("unique");
    m.register_async_method("config.apply", |p: Params<'static>, ctx, _| async move {
        let p: ConfigParams = p.parse()?;
        let _one = ctx.configure.lock.lock().await;
        refuse_remote(&ctx)?;
        let checked = check_text(p.config.get(), &ctx.config.load()).map_err(|e| invalid(&e))?;
        apply(&ctx, checked).await
    })
    .expect("unique");
    m.register_async_method("config.rollback", |_, ctx, _| async move {
        let _one = ctx.configure.lock.lock().await;
        refuse_remote(&ctx)?;
        let text = previous_text(&ctx)?;
        let checked = check_text(&text, &ctx.config.load()).map_err(|e| invalid(&e))?;
        let mut res = apply(&ctx, checked).await?;
        res["rolled_back"] = true.into();
        Ok::<_, ErrorObjectOwned>(res)
    })
    .expect("unique");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> GatewayConfig {
        config::from_value(
            json!({"gateway": {"id": "g"}, "sinks": [{"name": "s", "type": "stdout"}]}),
            &|_| None,
        )
        .unwrap()
    }

    #[test]
    fn a_typo_is_reported_at_its_path() {
        let raw = r#"{"gateway": {"id": "g"}, "connectors": [{"name": "plc", "protocol": "simulator",
            "devices": [{"name": "d", "intervall": "1s", "channels": []}]}]}"#;
        let errs = check_text(raw, &current()).err().expect("invalid");
        assert!(
            errs.iter()
                .any(|e| e.path == "connectors[0] \"plc\".devices[0].intervall"
                    && e.message.contains("unknown field")),
            "{errs:?}"
        );
    }

    #[test]
    fn the_text_is_saved_as_given_unless_a_secret_was_put_back() {
        let raw = "{\"gateway\": {\"id\": \"g2\"},\n \"sinks\": []}";
        let c = check_text(raw, &current()).unwrap();
        assert_eq!(c.text, raw);
        assert_eq!(c.config.gateway.id, "g2");
        assert!(check_text("[1]", &current()).is_err());
        assert!(check_text("{", &current()).is_err());
        // The text as a string: saved as typed; a syntax error names line and column.
        let s = serde_json::to_string(raw).unwrap();
        assert_eq!(check_text(&s, &current()).unwrap().text, raw);
        let errs = check_text("\"{\\n\\\"gateway\\\": {\\n}},\"", &current())
            .err()
            .unwrap();
        assert!(errs[0].message.contains("line 3"), "{errs:?}");
    }
}
