//! `osgate health`: is the gateway up and able to deliver? For container HEALTHCHECKs and
//! scripts. Calls `gateway.status` with a short timeout and exits 0 when the gateway answers
//! and no enabled sink has failed, else 1 with a one-line reason on stderr.
//!
//! "Failed" is the sink health `disconnected` of `gateway.status`: the transport is down *and*
//! the last connect failed or the connection dropped (the broker refuses, TLS fails, the network
//! is gone). A sink still connecting for the first time is not a failure, and neither are
//! devices that do not answer: a field device switched off is not the gateway's fault and
//! restarting the gateway would not bring it back.
//!
//! Where the gateway is: `--url`, else `$OSGATE_RPC_URL`, else `rpc.listen` of the
//! configuration given with `-c` (a wildcard address becomes loopback), else
//! `http://127.0.0.1:8580`. The key: `--api-key`, else `$OSGATE_API_KEY`, else the first of that
//! configuration's `rpc.api_keys`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use crate::net::http::HttpClientSettings;

/// Arguments of `osgate health`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthCommand {
    /// The gateway's JSON-RPC URL [default: $OSGATE_RPC_URL, else from -c, else
    /// http://127.0.0.1:8580].
    #[arg(long)]
    pub url: Option<String>,
    /// API key [default: $OSGATE_API_KEY, else the first rpc.api_keys of -c].
    #[arg(long)]
    pub api_key: Option<String>,
    /// The gateway's configuration file, to find its RPC address and key.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// TLS of an `https://` RPC listener (`rpc.tls`).
    #[command(flatten)]
    pub tls: super::client::ClientTlsArgs,
}

/// The address a client on this host reaches a listener on `listen` at.
fn local_url(listen: SocketAddr, tls: bool) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}/", SocketAddr::new(ip, listen.port()))
}

/// Where to call and with which key.
fn target(cmd: &HealthCommand) -> Result<(String, Option<String>), String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut url = cmd.url.clone().or_else(|| env("OSGATE_RPC_URL"));
    let mut key = cmd.api_key.clone().or_else(|| env("OSGATE_API_KEY"));
    if url.is_none() || key.is_none() {
        if let Some(path) = &cmd.config {
            let cfg = crate::config::load_file(path).map_err(|e| e.to_string())?;
            let rpc = cfg.rpc.as_ref().ok_or_else(|| {
                format!(
                    "{}: no rpc section, so no management API to ask; give --url",
                    path.display()
                )
            })?;
            url = url.or_else(|| Some(local_url(rpc.listen, rpc.tls.is_some())));
            key = key.or_else(|| rpc.api_keys.first().map(|k| k.key.clone()));
        }
    }
    Ok((url.unwrap_or_else(|| "http://127.0.0.1:8580/".into()), key))
}

/// Why a `gateway.status` answer is not healthy, if it is not.
pub fn verdict(status: &Value) -> Result<String, String> {
    let sinks = status["sinks"].as_array().cloned().unwrap_or_default();
    let failed: Vec<String> = sinks
        .iter()
        .filter(|s| s["enabled"] == true && s["health"] == "disconnected")
        .map(|s| {
            format!(
                "sink \"{}\" disconnected: {}",
                s["name"].as_str().unwrap_or("?"),
                s["last_error"].as_str().unwrap_or("no connection")
            )
        })
        .collect();
    if !failed.is_empty() {
        return Err(failed.join("; "));
    }
    let enabled = sinks.iter().filter(|s| s["enabled"] == true).count();
    let connected = sinks.iter().filter(|s| s["connected"] == true).count();
    Ok(format!(
        "healthy: gateway {} {} (commit {}), up {} s, {connected}/{enabled} sink(s) connected",
        status["gateway"].as_str().unwrap_or("?"),
        status["version"].as_str().unwrap_or("?"),
        status["commit"].as_str().unwrap_or("?"),
        status["uptime_s"]
    ))
}

/// Runs `osgate health`.
pub fn main(cmd: HealthCommand) -> ExitCode {
    let unhealthy = |why: &str| {
        eprintln!("unhealthy: {why}");
        ExitCode::from(1)
    };
    let (url, key) = match target(&cmd) {
        Ok(t) => t,
        Err(e) => return unhealthy(&e),
    };
    let rt = match crate::runtime(false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let mut settings = HttpClientSettings::new(cmd.timeout);
    settings.tls = Some(cmd.tls.tls());
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "gateway.status"});
    let answer = rt.block_on(async {
        tokio::time::timeout(
            cmd.timeout,
            super::client::call(&settings, &url, key.as_deref(), &body),
        )
        .await
        .unwrap_or_else(|_| Err(format!("{url}: no answer within {:?}", cmd.timeout)))
    });
    match answer.and_then(|status| verdict(&status)) {
        Ok(line) => {
            crate::outln!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => unhealthy(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_sink_is_unhealthy_a_connecting_one_is_not() {
        let st = |health: &str, connected: bool| {
            json!({"gateway": "gw", "version": "0.1.0", "commit": "abc", "uptime_s": 5,
                "sinks": [{"name": "local", "enabled": true, "health": health,
                           "connected": connected, "last_error": "connection refused"},
                          {"name": "off", "enabled": false, "health": "stopped", "connected": false}]})
        };
        assert_eq!(
            verdict(&st("ok", true)).unwrap(),
            "healthy: gateway gw 0.1.0 (commit abc), up 5 s, 1/1 sink(s) connected"
        );
        assert!(verdict(&st("ok", false)).is_ok());
        assert!(verdict(&st("backlog", true)).is_ok());
        assert_eq!(
            verdict(&st("disconnected", false)).unwrap_err(),
            "sink \"local\" disconnected: connection refused"
        );
    }

    #[test]
    fn wildcard_listeners_are_reached_on_loopback() {
        assert_eq!(
            local_url("0.0.0.0:8580".parse().unwrap(), false),
            "http://127.0.0.1:8580/"
        );
        assert_eq!(
            local_url("[::]:1".parse().unwrap(), true),
            "https://[::1]:1/"
        );
        assert_eq!(
            local_url("10.1.2.3:9".parse().unwrap(), false),
            "http://10.1.2.3:9/"
        );
    }
}
