//! Why a connection failed, in words an operator can act on: the TLS alert or certificate
//! problem, or the MQTT CONNACK code, found anywhere in an error's chain ([`classify`]), and the
//! whole chain as one line ([`describe_error`]). Every client in [`super`] reports with it.

use rustls::{AlertDescription, CertificateError};

/// Why a connection failed, as far as TLS or the MQTT CONNACK tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server's certificate is signed by a CA we do not trust.
    UnknownCa,
    /// The server's certificate is not valid for the name we connected to.
    NameMismatch {
        /// The name we checked.
        expected: Option<String>,
        /// The names in the certificate.
        presented: Vec<String>,
    },
    /// The server's certificate has expired.
    Expired,
    /// The server's certificate is not valid yet.
    NotYetValid,
    /// Another problem with the server's certificate.
    BadServerCertificate(String),
    /// The server requires a client certificate and we sent none.
    ClientCertRequired,
    /// The server ended the handshake (often: it wants a client certificate).
    HandshakeFailure,
    /// The server rejected our client certificate.
    ClientCertRejected(String),
    /// The server does not speak TLS on that port.
    NotTls,
    /// MQTT CONNACK 4: bad user name or password.
    BadCredentials,
    /// MQTT CONNACK 5: not authorized.
    NotAuthorized,
    /// MQTT CONNACK 2: client id refused.
    BadClientId,
    /// MQTT CONNACK 3: broker unavailable.
    ServiceUnavailable,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::UnknownCa => f.write_str(
                "server certificate not trusted: unknown CA / untrusted issuer (tls.ca_file must hold the CA that signed it)",
            ),
            Failure::NameMismatch { expected, presented } => {
                f.write_str("server certificate host name mismatch")?;
                if let Some(e) = expected {
                    write!(f, ": connected to {e}")?;
                }
                if !presented.is_empty() {
                    write!(f, ", certificate is for {}", presented.join(", "))?;
                }
                f.write_str(" (tls.server_name sets the name to check)")
            }
            Failure::Expired => f.write_str("server certificate expired"),
            Failure::NotYetValid => {
                f.write_str("server certificate not yet valid (check the clock)")
            }
            Failure::BadServerCertificate(e) => write!(f, "invalid server certificate: {e}"),
            Failure::ClientCertRequired => f.write_str(
                "the server requires a client certificate (TLS alert certificate_required): set tls.cert_file and tls.key_file",
            ),
            Failure::HandshakeFailure => f.write_str(
                "TLS handshake failure alert from the server: it may require a client certificate (tls.cert_file, tls.key_file) or share no TLS version or cipher with us",
            ),
            Failure::ClientCertRejected(alert) => write!(
                f,
                "the server rejected our client certificate (TLS alert {alert}): check tls.cert_file, tls.key_file and the CA the server trusts"
            ),
            Failure::NotTls => f.write_str(
                "the server does not speak TLS on this port (a plain-text listener?)",
            ),
            Failure::BadCredentials => f.write_str(
                "not authorized: bad user name or password (MQTT CONNACK code 4)",
            ),
            Failure::NotAuthorized => f.write_str(
                "not authorized: the broker refuses this client (MQTT CONNACK code 5)",
            ),
            Failure::BadClientId => {
                f.write_str("the broker refuses the client id (MQTT CONNACK code 2)")
            }
            Failure::ServiceUnavailable => {
                f.write_str("the broker is unavailable (MQTT CONNACK code 3)")
            }
        }
    }
}

/// The next error of the chain: an `io::Error`'s own inner error first (its `source()` skips
/// it), else `source()`.
fn next_in_chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a (dyn std::error::Error + 'static)> {
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        if let Some(inner) = io.get_ref() {
            return Some(inner as &(dyn std::error::Error + 'static));
        }
    }
    e.source()
}

fn classify_rustls(e: &rustls::Error) -> Option<Failure> {
    Some(match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => Failure::UnknownCa,
            CertificateError::NotValidForName => Failure::NameMismatch {
                expected: None,
                presented: Vec::new(),
            },
            CertificateError::NotValidForNameContext {
                expected,
                presented,
            } => Failure::NameMismatch {
                expected: Some(expected.to_str().into_owned()),
                presented: presented.clone(),
            },
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Failure::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Failure::NotYetValid
            }
            other => Failure::BadServerCertificate(format!("{other:?}")),
        },
        rustls::Error::AlertReceived(a) => match a {
            AlertDescription::CertificateRequired => Failure::ClientCertRequired,
            AlertDescription::HandshakeFailure => Failure::HandshakeFailure,
            AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied => Failure::ClientCertRejected(format!("{a:?}")),
            _ => return None,
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            Failure::NotTls
        }
        _ => return None,
    })
}

/// Finds the cause of a connection error: walks the `source()` chain (and the inner error of
/// each `io::Error`) for a `rustls::Error` or a refused MQTT CONNACK.
pub fn classify(err: &(dyn std::error::Error + 'static)) -> Option<Failure> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            if let Some(f) = classify_rustls(r) {
                return Some(f);
            }
        }
        if let Some(rumqttc::ConnectionError::ConnectionRefused(code)) =
            e.downcast_ref::<rumqttc::ConnectionError>()
        {
            use rumqttc::ConnectReturnCode as C;
            return match code {
                C::BadUserNamePassword => Some(Failure::BadCredentials),
                C::NotAuthorized => Some(Failure::NotAuthorized),
                C::BadClientId => Some(Failure::BadClientId),
                C::ServiceUnavailable => Some(Failure::ServiceUnavailable),
                _ => None,
            };
        }
        cur = next_in_chain(e);
    }
    None
}

/// The error and its causes on one line (each cause once).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = next_in_chain(err);
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = next_in_chain(c);
    }
    s
}

/// An operator's message for a failed connect: the cause first when it is known (untrusted
/// CA, name mismatch, expired, client certificate required or rejected, bad password…), then
/// the error chain.
pub fn describe_error(err: &(dyn std::error::Error + 'static)) -> String {
    let chain = error_chain(err);
    match classify(err) {
        Some(f) => format!("{f} [{chain}]"),
        None => chain,
    }
}
