//! A whole gateway run in-process: [`osgate::app::run`] on a runtime of its own, for tests of
//! behaviour inside the gateway (RPC, reloads, sinks, security…). Tests of the process boundary
//! (command line, exit codes, signals, systemd notify, crashes) start the binary ([`Gateway`]).
//!
//! Each [`InProc`] has its own multi-thread tokio runtime, and its own `tracing` dispatcher set
//! on that runtime's threads only (`on_thread_start`), writing JSON lines as
//! `osgate --log-format json` does into a buffer: gateways of tests running in parallel never
//! see each other's log lines, and [`InProc::wait_log`] reads them as [`Gateway::wait_log`]
//! reads the process's. Its configuration is written to a file in its own temp dir and loaded
//! by the same loading order as the binary's `-c` file; `${VAR}` takes the values given to
//! [`InProc::start_with`], never the test process's environment. Ports come from the
//! gateway: configure `"listen": "127.0.0.1:0"` and read [`InProc::rpc_port`] or
//! [`InProc::listener`].
//!
//! [`Gateway`]: super::Gateway
//! [`Gateway::wait_log`]: super::Gateway::wait_log

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::dispatcher::DefaultGuard;
use tracing::Dispatch;

use osgate::app::{Bound, Setup, Source};

use super::rpc::Rpc;
use super::{temp_dir, GatewayLog, TEST_TIMEOUT};

/// The log filter of the gateway: what [`super::Gateway`] gives the binary in `RUST_LOG`.
const FILTER: &str = "info,osgate=debug,rumqttd=off";

/// Worker threads of each gateway's runtime (the machine running the tests is small).
const WORKERS: usize = 2;

/// A gateway running in this process.
pub struct InProc {
    /// Its temp dir (config, cache…).
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// What it bound (the RPC address, the embedded broker, the listeners).
    pub bound: Bound,
    log: Arc<Mutex<Vec<u8>>>,
    rt: Option<tokio::runtime::Runtime>,
    stop: CancellationToken,
    reload: mpsc::Sender<()>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A writer into the gateway's log buffer; the fmt layer writes each line in one call.
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

thread_local! {
    /// The dispatcher of the gateway whose runtime owns this thread.
    static LOGS: RefCell<Option<DefaultGuard>> = const { RefCell::new(None) };
}

impl InProc {
    /// Writes `config` to a temp dir and runs a gateway on it.
    pub async fn start(config: &Value) -> InProc {
        Self::start_with(config, &[]).await
    }

    /// Like [`InProc::start`], with `${VAR}` values.
    pub async fn start_with(config: &Value, vars: &[(&str, &str)]) -> InProc {
        Self::try_start_with(config, vars)
            .await
            .unwrap_or_else(|(e, log)| panic!("the gateway did not start: {e:#}; log:\n{log}"))
    }

    /// Like [`InProc::start_with`]; a gateway that does not start is its error and its log.
    pub async fn try_start_with(
        config: &Value,
        vars: &[(&str, &str)],
    ) -> Result<InProc, (anyhow::Error, String)> {
        let dir = temp_dir();
        let path = dir.path().join("osgate.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        Self::try_start_file(dir, path, vars).await
    }

    /// Runs a gateway on an existing config file in `dir`.
    pub async fn start_file(dir: tempfile::TempDir, config: PathBuf) -> InProc {
        Self::try_start_file(dir, config, &[])
            .await
            .unwrap_or_else(|(e, log)| panic!("the gateway did not start: {e:#}; log:\n{log}"))
    }

    /// Like [`InProc::start_file`] with `${VAR}` values; a gateway that does not start is its
    /// error and its log.
    pub async fn try_start_file(
        dir: tempfile::TempDir,
        config: PathBuf,
        vars: &[(&str, &str)],
    ) -> Result<InProc, (anyhow::Error, String)> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let dispatch = {
            let log = log.clone();
            Dispatch::new(
                tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new(FILTER))
                    .with_ansi(false)
                    .with_writer(move || Capture(log.clone()))
                    .json()
                    .flatten_event(true)
                    .finish(),
            )
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .thread_name("inproc-gateway")
            .enable_all()
            .on_thread_start(move || {
                let guard = tracing::dispatcher::set_default(&dispatch);
                LOGS.with(|l| *l.borrow_mut() = Some(guard));
            })
            .on_thread_stop(|| LOGS.with(|l| drop(l.borrow_mut().take())))
            .build()
            .expect("a runtime for the gateway");
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (reload, reloads) = mpsc::channel(1);
        let (bound_tx, bound_rx) = oneshot::channel();
        let stop = CancellationToken::new();
        let setup = Setup {
            source: Source::file(config.clone())
                .with_vars(Arc::new(move |k: &str| vars.get(k).cloned())),
            reloads,
            notify: osgate::notify::Notifier::none(),
            bound: Some(bound_tx),
        };
        let mut task = rt.spawn(osgate::app::run(setup, stop.clone().cancelled_owned()));
        let text = |log: &Arc<Mutex<Vec<u8>>>| {
            String::from_utf8_lossy(&log.lock().expect("log buffer")).into_owned()
        };
        let bound = tokio::select! {
            b = bound_rx => b.ok(),
            r = &mut task => {
                let e = match r {
                    Ok(Ok(())) => anyhow::anyhow!("the gateway stopped before it ran"),
                    Ok(Err(e)) => e,
                    Err(e) => anyhow::anyhow!("the gateway panicked: {e}"),
                };
                rt.shutdown_background();
                return Err((e, text(&log)));
            }
            _ = tokio::time::sleep(TEST_TIMEOUT) => None,
        };
        let Some(bound) = bound else {
            rt.shutdown_background();
            return Err((
                anyhow::anyhow!("the gateway did not start within {TEST_TIMEOUT:?}"),
                text(&log),
            ));
        };
        Ok(InProc {
            dir,
            config,
            bound,
            log,
            rt: Some(rt),
            stop,
            reload,
            task: Some(task),
        })
    }

    /// The port of the JSON-RPC server (and `/metrics`, the console).
    pub fn rpc_port(&self) -> u16 {
        self.bound
            .rpc
            .expect("the config has an rpc section")
            .port()
    }

    /// A JSON-RPC client of this gateway calling with API key `key`.
    pub async fn rpc(&self, key: &str) -> Rpc {
        Rpc::connect(key, self.rpc_port(), self).await
    }

    /// Where listener `name` (an HTTP ingest connector) listens, once it does.
    pub async fn listener(&self, name: &str) -> SocketAddr {
        let until = Instant::now() + TEST_TIMEOUT;
        loop {
            if let Some(a) = self.bound.listeners.addr(name) {
                return a;
            }
            assert!(
                Instant::now() < until,
                "listener {name} not bound within {TEST_TIMEOUT:?}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asks for a reload, as SIGHUP does to the binary (the loading order runs again).
    pub async fn reload(&self) {
        self.reload.send(()).await.expect("the gateway runs");
    }

    /// Stops the gateway as SIGTERM does (connectors first, then sinks flush) and returns what
    /// `run` returned (`osgate` exits 0 on `Ok`, 3 on `Undelivered`). Its log stays readable.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        let task = self.task.take().expect("running");
        let res = match tokio::time::timeout(TEST_TIMEOUT, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => panic!("the gateway panicked: {e}; log:\n{}", self.log_text()),
            Err(_) => panic!(
                "the gateway still running {TEST_TIMEOUT:?} after stop; log:\n{}",
                self.log_text()
            ),
        };
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        res
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().expect("log buffer")).into_owned()
    }

    /// The log as JSON objects.
    pub fn log_json(&self) -> Vec<Value> {
        super::log_json_of(&self.log_text())
    }

    /// Waits until a log line's message contains `needle`; returns that line.
    pub async fn wait_log(&self, needle: &str, within: Duration) -> Value {
        super::wait_log_of(self, needle, within).await
    }

    /// The directory of the config.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl GatewayLog for InProc {
    fn log_text(&self) -> String {
        InProc::log_text(self)
    }
}

impl Drop for InProc {
    /// Ends the gateway at once, as a kill would (nothing flushes); [`InProc::stop`] stops it
    /// gracefully.
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
