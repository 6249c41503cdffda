//! `modbus.read`: `osgate modbus read` as a management method. The params are the CLI's options
//! with underscores (`tcp`, `rtu`, `rtu_over_tcp`, `baud`, `parity`, `unit`, `table`,
//! `address`, `count`, `type`, `order`, `bit`, `length`, `scale`, `offset`, `timeout`), checked
//! and read by the same code ([`super::cli`]); the result is
//! `{"table", "unit", "values": [{"address", "value"}]}`.

use serde::Deserialize;
use serde_json::{json, Value};

use super::cli::{self, Target};
use crate::tool::{params, ToolError, ToolFuture, ToolMethod};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    #[serde(default)]
    tcp: Option<String>,
    #[serde(default)]
    rtu: Option<String>,
    #[serde(default)]
    rtu_over_tcp: Option<String>,
    #[serde(default = "baud")]
    baud: u32,
    #[serde(default = "parity")]
    parity: String,
    #[serde(default = "data_bits")]
    data_bits: u8,
    #[serde(default = "one_u8")]
    stop_bits: u8,
    #[serde(default = "one_u8")]
    unit: u8,
    #[serde(default = "holding")]
    table: String,
    address: u16,
    #[serde(default = "one_u16")]
    count: u16,
    #[serde(default, rename = "type")]
    data_type: Option<String>,
    #[serde(default = "order")]
    order: String,
    #[serde(default)]
    bit: Option<u8>,
    #[serde(default)]
    length: Option<u16>,
    #[serde(default)]
    scale: Option<f64>,
    #[serde(default)]
    offset: Option<f64>,
    #[serde(default = "timeout")]
    timeout: String,
}

// The CLI's defaults.
fn baud() -> u32 {
    9600
}
fn parity() -> String {
    "none".into()
}
fn data_bits() -> u8 {
    8
}
fn one_u8() -> u8 {
    1
}
fn one_u16() -> u16 {
    1
}
fn holding() -> String {
    "holding".into()
}
fn order() -> String {
    "ABCD".into()
}
fn timeout() -> String {
    "1s".into()
}

/// `--rtu-over-tcp: …` (the CLI's words) → `rtu_over_tcp: …` (the param's name).
fn param_name(msg: String) -> String {
    match msg.strip_prefix("--").and_then(|m| m.split_once(':')) {
        Some((flag, rest)) => format!("{}:{rest}", flag.replace('-', "_")),
        None => msg
            .replace("--", "")
            .replace("rtu-over-tcp", "rtu_over_tcp"),
    }
}

async fn read(v: Value) -> Result<Value, ToolError> {
    let p: ReadParams = params(v)?;
    let target = Target {
        tcp: p.tcp,
        rtu: p.rtu,
        rtu_over_tcp: p.rtu_over_tcp,
        baud: p.baud,
        parity: p.parity,
        data_bits: p.data_bits,
        stop_bits: p.stop_bits,
        unit: p.unit,
        table: p.table,
        address: p.address,
        data_type: p.data_type,
        order: p.order,
        bit: p.bit,
        length: p.length,
        scale: p.scale,
        offset: p.offset,
        timeout: p.timeout,
    };
    let r = cli::resolve(&target, p.count)
        .map_err(|e| ToolError::Params(e.into_iter().map(param_name).collect()))?;
    let values = cli::read(&r, p.count)
        .await
        .map_err(|e| ToolError::Device(e.to_string()))?;
    let values: Vec<Value> = values
        .into_iter()
        .map(|(a, v)| json!({"address": a, "value": v.to_json()}))
        .collect();
    Ok(json!({"table": r.table.as_str(), "unit": p.unit, "values": values}))
}

fn call(v: Value) -> ToolFuture {
    Box::pin(read(v))
}

/// `modbus.read`.
pub const METHODS: &[ToolMethod] = &[ToolMethod {
    name: "modbus.read",
    call,
}];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_words_become_param_names() {
        assert_eq!(
            param_name("--count: must be at least 1".into()),
            "count: must be at least 1"
        );
        assert_eq!(
            param_name("one of --tcp, --rtu or --rtu-over-tcp is required".into()),
            "one of tcp, rtu or rtu_over_tcp is required"
        );
    }

    #[tokio::test]
    async fn bad_params_name_the_param() {
        let e = read(json!({"tcp": "127.0.0.1:1", "address": 0, "count": 0, "table": "nope"}))
            .await
            .unwrap_err();
        let ToolError::Params(errs) = e else {
            panic!("{e:?}")
        };
        assert!(errs.iter().any(|e| e.starts_with("table:")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("count:")), "{errs:?}");
        let e = read(json!({"address": 0, "bogus": 1})).await.unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}
