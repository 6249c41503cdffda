//! The checks of a secure server's certificate that osgate makes itself: valid now, naming the
//! host the URL uses, and carrying the server's application URI.
//!
//! async-opcua 0.19 checks both names by position: the host against every subject
//! alternative name but the first (taken to be the application URI), and the URI against the
//! first alone. Servers that write the DNS name first and the URI last (node-opcua, for one)
//! are then refused with `BadCertificateHostNameInvalid` even when the URL names a host the
//! certificate carries. So the session leaves these checks out of the library (it still
//! requires a trusted certificate of a key length the policy accepts) and makes them here,
//! against every DNS and IP entry and every URI entry, whatever their order.

use std::net::IpAddr;

use opcua::types::StatusCode;
use x509_cert::der::Decode as _;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

/// Why a server certificate is refused: the status the library would have given, and words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `BadCertificateInvalid`, `BadCertificateTimeInvalid`, `BadCertificateHostNameInvalid` or
    /// `BadCertificateUriInvalid`.
    pub code: StatusCode,
    /// What is wrong, naming what the certificate carries.
    pub reason: String,
}

fn refused(code: StatusCode, reason: impl Into<String>) -> Refused {
    Refused {
        code,
        reason: reason.into(),
    }
}

/// The host of an `opc.tcp://host:port/path` URL (an IPv6 address without its brackets).
pub fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// Checks the DER certificate `der` of a server reached as `host` (the URL's host name or
/// address) that calls itself `application_uri` (empty: not checked), at `now` (seconds since
/// the epoch).
pub fn check(der: &[u8], host: &str, application_uri: &str, now: u64) -> Result<(), Refused> {
    let cert = Certificate::from_der(der).map_err(|e| {
        refused(
            StatusCode::BadCertificateInvalid,
            format!("the server certificate does not parse: {e}"),
        )
    })?;
    let validity = &cert.tbs_certificate.validity;
    let from = validity.not_before.to_unix_duration().as_secs();
    let until = validity.not_after.to_unix_duration().as_secs();
    if now < from || now > until {
        return Err(refused(
            StatusCode::BadCertificateTimeInvalid,
            format!(
                "the server certificate is valid from {} to {}, not now",
                validity.not_before, validity.not_after
            ),
        ));
    }
    let names: Vec<GeneralName> = match cert.tbs_certificate.get::<SubjectAltName>() {
        Ok(Some((_, san))) => san.0,
        _ => Vec::new(),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host_ip: Option<IpAddr> = host.parse().ok();
    let mut carried = Vec::new();
    let mut host_ok = false;
    let mut uris = Vec::new();
    for n in &names {
        match n {
            GeneralName::DnsName(d) => {
                host_ok |= d.as_str().eq_ignore_ascii_case(host);
                carried.push(d.as_str().to_string());
            }
            GeneralName::IpAddress(b) => {
                let ip = match b.as_bytes().len() {
                    4 => <[u8; 4]>::try_from(b.as_bytes()).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(b.as_bytes()).ok().map(IpAddr::from),
                    _ => None,
                };
                if let Some(ip) = ip {
                    host_ok |= host_ip == Some(ip);
                    carried.push(ip.to_string());
                }
            }
            GeneralName::UniformResourceIdentifier(u) => uris.push(u.as_str().to_string()),
            _ => {}
        }
    }
    if !host_ok {
        return Err(refused(
            StatusCode::BadCertificateHostNameInvalid,
            format!(
                "the server certificate names {} but not \"{host}\"",
                listed(&carried, "no host")
            ),
        ));
    }
    if !application_uri.is_empty() && !uris.iter().any(|u| u == application_uri) {
        return Err(refused(
            StatusCode::BadCertificateUriInvalid,
            format!(
                "the server calls itself {application_uri} but its certificate carries {}",
                listed(&uris, "no URI")
            ),
        ));
    }
    Ok(())
}

/// `names` joined with commas, or `none` when there are none.
fn listed(names: &[String], none: &str) -> String {
    if names.is_empty() {
        none.to_string()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    const URI: &str = "urn:plant:server";

    /// A self-signed certificate with `sans` in that order, valid from 2020 to 2090.
    fn cert(sans: Vec<SanType>) -> Vec<u8> {
        let mut p = CertificateParams::default();
        p.subject_alt_names = sans;
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2090, 1, 1);
        let key = KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn dns(s: &str) -> SanType {
        SanType::DnsName(s.try_into().unwrap())
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    #[test]
    fn names_count_in_any_order() {
        let ip = SanType::IpAddress("10.1.2.3".parse().unwrap());
        for sans in [
            vec![uri(URI), dns("plc.plant"), ip.clone()],
            vec![dns("plc.plant"), ip.clone(), uri(URI)],
            vec![ip.clone(), uri(URI), dns("PLC.plant")],
        ] {
            let der = cert(sans.clone());
            assert_eq!(check(&der, "plc.plant", URI, now()), Ok(()), "{sans:?}");
            assert_eq!(check(&der, "10.1.2.3", URI, now()), Ok(()), "{sans:?}");
        }
    }

    #[test]
    fn a_host_or_uri_it_does_not_carry_is_refused() {
        let der = cert(vec![dns("plc.plant"), uri(URI)]);
        let e = check(&der, "other.plant", URI, now()).unwrap_err();
        assert_eq!(e.code, StatusCode::BadCertificateHostNameInvalid);
        assert!(e.reason.contains("plc.plant") && e.reason.contains("other.plant"));
        let e = check(&der, "plc.plant", "urn:someone:else", now()).unwrap_err();
        assert_eq!(e.code, StatusCode::BadCertificateUriInvalid);
        assert!(e.reason.contains(URI), "{}", e.reason);
        // The first entry is not skipped: a certificate whose only name is the host is fine.
        let der = cert(vec![dns("plc.plant")]);
        assert_eq!(check(&der, "plc.plant", "", now()), Ok(()));
    }

    #[test]
    fn the_host_comes_from_the_url() {
        for (url, host) in [
            ("opc.tcp://plc.plant:4840/ua", "plc.plant"),
            ("opc.tcp://10.1.2.3:4840", "10.1.2.3"),
            ("opc.tcp://[::1]:4840/x", "::1"),
            ("opc.tcp://plc", "plc"),
        ] {
            assert_eq!(url_host(url), host, "{url}");
        }
    }

    #[test]
    fn only_while_valid() {
        let der = cert(vec![dns("plc.plant"), uri(URI)]);
        for at in [1_500_000_000, 4_000_000_000] {
            let e = check(&der, "plc.plant", URI, at).unwrap_err();
            assert_eq!(e.code, StatusCode::BadCertificateTimeInvalid, "{at}");
        }
        let e = check(b"not a certificate", "plc.plant", URI, now()).unwrap_err();
        assert_eq!(e.code, StatusCode::BadCertificateInvalid);
    }
}
