//! MQTT client options for every MQTT connection of osgate (the MQTT sink, the command/RPC
//! client, MQTT connectors): broker URL, session, credentials, last will, TLS. Build a
//! [`MqttClientSettings`], check it at load time with [`MqttClientSettings::validate`], and turn
//! it into `rumqttc::MqttOptions` with [`MqttClientSettings::options`] before each connect.
//!
//! TLS follows the URL: `mqtts://` always uses TLS (the built-in roots unless a `tls` object
//! says otherwise); `mqtt://` with a `tls` object is a configuration error, so a connection
//! meant to be encrypted is never made in plain text. No other scheme is accepted (`tcp://`
//! and `ssl://` of other tools are refused with the accepted ones named).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, TlsConfiguration, Transport};

use super::tls::{TlsConfig, TlsError};
use crate::config::ConfigError;

/// Default port of `mqtt://`.
pub const MQTT_PORT: u16 = 1883;
/// Default port of `mqtts://`.
pub const MQTTS_PORT: u16 = 8883;

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (default 1883, or 8883 with TLS).
    pub port: u16,
    /// `mqtts://`.
    pub tls: bool,
}

/// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (IPv6 as `[::1]:1883`). The error
/// quotes the URL and names the accepted schemes.
pub fn parse_url(url: &str) -> Result<BrokerUrl, String> {
    const EXPECTED: &str =
        "expected mqtt://host[:port], or mqtts://host[:port] for TLS (the only schemes accepted)";
    let (rest, tls) = if let Some(r) = url.strip_prefix("mqtt://") {
        (r, false)
    } else if let Some(r) = url.strip_prefix("mqtts://") {
        (r, true)
    } else {
        return Err(format!("\"{url}\": {EXPECTED}"));
    };
    let rest = rest.trim_end_matches('/');
    let default_port = if tls { MQTTS_PORT } else { MQTT_PORT };
    let (host, port) = match rest.rsplit_once(':') {
        // `[::1]:1883` or `host:1883`, but not a bare `[::1]` or `::1`.
        Some((h, p)) if (h.starts_with('[') && h.ends_with(']')) || !h.contains(':') => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("\"{url}\": invalid port \"{p}\""))?;
            (h, port)
        }
        _ => (rest, default_port),
    };
    if host.starts_with('[') != host.ends_with(']') {
        return Err(format!("\"{url}\": unbalanced brackets around the host"));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains('/') || host.contains('@') {
        return Err(format!("\"{url}\": {EXPECTED}"));
    }
    Ok(BrokerUrl {
        host: host.to_string(),
        port,
        tls,
    })
}

/// Why [`MqttClientSettings::options`] cannot build the options.
#[derive(Debug, thiserror::Error)]
pub enum MqttConfigError {
    /// The URL is not usable.
    #[error("url {0}")]
    Url(String),
    /// A `tls` object with a plain-text URL.
    #[error("a tls object needs an mqtts:// URL; \"{0}\" would connect in plain text")]
    TlsWithPlainUrl(String),
    /// The password file cannot be read.
    #[error("password_file {}: cannot read: {source}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS configuration cannot be built.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
}

/// Everything an MQTT connection needs; the same for every MQTT client of osgate.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttClientSettings {
    /// Broker URL (see [`parse_url`]).
    pub url: String,
    /// Client id, final (placeholders already replaced).
    pub client_id: String,
    /// Keep-alive (zero disables it).
    pub keep_alive: Duration,
    /// Clean session (true) or a persistent one the broker keeps (false).
    pub clean_session: bool,
    /// User name.
    pub username: Option<String>,
    /// Password (`${VAR}` already replaced at config load).
    pub password: Option<String>,
    /// File whose content (trailing newline trimmed) is the password; read at each build.
    pub password_file: Option<PathBuf>,
    /// Message the broker publishes when we vanish.
    pub last_will: Option<LastWill>,
    /// Largest packet in and out, in bytes (rumqttc's default when `None`).
    pub max_packet_size: Option<usize>,
    /// QoS 1/2 messages in flight (rumqttc's default when `None`).
    pub inflight: Option<u16>,
    /// TLS settings; `None` with an `mqtts://` URL means the built-in roots.
    pub tls: Option<TlsConfig>,
}

impl MqttClientSettings {
    /// Settings for `url` with client id `client_id`: keep-alive 30 s, clean session, nothing
    /// else.
    pub fn new(url: impl Into<String>, client_id: impl Into<String>) -> Self {
        MqttClientSettings {
            url: url.into(),
            client_id: client_id.into(),
            keep_alive: Duration::from_secs(30),
            clean_session: true,
            username: None,
            password: None,
            password_file: None,
            last_will: None,
            max_packet_size: None,
            inflight: None,
            tls: None,
        }
    }

    /// Load-time checks of what the settings name (URL, TLS files, password file, the
    /// combination of `tls` and the URL's scheme) and of values rumqttc would panic on
    /// (keep-alive, client id); problems go to `errs` under `{path}.field`.
    pub fn validate(&self, path: &str, errs: &mut Vec<ConfigError>) {
        if !self.keep_alive.is_zero() && self.keep_alive < Duration::from_secs(1) {
            errs.push(ConfigError::new(
                format!("{path}.keep_alive"),
                "must be at least 1s (or 0s to disable)",
            ));
        }
        if self.client_id.is_empty() {
            errs.push(ConfigError::new(
                format!("{path}.client_id"),
                "must not be empty",
            ));
        }
        match parse_url(&self.url) {
            Err(e) => errs.push(ConfigError::new(format!("{path}.url"), e)),
            Ok(u) if !u.tls && self.tls.is_some() => errs.push(ConfigError::new(
                format!("{path}.tls"),
                MqttConfigError::TlsWithPlainUrl(self.url.clone()).to_string(),
            )),
            Ok(_) => {}
        }
        if let Some(t) = &self.tls {
            t.validate(&format!("{path}.tls"), errs);
        }
        if let Some(p) = &self.password_file {
            if self.password.is_some() {
                errs.push(ConfigError::new(
                    format!("{path}.password_file"),
                    "set either password or password_file, not both",
                ));
            }
            if self.username.is_none() {
                errs.push(ConfigError::new(
                    format!("{path}.password_file"),
                    "needs a username",
                ));
            }
            if let Err(e) = std::fs::metadata(p) {
                errs.push(ConfigError::new(
                    format!("{path}.password_file"),
                    format!("{}: cannot read: {e}", p.display()),
                ));
            }
        }
    }

    /// The password: `password`, else the content of `password_file` without its trailing
    /// newline.
    pub fn resolve_password(&self) -> Result<Option<String>, MqttConfigError> {
        if let Some(p) = &self.password {
            return Ok(Some(p.clone()));
        }
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        let text =
            std::fs::read_to_string(path).map_err(|source| MqttConfigError::PasswordFile {
                path: path.clone(),
                source,
            })?;
        Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
    }

    /// Builds the rumqttc options: reads the password file and the TLS files now. TLS comes
    /// from the URL's scheme only; see the module docs.
    pub fn options(&self) -> Result<MqttOptions, MqttConfigError> {
        let url = parse_url(&self.url).map_err(MqttConfigError::Url)?;
        if !url.tls && self.tls.is_some() {
            return Err(MqttConfigError::TlsWithPlainUrl(self.url.clone()));
        }
        let mut o = MqttOptions::new(self.client_id.clone(), url.host, url.port);
        o.set_keep_alive(self.keep_alive);
        o.set_clean_session(self.clean_session);
        if let Some(n) = self.inflight {
            o.set_inflight(n);
        }
        if let Some(n) = self.max_packet_size {
            o.set_max_packet_size(n, n);
        }
        if let Some(u) = &self.username {
            o.set_credentials(u.clone(), self.resolve_password()?.unwrap_or_default());
        }
        if let Some(w) = &self.last_will {
            o.set_last_will(w.clone());
        }
        if url.tls {
            let cfg = self.tls.clone().unwrap_or_default().client_config()?;
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(cfg),
            )));
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(url: &str) -> (String, u16, bool) {
        let u = parse_url(url).unwrap();
        (u.host, u.port, u.tls)
    }

    #[test]
    fn urls() {
        assert_eq!(
            hp("mqtt://127.0.0.1:1884"),
            ("127.0.0.1".into(), 1884, false)
        );
        assert_eq!(hp("mqtt://broker"), ("broker".into(), 1883, false));
        assert_eq!(hp("mqtt://broker/"), ("broker".into(), 1883, false));
        assert_eq!(hp("mqtt://[::1]:1885"), ("::1".into(), 1885, false));
        assert_eq!(hp("mqtt://[::1]"), ("::1".into(), 1883, false));
        assert_eq!(hp("mqtts://broker"), ("broker".into(), 8883, true));
        assert_eq!(
            hp("mqtts://10.0.0.1:18883"),
            ("10.0.0.1".into(), 18883, true)
        );
        for other in ["tcp://h:1883", "ssl://h:8883", "ws://h", "h:1883"] {
            let e = parse_url(other).unwrap_err();
            assert!(e.contains("mqtt://") && e.contains("mqtts://"), "{e}");
        }
        assert_eq!(hp("mqtts://[fe80::1]:8884"), ("fe80::1".into(), 8884, true));
        let e = parse_url("http://x").unwrap_err();
        assert!(e.contains("\"http://x\"") && e.contains("mqtts://"), "{e}");
        assert!(parse_url("mqtt://x:99999")
            .unwrap_err()
            .contains("invalid port"));
        assert!(parse_url("mqtt://x:0")
            .unwrap_err()
            .contains("invalid port"));
        assert!(parse_url("mqtt://").is_err());
        assert!(parse_url("mqtt://[::1:1883").is_err());
        assert!(parse_url("mqtt://u:p@host").is_err());
    }

    #[test]
    fn tls_follows_the_scheme() {
        let mut s = MqttClientSettings::new("mqtt://127.0.0.1:1883", "c");
        s.tls = Some(TlsConfig::default());
        let e = s.options().unwrap_err().to_string();
        assert!(e.contains("plain text"), "{e}");
        let mut errs = Vec::new();
        s.validate("sinks[0]", &mut errs);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "sinks[0].tls");
        // mqtts:// without a tls object: TLS with the built-in roots.
        let s = MqttClientSettings::new("mqtts://127.0.0.1", "c");
        let o = s.options().unwrap();
        assert!(matches!(o.transport(), Transport::Tls(_)));
        assert_eq!(o.broker_address(), ("127.0.0.1".to_string(), 8883));
        let o = MqttClientSettings::new("mqtt://h", "c").options().unwrap();
        assert!(matches!(o.transport(), Transport::Tcp));
    }

    #[test]
    fn url_errors_name_the_field() {
        let s = MqttClientSettings::new("mqtt://h:x", "c");
        let mut errs = Vec::new();
        s.validate("sinks[1] \"up\"", &mut errs);
        assert_eq!(errs[0].path, "sinks[1] \"up\".url");
        assert!(errs[0].message.contains("invalid port \"x\""));
    }

    #[test]
    fn password_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let mut s = MqttClientSettings::new("mqtt://h", "c");
        s.username = Some("u".into());
        s.password_file = Some(f.clone());
        assert_eq!(s.resolve_password().unwrap().as_deref(), Some("s3cret"));
        let mut errs = Vec::new();
        s.validate("p", &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        s.password_file = Some(dir.path().join("missing"));
        let e = s.options().unwrap_err().to_string();
        assert!(e.contains("password_file") && e.contains("missing"), "{e}");
        s.validate("p", &mut errs);
        assert_eq!(errs[0].path, "p.password_file");
    }
}
