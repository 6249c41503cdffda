//! TLS for every connection osgate makes or serves: the one `tls` object of the configuration
//! ([`TlsConfig`], the same wherever a connection is configured) built into a rustls client
//! config, and the server side of the JSON-RPC listener ([`ServerTlsConfig`]). Why a connect
//! failed is told by [`super::cause`].
//!
//! The peer is always verified: against the built-in Mozilla roots (`webpki-roots`, compiled in,
//! so a minimal container without a CA bundle works), or against `ca_file` alone when set. The
//! only way around it is the explicit `insecure_skip_verify`, which logs a warning at every
//! connect. Every config is built with the ring provider explicitly, never the process default:
//! ring is the one provider compiled in (aws-lc-rs, the default of rustls, reqwest and rumqttc,
//! is left out: it costs build time and binary size).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The `tls` object of an outbound connection (MQTT broker, HTTP server). Every field is
/// optional: `{}` means "verify the server against the built-in roots".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA certificate(s) that signed the server's certificate. When set, these
    /// replace the built-in (Mozilla) roots: only servers signed by them are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM file with our client certificate (and its chain), for servers that require mutual
    /// TLS. Needs `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM file with the private key of `cert_file` (PKCS#8, PKCS#1/RSA or SEC1/EC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must carry, when it differs from the host in the URL
    /// (e.g. a broker reached by IP address whose certificate says `broker.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Accept any server certificate. Only for a lab: anyone on the path can read and change the
    /// connection. Logs a warning at every connect. Default false.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// `rpc.tls`: serve the JSON-RPC API over HTTPS and WSS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// PEM file with the server certificate (and its chain).
    pub cert_file: PathBuf,
    /// PEM file with the private key of `cert_file` (PKCS#8, PKCS#1/RSA or SEC1/EC).
    pub key_file: PathBuf,
    /// PEM file with the CA certificate(s) of accepted clients: when set, every client must
    /// present a certificate signed by one of them (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
}

/// Why a TLS configuration cannot be built. Each names the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read (missing, permissions).
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no PEM certificate.
    #[error("{}: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file holds no PEM private key.
    #[error("{}: no private key in it (expected PEM: BEGIN PRIVATE KEY, BEGIN RSA PRIVATE KEY or BEGIN EC PRIVATE KEY)", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The PEM text is broken.
    #[error("{}: not valid PEM: {detail}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// A certificate of a CA file cannot be used as a trust anchor.
    #[error("{}: certificate {index} is not a usable CA certificate: {detail}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// 1-based position of the certificate in the file.
        index: usize,
        /// What rustls said.
        detail: String,
    },
    /// The private key is not usable (unsupported algorithm, corrupt).
    #[error("{}: unusable private key: {detail}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        detail: String,
    },
    /// The key does not belong to the certificate.
    #[error("key_file {} does not match the certificate in cert_file {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// Only one of `cert_file` and `key_file` is set.
    #[error("cert_file and key_file go together: {0} is missing")]
    Incomplete(&'static str),
    /// `server_name` is neither a DNS name nor an IP address.
    #[error("server_name \"{0}\" is not a valid DNS name or IP address")]
    ServerName(String),
    /// Any other rustls refusal.
    #[error("{0}")]
    Other(String),
}

impl TlsError {
    /// The config field the error is about (`ca_file`, `key_file`…), for error paths.
    pub fn field(&self, cfg: &TlsConfig) -> &'static str {
        let is = |p: &Path, f: &Option<PathBuf>| f.as_deref() == Some(p);
        match self {
            TlsError::Read { path, .. }
            | TlsError::NoCertificate { path }
            | TlsError::BadPem { path, .. }
            | TlsError::NoKey { path }
            | TlsError::BadKey { path, .. }
            | TlsError::BadCa { path, .. } => {
                if is(path, &cfg.ca_file) {
                    "ca_file"
                } else if is(path, &cfg.cert_file) {
                    "cert_file"
                } else {
                    "key_file"
                }
            }
            TlsError::KeyMismatch { .. } => "key_file",
            TlsError::Incomplete(missing) => missing,
            TlsError::ServerName(_) => "server_name",
            TlsError::Other(_) => "",
        }
    }
}

/// The crypto provider of every config built here (ring, the one compiled in).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads every PEM certificate of `path` (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Reads the first PEM private key of `path` (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        e => TlsError::BadPem {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
    })
}

/// The trust anchors of a CA file.
fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (i, c) in load_certs(path)?.into_iter().enumerate() {
        roots.add(c).map_err(|e| TlsError::BadCa {
            path: path.to_path_buf(),
            index: i + 1,
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Maps the error of a cert + key pair to one that names the file.
fn pair_error(e: rustls::Error, cert: &Path, key: &Path) -> TlsError {
    match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        },
        e => TlsError::BadKey {
            path: key.to_path_buf(),
            detail: e.to_string(),
        },
    }
}

impl TlsConfig {
    /// Builds the rustls client config: roots (built-in or `ca_file`), verifier (with the
    /// `server_name` override, or none at all with `insecure_skip_verify`), client certificate.
    /// Reads the files now; an error names the file and what is wrong with it.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Other(e.to_string()))?;
        let server_name = match &self.server_name {
            Some(n) => {
                Some(ServerName::try_from(n.clone()).map_err(|_| TlsError::ServerName(n.clone()))?)
            }
            None => None,
        };
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        } else {
            let roots = match &self.ca_file {
                Some(p) => load_roots(p)?,
                None => RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                },
            };
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Other(e.to_string()))?;
            match server_name {
                Some(name) => builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(VerifyAs {
                        inner: webpki,
                        name,
                    })),
                None => builder.with_webpki_verifier(webpki),
            }
        };
        match (&self.cert_file, &self.key_file) {
            (None, None) => Ok(builder.with_no_client_auth()),
            (Some(_), None) => Err(TlsError::Incomplete("key_file")),
            (None, Some(_)) => Err(TlsError::Incomplete("cert_file")),
            (Some(c), Some(k)) => {
                let certs = load_certs(c)?;
                let key = load_key(k)?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| pair_error(e, c, k))
            }
        }
    }

    /// Checks the object at load time (files read, key matched): problems go to `errs` under
    /// `{path}.{field}`.
    pub fn validate(&self, path: &str, errs: &mut Vec<ConfigError>) {
        if let Err(e) = self.client_config() {
            let field = e.field(self);
            let at = if field.is_empty() {
                path.to_string()
            } else {
                format!("{path}.{field}")
            };
            errs.push(ConfigError::new(at, e.to_string()));
        }
    }
}

impl ServerTlsConfig {
    /// Builds the rustls server config (HTTP/1.1, so WebSocket upgrades work). With
    /// `client_ca_file`, clients must present a certificate signed by one of its CAs.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Other(e.to_string()))?;
        let builder = match &self.client_ca_file {
            Some(p) => {
                let roots = load_roots(p)?;
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| TlsError::Other(format!("{}: {e}", p.display())))?;
                builder.with_client_cert_verifier(v)
            }
            None => builder.with_no_client_auth(),
        };
        let certs = load_certs(&self.cert_file)?;
        let key = load_key(&self.key_file)?;
        let mut cfg = builder
            .with_single_cert(certs, key)
            .map_err(|e| pair_error(e, &self.cert_file, &self.key_file))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }

    /// Checks the object at load time: problems go to `errs` under `{path}`.
    pub fn validate(&self, path: &str, errs: &mut Vec<ConfigError>) {
        if let Err(e) = self.server_config() {
            let field = match &e {
                TlsError::KeyMismatch { .. } => "key_file",
                TlsError::Read { path, .. }
                | TlsError::NoCertificate { path }
                | TlsError::BadPem { path, .. }
                | TlsError::NoKey { path }
                | TlsError::BadKey { path, .. }
                | TlsError::BadCa { path, .. } => {
                    if Some(path.as_path()) == self.client_ca_file.as_deref() {
                        "client_ca_file"
                    } else if *path == self.cert_file {
                        "cert_file"
                    } else {
                        "key_file"
                    }
                }
                _ => "",
            };
            let at = if field.is_empty() {
                path.to_string()
            } else {
                format!("{path}.{field}")
            };
            errs.push(ConfigError::new(at, e.to_string()));
        }
    }
}

/// Verifies the server's certificate against a configured name instead of the URL's host.
#[derive(Debug)]
struct VerifyAs {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for VerifyAs {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecure_skip_verify`: accepts any certificate (the handshake signatures are still checked,
/// so the session keys belong to whoever holds that certificate's key) and says so every time.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        tracing::warn!(server = %server_name.to_str(), "tls.insecure_skip_verify is set: the server's certificate is NOT verified; anyone on the path can read and change this connection");
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificate generator of the integration tests (one copy, two users).
#[cfg(test)]
#[path = "../../tests/common/certs.rs"]
mod test_certs;

#[cfg(test)]
mod tests {
    use super::super::cause::{classify, describe_error, Failure};
    use super::*;
    use rustls::AlertDescription;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::test_certs::{Certs, Pair};

    fn tls(ca: Option<&Path>) -> TlsConfig {
        TlsConfig {
            ca_file: ca.map(Path::to_path_buf),
            ..TlsConfig::default()
        }
    }

    #[test]
    fn build_errors_name_the_file() {
        let c = Certs::generate();
        let missing = c.dir().join("missing.pem");
        let e = tls(Some(&missing)).client_config().unwrap_err();
        assert!(matches!(e, TlsError::Read { .. }), "{e}");
        assert!(e.to_string().contains("missing.pem: cannot read"), "{e}");

        // A key file given as the CA: no certificate in it.
        let e = tls(Some(&c.ca.key)).client_config().unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
        assert!(e.to_string().contains("ca.key: no certificate"), "{e}");

        // A certificate given as the key.
        let mut t = tls(Some(&c.ca.cert));
        t.cert_file = Some(c.client.cert.clone());
        t.key_file = Some(c.client.cert.clone());
        let e = t.client_config().unwrap_err();
        assert!(matches!(e, TlsError::NoKey { .. }), "{e}");

        // The server's key with the client's certificate.
        t.key_file = Some(c.server.key.clone());
        let e = t.client_config().unwrap_err();
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
        assert!(e.to_string().contains("does not match"), "{e}");
        let mut errs = Vec::new();
        t.validate("sinks[0].tls", &mut errs);
        assert_eq!(errs[0].path, "sinks[0].tls.key_file");

        t.key_file = None;
        assert!(matches!(
            t.client_config(),
            Err(TlsError::Incomplete("key_file"))
        ));
        t.key_file = Some(c.client.key.clone());
        t.client_config().expect("matching pair");

        t.server_name = Some("not a name!".into());
        assert!(matches!(t.client_config(), Err(TlsError::ServerName(_))));

        // Built-in roots.
        TlsConfig::default()
            .client_config()
            .expect("built-in roots");

        let s = ServerTlsConfig {
            cert_file: c.server.cert.clone(),
            key_file: c.client.key.clone(),
            client_ca_file: None,
        };
        let mut errs = Vec::new();
        s.validate("rpc.tls", &mut errs);
        assert_eq!(errs[0].path, "rpc.tls.key_file");
        assert!(errs[0].message.contains("does not match"), "{errs:?}");
    }

    /// Runs one handshake (and a byte each way) over an in-memory pipe; returns the client's
    /// error, if any.
    async fn handshake(
        client: TlsConfig,
        server: Pair,
        client_ca: Option<PathBuf>,
        name: &str,
    ) -> Result<(), std::io::Error> {
        let server = ServerTlsConfig {
            cert_file: server.cert,
            key_file: server.key,
            client_ca_file: client_ca,
        }
        .server_config()
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client.client_config().unwrap()));
        let (a, b) = tokio::io::duplex(64 * 1024);
        let srv = tokio::spawn(async move {
            let mut s = acceptor.accept(b).await?;
            let mut byte = [0u8; 1];
            s.read_exact(&mut byte).await?;
            s.write_all(&byte).await?;
            s.flush().await
        });
        let name = ServerName::try_from(name.to_string()).unwrap();
        let res = async {
            let mut c = connector.connect(name, a).await?;
            c.write_all(b"x").await?;
            c.flush().await?;
            let mut byte = [0u8; 1];
            c.read_exact(&mut byte).await?;
            Ok(())
        }
        .await;
        srv.abort();
        res
    }

    fn cause(e: std::io::Error) -> Option<Failure> {
        classify(&e)
    }

    #[tokio::test]
    async fn handshake_failures_are_classified() {
        let c = Certs::generate();
        let ca = || tls(Some(&c.ca.cert));
        handshake(ca(), c.server.clone(), None, "127.0.0.1")
            .await
            .expect("right CA");
        handshake(ca(), c.server.clone(), None, "localhost")
            .await
            .expect("right CA, by name");

        let e = handshake(
            tls(Some(&c.other_ca.cert)),
            c.server.clone(),
            None,
            "127.0.0.1",
        )
        .await
        .unwrap_err();
        assert_eq!(cause(e), Some(Failure::UnknownCa));
        let e = handshake(ca(), c.untrusted_server.clone(), None, "127.0.0.1")
            .await
            .unwrap_err();
        let msg = describe_error(&e);
        assert!(msg.contains("unknown CA"), "{msg}");
        // The built-in roots do not trust a private CA either.
        let e = handshake(tls(None), c.server.clone(), None, "127.0.0.1")
            .await
            .unwrap_err();
        assert_eq!(cause(e), Some(Failure::UnknownCa));

        let e = handshake(ca(), c.wrong_name_server.clone(), None, "127.0.0.1")
            .await
            .unwrap_err();
        let msg = describe_error(&e);
        assert!(matches!(cause(e), Some(Failure::NameMismatch { .. })));
        assert!(
            msg.contains("name mismatch") && msg.contains("other.example"),
            "{msg}"
        );
        // server_name: verify against the name the certificate carries.
        let mut t = ca();
        t.server_name = Some("other.example".into());
        handshake(t, c.wrong_name_server.clone(), None, "127.0.0.1")
            .await
            .expect("server_name override");

        let e = handshake(ca(), c.expired_server.clone(), None, "127.0.0.1")
            .await
            .unwrap_err();
        assert_eq!(cause(e), Some(Failure::Expired));

        // insecure_skip_verify accepts the untrusted server.
        let mut t = tls(None);
        t.insecure_skip_verify = true;
        handshake(t, c.untrusted_server.clone(), None, "127.0.0.1")
            .await
            .expect("insecure");

        // Mutual TLS: without a client certificate the server refuses.
        let e = handshake(ca(), c.server.clone(), Some(c.ca.cert.clone()), "127.0.0.1")
            .await
            .unwrap_err();
        let f = cause(e);
        assert!(
            matches!(
                f,
                Some(Failure::ClientCertRequired | Failure::HandshakeFailure)
            ),
            "{f:?}"
        );
        let mut t = ca();
        t.cert_file = Some(c.client.cert.clone());
        t.key_file = Some(c.client.key.clone());
        handshake(t, c.server.clone(), Some(c.ca.cert.clone()), "127.0.0.1")
            .await
            .expect("mutual TLS");
    }

    #[test]
    fn mqtt_connack_codes_are_classified() {
        use rumqttc::{ConnectReturnCode, ConnectionError};
        let e = ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword);
        let msg = describe_error(&e);
        assert!(
            msg.starts_with("not authorized: bad user name or password"),
            "{msg}"
        );
        let e = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        assert_eq!(classify(&e), Some(Failure::NotAuthorized));
        // Wrapped the way rumqttc wraps a handshake error.
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        );
        let e = ConnectionError::Tls(rumqttc::TlsError::Io(io));
        let msg = describe_error(&e);
        assert!(msg.contains("requires a client certificate"), "{msg}");
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(classify(&plain), None);
        assert_eq!(describe_error(&plain), "refused");
    }
}
