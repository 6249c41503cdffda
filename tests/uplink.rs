//! The uplink: a real mosquitto ("local", the one osgate publishes to) bridged to a second real
//! mosquitto ("cloud"). osgate reads the bridge's state from local's
//! `$SYS/broker/connection/<name>/state` and shows it in `gateway.status`, in the retained
//! `status/{gateway}` message and in `/metrics`; stopping cloud turns it false within seconds,
//! starting cloud again turns it true.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::rpc::Rpc;
use crate::common::*;

const KEY: &str = "uplink-key-0123456789";
const BRIDGE: &str = "gwu-bridge";

/// A local broker on `port` bridged to 127.0.0.1:`cloud` (reconnecting every second).
fn local_conf(port: u16, dir: &Path, cloud: u16) -> String {
    format!(
        "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
         log_dest file {dir}/mosquitto.log\n\
         connection cloud\naddress 127.0.0.1:{cloud}\ntopic telemetry/# out 1\n\
         remote_clientid {BRIDGE}\nrestart_timeout 1\ncleansession true\n",
        dir = dir.display()
    )
}

/// Polls `gateway.status` until its uplink satisfies `want`; returns the uplink and how long it
/// took.
async fn wait_uplink(rpc: &Rpc, what: &str, want: impl Fn(&Value) -> bool) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        let st = rpc.result("gateway.status", json!({})).await;
        if want(&st["uplink"]) {
            return (st["uplink"].clone(), start.elapsed());
        }
        assert!(
            start.elapsed() < TEST_TIMEOUT,
            "uplink not {what} within {TEST_TIMEOUT:?}: {}",
            st["uplink"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metrics(rpc: &Rpc) -> String {
    let resp = rpc
        .http
        .get(format!("{}metrics", rpc.url))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplink_follows_the_bridge_of_the_local_broker() {
    let mut cloud = Mosquitto::start();
    let cloud_port = cloud.port;
    let local = Mosquitto::start_file(move |port, dir| local_conf(port, dir, cloud_port));
    let mut cfg = sim_config(
        "gwu",
        &local.url(),
        json!([{"name": "d1", "interval": "200ms", "channels": [{"name": "n", "signal": "counter"}]}]),
        json!({}),
    );
    cfg["rpc"] = json!({"listen": "127.0.0.1:0", "api_keys": [KEY]});
    let gw = InProc::start(&cfg).await;
    let rpc = gw.rpc(KEY).await;

    let (up, _) = wait_uplink(&rpc, "connected", |u| u["connected"] == true).await;
    assert_eq!(up["bridges"][0]["name"], BRIDGE, "{up}");
    assert!(up["bridges"][0]["since"].as_i64().unwrap() > 0, "{up}");
    let text = metrics(&rpc).await;
    assert!(
        text.contains(&format!("osgate_uplink_connected{{bridge=\"{BRIDGE}\"}} 1")),
        "{text}"
    );
    let mut status = Subscriber::connect(local.port, "status/gwu").await;
    status
        .next_where(TEST_TIMEOUT, |m| m.json["uplink"]["connected"] == true)
        .await;

    cloud.stop();
    let (up, took) = wait_uplink(&rpc, "down", |u| u["connected"] == false).await;
    assert_eq!(up["bridges"][0]["connected"], false);
    assert!(
        took < Duration::from_secs(10),
        "noticed only after {took:?}"
    );
    eprintln!(
        "uplink: down {:.1} s after the cloud broker stopped",
        took.as_secs_f64()
    );
    status
        .next_where(TEST_TIMEOUT, |m| m.json["uplink"]["connected"] == false)
        .await;
    let text = metrics(&rpc).await;
    assert!(
        text.contains(&format!("osgate_uplink_connected{{bridge=\"{BRIDGE}\"}} 0")),
        "{text}"
    );

    cloud.restart();
    let (up, took) = wait_uplink(&rpc, "up again", |u| u["connected"] == true).await;
    assert_eq!(up["bridges"].as_array().unwrap().len(), 1, "{up}");
    assert!(
        took < Duration::from_secs(15),
        "reconnect seen only after {took:?}"
    );
    eprintln!(
        "uplink: up again {:.1} s after the cloud broker restarted",
        took.as_secs_f64()
    );
}
