//! Field tools as management methods: a protocol contributes the commissioning tools of its CLI
//! (`osgate modbus read`, `osgate opcua browse`) as [`ToolMethod`]s, plain functions from JSON
//! params to a JSON result that share the CLI's code, listed in its [`crate::Tool`]'s
//! `methods`. The RPC server registers every method of [`methods`] without knowing the
//! protocols.
//!
//! Tools talk to a device directly, beside the connectors (like the CLI): they need no running
//! connector and change nothing in the gateway.

use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

/// What a tool method returns.
pub type ToolFuture = Pin<Box<dyn Future<Output = Result<Value, ToolError>> + Send>>;

/// One management method of a protocol's field tool.
#[derive(Debug, Clone, Copy)]
pub struct ToolMethod {
    /// The method name (`modbus.read`).
    pub name: &'static str,
    /// Runs it with the request's params.
    pub call: fn(Value) -> ToolFuture,
}

/// Why a tool call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// The params are not usable; every problem, named by its param.
    #[error("{}", .0.join("; "))]
    Params(Vec<String>),
    /// The device or server failed, refused or did not answer.
    #[error("{0}")]
    Device(String),
}

/// Parses a tool's params (`null` or absent = `{}`), naming the offending field.
pub fn params<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ToolError> {
    let v = if v.is_null() {
        Value::Object(Default::default())
    } else {
        v
    };
    serde_json::from_value(v).map_err(|e| ToolError::Params(vec![e.to_string()]))
}

/// The field tools of every protocol built in.
pub fn methods() -> impl Iterator<Item = ToolMethod> {
    crate::PROTOCOLS
        .iter()
        .filter_map(|p| p.tool.as_ref())
        .flat_map(|t| t.methods.iter().copied())
}
