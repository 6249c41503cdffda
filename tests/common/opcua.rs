//! The OPC-UA peers for the tests, two independent server stacks, each on a free loopback
//! port in a temp dir of its own (where, with security, it keeps its certificate) and killed
//! on drop:
//!
//! - [`OpcuaPeer`]: `tests/peers/opcua_server.py` (python asyncua, installed by `.ci/run` from
//!   `tests/peers/requirements.txt`), restartable on the same port; [`asyncua_read`] reads a
//!   variable back with asyncua's own client.
//! - [`NodeOpcuaPeer`]: `tests/peers/node-opcua/server.js` (node-opcua from npm, installed
//!   under `target/` by [`super::npm`]), which prints every value a client writes.
//!
//! Every wait is bounded; starting a peer may take several seconds (Python imports, node-opcua
//! loading the standard nodeset), so it gets [`START_TIMEOUT`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::{free_port, temp_dir, TEST_TIMEOUT};

/// How long the peer may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The namespace URI of the peer's variables.
pub const NS_URI: &str = "urn:osgate:test-peer";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/opcua_server.py")
}

/// The standard address space as an asyncua shelf, built once (per asyncua version, under
/// `target/tmp`) and shared by every asyncua peer, which then loads the standard nodes it uses
/// instead of building all of them: about 1 s of CPU less per start. `None` (each peer builds
/// its own) when it could not be made.
async fn shelf() -> Option<PathBuf> {
    static SHELF: tokio::sync::OnceCell<Option<PathBuf>> = tokio::sync::OnceCell::const_new();
    SHELF
        .get_or_init(|| async {
            let made = tokio::time::timeout(
                START_TIMEOUT,
                Command::new(super::python())
                    .arg(script())
                    .arg("--make-shelf")
                    .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("opcua-aspace"))
                    .stdin(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .output(),
            )
            .await;
            match made {
                Ok(Ok(out)) if out.status.success() => Some(PathBuf::from(
                    String::from_utf8_lossy(&out.stdout).trim().to_owned(),
                )),
                _ => None,
            }
        })
        .await
        .clone()
}

/// A running asyncua server.
pub struct OpcuaPeer {
    /// `opc.tcp://127.0.0.1:PORT/osgate/`.
    pub url: String,
    /// Its working dir (with security: `server-cert.der` is there).
    pub dir: tempfile::TempDir,
    secure: bool,
    dns_first: bool,
    child: Option<Child>,
}

impl OpcuaPeer {
    /// Starts the peer with security None only.
    pub async fn start() -> OpcuaPeer {
        Self::start_with(false).await
    }

    /// Starts the peer; `secure` also offers Basic256Sha256 SignAndEncrypt.
    pub async fn start_with(secure: bool) -> OpcuaPeer {
        Self::start_secure(secure, false).await
    }

    /// Starts a secure peer whose certificate names the host first and its URI last, the
    /// order node-opcua writes them in.
    pub async fn start_dns_first() -> OpcuaPeer {
        Self::start_secure(true, true).await
    }

    async fn start_secure(secure: bool, dns_first: bool) -> OpcuaPeer {
        let mut p = OpcuaPeer {
            url: format!("opc.tcp://127.0.0.1:{}/osgate/", free_port()),
            dir: temp_dir(),
            secure,
            dns_first,
            child: None,
        };
        p.spawn().await;
        p
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(super::python());
        cmd.arg(script())
            .arg(&self.url)
            .arg("900")
            .current_dir(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if self.secure {
            cmd.env("OPCUA_SECURE", "1");
        }
        if self.dns_first {
            cmd.env("OPCUA_SAN_DNS_FIRST", "1");
        }
        if let Some(shelf) = shelf().await {
            cmd.env("OPCUA_SHELF", shelf);
        }
        let mut child = cmd
            .spawn()
            .expect("spawn python3 (is asyncua installed? .ci/run installs it)");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(l)) = lines.next_line().await {
                if l.contains("asyncua server listening") {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(ready, Ok(true)),
            "the asyncua peer did not start on {} (pip install -r tests/peers/requirements.txt)",
            self.url
        );
        // Keep draining stdout so the peer never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }

    /// The server's certificate (secure peers only).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server-cert.der")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("peer running")
    }

    /// Kills the peer (SIGKILL) and waits until it has exited.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = tokio::time::timeout(TEST_TIMEOUT, c.wait()).await;
        }
    }

    /// Starts the peer again on the same port (retried while the port is still taken).
    pub async fn restart(&mut self) {
        self.spawn().await;
    }
}

impl Drop for OpcuaPeer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
    }
}

/// Reads variable `name` of the peer's namespace with asyncua's client; its value as Python
/// prints it.
pub async fn asyncua_read(url: &str, name: &str) -> String {
    let code = r#"
import asyncio, sys
from asyncua import Client, ua
async def main(url, name):
    async with Client(url=url, timeout=5) as c:
        idx = await c.get_namespace_index("urn:osgate:test-peer")
        print(await c.get_node(ua.NodeId(name, idx)).read_value())
asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), 15))
"#;
    let out = tokio::time::timeout(
        START_TIMEOUT,
        Command::new(super::python())
            .args(["-c", code, url, name])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("asyncua client in time")
    .expect("run python3");
    assert!(
        out.status.success(),
        "asyncua read failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A running node-opcua server (`tests/peers/node-opcua`, see its README): the variables of
/// [`OpcuaPeer`] and a String, an AnalogItem with an EURange, a Double array and a writable
/// Int32 array, in namespace [`NS_URI`] under Objects/Plant.
pub struct NodeOpcuaPeer {
    /// `opc.tcp://127.0.0.1:PORT/osgate/`.
    pub url: String,
    /// The port (the server also answers to `localhost`, the name its certificate has first).
    pub port: u16,
    /// Its working dir (`pki/`).
    pub dir: tempfile::TempDir,
    /// Its output so far.
    out: watch::Receiver<String>,
    child: Child,
}

impl NodeOpcuaPeer {
    /// Starts the peer with security None only.
    pub async fn start() -> NodeOpcuaPeer {
        Self::spawn(false).await
    }

    /// Starts the peer offering Basic256Sha256 Sign and SignAndEncrypt too, with a
    /// certificate whose subjectAltName is DNS `localhost`, IP 127.0.0.1, then the URI.
    pub async fn start_secure() -> NodeOpcuaPeer {
        Self::spawn(true).await
    }

    async fn spawn(secure: bool) -> NodeOpcuaPeer {
        static MODULES: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();
        let modules = MODULES
            .get_or_init(|| super::npm::node_modules("node-opcua", "node-opcua/package.json"))
            .await;
        let port = free_port();
        let dir = temp_dir();
        let mut cmd = Command::new("node");
        cmd.arg(super::npm::peer_dir("node-opcua").join("server.js"))
            .arg(port.to_string())
            .env("NODE_PATH", modules)
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if secure {
            cmd.arg("--secure");
        }
        let mut child = cmd.spawn().expect("spawn node (install nodejs)");
        let (log, out) = watch::channel(String::new());
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut errs = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(l)) = lines.next_line().await {
                let found = l.contains("node-opcua server listening");
                push_line(&log, &l);
                if found {
                    return true;
                }
            }
            false
        })
        .await;
        if !matches!(ready, Ok(true)) {
            let _ = child.start_kill();
            let mut err = String::new();
            while let Ok(Ok(Some(l))) =
                tokio::time::timeout(Duration::from_secs(1), errs.next_line()).await
            {
                err.push_str(&l);
                err.push('\n');
            }
            panic!(
                "the node-opcua peer did not start on port {port}: {}\n{err}",
                *out.borrow()
            );
        }
        // Keep draining its output (the writes are in it) so it never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                push_line(&log, &l);
            }
        });
        tokio::spawn(async move { while let Ok(Some(_)) = errs.next_line().await {} });
        NodeOpcuaPeer {
            url: format!("opc.tcp://127.0.0.1:{port}/osgate/"),
            port,
            dir,
            out,
            child,
        }
    }

    /// The server's certificate (PEM; secure peers only).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("pki/own/certs/server.pem")
    }

    /// Waits until the peer has printed `line` (e.g. `write Setpoint 42.5`); false when it
    /// did not within [`TEST_TIMEOUT`].
    pub async fn printed(&self, line: &str) -> bool {
        let mut out = self.out.clone();
        let seen = out.wait_for(|o| o.lines().any(|l| l == line));
        let found = matches!(tokio::time::timeout(TEST_TIMEOUT, seen).await, Ok(Ok(_)));
        found
    }

    /// What the peer printed so far.
    pub fn output(&self) -> String {
        self.out.borrow().clone()
    }
}

impl Drop for NodeOpcuaPeer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn push_line(log: &watch::Sender<String>, l: &str) {
    log.send_modify(|o| {
        o.push_str(l);
        o.push('\n');
    });
}
