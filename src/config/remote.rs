//! Remote-first configuration: fetch from the fleet server, keep the last good copy on disk, fall
//! back to the local file, and refresh by hot reload.
//!
//! Loading order ([`RemoteLoader::load`], at start and on SIGHUP / `gateway.reload`):
//! 1. the `remote` section of the local `-c` file names the URL; without it the local file is
//!    the configuration (stand-alone);
//! 2. GET `remote.url` (headers with `${VAR}` secrets, `remote.tls` for `https://` through
//!    [`crate::net::http`], `remote.timeout` for the whole exchange,
//!    at most [`MAX_REDIRECTS`] redirects, a body of at most [`MAX_BODY`] bytes, read while it
//!    streams). A 2xx body that is JSON and a valid configuration is written to `remote.cache`
//!    atomically ([`write_cache`]) exactly as received (before `${VAR}` interpolation, so secrets
//!    from the environment never reach the disk) and used;
//! 3. on any failure, the cached copy (validated the same way);
//! 4. then the local file. If none is usable, [`LoadError::NoUsableSource`] lists why each
//!    source was rejected (`osgate` exits 2).
//!
//! The local file's `remote` section always wins: the `remote` section of a remote (or cached)
//! configuration is replaced by the local one before validation, so a fleet server can neither
//! switch the pulling off nor point the gateway elsewhere by accident; a differing section is
//! logged as ignored. `OSGATE_SECTION__FIELD` environment overrides apply to the local file only.
//!
//! The refresher ([`refresh_loop`]) re-polls every `remote.refresh` with `If-None-Match` (a 304
//! costs nothing), backs off after errors (1 s, doubling, capped at `refresh`), applies a changed
//! valid configuration through a callback (the service's hot reload) and writes it to the cache
//! once applied; an invalid one is rejected and the running configuration stays. What is live,
//! since when, and the last error are kept in a [`ConfigInfo`] (published in `status/{gateway}`
//! and `gateway.status`).

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{watch, Mutex, Notify};
use tokio_util::sync::CancellationToken;

use super::{
    from_document, from_value, read_file, Document, DocumentError, GatewayConfig, LoadError,
    RemoteSection,
};
use crate::backoff::Backoff;
use crate::net::describe_error;
use crate::reading::Timestamp;
pub use osgate_core::config::{ConfigInfo, ConfigSource};

/// Largest configuration body accepted from the remote (4 MiB); larger answers are rejected
/// while streaming, without buffering them.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// Most redirects followed for one fetch; a longer chain (or a loop) is an error.
pub const MAX_REDIRECTS: usize = 5;

/// First retry delay after a failed refresh; it doubles per consecutive failure up to `refresh`.
pub const RETRY_MIN: Duration = Duration::from_secs(1);

/// One answer of the remote.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// 304: the configuration behind our ETag has not changed.
    NotModified,
    /// A 2xx body (at most [`MAX_BODY`] bytes) and its ETag.
    Body {
        /// The body as received.
        bytes: Vec<u8>,
        /// The `ETag` header, if any.
        etag: Option<String>,
    },
}

/// An HTTP client for one `remote` section (secrets already interpolated).
#[derive(Debug, Clone)]
pub struct RemoteClient {
    section: RemoteSection,
    client: reqwest::Client,
}

impl RemoteClient {
    /// Builds the client: timeout, redirect limit, default headers. The rustls provider must be
    /// installed ([`crate::install_crypto_provider`]).
    pub fn new(section: &RemoteSection) -> Result<Self, String> {
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &section.headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| format!("remote.headers: invalid header name \"{k}\": {e}"))?;
            let value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|e| format!("remote.headers.{k}: invalid header value: {e}"))?;
            headers.insert(name, value);
        }
        let mut settings = crate::net::http::HttpClientSettings::new(section.timeout.0);
        settings.connect_timeout = Some(section.timeout.0);
        settings.max_redirects = MAX_REDIRECTS;
        settings.tls = section.tls.clone();
        let client = settings
            .builder()
            .map_err(|e| format!("remote.tls: {e}"))?
            .default_headers(headers)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", describe_error(&e)))?;
        Ok(RemoteClient {
            section: section.clone(),
            client,
        })
    }

    /// GETs the configuration, with `If-None-Match: etag` when given.
    pub async fn fetch(&self, etag: Option<&str>) -> Result<Fetched, String> {
        let mut req = self.client.get(&self.section.url);
        if let Some(t) = etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, t);
        }
        let timeout = self.section.timeout;
        let describe = |e: reqwest::Error| {
            if e.is_timeout() {
                format!("timed out after {timeout}")
            } else if e.is_redirect() {
                format!(
                    "too many redirects (more than {MAX_REDIRECTS}, or a loop): {}",
                    describe_error(&e)
                )
            } else {
                describe_error(&e)
            }
        };
        let mut resp = req.send().await.map_err(describe)?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_MODIFIED && etag.is_some() {
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            return Err(format!("HTTP status {status}"));
        }
        if let Some(n) = resp.content_length() {
            if n > MAX_BODY as u64 {
                return Err(format!(
                    "body of {n} bytes exceeds the limit of {MAX_BODY} bytes"
                ));
            }
        }
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(describe)? {
            if bytes.len() + chunk.len() > MAX_BODY {
                return Err(format!(
                    "body exceeds the limit of {MAX_BODY} bytes (stopped reading)"
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched::Body { bytes, etag })
    }
}

/// Parses a remote or cached body into a configuration, with the local file's `remote` section
/// (`local_remote`, as written) in force. Returns the configuration and whether the body had a
/// different `remote` section of its own (which is then ignored).
pub fn parse_body(
    bytes: &[u8],
    local_remote: &Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(GatewayConfig, bool), String> {
    let mut doc = Document::parse(bytes).map_err(|e| match e {
        DocumentError::Syntax(e) => format!("not JSON: {e}"),
        DocumentError::NotAnObject => "not a JSON object".to_string(),
    })?;
    let own = doc.remove("remote");
    let differs = own.as_ref().is_some_and(|o| o != local_remote);
    doc.insert("remote", local_remote.clone());
    let cfg = from_document(doc, env).map_err(|e| format!("invalid configuration: {e}"))?;
    Ok((cfg, differs))
}

/// The temp file used by [`write_cache`]: same directory (so the rename is atomic), hidden.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cache".into());
    path.with_file_name(format!(".{name}.tmp"))
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename, fsync
/// of the directory. The previous cache stays untouched until the new one is complete, so a crash
/// at any point leaves either the old or the new file, never a partial one.
pub fn write_cache(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = write_temp(path, bytes)?;
    commit_temp(&tmp, path)
}

/// Step 1 of [`write_cache`]: the complete, synced temp file (a leftover one is overwritten).
fn write_temp(path: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = temp_path(path);
    // The body may hold secrets: owner only (0600), like every file osgate writes.
    super::secrets::create_private(&tmp, bytes)?;
    Ok(tmp)
}

/// Step 2 of [`write_cache`]: the rename, then the directory entry made durable.
fn commit_temp(tmp: &Path, path: &Path) -> std::io::Result<()> {
    std::fs::rename(tmp, path)?;
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads the cache: its bytes and its modification time (ms).
pub fn read_cache(path: &Path) -> Result<(Vec<u8>, Option<i64>), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64);
    Ok((bytes, mtime))
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The delay before the next refresh after `failures` consecutive failures.
pub fn next_delay(refresh: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return refresh;
    }
    Backoff::new(RETRY_MIN, refresh)
        .after(failures)
        .max(Duration::from_millis(10))
}

/// A configuration chosen by [`RemoteLoader::load`].
#[derive(Debug)]
pub struct Loaded {
    /// The configuration to run.
    pub config: GatewayConfig,
    /// Where it came from.
    pub info: ConfigInfo,
}

#[derive(Debug, Default)]
struct State {
    /// The local file's `remote` section as written (`Null` when absent).
    local_remote: Value,
    /// The client for the section in force.
    client: Option<RemoteClient>,
    /// How often to poll.
    refresh: Duration,
    /// ETag of the last body received (applied or rejected).
    etag: Option<String>,
    /// Hash of the remote/cached body in force; `None` when the local file is in force.
    applied: Option<u64>,
    /// The error of the body behind `etag` when it was rejected (so a 304 keeps reporting it).
    rejected: Option<String>,
    /// Consecutive failed polls.
    failures: u32,
}

/// Where `${VAR}` in a configuration finds its value: the process environment, or a table of
/// the caller's (a gateway run in-process by a test).
pub type Vars = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The loader: the local file path, the remote client and what the refresher remembers.
/// Shared between the service loop (start, SIGHUP) and the refresher task.
pub struct RemoteLoader {
    local: PathBuf,
    env: Vars,
    state: Mutex<State>,
    wake: Notify,
}

impl std::fmt::Debug for RemoteLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteLoader")
            .field("local", &self.local)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// What one refresh poll found.
#[derive(Debug)]
pub enum Poll {
    /// No `remote` section: nothing to poll.
    Disabled,
    /// 304, or the same body as the one in force.
    Unchanged,
    /// 304 for a body that was rejected before: still rejected.
    StillRejected(String),
    /// A changed, valid configuration to apply, then [`RemoteLoader::commit`].
    Changed {
        /// The new configuration.
        config: Box<GatewayConfig>,
        /// The body as received (for the cache).
        body: Vec<u8>,
    },
    /// The fetch failed (network, HTTP status, size…).
    Failed(String),
    /// The remote served an invalid configuration.
    Invalid(String),
}

impl RemoteLoader {
    /// A loader for the local configuration file `local` (the `-c` file).
    pub fn new(local: PathBuf) -> Self {
        Self::with_vars(local, Arc::new(|k: &str| std::env::var(k).ok()))
    }

    /// Like [`RemoteLoader::new`], with `${VAR}` looked up in `env` instead of the process
    /// environment.
    pub fn with_vars(local: PathBuf, env: Vars) -> Self {
        RemoteLoader {
            local,
            env,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        }
    }

    /// Chooses the configuration by the loading order (module docs) and logs each step.
    pub async fn load(&self) -> Result<Loaded, LoadError> {
        let env = &*self.env;
        let doc = read_file(&self.local)?;
        let local_remote = doc.get("remote").cloned().unwrap_or(Value::Null);
        let local = from_document(doc, env);
        // The section is parsed on its own so that a local file with a broken connector still
        // yields the URL of the remote that may repair it.
        let section = match &local {
            Ok(c) => Ok(c.remote.clone()),
            Err(_) if local_remote.is_null() => Ok(None),
            Err(_) => section_alone(&local_remote, env),
        };
        let mut st = self.state.lock().await;
        st.local_remote = local_remote.clone();
        let section = match section {
            Ok(s) => s,
            Err(e) => {
                return Err(LoadError::Invalid {
                    path: self.local.clone(),
                    errors: e,
                })
            }
        };
        let Some(section) = section else {
            st.client = None;
            st.applied = None;
            drop(st);
            self.wake.notify_one();
            let config = local.map_err(|errors| LoadError::Invalid {
                path: self.local.clone(),
                errors,
            })?;
            tracing::info!(source = "local", path = %self.local.display(), "configuration loaded from the local file (no remote section)");
            return Ok(Loaded {
                config,
                info: ConfigInfo {
                    source: ConfigSource::Local,
                    loaded: Timestamp::now().0,
                    ..ConfigInfo::default()
                },
            });
        };
        let now = Timestamp::now().0;
        let mut reasons = Vec::new();
        st.refresh = section.refresh.0;
        st.etag = None;
        st.rejected = None;
        let client = match RemoteClient::new(&section) {
            Ok(c) => Some(c),
            Err(e) => {
                reasons.push(format!("remote {}: {e}", section.url));
                None
            }
        };
        st.client = client.clone();
        if let Some(client) = client {
            let fetched = client.fetch(None).await;
            let result = fetched.and_then(|f| match f {
                Fetched::NotModified => Err("unexpected 304 without If-None-Match".into()),
                Fetched::Body { bytes, etag } => {
                    parse_body(&bytes, &local_remote, env).map(|(c, d)| (c, d, bytes, etag))
                }
            });
            match result {
                Ok((config, differs, bytes, etag)) => {
                    if differs {
                        tracing::warn!(url = %section.url, "the remote configuration has a remote section of its own; it is ignored (the local file's remote section always wins)");
                    }
                    if let Err(e) = write_cache(&section.cache, &bytes) {
                        tracing::warn!(cache = %section.cache.display(), error = %e, "cannot write the configuration cache; the previous cache (if any) stays");
                    }
                    st.etag = etag;
                    st.applied = Some(hash(&bytes));
                    st.failures = 0;
                    drop(st);
                    self.wake.notify_one();
                    tracing::info!(source = "remote", url = %section.url, cache = %section.cache.display(), "configuration loaded from the remote (and cached)");
                    return Ok(Loaded {
                        config,
                        info: ConfigInfo::fresh_remote(now),
                    });
                }
                Err(e) => {
                    tracing::warn!(source = "remote", url = %section.url, error = %e, "remote configuration rejected; trying the cache");
                    reasons.push(format!("remote {}: {e}", section.url));
                }
            }
        }
        st.failures = 1;
        let remote_error = reasons.last().cloned();
        let cached = read_cache(&section.cache).and_then(|(bytes, mtime)| {
            parse_body(&bytes, &local_remote, env).map(|(c, _)| (c, hash(&bytes), mtime))
        });
        match cached {
            Ok((config, h, mtime)) => {
                st.applied = Some(h);
                drop(st);
                self.wake.notify_one();
                let age_s = mtime.map(|m| (now - m).max(0) / 1000);
                tracing::warn!(source = "cache", cache = %section.cache.display(), age_s, "configuration loaded from the cache (remote unavailable)");
                return Ok(Loaded {
                    config,
                    info: ConfigInfo {
                        source: ConfigSource::Cache,
                        loaded: now,
                        fetched: mtime,
                        checked: None,
                        last_error: remote_error,
                    },
                });
            }
            Err(e) => {
                tracing::warn!(source = "cache", cache = %section.cache.display(), error = %e, "cached configuration rejected; trying the local file");
                reasons.push(format!("cache {}: {e}", section.cache.display()));
            }
        }
        st.applied = None;
        drop(st);
        self.wake.notify_one();
        match local {
            Ok(config) => {
                tracing::warn!(source = "local", path = %self.local.display(), "configuration loaded from the local file (remote and cache unavailable)");
                Ok(Loaded {
                    config,
                    info: ConfigInfo {
                        source: ConfigSource::Local,
                        loaded: now,
                        fetched: None,
                        checked: None,
                        last_error: remote_error,
                    },
                })
            }
            Err(e) => {
                reasons.push(format!("local file {}: {e}", self.local.display()));
                Err(LoadError::NoUsableSource { reasons })
            }
        }
    }

    /// Polls the remote once (with `If-None-Match`) and classifies the answer.
    pub async fn poll(&self) -> Poll {
        let mut st = self.state.lock().await;
        let Some(client) = st.client.clone() else {
            return Poll::Disabled;
        };
        let etag = st.etag.clone();
        // Keep the lock: a SIGHUP reload waits for this poll instead of racing it.
        match client.fetch(etag.as_deref()).await {
            Ok(Fetched::NotModified) => {
                st.failures = 0;
                match &st.rejected {
                    Some(e) => Poll::StillRejected(e.clone()),
                    None => Poll::Unchanged,
                }
            }
            Ok(Fetched::Body { bytes, etag }) => {
                st.failures = 0;
                st.etag = etag;
                let h = hash(&bytes);
                if st.applied == Some(h) {
                    st.rejected = None;
                    return Poll::Unchanged;
                }
                match parse_body(&bytes, &st.local_remote, &*self.env) {
                    Ok((config, differs)) => {
                        if differs {
                            tracing::warn!("the remote configuration has a remote section of its own; it is ignored (the local file's remote section always wins)");
                        }
                        st.rejected = None;
                        Poll::Changed {
                            config: Box::new(config),
                            body: bytes,
                        }
                    }
                    Err(e) => {
                        st.rejected = Some(e.clone());
                        Poll::Invalid(e)
                    }
                }
            }
            Err(e) => {
                st.failures += 1;
                Poll::Failed(e)
            }
        }
    }

    /// Records that `body` was applied: it is cached and becomes the body in force.
    pub async fn commit(&self, body: &[u8]) {
        let mut st = self.state.lock().await;
        st.applied = Some(hash(body));
        if let Some(c) = &st.client {
            if let Err(e) = write_cache(&c.section.cache, body) {
                tracing::warn!(cache = %c.section.cache.display(), error = %e, "cannot write the configuration cache; the previous cache (if any) stays");
            }
        }
    }

    /// Records that applying the body failed: it is treated as rejected until it changes.
    pub async fn reject(&self, error: &str) {
        self.state.lock().await.rejected = Some(error.to_string());
    }

    /// Forgets the body in force and its ETag (after a reload of it was rolled back), so the
    /// next poll fetches and judges it again.
    pub async fn forget(&self) {
        let mut st = self.state.lock().await;
        st.applied = None;
        st.etag = None;
    }

    /// The delay until the next poll; `None` when there is no remote.
    async fn delay(&self) -> Option<Duration> {
        let st = self.state.lock().await;
        st.client
            .as_ref()
            .map(|_| next_delay(st.refresh, st.failures))
    }
}

/// Parses a `remote` section on its own (interpolated, validated).
fn section_alone(
    raw: &Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<RemoteSection>, super::ConfigErrors> {
    let probe = serde_json::json!({"gateway": {"id": "probe"}, "remote": raw});
    from_value(probe, env).map(|c| c.remote)
}

/// Re-polls the remote every `refresh` (backing off after errors) until `shutdown`, applies a
/// changed valid configuration with `apply` (the service's hot reload) and keeps `info` current.
pub async fn refresh_loop<F, Fut>(
    loader: Arc<RemoteLoader>,
    info: watch::Sender<ConfigInfo>,
    apply: F,
    shutdown: CancellationToken,
) where
    F: Fn(GatewayConfig) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut last_failure: Option<String> = None;
    loop {
        let delay = loader.delay().await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            // A reload changed the schedule or the section: compute the delay again.
            _ = loader.wake.notified() => continue,
            _ = tokio::time::sleep(delay.unwrap_or(Duration::from_secs(86_400))), if delay.is_some() => {}
        }
        let poll = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = loader.poll() => p,
        };
        let now = Timestamp::now().0;
        match poll {
            Poll::Disabled => {}
            Poll::Unchanged => {
                if last_failure.take().is_some() {
                    tracing::info!("remote configuration reachable again; nothing changed");
                }
                info.send_modify(|i| {
                    i.checked = Some(now);
                    i.last_error = None;
                    if i.source == ConfigSource::Cache {
                        // The remote confirmed the cached body: it is the remote's again.
                        i.source = ConfigSource::Remote;
                        i.fetched = Some(now);
                    }
                });
            }
            Poll::StillRejected(e) => {
                last_failure = None;
                info.send_if_modified(|i| {
                    i.checked = Some(now);
                    let changed = i.last_error.as_deref() != Some(e.as_str());
                    i.last_error = Some(e.clone());
                    changed
                });
            }
            Poll::Changed { config, body } => {
                last_failure = None;
                tracing::info!("remote configuration changed; reloading");
                match apply(*config).await {
                    Ok(()) => {
                        loader.commit(&body).await;
                        tracing::info!(
                            source = "remote",
                            "configuration refreshed from the remote and cached"
                        );
                        info.send_replace(ConfigInfo::fresh_remote(now));
                    }
                    Err(e) => {
                        let e = format!("reload failed: {e}");
                        tracing::error!(error = %e, "the refreshed configuration could not be applied; the running configuration stays");
                        loader.reject(&e).await;
                        info.send_modify(|i| i.last_error = Some(e));
                    }
                }
            }
            Poll::Invalid(e) => {
                last_failure = None;
                tracing::error!(error = %e, "remote served an invalid configuration; rejected, the running configuration stays");
                info.send_modify(|i| {
                    i.checked = Some(now);
                    i.last_error = Some(format!("remote: {e}"));
                });
            }
            Poll::Failed(e) => {
                let retry_in = loader.delay().await;
                if last_failure.as_deref() != Some(e.as_str()) {
                    tracing::warn!(error = %e, ?retry_in, "configuration refresh failed; the running configuration stays");
                } else {
                    tracing::debug!(error = %e, ?retry_in, "configuration refresh still failing");
                }
                info.send_if_modified(|i| {
                    let msg = format!("remote: {e}");
                    let changed = i.last_error.as_deref() != Some(msg.as_str());
                    i.last_error = Some(msg);
                    changed
                });
                last_failure = Some(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn backoff_doubles_up_to_refresh() {
        let r = Duration::from_secs(60);
        assert_eq!(next_delay(r, 0), r);
        assert_eq!(next_delay(r, 1), Duration::from_secs(1));
        assert_eq!(next_delay(r, 2), Duration::from_secs(2));
        assert_eq!(next_delay(r, 4), Duration::from_secs(8));
        assert_eq!(next_delay(r, 7), r);
        assert_eq!(next_delay(r, 1000), r);
        // A short refresh caps the backoff too.
        assert_eq!(
            next_delay(Duration::from_millis(300), 3),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn the_local_remote_section_wins() {
        let local = json!({"url": "http://127.0.0.1:1/a", "refresh": "1m"});
        let body = json!({"gateway": {"id": "gw"}, "remote": {"url": "http://elsewhere/b"}});
        let (cfg, differs) =
            parse_body(&serde_json::to_vec(&body).unwrap(), &local, &no_env).unwrap();
        assert!(differs);
        assert_eq!(cfg.remote.unwrap().url, "http://127.0.0.1:1/a");
        // No remote section in the body: the local one is still in force (polling continues).
        let body = json!({"gateway": {"id": "gw"}});
        let (cfg, differs) =
            parse_body(&serde_json::to_vec(&body).unwrap(), &local, &no_env).unwrap();
        assert!(!differs);
        assert!(cfg.remote.is_some());
    }

    #[test]
    fn bad_bodies_are_named() {
        let local = Value::Null;
        assert!(parse_body(b"<html>", &local, &no_env)
            .unwrap_err()
            .starts_with("not JSON"));
        assert!(parse_body(b"[1]", &local, &no_env)
            .unwrap_err()
            .contains("not a JSON object"));
        let e = parse_body(br#"{"gateway":{"id":"a/b"}}"#, &local, &no_env).unwrap_err();
        assert!(
            e.starts_with("invalid configuration") && e.contains("gateway.id"),
            "{e}"
        );
    }

    #[test]
    fn a_crash_before_the_rename_keeps_the_old_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cache.json");
        write_cache(&path, br#"{"v":1}"#).unwrap();
        // Crash after a partial temp file: the rename never happened.
        std::fs::write(temp_path(&path), br#"{"v":"#).unwrap();
        let (bytes, _) = read_cache(&path).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&bytes).unwrap(),
            json!({"v": 1})
        );
        // Crash after the complete temp file, before the rename: still the old one.
        let tmp = write_temp(&path, br#"{"v":2}"#).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), br#"{"v":1}"#);
        commit_temp(&tmp, &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), br#"{"v":2}"#);
        // The next write replaces a leftover temp file.
        std::fs::write(temp_path(&path), b"garbage").unwrap();
        write_cache(&path, br#"{"v":3}"#).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), br#"{"v":3}"#);
        assert!(!temp_path(&path).exists());
    }

    #[test]
    fn an_unwritable_cache_fails_without_touching_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        // The parent is a regular file: nothing can be created below it (even as root).
        assert!(write_cache(&blocker.join("cache.json"), b"{}").is_err());
        assert_eq!(std::fs::read(&blocker).unwrap(), b"x");
    }

    #[test]
    fn age_is_from_the_fetch() {
        let i = ConfigInfo {
            loaded: 5_000,
            fetched: Some(1_000),
            ..ConfigInfo::default()
        };
        assert_eq!(i.age_ms(11_000), 10_000);
        let l = ConfigInfo {
            loaded: 5_000,
            ..ConfigInfo::default()
        };
        assert_eq!(l.age_ms(6_000), 1_000);
    }
}
