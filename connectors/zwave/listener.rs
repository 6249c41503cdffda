//! The listener of one Z-Wave connector: reads the server's frames (pinging it when quiet),
//! sorts them into messages for the mapped nodes (dropping `statistics updated` and events of
//! other nodes before anything is allocated), maps them to readings and device health through
//! [`super::values`], and writes values with `node.set_value`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use super::super::device::link::Link;
use super::super::device::listener::{Devices, Input, Listener};
use super::super::device::reply::{Exchange, Incoming, Replies, ReplyError};
use super::super::device::{Fault, WriteError};
use super::super::ConnectorContext;
use super::connect::Session;
use super::values::{check_range, Dev, Node};
use super::wire::{CommandResult, EventHead, Head, NodeState, NodeValue, ValueKey};
use super::NodeRef;
use osgate_core::reading::{Timestamp, Value};

/// One message for [`Listener::map`], stamped when it arrived.
#[derive(Debug)]
pub(super) enum Msg {
    /// The state of every node after a (re)connect.
    Snapshot(Vec<NodeState>, Timestamp),
    /// A node's full state (`ready`).
    Node(Box<NodeState>, Timestamp),
    /// A value event of a node.
    Value {
        node: u16,
        kind: ValueEvent,
        args: Box<NodeValue>,
        ts: Timestamp,
    },
    /// The node is reachable (`alive`, `wake up`) or not (`dead`, `node removed`).
    Reach(u16, Option<Fault>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ValueEvent {
    /// `value updated`, `value added`: a state value.
    State,
    /// `value notification`: a stateless event (Central Scene).
    Notification,
    /// `metadata updated`.
    Metadata,
}

/// What one text frame is.
pub(super) enum Frame {
    /// A message for `map()`.
    Msg(Msg),
    /// A command's result: its request id, and the frame unparsed.
    Result(Option<String>, String),
    /// Nothing osgate uses.
    Skip,
}

/// The protocol side of one Z-Wave connector: the connection, the events held while a write
/// waits for its result, and what is known of the network.
pub(super) struct ZwaveListener {
    pub(super) link: Link<Session>,
    /// The server's URL, for messages while there is no session.
    pub(super) url: String,
    /// The connector's `timeout`: how long a write waits for its result.
    pub(super) timeout: Duration,
    pub(super) replies: Replies<Msg>,
    pub(super) net: Network,
}

/// What osgate knows of the Z-Wave network: the devices, their nodes and values.
pub(super) struct Network {
    pub(super) devs: Vec<Dev>,
    /// Device by node id.
    pub(super) node_dev: HashMap<u16, usize>,
    /// Values of mapped nodes.
    pub(super) nodes: HashMap<u16, Node>,
    /// Controller and driver events already logged.
    pub(super) logged: HashSet<String>,
    pub(super) input: Input,
    pub(super) ctx: ConnectorContext,
    /// Create a device for a node no device names (`accept_new_devices`).
    pub(super) accept_new: bool,
    /// The controller's own node id, once a node state said so.
    pub(super) controller: Option<u16>,
}

/// The connection and the network as a `node.set_value` waiting for its result reads them:
/// results by their request id (`w<n>`), events held for `next()`.
struct Frames<'a> {
    session: &'a mut Session,
    net: &'a mut Network,
}

impl Exchange for Frames<'_> {
    type Id = u64;
    type Reply = String;
    type Msg = Msg;

    async fn recv(&mut self) -> Result<Incoming<u64, String, Msg>, Fault> {
        let text = self.session.recv().await?;
        Ok(match self.net.frame(&text) {
            Frame::Result(Some(id), t) => match id.strip_prefix('w').and_then(|n| n.parse().ok()) {
                Some(n) => Incoming::Reply(n, t),
                None => Incoming::Skip,
            },
            Frame::Result(None, _) | Frame::Skip => Incoming::Skip,
            Frame::Msg(m) => Incoming::Msg(m),
        })
    }
}

impl Network {
    /// Classifies a frame; events of nodes no device maps, and `statistics updated`, are
    /// skipped before anything is allocated.
    pub(super) fn frame(&mut self, text: &str) -> Frame {
        let ts = Timestamp::now();
        let head: Head = match serde_json::from_str(text) {
            Ok(h) => h,
            Err(e) => {
                self.input
                    .bad(&self.ctx, "server", &format!("invalid frame: {e}"));
                return Frame::Skip;
            }
        };
        match &*head.kind {
            "result" => {
                let id = head.message_id.map(|id| id.into_owned());
                return Frame::Result(id, text.to_string());
            }
            "event" => {}
            _ => return Frame::Skip,
        }
        let Some(raw) = head.event else {
            return Frame::Skip;
        };
        let ev: EventHead = match serde_json::from_str(raw.get()) {
            Ok(e) => e,
            Err(e) => {
                self.input
                    .bad(&self.ctx, "server", &format!("invalid event: {e}"));
                return Frame::Skip;
            }
        };
        if ev.event == "statistics updated" {
            return Frame::Skip;
        }
        self.input.good(&self.ctx, "server");
        if ev.source != "node" {
            let what = format!("{} {}", ev.source, ev.event);
            if self.logged.insert(what) {
                tracing::info!(connector = %self.ctx.name, source = %ev.source, event = %ev.event,
                    "Z-Wave event (each kind logged once)");
            }
            return Frame::Skip;
        }
        let Some(node) = ev.node_id else {
            return Frame::Skip;
        };
        let by_name = self.devs.iter().any(|d| d.node_id.is_none());
        let wanted = self.node_dev.contains_key(&node)
            || (by_name && ev.event == "ready")
            || (self.accept_new && self.controller != Some(node));
        if !wanted {
            return Frame::Skip;
        }
        let kind = match &*ev.event {
            "value updated" | "value added" => ValueEvent::State,
            "value notification" => ValueEvent::Notification,
            "metadata updated" => ValueEvent::Metadata,
            "ready" => {
                let Some(raw) = ev.node_state else {
                    return Frame::Skip;
                };
                return match serde_json::from_str::<NodeState>(raw.get()) {
                    Ok(n) => Frame::Msg(Msg::Node(Box::new(n), ts)),
                    Err(e) => {
                        self.input
                            .bad(&self.ctx, "server", &format!("invalid node state: {e}"));
                        Frame::Skip
                    }
                };
            }
            "alive" | "wake up" => return Frame::Msg(Msg::Reach(node, None)),
            "dead" => {
                let f = Fault::new("dead", format!("node {node} is dead (it does not answer)"));
                return Frame::Msg(Msg::Reach(node, Some(f)));
            }
            "node removed" => {
                let f = Fault::new(
                    "removed",
                    format!("node {node} was removed from the network"),
                );
                return Frame::Msg(Msg::Reach(node, Some(f)));
            }
            "interview failed" => {
                tracing::warn!(connector = %self.ctx.name, node, "Z-Wave interview failed");
                return Frame::Skip;
            }
            _ => return Frame::Skip,
        };
        let Some(raw) = ev.args else {
            return Frame::Skip;
        };
        match serde_json::from_str::<NodeValue>(raw.get()) {
            Ok(args) => Frame::Msg(Msg::Value {
                node,
                kind,
                args: Box::new(args),
                ts,
            }),
            Err(e) => {
                self.input
                    .bad(&self.ctx, "server", &format!("invalid value event: {e}"));
                Frame::Skip
            }
        }
    }

}

impl ZwaveListener {
    /// Sends `node.set_value` and waits for its result, keeping the events that arrive
    /// meanwhile for `next()`.
    pub(super) async fn set_value(
        &mut self,
        node: u16,
        key: &ValueKey,
        raw: &Value,
    ) -> Result<(), WriteError> {
        let Some(session) = self.link.session() else {
            return Err(WriteError::Offline(format!("not connected to {}", self.url)));
        };
        let id = self.replies.next_id();
        let cmd = serde_json::json!({
            "messageId": format!("w{id}"), "command": "node.set_value", "nodeId": node,
            "valueId": key, "value": raw.to_json(),
        });
        let limit = self.timeout;
        let deadline = Instant::now() + limit;
        let late = || {
            WriteError::Offline(format!(
                "no answer to node.set_value within {}",
                humantime::format_duration(limit)
            ))
        };
        let sent = match tokio::time::timeout_at(deadline, session.send(cmd.to_string())).await {
            Ok(sent) => sent,
            Err(_) => return Err(late()),
        };
        let mut frames = Frames {
            session,
            net: &mut self.net,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = match sent {
            Ok(()) => self.replies.wait(&mut frames, Some(id), left).await,
            Err(f) => Err(ReplyError::Lost(f)),
        };
        let text = match answer {
            Ok(t) => t,
            Err(ReplyError::Lost(f)) => {
                let msg = f.message.clone();
                self.link.lose(f);
                return Err(WriteError::Offline(msg));
            }
            Err(ReplyError::Timeout(_)) => return Err(late()),
        };
        let r: CommandResult = serde_json::from_str(&text)
            .map_err(|e| WriteError::Refused(format!("bad answer to node.set_value: {e}")))?;
        r.set_value_outcome()
            .map_err(|e| WriteError::Refused(format!("node {node}, {key}: {e}")))
    }
}

impl Listener for ZwaveListener {
    type Msg = Msg;

    async fn next(&mut self) -> Result<Msg, Fault> {
        if let Some(m) = self.replies.pop() {
            return Ok(m);
        }
        loop {
            let (session, _) = self.link.open().await?;
            if let Some(h) = session.hello.take() {
                let v = &h.version;
                tracing::info!(connector = %self.net.ctx.name, server = %self.url,
                    server_version = %v.server_version, driver_version = %v.driver_version,
                    home_id = ?v.home_id, schema = h.schema, nodes = h.nodes.len(),
                    "connected to Z-Wave JS Server");
                return Ok(Msg::Snapshot(h.nodes, Timestamp::now()));
            }
            let text = match session.recv().await {
                Ok(t) => t,
                Err(f) => {
                    self.link.close();
                    return Err(f);
                }
            };
            if let Frame::Msg(m) = self.net.frame(&text) {
                return Ok(m);
            }
        }
    }

    fn map(&mut self, msg: Msg, devices: &mut Devices) {
        self.net.map(msg, devices);
    }

    async fn write(&mut self, device: usize, ch: usize, raw: Value) -> Result<Value, WriteError> {
        let Some(d) = self.net.devs.get(device) else {
            return Err(WriteError::Invalid("not a configured device".into()));
        };
        let Some((target, _)) = d.chans.get(ch) else {
            return Err(WriteError::Invalid("not a configured channel".into()));
        };
        let Some(node) = d.node_id else {
            return Err(WriteError::Offline(
                "the node was not found on the server".into(),
            ));
        };
        let target = target.clone();
        if let Some(meta) = self
            .net
            .nodes
            .get(&node)
            .and_then(|n| n.values.get(&target))
            .and_then(|v| v.meta.as_ref())
        {
            check_range(meta, &raw).map_err(WriteError::Invalid)?;
        }
        self.set_value(node, &target, &raw).await?;
        Ok(raw)
    }
}

impl Network {
    /// Turns a message into readings and device health.
    pub(super) fn map(&mut self, msg: Msg, devices: &mut Devices) {
        match msg {
            Msg::Snapshot(nodes, ts) => {
                let mut present = HashSet::new();
                for n in nodes {
                    present.insert(n.node_id);
                    self.node_state(n, ts, devices);
                }
                for (i, d) in self.devs.iter().enumerate() {
                    let missing = match (&d.node, d.node_id) {
                        (_, Some(id)) => !present.contains(&id),
                        (NodeRef::Name(_), None) => true,
                        _ => false,
                    };
                    if missing {
                        let what = match &d.node {
                            NodeRef::Id(n) => format!("node {n}"),
                            NodeRef::Name(n) => format!("no node named \"{n}\""),
                        };
                        let f = Fault::new(
                            "unknown node",
                            format!("{what} is not in the Z-Wave network"),
                        );
                        devices.report(i, Some(f));
                    }
                }
            }
            Msg::Node(n, ts) => self.node_state(*n, ts, devices),
            Msg::Reach(node, fault) => {
                if let Some(dev) = self.dev_of(node) {
                    devices.report(dev, fault);
                }
            }
            Msg::Value {
                node,
                kind,
                args,
                ts,
            } => {
                let Some(dev) = self.dev_or_new(node, devices) else {
                    return;
                };
                let key = args.key();
                let args = *args;
                match kind {
                    ValueEvent::Metadata => {
                        if let Some(meta) = args.metadata {
                            self.set_meta(dev, node, &key, meta, devices);
                        }
                    }
                    ValueEvent::State => {
                        if let Some(v) = args.new_value {
                            self.push(
                                dev,
                                node,
                                &key,
                                v.clone(),
                                ts,
                                args.property_name.as_deref(),
                                args.property_key_name.as_deref(),
                                devices,
                            );
                            self.val(node, &key).last = Some(v);
                        }
                    }
                    ValueEvent::Notification => {
                        if let Some(v) = args.value {
                            self.push(
                                dev,
                                node,
                                &key,
                                v,
                                ts,
                                args.property_name.as_deref(),
                                args.property_key_name.as_deref(),
                                devices,
                            );
                        }
                    }
                }
            }
        }
    }
}
