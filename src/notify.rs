//! The systemd notification protocol (`sd_notify(3)`): tells a service manager that the
//! gateway is ready (`READY=1`), what it is doing (`STATUS=…`), that it is reloading
//! (`RELOADING=1`), stopping (`STOPPING=1`), and that it is alive (`WATCHDOG=1`).
//!
//! A message is one datagram to the Unix socket named by `$NOTIFY_SOCKET`: a path, or an
//! abstract socket when it starts with `@`. Without `$NOTIFY_SOCKET` (not started by systemd
//! with `Type=notify`) every call is a no-op. Failures are logged at debug and otherwise
//! ignored: notification must never stop the gateway. `$WATCHDOG_USEC` (with `$WATCHDOG_PID`,
//! when set, naming this process) asks for `WATCHDOG=1` at least that often; the service loop
//! of [`crate::app`] sends it every half of it, so it stops when that loop stops answering.
//!
//! [`Notifier::from_env`] reads the environment once; `main` makes it and hands it to
//! [`crate::app::run`], and a gateway run in-process (tests) gets [`Notifier::none`], so no two
//! gateways in one process share a service manager.
//!
//! Hand-written (std only) rather than the `sd-notify` crate: it is a dozen lines over
//! `UnixDatagram`, one socket is kept per notifier instead of one per message, and std
//! already names abstract sockets (`SocketAddrExt::from_abstract_name`).

use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where messages go.
#[derive(Debug)]
struct Target {
    sock: UnixDatagram,
    addr: SocketAddr,
}

/// The service manager to notify, if any.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<Target>,
}

/// The address `$NOTIFY_SOCKET` names: `@name` is an abstract socket, anything else a path.
fn socket_addr(name: &[u8]) -> Option<SocketAddr> {
    let addr = match name.strip_prefix(b"@") {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name),
        None => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(name)),
    };
    addr.map_err(|e| tracing::warn!(error = %e, "NOTIFY_SOCKET is not a usable socket address"))
        .ok()
}

impl Notifier {
    /// The service manager named by `$NOTIFY_SOCKET`; none without it.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET")
            .and_then(|path| socket_addr(path.as_bytes()))
            .and_then(|addr| match UnixDatagram::unbound() {
                Ok(sock) => Some(Target { sock, addr }),
                Err(e) => {
                    tracing::warn!(error = %e, "NOTIFY_SOCKET is set but no socket could be made; systemd will not hear from osgate");
                    None
                }
            });
        Notifier { target }
    }

    /// No service manager: every call is a no-op.
    pub fn none() -> Notifier {
        Notifier::default()
    }

    /// True when a service manager listens (`$NOTIFY_SOCKET` was set and usable).
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (newline-separated `KEY=value` assignments) to the service manager.
    pub fn send(&self, state: &str) {
        if let Some(t) = &self.target {
            if let Err(e) = t.sock.send_to_addr(state.as_bytes(), &t.addr) {
                tracing::debug!(error = %e, "sd_notify failed");
            }
        }
    }

    /// `READY=1` with a status line: startup (or a reload) is complete.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `RELOADING=1` with a status line: a reload starts; [`Notifier::ready`] ends it.
    pub fn reloading(&self, status: &str) {
        self.send(&format!("RELOADING=1\nSTATUS={}", one_line(status)));
    }

    /// `STOPPING=1` with a status line: shutdown has begun.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`: the gateway is alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when the watchdog is on for
    /// this process (`$WATCHDOG_PID` unset or this process's id) and a service manager listens.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        if !self.enabled() {
            return None;
        }
        watchdog_interval_from(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        )
    }
}

/// A status text without line breaks (a newline would start a new assignment).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// [`Notifier::watchdog_interval`] from the variables' values.
fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(p) = pid {
        if p.trim().parse::<u32>().ok() != Some(me) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_runs_at_half_the_period_for_this_process_only() {
        let half = Some(Duration::from_millis(100));
        assert_eq!(watchdog_interval_from(Some("200000"), None, 7), half);
        assert_eq!(watchdog_interval_from(Some("200000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval_from(Some("200000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval_from(None, None, 7), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 7), None);
    }

    #[test]
    fn abstract_and_path_sockets_are_told_apart() {
        let a = socket_addr(b"@osgate/notify").unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"osgate/notify"[..]));
        let p = socket_addr(b"/run/systemd/notify").unwrap();
        assert_eq!(
            p.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        assert_eq!(one_line("a\nb\rc"), "a b c");
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        let name = format!("osgate-test-notify-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        let tx = UnixDatagram::unbound().unwrap();
        let to = socket_addr(format!("@{name}").as_bytes()).unwrap();
        tx.send_to_addr(b"READY=1", &to).unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
