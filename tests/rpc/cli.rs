//! The `osgate rpc` client (the binary) calling a gateway: results, application errors with
//! their code and detail, wrong keys, bad params, no server.

use serde_json::{json, Value};

use super::{rpc_config, KEY};
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_client_calls_the_gateway() {
    let broker = Mosquitto::start();
    let gw = InProc::start(&rpc_config("gwx", &broker, "100ms")).await;
    let rpc = gw.rpc(KEY).await;
    let port = gw.rpc_port();
    let url = format!("http://127.0.0.1:{port}");
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            osgate_cmd(&a)
        })
    };
    // `osgate rpc METHOD [PARAMS] --url URL --key KEY`
    let call = |method: &str, params: Option<&str>, key: &str| {
        let mut args = vec!["rpc".to_string(), method.into()];
        args.extend(params.map(String::from));
        args.extend(["--url".into(), url.clone(), "--key".into(), key.into()]);
        run(args)
    };
    let (code, out, err) = call("gateway.status", None, KEY).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("result as JSON");
    assert_eq!(v["gateway"], "gwx");

    let (code, out, err) = call(
        "device.write",
        Some(r#"{"device":"d1","channel":"sp","value":12.5}"#),
        KEY,
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["value"], 12.5);
    let r = rpc.result("device.read", json!({"device": "d1"})).await;
    assert_eq!(r["readings"][1]["value"], 12.5);

    let (code, _, err) = call("gateway.status", None, "wrong-key-1").await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
    let (code, _, err) = call("device.read", Some(r#"{"device":"ghost"}"#), KEY)
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown device") && err.contains("1001"),
        "{err}"
    );
    // The server's detail (`data`) is printed, not only "Invalid params".
    let (code, _, err) = call("device.read", Some(r#"{"dev":"d1"}"#), KEY)
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(
        err.contains("-32602") && err.contains("unknown field `dev`"),
        "{err}"
    );
    let (code, _, err) = run(vec![
        "rpc".into(),
        "device.read".into(),
        "{oops".into(),
        "--url".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(vec![
        "rpc".into(),
        "gateway.status".into(),
        "--url".into(),
        format!("http://127.0.0.1:{}", free_port()),
    ])
    .await
    .unwrap();
    assert_eq!(code, 1, "{err}");
}
