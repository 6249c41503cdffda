//! MQTT client options for every MQTT connection of osgate (the MQTT sinks, the command/RPC
//! client, MQTT connectors): broker URL, session, credentials, last will, TLS. Build a
//! [`MqttClientSettings`], check it at load time with [`MqttClientSettings::validate`], and turn
//! it into `rumqttc::MqttOptions` with [`MqttClientSettings::options`] before each connect.
//! Configs declare the fields a user writes with [`broker_config!`](crate::broker_config).
//!
//! TLS follows the URL: `mqtts://` always uses TLS (the built-in roots unless a `tls` object
//! says otherwise); `mqtt://` with a `tls` object is a configuration error, so a connection
//! meant to be encrypted is never made in plain text. No other scheme is accepted (`tcp://`
//! and `ssl://` of other tools are refused with the accepted ones named).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{LastWill, MqttOptions, TlsConfiguration, Transport};

use crate::config::ConfigError;
use crate::net::tls::{TlsConfig, TlsError};

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

/// The default `keep_alive` of [`broker_config!`](crate::broker_config): 30 s.
#[doc(hidden)]
pub fn default_keep_alive() -> crate::config::Dur {
    crate::config::Dur::from_secs(30)
}

/// Declares the config struct of something that connects to an MQTT broker, with the broker
/// fields every such config shares, declared here once (the same JSON keys, docs, types and
/// error paths everywhere): `url`, `client_id`, `username`, `password`, `password_file`, `tls`,
/// `keep_alive`, `clean_session` (where the owner lets the user choose) and `backoff_max`,
/// followed by the owner's own fields. `client_settings(client_id)` turns them into
/// [`MqttClientSettings`] (a config without `clean_session` gets a clean session).
///
/// The fields are plain fields of the struct rather than a `#[serde(flatten)]`ed struct:
/// flatten would lose the error paths (`sinks[0] "up".keep_alive`) and the list of accepted keys
/// in "unknown field" errors. The defaults that differ between owners are functions named at
/// the call site:
///
/// ```ignore
/// osgate_core::broker_config! {
///     /// Settings of the MQTT sink.
///     #[derive(Debug, Clone, PartialEq, Deserialize)]
///     #[serde(deny_unknown_fields)]
///     pub struct MqttSinkConfig {
///         broker(client_id = "default_client_id", backoff_max = "default_backoff_max", clean_session);
///         /// 1 (default) or 0.
///         #[serde(default = "default_qos")]
///         pub qos: u8,
///     }
/// }
/// ```
#[macro_export]
macro_rules! broker_config {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            broker(client_id = $client_id:tt, backoff_max = $backoff_max:tt $(, $clean:ident)?);
            $($(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            /// Broker URL: `mqtt://host[:port]` (default port 1883) or, with TLS,
            /// `mqtts://host[:port]` (default port 8883); no other scheme. IPv6 as `[::1]:1883`.
            pub url: ::std::string::String,
            /// Client id; `{gateway}` and `{sink}` (a sink's) or `{connector}` (a connector's) are
            /// replaced. Stable, so the broker keeps the session.
            #[serde(default = $client_id)]
            pub client_id: ::std::string::String,
            /// User name for the broker.
            #[serde(default)]
            pub username: ::std::option::Option<::std::string::String>,
            /// Password for the broker (use `${VAR}`).
            #[serde(default)]
            pub password: ::std::option::Option<::std::string::String>,
            /// File holding the password (trailing newline ignored), instead of `password`; read
            /// at every connect.
            #[serde(default)]
            pub password_file: ::std::option::Option<::std::path::PathBuf>,
            /// TLS settings (`ca_file`, `cert_file`, `key_file`, `server_name`,
            /// `insecure_skip_verify`); needs an `mqtts://` URL. `mqtts://` without it verifies
            /// the broker against the built-in roots.
            #[serde(default)]
            pub tls: ::std::option::Option<$crate::net::TlsConfig>,
            /// MQTT keep-alive (default `30s`; at least `1s`, or `0s` to disable).
            #[serde(default = "osgate_core::net::mqtt::settings::default_keep_alive")]
            pub keep_alive: $crate::config::Dur,
            $(
                /// Start a clean session on every connect (default false: the broker keeps the
                /// session, and what QoS 1 subscriptions bring while osgate is away).
                #[serde(default)]
                pub $clean: bool,
            )?
            /// Longest wait between reconnect attempts (the first wait doubles up to it).
            #[serde(default = $backoff_max)]
            pub backoff_max: $crate::config::Dur,
            $($(#[$fmeta])* $fvis $field : $ty),*
        }

        impl $name {
            /// The broker connection: URL, session, credentials, TLS, with `client_id` final
            /// (placeholders replaced). Check it at load time with
            /// [`validate`]($crate::net::mqtt::MqttClientSettings::validate).
            pub fn client_settings(
                &self,
                client_id: ::std::string::String,
            ) -> $crate::net::mqtt::MqttClientSettings {
                let mut s = $crate::net::mqtt::MqttClientSettings::new(self.url.clone(), client_id);
                s.keep_alive = self.keep_alive.0;
                $(s.clean_session = self.$clean;)?
                s.username = self.username.clone();
                s.password = self.password.clone();
                s.password_file = self.password_file.clone();
                s.tls = self.tls.clone();
                s
            }
        }
    };
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
    crate::broker_config! {
        /// A config with the broker fields.
        #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Owned {
            broker(client_id = "owned_client_id", backoff_max = "owned_backoff_max", clean_session);
            /// Its own field.
            #[serde(default)]
            own: u8,
        }
    }
    crate::broker_config! {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Clean {
            broker(client_id = "owned_client_id", backoff_max = "owned_backoff_max");
        }
    }
    fn owned_client_id() -> String {
        "id-{sink}".into()
    }
    fn owned_backoff_max() -> crate::config::Dur {
        crate::config::Dur::from_secs(7)
    }

    #[test]
    fn broker_fields_keep_their_defaults_and_error_paths() {
        use crate::config::deserialize_at;
        let v = serde_json::json!({"url": "mqtt://h", "own": 3});
        let o: Owned = deserialize_at(v, "s", &[]).unwrap();
        assert_eq!(o.client_id, "id-{sink}");
        assert_eq!(o.backoff_max.0, Duration::from_secs(7));
        assert_eq!(o.keep_alive.0, Duration::from_secs(30));
        assert!(!o.clean_session && o.own == 3);
        let s = o.client_settings("c".into());
        assert_eq!((s.url.as_str(), s.client_id.as_str()), ("mqtt://h", "c"));
        assert!(!s.clean_session);
        let c: Clean = deserialize_at(serde_json::json!({"url": "mqtt://h"}), "s", &[]).unwrap();
        assert!(c.client_settings("c".into()).clean_session);
        let e = deserialize_at::<Owned>(
            serde_json::json!({"url": "mqtt://h", "keep_alive": "soon"}),
            "sinks[0] \"up\"",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.path, "sinks[0] \"up\".keep_alive");
        let e = deserialize_at::<Owned>(
            serde_json::json!({"url": "mqtt://h", "tls": {"ca": "x"}}),
            "s",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.path, "s.tls.ca");
        let e = deserialize_at::<Clean>(
            serde_json::json!({"url": "mqtt://h", "clean_session": true}),
            "s",
            &["name"],
        )
        .unwrap_err();
        assert_eq!(e.path, "s.clean_session");
        assert!(e.message.contains("name, url, client_id"), "{}", e.message);
        assert!(
            e.message.ends_with("keep_alive, backoff_max"),
            "{}",
            e.message
        );
    }
}
