//! Sparkplug commands to devices (DCMD): a metric's value read by its data type, and the write
//! itself, through the device control registry like JSON-RPC `device.write`.

use std::time::Duration;

use super::proto::{DataType, Metric, MetricValue};
use osgate_core::audit;
use osgate_core::control::{ControlRegistry, DeviceError};

/// How long a DCMD write may take (the same bound as `device.write`).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The value of a command metric as `device.write` takes it, read by its data type (the
/// command's own, else the one of the birth).
pub fn command_value(m: &Metric, dtype: Option<DataType>) -> Option<serde_json::Value> {
    use DataType::*;
    Some(match (m.value.as_ref()?, dtype) {
        (MetricValue::IntValue(v), Some(Int8)) => (*v as u8 as i8).into(),
        (MetricValue::IntValue(v), Some(Int16)) => (*v as u16 as i16).into(),
        (MetricValue::IntValue(v), Some(Int32)) => (*v as i32).into(),
        (MetricValue::IntValue(v), _) => (*v).into(),
        (MetricValue::LongValue(v), Some(Int64)) => (*v as i64).into(),
        (MetricValue::LongValue(v), _) => (*v).into(),
        (MetricValue::FloatValue(v), _) => serde_json::Number::from_f64(*v as f64)?.into(),
        (MetricValue::DoubleValue(v), _) => serde_json::Number::from_f64(*v)?.into(),
        (MetricValue::BooleanValue(b), _) => (*b).into(),
        (MetricValue::StringValue(s), _) => s.clone().into(),
        (MetricValue::BytesValue(_), _) => return None,
    })
}

/// A DCMD write of gateway `gateway`: the device write path of `device.write` (writable
/// channels, range checks in the connector kit), bounded in time, recorded in the audit trail
/// (`who` `sparkplug`, `method` `DCMD`) like every change.
pub async fn write(
    control: &ControlRegistry,
    gateway: &str,
    device: &str,
    channel: &str,
    value: serde_json::Value,
) -> Result<serde_json::Value, DeviceError> {
    let connector = control.connector_of(device);
    let asked = value.clone();
    let res = match &connector {
        None => Err(DeviceError::UnknownDevice(device.to_string())),
        Some(connector) => tokio::time::timeout(
            WRITE_TIMEOUT,
            control.write(connector, device, channel, value),
        )
        .await
        .unwrap_or_else(|_| {
            Err(DeviceError::Offline(
                device.to_string(),
                format!("no answer within {WRITE_TIMEOUT:?}"),
            ))
        }),
    };
    match &res {
        Ok(v) => {
            tracing::info!(via = "sparkplug", %device, %channel, value = %v, "channel written")
        }
        Err(e) => tracing::warn!(via = "sparkplug", %device, %channel, error = %e, "write refused"),
    }
    let error = res.as_ref().err().map(ToString::to_string);
    control.audit().record(&audit::AuditEvent {
        gateway,
        who: "sparkplug",
        method: "DCMD",
        connector: connector.as_deref(),
        device: Some(device),
        channel: Some(channel),
        value: Some(res.as_ref().unwrap_or(&asked)),
        result: error.as_deref().map_or(Ok(()), Err),
        ..Default::default()
    });
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_values_follow_the_data_type() {
        let m = |v| Metric {
            value: Some(v),
            ..Default::default()
        };
        let v = |mv, t| command_value(&m(mv), t);
        assert_eq!(
            v(MetricValue::IntValue(255), Some(DataType::Int8)),
            Some((-1).into())
        );
        assert_eq!(
            v(MetricValue::IntValue(u32::MAX), Some(DataType::Int32)),
            Some((-1).into())
        );
        assert_eq!(
            v(MetricValue::IntValue(7), Some(DataType::UInt16)),
            Some(7.into())
        );
        assert_eq!(
            v(MetricValue::LongValue(u64::MAX), Some(DataType::Int64)),
            Some((-1).into())
        );
        assert_eq!(
            v(MetricValue::DoubleValue(2.5), None),
            Some(serde_json::json!(2.5))
        );
        assert_eq!(v(MetricValue::BooleanValue(true), None), Some(true.into()));
        assert_eq!(v(MetricValue::BytesValue(vec![1]), None), None);
        assert_eq!(command_value(&Metric::default(), None), None);
    }
}
