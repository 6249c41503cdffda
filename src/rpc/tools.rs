//! The protocols' field tools ([`crate::connectors::tool::methods`]: `modbus.read`,
//! `opcua.browse`) as JSON-RPC methods: bad params answer -32602 (Invalid params) with every
//! problem named, a device that fails or does not answer answers
//! [`DEVICE_FAILED`](super::codes::DEVICE_FAILED).

use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::RpcModule;
use serde_json::Value;

use super::{app_error, codes, RpcContext};
use crate::connectors::tool::{self, ToolError};

/// Registers every tool method.
pub(super) fn register(m: &mut RpcModule<RpcContext>) {
    for t in tool::methods() {
        m.register_async_method(t.name, move |p, _, _| async move {
            let v: Value = if p.as_str().is_none() {
                Value::Null
            } else {
                p.parse()?
            };
            (t.call)(v).await.map_err(|e| match e {
                ToolError::Params(_) => ErrorObjectOwned::owned(-32602, e.to_string(), None::<()>),
                ToolError::Device(d) => app_error(codes::DEVICE_FAILED, d),
            })
        })
        .expect("tool method names are unique");
    }
}
