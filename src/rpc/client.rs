//! `osgate rpc METHOD [JSON-PARAMS] [--url URL] [--key KEY]`: call a gateway's JSON-RPC API.
//!
//! For a gateway with `rpc.tls`, use an `https://` URL; `--ca-file` names the CA that signed the
//! gateway's certificate (else the built-in roots), `--cert-file`/`--key-file` give a client
//! certificate when the gateway requires one, `--insecure` skips verification (lab only). The
//! HTTP client comes from [`crate::net::http`], like every other one.
//!
//! Prints the result as pretty JSON on stdout. Exit codes: 0 result, 1 the call failed (JSON-RPC
//! error, HTTP 401, gateway unreachable), 2 usage (params are not a JSON object or array).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use crate::net::http::HttpClientSettings;
use crate::net::TlsConfig;

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
    /// TLS of an `https://` URL.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// How `osgate rpc` and `osgate health` trust an `https://` gateway.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// PEM file with the CA that signed the gateway's certificate (https://); default: the
    /// built-in roots.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// PEM file with a client certificate, for a gateway that requires one (with --key-file).
    #[arg(long, value_name = "PEM", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// PEM file with the private key of --cert-file.
    #[arg(long, value_name = "PEM", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// Do not verify the gateway's certificate (lab only: anyone on the path can read the key).
    #[arg(long)]
    pub insecure: bool,
}

impl ClientTlsArgs {
    /// The TLS settings given by the flags.
    pub fn tls(&self) -> TlsConfig {
        TlsConfig {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            server_name: None,
            insecure_skip_verify: self.insecure,
        }
    }
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
    let mut settings = HttpClientSettings::new(cmd.timeout);
    settings.tls = Some(cmd.tls.tls());
    match rt.block_on(call(&settings, &cmd.url, key.as_deref(), &body)) {
        Ok(result) => {
            crate::outln!(
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

/// Sends one request with a client built from `settings`; returns its `result`, or a message
/// for an error of any kind (a TLS failure names its cause).
pub async fn call(
    settings: &HttpClientSettings,
    url: &str,
    key: Option<&str>,
    body: &Value,
) -> Result<Value, String> {
    let client = settings.build()?;
    let mut req = client.post(url).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("{url}: {}", crate::net::describe_error(&e)))?;
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
        return Err(describe_error(err));
    }
    v.get("result")
        .cloned()
        .ok_or_else(|| format!("{url}: HTTP {status}, answer without result: {v}"))
}

/// A JSON-RPC error object as one line: message, code and the server's detail (`data`),
/// which often says what to change (`unknown field `dev`, expected `device``).
pub fn describe_error(err: &Value) -> String {
    let mut s = format!(
        "{} (code {})",
        err["message"].as_str().unwrap_or("error"),
        err["code"]
    );
    match err.get("data") {
        None | Some(Value::Null) => {}
        Some(Value::String(d)) => {
            s.push_str(": ");
            s.push_str(d);
        }
        Some(d) => {
            s.push_str(": ");
            s.push_str(&d.to_string());
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_show_the_server_detail() {
        let e = json!({"code": -32602, "message": "Invalid params",
            "data": "unknown field `dev`, expected `device` or `connector`"});
        assert_eq!(
            describe_error(&e),
            "Invalid params (code -32602): unknown field `dev`, expected `device` or `connector`"
        );
        assert_eq!(
            describe_error(&json!({"code": 1001, "message": "unknown device \"x\""})),
            "unknown device \"x\" (code 1001)"
        );
        assert_eq!(
            describe_error(&json!({"code": 1, "message": "m", "data": {"a": 1}})),
            "m (code 1): {\"a\":1}"
        );
    }

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
