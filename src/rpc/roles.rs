//! Which role each method needs: the one table, and the check every call passes through
//! (JSON-RPC over HTTP and WebSocket as a jsonrpsee RPC middleware, [`RoleLayer`]; RPC over
//! MQTT through [`check`]).
//!
//! A method not in the table needs `admin`, so a method added later is closed until someone
//! decides otherwise. A call beyond the key's role is answered [`codes::FORBIDDEN`] with
//! `key "scada" (viewer) may not call device.write`, and nothing runs. `GET /metrics` needs
//! `viewer` (any key).
//!
//! Over a WebSocket, a message that is not a call with a usable id (a notification, or an `id`
//! that is an object, an array or a bool, which jsonrpsee would take for a notification and
//! leave unanswered) is answered -32600 with id `null`, as the HTTP guard answers such an id.

use std::future::Future;

use jsonrpsee::core::middleware::{Batch, BatchEntry, BatchEntryErr, Notification, RpcServiceT};
use jsonrpsee::types::{ErrorObjectOwned, Id, Request};
use jsonrpsee::MethodResponse;

use super::codes;
use crate::auth::{Caller, Role};

/// Minimum role per method; anything else needs [`Role::Admin`].
pub const TABLE: &[(&str, Role)] = &[
    // viewer: status and lists, live readings, who am I.
    ("gateway.status", Role::Viewer),
    ("connectors.list", Role::Viewer),
    ("connector.status", Role::Viewer),
    ("devices.list", Role::Viewer),
    ("device.status", Role::Viewer),
    ("readings.subscribe", Role::Viewer),
    ("readings.unsubscribe", Role::Viewer),
    ("session.whoami", Role::Viewer),
    ("session.ticket", Role::Viewer),
    ("config.check", Role::Viewer),
    // operator: devices and connectors, field tools.
    ("device.read", Role::Operator),
    ("device.write", Role::Operator),
    ("device.enable", Role::Operator),
    ("device.disable", Role::Operator),
    ("connector.enable", Role::Operator),
    ("connector.disable", Role::Operator),
    ("connector.restart", Role::Operator),
    ("mbus.scan", Role::Operator),
    ("modbus.read", Role::Operator),
    ("opcua.browse", Role::Operator),
    // admin: the configuration.
    ("gateway.reload", Role::Admin),
    ("gateway.config", Role::Admin),
    ("config.apply", Role::Admin),
    ("config.rollback", Role::Admin),
];

/// The role `method` needs.
pub fn required(method: &str) -> Role {
    TABLE
        .iter()
        .find(|(m, _)| *m == method)
        .map_or(Role::Admin, |(_, r)| *r)
}

/// `Err` (the answer to give) when `caller` may not call `method`.
pub fn check(caller: &Caller, method: &str) -> Result<(), ErrorObjectOwned> {
    if caller.role >= required(method) {
        return Ok(());
    }
    Err(ErrorObjectOwned::owned(
        codes::FORBIDDEN,
        format!(
            "key \"{}\" ({}) may not call {method}",
            caller.name, caller.role
        ),
        Some(serde_json::json!({"required": required(method).as_str()})),
    ))
}

/// The caller of a request without one in its extensions (none is put there only when the
/// listener is open without keys on loopback): a local admin.
pub fn local() -> Caller {
    Caller {
        name: "local".into(),
        role: Role::Admin,
    }
}

/// Marks a WebSocket connection's calls (put into the upgrade request's extensions).
#[derive(Debug, Clone, Copy)]
pub struct OverWebSocket;

/// The jsonrpsee RPC middleware layer of [`RoleCheck`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RoleLayer;

impl<S> tower::Layer<S> for RoleLayer {
    type Service = RoleCheck<S>;
    fn layer(&self, inner: S) -> RoleCheck<S> {
        RoleCheck { inner }
    }
}

/// Refuses calls beyond the caller's role before they run.
#[derive(Debug, Clone)]
pub struct RoleCheck<S> {
    inner: S,
}

fn caller_of(ext: &jsonrpsee::Extensions) -> Caller {
    ext.get::<Caller>().cloned().unwrap_or_else(local)
}

fn invalid() -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        jsonrpsee::types::error::INVALID_REQUEST_CODE,
        jsonrpsee::types::error::INVALID_REQUEST_MSG,
        Some("a call needs an \"id\" that is a string, a number or null; osgate takes no notifications"),
    )
}

impl<S> RpcServiceT for RoleCheck<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Send
        + Sync
        + Clone
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(&self, req: Request<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        let inner = self.inner.clone();
        async move {
            match check(&caller_of(req.extensions()), req.method_name()) {
                Ok(()) => inner.call(req).await,
                Err(e) => MethodResponse::error(req.id, e),
            }
        }
    }

    fn batch<'a>(&self, mut batch: Batch<'a>) -> impl Future<Output = MethodResponse> + Send + 'a {
        for entry in batch.iter_mut() {
            let denied = match entry {
                Ok(BatchEntry::Call(req)) => check(&caller_of(req.extensions()), req.method_name())
                    .err()
                    .map(|e| (req.id.clone(), e)),
                Ok(BatchEntry::Notification(n))
                    if n.extensions().get::<OverWebSocket>().is_some() =>
                {
                    Some((Id::Null, invalid()))
                }
                _ => None,
            };
            if let Some((id, e)) = denied {
                *entry = Err(BatchEntryErr::new(id, e));
            }
        }
        self.inner.batch(batch)
    }

    fn notification<'a>(
        &self,
        n: Notification<'a>,
    ) -> impl Future<Output = MethodResponse> + Send + 'a {
        let inner = self.inner.clone();
        async move {
            if n.extensions().get::<OverWebSocket>().is_some() {
                return MethodResponse::error(Id::Null, invalid());
            }
            inner.notification(n).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role) -> Caller {
        Caller {
            name: "scada".into(),
            role,
        }
    }

    #[test]
    fn roles_grow_and_unknown_methods_need_admin() {
        assert!(check(&caller(Role::Viewer), "gateway.status").is_ok());
        assert!(check(&caller(Role::Viewer), "readings.subscribe").is_ok());
        let e = check(&caller(Role::Viewer), "device.write").unwrap_err();
        assert_eq!(e.code(), codes::FORBIDDEN);
        assert_eq!(
            e.message(),
            "key \"scada\" (viewer) may not call device.write"
        );
        assert!(check(&caller(Role::Operator), "device.write").is_ok());
        assert!(check(&caller(Role::Operator), "mbus.scan").is_ok());
        assert!(check(&caller(Role::Operator), "gateway.reload").is_err());
        assert!(check(&caller(Role::Operator), "some.future_method").is_err());
        assert!(check(&caller(Role::Admin), "some.future_method").is_ok());
        assert_eq!(required("config.apply"), Role::Admin);
        assert_eq!(required("config.check"), Role::Viewer);
    }

    #[test]
    fn the_table_names_each_method_once() {
        for (i, (m, _)) in TABLE.iter().enumerate() {
            assert!(!TABLE[i + 1..].iter().any(|(n, _)| n == m), "{m} twice");
        }
    }
}
