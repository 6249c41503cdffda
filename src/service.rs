//! GatewayService: load → validate → build → supervise → reload → stop.
//!
//! [`GatewayService::start`] starts the embedded broker (if configured), one task per sink (each
//! with its bounded queue), and one supervised task per connector (each with its own child
//! [`CancellationToken`], so one can be stopped or restarted alone). [`GatewayService::reload`]
//! applies a new, already validated configuration by restarting only the connectors and sinks
//! whose configuration changed. [`GatewayService::shutdown`] stops connectors first, closes the
//! sink queues, lets sinks flush (wait for PUBACKs) up to `gateway.shutdown_timeout`, and names
//! any task still running. The process around it (signals, the RPC server, the config
//! refresher, the command loop) is [`crate::app`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{self, GatewayConfig};
use crate::connectors::{self, ConnectorConfig, ConnectorContext, Running};
use crate::control::ControlRegistry;
use crate::pipeline::{sink_queue, ReadingSender, SinkInput};
use crate::reading::Timestamp;
use crate::sinks::{self, SinkConfig, SinkContext};
use crate::status::StatusRegistry;

struct RunningConnector {
    config: ConnectorConfig,
    token: CancellationToken,
    task: JoinHandle<()>,
}

struct RunningSink {
    config: SinkConfig,
    input: SinkInput,
    task: JoinHandle<()>,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Connectors started or restarted.
    pub connectors_started: Vec<String>,
    /// Connectors stopped (removed or restarted).
    pub connectors_stopped: Vec<String>,
    /// Connectors left running untouched.
    pub connectors_kept: Vec<String>,
    /// Sinks started or restarted.
    pub sinks_started: Vec<String>,
    /// Sinks stopped (removed or restarted).
    pub sinks_stopped: Vec<String>,
}

/// A stop after which sinks still held messages the broker had not acknowledged at the flush
/// deadline (`gateway.shutdown_timeout`): those may be lost. `osgate` exits with code 3.
#[derive(Debug, thiserror::Error)]
#[error("stopped with {pending} message(s) unacknowledged at the flush deadline; they may be lost")]
pub struct Undelivered {
    /// How many messages were still unacknowledged.
    pub pending: u64,
}

/// The running gateway.
pub struct GatewayService {
    config: GatewayConfig,
    registry: Arc<StatusRegistry>,
    control: Arc<ControlRegistry>,
    out: ReadingSender,
    root: CancellationToken,
    connectors: BTreeMap<Arc<str>, RunningConnector>,
    sinks: BTreeMap<Arc<str>, RunningSink>,
    retiring: Vec<(Arc<str>, JoinHandle<()>)>,
    /// Messages sinks still held unacknowledged when their flush deadline passed.
    undelivered: Arc<std::sync::atomic::AtomicU64>,
    started: i64,
    /// The configuration in force, shared with the RPC server (replaced on every reload).
    shared: Arc<arc_swap::ArcSwap<GatewayConfig>>,
    /// The self-telemetry task (`telemetry/{gateway}/_gateway/…`), stopped with the connectors.
    telemetry: Option<JoinHandle<()>>,
    /// The configuration in force before the last reload that changed it (`config.rollback`).
    previous: Arc<arc_swap::ArcSwapOption<GatewayConfig>>,
    /// Where the embedded broker listens, if one runs.
    broker: Option<std::net::SocketAddr>,
}

impl GatewayService {
    /// Starts everything the configuration describes; `info` (where it came from) is in the
    /// registry before the first sink connects, so the first `status/{gateway}` says it.
    pub async fn start(
        config: GatewayConfig,
        info: crate::config::remote::ConfigInfo,
    ) -> anyhow::Result<Self> {
        let broker = match &config.broker.embedded {
            Some(b) => Some(crate::broker::start(b).await?),
            None => None,
        };
        let registry = Arc::new(StatusRegistry::default());
        registry.config.send_replace(info);
        let mut svc = GatewayService {
            registry,
            control: Arc::new(ControlRegistry::default()),
            out: ReadingSender::new(Vec::new()),
            root: CancellationToken::new(),
            connectors: BTreeMap::new(),
            sinks: BTreeMap::new(),
            retiring: Vec::new(),
            undelivered: Arc::default(),
            started: Timestamp::now().0,
            shared: Arc::new(arc_swap::ArcSwap::from_pointee(config.clone())),
            config: config.clone(),
            telemetry: None,
            previous: Arc::default(),
            broker,
        };
        for s in config.sinks.iter().filter(|s| s.common.enabled) {
            let running = svc.start_sink(s.clone());
            svc.sinks.insert(s.name().into(), running);
        }
        svc.publish_sink_list();
        for c in config.connectors.iter().filter(|c| c.enabled) {
            // A connector that cannot be built at start (a USB adapter not plugged in yet) is
            // reported and retried by its supervisor; the others run.
            let running = svc.start_connector(c.clone(), None);
            svc.connectors.insert(c.name.clone(), running);
        }
        // Like a connector: it sends into the fan-out and stops before the sinks flush.
        svc.telemetry = Some(tokio::spawn(crate::telemetry::run(
            crate::telemetry::TelemetryContext {
                config: svc.shared.clone(),
                registry: svc.registry.clone(),
                out: svc.out.clone(),
                started: svc.started,
                shutdown: svc.root.child_token(),
            },
        )));
        tracing::info!(
            gateway = %config.gateway.id,
            connectors = svc.connectors.len(),
            sinks = svc.sinks.len(),
            "gateway started"
        );
        release_when_settled(svc.root.child_token());
        Ok(svc)
    }

    /// Health data shared with the RPC server.
    pub fn registry(&self) -> &Arc<StatusRegistry> {
        &self.registry
    }

    /// Run-time device control shared with the RPC server and MQTT commands.
    pub fn control(&self) -> &Arc<ControlRegistry> {
        &self.control
    }

    /// The configuration in force.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// Where the embedded broker listens (the port the system picked for port 0).
    pub fn broker(&self) -> Option<std::net::SocketAddr> {
        self.broker
    }

    /// When the gateway started (ms since the epoch).
    pub fn started(&self) -> i64 {
        self.started
    }

    /// The configuration in force, kept current across reloads (for the RPC server).
    pub fn shared_config(&self) -> Arc<arc_swap::ArcSwap<GatewayConfig>> {
        self.shared.clone()
    }

    /// The configuration in force before the last reload that changed it (for
    /// `config.rollback`).
    pub fn previous_config(&self) -> Arc<arc_swap::ArcSwapOption<GatewayConfig>> {
        self.previous.clone()
    }

    /// The fan-out every connector sends to (the RPC server taps it for `readings.subscribe`).
    pub fn readings(&self) -> &ReadingSender {
        &self.out
    }

    /// Whether a connector should run: its run-time override, else its config.
    fn connector_wanted(&self, c: &ConnectorConfig) -> bool {
        self.control
            .connector_override(&c.name)
            .unwrap_or(c.enabled)
    }

    /// Enables, disables or restarts one connector at run time. Enable and disable are recorded
    /// in the [`ControlRegistry`], so they survive reloads. Returns whether it now runs.
    pub async fn connector_action(
        &mut self,
        name: &str,
        action: ConnectorAction,
    ) -> Result<bool, String> {
        let Some(cfg) = self
            .config
            .connectors
            .iter()
            .find(|c| &*c.name == name)
            .cloned()
        else {
            return Err(format!("unknown connector \"{name}\""));
        };
        let key = cfg.name.clone();
        let running = self.connectors.contains_key(&key);
        let (stop, start) = match action {
            ConnectorAction::Enable => {
                self.control.set_connector_enabled(&key, true);
                (false, !running)
            }
            ConnectorAction::Disable => {
                self.control.set_connector_enabled(&key, false);
                (running, false)
            }
            ConnectorAction::Restart if !running => {
                return Err(format!(
                    "connector \"{name}\" is disabled; enable it instead"
                ))
            }
            ConnectorAction::Restart => (true, true),
        };
        if stop {
            let c = self.connectors.remove(&key).expect("running");
            c.token.cancel();
            wait_all(
                vec![(key.clone(), c.task)],
                self.config.gateway.shutdown_timeout.0,
                "connector",
            )
            .await;
        }
        if start {
            let c = self.start_connector(cfg, None);
            self.connectors.insert(key.clone(), c);
        }
        let running = self.connectors.contains_key(&key);
        tracing::info!(connector = %key, ?action, running, "connector changed at run time");
        Ok(running)
    }

    fn publish_sink_list(&self) {
        self.out
            .replace_sinks(self.sinks.values().map(|s| s.input.clone()).collect());
    }

    fn start_sink(&self, config: SinkConfig) -> RunningSink {
        let name: Arc<str> = config.name().into();
        let counters = self.registry.sink(&name);
        let (input, rx) = sink_queue(
            config.common.queue,
            config.common.when_full,
            counters.clone(),
        );
        let ctx = SinkContext {
            name: name.clone(),
            gateway: self.config.gateway.id.as_str().into(),
            rx,
            counters,
            flush_timeout: self.config.gateway.shutdown_timeout.0,
            started: self.started,
            config_info: self.registry.config.subscribe(),
            uplink: self.registry.uplink.clone(),
            version: crate::VERSION,
            commit: crate::COMMIT,
            control: self.control.clone(),
        };
        let cfg = config.clone();
        let undelivered = self.undelivered.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = sinks::run(cfg, ctx).await {
                if let sinks::SinkError::FlushTimeout { pending } = &e {
                    undelivered.fetch_add(*pending as u64, std::sync::atomic::Ordering::Relaxed);
                }
                tracing::error!(sink = %name, error = %e, "sink stopped with an error");
            }
        });
        RunningSink {
            config,
            input,
            task,
        }
    }

    /// The context a connector of gateway `gateway` runs with (a child token of the
    /// gateway's).
    fn connector_context(&self, gateway: &str, name: &Arc<str>) -> ConnectorContext {
        ConnectorContext {
            name: name.clone(),
            gateway: gateway.into(),
            out: self.out.clone(),
            shutdown: self.root.child_token(),
            health: self.registry.connector(name),
            control: self.control.clone(),
            listeners: self.registry.listeners.clone(),
        }
    }

    /// Starts a connector under its supervisor, with what [`ConnectorConfig::build`] returned
    /// for it, or building it first when `built` is `None`.
    fn start_connector(
        &self,
        config: ConnectorConfig,
        built: Option<(ConnectorContext, Running)>,
    ) -> RunningConnector {
        let (ctx, first) = match built {
            Some((ctx, running)) => (ctx, Some(running)),
            None => (
                self.connector_context(&self.config.gateway.id, &config.name),
                None,
            ),
        };
        let token = ctx.shutdown.clone();
        let task = tokio::spawn(supervise(config.clone(), ctx, first));
        RunningConnector {
            config,
            token,
            task,
        }
    }

    /// Applies a new, validated configuration by hot reload: restarts only the connectors and
    /// sinks whose configuration changed; the others keep running without a gap. Every
    /// connector to (re)start is built first ([`ConnectorConfig::build`]: addresses, serial
    /// ports, files); if one cannot be built, nothing is applied, the running configuration
    /// stays, and the error names each connector and why.
    pub async fn reload(&mut self, new: GatewayConfig) -> Result<ReloadSummary, String> {
        let everything = new.gateway != self.config.gateway;
        let mut built = BTreeMap::new();
        let mut failed = Vec::new();
        for c in new.connectors.iter().filter(|c| self.connector_wanted(c)) {
            let changed = everything || self.connectors.get(&c.name).is_none_or(|r| r.config != *c);
            if !changed {
                continue;
            }
            let ctx = self.connector_context(&new.gateway.id, &c.name);
            match c.build(ctx.clone()) {
                Ok(running) => {
                    built.insert(c.name.clone(), (ctx, running));
                }
                Err(e) => failed.push(format!("connector \"{}\": {e}", c.name)),
            }
        }
        if !failed.is_empty() {
            // Building made health records for connectors that will not run: drop them.
            self.retain_health(&self.config);
            let why = failed.join("; ");
            tracing::error!(failed = %why, "the new configuration cannot start; the running configuration stays");
            return Err(format!(
                "the new configuration cannot start ({why}); the running configuration stays"
            ));
        }
        Ok(self.apply(new, built).await)
    }

    /// Restarts the connectors and sinks whose configuration changed (no checks).
    async fn apply(
        &mut self,
        new: GatewayConfig,
        mut built: BTreeMap<Arc<str>, (ConnectorContext, Running)>,
    ) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        if new.broker != self.config.broker {
            tracing::warn!("broker.embedded changed: it applies at the next start (the embedded broker cannot be restarted)");
        }
        let rpc_addr = |c: &GatewayConfig| {
            c.rpc.as_ref().map(|r| {
                (
                    r.listen,
                    r.mqtt,
                    r.tls.clone(),
                    r.limits.clone(),
                    r.max_subscribers,
                )
            })
        };
        if rpc_addr(&new) != rpc_addr(&self.config) {
            tracing::warn!("rpc.listen, rpc.tls, rpc.mqtt, rpc.limits or rpc.max_subscribers changed: it applies at the next start (rpc.api_keys and their roles apply at once)");
        }
        // A new gateway id or shutdown timeout changes every topic or task: restart everything.
        let everything = new.gateway != self.config.gateway;
        // Tasks started below take the gateway id from here.
        self.config.gateway = new.gateway.clone();

        // Sinks first, so restarted connectors send to the new sink set.
        let wanted: BTreeMap<Arc<str>, &SinkConfig> = new
            .sinks
            .iter()
            .filter(|s| s.common.enabled)
            .map(|s| (Arc::<str>::from(s.name()), s))
            .collect();
        let names: Vec<Arc<str>> = self.sinks.keys().cloned().collect();
        for name in names {
            let keep = !everything
                && wanted
                    .get(&name)
                    .is_some_and(|c| c.raw == self.sinks[&name].config.raw);
            if !keep {
                let s = self.sinks.remove(&name).expect("listed");
                summary.sinks_stopped.push(name.to_string());
                // Dropping its input (below, with the new list) ends its queue; it flushes.
                self.retiring.push((name, s.task));
            }
        }
        for (name, cfg) in &wanted {
            if !self.sinks.contains_key(name) {
                let s = self.start_sink((*cfg).clone());
                summary.sinks_started.push(name.to_string());
                self.sinks.insert(name.clone(), s);
            }
        }
        self.publish_sink_list();

        let wanted: BTreeMap<Arc<str>, &ConnectorConfig> = new
            .connectors
            .iter()
            .filter(|c| self.connector_wanted(c))
            .map(|c| (c.name.clone(), c))
            .collect();
        let names: Vec<Arc<str>> = self.connectors.keys().cloned().collect();
        let mut stopping = Vec::new();
        for name in names {
            let keep = !everything
                && wanted
                    .get(&name)
                    .is_some_and(|c| **c == self.connectors[&name].config);
            if keep {
                summary.connectors_kept.push(name.to_string());
            } else {
                let c = self.connectors.remove(&name).expect("listed");
                c.token.cancel();
                summary.connectors_stopped.push(name.to_string());
                stopping.push((name, c.task));
            }
        }
        wait_all(
            stopping,
            self.config.gateway.shutdown_timeout.0,
            "connector",
        )
        .await;
        for (name, cfg) in &wanted {
            if !self.connectors.contains_key(name) {
                let c = self.start_connector((*cfg).clone(), built.remove(name));
                summary.connectors_started.push(name.to_string());
                self.connectors.insert(name.clone(), c);
            }
        }
        self.retain_health(&new);
        self.forget_removed_devices(&new);
        let old = self.shared.swap(Arc::new(new.clone()));
        if old.source != new.source {
            self.previous.store(Some(old));
        }
        self.config = new;
        self.retiring.retain(|(_, t)| !t.is_finished());
        let names = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        tracing::info!(
            connectors_started = %names(&summary.connectors_started),
            connectors_stopped = %names(&summary.connectors_stopped),
            connectors_kept = %names(&summary.connectors_kept),
            sinks_started = %names(&summary.sinks_started),
            sinks_stopped = %names(&summary.sinks_stopped),
            "configuration reloaded"
        );
        release_when_settled(self.root.child_token());
        summary
    }

    /// Forgets the status of devices taken out of a connector's configuration (`devices.list`
    /// would show them stopped forever); devices a listener created at run time stay.
    fn forget_removed_devices(&self, new: &GatewayConfig) {
        for c in &new.connectors {
            let Some(old) = self.config.connectors.iter().find(|o| o.name == c.name) else {
                continue;
            };
            let gone: Vec<&Arc<str>> = old
                .devices
                .iter()
                .filter(|d| !c.devices.contains(d))
                .collect();
            if !gone.is_empty() {
                let h = self.registry.connector(&c.name);
                let mut devices = h.devices.lock().expect("status lock");
                for d in gone {
                    devices.remove(d);
                }
            }
        }
    }

    /// Forgets the health records of connectors and sinks that `config` does not have.
    fn retain_health(&self, config: &GatewayConfig) {
        let keep_c: Vec<Arc<str>> = config.connectors.iter().map(|c| c.name.clone()).collect();
        let keep_s: Vec<Arc<str>> = config.sinks.iter().map(|s| s.name().into()).collect();
        self.registry.retain(&keep_c, &keep_s);
    }

    /// Stops everything: connectors, then sinks (which flush), within the shutdown deadline.
    /// Returns an error naming the tasks that had to be aborted.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let deadline = self.config.gateway.shutdown_timeout.0;
        tracing::info!(?deadline, "stopping: connectors first, then sinks flush");
        self.root.cancel();
        let mut connectors: Vec<_> = std::mem::take(&mut self.connectors)
            .into_iter()
            .map(|(n, c)| (n, c.task))
            .collect();
        if let Some(t) = self.telemetry.take() {
            connectors.push(("self-telemetry".into(), t));
        }
        let mut stragglers = wait_all(connectors, deadline, "connector").await;
        // Closing the fan-out ends every sink's queue; the sinks flush and return.
        self.out.close();
        let mut sinks: Vec<_> = std::mem::take(&mut self.sinks)
            .into_iter()
            .map(|(n, s)| {
                drop(s.input);
                (n, s.task)
            })
            .collect();
        sinks.append(&mut self.retiring);
        stragglers.extend(wait_all(sinks, deadline + Duration::from_secs(1), "sink").await);
        let pending = self.undelivered.load(std::sync::atomic::Ordering::Relaxed);
        if pending > 0 {
            // Not "cleanly": systemd and scripts must see that data may be lost (exit 3).
            tracing::error!(
                pending,
                "stopped with messages unacknowledged at the flush deadline; they may be lost"
            );
            Err(Undelivered { pending }.into())
        } else if stragglers.is_empty() {
            tracing::info!("stopped cleanly");
            Ok(())
        } else {
            anyhow::bail!(
                "stopped with tasks aborted at the deadline: {}",
                stragglers.join(", ")
            )
        }
    }
}

/// Waits for tasks up to `deadline`; aborts and names the ones still running.
async fn wait_all(
    tasks: Vec<(Arc<str>, JoinHandle<()>)>,
    deadline: Duration,
    kind: &str,
) -> Vec<String> {
    let until = tokio::time::Instant::now() + deadline;
    let mut stragglers = Vec::new();
    for (name, mut task) in tasks {
        if tokio::time::timeout_at(until, &mut task).await.is_err() {
            tracing::warn!(%kind, name = %name, "still running at the deadline; aborting");
            task.abort();
            stragglers.push(format!("{kind} \"{name}\""));
        }
    }
    stragglers
}

/// Runs a connector (`first`, as built, or built here) and builds and restarts it with capped
/// backoff if it cannot be built, fails or panics, until its token is cancelled.
async fn supervise(config: ConnectorConfig, ctx: ConnectorContext, mut first: Option<Running>) {
    let name = ctx.name.clone();
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
    loop {
        let built = match first.take() {
            Some(r) => Ok(r),
            None => config.build(ctx.clone()),
        };
        let error = match built {
            Err(e) => format!("cannot start: {e}"),
            Ok(running) => {
                let mut task = tokio::spawn(running);
                let res = tokio::select! {
                    r = &mut task => r,
                    _ = ctx.shutdown.cancelled() => {
                        // The connector sees the same token; give it time for its own cleanup.
                        if tokio::time::timeout(Duration::from_secs(2), &mut task).await.is_err() {
                            task.abort();
                        }
                        return;
                    }
                };
                match res {
                    Ok(Ok(())) if ctx.shutdown.is_cancelled() => return,
                    Ok(Ok(())) => "connector task ended unexpectedly".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) if e.is_panic() => format!(
                        "connector task panicked: {}",
                        connectors::device::panic_message(e.into_panic())
                    ),
                    Err(_) => return,
                }
            }
        };
        let wait = backoff.next_delay();
        ctx.health
            .counters
            .errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *ctx.health.last_error.lock().expect("status lock") = Some(error.clone());
        tracing::error!(connector = %name, error = %error, retry_in = ?wait, "connector failed; restarting");
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Loads the configuration for `osgate -c FILE`.
pub fn load(path: &std::path::Path) -> Result<GatewayConfig, config::LoadError> {
    config::load_file(path)
}

/// Requests to the running service, from signals, the config refresher and the RPC server.
/// The service loop handles them one at a time, so no two reloads ever overlap.
#[derive(Debug)]
pub enum ServiceCommand {
    /// Apply `config`, or re-read the configuration source when `None`. The reply says what
    /// changed, or why the new configuration was rejected (the running one then stays).
    Reload {
        /// The new configuration, already validated; `None` = load it again.
        config: Option<Box<GatewayConfig>>,
        /// Where the result goes (optional).
        reply: Option<oneshot::Sender<Result<ReloadSummary, String>>>,
    },
    /// Enable, disable or restart one connector; the reply says whether it now runs.
    Connector {
        /// The connector's name.
        name: String,
        /// What to do.
        action: ConnectorAction,
        /// Where the result goes.
        reply: oneshot::Sender<Result<bool, String>>,
    },
    /// Stop the gateway as on SIGTERM.
    Shutdown,
}

/// What [`ServiceCommand::Connector`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorAction {
    /// Start it (if stopped) and keep it enabled across reloads.
    Enable,
    /// Stop it and keep it disabled across reloads.
    Disable,
    /// Stop and start it again (it must be running).
    Restart,
}

/// A cloneable handle to send [`ServiceCommand`]s to the running service.
#[derive(Debug, Clone)]
pub struct ServiceHandle {
    tx: mpsc::Sender<ServiceCommand>,
}

impl ServiceHandle {
    /// A handle and the queue its commands arrive on (read by the process loop, `crate::app`).
    pub fn new() -> (Self, mpsc::Receiver<ServiceCommand>) {
        let (tx, rx) = mpsc::channel(16);
        (ServiceHandle { tx }, rx)
    }

    /// Sends a command; false when the service is gone.
    pub async fn send(&self, cmd: ServiceCommand) -> bool {
        self.tx.send(cmd).await.is_ok()
    }

    /// Reloads (from `config`, or from the source when `None`) and waits for the result.
    pub async fn reload(&self, config: Option<GatewayConfig>) -> Result<ReloadSummary, String> {
        let (reply, rx) = oneshot::channel();
        let cmd = ServiceCommand::Reload {
            config: config.map(Box::new),
            reply: Some(reply),
        };
        if !self.send(cmd).await {
            return Err("the gateway is stopping".into());
        }
        rx.await
            .unwrap_or_else(|_| Err("the gateway is stopping".into()))
    }

    /// Enables, disables or restarts a connector and waits for the result (whether it runs).
    pub async fn connector(&self, name: &str, action: ConnectorAction) -> Result<bool, String> {
        let (reply, rx) = oneshot::channel();
        let cmd = ServiceCommand::Connector {
            name: name.to_string(),
            action,
            reply,
        };
        if !self.send(cmd).await {
            return Err("the gateway is stopping".into());
        }
        rx.await
            .unwrap_or_else(|_| Err("the gateway is stopping".into()))
    }
}

/// How long after a start or reload the connectors' first cycles (connects, first polls and
/// writes, the sinks' first publishes) are taken to be over.
const SETTLE: Duration = Duration::from_secs(10);

/// Gives back what a start or reload left behind ([`crate::memory::release_after_start`]):
/// now (the configuration's parse, the code that built everything), and again once the first
/// cycles are over ([`SETTLE`]), unless `shutdown` comes first.
fn release_when_settled(shutdown: CancellationToken) {
    crate::memory::release_after_start();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(SETTLE) => crate::memory::release_after_start(),
        }
    });
}
