//! The Z-Wave peer for the tests: a real Z-Wave JS Server on a simulated stick with two nodes
//! (`tests/peers/zwave`, see its README): node 2 an air temperature sensor (°C, reports every
//! 2 s), node 3 a plug with a binary switch and a kWh meter, node 4 a thermostat whose mode has
//! enumerated states.
//!
//! Its node_modules are installed once per `package-lock.json` (`npm ci`, ~20 s) into
//! `<target>/zwave-peer/<hash>/` ([`super::npm`]) and shared by every peer: each [`ZwavePeer`]
//! gets its own work dir (driver cache, logs) and its own ports, and its processes are killed
//! on drop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{free_port, temp_dir};

/// `tests/peers/zwave`.
pub fn peer_dir() -> PathBuf {
    super::npm::peer_dir("zwave")
}

/// The shared node_modules of the peer, installed on first use.
pub async fn node_modules() -> PathBuf {
    static DIR: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
    DIR.get_or_init(|| super::npm::node_modules("zwave", ".bin/zwave-server"))
        .await
        .clone()
}

/// A running Z-Wave JS Server and its simulated stick.
pub struct ZwavePeer {
    dir: tempfile::TempDir,
    /// The stick's TCP port.
    pub mock_port: u16,
    /// The server's WebSocket port.
    pub ws_port: u16,
    server_pid: Option<u32>,
    mock_pid: Option<u32>,
    /// A server started again by [`ZwavePeer::restart_server`], killed on drop.
    restarted: Option<Child>,
    /// Its output.
    restarted_log: Arc<Mutex<String>>,
}

impl ZwavePeer {
    /// Starts the stick and the server (`start.sh`); returns once the server listens.
    pub async fn start() -> ZwavePeer {
        let modules = node_modules().await;
        let dir = temp_dir();
        std::os::unix::fs::symlink(&modules, dir.path().join("node_modules")).expect("symlink");
        let (mock_port, ws_port) = (free_port(), free_port());
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            Command::new(peer_dir().join("start.sh"))
                .arg(dir.path())
                .arg(mock_port.to_string())
                .arg(ws_port.to_string())
                .stdin(Stdio::null())
                .output(),
        )
        .await
        .expect("start.sh in time")
        .expect("run start.sh");
        let pid = |f: &str| {
            std::fs::read_to_string(dir.path().join(f))
                .ok()
                .and_then(|s| s.trim().parse().ok())
        };
        let peer = ZwavePeer {
            server_pid: pid("server.pid"),
            mock_pid: pid("mock.pid"),
            dir,
            mock_port,
            ws_port,
            restarted: None,
            restarted_log: Arc::default(),
        };
        assert!(
            out.status.success(),
            "Z-Wave peer did not start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            peer.server_log()
        );
        peer
    }

    /// `ws://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.ws_port)
    }

    /// The server's log so far (for failure messages).
    pub fn server_log(&self) -> String {
        let first = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        first + &self.restarted_log.lock().expect("log lock")
    }

    /// Sends `sig` to the server (`KILL`: gone without a close frame; `STOP`/`CONT`: silent).
    pub fn signal_server(&mut self, sig: &str) {
        if let Some(pid) = self.server_pid {
            super::unsafe_free_kill(pid, sig);
            if sig == "KILL" {
                self.server_pid = None;
                let gone = (0..100).any(|_| {
                    std::thread::sleep(Duration::from_millis(20));
                    !Path::new(&format!("/proc/{pid}")).exists()
                        || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                            .is_ok_and(|s| s.contains(") Z "))
                });
                assert!(gone, "zwave-server {pid} still running after SIGKILL");
            }
        }
    }

    /// Starts the server again on the same ports (after [`ZwavePeer::signal_server`]`("KILL")`);
    /// returns once it listens.
    pub async fn restart_server(&mut self) {
        let mut child = Command::new("./node_modules/.bin/zwave-server")
            .arg(format!("tcp://127.0.0.1:{}", self.mock_port))
            .args(["--config", "zwave-server.config.cjs", "--host", "127.0.0.1"])
            .arg("--port")
            .arg(self.ws_port.to_string())
            .arg("--disable-dns-sd")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn zwave-server");
        self.server_pid = child.id();
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let log = self.restarted_log.clone();
        let listening = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(l)) = lines.next_line().await {
                let found = l.contains("listening on");
                log.lock().expect("log lock").push_str(&l);
                log.lock().expect("log lock").push('\n');
                if found {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            listening == Ok(true),
            "restarted zwave-server did not listen: {}",
            self.server_log()
        );
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                let mut g = log.lock().expect("log lock");
                g.push_str(&l);
                g.push('\n');
            }
        });
        self.restarted = Some(child);
    }
}

impl Drop for ZwavePeer {
    fn drop(&mut self) {
        if let Some(pid) = self.server_pid.take() {
            super::unsafe_free_kill(pid, "KILL");
        }
        if let Some(pid) = self.mock_pid.take() {
            super::unsafe_free_kill(pid, "KILL");
        }
    }
}
