//! The gateway process: the configuration loading order, the [`GatewayService`], the JSON-RPC
//! server and MQTT commands, the remote-config refresher, and the loop that serves
//! [`ServiceCommand`]s and reload requests one at a time (so no two reloads overlap).
//!
//! [`run`] takes what it needs from its caller, as a server library does: a configuration
//! [`Source`] (the `-c` file, or a configuration in memory), a shutdown future, a reload
//! trigger and a [`Notifier`] ([`Setup`]), and reports what it bound ([`Bound`]), so a caller
//! that configured port 0 learns the real ports. `main` owns the process around it: the
//! signal handlers (SIGINT/SIGTERM end the shutdown future, SIGHUP feeds the reload trigger),
//! the notifier from `$NOTIFY_SOCKET`, the exit codes. Tests run whole gateways in-process
//! with it (`tests/common/inproc.rs`), each on its own runtime.
//!
//! Under systemd (`Type=notify`, [`crate::notify`]) it sends `READY=1` once the configuration
//! is loaded, sinks and connectors are started and the management API listens;
//! `RELOADING=1`/`READY=1` around every reload, `STOPPING=1` when shutdown begins, and
//! `WATCHDOG=1` from the command loop itself, so the watchdog stops being fed when that loop
//! hangs (not merely when the whole process does).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::remote::{self, ConfigInfo, Loaded, RemoteLoader, Vars};
use crate::config::{GatewayConfig, LoadError};
use crate::net::listen::Listeners;
use crate::notify::Notifier;
use crate::service::{GatewayService, ServiceCommand, ServiceHandle};

/// Where [`run`] gets its configuration.
pub struct Source(Kind);

enum Kind {
    /// The `-c` file, by the loading order remote → cache → file.
    File { path: PathBuf, vars: Option<Vars> },
    /// A configuration given in memory.
    Memory(Box<GatewayConfig>),
}

impl Source {
    /// The configuration file `path` by the loading order remote → cache → file
    /// ([`crate::config::remote`]); every reload runs that order again, the refresher applies
    /// remote changes, and `config.apply` saves to it.
    pub fn file(path: impl Into<PathBuf>) -> Source {
        Source(Kind::File {
            path: path.into(),
            vars: None,
        })
    }

    /// A configuration given in memory (already validated): no remote, a reload applies it
    /// again (nothing changes), and `config.apply` cannot save (there is no file).
    pub fn memory(config: GatewayConfig) -> Source {
        Source(Kind::Memory(Box::new(config)))
    }

    /// `${VAR}` in the file takes its value from `vars` instead of the process environment
    /// (a gateway run in-process must not change the environment of the tests around it).
    /// No effect on a configuration in memory.
    pub fn with_vars(self, vars: Vars) -> Source {
        match self.0 {
            Kind::File { path, .. } => Source(Kind::File {
                path,
                vars: Some(vars),
            }),
            memory => Source(memory),
        }
    }

    /// The file, if the configuration comes from one.
    fn path(&self) -> Option<&PathBuf> {
        match &self.0 {
            Kind::File { path, .. } => Some(path),
            Kind::Memory(_) => None,
        }
    }
}

/// What [`run`] needs from its caller besides the shutdown future.
pub struct Setup {
    /// Where the configuration comes from.
    pub source: Source,
    /// Reload requests: each message runs the loading order again and hot-reloads the result
    /// (`main` sends one per SIGHUP; the audit trail records them as `signal`'s). A closed
    /// channel means no more requests.
    pub reloads: mpsc::Receiver<()>,
    /// The service manager to tell about start, reloads and stop (`main`:
    /// [`Notifier::from_env`]; in-process: [`Notifier::none`]).
    pub notify: Notifier,
    /// Told what the gateway bound once it runs (before `READY=1`).
    pub bound: Option<oneshot::Sender<Bound>>,
}

/// What a running gateway bound: with port 0 in the configuration, the ports the system
/// picked.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The JSON-RPC server, `GET /metrics` and the web console (one port); `None` without an
    /// `rpc` section.
    pub rpc: Option<SocketAddr>,
    /// The embedded broker, if one runs.
    pub broker: Option<SocketAddr>,
    /// Every listener by name, live: `rpc`, and each HTTP ingest by its connector's name once
    /// that connector has bound (again after it restarts).
    pub listeners: Listeners,
}

/// Chooses the configuration at start and on every reload.
enum Loader {
    File(Arc<RemoteLoader>),
    Memory(Box<GatewayConfig>),
}

impl Loader {
    async fn load(&self) -> Result<Loaded, LoadError> {
        match self {
            Loader::File(l) => l.load().await,
            Loader::Memory(c) => {
                tracing::info!(
                    source = "local",
                    "configuration given in memory (no file, no remote)"
                );
                Ok(Loaded {
                    config: (**c).clone(),
                    info: ConfigInfo {
                        loaded: crate::reading::Timestamp::now().0,
                        ..ConfigInfo::default()
                    },
                })
            }
        }
    }
}

/// Runs the gateway until `shutdown` completes (or a `gateway` shutdown command). The
/// configuration comes from `setup.source`; for a file, the remote, the cache or the file (in
/// that order, [`crate::config::remote`]), and the refresher applies remote changes by hot
/// reload; every reload request runs the loading order again and hot-reloads the result.
pub async fn run(setup: Setup, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let Setup {
        source,
        mut reloads,
        notify,
        bound,
    } = setup;
    crate::install_crypto_provider();
    let config_path = source.path().cloned();
    let loader = Arc::new(match source.0 {
        Kind::File { path, vars } => Loader::File(Arc::new(match vars {
            Some(vars) => RemoteLoader::with_vars(path, vars),
            None => RemoteLoader::new(path),
        })),
        Kind::Memory(c) => Loader::Memory(c),
    });
    let loaded = loader.load().await?;
    let mut svc = GatewayService::start(loaded.config, loaded.info)
        .await
        .context("starting the gateway")?;
    let (handle, mut commands) = ServiceHandle::new();
    // The JSON-RPC server and MQTT commands live as long as the service loop (crate::rpc).
    let management = match crate::rpc::start(&svc, handle.clone(), config_path.clone()).await {
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
    let refresher = match &*loader {
        Loader::File(l) => {
            let audit = svc.control().audit().clone();
            Some(tokio::spawn(remote::refresh_loop(
                l.clone(),
                svc.registry().config.clone(),
                move |cfg| {
                    let h = refresh_handle.clone();
                    let gw = remote_gateway.clone();
                    let audit = audit.clone();
                    async move {
                        let res = h.reload(Some(cfg)).await.map(|_| ());
                        audit_reload(&audit, &gw, "remote", &res);
                        res
                    }
                },
                refresher_stop.clone(),
            )))
        }
        Loader::Memory(_) => None,
    };
    if let Some(tx) = bound {
        let _ = tx.send(Bound {
            rpc: management.addr,
            broker: svc.broker(),
            listeners: svc.registry().listeners.clone(),
        });
    }
    notify.ready(&running_status(&svc));
    let watchdog = notify.watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    if let Some(every) = watchdog {
        tracing::info!(
            ?every,
            "systemd watchdog on: WATCHDOG=1 from the service loop"
        );
    }
    tokio::pin!(shutdown);
    let mut reloads_open = true;
    loop {
        let mut requested = false;
        let cmd = tokio::select! {
            _ = &mut shutdown => break,
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                notify.watchdog();
                continue;
            }
            r = reloads.recv(), if reloads_open => match r {
                Some(()) => {
                    requested = true;
                    ServiceCommand::Reload { config: None, reply: None }
                }
                None => {
                    reloads_open = false;
                    continue;
                }
            },
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
                notify.reloading("reloading the configuration");
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
                        match (&result, info, &*loader) {
                            (Ok(_), Some(i), _) => {
                                svc.registry().config.send_replace(i);
                            }
                            // Not applied: let the refresher judge the remote body afresh.
                            (Err(_), Some(_), Loader::File(l)) => l.forget().await,
                            _ => {}
                        }
                        result
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reload rejected; the running configuration stays");
                        Err(e)
                    }
                };
                if requested {
                    audit_reload(svc.control().audit(), &gateway, "signal", &result);
                }
                notify.ready(&match &result {
                    Ok(_) => running_status(&svc),
                    Err(e) => format!("{}; last reload rejected: {e}", running_status(&svc)),
                });
                if let Some(r) = reply {
                    let _ = r.send(result);
                }
            }
        }
    }
    notify.stopping("stopping: connectors first, then sinks flush");
    refresher_stop.cancel();
    if let Some(r) = refresher {
        r.abort();
    }
    management.stop().await;
    svc.shutdown().await
}

/// The audit event of a reload not made through the RPC (which records its own).
fn audit_reload<T>(
    trail: &crate::audit::Trail,
    gateway: &str,
    who: &str,
    result: &Result<T, String>,
) {
    trail.record(&crate::audit::AuditEvent {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_configuration_in_memory_runs_on_port_0_and_takes_reload_requests() {
        let config = crate::config::from_value(
            serde_json::json!({
                "gateway": {"id": "mem"},
                "rpc": {"listen": "127.0.0.1:0"},
                "connectors": [{"name": "sim", "protocol": "simulator", "devices": [
                    {"name": "d", "interval": "50ms", "channels": [
                        {"name": "c", "signal": "counter"}]}]}]
            }),
            &|_| None,
        )
        .expect("valid");
        let (reload, reloads) = mpsc::channel(1);
        let (bound_tx, bound_rx) = oneshot::channel();
        let stop = CancellationToken::new();
        let setup = Setup {
            source: Source::memory(config),
            reloads,
            notify: Notifier::none(),
            bound: Some(bound_tx),
        };
        let gateway = tokio::spawn(run(setup, stop.clone().cancelled_owned()));
        let bound = tokio::time::timeout(Duration::from_secs(20), bound_rx)
            .await
            .expect("started in time")
            .expect("bound reported");
        let addr = bound.rpc.expect("an RPC address");
        assert_ne!(addr.port(), 0, "the bound port, not the configured 0");
        assert_eq!(bound.listeners.addr("rpc"), Some(addr));
        assert_eq!(bound.broker, None);
        tokio::net::TcpStream::connect(addr)
            .await
            .expect("the RPC server listens there");
        // The loop takes a request before it can take the next one (the channel holds one).
        reload.send(()).await.expect("running");
        reload.send(()).await.expect("running");
        reload.send(()).await.expect("running");
        // No more requests: the loop goes on without them until it is stopped.
        drop(reload);
        tokio::net::TcpStream::connect(addr)
            .await
            .expect("still serving");
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), gateway)
            .await
            .expect("stopped in time")
            .expect("no panic")
            .expect("a clean stop");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the RPC server stopped with the gateway"
        );
    }
}
