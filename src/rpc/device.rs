//! Devices on demand: `device.read` (read every channel now) and `device.write` (one
//! set-point, checked and scaled by the connector kit), each bounded by [`DEVICE_TIMEOUT`].
//! [`write()`] is the one write path, shared with the MQTT commands ([`super::mqtt`]).

use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::RpcModule;
use serde_json::{json, Value};

use super::codes::device_error;
use super::params::{DeviceParams, WriteParams};
use super::readings::reading_json;
use super::{RpcContext, DEVICE_TIMEOUT};
use crate::control::{ControlRegistry, DeviceError};

/// Registers `device.read` and `device.write`.
pub(super) fn register(m: &mut RpcModule<RpcContext>) {
    m.register_async_method("device.read", |p, ctx, _| async move {
        let p: DeviceParams = p.parse()?;
        let connector = ctx.resolve(&p.device, p.connector.as_deref())?;
        let readings =
            tokio::time::timeout(DEVICE_TIMEOUT, ctx.control.read(&connector, &p.device))
                .await
                .unwrap_or_else(|_| {
                    Err(DeviceError::Offline(
                        p.device.clone(),
                        format!("no answer within {DEVICE_TIMEOUT:?}"),
                    ))
                })
                .map_err(device_error)?;
        let readings: Vec<Value> = readings.iter().map(reading_json).collect();
        Ok::<_, ErrorObjectOwned>(
            json!({"connector": connector, "device": p.device, "readings": readings}),
        )
    })
    .expect("unique");
    m.register_async_method("device.write", |p, ctx, ext| async move {
        let p: WriteParams = p.parse()?;
        let connector = ctx.resolve(&p.device, p.connector.as_deref())?;
        let res = write(
            &ctx.control,
            &connector,
            &p.device,
            &p.channel,
            p.value.clone(),
        )
        .await;
        let value = res.as_ref().unwrap_or(&p.value);
        ctx.audit(
            &ext,
            "device.write",
            Some(&connector),
            Some(&p.device),
            Some(&p.channel),
            Some(value),
            &res,
        );
        let written = res.map_err(device_error)?;
        Ok::<_, ErrorObjectOwned>(json!({
            "connector": connector, "device": p.device, "channel": p.channel, "value": written,
        }))
    })
    .expect("unique");
}

/// The one write path of `device.write` and MQTT commands.
pub async fn write(
    control: &ControlRegistry,
    connector: &str,
    device: &str,
    channel: &str,
    value: Value,
) -> Result<Value, DeviceError> {
    let res = tokio::time::timeout(
        DEVICE_TIMEOUT,
        control.write(connector, device, channel, value),
    )
    .await
    .unwrap_or_else(|_| {
        Err(DeviceError::Offline(
            device.to_string(),
            format!("no answer within {DEVICE_TIMEOUT:?}"),
        ))
    });
    match &res {
        Ok(v) => tracing::info!(%connector, %device, %channel, value = %v, "channel written"),
        Err(e) => tracing::warn!(%connector, %device, %channel, error = %e, "write refused"),
    }
    res
}
