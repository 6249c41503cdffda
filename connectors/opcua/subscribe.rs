//! Subscription mode: the listener of the connector's `subscribe` devices, on the kit's
//! [`ListenerLine`](crate::device::listener::ListenerLine).
//!
//! At every connect (in a task of its own, the kit's [`Link`], so the kit may drop `next()` at
//! any time without losing a half-made connection) the namespace URIs are resolved, each device
//! gets one subscription at its publishing interval and a monitored item per channel (with the
//! channel's deadband filter and array index: [`filter`]), and channels the server refuses, or
//! whose percent deadband has no EURange to apply to, are reported bad with the reason.
//! async-opcua calls the
//! subscription callback in its event loop: it forwards each publish response's data changes
//! through a bounded channel to `next()` (a full channel drops the notification and counts it,
//! as every listener does). Keep-alives count as life (the kit's [`Watchdog`]): a subscription
//! silent for three keep-alive periods is taken as lost (a server restart can leave the session
//! up while no Publish is answered), `next()` fails, and the kit reconnects with backoff, which
//! makes the subscription anew.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use opcua::client::{MonitoredItemMap, OnSubscriptionNotificationCore};
use opcua::types::{
    AttributeId, DataChangeNotification, DataValue, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, NotificationMessage, NumericRange, QualifiedName, ReadValueId,
    TimestampsToReturn, VariantScalarTypeId,
};
use tokio::sync::mpsc;

use super::session::{Connection, Endpoint, NodeRef};
use super::{filter, value, OpcuaChannel, OpcuaDevice};
use osgate_core::config::DeviceSpec;
use crate::device::link::Link;
use crate::device::listener::{Devices, Listener};
use crate::device::watchdog::Watchdog;
use crate::device::{Fault, WriteError};
use crate::ConnectorContext;
use osgate_core::reading::{Timestamp, Value};
use osgate_core::status::ConnectorHealth;
use osgate_core::transform::Deadband;

/// Publish responses waiting for `next()`; beyond, notifications are dropped and counted.
const QUEUE: usize = 256;

/// Monitored items created per request (servers cap the operations per call; 1000 is a
/// common limit).
const PER_CALL: usize = 1000;

/// What `next()` hands to `map()`.
pub enum Msg {
    /// Data changes of device `.0`: (channel index + 1, value).
    Data(usize, Vec<(u32, DataValue)>),
    /// Channels that could not be subscribed, with the reason: (device, channel, reason).
    Refused(Vec<(usize, usize, Arc<str>)>),
}

/// What the subscriptions of one device ask for.
struct DeviceSub {
    publishing: Duration,
    sampling: Duration,
    queue_size: u32,
    keep_alive_count: u32,
    nodes: Vec<NodeRef>,
    deadbands: Vec<Option<Deadband>>,
    /// The array element of each channel (`index`).
    indexes: Vec<Option<u32>>,
}

/// The listener of the `subscribe` devices of one connector.
pub struct Subscriber {
    ep: Arc<Endpoint>,
    /// What each device subscribes to (its channels' array indexes are read by `map`/`write`).
    devices: Arc<[DeviceSub]>,
    link: Link<Live>,
    /// The node types of writable channels, read on their first write: `[device][channel]`.
    types: Vec<Vec<Option<VariantScalarTypeId>>>,
}

/// A connection with its subscriptions.
struct Live {
    conn: Connection,
    rx: mpsc::Receiver<Msg>,
    /// Resolved node ids: `[device][channel]` (`None` when it did not resolve).
    nodes: Vec<Vec<Option<opcua::types::NodeId>>>,
    /// Channels refused at subscription time, handed out once.
    refused: Vec<(usize, usize, Arc<str>)>,
    /// Silence longer than its period means the subscriptions are lost.
    watchdog: Watchdog,
}

impl Subscriber {
    /// The listener of `devices` (all in `subscribe` mode).
    pub fn new(
        ep: Arc<Endpoint>,
        ctx: &ConnectorContext,
        devices: &[&DeviceSpec<OpcuaDevice, OpcuaChannel>],
    ) -> Self {
        let subs: Vec<DeviceSub> = devices
            .iter()
            .map(|d| {
                let s = &d.settings;
                DeviceSub {
                    publishing: s.publishing_interval.0,
                    sampling: s.sampling_interval.map_or(s.publishing_interval.0, |d| d.0),
                    queue_size: s.queue_size.max(1),
                    keep_alive_count: s.keep_alive_count.max(1),
                    // Checked by validate and build.
                    nodes: d
                        .channels
                        .iter()
                        .map(|c| c.settings.node.parse().expect("node id checked at build"))
                        .collect(),
                    deadbands: d
                        .channels
                        .iter()
                        .map(|c| c.settings.server_deadband)
                        .collect(),
                    indexes: d.channels.iter().map(|c| c.settings.index).collect(),
                }
            })
            .collect();
        let types = devices
            .iter()
            .map(|d| vec![None; d.channels.len()])
            .collect();
        let subs: Arc<[DeviceSub]> = subs.into();
        let (endpoint, health) = (ep.clone(), ctx.health.clone());
        Subscriber {
            ep,
            devices: subs.clone(),
            link: Link::new(move || connect(endpoint.clone(), subs.clone(), health.clone())),
            types,
        }
    }
}

/// Forwards a subscription's data changes from async-opcua's event loop to `next()`.
struct Forward {
    device: usize,
    tx: mpsc::Sender<Msg>,
    health: Arc<ConnectorHealth>,
}

impl OnSubscriptionNotificationCore for Forward {
    fn on_subscription_notification(&mut self, n: NotificationMessage, _: MonitoredItemMap<'_>) {
        let mut changes = Vec::new();
        for obj in n.notification_data.into_iter().flatten() {
            if let Some(dc) = obj.into_inner_as::<DataChangeNotification>() {
                changes.extend(
                    dc.monitored_items
                        .into_iter()
                        .flatten()
                        .map(|m| (m.client_handle, m.value)),
                );
            }
        }
        // A keep-alive (no changes) goes through too: it shows the subscription is alive.
        let empty = changes.is_empty();
        if self.tx.try_send(Msg::Data(self.device, changes)).is_err() && !empty {
            self.health.counters.dropped.fetch_add(1, Relaxed);
        }
    }
}

/// Connects and subscribes every device.
async fn connect(
    ep: Arc<Endpoint>,
    devices: Arc<[DeviceSub]>,
    health: Arc<ConnectorHealth>,
) -> Result<Live, Fault> {
    let conn = ep.connect().await?;
    let ns = if devices
        .iter()
        .any(|d| d.nodes.iter().any(NodeRef::needs_namespaces))
    {
        Some(conn.namespaces(&ep).await?)
    } else {
        None
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let mut nodes = Vec::with_capacity(devices.len());
    let mut refused = Vec::new();
    let mut watchdog = Duration::ZERO;
    for (di, d) in devices.iter().enumerate() {
        let forward = Forward {
            device: di,
            tx: tx.clone(),
            health: health.clone(),
        };
        let lifetime = d.keep_alive_count.saturating_mul(3).max(3);
        let sub = ep
            .bounded(
                "CreateSubscription answer",
                conn.session.create_subscription(
                    d.publishing,
                    lifetime,
                    d.keep_alive_count,
                    0,
                    0,
                    true,
                    forward,
                ),
            )
            .await?
            .map_err(|e| {
                Fault::new(
                    "subscribe",
                    format!("{}: CreateSubscription failed: {}", ep.url, e.status()),
                )
            })?;
        let period = d.publishing.saturating_mul(d.keep_alive_count);
        watchdog = watchdog.max(period.saturating_mul(3).max(Duration::from_secs(3)));
        let mut ids = Vec::with_capacity(d.nodes.len());
        let mut items = Vec::with_capacity(d.nodes.len());
        let mut channels = Vec::with_capacity(d.nodes.len());
        for (ci, n) in d.nodes.iter().enumerate() {
            match n.resolve(ns.as_ref()) {
                Ok(id) => ids.push(Some(id)),
                Err(e) => {
                    ids.push(None);
                    refused.push((di, ci, e.into()));
                }
            }
        }
        let no_range = eurange_missing(&ep, &conn, d, &ids).await;
        for (ci, id) in ids.iter().enumerate() {
            let Some(id) = id else { continue };
            if no_range.contains(&ci) {
                let d = d.deadbands[ci].expect("a percent deadband");
                refused.push((di, ci, filter::no_eurange(d)));
                continue;
            }
            channels.push(ci);
            items.push(item(id.clone(), ci, d));
        }
        nodes.push(ids);
        if items.is_empty() {
            continue;
        }
        // In chunks: servers limit the items per call.
        let mut channels = channels.into_iter();
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let chunk: Vec<_> = items.by_ref().take(PER_CALL).collect();
            let results = ep
                .bounded(
                    "CreateMonitoredItems answer",
                    conn.session
                        .create_monitored_items(sub, TimestampsToReturn::Both, chunk),
                )
                .await?
                .map_err(|e| {
                    Fault::new(
                        "subscribe",
                        format!("{}: CreateMonitoredItems failed: {}", ep.url, e.status()),
                    )
                })?;
            for r in results {
                let Some(ci) = channels.next() else { break };
                let code = r.result.status_code;
                if !code.is_good() {
                    let why = filter::refusal(code, d.deadbands[ci], d.indexes[ci]);
                    refused.push((di, ci, why));
                }
            }
        }
    }
    Ok(Live {
        conn,
        rx,
        nodes,
        refused,
        watchdog: Watchdog::new(watchdog),
    })
}

/// The channels of `d` with a percent deadband whose node has no EURange (see
/// [`filter::without_eurange`]); `ids` are their resolved nodes.
async fn eurange_missing(
    ep: &Endpoint,
    conn: &Connection,
    d: &DeviceSub,
    ids: &[Option<opcua::types::NodeId>],
) -> Vec<usize> {
    let (channels, nodes): (Vec<usize>, Vec<_>) = ids
        .iter()
        .enumerate()
        .filter(|&(ci, _)| matches!(d.deadbands[ci], Some(Deadband::Percent(_))))
        .filter_map(|(ci, id)| Some((ci, id.clone()?)))
        .unzip();
    if nodes.is_empty() {
        return Vec::new();
    }
    let missing = filter::without_eurange(ep, conn, &nodes).await;
    channels
        .into_iter()
        .zip(missing)
        .filter_map(|(ci, m)| m.then_some(ci))
        .collect()
}

/// The monitored item of channel `ci` (client handle `ci + 1`).
fn item(id: opcua::types::NodeId, ci: usize, d: &DeviceSub) -> MonitoredItemCreateRequest {
    MonitoredItemCreateRequest {
        item_to_monitor: ReadValueId {
            node_id: id,
            attribute_id: AttributeId::Value as u32,
            index_range: d.indexes[ci].map_or(NumericRange::None, NumericRange::Index),
            data_encoding: QualifiedName::null(),
        },
        monitoring_mode: MonitoringMode::Reporting,
        requested_parameters: MonitoringParameters {
            client_handle: ci as u32 + 1,
            sampling_interval: d.sampling.as_secs_f64() * 1000.0,
            filter: filter::data_change(d.deadbands[ci]),
            queue_size: d.queue_size,
            discard_oldest: true,
        },
    }
}

impl Listener for Subscriber {
    type Msg = Msg;

    async fn next(&mut self) -> Result<Msg, Fault> {
        loop {
            let (live, fresh) = self.link.open().await?;
            if fresh {
                tracing::info!(url = %self.ep.url, watchdog = ?live.watchdog.silence(), "OPC-UA subscriptions made");
            }
            if !live.refused.is_empty() {
                return Ok(Msg::Refused(std::mem::take(&mut live.refused)));
            }
            tokio::select! {
                m = live.rx.recv() => match m {
                    Some(Msg::Data(_, changes)) if changes.is_empty() => live.watchdog.alive(),
                    Some(m) => {
                        live.watchdog.alive();
                        return Ok(m);
                    }
                    None => {
                        self.link.close();
                        return Err(Fault::new("connection", "the subscriptions ended"));
                    }
                },
                f = live.conn.lost() => {
                    self.link.close();
                    return Err(f);
                }
                _ = live.watchdog.expired() => {
                    let w = live.watchdog.silence();
                    self.link.close();
                    return Err(Fault::new(
                        "silent",
                        format!(
                            "{}: no publish response for {}; subscribing again",
                            self.ep.url,
                            humantime::format_duration(w)
                        ),
                    ));
                }
            }
        }
    }

    fn map(&mut self, msg: Msg, devices: &mut Devices) {
        match msg {
            Msg::Data(dev, changes) => {
                let Some(d) = self.devices.get(dev) else {
                    return;
                };
                for (handle, dv) in changes {
                    let ch = (handle as usize).wrapping_sub(1);
                    let Some(&index) = d.indexes.get(ch) else {
                        continue;
                    };
                    match value::reading_at(&dv, index) {
                        Ok((v, ts)) => devices.push(dev, ch, v, ts),
                        Err((why, ts)) => devices.push_bad(dev, ch, why, ts),
                    }
                }
            }
            Msg::Refused(list) => {
                let ts = Timestamp::now();
                for (dev, ch, why) in list {
                    devices.push_bad(dev, ch, why, ts);
                }
            }
        }
    }

    async fn write(&mut self, device: usize, ch: usize, raw: Value) -> Result<Value, WriteError> {
        let Some(live) = self.link.session() else {
            return Err(WriteError::Offline(format!(
                "{}: not connected",
                self.ep.url
            )));
        };
        let Some(node) = live
            .nodes
            .get(device)
            .and_then(|d| d.get(ch))
            .and_then(|n| n.as_ref())
        else {
            return Err(WriteError::Invalid(
                "the channel's node is not known to the server".into(),
            ));
        };
        let ty = &mut self.types[device][ch];
        let index = self.devices[device].indexes[ch];
        live.conn.write(&self.ep, node, index, ty, &raw).await?;
        Ok(raw)
    }
}
