//! The HTTP guard in front of the JSON-RPC server (after the API-key check): it answers what
//! jsonrpsee would answer unhelpfully or not at all.
//!
//! - A body over [`MAX_REQUEST_BODY`] gets HTTP 413 after the body was read and discarded (up to
//!   [`DRAIN_LIMIT`]): answering while the client is still sending made the kernel reset the
//!   connection, so the client saw a broken send instead of the 413.
//! - A WebSocket upgrade without `Sec-WebSocket-Key` or `Sec-WebSocket-Version` gets HTTP 400.
//! - [`check_request`], on every body: an `id` that is an object, an array or a boolean is an
//!   invalid request (jsonrpsee took such a call for a notification and answered `null`); a
//!   batch over [`MAX_BATCH`] gets [`codes::BATCH_TOO_LARGE`]; `readings.subscribe` over plain
//!   HTTP gets [`codes::WEBSOCKET_REQUIRED`] instead of an internal error. The MQTT request
//!   path ([`super::mqtt`]) runs the same check.
//!
//! Everything else goes to jsonrpsee unchanged.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{header, Method, Request, Response, StatusCode};
use jsonrpsee::server::HttpBody;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::{codes, MAX_BATCH, MAX_REQUEST_BODY};
use crate::net::listen::{drain, read_body, BodyError, BodyMeter};

/// How much of an oversized body is read (and discarded) before the 413 is sent; past this
/// the connection is closed without reading on.
pub const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// Methods that only work on a connection that stays open.
const STREAMING: &[&str] = &["readings.subscribe", "readings.unsubscribe"];

/// A JSON-RPC answer given in place of the server's.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection(pub Value);

fn rejection(id: Value, code: i32, message: &str, data: String) -> Rejection {
    Rejection(json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message, "data": data},
    }))
}

#[derive(Deserialize)]
struct CallHead<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
}

/// What is wrong with one call of a request, if anything jsonrpsee would get wrong.
fn check_call(raw: &RawValue, streaming_ok: bool) -> Option<(Value, i32, &'static str, String)> {
    let head: CallHead<'_> = serde_json::from_str(raw.get()).ok()?;
    let id = match head
        .id
        .map(|r| r.get().trim_start().as_bytes().first().copied())
    {
        None | Some(Some(b'"' | b'n' | b'-' | b'0'..=b'9')) => head
            .id
            .and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or(Value::Null),
        Some(_) => {
            return Some((
                Value::Null,
                jsonrpsee::types::error::INVALID_REQUEST_CODE,
                jsonrpsee::types::error::INVALID_REQUEST_MSG,
                "\"id\" must be a string, a number or null".into(),
            ))
        }
    };
    let method = head.method?;
    if !streaming_ok && STREAMING.contains(&method.as_ref()) {
        return Some((
            id,
            codes::WEBSOCKET_REQUIRED,
            "WebSocket required",
            format!("{method} streams notifications and needs a WebSocket connection (ws:// or wss:// on the same port, same API key); plain HTTP and MQTT cannot carry them"),
        ));
    }
    None
}

/// Checks a JSON-RPC request body before jsonrpsee parses it. `streaming_ok`: the transport
/// can carry subscriptions (never true for HTTP POST or MQTT). `Err` is the answer to send
/// instead; anything it does not recognise (not JSON, say) passes, for jsonrpsee to answer.
pub fn check_request(body: &[u8], streaming_ok: bool) -> Result<(), Rejection> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'{') => {
            let Ok(raw) = serde_json::from_slice::<&RawValue>(body) else {
                return Ok(());
            };
            match check_call(raw, streaming_ok) {
                Some((id, code, msg, data)) => Err(rejection(id, code, msg, data)),
                None => Ok(()),
            }
        }
        Some(b'[') => {
            let Ok(calls) = serde_json::from_slice::<Vec<&RawValue>>(body) else {
                return Ok(());
            };
            if calls.len() > MAX_BATCH as usize {
                return Err(rejection(
                    Value::Null,
                    codes::BATCH_TOO_LARGE,
                    "Batch too large",
                    format!(
                        "a batch may hold at most {MAX_BATCH} calls, this one has {}",
                        calls.len()
                    ),
                ));
            }
            for (i, c) in calls.iter().enumerate() {
                if let Some((_, code, msg, data)) = check_call(c, streaming_ok) {
                    return Err(rejection(
                        Value::Null,
                        code,
                        msg,
                        format!("batch element {i}: {data}"),
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<HttpBody> {
    let mut r = Response::new(HttpBody::from(body));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn too_big() -> Response<HttpBody> {
    let body = json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {
            "code": jsonrpsee::types::error::OVERSIZED_REQUEST_CODE,
            "message": jsonrpsee::types::error::OVERSIZED_REQUEST_MSG,
            "data": format!("Exceeded max limit of {MAX_REQUEST_BODY}"),
        },
    });
    respond(
        StatusCode::PAYLOAD_TOO_LARGE,
        "application/json; charset=utf-8",
        body.to_string(),
    )
}

fn is_upgrade<B>(req: &Request<B>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::UPGRADE, "websocket") || has(header::CONNECTION, "upgrade")
}

/// The tower layer of [`Guard`].
#[derive(Clone, Copy, Debug, Default)]
pub struct GuardLayer;

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Guard<S> {
        Guard { inner }
    }
}

/// The guard service (see the module docs).
#[derive(Clone, Debug)]
pub struct Guard<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for Guard<S>
where
    S: tower::Service<Request<HttpBody>, Response = Response<HttpBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<HttpBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The ready service is the one to call; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            if is_upgrade(&req) {
                let h = req.headers();
                if !h.contains_key(header::SEC_WEBSOCKET_KEY)
                    || !h.contains_key(header::SEC_WEBSOCKET_VERSION)
                {
                    return Ok(respond(
                        StatusCode::BAD_REQUEST,
                        "text/plain; charset=utf-8",
                        "a WebSocket upgrade needs the Sec-WebSocket-Key and Sec-WebSocket-Version headers\n".into(),
                    ));
                }
                return inner.call(req.map(HttpBody::new)).await;
            }
            if req.method() != Method::POST {
                return inner.call(req.map(HttpBody::new)).await;
            }
            let (parts, body) = req.into_parts();
            let body = HttpBody::new(body);
            let declared = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            // Progress of the body counts towards its deadline (crate::net::listen).
            let meter = parts.extensions.get::<BodyMeter>().cloned();
            if declared.is_some_and(|n| n > u64::from(MAX_REQUEST_BODY)) {
                drain(body, DRAIN_LIMIT, meter.as_ref()).await;
                return Ok(too_big());
            }
            let bytes = match read_body(body, MAX_REQUEST_BODY as usize, meter.as_ref()).await {
                Ok(b) => b,
                Err(BodyError::TooLarge(_)) => return Ok(too_big()),
                // The client went away or sent a broken body: let jsonrpsee answer an empty one.
                Err(BodyError::Broken(_)) => bytes::Bytes::new(),
            };
            if let Err(Rejection(answer)) = check_request(&bytes, false) {
                return Ok(respond(
                    StatusCode::OK,
                    "application/json; charset=utf-8",
                    answer.to_string(),
                ));
            }
            inner
                .call(Request::from_parts(
                    parts,
                    HttpBody::new(http_body_util::Full::new(bytes)),
                ))
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn code(r: Result<(), Rejection>) -> Option<i64> {
        r.err()
            .map(|Rejection(v)| v["error"]["code"].as_i64().unwrap())
    }

    #[test]
    fn ids_must_be_strings_numbers_or_null() {
        for id in [r#"{}"#, "[1]", "true"] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"gateway.status"}}"#);
            assert_eq!(
                code(check_request(body.as_bytes(), false)),
                Some(-32600),
                "{id}"
            );
            let batch = format!("[{body}]");
            assert_eq!(
                code(check_request(batch.as_bytes(), false)),
                Some(-32600),
                "{id}"
            );
        }
        for id in [r#""a""#, "7", "-1.5", "null"] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"gateway.status"}}"#);
            assert_eq!(check_request(body.as_bytes(), false), Ok(()), "{id}");
        }
        let notification = br#"{"jsonrpc":"2.0","method":"gateway.status"}"#;
        assert_eq!(check_request(notification, false), Ok(()));
    }

    #[test]
    fn batches_over_the_limit_have_their_own_code() {
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"gateway.status"}"#;
        let batch = |n: usize| format!("[{}]", vec![call; n].join(","));
        assert_eq!(check_request(batch(32).as_bytes(), false), Ok(()));
        let r = check_request(batch(33).as_bytes(), false).unwrap_err().0;
        assert_eq!(r["error"]["code"], codes::BATCH_TOO_LARGE);
        assert_ne!(codes::BATCH_TOO_LARGE, codes::UNKNOWN_CONNECTOR);
        assert!(r["error"]["data"].as_str().unwrap().contains("at most 32"));
    }

    #[test]
    fn subscriptions_need_a_websocket() {
        let body = br#"{"jsonrpc":"2.0","id":3,"method":"readings.subscribe"}"#;
        let r = check_request(body, false).unwrap_err().0;
        assert_eq!(r["error"]["code"], codes::WEBSOCKET_REQUIRED);
        assert_eq!(r["id"], 3);
        assert!(r["error"]["data"].as_str().unwrap().contains("WebSocket"));
        assert_eq!(check_request(body, true), Ok(()));
    }

    fn request() -> impl Strategy<Value = Vec<u8>> {
        let id = prop_oneof![
            Just("1".to_string()),
            Just("null".to_string()),
            Just("{}".to_string()),
            Just("[[[]]]".to_string()),
            Just("true".to_string()),
            Just("1e999".to_string()),
            Just("18446744073709551616".to_string()),
            "\"[^\"\\\\]{0,8}\"",
            (1usize..200_000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        ];
        let method = prop_oneof![
            Just("\"gateway.status\"".to_string()),
            Just("\"readings.subscribe\"".to_string()),
            Just("\"readings.\\u0073ubscribe\"".to_string()),
            Just("7".to_string()),
            "\"[^\"\\\\]{0,12}\"",
        ];
        let params = prop_oneof![
            Just("{}".to_string()),
            Just(r#"{"device":"d","value":1e308}"#.to_string()),
            Just(r#"{"device":{"a":[1,2]}}"#.to_string()),
            (1usize..200_000).prop_map(|n| format!("{}{}", "{\"a\":".repeat(n), "}".repeat(n))),
            Just("[\"d\",\"c\",\"🦀\"]".to_string()),
        ];
        let call = (id, method, params).prop_map(|(i, m, p)| {
            format!(r#"{{"jsonrpc":"2.0","id":{i},"method":{m},"params":{p}}}"#)
        });
        prop_oneof![
            call.clone(),
            prop::collection::vec(call, 0..40).prop_map(|c| format!("[{}]", c.join(","))),
            ".{0,64}",
        ]
        .prop_flat_map(|text| {
            let len = text.len();
            (Just(text), 0..=len)
        })
        .prop_map(|(text, cut)| {
            let mut b = text.into_bytes();
            if cut % 5 == 0 {
                b.truncate(cut);
            }
            b
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: crate::rpc::fuzz_cases(),
            ..ProptestConfig::default()
        })]

        /// The RPC request path never panics: the guard, jsonrpsee's request parsing, and
        /// the params of every method.
        #[test]
        fn request_parsing_never_panics(body in request(), streaming in any::<bool>()) {
            let _ = check_request(&body, streaming);
            if let Ok(req) = serde_json::from_slice::<jsonrpsee::types::Request<'_>>(&body) {
                crate::rpc::parse_all_params(req.params.as_deref().map(|p| p.get()));
            }
        }
    }
}
