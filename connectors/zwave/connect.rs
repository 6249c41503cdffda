//! The connection to Z-Wave JS Server: where it is ([`Target`]), the WebSocket connect with
//! TLS, the handshake (the server's `version`, `set_api_schema` to the newest schema both sides
//! speak, `start_listening` whose answer is every node's state), and the errors of the socket
//! as [`Fault`]s, and the open [`Session`]: its frames, and pings when the server is quiet (the
//! kit's [`Watchdog`]). The
//! kit's [`Link`](super::super::device::link::Link) keeps a connect going across cancelled
//! `next()` calls and hands the session to the listener ([`super::listener`]).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::either::Either;

use super::super::device::watchdog::{Alarm, Watchdog};
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

/// What a connect needs.
pub(super) struct Connect {
    pub(super) target: Target,
    pub(super) tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    pub(super) timeout: Duration,
    pub(super) ping_interval: Duration,
}

/// What the handshake told.
pub(super) struct Hello {
    pub(super) version: Version,
    pub(super) schema: u32,
    /// Every node's state.
    pub(super) nodes: Vec<NodeState>,
}

/// An open connection to the server.
pub(super) struct Session {
    ws: Box<Ws>,
    url: Arc<str>,
    /// What the handshake told, until the listener takes it.
    pub(super) hello: Option<Hello>,
    /// Pings after `ping_interval` of silence, gives up `timeout` after the ping.
    watchdog: Watchdog,
    timeout: Duration,
}

impl Connect {
    /// Connects, negotiates the schema and starts listening.
    pub(super) async fn open(self: Arc<Self>) -> Result<Session, Fault> {
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
            Ok(Session {
                ws: Box::new(ws),
                url: t.url.as_str().into(),
                hello: Some(Hello {
                    version,
                    schema,
                    nodes: state.result.state.nodes,
                }),
                watchdog: Watchdog::probing(self.ping_interval, limit),
                timeout: limit,
            })
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

impl Session {
    /// Sends a text frame.
    pub(super) async fn send(&mut self, text: String) -> Result<(), Fault> {
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| ws_fault(&self.url, &e))
    }

    /// The next text frame, pinging the server when it has been quiet; cancel-safe (the
    /// watchdog changes only when it fires).
    pub(super) async fn recv(&mut self) -> Result<tungstenite::Utf8Bytes, Fault> {
        loop {
            let frame = tokio::select! {
                f = self.ws.next() => f,
                alarm = self.watchdog.expired() => match alarm {
                    Alarm::Probe => {
                        self.ws
                            .send(Message::Ping(Default::default()))
                            .await
                            .map_err(|e| ws_fault(&self.url, &e))?;
                        continue;
                    }
                    Alarm::Dead => {
                        return Err(Fault::new(
                            "timeout",
                            format!(
                                "{}: no answer to a ping within {} (the server is gone)",
                                self.url,
                                humantime::format_duration(self.timeout)
                            ),
                        ))
                    }
                },
            };
            let frame = match frame {
                None => {
                    return Err(Fault::new(
                        "closed",
                        format!("{}: the server closed the connection", self.url),
                    ))
                }
                Some(Err(e)) => return Err(ws_fault(&self.url, &e)),
                Some(Ok(m)) => m,
            };
            self.watchdog.alive();
            match frame {
                Message::Text(t) => return Ok(t),
                Message::Close(c) => {
                    let why = c.map(|c| c.reason.to_string()).unwrap_or_default();
                    return Err(Fault::new(
                        "closed",
                        format!("{}: the server closed the connection {why}", self.url),
                    ));
                }
                _ => continue,
            }
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
