//! `mbus.scan`: finds the meters on a running M-Bus connector's bus. A bus has one master, so
//! the connector pauses while the scan owns the bus and resumes afterwards; the scan is bounded
//! by `max_time`.

use std::time::Duration;

use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::RpcModule;
use serde::Deserialize;
use serde_json::json;

use super::{app_error, codes, RpcContext};
use crate::config::Dur;
use crate::connectors::mbus::{self, cli, json as mbus_json};
use crate::service::ConnectorAction;

/// Longest scan a caller may ask for.
const MAX_TIME: Duration = Duration::from_secs(600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanParams {
    connector: String,
    /// `primary` (default: SND_NKE to 0–250) or `secondary` (wildcard search).
    #[serde(default)]
    mode: Mode,
    /// How long the scan may take (default `60s`, at most `10m`).
    #[serde(default)]
    max_time: Option<Dur>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    #[default]
    Primary,
    Secondary,
}

/// Registers `mbus.scan`.
pub(super) fn register(m: &mut RpcModule<RpcContext>) {
    m.register_async_method("mbus.scan", |p, ctx, _| async move {
        let p: ScanParams = p.parse()?;
        let cfg = ctx
            .connector_config(&ctx.config.load(), &p.connector)
            .ok_or_else(|| {
                app_error(
                    codes::UNKNOWN_CONNECTOR,
                    format!("unknown connector \"{}\"", p.connector),
                )
            })?;
        let Some(spec) = cfg.kind.spec::<mbus::MbusConfig>() else {
            return Err(ErrorObjectOwned::owned(
                -32602,
                format!(
                    "connector \"{}\" is a {} connector, not mbus",
                    p.connector, cfg.protocol
                ),
                None::<()>,
            ));
        };
        let max = p.max_time.map_or(Duration::from_secs(60), |d| d.0);
        if max > MAX_TIME || max.is_zero() {
            return Err(ErrorObjectOwned::owned(
                -32602,
                format!("max_time must be between 1s and {}", Dur(MAX_TIME)),
                None::<()>,
            ));
        }
        let was_running = ctx.connector_enabled(&cfg);
        if was_running {
            ctx.service
                .connector(&p.connector, ConnectorAction::Disable)
                .await
                .map_err(|e| app_error(codes::CONNECTOR_FAILED, e))?;
        }
        tracing::info!(connector = %p.connector, mode = ?p.mode, max_time = ?max,
            "M-Bus scan: the connector pauses while the scan owns the bus");
        let (endpoint, timing) = spec.settings.link(spec.timing.timeout);
        let started = std::time::Instant::now();
        // The scan stops itself at max_time; the outer bound covers a bus that hangs.
        let found = tokio::time::timeout(
            max + Duration::from_secs(5),
            cli::scan(endpoint, timing, p.mode == Mode::Secondary, max),
        )
        .await;
        if was_running {
            if let Err(e) = ctx
                .service
                .connector(&p.connector, ConnectorAction::Enable)
                .await
            {
                tracing::error!(connector = %p.connector, error = %e,
                    "the connector did not restart after the M-Bus scan");
            }
        }
        let found = match found {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return Err(app_error(codes::DEVICE_FAILED, e.to_string())),
            Err(_) => {
                return Err(app_error(
                    codes::DEVICE_FAILED,
                    format!("the scan did not end within {}", Dur(max)),
                ))
            }
        };
        Ok::<_, ErrorObjectOwned>(json!({
            "connector": p.connector,
            // false when max_time ended the scan before it covered the whole bus
            "complete": started.elapsed() < max,
            "mode": match p.mode { Mode::Primary => "primary", Mode::Secondary => "secondary" },
            "meters": found.iter().map(mbus_json::found).collect::<Vec<_>>(),
        }))
    })
    .expect("unique");
}
