//! Test certificates, made at run time with rcgen into a temp dir (PEM files, as an operator
//! would have them): a CA, a server certificate it signed (SAN 127.0.0.1 and localhost), a second,
//! untrusted CA and a server certificate of its own, a server certificate for another name, an
//! expired server certificate, and a client certificate for mutual TLS.
//!
//! Also used by the unit tests of `core/net/tls.rs` (included there by path).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key (PKCS#8).
    pub key: PathBuf,
}

/// Every certificate a TLS test needs; the files live as long as this.
pub struct Certs {
    dir: tempfile::TempDir,
    /// The CA every "good" certificate is signed by.
    pub ca: Pair,
    /// A second CA that nobody trusts.
    pub other_ca: Pair,
    /// Server certificate for 127.0.0.1 and localhost, signed by `ca`.
    pub server: Pair,
    /// Server certificate for 127.0.0.1 and localhost, signed by `other_ca`.
    pub untrusted_server: Pair,
    /// Server certificate for `other.example` only, signed by `ca`.
    pub wrong_name_server: Pair,
    /// Server certificate for 127.0.0.1 and localhost, signed by `ca`, expired in 2020.
    pub expired_server: Pair,
    /// Client certificate (`osgate-test-client`), signed by `ca`.
    pub client: Pair,
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d
}

fn write(dir: &Path, name: &str, cert: &str, key: &KeyPair) -> Pair {
    let p = Pair {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    std::fs::write(&p.cert, cert).unwrap();
    std::fs::write(&p.key, key.serialize_pem()).unwrap();
    p
}

fn ca(dir: &Path, name: &str) -> (Pair, CertificateParams, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = dn(&format!("osgate test {name}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    (write(dir, name, &cert.pem(), &key), params, key)
}

fn leaf(
    dir: &Path,
    name: &str,
    sans: &[&str],
    client: bool,
    issuer: &Issuer<'_, &KeyPair>,
    expired: bool,
) -> Pair {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = dn(&format!("osgate-test-{name}"));
    params.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*s).try_into().unwrap()),
        })
        .collect();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    if expired {
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    }
    let cert = params.signed_by(&key, issuer).unwrap();
    write(dir, name, &cert.pem(), &key)
}

impl Certs {
    /// Generates every certificate into a fresh temp dir.
    pub fn generate() -> Certs {
        let dir = tempfile::Builder::new()
            .prefix("osgate-certs")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let (ca_pair, ca_params, ca_key) = ca(d, "ca");
        let (other_pair, other_params, other_key) = ca(d, "other-ca");
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let other = Issuer::from_params(&other_params, &other_key);
        let here = ["127.0.0.1", "localhost"];
        Certs {
            server: leaf(d, "server", &here, false, &issuer, false),
            untrusted_server: leaf(d, "untrusted-server", &here, false, &other, false),
            wrong_name_server: leaf(
                d,
                "wrong-name-server",
                &["other.example"],
                false,
                &issuer,
                false,
            ),
            expired_server: leaf(d, "expired-server", &here, false, &issuer, true),
            client: leaf(d, "client", &[], true, &issuer, false),
            ca: ca_pair,
            other_ca: other_pair,
            dir,
        }
    }

    /// The directory of the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
