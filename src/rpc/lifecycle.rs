//! What runs: `gateway.reload` (re-reads the configuration source), `connector.enable`,
//! `connector.disable`, `connector.restart` (through the service loop, so changes never
//! overlap) and `device.enable`/`device.disable` (the kit's run-time switch). Every call is
//! audited with its caller.

use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::RpcModule;
use serde_json::json;

use super::codes::{self, app_error, device_error};
use super::params::{ConnectorParams, DeviceParams};
use super::RpcContext;
use crate::service::ConnectorAction;

/// Registers the methods that switch what runs.
pub(super) fn register(m: &mut RpcModule<RpcContext>) {
    for (name, enabled) in [("device.enable", true), ("device.disable", false)] {
        m.register_method(name, move |p, ctx, ext| {
            let p: DeviceParams = p.parse()?;
            let connector = ctx.resolve(&p.device, p.connector.as_deref())?;
            let res = ctx
                .control
                .set_device_enabled(&connector, &p.device, enabled)
                .map_err(device_error);
            ctx.audit(ext, name, Some(&connector), Some(&p.device), None, None, &res);
            res?;
            tracing::info!(%connector, device = %p.device, enabled, "device enabled/disabled over RPC");
            Ok::<_, ErrorObjectOwned>(
                json!({"connector": connector, "device": p.device, "enabled": enabled}),
            )
        })
        .expect("unique");
    }
    m.register_async_method("gateway.reload", |_, ctx, ext| async move {
        let res = ctx.service.reload(None).await;
        ctx.audit(&ext, "gateway.reload", None, None, None, None, &res);
        match res {
            Ok(s) => Ok(json!({
                "connectors_started": s.connectors_started,
                "connectors_stopped": s.connectors_stopped,
                "connectors_kept": s.connectors_kept,
                "sinks_started": s.sinks_started,
                "sinks_stopped": s.sinks_stopped,
            })),
            Err(e) => Err(app_error(
                codes::RELOAD_FAILED,
                format!("reload rejected: {e}"),
            )),
        }
    })
    .expect("unique");
    for (name, action) in [
        ("connector.enable", ConnectorAction::Enable),
        ("connector.disable", ConnectorAction::Disable),
        ("connector.restart", ConnectorAction::Restart),
    ] {
        m.register_async_method(name, move |p, ctx, ext| async move {
            let p: ConnectorParams = p.parse()?;
            if ctx
                .connector_config(&ctx.config.load(), &p.connector)
                .is_none()
            {
                return Err(app_error(
                    codes::UNKNOWN_CONNECTOR,
                    format!("unknown connector \"{}\"", p.connector),
                ));
            }
            let res = ctx.service.connector(&p.connector, action).await;
            ctx.audit(&ext, name, Some(&p.connector), None, None, None, &res);
            let running = res.map_err(|e| app_error(codes::CONNECTOR_FAILED, e))?;
            Ok::<_, ErrorObjectOwned>(json!({"connector": p.connector, "running": running}))
        })
        .expect("unique");
    }
}
