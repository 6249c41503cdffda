//! Who is calling, and WebSocket tickets for browsers.
//!
//! - `session.whoami` → `{"name": "tech", "role": "operator"}`: the caller's key name and role
//!   (a web console asks it after login to decide which controls to show).
//! - `session.ticket` → `{"ticket": "<32 hex digits>", "expires_in": 30}`: a browser cannot set
//!   headers on a WebSocket, and a key in the URL ends up in logs and history; so it asks for a
//!   ticket over HTTP (with its key) and opens `ws://…/?ticket=<t>`. The upgrade is then
//!   authenticated as the key that asked (same name, same role). A ticket is random (128 bits
//!   from the system's generator), single-use and expires after [`TICKET_TTL`]; at most
//!   [`MAX_TICKETS`] are outstanding (the oldest go first).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::RpcModule;
use ring::rand::SecureRandom as _;
use serde_json::{json, Value};

use super::RpcContext;
use crate::auth::Caller;

/// How long a ticket may wait for its WebSocket.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Tickets outstanding at most.
pub const MAX_TICKETS: usize = 1024;

/// Outstanding tickets.
#[derive(Default)]
pub struct Tickets {
    open: Mutex<HashMap<String, (Caller, Instant)>>,
}

impl Tickets {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new ticket for `caller`.
    pub fn issue(&self, caller: Caller) -> Result<String, String> {
        let mut raw = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| "the system's random generator failed".to_string())?;
        let ticket: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut open = self.open.lock().expect("tickets lock");
        open.retain(|_, (_, until)| *until > now);
        if open.len() >= MAX_TICKETS {
            if let Some(k) = open
                .iter()
                .min_by_key(|(_, (_, until))| *until)
                .map(|(k, _)| k.clone())
            {
                open.remove(&k);
            }
        }
        open.insert(ticket.clone(), (caller, now + TICKET_TTL));
        Ok(ticket)
    }

    /// The caller of `ticket`, once: a ticket is gone after this, used or not.
    pub fn redeem(&self, ticket: &str) -> Option<Caller> {
        let (caller, until) = self.open.lock().expect("tickets lock").remove(ticket)?;
        (until > Instant::now()).then_some(caller)
    }
}

/// The ticket in a request's query (`?ticket=<t>`), if any.
pub fn ticket_in_query(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("ticket="))
        .filter(|t| !t.is_empty())
}

/// Registers `session.whoami` and `session.ticket`.
pub fn register(m: &mut RpcModule<RpcContext>) {
    m.register_method("session.whoami", |_, _, ext| {
        let c = ext
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(super::roles::local);
        Ok::<Value, ErrorObjectOwned>(json!({"name": c.name, "role": c.role.as_str()}))
    })
    .expect("unique");
    m.register_method("session.ticket", |_, ctx, ext| {
        let c = ext
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(super::roles::local);
        let ticket = ctx
            .tickets
            .issue(c)
            .map_err(|e| ErrorObjectOwned::owned(-32603, e, None::<()>))?;
        Ok::<Value, ErrorObjectOwned>(json!({"ticket": ticket, "expires_in": TICKET_TTL.as_secs()}))
    })
    .expect("unique");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn tickets_are_single_use_and_random() {
        let t = Tickets::new();
        let c = Caller {
            name: "tech".into(),
            role: Role::Operator,
        };
        let a = t.issue(c.clone()).unwrap();
        let b = t.issue(c.clone()).unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(t.redeem(&a), Some(c));
        assert_eq!(t.redeem(&a), None);
        assert_eq!(t.redeem("0123"), None);
    }

    #[test]
    fn the_ticket_comes_from_the_query() {
        assert_eq!(ticket_in_query(Some("ticket=abc")), Some("abc"));
        assert_eq!(ticket_in_query(Some("x=1&ticket=abc")), Some("abc"));
        assert_eq!(ticket_in_query(Some("ticket=")), None);
        assert_eq!(ticket_in_query(None), None);
    }
}
