//! The HTTP connector (`"protocol": "http"`), in two modes:
//! - `"mode": "poll"` ([`poll`]): requests a JSON or text API per device (URL, method, body,
//!   headers, basic or bearer auth, timeout, interval) and picks channel values out of the answer
//!   by JSON pointer or regex; devices that name the same request share one answer.
//! - `"mode": "listen"` ([`listen`]): serves `POST /ingest/{device}` with JSON bodies pushed by
//!   devices and webhooks, behind an API key, and answers whether the readings are in the
//!   pipeline (202) or must be sent again (503).
//!
//! Config → [`HttpPollConfig`] or [`HttpListenConfig`] (the `mode` picks the settings types, so each mode reports the fields
//! of the other as unknown); channel values are decoded by the kit's shared document decoding
//! (`device::payload`: [`Pick`], timestamps). Transforms, health, backoff and writes are the
//! kit's (`connectors/device`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value as Json;

use super::device::payload::{check_pointer, JsonPointer, Pick, TimestampConfig, ValueType};
use super::{ConnectorConfig, Parse};
use osgate_core::config::timing::{self, IntervalRule, TimeoutRule, TimingRules};
use osgate_core::config::{ConfigError, ConnectorSpec, Dur, Entry};
use osgate_core::net::{ServerTlsConfig, TlsConfig};
use osgate_core::size::Size;

pub mod listen;
pub mod poll;

/// A parsed HTTP connector in poll mode.
pub type HttpPollConfig = ConnectorSpec<PollSettings, PollDevice, HttpChannel>;
/// A parsed HTTP connector in listen mode.
pub type HttpListenConfig = ConnectorSpec<ListenSettings, ListenDevice, HttpChannel>;

/// `"protocol": "http"` in the protocol registry: `"mode": "poll"` or `"listen"`.
pub const PROTOCOL: crate::Protocol = crate::Protocol {
    name: "http",
    parse,
    tool: None,
};

/// The shared settings poll mode takes: `timeout` (default `5s`, for a whole request: connect,
/// send, receive the answer; devices may override it), `backoff` (`1s`) and `backoff_max`
/// (`30s`), each device's `interval` (`10s`, at least `10ms`). Listen mode takes none.
pub const POLL_TIMING: TimingRules = TimingRules {
    timeout: Some(TimeoutRule {
        default: Some(Dur::from_secs(5)),
        min: Dur::from_millis(1),
    }),
    backoff: Some(timing::BACKOFF),
    interval: Some(IntervalRule {
        default: Dur::from_secs(10),
        min: Dur::from_millis(10),
    }),
};

/// Parses an `"protocol": "http"` entry by its `mode`.
fn parse(p: Parse<'_>, mut entry: Entry<'_>) -> Option<ConnectorConfig> {
    let mode = entry.fields.remove("mode");
    match mode.as_ref().and_then(Json::as_str) {
        Some("poll") => p.with_timing(POLL_TIMING).spec(entry, validate_poll, poll::build),
        Some("listen") => p.spec(entry, validate_listen, listen::build),
        _ => {
            let msg = match mode {
                None => "missing field, expected \"poll\" or \"listen\"".to_string(),
                Some(v) => format!("expected \"poll\" or \"listen\", got {v}"),
            };
            p.errs
                .push(ConfigError::new(format!("{}.mode", p.path), msg));
            None
        }
    }
}

// ---- poll mode ----

/// Poll mode: connector settings, the defaults of every device.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollSettings {
    /// Headers sent with every request (`${VAR}` for secrets); a device's own headers win.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Authentication of every request, unless a device sets its own: `{"bearer": "TOKEN"}` or
    /// `{"basic": {"username": "u", "password": "p"}}`.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// How `https://` servers are verified (`ca_file`, `cert_file`/`key_file` for mutual TLS,
    /// `server_name`, `insecure_skip_verify`); default: the built-in roots.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Largest answer read (default `1MiB`); a longer one fails the poll.
    #[serde(default = "default_max_answer")]
    pub max_body: Size,
}

/// Poll mode: one device, one request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollDevice {
    /// The URL requested (`http://` or `https://`).
    pub url: String,
    /// `GET` (default) or `POST` (with `body`); `PUT` is accepted too.
    #[serde(default)]
    pub method: Method,
    /// Request body (for `POST`).
    #[serde(default)]
    pub body: Option<String>,
    /// `Content-Type` of `body` (default `application/json`).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Headers of this device's request, added to the connector's (`${VAR}` for secrets).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Authentication, instead of the connector's.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Request timeout, instead of the connector's `timeout`.
    #[serde(default)]
    pub timeout: Option<Dur>,
    /// Where the answer carries its own timestamp (`{"pointer": "/ts", "format": "epoch_ms"}`);
    /// without it, readings are stamped when the answer arrives.
    #[serde(default)]
    pub timestamp: Option<TimestampConfig>,
}

/// A channel (both modes): where its value is in the document.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpChannel {
    /// JSON pointer of the value (`/ac/power`, array elements as `/values/2`). In listen mode
    /// the default is `/{channel name}`.
    #[serde(default)]
    pub pointer: Option<String>,
    /// Poll mode, plain-text answers: a regex whose first capture group (or whole match) is
    /// the value (`state=(\\w+)`). Neither `pointer` nor `regex`: the whole answer.
    #[serde(default)]
    pub regex: Option<String>,
    /// How the value is read: `auto` (default: as JSON says; text that reads as a number
    /// becomes one), `number`, `bool` (also `on`/`off`, `1`/`0`) or `text`.
    #[serde(default, rename = "type")]
    pub value_type: ValueType,
    /// Poll mode: makes the channel writable with this request (`device.write`).
    #[serde(default)]
    pub write: Option<Box<WriteTemplate>>,
}

/// The request that writes a channel: `{value}` in `url` is the value as text
/// (percent-encoded), in `body` the value as JSON (`21.5`, `true`, `"text"`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteTemplate {
    /// `POST` (default), `PUT`, `PATCH` or `GET`.
    #[serde(default = "default_write_method")]
    pub method: Method,
    /// The URL (default: the device's).
    #[serde(default)]
    pub url: Option<String>,
    /// The body (default `{value}`: the bare JSON value).
    #[serde(default)]
    pub body: Option<String>,
    /// `Content-Type` of the body (default `application/json`).
    #[serde(default)]
    pub content_type: Option<String>,
    /// Extra headers (the device's headers and auth are sent too).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Smallest value accepted, in engineering units.
    #[serde(default)]
    pub min: Option<f64>,
    /// Largest value accepted, in engineering units.
    #[serde(default)]
    pub max: Option<f64>,
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
pub enum Method {
    /// GET.
    #[default]
    #[serde(rename = "GET", alias = "get")]
    Get,
    /// POST.
    #[serde(rename = "POST", alias = "post")]
    Post,
    /// PUT.
    #[serde(rename = "PUT", alias = "put")]
    Put,
    /// PATCH.
    #[serde(rename = "PATCH", alias = "patch")]
    Patch,
}

impl Method {
    /// As reqwest's.
    pub fn as_reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
        }
    }
}

/// Request authentication.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Bearer TOKEN`.
    Bearer(String),
    /// `Authorization: Basic …` of a user name and password.
    Basic {
        /// The user name.
        username: String,
        /// The password (use `${VAR}`).
        #[serde(default)]
        password: String,
    },
}

// ---- listen mode ----

/// Listen mode: the ingest server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSettings {
    /// Address to serve on, `ip:port` (e.g. `0.0.0.0:8581`).
    pub listen: String,
    /// Accepted API keys (`Authorization: Bearer KEY` or `X-API-Key: KEY`, `${VAR}` for
    /// secrets): a string or `{"name", "key"}` (the name shows in logs). Required unless
    /// `listen` is a loopback address.
    #[serde(default)]
    pub api_keys: Vec<osgate_core::auth::ApiKey>,
    /// Deadlines and the connection cap of the listener (`docs/security.md`).
    #[serde(default)]
    pub limits: osgate_core::net::listen::ListenLimits,
    /// Largest request body (default `1MiB`); larger ones get 413.
    #[serde(default = "default_max_request")]
    pub max_body: Size,
    /// Serve HTTPS: `cert_file`, `key_file`, optional `client_ca_file` (mutual TLS).
    #[serde(default)]
    pub tls: Option<ServerTlsConfig>,
    /// Where the readings' timestamp is in each object (default: `/ts`, any format, and the
    /// receive time when an object has none). Devices may override it.
    #[serde(default)]
    pub timestamp: Option<TimestampConfig>,
    /// Devices not in the config that may be created by their first POST (default 0: unknown
    /// devices get 404). Their channels are every number and bool of the body, named by key
    /// path.
    #[serde(default)]
    pub accept_new_devices: usize,
    /// A device that posted nothing for this long goes offline (default: never).
    #[serde(default)]
    pub stale_after: Option<Dur>,
}

/// Listen mode: a device that posts.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenDevice {
    /// Where the timestamp is in this device's objects, instead of the connector's.
    #[serde(default)]
    pub timestamp: Option<TimestampConfig>,
}

/// Most devices `accept_new_devices` may allow.
pub const MAX_NEW_DEVICES: usize = 10_000;
/// Largest `max_body`.
pub const MAX_BODY_LIMIT: usize = 64 << 20;

fn default_max_answer() -> Size {
    Size(1 << 20)
}
fn default_max_request() -> Size {
    Size(1 << 20)
}
fn default_write_method() -> Method {
    Method::Post
}

// ---- validation ----

/// Checks an `http://` or `https://` URL; `{value}` (write templates) may appear in it.
fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(&url.replace("{value}", "0"))
        .map_err(|e| format!("invalid URL \"{url}\": {e}"))?;
    match u.scheme() {
        "http" | "https" if u.host_str().is_some() => Ok(u),
        "http" | "https" => Err(format!("\"{url}\" has no host")),
        s => Err(format!(
            "\"{url}\": scheme \"{s}\" is not supported, expected http:// or https://"
        )),
    }
}

fn check_headers(headers: &BTreeMap<String, String>, path: &str, errs: &mut Vec<ConfigError>) {
    for (k, v) in headers {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            errs.push(ConfigError::new(
                format!("{path}.headers"),
                format!("\"{k}\" is not a valid header name"),
            ));
        } else if http::HeaderValue::from_str(v).is_err() {
            errs.push(ConfigError::new(
                format!("{path}.headers.{k}"),
                "not a valid header value (control characters or non-ASCII text)",
            ));
        }
    }
}

fn check_content_type(ct: &Option<String>, path: &str, errs: &mut Vec<ConfigError>) {
    if let Some(ct) = ct {
        if http::HeaderValue::from_str(ct).is_err() {
            errs.push(ConfigError::new(
                format!("{path}.content_type"),
                "not a valid header value",
            ));
        }
    }
}

fn check_timestamp(t: &Option<TimestampConfig>, path: &str, errs: &mut Vec<ConfigError>) {
    if let Some(t) = t {
        if let Err((field, msg)) = t.compile() {
            errs.push(ConfigError::new(format!("{path}.timestamp.{field}"), msg));
        }
    }
}

fn at_least(d: Duration, min: Duration, field: String, errs: &mut Vec<ConfigError>) {
    if d < min {
        errs.push(ConfigError::new(
            field,
            format!("must be at least {}", humantime::format_duration(min)),
        ));
    }
}

/// The JSON pointer of a channel named `name`: `/name` (`~` and `/` escaped).
pub fn pointer_of(name: &str) -> String {
    format!("/{}", name.replace('~', "~0").replace('/', "~1"))
}

impl HttpChannel {
    /// The compiled pick (poll mode: neither pointer nor regex = the whole answer).
    pub fn pick(&self) -> Result<Pick, (&'static str, String)> {
        Pick::new(
            self.pointer.as_deref(),
            self.regex.as_deref(),
            self.value_type,
        )
    }

    /// The compiled pick in listen mode (default pointer `/{name}`).
    pub fn pick_in_object(&self, name: &str) -> Result<Pick, (&'static str, String)> {
        let p = self.pointer.clone().unwrap_or_else(|| pointer_of(name));
        check_pointer(&p).map_err(|e| ("pointer", e))?;
        Ok(Pick::Pointer(JsonPointer::new(&p), self.value_type))
    }
}

/// Semantic checks of a poll-mode connector; every problem with its path.
pub fn validate_poll(spec: &HttpPollConfig, path: &str, errs: &mut Vec<ConfigError>) {
    let s = &spec.settings;
    check_headers(&s.headers, path, errs);
    if let Some(t) = &s.tls {
        t.validate(&format!("{path}.tls"), errs);
    }
    if s.max_body.0 == 0 || s.max_body.bytes() > MAX_BODY_LIMIT {
        errs.push(ConfigError::new(
            format!("{path}.max_body"),
            "must be between 1B and 64MiB",
        ));
    }
    for (di, d) in spec.devices.iter().enumerate() {
        let dpath = format!("{path}.devices[{di}]");
        let ds = &d.settings;
        if let Err(e) = check_url(&ds.url) {
            errs.push(ConfigError::new(format!("{dpath}.url"), e));
        } else if ds.url.contains("{value}") {
            errs.push(ConfigError::new(
                format!("{dpath}.url"),
                "{value} belongs in a channel's write template",
            ));
        }
        check_headers(&ds.headers, &dpath, errs);
        check_content_type(&ds.content_type, &dpath, errs);
        check_timestamp(&ds.timestamp, &dpath, errs);
        if let Some(t) = ds.timeout {
            at_least(
                t.0,
                Duration::from_millis(1),
                format!("{dpath}.timeout"),
                errs,
            );
        }
        if ds.body.is_some() && ds.method == Method::Get {
            errs.push(ConfigError::new(
                format!("{dpath}.body"),
                "a GET request has no body: set \"method\": \"POST\"",
            ));
        }
        for (ci, c) in d.channels.iter().enumerate() {
            let cpath = format!("{dpath}.channels[{ci}]");
            if let Err((field, msg)) = c.settings.pick() {
                errs.push(ConfigError::new(format!("{cpath}.{field}"), msg));
            }
            let Some(w) = &c.settings.write else { continue };
            let wpath = format!("{cpath}.write");
            if let Some(u) = &w.url {
                if let Err(e) = check_url(u) {
                    errs.push(ConfigError::new(format!("{wpath}.url"), e));
                }
            }
            check_headers(&w.headers, &wpath, errs);
            check_content_type(&w.content_type, &wpath, errs);
            if w.method == Method::Get && w.body.is_some() {
                errs.push(ConfigError::new(
                    format!("{wpath}.body"),
                    "a GET request has no body: put {value} in the url",
                ));
            }
        }
    }
}

/// Semantic checks of a listen-mode connector; every problem with its path.
pub fn validate_listen(spec: &HttpListenConfig, path: &str, errs: &mut Vec<ConfigError>) {
    let s = &spec.settings;
    match s.listen.parse::<SocketAddr>() {
        Err(e) => errs.push(ConfigError::new(
            format!("{path}.listen"),
            format!("expected \"ip:port\" (e.g. \"0.0.0.0:8581\"), got \"{}\": {e}", s.listen),
        )),
        Ok(a) if !a.ip().is_loopback() && s.api_keys.is_empty() => errs.push(ConfigError::new(
            format!("{path}.api_keys"),
            format!(
                "required when listening on {a}, which is not a loopback address: add a key (\"${{INGEST_KEY}}\")"
            ),
        )),
        Ok(_) => {}
    }
    for (at, msg) in osgate_core::auth::check_keys(&s.api_keys, 1) {
        errs.push(ConfigError::new(format!("{path}.api_keys{at}"), msg));
    }
    for (field, msg) in s.limits.check() {
        errs.push(ConfigError::new(format!("{path}.limits.{field}"), msg));
    }
    if s.max_body.0 == 0 || s.max_body.bytes() > MAX_BODY_LIMIT {
        errs.push(ConfigError::new(
            format!("{path}.max_body"),
            "must be between 1B and 64MiB",
        ));
    }
    if let Some(t) = &s.tls {
        t.validate(&format!("{path}.tls"), errs);
    }
    check_timestamp(&s.timestamp, path, errs);
    if s.accept_new_devices > MAX_NEW_DEVICES {
        errs.push(ConfigError::new(
            format!("{path}.accept_new_devices"),
            format!("at most {MAX_NEW_DEVICES}"),
        ));
    }
    if let Some(d) = s.stale_after {
        at_least(
            d.0,
            Duration::from_millis(1),
            format!("{path}.stale_after"),
            errs,
        );
    }
    for (di, d) in spec.devices.iter().enumerate() {
        let dpath = format!("{path}.devices[{di}]");
        check_timestamp(&d.settings.timestamp, &dpath, errs);
        for (ci, c) in d.channels.iter().enumerate() {
            let cpath = format!("{dpath}.channels[{ci}]");
            let ch = &c.settings;
            if ch.regex.is_some() {
                errs.push(ConfigError::new(
                    format!("{cpath}.regex"),
                    "listen mode takes JSON objects: use pointer",
                ));
            }
            if ch.write.is_some() {
                errs.push(ConfigError::new(
                    format!("{cpath}.write"),
                    "a device that posts its values cannot be written through this connector",
                ));
            }
            if let Err((field, msg)) = ch.pick_in_object(&c.name) {
                errs.push(ConfigError::new(format!("{cpath}.{field}"), msg));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(cfg: Json) -> Vec<String> {
        let mut errs = Vec::new();
        let raw = serde_json::value::to_raw_value(&cfg).unwrap();
        let _ = ConnectorConfig::from_raw(0, &raw, &|_| None, &mut errs);
        errs.iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect()
    }

    #[test]
    fn sizes() {
        use osgate_core::size::parse_size;
        assert_eq!(parse_size("256KiB").unwrap(), 256 << 10);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("2kB").unwrap(), 2000);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert!(parse_size("KiB").unwrap_err().contains("invalid size"));
        // A size the shared parser takes, but more than a body may be.
        let e = errors(json!({"name": "w", "protocol": "http", "mode": "listen",
            "listen": "127.0.0.1:8581", "max_body": "1GiB", "devices": []}));
        assert!(e.iter().any(|e| e.contains("max_body")), "{e:?}");
    }

    #[test]
    fn the_issue_example_parses() {
        let poll = json!({ "name": "inverters", "protocol": "http", "mode": "poll", "timeout": "5s",
          "devices": [ { "name": "inv-1", "url": "http://192.168.1.50/api/v1/status", "interval": "10s",
            "headers": { "Authorization": "Bearer x" }, "timestamp": { "pointer": "/ts", "format": "epoch_ms" },
            "channels": [ { "name": "power", "pointer": "/ac/power", "unit": "W" },
                          { "name": "state", "regex": "state=(\\w+)" } ] } ] });
        assert!(errors(poll).is_empty());
        let listen = json!({ "name": "webhooks", "protocol": "http", "mode": "listen", "listen": "0.0.0.0:8581",
          "api_keys": [ "k" ], "max_body": "256KiB",
          "devices": [ { "name": "weather", "channels": [ { "name": "temperature", "pointer": "/temperature", "unit": "°C" } ] } ] });
        assert!(errors(listen).is_empty());
    }

    #[test]
    fn problems_are_named() {
        let e = errors(json!({"name": "h", "protocol": "http", "devices": []}));
        assert!(e[0].contains("\"h\".mode: missing field"), "{e:?}");
        let e = errors(json!({"name": "h", "protocol": "http", "mode": "listen",
            "listen": "0.0.0.0:1", "devices": [{"name": "d", "url": "http://x"}]}));
        assert!(
            e.iter()
                .any(|e| e.contains("devices[0].url") && e.contains("unknown field")),
            "{e:?}"
        );
        let e = errors(json!({"name": "h", "protocol": "http", "mode": "listen",
            "listen": "0.0.0.0:1", "devices": [{"name": "d",
            "channels": [{"name": "c", "regex": "a"}]}]}));
        assert!(e.iter().any(|e| e.contains(".api_keys: required")), "{e:?}");
        assert!(
            e.iter()
                .any(|e| e.contains("channels[0].regex: listen mode")),
            "{e:?}"
        );
        let e = errors(json!({"name": "h", "protocol": "http", "mode": "poll",
            "headers": {"bad header": "x"},
            "devices": [{"name": "d", "url": "ftp://x/", "interval": "1ms", "body": "{}",
              "timestamp": {"pointer": "ts"},
              "channels": [{"name": "c", "pointer": "a"},
                           {"name": "w", "pointer": "/w", "write": {"url": "nope"}}]}]}));
        for want in [
            "\"h\".headers: \"bad header\"",
            "devices[0].url: \"ftp://x/\": scheme",
            "devices[0].interval: must be at least 10ms",
            "devices[0].body: a GET request has no body",
            "devices[0].timestamp.pointer",
            "channels[0].pointer: \"a\" is not a JSON pointer",
            "channels[1].write.url: invalid URL",
        ] {
            assert!(e.iter().any(|e| e.contains(want)), "{want} not in {e:?}");
        }
        let e = errors(json!({"name": "h", "protocol": "http", "mode": "listen",
            "listen": "127.0.0.1:1", "devices": []}));
        assert!(e.is_empty(), "loopback without keys is allowed: {e:?}");
    }
}
