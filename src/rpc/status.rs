//! What the gateway is doing: `gateway.status` (identity, uptime, the configuration in force,
//! every connector with its devices, every sink, the uplink), `gateway.config` (the
//! configuration as written, secrets masked), `connectors.list`, `connector.status`,
//! `devices.list` and `device.status` (with `"channels": true`, the configured channels). The
//! views are built from the configuration in force, the run-time overrides of the control
//! registry and the health of the status registry.

use jsonrpsee::types::{ErrorObjectOwned, Params};
use jsonrpsee::RpcModule;
use serde_json::{json, Value};

use super::codes::{self, app_error, device_error};
use super::params::{parse_optional, ConnectorParams, DeviceParams, DevicesParams};
use super::{channels, redact, RpcContext};
use crate::connectors::ConnectorConfig;
use crate::control::DeviceError;
use crate::reading::Timestamp;
use crate::status::DeviceStatus;

/// Registers a method that answers at once from the context.
fn method(
    m: &mut RpcModule<RpcContext>,
    name: &'static str,
    f: impl Fn(Params<'_>, &RpcContext) -> Result<Value, ErrorObjectOwned> + Send + Sync + 'static,
) {
    m.register_method(name, move |p, ctx, _| f(p, ctx))
        .expect("method names are unique");
}

/// Registers the status methods.
pub(super) fn register(m: &mut RpcModule<RpcContext>) {
    method(m, "gateway.status", |_, ctx| Ok(ctx.status()));
    method(m, "gateway.config", |_, ctx| {
        let source: Value = serde_json::from_str(&ctx.config.load().source)
            .map_err(|e| ErrorObjectOwned::owned(-32603, e.to_string(), None::<()>))?;
        Ok(redact(&source))
    });
    method(m, "connectors.list", |_, ctx| Ok(ctx.connectors().into()));
    method(m, "connector.status", |p, ctx| {
        let p: ConnectorParams = p.parse()?;
        let cfg = ctx.config.load();
        ctx.connector_config(&cfg, &p.connector)
            .map(|c| ctx.connector_view(&c))
            .ok_or_else(|| {
                app_error(
                    codes::UNKNOWN_CONNECTOR,
                    format!("unknown connector \"{}\"", p.connector),
                )
            })
    });
    method(m, "devices.list", |p, ctx| {
        let p: DevicesParams = parse_optional(&p)?;
        let cfg = ctx.config.load();
        if let Some(c) = &p.connector {
            if ctx.connector_config(&cfg, c).is_none() {
                return Err(app_error(
                    codes::UNKNOWN_CONNECTOR,
                    format!("unknown connector \"{c}\""),
                ));
            }
        }
        let devices: Vec<Value> = ctx
            .connectors()
            .into_iter()
            .filter(|c| p.connector.as_deref().is_none_or(|n| c["name"] == n))
            .flat_map(|mut c| match c["devices"].take() {
                Value::Array(d) => d,
                _ => Vec::new(),
            })
            .collect();
        Ok(devices.into())
    });
    method(m, "device.status", |p, ctx| {
        let p: DeviceParams = p.parse()?;
        let connector = ctx.resolve(&p.device, p.connector.as_deref())?;
        let cfg = ctx.config.load();
        let c = ctx
            .connector_config(&cfg, &connector)
            .ok_or_else(|| device_error(DeviceError::UnknownDevice(p.device.clone())))?;
        let view = ctx.connector_view(&c);
        let mut found = view["devices"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["device"] == p.device.as_str()))
            .cloned()
            .unwrap_or(Value::Null);
        if p.channels && found.is_object() {
            found["channels"] = channels::of(&cfg.source, &p.device).into();
        }
        Ok(found)
    });
}

impl RpcContext {
    /// One device as `device.status` and the device lists show it.
    fn device_view(
        &self,
        connector: &str,
        connector_on: bool,
        device: &str,
        st: Option<&DeviceStatus>,
    ) -> Value {
        let enabled = self
            .control
            .device_enabled(connector, device)
            .or(st.map(|s| s.enabled))
            .unwrap_or(true);
        json!({
            "connector": connector,
            "device": device,
            "running": connector_on && enabled && st.is_some_and(|s| s.running),
            "online": connector_on && st.is_some_and(|s| s.online),
            "health": match st {
                Some(s) if connector_on && enabled => s.health.as_str(),
                _ => "stopped",
            },
            "bad_channels": st.map_or(0, |s| s.bad_channels),
            "enabled": enabled,
            "last_ok": st.and_then(|s| s.last_ok).map(|t| t.0),
            "errors": st.map_or(0, |s| s.errors),
            "last_error": st.and_then(|s| s.last_error.clone()),
        })
    }

    /// One connector with its devices, as `connector.status` and `connectors.list` show it.
    fn connector_view(&self, c: &ConnectorConfig) -> Value {
        let name = &c.name;
        let on = self.connector_enabled(c);
        let health = self
            .registry
            .connectors()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| h);
        let statuses = health
            .as_ref()
            .map(|h| h.devices.lock().expect("status lock").clone())
            .unwrap_or_default();
        // The configured devices, then those a listener created at run time.
        let devices: Vec<Value> = c
            .devices
            .iter()
            .chain(statuses.keys().filter(|d| !c.devices.contains(d)))
            .map(|d| self.device_view(name, on, d, statuses.get(d)))
            .collect();
        let inputs = health
            .as_ref()
            .map(|h| h.inputs_snapshot())
            .unwrap_or_default();
        let degraded = devices
            .iter()
            .any(|d| d["enabled"] == true && d["health"] != "online");
        json!({
            "name": &**name,
            "protocol": c.protocol,
            "enabled": on,
            "running": on,
            "health": if !on { "stopped" } else if degraded { "degraded" } else { "ok" },
            "counters": health.as_ref().map(|h| h.counters.snapshot()).unwrap_or_default(),
            "last_error": health.as_ref().and_then(|h| h.last_error.lock().expect("status lock").clone()),
            "inputs": inputs,
            "devices": devices,
        })
    }

    fn connectors(&self) -> Vec<Value> {
        let cfg = self.config.load();
        cfg.connectors
            .iter()
            .map(|c| self.connector_view(c))
            .collect()
    }

    fn sinks(&self) -> Vec<Value> {
        let cfg = self.config.load();
        let counters = self.registry.sinks();
        cfg.sinks
            .iter()
            .map(|s| {
                let c = counters
                    .iter()
                    .find(|(n, _)| **n == *s.name())
                    .map(|(_, c)| c.snapshot());
                let health = match &c {
                    _ if !s.common.enabled => "stopped",
                    Some(c) if !c.connected && c.last_error.is_some() => "disconnected",
                    Some(c) if c.buffered > 0 => "backlog",
                    _ => "ok",
                };
                json!({
                    "name": s.name(),
                    "type": s.raw.get("type").cloned().unwrap_or(Value::Null),
                    "enabled": s.common.enabled,
                    "health": health,
                    "connected": c.as_ref().is_some_and(|c| c.connected),
                    "last_error": c.as_ref().and_then(|c| c.last_error.clone()),
                    "counters": c.unwrap_or_default(),
                })
            })
            .collect()
    }

    fn status(&self) -> Value {
        let now = Timestamp::now().0;
        let cfg = self.config.load();
        let info = self.registry.config.borrow().clone();
        let mut config = serde_json::to_value(&info).unwrap_or_else(|_| json!({}));
        if let Some(o) = config.as_object_mut() {
            o.insert("age_ms".into(), info.age_ms(now).into());
        }
        json!({
            "gateway": cfg.gateway.id,
            "version": crate::VERSION,
            "commit": crate::COMMIT,
            "started": self.started,
            "uptime_s": (now - self.started).max(0) / 1000,
            "config": config,
            "connectors": self.connectors(),
            "sinks": self.sinks(),
            "uplink": self.registry.uplink.to_json(),
        })
    }
}
