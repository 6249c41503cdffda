//! The params of the built-in methods, each `deny_unknown_fields` so that a misspelt key is an
//! error (-32602) rather than ignored, and `parse_all_params` for the request-parsing
//! property test of `guard`.

use jsonrpsee::types::{ErrorObjectOwned, Params};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnectorParams {
    pub(super) connector: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DevicesParams {
    #[serde(default)]
    pub(super) connector: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeviceParams {
    pub(super) device: String,
    #[serde(default)]
    pub(super) connector: Option<String>,
    /// `device.status` adds the configured channels ([`channels`](super::channels)).
    #[serde(default)]
    pub(super) channels: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WriteParams {
    pub(super) device: String,
    pub(super) channel: String,
    pub(super) value: Value,
    #[serde(default)]
    pub(super) connector: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SubscribeParams {
    #[serde(default)]
    pub(super) device: Option<String>,
    #[serde(default)]
    pub(super) channel: Option<String>,
}

/// Parses `params` as every method would (the request-parsing property test).
#[cfg(test)]
pub(crate) fn parse_all_params(params: Option<&str>) {
    let p = Params::new(params);
    let _ = p.parse::<ConnectorParams>();
    let _ = p.parse::<DeviceParams>();
    let _ = p.parse::<WriteParams>();
    let _ = parse_optional::<DevicesParams>(&p);
    let _ = parse_optional::<SubscribeParams>(&p);
}

/// Cases per property test of request parsers (`OSGATE_FUZZ_CASES`, default 256).
#[cfg(test)]
pub(crate) fn fuzz_cases() -> u32 {
    crate::config::fuzz_cases()
}

/// Params that may be left out entirely (`null`, absent, `[]`, `{}`).
pub(super) fn parse_optional<T: Default + serde::de::DeserializeOwned>(
    params: &Params<'_>,
) -> Result<T, ErrorObjectOwned> {
    if params.as_str().is_none() {
        return Ok(T::default());
    }
    params.parse()
}
