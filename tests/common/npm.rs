//! The node_modules of the npm test peers (`tests/peers/<name>/`: the Z-Wave JS server,
//! node-opcua), installed once per `package-lock.json` with `npm ci` into
//! `<target>/<name>-peer/<hash>/` and shared by every test and run that has the same lockfile.
//! `npm ci` installs exactly the locked versions, from npm's cache when it has them
//! (`--prefer-offline`), so a machine that installed them once needs no network.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// How long `npm ci` may take.
const NPM_TIMEOUT: Duration = Duration::from_secs(600);

/// `tests/peers/<name>`.
pub fn peer_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// The node_modules of peer `name`, installed when `<node_modules>/<marker>` is missing.
pub async fn node_modules(name: &str, marker: &str) -> PathBuf {
    let lock = std::fs::read(peer_dir(name).join("package-lock.json")).expect("package-lock.json");
    let key = format!("{:016x}", fnv(&lock));
    // target/<profile>/deps/integration-… → target/<name>-peer/<key>
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe.ancestors().nth(3).expect("target dir");
    let base = target.join(format!("{name}-peer"));
    let dir = base.join(&key);
    let modules = dir.join("node_modules");
    if modules.join(marker).exists() {
        return modules;
    }
    let tmp = base.join(format!("tmp-{key}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).expect("peer cache dir");
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(peer_dir(name).join(f), tmp.join(f)).expect("copy package files");
    }
    let out = tokio::time::timeout(
        NPM_TIMEOUT,
        Command::new("npm")
            .args([
                "ci",
                "--prefer-offline",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(&tmp)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("npm ci in time")
    .expect("run npm (install nodejs and npm)");
    assert!(
        out.status.success(),
        "npm ci for the {name} peer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another run may have won the race: then its copy is used.
    if std::fs::rename(&tmp, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    assert!(
        modules.join(marker).exists(),
        "npm ci for the {name} peer left no {marker}"
    );
    modules
}

/// FNV-1a, for the cache key (no hashing crate needed for one file).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}
