//! Integration tests: one test binary (it links once), one module per area. Each test starts its
//! own real peers (mosquitto, protocol peers) on free loopback ports, and its gateway in-process
//! (`common::InProc`), or as the `osgate` binary where the process itself is tested.

mod bridge;
mod cli;
mod common;
#[cfg(all(feature = "simulator", feature = "mqtt"))]
mod console;
mod console_config;
mod field_tools;
mod foundation;
#[cfg(feature = "http")]
mod http;
mod kit;
#[cfg(feature = "mbus")]
mod mbus;
#[cfg(feature = "modbus")]
mod modbus;
#[cfg(feature = "mqtt")]
mod mqtt;
mod mqtt_session;
#[cfg(feature = "opcua")]
mod opcua;
mod ops;
mod remote_config;
mod rpc;
#[cfg(feature = "s7")]
mod s7;
mod security;
mod slow_clients;
#[cfg(all(feature = "simulator", feature = "modbus"))]
mod sparkplug;
mod tls;
mod transforms;
mod uplink;
#[cfg(feature = "zwave")]
mod zwave;
