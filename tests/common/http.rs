//! A small HTTP/1.1 server on a free loopback port for the remote-configuration tests.
//!
//! It answers every GET with the current [`Reply`] (changeable while running), honours
//! `If-None-Match` for [`Reply::Json`] with an ETag (304), can misbehave on purpose (status codes,
//! a body larger than any limit, a redirect loop, a body that is not JSON, a hang), and records
//! each request (method, path, headers, body) so tests can await and inspect them; it can also
//! answer late ([`Reply::Slow`]) or with a status and a body ([`Reply::StatusBody`]), for the
//! HTTP connector's tests. One response per connection
//! (`Connection: close`), which is all a configuration fetch needs. [`HttpServer::start_tls`]
//! serves the same over HTTPS (tokio-rustls) with a given certificate.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the server answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this body and an ETag derived from it (304 when `If-None-Match` matches).
    Json(Vec<u8>),
    /// 200 with this body and no ETag.
    JsonNoEtag(Vec<u8>),
    /// This status with an empty body.
    Status(u16),
    /// 200 streaming this many bytes without a Content-Length (only the limit can stop it).
    Huge(usize),
    /// 302 to itself, forever.
    RedirectLoop,
    /// 200 with an HTML page.
    NotJson,
    /// Reads the request and never answers.
    Hang,
    /// 200 with this body (no ETag), after this delay.
    Slow(Duration, Vec<u8>),
    /// This status with this body.
    StatusBody(u16, Vec<u8>),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Request method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Request body.
    pub body: Vec<u8>,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The status answered.
    pub status: u16,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Request {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Shared {
    reply: Mutex<Reply>,
    log: Mutex<Vec<Request>>,
    count: watch::Sender<usize>,
}

/// The running server; stops (port closed) on drop.
pub struct HttpServer {
    /// Its port.
    pub port: u16,
    /// Serving HTTPS.
    tls: bool,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// The ETag the server gives a body.
pub fn etag_of(body: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{:x}\"", h.finish())
}

impl HttpServer {
    /// Starts on a free port.
    pub async fn start(reply: Reply) -> HttpServer {
        Self::start_on(0, reply).await
    }

    /// Starts on `port` (0 = any free one); retries a moment if the port is still held.
    pub async fn start_on(port: u16, reply: Reply) -> HttpServer {
        Self::start_inner(port, reply, None).await
    }

    /// Starts an HTTPS server on a free port with the certificate `server` (TLS handshakes
    /// that fail are not requests: they are not counted).
    pub async fn start_tls(reply: Reply, server: &super::certs::Pair) -> HttpServer {
        let cfg = osgate::net::ServerTlsConfig {
            cert_file: server.cert.clone(),
            key_file: server.key.clone(),
            client_ca_file: None,
        }
        .server_config()
        .expect("test server TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        Self::start_inner(0, reply, Some(acceptor)).await
    }

    async fn start_inner(
        port: u16,
        reply: Reply,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> HttpServer {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot bind 127.0.0.1:{port}: {e}"),
            }
        };
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            reply: Mutex::new(reply),
            log: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
        });
        let s = shared.clone();
        let is_tls = tls.is_some();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                match tls.clone() {
                    None => {
                        conns.spawn(serve(stream, s));
                    }
                    Some(acceptor) => {
                        conns.spawn(async move {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve(stream, s).await;
                            }
                        });
                    }
                }
                while conns.try_join_next().is_some() {}
            }
        });
        HttpServer {
            port,
            tls: is_tls,
            shared,
            task,
        }
    }

    /// `http://127.0.0.1:PORT/config.json` (`https://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/config.json", self.port)
    }

    /// `http://127.0.0.1:PORT` (`https://` for a TLS server), for paths of one's own.
    pub fn base(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Changes the answer.
    pub fn set(&self, reply: Reply) {
        *self.shared.reply.lock().unwrap() = reply;
    }

    /// Requests so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests were answered; panics after `within`.
    pub async fn wait_requests(&self, n: usize, within: Duration) -> Vec<Request> {
        let mut rx = self.shared.count.subscribe();
        tokio::time::timeout(within, rx.wait_for(|c| *c >= n))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "fewer than {n} requests within {within:?}: {:?}",
                    self.requests()
                )
            })
            .expect("server alive");
        self.requests()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or_default().to_string();
    let mut words = first.split(' ');
    let method = words.next().unwrap_or_default().to_string();
    let path = words.next().unwrap_or("/").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut req_body = buf[head_end + 4..].to_vec();
    while req_body.len() < length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => req_body.extend_from_slice(&chunk[..n]),
        }
    }
    let reply = shared.reply.lock().unwrap().clone();
    let inm = headers
        .iter()
        .find(|(k, _)| k == "if-none-match")
        .map(|(_, v)| v.clone());
    let (status, extra, body): (u16, String, Vec<u8>) = match &reply {
        Reply::Json(b) => {
            let tag = etag_of(b);
            if inm.as_deref() == Some(tag.as_str()) {
                (304, format!("ETag: {tag}\r\n"), Vec::new())
            } else {
                (200, format!("ETag: {tag}\r\n"), b.clone())
            }
        }
        Reply::JsonNoEtag(b) => (200, String::new(), b.clone()),
        Reply::Status(s) => (*s, String::new(), Vec::new()),
        Reply::StatusBody(s, b) => (*s, String::new(), b.clone()),
        Reply::Slow(_, b) => (200, String::new(), b.clone()),
        Reply::NotJson => (
            200,
            "Content-Type: text/html\r\n".into(),
            b"<html><body>login required</body></html>".to_vec(),
        ),
        Reply::RedirectLoop => (302, format!("Location: {path}\r\n"), Vec::new()),
        Reply::Huge(_) | Reply::Hang => (200, String::new(), Vec::new()),
    };
    shared.log.lock().unwrap().push(Request {
        method,
        path: path.clone(),
        body: req_body,
        headers,
        status,
        at: std::time::Instant::now(),
    });
    shared.count.send_modify(|c| *c += 1);
    if let Reply::Slow(d, _) = &reply {
        tokio::time::sleep(*d).await;
    }
    match reply {
        Reply::Hang => {
            // Hold the connection open without answering until the client gives up.
            let _ = stream.read(&mut chunk).await;
        }
        Reply::Huge(n) => {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"gateway\":{\"id\":\"huge\"},\"pad\":\"")
                .await;
            let block = vec![b'a'; 64 * 1024];
            let mut sent = 0;
            while sent < n {
                if stream.write_all(&block).await.is_err() {
                    return;
                }
                sent += block.len();
            }
            let _ = stream.write_all(b"\"}").await;
        }
        _ => {
            let reason = match status {
                200 => "OK",
                302 => "Found",
                304 => "Not Modified",
                404 => "Not Found",
                500 => "Internal Server Error",
                503 => "Service Unavailable",
                _ => "Other",
            };
            let head = format!(
                "HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&body).await;
        }
    }
    let _ = stream.shutdown().await;
}
