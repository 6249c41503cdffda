//! Saving an applied configuration to the `-c` file, so that a restart (and a SIGHUP reload)
//! comes up with it: the file an engineer reads, checks (`osgate check`) and backs up stays the
//! configuration in force, and `<file>.prev` holds the one before.
//!
//! Two steps around the reload: [`stage`] writes the new text to a hidden temp file next to the
//! target (mode 0600, synced) *before* anything is applied, so a directory that cannot be
//! written refuses the change while nothing has changed yet; [`Staged::commit`] then copies the
//! current file to `<file>.prev` (atomically, through its own temp file) and renames the temp
//! file over the target. A crash at any point leaves a complete old or new file, never a partial
//! one. A staged file that is not committed (the reload was refused) is removed on drop.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Mode of the files written: the configuration may hold secrets.
pub const MODE: u32 = 0o600;

/// `<file>.prev`: the configuration before the last apply.
pub fn prev_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".prev");
    PathBuf::from(s)
}

fn temp_of(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "osgate.json".into());
    path.with_file_name(format!(".{name}.{what}.tmp"))
}

/// Writes `bytes` to a new file at `path` with [`MODE`], synced (a leftover is replaced).
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MODE)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(path: &Path) {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A new configuration written next to its target, not yet in place.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    target: PathBuf,
    bytes: Vec<u8>,
    done: bool,
}

/// Writes `bytes` to a temp file next to `target` (same directory, so the final rename is
/// atomic).
pub fn stage(target: &Path, bytes: &[u8]) -> std::io::Result<Staged> {
    let tmp = temp_of(target, "new");
    write_new(&tmp, bytes)?;
    Ok(Staged {
        tmp,
        target: target.to_path_buf(),
        bytes: bytes.to_vec(),
        done: false,
    })
}

impl Staged {
    /// Puts the staged file in place; the file it replaces becomes `<file>.prev` (unless it is
    /// the same text: applying a configuration twice keeps the one before in `.prev`).
    pub fn commit(mut self) -> std::io::Result<()> {
        match std::fs::read(&self.target) {
            Ok(old) if old == self.bytes => {}
            Ok(old) => {
                let prev = prev_path(&self.target);
                let tmp = temp_of(&self.target, "prev");
                write_new(&tmp, &old)?;
                std::fs::rename(&tmp, &prev)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::rename(&self.tmp, &self.target)?;
        self.done = true;
        sync_dir(&self.target);
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn commit_keeps_the_previous_file_and_sets_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("osgate.json");
        std::fs::write(&f, "old").unwrap();
        let s = stage(&f, b"new").unwrap();
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "old",
            "staging changes nothing"
        );
        s.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(prev_path(&f)).unwrap(), "old");
        for p in [&f, &prev_path(&f)] {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, MODE, "{}", p.display());
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "no temp file left: {names:?}");
        // The same text again: `.prev` keeps the one before.
        stage(&f, b"new").unwrap().commit().unwrap();
        assert_eq!(std::fs::read_to_string(prev_path(&f)).unwrap(), "old");
    }

    #[test]
    fn a_staged_file_not_committed_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.json");
        std::fs::write(&f, "old").unwrap();
        drop(stage(&f, b"new").unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "old");
    }

    #[test]
    fn a_directory_that_cannot_be_written_fails_at_stage() {
        let f = Path::new("/nonexistent-dir-osgate/osgate.json");
        assert!(stage(f, b"x").is_err());
    }
}
