//! `osgate rpc METHOD [JSON-PARAMS] [--url URL] [--key KEY]`: call a gateway's JSON-RPC API.
//!
//! Prints the result as pretty JSON on stdout. Exit codes: 0 result, 1 the call failed (JSON-RPC
//! error, HTTP 401, gateway unreachable), 2 usage (params are not a JSON object or array).

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

/// Arguments of `osgate rpc`.
#[derive(Debug, clap::Args)]
pub struct RpcCommand {
    /// Method, e.g. `gateway.status`, `device.disable`.
    pub method: String,
    /// Params as JSON: an object (`{"device":"d1"}`) or an array.
    pub params: Option<String>,
    /// The gateway's JSON-RPC URL.
    #[arg(long, default_value = "http://127.0.0.1:8580")]
    pub url: String,
    /// API key (default: the OSGATE_API_KEY environment variable).
    #[arg(long)]
    pub key: Option<String>,
    /// How long to wait for the answer.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Builds the request body; `Err` = the params are not usable (exit 2).
pub fn request_body(method: &str, params: Option<&str>) -> Result<Value, String> {
    let mut body = json!({"jsonrpc": "2.0", "id": 1, "method": method});
    if let Some(p) = params {
        let v: Value =
            serde_json::from_str(p).map_err(|e| format!("params are not valid JSON: {e}"))?;
        if !(v.is_object() || v.is_array()) {
            return Err(format!(
                "params must be a JSON object or array, got {v} (e.g. '{{\"device\":\"d1\"}}')"
            ));
        }
        body["params"] = v;
    }
    Ok(body)
}

/// Runs `osgate rpc`.
pub fn main(cmd: RpcCommand) -> ExitCode {
    let body = match request_body(&cmd.method, cmd.params.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match crate::runtime(false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let key = cmd
        .key
        .clone()
        .or_else(|| std::env::var("OSGATE_API_KEY").ok());
    match rt.block_on(call(&cmd.url, key.as_deref(), &body, cmd.timeout)) {
        Ok(result) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&result).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Sends one request; returns its `result`, or a message for an error of any kind.
pub async fn call(
    url: &str,
    key: Option<&str>,
    body: &Value,
    timeout: Duration,
) -> Result<Value, String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let mut req = client.post(url).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(format!(
            "{url}: HTTP 401 unauthorized: missing or wrong API key (--key or OSGATE_API_KEY)"
        ));
    }
    let text = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
    let v: Value = serde_json::from_str(&text).map_err(|_| {
        format!(
            "{url}: HTTP {status}, not a JSON-RPC answer: {}",
            text.chars().take(200).collect::<String>()
        )
    })?;
    if let Some(err) = v.get("error") {
        return Err(format!(
            "{} (code {})",
            err["message"].as_str().unwrap_or("error"),
            err["code"]
        ));
    }
    v.get("result")
        .cloned()
        .ok_or_else(|| format!("{url}: HTTP {status}, answer without result: {v}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_must_be_object_or_array() {
        let b = request_body("device.read", Some(r#"{"device":"d1"}"#)).unwrap();
        assert_eq!(b["params"]["device"], "d1");
        assert_eq!(b["method"], "device.read");
        assert!(request_body("x", None).unwrap().get("params").is_none());
        assert!(request_body("x", Some("[1]")).is_ok());
        assert!(request_body("x", Some("42")).is_err());
        assert!(request_body("x", Some("{oops"))
            .unwrap_err()
            .contains("not valid JSON"));
    }
}
