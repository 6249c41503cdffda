//! The MQTT connector (`"protocol": "mqtt"`): subscribes to a broker that devices already
//! publish to (Tasmota, Shelly, Zigbee2MQTT, PLCs with MQTT modules, other gateways), turns their
//! messages into readings, and publishes writes back to their command topics.
//!
//! One connector is one broker connection (several brokers = several connectors), configured
//! and run by [`osgate_core::net::mqtt`] like every MQTT client of osgate (URL, TLS,
//! credentials, the session driver). Messages are
//! matched against the connector's `mappings` in order, first match wins ([`topic`]: filters
//! with named captures); the device and channel names come from the captures or are fixed; the
//! payload is decoded by the kit's [`payload`](super::device::payload) module (JSON pointers,
//! every field by key path, plain numbers, bool words, text, timestamps). Devices listed in the
//! config take the channels the mappings give them; other devices are created on their first
//! message when `accept_new_devices` is on, up to `max_devices`. The kit's
//! [`ListenerLine`] does the rest: health, `stale_after`, enable/disable, writes, reconnect
//! backoff, bad payloads counted per mapping.
//!
//! The session is persistent by default (`clean_session: false`, subscriptions at QoS 1): what
//! the devices publish while osgate is away waits in the broker. Batches wait for room in the
//! sink queues (the sink's `when_full` decides), so a slow uplink slows the reading of the
//! source broker, which holds the messages, instead of dropping them here.
//!
//! The parts: `config.rs` (settings, mappings, writable channels, their checks), `mapping.rs`
//! (compiled mappings; a message becomes readings), `listener.rs` (the session, writes),
//! [`topic`] (filters with captures, templates).

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{QoS, SubscribeFilter};

use super::device::listener::ListenerLine;
use super::device::reply::{Replies, HELD};
use super::{ConnectorContext, ConnectorError, Running};
use osgate_core::backoff::Backoff;
use osgate_core::net::mqtt::{parse_url, MqttConfigError, MqttSession};

mod config;
mod listener;
mod mapping;
pub mod topic;

pub use config::{
    validate, Command, Format, Mapping, MappingChannel, MqttChannel, MqttConfig, MqttDevice,
    MqttSettings, WriteType,
};
use config::{client_settings, write_spec};
use listener::{Broker, MqttListener};
use mapping::{compile, Mapper};

/// Messages the session reports ahead of the connector (a burst of the kit).
const MESSAGES_AHEAD: usize = 64;

/// `"protocol": "mqtt"` in the protocol registry.
pub const PROTOCOL: crate::Protocol = crate::Protocol {
    name: "mqtt",
    parse: |p, entry| p.spec(entry, validate, build),
    tool: None,
};

/// Builds the connector: checks the URL and the files it names, compiles the mappings.
pub fn build(spec: Arc<MqttConfig>, ctx: ConnectorContext) -> Result<Running, ConnectorError> {
    let s = &spec.settings;
    let settings = client_settings(s, &ctx.gateway, &ctx.name);
    // The options are built again at every connect; this checks them before anything runs.
    settings.options().map_err(|e| match e {
        MqttConfigError::PasswordFile { path, source } => ConnectorError::File {
            path: path.display().to_string(),
            reason: source.to_string(),
        },
        other => ConnectorError::Setup(other.to_string()),
    })?;
    parse_url(&s.url).map_err(|reason| ConnectorError::Address {
        address: s.url.clone(),
        reason,
    })?;
    let mappings = s
        .mappings
        .iter()
        .map(|m| compile(m).map_err(|(f, e)| ConnectorError::Setup(format!("{f}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let qos = if s.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let mut filters: Vec<String> = Vec::new();
    for m in &mappings {
        if !filters.contains(&m.pattern.filter) {
            filters.push(m.pattern.filter.clone());
        }
    }
    let commands = spec
        .devices
        .iter()
        .map(|d| {
            d.channels
                .iter()
                .map(|c| c.settings.command.clone().map(Arc::new))
                .collect()
        })
        .collect();
    // The kit waits between attempts (with the devices offline): the session retries at once
    // when asked. Messages are bounded so that a slow gateway leaves them in the broker.
    let subscriptions = filters
        .iter()
        .map(|f| SubscribeFilter::new(f.clone(), qos))
        .collect();
    let mqtt = MqttSession::new(settings, Backoff::new(Duration::ZERO, Duration::ZERO), 64)
        .subscribe(subscriptions)
        .bound_messages(MESSAGES_AHEAD);
    let listener = MqttListener {
        broker: Broker {
            mqtt,
            filters,
            url: s.url.clone(),
            ctx: ctx.clone(),
            refused_subscription: false,
        },
        replies: Replies::new(&ctx, HELD),
        mapper: Mapper::new(&ctx, mappings, s.max_payload.bytes()),
        commands,
        write_timeout: s.write_timeout.0,
    };
    let mut line = ListenerLine::new(&ctx, listener)
        .with_backoff(Backoff::new(Duration::from_secs(1), s.backoff_max.0))
        .with_stale_after(s.stale_after.map(|d| d.0))
        .with_backpressure();
    if s.accept_new_devices {
        line = line.accept_new(s.max_devices);
    }
    for d in &spec.devices {
        line.add(d, write_spec);
    }
    Ok(Box::pin(async move {
        line.run().await;
        Ok(())
    }))
}

#[cfg(test)]
mod tests;
