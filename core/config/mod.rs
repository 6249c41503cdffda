//! The config toolkit every layer shares: errors that name their path ([`ConfigError`]),
//! the raw [`Document`] and its [`Entry`]s, `${VAR}` interpolation, the generic
//! connector→devices→channels parser ([`spec`]) with the settings connectors share
//! ([`timing`]), and the config's scalar types ([`Dur`], [`OptF64`]).
//!
//! The gateway's own document (its sections, the connectors and sinks it holds, loading and
//! the remote-first loader) is built on these by the `osgate` package; connectors and sinks
//! parse their entries with them.

pub mod document;
mod error;
mod interpolate;
pub mod secrets;
mod source;
pub mod spec;
pub mod timing;

pub use crate::duration::{parse_duration, Dur};
pub use document::{Document, DocumentError, Entry};
pub use error::{deserialize_at, join, ConfigError, ConfigErrors};
pub use interpolate::{interpolate, interpolate_str};
pub use source::{ConfigInfo, ConfigSource};
pub use spec::{ChannelSpec, ConnectorSpec, DeviceSpec, OptF64, Rules};
pub use timing::{Timing, TimingRules};
