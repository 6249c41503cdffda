//! JSON-RPC management, one file per method family: [`status`] (what the gateway shows),
//! [`devices`] (device read and write), [`enable`] (devices and connectors on and off),
//! [`reload`], [`auth`] (keys on HTTP and WebSocket), [`protocol`] (malformed calls, limits,
//! load), [`subscribe`] (live readings over WebSocket), [`mqtt`] (MQTT commands and RPC over
//! MQTT) and [`cli`] (the `osgate rpc` client). Each test runs a whole gateway in-process
//! ([`InProc`]) with its RPC server on port 0, against a real mosquitto; this file holds what
//! they share.

mod auth;
mod cli;
mod devices;
mod enable;
mod mqtt;
mod protocol;
mod reload;
mod status;
mod subscribe;

use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;

use crate::common::rpc::Rpc;
use crate::common::*;

const KEY: &str = "test-key-0123456789";

/// The WebSocket of a JSON-RPC client.
type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A gateway with a simulator (`d1`: `t` read-only sine, `sp` writable 0..100; `d2`: counter)
/// at `interval`, an MQTT sink, and the RPC server on a free port (port 0).
fn rpc_config(gw: &str, broker: &Mosquitto, interval: &str) -> Value {
    let mut cfg = sim_config(
        gw,
        &broker.url(),
        json!([
            {"name": "d1", "interval": interval, "channels": [
                {"name": "t", "signal": "sine", "min": 0, "max": 10, "period": "10s", "unit": "°C"},
                {"name": "sp", "signal": "sine", "min": 0, "max": 100, "period": "10s", "writable": true}]},
            {"name": "d2", "interval": interval, "channels": [{"name": "n", "signal": "counter"}]}
        ]),
        json!({}),
    );
    cfg["rpc"] = json!({"listen": "127.0.0.1:0", "api_keys": [KEY, "second-key-xyz"]});
    cfg
}

async fn device_status(rpc: &Rpc, device: &str) -> Value {
    rpc.result("device.status", json!({"device": device})).await
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + TEST_TIMEOUT;
    while !check().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// The keys never reach the log.
fn assert_no_keys_in(gw: &InProc) {
    let log = gw.log_text();
    assert!(!log.contains(KEY) && !log.contains("second-key-xyz"));
}

/// A WebSocket handshake to `port` with `headers`; the HTTP status of a refusal, or the socket.
async fn ws_connect(port: u16, headers: &[(&str, &str)]) -> Result<Ws, u16> {
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://127.0.0.1:{port}/")
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            tungstenite::http::HeaderValue::from_str(v).unwrap(),
        );
    }
    match tokio::time::timeout(TEST_TIMEOUT, tokio_tungstenite::connect_async(req))
        .await
        .expect("handshake in time")
    {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("WebSocket handshake failed: {e}"),
    }
}

/// Sends `req` on `ws` and returns the answer (the next message with an `id`).
async fn ws_call(ws: &mut Ws, req: Value) -> Value {
    ws.send(tungstenite::Message::text(req.to_string()))
        .await
        .unwrap();
    loop {
        let m = tokio::time::timeout(TEST_TIMEOUT, ws.next())
            .await
            .expect("answer in time")
            .expect("socket open")
            .expect("frame");
        if let tungstenite::Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v.get("id").is_some() {
                return v;
            }
        }
    }
}
