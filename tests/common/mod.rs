//! Test harness: real peers on free loopback ports, killed on drop.
//!
//! - [`Mosquitto`]: a real mosquitto on a free port, in its own temp dir (persistence there),
//!   stoppable and restartable on the same port; plain, TLS ([`Mosquitto::start_tls`]) or with a
//!   password file ([`Mosquitto::start_with_password`]).
//! - [`certs::Certs`]: CA, server and client certificates made at run time.
//! - [`Gateway`]: the `osgate` binary on a config written to a temp dir, JSON logs captured:
//!   for tests of the process boundary (command line, exit codes, signals, systemd notify).
//! - [`InProc`]: a whole gateway run in-process on its own runtime, its logs captured apart:
//!   for everything inside the gateway (RPC, reloads, sinks, security…), on port 0.
//! - [`Subscriber`]: an MQTT client (rumqttc) collecting messages, reconnecting by itself.
//! - [`connector::ConnectorRun`]: one connector of any protocol run in-process, its batches and
//!   status changes taken from a sink queue, its devices controlled through the registry.
//! - [`rpc::Rpc`]: a JSON-RPC client of a gateway's management API.
//! - [`modbus`]: Modbus peers — pymodbus (`tests/peers/modbus_peer.py`) and our own
//!   `examples/modbus_sim` — and a count of this process's TCP connections to a port.
//! - [`zwave::ZwavePeer`]: a real Z-Wave JS Server on a simulated stick (`tests/peers/zwave`).
//! - [`opcua`]: the OPC-UA peers: python asyncua (`tests/peers/opcua_server.py`), restartable,
//!   and node-opcua (`tests/peers/node-opcua`).
//! - [`npm`]: the node_modules of the npm peers, installed once per lockfile under `target/`.
//!
//! Every wait is bounded by a timeout; nothing sleeps where an event can be awaited.

#![allow(dead_code)]

pub mod certs;
pub mod connector;
pub mod deadline;
pub mod http;
pub mod inproc;
#[cfg(feature = "mbus")]
pub mod mbus;
#[cfg(feature = "modbus")]
pub mod modbus;
#[cfg(any(feature = "zwave", feature = "opcua"))]
pub mod npm;
#[cfg(feature = "opcua")]
pub mod opcua;
pub mod rpc;
#[cfg(feature = "zwave")]
pub mod zwave;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

pub use inproc::InProc;

/// Upper bound for any single await in a test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Awaits `f`, or panics naming `what` after [`TEST_TIMEOUT`].
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(TEST_TIMEOUT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {TEST_TIMEOUT:?} waiting for {what}"),
    }
}

/// A free TCP port on 127.0.0.1 (the OS picks it; a rare race is retried by the callers).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_port(port: u16, within: Duration) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A fresh temp dir for one test's files.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("osgate-test")
        .tempdir()
        .expect("temp dir")
}

/// The Python that runs the peers: `OSGATE_TEST_PYTHON` if set, else the virtual environment
/// `.ci/run` makes (`.venv/` at the top of the repository: Debian's own `python3` refuses
/// `pip install`), else `python3` from the PATH (a developer's own environment with pymodbus).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("OSGATE_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python3");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// A real mosquitto on a free loopback port.
pub struct Mosquitto {
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Listener options beyond the defaults (TLS files, password file).
    extra: String,
    /// The whole configuration file instead of the harness's own, made from the port and
    /// the broker's dir ([`Mosquitto::start_file`]).
    whole: Option<WholeConf>,
}

/// Makes a whole mosquitto configuration from the port and the broker's dir.
type WholeConf = std::sync::Arc<dyn Fn(u16, &Path) -> String + Send + Sync>;

impl Mosquitto {
    /// Starts mosquitto with persistence in its own dir and no queue limits (tests count every
    /// message, so the broker must not drop any for a slow subscriber).
    pub fn start() -> Mosquitto {
        Self::start_conf(|_| String::from("allow_anonymous true\n"))
    }

    /// Starts mosquitto with a TLS listener: `certs.server` signed by `certs.ca`; with
    /// `require_client_cert`, clients must present a certificate signed by `certs.ca`.
    pub fn start_tls(certs: &certs::Certs, require_client_cert: bool) -> Mosquitto {
        Self::start_tls_with(certs, &certs.server, require_client_cert)
    }

    /// Like [`Mosquitto::start_tls`] with another server certificate (an untrusted one, one for
    /// another name).
    pub fn start_tls_with(
        certs: &certs::Certs,
        server: &certs::Pair,
        require_client_cert: bool,
    ) -> Mosquitto {
        let text = format!(
            "allow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {require_client_cert}\n",
            certs.ca.cert.display(),
            server.cert.display(),
            server.key.display()
        );
        Self::start_conf(move |_| text.clone())
    }

    /// Starts mosquitto that accepts only `user` with `password` (a password file made with
    /// `mosquitto_passwd -b`).
    pub fn start_with_password(user: &str, password: &str) -> Mosquitto {
        let (user, password) = (user.to_string(), password.to_string());
        Self::start_conf(move |dir| {
            let file = dir.join("passwd");
            let st = Command::new("mosquitto_passwd")
                .arg("-c")
                .arg("-b")
                .arg(&file)
                .args([&user, &password])
                .status()
                .expect("run mosquitto_passwd");
            assert!(st.success(), "mosquitto_passwd failed");
            format!("allow_anonymous false\npassword_file {}\n", file.display())
        })
    }

    /// Starts mosquitto on a configuration file of the caller's, `conf(port, dir)`: it must
    /// listen on 127.0.0.1:`port`, keep its files in `dir` and log to `dir`/mosquitto.log for
    /// [`Mosquitto::log_text`]. For shipped configurations (tests/bridge.rs).
    pub fn start_file(conf: impl Fn(u16, &Path) -> String + Send + Sync + 'static) -> Mosquitto {
        Self::start_with_whole(|_| String::new(), Some(std::sync::Arc::new(conf)))
    }

    /// Starts mosquitto with `listener` options made by `conf(dir)` (the broker's own temp dir).
    fn start_conf(conf: impl Fn(&Path) -> String) -> Mosquitto {
        Self::start_with_whole(conf, None)
    }

    fn start_with_whole(conf: impl Fn(&Path) -> String, whole: Option<WholeConf>) -> Mosquitto {
        for _ in 0..5 {
            let dir = temp_dir();
            let extra = conf(dir.path());
            let mut m = Mosquitto {
                port: free_port(),
                dir,
                child: None,
                extra,
                whole: whole.clone(),
            };
            if m.spawn() {
                return m;
            }
        }
        panic!("mosquitto did not start (is it installed? .ci/run installs it)");
    }

    fn spawn(&mut self) -> bool {
        let conf = self.dir.path().join("mosquitto.conf");
        let text = match &self.whole {
            Some(whole) => whole(self.port, self.dir.path()),
            None => self.harness_conf(),
        };
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        if wait_port(self.port, Duration::from_secs(5)) {
            true
        } else {
            self.stop();
            false
        }
    }

    /// The harness's own configuration: `extra` listener options, persistence in the broker's
    /// dir, no queue limits.
    fn harness_conf(&self) -> String {
        format!(
            "listener {port} 127.0.0.1\n{extra}persistence true\npersistence_location {dir}/\nautosave_interval 0\nmax_queued_messages 0\nmax_inflight_messages 0\nuser root\nlog_dest file {dir}/mosquitto.log\n",
            port = self.port,
            extra = self.extra,
            dir = self.dir.path().display()
        )
    }

    /// Stops the broker (SIGTERM, so it saves its persistence file) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe_free_kill(c.id(), "TERM");
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The broker's process id (to pause it with SIGSTOP), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Starts the broker again on the same port with the same persistence.
    pub fn restart(&mut self) {
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("mosquitto did not restart on port {}", self.port);
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// `mqtts://127.0.0.1:PORT`.
    pub fn tls_url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.port)
    }

    /// The broker's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Publishes `payload` on `topic` at QoS 1 with `mosquitto_pub`: another client, as a
    /// user's would be.
    pub async fn publish(&self, topic: &str, payload: &str) {
        let st = tokio::process::Command::new("mosquitto_pub")
            .args([
                "-p",
                &self.port.to_string(),
                "-q",
                "1",
                "-t",
                topic,
                "-m",
                payload,
            ])
            .status()
            .await
            .expect("run mosquitto_pub");
        assert!(st.success(), "mosquitto_pub {topic}");
    }

    /// Publishes until `answers` receives a message and returns it: for requests to a client
    /// that subscribes at a moment the test cannot see (the gateway's command client).
    pub async fn publish_until_answered(
        &self,
        topic: &str,
        payload: &str,
        answers: &mut Subscriber,
    ) -> Msg {
        let until = Instant::now() + TEST_TIMEOUT;
        loop {
            assert!(Instant::now() < until, "no answer to {topic}");
            self.publish(topic, payload).await;
            if let Ok(m) =
                tokio::time::timeout(Duration::from_millis(500), answers.next(TEST_TIMEOUT)).await
            {
                return m;
            }
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends a signal with the `kill` command (no unsafe libc call needed in tests).
pub fn unsafe_free_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// The osgate binary under test.
pub fn osgate_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_osgate"))
}

/// Runs `osgate ARGS…` to completion; returns (exit code, stdout, stderr).
pub fn osgate_cmd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(osgate_bin())
        .args(args)
        .output()
        .expect("run osgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running gateway process.
pub struct Gateway {
    child: Option<Child>,
    /// Its temp dir (config, log).
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    log: PathBuf,
}

impl Gateway {
    /// Writes `config` and starts `osgate -c CONFIG --log-format json` with `extra` args.
    pub fn start(config: &Value) -> Gateway {
        Self::start_with(config, &[], &[])
    }

    /// Like [`Gateway::start`] with extra args and environment variables.
    pub fn start_with(config: &Value, extra: &[&str], env: &[(&str, &str)]) -> Gateway {
        let dir = temp_dir();
        let path = dir.path().join("osgate.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        Self::start_file(dir, path, extra, env)
    }

    /// Like [`Gateway::start_with`] without `RUST_LOG`: osgate's own default log filter.
    pub fn start_default_log(config: &Value, extra: &[&str], env: &[(&str, &str)]) -> Gateway {
        let dir = temp_dir();
        let path = dir.path().join("osgate.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        Self::spawn(dir, path, extra, env, false)
    }

    /// Starts osgate on an existing config file in `dir`.
    pub fn start_file(
        dir: tempfile::TempDir,
        config: PathBuf,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Gateway {
        Self::spawn(dir, config, extra, env, true)
    }

    fn spawn(
        dir: tempfile::TempDir,
        config: PathBuf,
        extra: &[&str],
        env: &[(&str, &str)],
        rust_log: bool,
    ) -> Gateway {
        let log = dir.path().join("osgate.log");
        let logf = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(osgate_bin());
        cmd.arg("-c")
            .arg(&config)
            .args(["--log-format", "json"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(logf);
        if rust_log {
            cmd.env("RUST_LOG", "info,osgate=debug,rumqttd=off");
        } else {
            cmd.env_remove("RUST_LOG");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn osgate");
        Gateway {
            child: Some(child),
            dir,
            config,
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends a signal (`TERM`, `KILL`, `HUP`…).
    pub fn signal(&self, sig: &str) {
        unsafe_free_kill(self.pid(), sig);
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let until = Instant::now() + within;
        loop {
            if let Some(st) = c.try_wait().expect("try_wait") {
                return st;
            }
            if Instant::now() > until {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "osgate still running {within:?} after the signal; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log as JSON objects (lines that are not JSON are skipped).
    pub fn log_json(&self) -> Vec<Value> {
        log_json_of(&self.log_text())
    }

    /// Waits until a log line's message contains `needle`; returns that line.
    pub async fn wait_log(&self, needle: &str, within: Duration) -> Value {
        wait_log_of(self, needle, within).await
    }

    /// The directory of the config.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl GatewayLog for Gateway {
    fn log_text(&self) -> String {
        Gateway::log_text(self)
    }
}

/// A gateway's log: the binary's stderr ([`Gateway`]) or an in-process gateway's ([`InProc`]).
pub trait GatewayLog {
    /// The log so far.
    fn log_text(&self) -> String;
}

/// The JSON lines of a log (lines that are not JSON are skipped).
pub fn log_json_of(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits until a line of `gw`'s log has a message containing `needle`; returns that line.
pub async fn wait_log_of(gw: &(impl GatewayLog + ?Sized), needle: &str, within: Duration) -> Value {
    let until = Instant::now() + within;
    loop {
        let text = gw.log_text();
        if let Some(l) = log_json_of(&text)
            .into_iter()
            .find(|l| l["message"].as_str().is_some_and(|m| m.contains(needle)))
        {
            return l;
        }
        if Instant::now() > until {
            panic!("no log line containing {needle:?} within {within:?}; log:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A message received by a [`Subscriber`].
#[derive(Debug, Clone)]
pub struct Msg {
    /// Topic.
    pub topic: String,
    /// Payload parsed as JSON (`Null` if it is not JSON).
    pub json: Value,
    /// Retained flag.
    pub retain: bool,
}

/// An MQTT subscriber that keeps reconnecting (persistent session, QoS 1).
pub struct Subscriber {
    rx: mpsc::UnboundedReceiver<Msg>,
    task: tokio::task::JoinHandle<()>,
    /// Messages received so far (filled by [`Subscriber::drain`]).
    pub seen: Vec<Msg>,
}

impl Subscriber {
    /// Connects to 127.0.0.1:`port` and subscribes to `filter` at QoS 1; returns once the
    /// subscription is acknowledged.
    pub async fn connect(port: u16, filter: &str) -> Subscriber {
        Self::connect_opts(Self::options(port), filter).await
    }

    /// Like [`Subscriber::connect`] over TLS with `tls` (rumqttc with a rustls config
    /// that trusts `tls.ca_file` and presents `tls.cert_file`, if set).
    pub async fn connect_tls(port: u16, filter: &str, tls: &osgate::net::TlsConfig) -> Subscriber {
        osgate::install_crypto_provider();
        let mut opts = Self::options(port);
        let cfg = tls.client_config().expect("test TLS config");
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(std::sync::Arc::new(cfg)),
        ));
        Self::connect_opts(opts, filter).await
    }

    /// Like [`Subscriber::connect`] with a user name and password.
    pub async fn connect_auth(port: u16, filter: &str, user: &str, password: &str) -> Subscriber {
        let mut opts = Self::options(port);
        opts.set_credentials(user, password);
        Self::connect_opts(opts, filter).await
    }

    fn options(port: u16) -> rumqttc::MqttOptions {
        let id = format!("test-sub-{}", rand_suffix());
        let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        opts.set_clean_session(false);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts
    }

    async fn connect_opts(opts: rumqttc::MqttOptions, filter: &str) -> Subscriber {
        use rumqttc::{AsyncClient, Event, Packet, QoS};
        let (client, mut el) = AsyncClient::new(opts, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let filter = filter.to_string();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(c))) => {
                        if !c.session_present {
                            let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let json = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        let _ = tx.send(Msg {
                            topic: p.topic.clone(),
                            json,
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(TEST_TIMEOUT, ready_rx)
            .await
            .expect("subscription acknowledged in time")
            .expect("subscriber task alive");
        Subscriber {
            rx,
            task,
            seen: Vec::new(),
        }
    }

    /// A subscriber reading `rx` (no broker): for tests of the harness itself.
    pub fn from_channel(rx: mpsc::UnboundedReceiver<Msg>) -> Subscriber {
        Subscriber {
            rx,
            task: tokio::spawn(async {}),
            seen: Vec::new(),
        }
    }

    /// The next message, or panics after `within`.
    pub async fn next(&mut self, within: Duration) -> Msg {
        let m = tokio::time::timeout(within, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no MQTT message within {within:?}"))
            .expect("subscriber alive");
        self.seen.push(m.clone());
        m
    }

    /// The next message whose topic satisfies `pred`; panics once `within` has passed, however
    /// many other messages are still waiting.
    pub async fn next_where(&mut self, within: Duration, pred: impl Fn(&Msg) -> bool) -> Msg {
        let until = tokio::time::Instant::now() + within;
        loop {
            let m = deadline::before(until, self.rx.recv())
                .await
                .unwrap_or_else(|| panic!("no matching MQTT message within {within:?}"))
                .expect("subscriber alive");
            self.seen.push(m.clone());
            if pred(&m) {
                return m;
            }
        }
    }

    /// Collects messages until `done(seen)` holds or `within` passes; returns whether it held.
    /// Never reads past the deadline, however many messages are still waiting.
    pub async fn collect_until(&mut self, within: Duration, done: impl Fn(&[Msg]) -> bool) -> bool {
        let until = tokio::time::Instant::now() + within;
        while !done(&self.seen) {
            match deadline::before(until, self.rx.recv()).await {
                Some(Some(m)) => self.seen.push(m),
                _ => return false,
            }
        }
        true
    }

    /// The next message (also kept in `seen`), or `None` after `within`.
    pub async fn try_next(&mut self, within: Duration) -> Option<Msg> {
        let m = tokio::time::timeout(within, self.rx.recv()).await.ok()??;
        self.seen.push(m.clone());
        Some(m)
    }

    /// Moves every message already received into `seen`.
    pub fn drain(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            self.seen.push(m);
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A minimal gateway config: one simulator connector, one MQTT sink to `url`.
pub fn sim_config(gateway: &str, url: &str, devices: Value, sink_extra: Value) -> Value {
    let mut sink = serde_json::json!({"name": "local", "type": "mqtt", "url": url, "qos": 1});
    if let (Some(s), Some(e)) = (sink.as_object_mut(), sink_extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::json!({
        "gateway": {"id": gateway},
        "sinks": [sink],
        "connectors": [{"name": "sim", "protocol": "simulator", "devices": devices}]
    })
}

/// A socat pty pair: two linked serial devices, socat killed on drop.
pub struct PtyPair {
    _socat: tokio::process::Child,
    /// One end.
    pub a: PathBuf,
    /// The other end.
    pub b: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts socat with two linked pseudo-terminals.
pub async fn pty_pair() -> PtyPair {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let socat = tokio::process::Command::new("socat")
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn socat");
    within("socat ptys", async {
        while !(a.exists() && b.exists()) {
            // socat creates the links right after it starts; no event to wait on.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    PtyPair {
        _socat: socat,
        a,
        b,
        _dir: dir,
    }
}
