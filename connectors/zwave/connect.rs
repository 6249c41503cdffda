//! The connection to Z-Wave JS Server: where it is ([`Target`]), the WebSocket connect with
//! TLS, the handshake (the server's `version`, `set_api_schema` to the newest schema both sides
//! speak, `start_listening` whose answer is every node's state), and the errors of the socket
//! as [`Fault`]s. The listener ([`super::listener`]) owns the open connection afterwards.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::either::Either;

use super::super::device::Fault;
use super::wire::{CommandResult, Head, Listening, NodeState, Version};
use super::SCHEMA;

/// Where the server is: host, port, TLS or not, and the URL for the WebSocket request.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub(super) url: String,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) tls: bool,
}

impl Target {
    pub(super) fn parse(url: &str) -> Result<Target, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("\"{url}\" is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            other => {
                return Err(format!(
                    "\"{url}\": expected ws:// or wss://, got {}",
                    other.map_or("no scheme".into(), |s| format!("{s}://"))
                ))
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("\"{url}\" has no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target {
            url: url.to_string(),
            host,
            port,
            tls,
        })
    }
}

pub(super) type Stream = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;
pub(super) type Ws = WebSocketStream<Stream>;
pub(super) type Connecting =
    Pin<Box<dyn Future<Output = Result<(Ws, Version, u32, Vec<NodeState>), Fault>> + Send>>;

pub(super) enum Conn {
    Idle,
    /// The connect and handshake in progress, kept across cancelled `next()` calls.
    Connecting(Connecting),
    Open(Box<Ws>),
}

/// What a connect needs.
pub(super) struct Connect {
    pub(super) target: Target,
    pub(super) tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    pub(super) timeout: Duration,
}

impl Connect {
    /// Connects, negotiates the schema and starts listening; returns the connection, the
    /// server's version, the schema and every node's state.
    pub(super) async fn open(self: Arc<Self>) -> Result<(Ws, Version, u32, Vec<NodeState>), Fault> {
        let t = &self.target;
        let limit = self.timeout;
        let run = async {
            let tcp = TcpStream::connect((t.host.as_str(), t.port))
                .await
                .map_err(|e| Fault::new("connect", format!("{}: {e}", t.url)))?;
            let _ = tcp.set_nodelay(true);
            let stream = match &self.tls {
                None => Either::Left(tcp),
                Some((connector, name)) => {
                    Either::Right(connector.connect(name.clone(), tcp).await.map_err(|e| {
                        Fault::new(
                            "tls",
                            format!("{}: {}", t.url, osgate_core::net::describe_error(&e)),
                        )
                    })?)
                }
            };
            let (mut ws, _) = tokio_tungstenite::client_async(t.url.as_str(), stream)
                .await
                .map_err(|e| Fault::new("websocket", format!("{}: {e}", t.url)))?;
            let version: Version = serde_json::from_str(
                &handshake_frame(&mut ws, "version", None).await?,
            )
            .map_err(|e| Fault::new("protocol", format!("{}: bad version frame: {e}", t.url)))?;
            let schema = SCHEMA.min(version.max_schema_version);
            if schema < version.min_schema_version {
                return Err(Fault::new(
                    "schema",
                    format!(
                        "{}: the server needs API schema {} or newer; osgate speaks up to {SCHEMA}",
                        t.url, version.min_schema_version
                    ),
                ));
            }
            let cmd = format!(
                r#"{{"messageId":"schema","command":"set_api_schema","schemaVersion":{schema}}}"#
            );
            request(&mut ws, cmd, "schema", &t.url).await?;
            let cmd = r#"{"messageId":"listen","command":"start_listening"}"#.to_string();
            let text = request(&mut ws, cmd, "listen", &t.url).await?;
            let state: Listening = serde_json::from_str(&text).map_err(|e| {
                Fault::new(
                    "protocol",
                    format!("{}: bad start_listening answer: {e}", t.url),
                )
            })?;
            Ok((ws, version, schema, state.result.state.nodes))
        };
        match tokio::time::timeout(limit, run).await {
            Ok(r) => r,
            Err(_) => Err(Fault::new(
                "timeout",
                format!(
                    "{}: no answer to the handshake within {}",
                    t.url,
                    humantime::format_duration(limit)
                ),
            )),
        }
    }
}

/// Sends `cmd` and waits for its successful result (by `id`); returns the result's text.
pub(super) async fn request(
    ws: &mut Ws,
    cmd: String,
    id: &str,
    url: &str,
) -> Result<String, Fault> {
    ws.send(Message::text(cmd))
        .await
        .map_err(|e| ws_fault(url, &e))?;
    let text = handshake_frame(ws, "result", Some(id)).await?;
    let r: CommandResult = serde_json::from_str(&text)
        .map_err(|e| Fault::new("protocol", format!("{url}: bad result frame: {e}")))?;
    if !r.success {
        let code = r.error_code.as_deref().unwrap_or("error");
        let what = if id == "schema" {
            "set_api_schema"
        } else {
            "start_listening"
        };
        return Err(Fault::new(
            "protocol",
            format!("{url}: {what} failed: {code}"),
        ));
    }
    Ok(text)
}

/// The next frame of `kind` (and `id`) during the handshake; others are skipped.
pub(super) async fn handshake_frame(
    ws: &mut Ws,
    kind: &str,
    id: Option<&str>,
) -> Result<String, Fault> {
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None => {
                return Err(Fault::new(
                    "closed",
                    "the server closed the connection during the handshake",
                ))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ws_fault("server", &e)),
        };
        let Ok(h) = serde_json::from_str::<Head>(&text) else {
            continue;
        };
        if h.kind == kind && (id.is_none() || h.message_id.as_deref() == id) {
            return Ok(text.as_str().to_string());
        }
    }
}

pub(super) fn ws_fault(url: &str, e: &tungstenite::Error) -> Fault {
    let kind = match e {
        tungstenite::Error::Io(_) => "io",
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => "closed",
        _ => "websocket",
    };
    Fault::new(kind, format!("{url}: {e}"))
}
