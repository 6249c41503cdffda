//! Integration tests: one test binary (it links once), one module per area. Each test starts its
//! own real peers (mosquitto, protocol peers) on free loopback ports.

mod common;
mod foundation;
mod kit;
#[cfg(feature = "modbus")]
mod modbus;
#[cfg(feature = "mqtt")]
mod mqtt;
#[cfg(feature = "opcua")]
mod opcua;
mod remote_config;
mod rpc;
mod tls;
mod transforms;
