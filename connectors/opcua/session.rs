//! One OPC-UA connection as the connector, the poller and `osgate opcua` use it: the client
//! (application certificate and key from `pki_dir`, generated on first start), the server's
//! certificate checked against the trusted directory, the endpoint matching the configured
//! security, the user token, and a session whose event loop runs in a task of its own.
//!
//! async-opcua's own reconnect is switched off: when the connection drops the event loop ends,
//! [`Connection::lost`] says why, and the kit reconnects with its backoff (a fresh session, the
//! namespace indexes looked up again, subscriptions made anew). Every wait here is bounded by
//! the connector's `timeout`; `Session::wait_for_connection` is not used, since it can wait
//! forever when the event loop has ended.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use opcua::client::{
    Client, ClientBuilder, ClientEndpoint, IdentityToken, Session, SessionPollResult,
};
use opcua::crypto::{CertificateStore, SecurityPolicy};
use opcua::types::{
    Array, AttributeId, DataValue, MessageSecurityMode, NamespaceMap, NodeId, NumericRange,
    QualifiedName, ReadValueId, StatusCode, TimestampsToReturn, Variant, VariantScalarTypeId,
    WriteValue,
};
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinHandle;

use super::{Mode, OpcuaSettings, Policy};
use crate::device::{Fault, WriteError};
use crate::ConnectorError;
use osgate_core::reading::Value;

/// The application URI osgate presents (and writes into a generated certificate).
pub const APPLICATION_URI: &str = "urn:osgate:client";

/// Checks an endpoint URL: `opc.tcp://host[:port][/path]`.
pub fn check_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("opc.tcp://") else {
        return Err(format!(
            "\"{url}\" is not an OPC-UA endpoint URL: expected opc.tcp://host:port/path"
        ));
    };
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("\"{url}\" names no host"));
    }
    if let Some((_, port)) = host.rsplit_once(':') {
        if !host.ends_with(']') && port.parse::<u16>().is_err() {
            return Err(format!(
                "\"{url}\": port \"{port}\" is not a number 0-65535"
            ));
        }
    }
    Ok(())
}

/// A channel's node as configured: a NodeId, or an identifier in a namespace given by its URI
/// (resolved to an index at every connect).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRef {
    /// The namespace URI of `nsu=…`.
    uri: Option<Arc<str>>,
    /// The node id (namespace 0 until resolved when `uri` is set).
    id: NodeId,
}

const NODE_SYNTAX: &str = "expected ns=<index>;s=<name> (or i=<number>, g=<GUID>, b=<base64>), or nsu=<namespace URI>;s=<name>";

impl FromStr for NodeRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("nsu=") {
            let Some((uri, ident)) = rest.rsplit_once(';') else {
                return Err(format!("\"{s}\": {NODE_SYNTAX}"));
            };
            if uri.is_empty() {
                return Err(format!("\"{s}\": the namespace URI is empty"));
            }
            let id = NodeId::from_str(ident).map_err(|_| format!("\"{s}\": {NODE_SYNTAX}"))?;
            return Ok(NodeRef {
                uri: Some(uri.into()),
                id,
            });
        }
        let id = NodeId::from_str(s).map_err(|_| format!("\"{s}\": {NODE_SYNTAX}"))?;
        Ok(NodeRef { uri: None, id })
    }
}

impl NodeRef {
    /// True when the node names its namespace by URI.
    pub fn needs_namespaces(&self) -> bool {
        self.uri.is_some()
    }

    /// The NodeId on the server whose namespaces are `ns`.
    pub fn resolve(&self, ns: Option<&NamespaceMap>) -> Result<NodeId, String> {
        let Some(uri) = &self.uri else {
            return Ok(self.id.clone());
        };
        match ns.and_then(|m| m.get_index(uri)) {
            Some(i) => {
                let mut id = self.id.clone();
                id.namespace = i;
                Ok(id)
            }
            None => Err(format!(
                "namespace {uri} is not in the server's NamespaceArray"
            )),
        }
    }
}

/// Where and how to connect, built once per connector.
pub struct Endpoint {
    /// The endpoint URL.
    pub url: String,
    policy: SecurityPolicy,
    mode: MessageSecurityMode,
    user: Option<(String, String)>,
    pki_dir: PathBuf,
    trusted_dir: PathBuf,
    trust_on_first_use: bool,
    cert_files: Option<(PathBuf, PathBuf)>,
    /// Bound of every request and of connecting.
    pub timeout: Duration,
    client: OnceCell<Arc<Client>>,
}

impl Endpoint {
    /// Checks the URL and the certificate files of `s`; `timeout` bounds every request and
    /// connecting.
    pub fn new(s: &OpcuaSettings, timeout: Duration) -> Result<Self, ConnectorError> {
        check_url(&s.url).map_err(|reason| ConnectorError::Address {
            address: s.url.clone(),
            reason,
        })?;
        let cert_files = match (&s.cert_file, &s.key_file) {
            (Some(c), Some(k)) => {
                for p in [c, k] {
                    std::fs::metadata(p).map_err(|e| ConnectorError::File {
                        path: p.display().to_string(),
                        reason: e.to_string(),
                    })?;
                }
                Some((absolute(c), absolute(k)))
            }
            _ => None,
        };
        let pki_dir = absolute(&s.pki_dir);
        if pki_dir.exists() && !pki_dir.is_dir() {
            return Err(ConnectorError::File {
                path: pki_dir.display().to_string(),
                reason: "pki_dir is not a directory".into(),
            });
        }
        let trusted_dir = s
            .security
            .trusted_dir
            .as_deref()
            .map(absolute)
            .unwrap_or_else(|| pki_dir.join("trusted"));
        Ok(Endpoint {
            url: s.url.clone(),
            policy: policy(s.security.policy),
            mode: mode(s.security.mode()),
            user: s
                .user
                .as_ref()
                .map(|u| (u.username.clone(), u.password.clone())),
            pki_dir,
            trusted_dir,
            trust_on_first_use: s.security.trust_on_first_use,
            cert_files,
            timeout,
            client: OnceCell::new(),
        })
    }

    /// The client, made on first use: loads the application certificate and key, or
    /// generates them into `pki_dir` (slow: an RSA key, so off the runtime's threads).
    async fn client(&self) -> Result<Arc<Client>, Fault> {
        self.client
            .get_or_try_init(|| async {
                let mut b = ClientBuilder::new()
                    .application_name("osgate")
                    .application_uri(APPLICATION_URI)
                    .product_uri("urn:osgate")
                    .pki_dir(&self.pki_dir)
                    .create_sample_keypair(self.cert_files.is_none())
                    .trust_server_certs(self.trust_on_first_use)
                    // Trust and key length stay the library's; validity, host and URI are
                    // checked in `connect` (super::cert), whatever the order of the names.
                    .verify_server_certs(false)
                    .session_retry_limit(0)
                    .request_timeout(self.timeout)
                    .keep_alive_interval(Duration::from_secs(5))
                    .max_failed_keep_alive_count(3)
                    .session_timeout(60_000)
                    // Connections go to `url` only; naming it keeps the builder from warning
                    // about an empty endpoint list.
                    .endpoint("server", ClientEndpoint::new(self.url.clone()))
                    .default_endpoint("server");
                if let Some((c, k)) = &self.cert_files {
                    b = b.certificate_path(c).private_key_path(k);
                }
                let client = tokio::task::spawn_blocking(move || b.client())
                    .await
                    .map_err(|e| Fault::new("pki", format!("making the client failed: {e}")))?
                    .map_err(|e| Fault::new("pki", e.join("; ")))?;
                // A generated private key is a secret at rest: owner only.
                if self.cert_files.is_none() {
                    osgate_core::config::secrets::restrict_dir(&self.pki_dir.join("private"));
                }
                if self.policy != SecurityPolicy::None {
                    let store = client.certificate_store().read();
                    if let Err(e) = store.read_own_cert().and(store.read_own_pkey().map(|_| ())) {
                        return Err(Fault::new(
                            "pki",
                            format!(
                                "no client certificate and key for security {}: {e}",
                                self.policy
                            ),
                        ));
                    }
                }
                Ok(Arc::new(client))
            })
            .await
            .cloned()
    }

    /// Copies every certificate of the trusted directory into the store's `trusted` folder
    /// under the name the store looks for, and takes it out of `rejected`: a user trusts a
    /// server by dropping its certificate into the directory, whatever the file is called.
    fn sync_trusted(&self) -> Result<(), String> {
        let store = self.pki_dir.join("trusted");
        let rejected = self.pki_dir.join("rejected");
        for d in [&store, &rejected] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        let entries = match std::fs::read_dir(&self.trusted_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", self.trusted_dir.display())),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("der" | "pem")
            ) {
                continue;
            }
            let Ok(cert) = CertificateStore::read_cert(&path) else {
                tracing::warn!(file = %path.display(), "not a certificate; ignored");
                continue;
            };
            let name = CertificateStore::cert_file_name(&cert);
            let target = store.join(&name);
            if !target.exists() {
                let der = cert
                    .to_der()
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                std::fs::write(&target, der).map_err(|e| format!("{}: {e}", target.display()))?;
            }
            let _ = std::fs::remove_file(rejected.join(&name));
        }
        Ok(())
    }

    /// Connects: the endpoint matching the configured security, then a session (bounded by
    /// `timeout`).
    pub async fn connect(&self) -> Result<Connection, Fault> {
        let client = self.client().await?;
        self.sync_trusted()
            .map_err(|e| Fault::new("pki", format!("trusted certificates: {e}")))?;
        let url = self.url.as_str();
        let endpoints = self
            .bounded(
                "the endpoint list",
                client.get_server_endpoints_from_url(url),
            )
            .await?
            .map_err(|e| Fault::new("connect", format!("{url}: {}", e.status())))?;
        let Some(endpoint) =
            Client::find_matching_endpoint(&endpoints, url, self.policy, self.mode)
        else {
            let offered: Vec<String> = endpoints
                .iter()
                .map(|e| {
                    let p = SecurityPolicy::from_uri(e.security_policy_uri.as_ref());
                    format!("{p}/{:?}", e.security_mode)
                })
                .collect();
            return Err(Fault::new(
                "endpoint",
                format!(
                    "{url} offers no endpoint with security {}/{:?}; it offers {}",
                    self.policy,
                    self.mode,
                    offered.join(", ")
                ),
            ));
        };
        if self.policy != SecurityPolicy::None {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            super::cert::check(
                endpoint.server_certificate.as_ref(),
                super::cert::url_host(url),
                endpoint.server.application_uri.as_ref(),
                now,
            )
            .map_err(|r| {
                let mut f = self.connect_fault(r.code);
                f.message = format!("{}: {}", f.message, r.reason);
                f
            })?;
        }
        let token = match &self.user {
            None => IdentityToken::Anonymous,
            Some((u, p)) => IdentityToken::new_user_name(u.clone(), p.clone()),
        };
        let (session, event_loop) = client
            .session_builder()
            .connect_to_endpoint_directly(endpoint)
            .and_then(|b| {
                b.user_identity_token(token)
                    .build(client.certificate_store().clone())
            })
            .map_err(|e| Fault::new("connect", format!("{url}: {e}")))?;
        session.disable_reconnects();
        let (tx, mut state) = watch::channel(LoopState::Connecting);
        let task = tokio::spawn(async move {
            use futures_util::StreamExt as _;
            let stream = event_loop.enter();
            tokio::pin!(stream);
            let end = loop {
                match stream.next().await {
                    Some(Ok(SessionPollResult::Reconnected(_))) => {
                        let _ = tx.send(LoopState::Connected);
                    }
                    Some(Ok(SessionPollResult::ConnectionLost(code))) => break code,
                    Some(Ok(_)) => {}
                    Some(Err(code)) => break code,
                    None => break StatusCode::BadConnectionClosed,
                }
            };
            let _ = tx.send(LoopState::Ended(end));
        });
        let conn = Connection {
            session,
            task: Some(task),
            state: state.clone(),
            url: self.url.clone(),
        };
        let st = self
            .bounded(
                "a session",
                state.wait_for(|s| !matches!(s, LoopState::Connecting)),
            )
            .await?
            .map(|s| *s)
            .unwrap_or(LoopState::Ended(StatusCode::BadUnexpectedError));
        match st {
            LoopState::Ended(code) => Err(self.connect_fault(code)),
            _ => Ok(conn),
        }
    }

    /// `f`, or a fault naming `what` after `timeout`.
    pub async fn bounded<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = T>,
    ) -> Result<T, Fault> {
        tokio::time::timeout(self.timeout, f).await.map_err(|_| {
            Fault::new(
                "timeout",
                format!(
                    "{}: no {what} within {}",
                    self.url,
                    humantime::format_duration(self.timeout)
                ),
            )
        })
    }

    /// What a failed connect means, for operators.
    fn connect_fault(&self, code: StatusCode) -> Fault {
        let name = super::value::status_name(code);
        let url = &self.url;
        let rejected = self.pki_dir.join("rejected");
        let trusted = self.trusted_dir.display();
        match code {
            StatusCode::BadCertificateUntrusted | StatusCode::BadSecurityChecksFailed => Fault::new(
                "untrusted",
                format!(
                    "{url}: server certificate not trusted ({name}); it was saved in {} — check it and copy it into {trusted} to trust this server (or set security.trust_on_first_use)",
                    rejected.display()
                ),
            ),
            StatusCode::BadCertificateHostNameInvalid | StatusCode::BadCertificateUriInvalid => {
                Fault::new(
                    "certificate",
                    format!("{url}: the server certificate does not name this server ({name}); use the host name it carries in the URL"),
                )
            }
            StatusCode::BadIdentityTokenInvalid
            | StatusCode::BadIdentityTokenRejected
            | StatusCode::BadUserAccessDenied => Fault::new(
                "user",
                format!("{url}: the server refused the user ({name}); check user.username and user.password"),
            ),
            _ => Fault::new("connect", format!("{url}: connecting failed: {name}")),
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn policy(p: Policy) -> SecurityPolicy {
    match p {
        Policy::None => SecurityPolicy::None,
        Policy::Basic256Sha256 => SecurityPolicy::Basic256Sha256,
        Policy::Aes128Sha256RsaOaep => SecurityPolicy::Aes128Sha256RsaOaep,
        Policy::Aes256Sha256RsaPss => SecurityPolicy::Aes256Sha256RsaPss,
    }
}

fn mode(m: Mode) -> MessageSecurityMode {
    match m {
        Mode::None => MessageSecurityMode::None,
        Mode::Sign => MessageSecurityMode::Sign,
        Mode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
    }
}

/// Where the session's event loop is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoopState {
    /// Opening the channel and the session.
    Connecting,
    /// The session is active.
    Connected,
    /// The event loop ended (connection lost or refused), with the status why.
    Ended(StatusCode),
}

/// A connected session; its event loop runs until the connection drops or this is dropped
/// (then the session is closed in the background, bounded).
pub struct Connection {
    /// The session, for requests.
    pub session: Arc<Session>,
    task: Option<JoinHandle<()>>,
    state: watch::Receiver<LoopState>,
    url: String,
}

impl Connection {
    /// True once the event loop has ended.
    pub fn is_lost(&self) -> bool {
        matches!(*self.state.borrow(), LoopState::Ended(_))
    }

    /// Waits until the connection is lost; the fault says why. Cancel-safe.
    pub async fn lost(&mut self) -> Fault {
        let st = self
            .state
            .wait_for(|s| matches!(s, LoopState::Ended(_)))
            .await
            .map(|s| *s)
            .unwrap_or(LoopState::Ended(StatusCode::BadUnexpectedError));
        let code = match st {
            LoopState::Ended(c) => c,
            _ => StatusCode::BadUnexpectedError,
        };
        Fault::new(
            "connection",
            format!(
                "{}: connection lost ({})",
                self.url,
                super::value::status_name(code)
            ),
        )
    }

    /// The server's namespace table, read now (bounded by `timeout` of `ep`).
    pub async fn namespaces(&self, ep: &Endpoint) -> Result<NamespaceMap, Fault> {
        ep.bounded("NamespaceArray", self.session.read_namespace_array())
            .await?
            .map_err(|e| {
                Fault::new(
                    "namespaces",
                    format!(
                        "{}: reading the NamespaceArray failed: {}",
                        self.url,
                        e.status()
                    ),
                )
            })
    }
}

/// Nodes read per `Read` request.
const READ_PER_CALL: usize = 1000;

/// The `Read` of attribute `attr` of `node`.
fn read_id(node: NodeId, attr: AttributeId) -> ReadValueId {
    ReadValueId {
        node_id: node,
        attribute_id: attr as u32,
        index_range: Default::default(),
        data_encoding: QualifiedName::null(),
    }
}

/// The `Read` of the Value of `node`, or of its array element `index` (IndexRange `"3"`).
pub fn value_id(node: NodeId, index: Option<u32>) -> ReadValueId {
    ReadValueId {
        index_range: range(index),
        ..read_id(node, AttributeId::Value)
    }
}

/// The IndexRange of array element `index`; none without one.
fn range(index: Option<u32>) -> NumericRange {
    index.map_or(NumericRange::None, NumericRange::Index)
}

impl Connection {
    /// Reads the values of `nodes` (one `Read` request, bounded by `timeout` of `ep`); one
    /// data value per node, in order.
    pub async fn read(&self, ep: &Endpoint, nodes: &[NodeId]) -> Result<Vec<DataValue>, Fault> {
        let ids: Vec<ReadValueId> = nodes.iter().map(|n| value_id(n.clone(), None)).collect();
        self.read_values(ep, &ids).await
    }

    /// Reads `ids` (see [`value_id`]; one `Read` request per thousand, each bounded by
    /// `timeout` of `ep`); one data value per id, in order.
    pub async fn read_values(
        &self,
        ep: &Endpoint,
        ids: &[ReadValueId],
    ) -> Result<Vec<DataValue>, Fault> {
        let mut out = Vec::with_capacity(ids.len());
        // In chunks: servers limit the nodes per Read (MaxNodesPerRead).
        for ids in ids.chunks(READ_PER_CALL) {
            let dvs = ep
                .bounded(
                    "Read answer",
                    self.session.read(ids, TimestampsToReturn::Both, 0.0),
                )
                .await?
                .map_err(|e| {
                    Fault::new("read", format!("{}: Read failed: {}", self.url, e.status()))
                })?;
            if dvs.len() != ids.len() {
                return Err(Fault::new(
                    "read",
                    format!(
                        "{}: Read answered {} values for {} nodes",
                        self.url,
                        dvs.len(),
                        ids.len()
                    ),
                ));
            }
            out.extend(dvs);
        }
        Ok(out)
    }

    /// Writes `raw` to the Value of `node`, or to its array element `index`, as the node's
    /// own type (`ty`: read from the node's DataType on the first write, else from its
    /// current value, then kept); every status code is checked.
    ///
    /// An element is written with its IndexRange, as an array of that one element. Before
    /// the first such write the element is read: a server that answers the whole array
    /// ignores IndexRange (python asyncua), and would replace the whole array with the one
    /// element, so the write is refused.
    pub async fn write(
        &self,
        ep: &Endpoint,
        node: &NodeId,
        index: Option<u32>,
        ty: &mut Option<VariantScalarTypeId>,
        raw: &Value,
    ) -> Result<(), WriteError> {
        let offline = |f: Fault| WriteError::Offline(f.message);
        let t = match *ty {
            Some(t) => t,
            None => {
                let ids = [
                    read_id(node.clone(), AttributeId::DataType),
                    value_id(node.clone(), index),
                ];
                let dvs = ep
                    .bounded(
                        "Read answer",
                        self.session.read(&ids, TimestampsToReturn::Neither, 0.0),
                    )
                    .await
                    .map_err(offline)?
                    .map_err(|e| {
                        WriteError::Offline(format!("reading the node's DataType: {}", e.status()))
                    })?;
                let status = |dv: &DataValue| dv.status.unwrap_or(StatusCode::Good);
                if let Some(dv) = dvs.first().filter(|dv| status(dv).is_bad()) {
                    return Err(WriteError::Refused(format!(
                        "the node's DataType cannot be read: {}",
                        super::value::status_name(status(dv))
                    )));
                }
                let from_type = dvs.first().and_then(|dv| match &dv.value {
                    Some(Variant::NodeId(id)) => super::value::scalar_type(id),
                    _ => None,
                });
                if let (Some(i), Some(dv)) = (index, dvs.get(1)) {
                    if !status(dv).is_good() {
                        return Err(WriteError::Refused(
                            super::value::index_reason(status(dv), i).to_string(),
                        ));
                    }
                    if let Some(Variant::Array(a)) = &dv.value {
                        if a.values.len() > 1 {
                            return Err(WriteError::Refused(format!(
                                "the server ignores IndexRange (it answered the whole array of {} elements for index {i}): writing the element would replace the array",
                                a.values.len()
                            )));
                        }
                    }
                }
                let from_value = dvs
                    .get(1)
                    .and_then(|dv| dv.value.as_ref())
                    .and_then(|v| v.scalar_type_id());
                let t = from_type.or(from_value).ok_or_else(|| {
                    WriteError::Invalid("the node's DataType is not a built-in scalar type".into())
                })?;
                *ty = Some(t);
                t
            }
        };
        let mut variant = super::value::to_variant(raw, t).map_err(WriteError::Invalid)?;
        if index.is_some() {
            let one = Array::new(t, vec![variant]).map_err(|e| WriteError::Invalid(e.to_string()))?;
            variant = Variant::Array(Box::new(one));
        }
        let wv = WriteValue {
            node_id: node.clone(),
            attribute_id: AttributeId::Value as u32,
            index_range: range(index),
            value: DataValue::value_only(variant),
        };
        let codes = ep
            .bounded("Write answer", self.session.write(&[wv]))
            .await
            .map_err(offline)?
            .map_err(|e| WriteError::Offline(format!("Write failed: {}", e.status())))?;
        match codes.first() {
            Some(c) if c.is_good() => Ok(()),
            Some(c) => Err(WriteError::Refused(format!(
                "the server answered {}",
                super::value::status_name(*c)
            ))),
            None => Err(WriteError::Offline("the server answered no status".into())),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        let session = self.session.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    // Close the session politely (the server frees its subscriptions), then
                    // stop the event loop whatever happened.
                    let _ =
                        tokio::time::timeout(Duration::from_secs(2), session.disconnect()).await;
                    task.abort();
                });
            }
            Err(_) => task.abort(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_refs() {
        let n: NodeRef = "ns=2;s=Temperature".parse().unwrap();
        assert_eq!(n.resolve(None).unwrap(), NodeId::new(2, "Temperature"));
        let n: NodeRef = "i=2258".parse().unwrap();
        assert_eq!(n.resolve(None).unwrap(), NodeId::new(0, 2258u32));
        let n: NodeRef = "ns=1;g=72962b91-fa75-4ae6-8d28-b404dc7daf63"
            .parse()
            .unwrap();
        assert_eq!(n.resolve(None).unwrap().namespace, 1);
        let n: NodeRef = "nsu=urn:osgate:test-peer;s=Counter".parse().unwrap();
        assert!(n.needs_namespaces());
        let mut map = NamespaceMap::new();
        map.add_namespace("urn:other");
        map.add_namespace("urn:osgate:test-peer");
        let idx = map.get_index("urn:osgate:test-peer").unwrap();
        assert_eq!(n.resolve(Some(&map)).unwrap(), NodeId::new(idx, "Counter"));
        let e = "nsu=urn:x;s=A"
            .parse::<NodeRef>()
            .unwrap()
            .resolve(Some(&map))
            .unwrap_err();
        assert!(e.contains("urn:x"), "{e}");
        for bad in ["", "ns=x;s=A", "Temperature", "nsu=;s=A", "nsu=urn:x"] {
            assert!(bad.parse::<NodeRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn urls() {
        assert!(check_url("opc.tcp://127.0.0.1:4840/osgate/").is_ok());
        assert!(check_url("opc.tcp://plc").is_ok());
        assert!(check_url("http://plc:4840").is_err());
        assert!(check_url("opc.tcp://:4840").is_err());
        assert!(check_url("opc.tcp://plc:48x0/").is_err());
    }
}
