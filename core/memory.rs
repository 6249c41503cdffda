//! The process's memory on a small edge box: glibc's malloc limited to one arena, and what
//! starting (or reloading) leaves behind given back once the gateway runs.
//!
//! Why: the gateway's steady state needs a fraction of what its start touches. Parsing the
//! configuration builds and frees JSON trees of several times the file's size, and malloc
//! keeps freed memory for reuse; the code that only runs at start (the command line, the
//! configuration loader and its formats, TLS setup) stays mapped once it ran, and the kernel
//! maps the pages around each one touched as well. [`release_after_start`] hands both back.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;

/// Gives glibc's malloc one arena for all threads. By default every thread that allocates may
/// get an arena of its own (up to 8 per core), each keeping freed memory for reuse; the
/// gateway's worker and blocking threads then hold several MB of mostly idle heap. One arena
/// saves about 1 MB against two on 100 Modbus TCP hosts, with no CPU cost measurable on two
/// cores (threads allocate from their own tcache first); both measured in the memory
/// benchmarks. `MALLOC_ARENA_MAX` in the environment still wins: glibc reads it first.
pub(crate) fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        /// `M_ARENA_MAX` from glibc's `malloc.h`.
        const M_ARENA_MAX: std::ffi::c_int = -8;
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only sets a tunable; it is called before the runtime starts
            // its threads.
            unsafe {
                mallopt(M_ARENA_MAX, 1);
            }
        }
    }
}

/// Whether [`release_after_start`] gives anything back in this process.
static RELEASE: AtomicBool = AtomicBool::new(false);

/// Makes [`release_after_start`] give memory back in this process: the gateway's own (`osgate
/// run`). A process that embeds the service (a test binary) keeps its pages.
pub fn release_in_this_process() {
    RELEASE.store(true, Relaxed);
}

/// Gives back what starting or reloading left behind: free heap memory to the kernel
/// (`malloc_trim`), and the pages of the binary mapped so far (`MADV_PAGEOUT`, Linux 5.4 and
/// later), so that only the code the running gateway uses is mapped again. Those pages are
/// clean copies of the file, never lost: a reload maps what it needs again, at the cost of
/// reading it. Does nothing where either is not available.
pub fn release_after_start() {
    if !RELEASE.load(Relaxed) {
        return;
    }
    // What was given back is read from /proc only when it will be logged.
    let logged = tracing::enabled!(tracing::Level::DEBUG);
    let before = if logged { resident() } else { (0, 0) };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only returns free memory of malloc's arenas to the kernel.
        unsafe {
            malloc_trim(0);
        }
    }
    #[cfg(target_os = "linux")]
    page_out_binary();
    if !logged {
        return;
    }
    let after = resident();
    tracing::debug!(
        anon_kb_before = before.0,
        file_kb_before = before.1,
        anon_kb_after = after.0,
        file_kb_after = after.1,
        "memory given back"
    );
}

/// The process's resident memory in kB: anonymous (heap, stacks) and file pages (the binary
/// and libraries), from `/proc/self/status`; zeros where it is not available.
fn resident() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_ascii_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (kb("RssAnon:"), kb("RssFile:"))
}

/// Asks the kernel to reclaim the pages of the binary's read-only and executable mappings.
#[cfg(target_os = "linux")]
fn page_out_binary() {
    extern "C" {
        fn madvise(
            addr: *mut std::ffi::c_void,
            len: usize,
            advice: std::ffi::c_int,
        ) -> std::ffi::c_int;
    }
    /// `MADV_PAGEOUT` from Linux's `mman-common.h`.
    const MADV_PAGEOUT: std::ffi::c_int = 21;
    let (Ok(exe), Ok(maps)) = (
        std::fs::read_link("/proc/self/exe"),
        std::fs::read_to_string("/proc/self/maps"),
    ) else {
        return;
    };
    for (start, end) in binary_mappings(&maps, &exe.to_string_lossy()) {
        // SAFETY: the range is a whole mapping of the binary's file that is not writable;
        // MADV_PAGEOUT only drops clean pages, which the next access maps again.
        let r = unsafe { madvise(start as *mut std::ffi::c_void, end - start, MADV_PAGEOUT) };
        if r != 0 {
            // An older kernel (EINVAL): nothing to give back this way.
            return;
        }
    }
}

/// The address ranges of the mappings of `exe` in `maps` (`/proc/self/maps`) that are not
/// writable: its code and read-only data. The writable ones hold relocated data and the
/// program's statics, which are not copies of the file.
fn binary_mappings(maps: &str, exe: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let path = f.nth(3)?;
            if path != exe || perms.as_bytes().get(1) != Some(&b'-') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((
                usize::from_str_radix(a, 16).ok()?,
                usize::from_str_radix(b, 16).ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0000000-55d0c0354000 r--p 00000000 fd:01 1234 /usr/bin/osgate
55d0c0354000-55d0c0bfa000 r-xp 00354000 fd:01 1234 /usr/bin/osgate
55d0c0bfb000-55d0c0c7f000 rw-p 00bf9000 fd:01 1234 /usr/bin/osgate
55d0c1000000-55d0c1600000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000028000 r--p 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000100000-7f0000101000 r-xp 00000000 fd:01 77 /usr/bin/osgate-other
";

    /// Only the binary's own mappings that are not writable are paged out.
    #[test]
    fn the_binarys_read_only_mappings() {
        assert_eq!(
            binary_mappings(MAPS, "/usr/bin/osgate"),
            [
                (0x55d0c0000000, 0x55d0c0354000),
                (0x55d0c0354000, 0x55d0c0bfa000)
            ]
        );
        assert!(binary_mappings(MAPS, "/nonexistent").is_empty());
    }

    /// The binary's pages are given back (fewer file pages resident), and the code paged out
    /// runs again.
    #[test]
    fn the_binarys_pages_are_given_back_and_run_again() {
        let rss_file = || resident().1;
        let before = rss_file();
        release_after_start();
        assert!(rss_file() >= before, "not asked to in this process");
        release_in_this_process();
        release_after_start();
        let after = rss_file();
        assert!(after < before, "RssFile {before} kB -> {after} kB");
        let v: Vec<u64> = (0..1000).collect();
        assert_eq!(v.iter().sum::<u64>(), 499_500);
    }
}
