//! HTTP clients for every outbound HTTP connection of osgate (the remote configuration, the
//! `osgate rpc` command, HTTP connectors): one reqwest `Client` builder with a timeout, a redirect
//! limit and TLS from the same [`TlsConfig`] as MQTT.
//!
//! TLS always goes through a rustls config built by [`super::tls`] (handed to reqwest
//! pre-configured), so `https://` is verified the same way everywhere: the built-in roots, or
//! `ca_file`, a client certificate for mutual TLS, the `server_name` override. `http://` URLs
//! stay plain; a `tls` object only says how to verify `https://`.

use std::time::Duration;

use super::tls::{TlsConfig, TlsError};

/// How to build an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpClientSettings {
    /// Timeout of a whole request (connect, send, receive the body).
    pub timeout: Duration,
    /// Timeout of the connect (TCP and TLS handshake); `None`: only `timeout`.
    pub connect_timeout: Option<Duration>,
    /// Most redirects followed; 0 follows none.
    pub max_redirects: usize,
    /// TLS for `https://` (`None`: the built-in roots).
    pub tls: Option<TlsConfig>,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl HttpClientSettings {
    /// A timeout, at most 5 redirects, the built-in roots, `User-Agent: osgate/VERSION`.
    pub fn new(timeout: Duration) -> Self {
        HttpClientSettings {
            timeout,
            connect_timeout: None,
            max_redirects: 5,
            tls: None,
            user_agent: concat!("osgate/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }

    /// The reqwest builder with everything set (add default headers and the like, then
    /// `build()`); reads the TLS files now.
    pub fn builder(&self) -> Result<reqwest::ClientBuilder, TlsError> {
        let tls = self.tls.clone().unwrap_or_default().client_config()?;
        let mut b = reqwest::Client::builder()
            .timeout(self.timeout)
            .redirect(if self.max_redirects == 0 {
                reqwest::redirect::Policy::none()
            } else {
                reqwest::redirect::Policy::limited(self.max_redirects)
            })
            .user_agent(self.user_agent.clone())
            .tls_backend_preconfigured(tls);
        if let Some(t) = self.connect_timeout {
            b = b.connect_timeout(t);
        }
        Ok(b)
    }

    /// Builds the client; the error names the file or what else is wrong.
    pub fn build(&self) -> Result<reqwest::Client, String> {
        self.builder()
            .map_err(|e| format!("tls: {e}"))?
            .build()
            .map_err(|e| {
                format!(
                    "cannot build the HTTP client: {}",
                    super::cause::error_chain(&e)
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_ca_file_is_named() {
        let mut s = HttpClientSettings::new(Duration::from_secs(1));
        s.tls = Some(TlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsConfig::default()
        });
        let e = s.build().unwrap_err();
        assert!(
            e.contains("/nonexistent/ca.pem") && e.contains("cannot read"),
            "{e}"
        );
        assert!(HttpClientSettings::new(Duration::from_secs(1))
            .build()
            .is_ok());
    }
}
