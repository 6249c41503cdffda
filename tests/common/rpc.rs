//! A JSON-RPC client for tests: HTTP POSTs to a gateway's management API with an API key.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{GatewayLog, TEST_TIMEOUT};

/// A JSON-RPC client over HTTP (reqwest).
pub struct Rpc {
    /// `http://127.0.0.1:PORT/`.
    pub url: String,
    /// The HTTP client (for requests the helpers below do not make).
    pub http: reqwest::Client,
    key: String,
}

impl Rpc {
    /// Waits until the gateway `gw` (the binary or in-process) listens on `port`; calls go
    /// with API key `key`.
    pub async fn connect(key: &str, port: u16, gw: &(impl GatewayLog + ?Sized)) -> Rpc {
        osgate::install_crypto_provider();
        let until = Instant::now() + TEST_TIMEOUT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < until,
                "RPC port {port} not listening; log:\n{}",
                gw.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Rpc {
            key: key.to_string(),
            url: format!("http://127.0.0.1:{port}/"),
            http: reqwest::Client::builder()
                .timeout(TEST_TIMEOUT)
                .build()
                .unwrap(),
        }
    }

    /// Posts `body` with `key` (as Bearer); returns the status and the body as JSON.
    pub async fn post(&self, key: Option<&str>, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.expect("HTTP request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Calls `method` with the right key; returns the whole answer object.
    pub async fn call(&self, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
        let (status, v) = self.post(Some(&self.key), body.to_string()).await;
        assert_eq!(status, 200, "{method}: {v}");
        assert_eq!(v["id"], 7, "{method}: {v}");
        v
    }

    /// Calls `method`, expects success; returns the result.
    pub async fn result(&self, method: &str, params: Value) -> Value {
        let v = self.call(method, params).await;
        assert!(v.get("error").is_none(), "{method} failed: {v}");
        v["result"].clone()
    }

    /// Calls `method`, expects an error; returns (code, message).
    pub async fn error(&self, method: &str, params: Value) -> (i64, String) {
        let v = self.call(method, params).await;
        let e = v
            .get("error")
            .unwrap_or_else(|| panic!("{method}: no error in {v}"));
        (
            e["code"].as_i64().unwrap(),
            e["message"].as_str().unwrap().to_string(),
        )
    }
}
