//! Integration tests: one test binary (it links once), one module per area. Each test starts its
//! own real peers (mosquitto, protocol peers) on free loopback ports.

mod cli;
mod common;
mod foundation;
mod kit;
#[cfg(feature = "modbus")]
mod modbus;
mod remote_config;
mod rpc;
mod tls;
mod transforms;
