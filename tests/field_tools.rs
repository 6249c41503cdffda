//! The field tools as management methods, against the real binary and real peers:
//! `modbus.read` against pymodbus (values encoded by pymodbus itself) and `opcua.browse`
//! against asyncua. Bad params name the param (-32602); a peer that is not there is a device
//! error (1007).

use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::common::rpc::Rpc;
use crate::common::*;

const KEY: &str = "tools-key-0123456789";

/// The gateway, run in its own working directory (where `opcua.browse` keeps its
/// `osgate-pki`), killed on drop.
struct ToolGateway {
    child: Child,
    gw: Gateway,
}

impl Drop for ToolGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway with one simulator device (its sink disabled: the tools need none) and the RPC
/// server on `port`.
async fn gateway(port: u16) -> (ToolGateway, Rpc) {
    let mut cfg = sim_config(
        "gwt",
        "mqtt://127.0.0.1:1",
        json!([{"name": "d1", "interval": "1s", "channels": [{"name": "n", "signal": "counter"}]}]),
        json!({"enabled": false}),
    );
    cfg["rpc"] = json!({"listen": format!("127.0.0.1:{port}"), "api_keys": [KEY]});
    // `osgate check` on the config gives a temp dir with the file; the gateway itself runs in
    // that dir.
    let gw = Gateway::start_with(&cfg, &["check"], &[]);
    let log = std::fs::File::create(gw.path().join("run.log")).unwrap();
    let child = Command::new(osgate_bin())
        .arg("-c")
        .arg(&gw.config)
        .current_dir(gw.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn osgate");
    let rpc = Rpc::connect(KEY, port, &gw).await;
    (ToolGateway { child, gw }, rpc)
}

#[cfg(feature = "modbus")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modbus_read_over_rpc_reads_a_register_range() {
    use crate::common::modbus::pymodbus;
    let spec = json!({"units": {"3": {"size": 50, "values": [
        {"table": "holding", "address": 10, "type": "u16", "value": 111},
        {"table": "holding", "address": 11, "type": "u16", "value": 222},
        {"table": "holding", "address": 12, "type": "u16", "value": 333},
        {"table": "input", "address": 20, "type": "f32", "order": "CDAB", "value": 21.5},
        {"table": "coil", "address": 4, "value": true}]}}});
    let peer = pymodbus(&spec, &["--tcp", "127.0.0.1:0"]).await;
    let addr = format!("127.0.0.1:{}", peer.ready);
    let (_gw, rpc) = gateway(free_port()).await;

    let r = rpc
        .result(
            "modbus.read",
            json!({"tcp": addr, "unit": 3, "table": "holding", "address": 10, "count": 3}),
        )
        .await;
    assert_eq!(
        r,
        json!({"table": "holding", "unit": 3, "values": [
            {"address": 10, "value": 111}, {"address": 11, "value": 222},
            {"address": 12, "value": 333}]})
    );
    let r = rpc
        .result(
            "modbus.read",
            json!({"tcp": addr, "unit": 3, "table": "input", "address": 20, "type": "f32",
                   "order": "CDAB"}),
        )
        .await;
    assert_eq!(r["values"], json!([{"address": 20, "value": 21.5}]));
    let r = rpc
        .result(
            "modbus.read",
            json!({"tcp": addr, "unit": 3, "table": "coil", "address": 3, "count": 2}),
        )
        .await;
    assert_eq!(
        r["values"],
        json!([{"address": 3, "value": false}, {"address": 4, "value": true}])
    );

    let (code, msg) = rpc
        .error(
            "modbus.read",
            json!({"tcp": addr, "address": 0, "count": 0}),
        )
        .await;
    assert_eq!(code, -32602, "{msg}");
    assert!(msg.starts_with("count:"), "{msg}");
    let (code, msg) = rpc.error("modbus.read", json!({"address": 0})).await;
    assert_eq!(code, -32602, "{msg}");
    assert!(msg.contains("tcp, rtu or rtu_over_tcp"), "{msg}");
    // Past the end of the peer's registers: the device's exception, as the CLI reports it.
    let (code, msg) = rpc
        .error(
            "modbus.read",
            json!({"tcp": addr, "unit": 3, "address": 49, "count": 5}),
        )
        .await;
    assert_eq!(code, 1007, "{msg}");
    let dead = format!("127.0.0.1:{}", free_port());
    let (code, msg) = rpc
        .error("modbus.read", json!({"tcp": dead, "address": 0}))
        .await;
    assert_eq!(code, 1007, "{msg}");
}

#[cfg(feature = "opcua")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opcua_browse_over_rpc_lists_children_with_values() {
    use crate::common::opcua::{OpcuaPeer, NS_URI};
    let peer = OpcuaPeer::start().await;
    let (gw, rpc) = gateway(free_port()).await;

    let r = rpc
        .result(
            "opcua.browse",
            json!({"endpoint": peer.url, "timeout": "5s"}),
        )
        .await;
    assert_eq!(r["node"], "i=85", "{r}");
    let plant = r["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Plant")
        .unwrap_or_else(|| panic!("no Plant under Objects: {r}"))
        .clone();
    assert_eq!(plant["class"], "Object");
    assert_eq!(plant["node"], "ns=2;s=Plant");

    let r = rpc
        .result(
            "opcua.browse",
            json!({"endpoint": peer.url, "node": format!("nsu={NS_URI};s=Plant"), "timeout": "5s"}),
        )
        .await;
    let children = r["children"].as_array().unwrap();
    let get = |n: &str| -> &Value {
        children
            .iter()
            .find(|c| c["name"] == n)
            .unwrap_or_else(|| panic!("{n} not under Plant: {r}"))
    };
    for v in ["Temperature", "Counter", "Running", "Setpoint"] {
        assert_eq!(get(v)["class"], "Variable");
        assert_eq!(get(v)["node"], format!("ns=2;s={v}"));
    }
    assert!(get("Temperature")["value"].is_f64(), "{r}");
    assert!(get("Running")["value"].is_boolean(), "{r}");
    assert!(get("Counter")["value"].is_u64(), "{r}");
    assert!(
        gw.gw.path().join("osgate-pki").is_dir(),
        "the pki stays in the working dir"
    );

    let (code, msg) = rpc
        .error(
            "opcua.browse",
            json!({"endpoint": peer.url, "policy": "Bogus"}),
        )
        .await;
    assert_eq!(code, -32602, "{msg}");
    let dead = format!("opc.tcp://127.0.0.1:{}/x", free_port());
    let (code, msg) = rpc
        .error("opcua.browse", json!({"endpoint": dead, "timeout": "2s"}))
        .await;
    assert_eq!(code, 1007, "{msg}");
}
