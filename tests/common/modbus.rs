//! Modbus peers for the tests, each a child process killed on drop:
//!
//! - [`pymodbus`]: `tests/peers/modbus_peer.py`, an independent implementation (pymodbus) serving
//!   the registers of a JSON spec, and [`pymodbus_read`] to read a value back with its client;
//! - [`ModbusSim`]: our own `examples/modbus_sim` (counters and sines on `--units` unit ids;
//!   any other unit id gets exception 0x0B), built once per test run;
//! - [`spawn_ready`]: any peer that prints `READY <arg>` once it serves;
//! - [`established_connections`]: this process's established TCP connections to a port.
//!
//! Every wait is bounded by [`TEST_TIMEOUT`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value as Json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::within;

/// `tests/peers`.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

pub use super::python;

/// A child process killed when dropped, with the argument of its `READY` line and the lines
/// it prints after it.
pub struct Peer {
    child: Child,
    /// What followed `READY ` (a port for pymodbus over TCP, an address for modbus_sim).
    pub ready: String,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Peer {
    /// Waits for an output line that satisfies `f`.
    pub async fn line(&mut self, f: impl Fn(&str) -> bool) -> String {
        within("a peer output line", async {
            loop {
                let l = self.lines.recv().await.expect("peer still running");
                if f(&l) {
                    return l;
                }
            }
        })
        .await
    }

    /// Kills the peer and waits until it has exited (its port is free again).
    pub async fn kill(&mut self) {
        within("the peer to exit", self.child.kill())
            .await
            .expect("kill peer");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Spawns `cmd` and waits for its `READY <arg>` line; keeps draining its stdout after it.
pub async fn spawn_ready(mut cmd: Command) -> Peer {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawn peer");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = within("peer READY line", async {
        loop {
            match lines.next_line().await.expect("read peer stdout") {
                Some(l) if l.starts_with("READY ") => break l[6..].trim().to_string(),
                Some(_) => continue,
                None => panic!("peer exited before READY"),
            }
        }
    })
    .await;
    // Keep draining stdout so the peer never blocks on a full pipe.
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            let _ = tx.send(l);
        }
    });
    Peer {
        child,
        ready,
        lines: rx,
    }
}

/// Starts the pymodbus peer on the registers of `spec` (see `tests/peers/modbus_peer.py`);
/// `how` is e.g. `["--tcp", "127.0.0.1:0"]`. Over TCP, [`Peer::ready`] is the port.
pub async fn pymodbus(spec: &Json, how: &[&str]) -> Peer {
    let mut cmd = Command::new(python());
    cmd.arg(peers_dir().join("modbus_peer.py"))
        .arg("serve")
        .arg("--spec")
        .arg(spec.to_string())
        .args(how);
    spawn_ready(cmd).await
}

/// Reads one value from the Modbus TCP server at `addr` with pymodbus's client and decoder;
/// `args` as `modbus_peer.py read` takes them (`--unit 1 --table holding` by default).
pub async fn pymodbus_read(addr: &str, args: &[&str]) -> Json {
    let out = within(
        "pymodbus read",
        Command::new(python())
            .arg(peers_dir().join("modbus_peer.py"))
            .arg("read")
            .arg("--tcp")
            .arg(addr)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run pymodbus read");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Json = serde_json::from_slice(&out.stdout).expect("json");
    v["value"].clone()
}

/// How long building `examples/modbus_sim` may take (it links the whole crate).
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// The `modbus_sim` example binary: `cargo build --example modbus_sim` once per test run (a
/// no-op when it is up to date), into the target dir of this test binary; or the binary
/// `OSGATE_TEST_MODBUS_SIM` names, built beforehand (CI does, so that no test waits for
/// cargo's build lock while other cargo commands run beside the tests).
pub async fn modbus_sim_bin() -> PathBuf {
    static BIN: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    BIN.get_or_init(|| async {
        if let Some(bin) = std::env::var_os("OSGATE_TEST_MODBUS_SIM") {
            return PathBuf::from(bin);
        }
        // target/<profile>/deps/integration-… → target/<profile>/examples/modbus_sim
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>");
        let target_dir = profile_dir.parent().expect("target dir");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "--quiet",
            "--example",
            "modbus_sim",
            "--manifest-path",
        ])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .kill_on_drop(true)
        .stdin(Stdio::null());
        // Not the variables cargo set for this test binary (`CARGO_PKG_NAME=osgate`,
        // `CARGO_MANIFEST_DIR`, `OUT_DIR`…): build scripts (ring's) name them in
        // `rerun-if-env-changed`, so with them this build would rebuild ring, rustls and
        // everything above them, and the next plain `cargo build` all of it again. The ones
        // that configure cargo (`CARGO_INCREMENTAL`, `CARGO_HOME`…) stay: without them this
        // build would differ from the one that made the tests, and rebuild the workspace.
        const SET_FOR_THE_TEST: [&str; 8] = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_TARGET_TMPDIR",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ];
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if SET_FOR_THE_TEST.iter().any(|p| k.starts_with(p)) {
                cmd.env_remove(&*k);
            }
        }
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let out = tokio::time::timeout(BUILD_TIMEOUT, cmd.output())
            .await
            .expect("cargo build --example modbus_sim in time")
            .expect("run cargo");
        assert!(
            out.status.success(),
            "cargo build --example modbus_sim: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = profile_dir.join("examples").join("modbus_sim");
        assert!(bin.exists(), "{} not built", bin.display());
        bin
    })
    .await
    .clone()
}

/// `examples/modbus_sim` serving unit ids `1..=units` with `registers` registers each.
pub struct ModbusSim {
    /// The process; killed on drop.
    pub peer: Peer,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its port.
    pub port: u16,
}

impl ModbusSim {
    /// Starts the simulator on a free port.
    pub async fn start(units: u8, registers: u16) -> ModbusSim {
        Self::start_on("127.0.0.1:0", units, registers).await
    }

    /// Starts the simulator on `listen` (`127.0.0.1:PORT`, e.g. the port of one just killed).
    pub async fn start_on(listen: &str, units: u8, registers: u16) -> ModbusSim {
        let mut cmd = Command::new(modbus_sim_bin().await);
        cmd.args(["--listen", listen])
            .args(["--units", &units.to_string()])
            .args(["--registers", &registers.to_string()]);
        let peer = spawn_ready(cmd).await;
        let addr = peer
            .ready
            .split_whitespace()
            .next()
            .expect("READY <addr>")
            .to_string();
        let port = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("modbus_sim READY {addr}: no port"));
        ModbusSim { peer, addr, port }
    }
}

/// This process's established TCP connections to `127.0.0.1:port` (or any address on that
/// port): the sockets in `/proc/net/tcp{,6}` in state ESTABLISHED whose remote port is `port`
/// and whose inode is one of this process's open file descriptors.
pub fn established_connections(port: u16) -> usize {
    let mine: HashSet<u64> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_str()?.to_string();
            l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect();
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode …
            if f.len() < 10 || f[3] != "01" {
                continue;
            }
            let rem_port = f[2]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            let inode: Option<u64> = f[9].parse().ok();
            if rem_port == Some(port) && inode.is_some_and(|i| mine.contains(&i)) {
                n += 1;
            }
        }
    }
    n
}

/// A Modbus TCP connector config to `addr` (a unique name, short timeouts and backoffs for
/// tests) with `extra` connector keys and `devices`.
pub fn tcp_connector(addr: &str, extra: Json, devices: Json) -> Json {
    let mut c = serde_json::json!({"name": super::connector::unique("plc"), "protocol": "modbus",
        "transport": {"tcp": addr}, "timeout": "300ms", "backoff": "50ms", "backoff_max": "200ms",
        "devices": devices});
    if let (Json::Object(c), Json::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    c
}
