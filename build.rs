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
            // GIT_OPTIONAL_LOCKS=0: `git status` must not refresh and rewrite the index it is
            // watched by above, or the next build would run this script (and rebuild the
            // crate) again for nothing, as in a fresh clone.
            let dirty = Command::new("git")
                .args(["status", "--porcelain", "--untracked-files=no"])
                .env("GIT_OPTIONAL_LOCKS", "0")
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
    relr_link_args();
}

/// Packed relative relocations (`-z pack-relative-relocs`, "RELR") for the `osgate` binary.
///
/// A position-independent executable carries one fix-up per pointer in its read-only data
/// (vtables, string tables): 34 000 of them at 24 bytes each in the dist build (0.8 MB of
/// file), 55 000 in a release build (1.3 MB). The dynamic loader reads them all at start, so
/// they are also resident memory. Packed, they take a few kilobytes, and the binary stays
/// position-independent (ASLR). rustc's default linker here (LLD) and Debian's ld.bfd (from
/// 2.38) know the option; the binary then needs glibc 2.36 or newer where it runs, so it is
/// used only for a native Linux build on such a glibc (Debian 12, the image's base; Ubuntu
/// 22.10), where the binary is built to run.
fn relr_link_args() {
    let host = std::env::var("HOST").unwrap_or_default();
    let target = std::env::var("TARGET").unwrap_or_default();
    if host == target && target.ends_with("-linux-gnu") && host_glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the glibc this build script runs on is at least `major.minor`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn host_glibc_at_least(major: u32, minor: u32) -> bool {
    extern "C" {
        fn gnu_get_libc_version() -> *const std::ffi::c_char;
    }
    // SAFETY: glibc returns a pointer to a static, NUL-terminated version string.
    let version = unsafe { std::ffi::CStr::from_ptr(gnu_get_libc_version()) };
    let mut parts = version
        .to_str()
        .unwrap_or("")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

/// Not glibc: no packed relocations.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn host_glibc_at_least(_major: u32, _minor: u32) -> bool {
    false
}
