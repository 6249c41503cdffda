//! What every method reads ([`RpcContext`]: the configuration in force, the health and control
//! registries, the service loop, the reading tap…), and the lookups the method families share:
//! a connector by name, the connector serving a device, whether a connector runs, and the audit
//! record of a change.

use std::sync::Arc;

use arc_swap::ArcSwap;
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::Value;

use super::codes::{self, app_error, device_error};
use super::{configure, roles, session, PeerAddr};
use crate::config::GatewayConfig;
use crate::connectors::ConnectorConfig;
use crate::control::{ControlRegistry, DeviceError};
use crate::pipeline::ReadingTap;
use crate::service::ServiceHandle;
use crate::status::StatusRegistry;

/// What every method reads.
pub struct RpcContext {
    pub(super) config: Arc<ArcSwap<GatewayConfig>>,
    pub(super) registry: Arc<StatusRegistry>,
    pub(super) control: Arc<ControlRegistry>,
    pub(super) service: ServiceHandle,
    pub(super) tap: ReadingTap,
    pub(super) started: i64,
    pub(super) tickets: Arc<session::Tickets>,
    pub(super) subscribers: Arc<tokio::sync::Semaphore>,
    pub(super) listener: Option<Arc<crate::net::listen::Listener>>,
    pub(super) configure: configure::ConfigState,
}

impl RpcContext {
    /// Records one change made by a call (who and from where come from its extensions).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn audit<T, E: std::fmt::Display>(
        &self,
        ext: &jsonrpsee::Extensions,
        method: &str,
        connector: Option<&str>,
        device: Option<&str>,
        channel: Option<&str>,
        value: Option<&Value>,
        result: &Result<T, E>,
    ) {
        let caller = ext
            .get::<crate::auth::Caller>()
            .cloned()
            .unwrap_or_else(roles::local);
        let err = result.as_ref().err().map(|e| e.to_string());
        self.control.audit().record(&crate::audit::AuditEvent {
            gateway: &self.config.load().gateway.id,
            who: &caller.name,
            peer: ext.get::<PeerAddr>().map(|p| p.0),
            method,
            connector,
            device,
            channel,
            value,
            before: None,
            result: err.as_deref().map_or(Ok(()), Err),
        });
    }

    /// Connector `name` of `cfg`.
    pub(super) fn connector_config(
        &self,
        cfg: &GatewayConfig,
        name: &str,
    ) -> Option<ConnectorConfig> {
        cfg.connectors.iter().find(|c| &*c.name == name).cloned()
    }

    /// The connector serving `device`: the one given (checked), else looked up.
    pub(super) fn resolve(
        &self,
        device: &str,
        connector: Option<&str>,
    ) -> Result<String, ErrorObjectOwned> {
        let cfg = self.config.load();
        let owner = cfg
            .connectors
            .iter()
            .find(|c| c.devices.iter().any(|d| &**d == device))
            .map(|c| c.name.to_string())
            .or_else(|| self.control.connector_of(device).map(|c| c.to_string()));
        match (owner, connector) {
            (Some(o), None) => Ok(o),
            (Some(o), Some(c)) if o == c => Ok(o),
            (Some(_), Some(c)) if self.connector_config(&cfg, c).is_none() => Err(app_error(
                codes::UNKNOWN_CONNECTOR,
                format!("unknown connector \"{c}\""),
            )),
            _ => Err(device_error(DeviceError::UnknownDevice(device.to_string()))),
        }
    }

    /// Whether `c` runs: the run-time override (`connector.enable`/`disable`), else its config.
    pub(super) fn connector_enabled(&self, c: &ConnectorConfig) -> bool {
        self.control
            .connector_override(&c.name)
            .unwrap_or(c.enabled)
    }
}
