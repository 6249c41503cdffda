//! MQTT for every MQTT client of osgate (the MQTT and Sparkplug sinks, the command/RPC client,
//! the MQTT connector): one way to configure a broker connection and one way to run it.
//!
//! - [`settings`]: broker URLs, [`MqttClientSettings`] (checked at load time, turned into
//!   `rumqttc::MqttOptions` before each connect), and [`broker_config!`](crate::broker_config),
//!   which declares the broker fields (`url`, `client_id`, credentials, `tls`, `keep_alive`,
//!   `clean_session`, `backoff_max`) of every config that connects to a broker, once.
//! - [`session`]: the session driver ([`MqttSession`]): connects with the shared
//!   [`Backoff`](crate::backoff::Backoff), runs each connection's event loop in a task of its own
//!   (never blocked by its owner), writes the owner's publishes in batches, subscribes again on
//!   every ConnAck and reports what happened: connected, packets written and acknowledged,
//!   messages, down (with the cause in words), closed.
//! - `link`: one connection's task: polls its event loop, writes the owner's publishes and
//!   reports back.
//! - `hold`: when a connection's queued publishes wait for more room in the in-flight window
//!   (fewer, larger writes) and when they must not (a backlog, a broker holding its PUBACKs).
//! - [`outbox`]: what a publisher has not yet seen acknowledged ([`Outbox`]): unsent, handed
//!   to the client, in flight; put back at the front when a connection is lost, so delivery is
//!   at least once.

mod hold;
mod link;
pub mod outbox;
pub mod session;
pub mod settings;

pub use outbox::{Delivery, Outbox, Weigh};
pub use session::{Ack, Connected, Down, MqttSession, SessionEvent};
pub use settings::{
    parse_url, BrokerUrl, MqttClientSettings, MqttConfigError, MQTTS_PORT, MQTT_PORT,
};
