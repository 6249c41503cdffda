//! Where the configuration in force came from, its age and its last error: what the status
//! topic, `gateway.status` and the web console tell an operator. The remote-first loader of
//! the `osgate` package fills it in; the status registry shares it through a `watch`.

use serde::Serialize;

/// Where the running configuration came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigSource {
    /// Fetched from `remote.url`.
    Remote,
    /// The cached copy of an earlier remote configuration (`remote.cache`).
    Cache,
    /// The local `-c` file.
    #[default]
    Local,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConfigSource::Remote => "remote",
            ConfigSource::Cache => "cache",
            ConfigSource::Local => "local",
        })
    }
}

/// What is known about the configuration in force; shared through a `watch` in
/// [`crate::status::StatusRegistry`] so the status topic and `gateway.status` follow it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConfigInfo {
    /// Which source the running configuration came from.
    pub source: ConfigSource,
    /// When the running configuration was applied (ms since the epoch).
    pub loaded: i64,
    /// When its content was fetched from the remote (ms; for the cache: the cache file's
    /// modification time); `None` for the local file. Its age is `now - fetched`.
    pub fetched: Option<i64>,
    /// Last successful contact with the remote (a 200 or a 304), if any.
    pub checked: Option<i64>,
    /// The last load or refresh error; `None` once the remote answers well again.
    pub last_error: Option<String>,
}

impl ConfigInfo {
    /// A configuration just fetched from the remote and applied at `now` (ms).
    pub fn fresh_remote(now: i64) -> Self {
        ConfigInfo {
            source: ConfigSource::Remote,
            loaded: now,
            fetched: Some(now),
            checked: Some(now),
            last_error: None,
        }
    }

    /// Age of the configuration's content in ms (since it was fetched, or loaded for the local
    /// file).
    pub fn age_ms(&self, now: i64) -> i64 {
        (now - self.fetched.unwrap_or(self.loaded)).max(0)
    }
}
