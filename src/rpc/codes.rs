//! osgate's application error codes: 1000–1999, outside the range JSON-RPC and jsonrpsee use
//! for themselves (-32768..-32000), so a code always says who answered. The table is in
//! `docs/security.md` ("Error codes"); the move from the -320xx numbers is in CHANGELOG.md.
//! The error objects the methods answer with are built here too, so a code and its cause stay
//! together.

use jsonrpsee::types::ErrorObjectOwned;

use crate::control::DeviceError;

/// No such device.
pub const UNKNOWN_DEVICE: i32 = 1001;
/// No such channel on the device.
pub const UNKNOWN_CHANNEL: i32 = 1002;
/// The channel is not writable.
pub const NOT_WRITABLE: i32 = 1003;
/// The value does not fit the channel's type or range.
pub const OUT_OF_RANGE: i32 = 1004;
/// The device is disabled.
pub const DISABLED: i32 = 1005;
/// The device does not answer (or its connector is stopped).
pub const OFFLINE: i32 = 1006;
/// The device answered with an error.
pub const DEVICE_FAILED: i32 = 1007;
/// No such connector.
pub const UNKNOWN_CONNECTOR: i32 = 1010;
/// The connector could not be changed.
pub const CONNECTOR_FAILED: i32 = 1011;
/// The reload was rejected; the running configuration stays.
pub const RELOAD_FAILED: i32 = 1020;
/// `config.apply`/`config.rollback`: the configuration is invalid (`data.errors`).
pub const CONFIG_INVALID: i32 = 1021;
/// `config.apply`/`config.rollback`: a fleet server owns the configuration.
pub const CONFIG_REMOTE: i32 = 1022;
/// `config.apply`/`config.rollback`: the configuration file cannot be written.
pub const CONFIG_NOT_SAVED: i32 = 1023;
/// `config.rollback`: there is no previous configuration.
pub const NO_PREVIOUS: i32 = 1024;
/// A batch request holds more than [`MAX_BATCH`](super::MAX_BATCH) calls.
pub const BATCH_TOO_LARGE: i32 = 1030;
/// The method streams notifications and needs a WebSocket (called over HTTP or MQTT).
pub const WEBSOCKET_REQUIRED: i32 = 1031;
/// The key's role does not allow the method (`rpc::roles`); nothing ran.
pub const FORBIDDEN: i32 = 1040;
/// `rpc.max_subscribers` live-reading subscriptions are open already.
pub const TOO_MANY_SUBSCRIBERS: i32 = 1041;

/// An application error: `code` (one of the above) and its message.
pub(super) fn app_error(code: i32, message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(code, message.into(), None::<()>)
}

/// The answer to a refused device request: its code, and the error as its message.
pub(super) fn device_error(e: DeviceError) -> ErrorObjectOwned {
    let code = match &e {
        DeviceError::UnknownDevice(_) => UNKNOWN_DEVICE,
        DeviceError::UnknownChannel { .. } => UNKNOWN_CHANNEL,
        DeviceError::NotWritable(_) => NOT_WRITABLE,
        DeviceError::OutOfRange { .. } => OUT_OF_RANGE,
        DeviceError::Disabled(_) => DISABLED,
        DeviceError::Offline(..) => OFFLINE,
        DeviceError::Failed(_) => DEVICE_FAILED,
    };
    app_error(code, e.to_string())
}
