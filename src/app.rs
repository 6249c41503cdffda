//! The gateway process: the configuration loading order, the [`GatewayService`], the JSON-RPC
//! server and MQTT commands, the remote-config refresher, SIGHUP, and the loop that serves
//! [`ServiceCommand`]s one at a time (so no two reloads overlap). `main` adds SIGINT/SIGTERM
//! through the `shutdown` token; a test runs a whole gateway in-process with [`run`].
//!
//! Under systemd (`Type=notify`, [`crate::notify`]) it sends `READY=1` once the configuration
//! is loaded, sinks and connectors are started and the management API listens;
//! `RELOADING=1`/`READY=1` around every reload, `STOPPING=1` when shutdown begins, and
//! `WATCHDOG=1` from the command loop itself, so the watchdog stops being fed when that loop
//! hangs (not merely when the whole process does).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::remote::{self, RemoteLoader};
use crate::service::{GatewayService, ServiceCommand, ServiceHandle};

/// Runs the gateway until `shutdown` is cancelled (or a `gateway` shutdown command). The
/// configuration comes from the remote, the cache or the file (in that order,
/// [`crate::config::remote`]); the refresher applies remote changes by hot reload; SIGHUP runs the
/// loading order again and hot-reloads the result. Tests run a whole gateway in-process with it.
pub async fn run(config_path: PathBuf, shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Remote → cache → local file (config::remote); SIGHUP runs the same order again.
    let loader = Arc::new(RemoteLoader::new(config_path.clone()));
    let loaded = loader.load().await?;
    let mut svc = GatewayService::start(loaded.config, loaded.info)
        .await
        .context("starting the gateway")?;
    let (handle, mut commands) = ServiceHandle::new();
    // The JSON-RPC server and MQTT commands live as long as the service loop (crate::rpc).
    let management = match crate::rpc::start(&svc, handle.clone()).await {
        Ok(m) => m,
        Err(e) => {
            let _ = svc.shutdown().await;
            return Err(e.context("starting the management API"));
        }
    };
    let refresh_handle = handle.clone();
    let gateway = svc.config().gateway.id.clone();
    let remote_gateway = gateway.clone();
    let refresher_stop = CancellationToken::new();
    let refresher = tokio::spawn(remote::refresh_loop(
        loader.clone(),
        svc.registry().config.clone(),
        move |cfg| {
            let h = refresh_handle.clone();
            let gw = remote_gateway.clone();
            async move {
                let res = h.reload(Some(cfg)).await.map(|_| ());
                audit_reload(&gw, "remote", &res);
                res
            }
        },
        refresher_stop.clone(),
    ));
    let mut hup = signal(SignalKind::hangup())?;
    crate::notify::ready(&running_status(&svc));
    let watchdog = crate::notify::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    if let Some(every) = watchdog {
        tracing::info!(
            ?every,
            "systemd watchdog on: WATCHDOG=1 from the service loop"
        );
    }
    loop {
        let mut by_signal = false;
        let cmd = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                crate::notify::watchdog();
                continue;
            }
            _ = hup.recv() => {
                tracing::info!(path = %config_path.display(), "SIGHUP received: reloading configuration");
                by_signal = true;
                ServiceCommand::Reload { config: None, reply: None }
            }
            Some(cmd) = commands.recv() => cmd,
        };
        match cmd {
            ServiceCommand::Shutdown => break,
            ServiceCommand::Connector {
                name,
                action,
                reply,
            } => {
                let _ = reply.send(svc.connector_action(&name, action).await);
            }
            ServiceCommand::Reload { config, reply } => {
                crate::notify::reloading("reloading the configuration");
                let mut info = None;
                let result = match config {
                    Some(c) => Ok(*c),
                    None => loader
                        .load()
                        .await
                        .map(|l| {
                            info = Some(l.info);
                            l.config
                        })
                        .map_err(|e| e.to_string()),
                };
                let result = match result {
                    Ok(new) => {
                        let result = svc.reload(new).await;
                        match (&result, info) {
                            (Ok(_), Some(i)) => {
                                svc.registry().config.send_replace(i);
                            }
                            // Not applied: let the refresher judge the remote body afresh.
                            (Err(_), Some(_)) => loader.forget().await,
                            _ => {}
                        }
                        result
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reload rejected; the running configuration stays");
                        Err(e)
                    }
                };
                if by_signal {
                    audit_reload(&gateway, "signal", &result);
                }
                crate::notify::ready(&match &result {
                    Ok(_) => running_status(&svc),
                    Err(e) => format!("{}; last reload rejected: {e}", running_status(&svc)),
                });
                if let Some(r) = reply {
                    let _ = r.send(result);
                }
            }
        }
    }
    crate::notify::stopping("stopping: connectors first, then sinks flush");
    refresher_stop.cancel();
    refresher.abort();
    management.stop().await;
    svc.shutdown().await
}

/// The audit event of a reload not made through the RPC (which records its own).
fn audit_reload<T>(gateway: &str, who: &str, result: &Result<T, String>) {
    crate::audit::record(&crate::audit::AuditEvent {
        gateway,
        who,
        method: "gateway.reload",
        result: result.as_ref().map(|_| ()).map_err(String::as_str),
        ..Default::default()
    });
}

/// The `STATUS=` line of a running gateway: what systemctl status shows.
fn running_status(svc: &GatewayService) -> String {
    let cfg = svc.config();
    format!(
        "running: gateway {}, {} connector(s), {} sink(s), config from {}",
        cfg.gateway.id,
        cfg.connectors.iter().filter(|c| c.enabled).count(),
        cfg.sinks.iter().filter(|s| s.common.enabled).count(),
        svc.registry().config.borrow().source
    )
}

/// Runs the gateway until SIGINT or SIGTERM (see [`run`]).
pub async fn run_until_signalled(config_path: PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let signals = tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        stop.cancel();
    });
    let res = run(config_path, shutdown).await;
    signals.abort();
    res
}
