//! `bdSeq` across restarts: the birth/death sequence number of the last connection, kept in a
//! small file of the state directory (`sparkplug-{sink}.bdseq`).
//!
//! Each connection takes the next number (0–255, wrapping), writes it before it connects, and
//! puts it in its will (NDEATH) and its NBIRTH, so a host can tell the death of this connection
//! from that of an older one even after osgate restarted. The file is replaced atomically
//! (written beside it, then renamed). A state directory that cannot be written is logged once and
//! the sequence goes on in memory: hosts still get matching NBIRTH and NDEATH.

use std::path::{Path, PathBuf};

/// The directory `bdSeq` is kept in: the configured one, else `$STATE_DIRECTORY` (systemd's
/// `StateDirectory=`, the first of several), else the working directory.
pub fn state_dir(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .map(PathBuf::from)
        })
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The stored sequence of one sink.
#[derive(Debug)]
pub struct BdSeqStore {
    path: PathBuf,
    last: Option<u8>,
    warned: bool,
}

impl BdSeqStore {
    /// Opens `dir/sparkplug-{sink}.bdseq`; a missing or unreadable file starts at 0.
    pub fn open(dir: &Path, sink: &str) -> Self {
        let path = dir.join(format!("sparkplug-{sink}.bdseq"));
        let last = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<u8>().ok());
        BdSeqStore {
            path,
            last,
            warned: false,
        }
    }

    /// The number of the next connection, stored before it is used.
    pub fn take_next(&mut self) -> u64 {
        let n = self.last.map_or(0, |l| l.wrapping_add(1));
        self.last = Some(n);
        let tmp = self.path.with_extension("bdseq.tmp");
        let res =
            std::fs::write(&tmp, format!("{n}\n")).and_then(|_| std::fs::rename(&tmp, &self.path));
        match res {
            Ok(()) => self.warned = false,
            Err(e) if !self.warned => {
                self.warned = true;
                tracing::warn!(file = %self.path.display(), error = %e,
                    "cannot store the Sparkplug bdSeq; it restarts at 0 after a restart");
            }
            Err(_) => {}
        }
        n as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_across_opens_and_wraps() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = BdSeqStore::open(dir.path(), "sp");
        assert_eq!((s.take_next(), s.take_next()), (0, 1));
        let mut s = BdSeqStore::open(dir.path(), "sp");
        assert_eq!(s.take_next(), 2);
        std::fs::write(dir.path().join("sparkplug-sp.bdseq"), "255\n").unwrap();
        assert_eq!(BdSeqStore::open(dir.path(), "sp").take_next(), 0);
        assert_eq!(state_dir(Some(Path::new("/x"))), PathBuf::from("/x"));
    }
}
