//! The MQTT sink (`"type": "mqtt"`): publishes readings to a broker — by default the local
//! mosquitto that is bridged to the cloud.
//!
//! Delivery contract: a reading counts as delivered only when the broker acknowledged it
//! (PUBACK at QoS 1). rumqttc alone cannot give that: it drops what it had queued when the broker
//! lost the session (a reconnect whose ConnAck has no session present), and its event loop
//! reconnects at once, without backoff. So this sink runs on osgate's session driver
//! ([`osgate_core::net::mqtt::MqttSession`]: a fresh client per connection, backoff, a link task
//! that is never blocked) and keeps its own bounded **outbox**
//! ([`osgate_core::net::mqtt::Outbox`]): an entry leaves it only on its PUBACK; when the
//! connection drops, every unacknowledged entry goes back to the front of the outbox and is
//! re-sent on the next connection (at-least-once).
//!
//! Entries keep an `Arc` of their batch, not an encoded message: topic and payload are rendered
//! when (re-)sent, so the outbox costs a few bytes per reading while the broker is away.
//!
//! Health: `status/{gateway}` carries a retained `{"online":true,…,"config":{"source":…}}` after
//! every ConnAck and whenever the configuration's source or last error changes (mosquitto
//! publishes our will when *it* restarts), the last will `{"online":false}`, and an
//! explicit offline message on a clean stop. Device status messages are retained and re-sent
//! after every reconnect.
//!
//! Uplink: after every ConnAck the sink subscribes to the broker's bridge states
//! ([`osgate_core::uplink::STATE_TOPICS`], retained, QoS 0) and records them in the shared
//! [`osgate_core::uplink::Uplink`]; `status/{gateway}` carries them (`"uplink"`) and is re-sent
//! when one changes. Losing the broker forgets them (unknown, not "as last seen").
//!
//! The parts: `config.rs` (the settings and their checks), `session.rs` (the outbox, the
//! connection's events, the loop).

mod config;
mod session;

pub use config::MqttSinkConfig;
pub use session::run;
