//! Poll mode: the connector's `poll` devices read with the `Read` service at their interval,
//! on the kit's [`Line`](crate::device::Line) (one session for all of them). The
//! kit owns the schedule, health, backoff and write checks; this is the protocol: connect when
//! needed, resolve the channels' namespace URIs once per connection, read the due channels in
//! one request, and write.

use std::sync::Arc;

use opcua::types::{NamespaceMap, NodeId, ReadValueId, VariantScalarTypeId};

use super::session::{self, Connection, Endpoint, NodeRef};
use super::{value, OpcuaChannel, OpcuaDevice};
use osgate_core::config::DeviceSpec;
use crate::device::{Fault, Poll, Poller, WriteError};
use osgate_core::reading::{Timestamp, Value};

/// The poller of one connector's `poll` devices.
pub struct Reader {
    ep: Arc<Endpoint>,
    conn: Option<Connection>,
    /// The server's namespaces, read at connect when some channel names a URI.
    ns: Option<NamespaceMap>,
    /// Counts connections, so devices resolve their nodes again after a reconnect.
    epoch: u64,
}

impl Reader {
    /// A poller connecting to `ep`.
    pub fn new(ep: Arc<Endpoint>) -> Self {
        Reader {
            ep,
            conn: None,
            ns: None,
            epoch: 0,
        }
    }

    /// The connection, made first when there is none (or it was lost).
    async fn conn(&mut self, needs_ns: bool) -> Result<&Connection, Fault> {
        if self.conn.as_ref().is_some_and(Connection::is_lost) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let conn = self.ep.connect().await?;
            self.ns = None;
            self.epoch += 1;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_ref().expect("connected");
        if needs_ns && self.ns.is_none() {
            match conn.namespaces(&self.ep).await {
                Ok(ns) => self.ns = Some(ns),
                Err(f) => {
                    self.conn = None;
                    return Err(f);
                }
            }
        }
        Ok(self.conn.as_ref().expect("connected"))
    }
}

/// What the poller keeps of a device.
pub struct Device {
    nodes: Vec<NodeRef>,
    /// The array element of each channel (`index`).
    indexes: Vec<Option<u32>>,
    needs_ns: bool,
    /// `nodes` resolved on the server, as of connection `epoch`.
    resolved: Vec<Result<NodeId, Arc<str>>>,
    epoch: u64,
    types: Vec<Option<VariantScalarTypeId>>,
    /// The due channels of one poll and what is read of them (kept to avoid allocating per
    /// poll).
    due: Vec<usize>,
    ids: Vec<ReadValueId>,
}

impl Device {
    /// The state of device `d` (node ids checked at build).
    pub fn new(d: &DeviceSpec<OpcuaDevice, OpcuaChannel>) -> Self {
        let nodes: Vec<NodeRef> = d
            .channels
            .iter()
            .map(|c| c.settings.node.parse().expect("node id checked at build"))
            .collect();
        Device {
            indexes: d.channels.iter().map(|c| c.settings.index).collect(),
            needs_ns: nodes.iter().any(NodeRef::needs_namespaces),
            resolved: Vec::new(),
            epoch: 0,
            types: vec![None; nodes.len()],
            nodes,
            due: Vec::new(),
            ids: Vec::new(),
        }
    }

    fn resolve(&mut self, ns: Option<&NamespaceMap>, epoch: u64) {
        if self.epoch != epoch || self.resolved.len() != self.nodes.len() {
            self.resolved = self
                .nodes
                .iter()
                .map(|n| n.resolve(ns).map_err(Arc::from))
                .collect();
            self.epoch = epoch;
        }
    }
}

impl Poller for Reader {
    type Device = Device;

    async fn poll(&mut self, d: &mut Device, poll: &mut Poll<'_>) -> Result<(), Fault> {
        if let Err(f) = self.conn(d.needs_ns).await {
            let ts = Timestamp::now();
            let why: Arc<str> = f.message.as_str().into();
            for ch in poll.due_channels() {
                poll.push_bad(ch, why.clone(), ts);
            }
            return Err(f);
        }
        d.resolve(self.ns.as_ref(), self.epoch);
        d.due.clear();
        d.ids.clear();
        let ts = Timestamp::now();
        for ch in poll.due_channels() {
            match &d.resolved[ch] {
                Ok(id) => {
                    d.due.push(ch);
                    d.ids.push(session::value_id(id.clone(), d.indexes[ch]));
                }
                Err(why) => poll.push_bad(ch, why.clone(), ts),
            }
        }
        if d.ids.is_empty() {
            return Ok(());
        }
        let conn = self.conn.as_ref().expect("connected");
        match conn.read_values(&self.ep, &d.ids).await {
            Ok(dvs) => {
                for (&ch, dv) in d.due.iter().zip(&dvs) {
                    match value::reading_at(dv, d.indexes[ch]) {
                        Ok((v, ts)) => poll.push(ch, v, ts),
                        Err((why, ts)) => poll.push_bad(ch, why, ts),
                    }
                }
                Ok(())
            }
            Err(f) => {
                // The session may be gone: connect afresh next time.
                self.conn = None;
                let why: Arc<str> = f.message.as_str().into();
                for &ch in &d.due {
                    poll.push_bad(ch, why.clone(), ts);
                }
                Err(f)
            }
        }
    }

    async fn write(&mut self, d: &mut Device, ch: usize, raw: Value) -> Result<Value, WriteError> {
        let needs = d.needs_ns;
        self.conn(needs)
            .await
            .map_err(|f| WriteError::Offline(f.message))?;
        d.resolve(self.ns.as_ref(), self.epoch);
        let node = match &d.resolved[ch] {
            Ok(id) => id.clone(),
            Err(why) => return Err(WriteError::Invalid(why.to_string())),
        };
        let conn = self.conn.as_ref().expect("connected");
        let index = d.indexes[ch];
        conn.write(&self.ep, &node, index, &mut d.types[ch], &raw)
            .await?;
        Ok(raw)
    }

    async fn close(&mut self) {
        self.conn = None;
    }
}
