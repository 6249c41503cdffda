//! The `osgate` command line as an operator meets it: output into a closed pipe, help texts,
//! the `check` summary.

use std::process::{Command, Stdio};

use serde_json::json;

use crate::common::rpc::Rpc;
use crate::common::*;

/// Runs `osgate ARGS` with stdout a pipe whose reading end is already closed (as in
/// `osgate … | true`); returns the exit code and stderr. Call it inside a tokio runtime.
fn run_into_closed_pipe(args: &[&str]) -> (Option<i32>, String) {
    let (tx, rx) = tokio::net::unix::pipe::pipe().expect("pipe");
    drop(rx);
    let writer = tx.into_blocking_fd().expect("fd");
    let out = Command::new(osgate_bin())
        .args(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .expect("run osgate");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_is_a_normal_end() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/osgate.json.example");
    let (code, err) = run_into_closed_pipe(&["check", "-c", example]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let port = free_port();
    let mut cfg = sim_config(
        "gwpipe",
        "mqtt://127.0.0.1:1",
        json!([{"name": "d", "channels": [{"name": "c", "signal": "counter"}]}]),
        json!({"enabled": false}),
    );
    cfg["rpc"] = json!({"listen": format!("127.0.0.1:{port}"), "api_keys": ["pipe-key-1"]});
    let gw = Gateway::start(&cfg);
    Rpc::connect("pipe-key-1", port, &gw).await;
    let url = format!("http://127.0.0.1:{port}");
    let (code, err) = tokio::task::spawn_blocking(move || {
        run_into_closed_pipe(&[
            "rpc",
            "gateway.status",
            "--url",
            &url,
            "--key",
            "pipe-key-1",
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let (code, err) = run_into_closed_pipe(&["--help"]);
    assert_eq!(code, Some(0), "{err}");
}
