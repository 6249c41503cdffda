//! Build script: names the git commit the binary was built from, for `osgate --version`,
//! `gateway.status` and `status/{gateway}` (`OSGATE_COMMIT` at compile time).
//!
//! The commit is `git rev-parse --short=12 HEAD`, with `-dirty` when tracked files differ from
//! it; without git or a repository (a source tarball, a container build without `.git`) it is
//! the environment variable `OSGATE_GIT_COMMIT` (the Dockerfile passes it as a build argument),
//! else `unknown`. The script runs again when HEAD moves (a commit, a checkout) or the index
//! changes; an edit that is not staged yet shows up as `-dirty` at the next of those.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=OSGATE_GIT_COMMIT");
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(hash) => {
            // Rerun when HEAD moves: HEAD itself (a checkout), the branch it points to (a
            // commit), packed refs, and the index (staging, which `git status` also reads).
            // A path that does not exist would make cargo rerun this at every build.
            let watch = |p: PathBuf| {
                if p.exists() {
                    println!("cargo:rerun-if-changed={}", p.display());
                }
            };
            if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
                let dir = PathBuf::from(dir);
                watch(dir.join("HEAD"));
                watch(dir.join("index"));
            }
            if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
                let common = PathBuf::from(common);
                // A branch lives in its own file, or in packed-refs once packed.
                watch(common.join("packed-refs"));
                if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    watch(common.join(r));
                }
            }
            let dirty = Command::new("git")
                .args(["status", "--porcelain", "--untracked-files=no"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .is_some_and(|o| !o.stdout.is_empty());
            if dirty {
                format!("{hash}-dirty")
            } else {
                hash
            }
        }
        None => std::env::var("OSGATE_GIT_COMMIT")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".to_string()),
    };
    println!("cargo:rustc-env=OSGATE_COMMIT={commit}");
}
