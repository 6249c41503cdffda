//! The `osgate` command line as an operator meets it: output into a closed pipe, help texts,
//! the `check` summary.

use std::process::{Command, Stdio};

use serde_json::json;

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

    let mut cfg = sim_config(
        "gwpipe",
        "mqtt://127.0.0.1:1",
        json!([{"name": "d", "channels": [{"name": "c", "signal": "counter"}]}]),
        json!({"enabled": false}),
    );
    cfg["rpc"] = json!({"listen": "127.0.0.1:0", "api_keys": ["pipe-key-1"]});
    let gw = InProc::start(&cfg).await;
    let port = gw.rpc_port();
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

#[test]
fn check_summarises_every_section() {
    let dir = temp_dir();
    let mut cfg: serde_json::Value =
        serde_json::from_str(include_str!("../osgate.json.example")).unwrap();
    cfg["rpc"] = json!({"listen": "127.0.0.1:8580", "api_keys": ["sum-key-1"]});
    let path = dir.path().join("c.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let (code, out, err) = osgate_cmd(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "broker embedded on 127.0.0.1:1883",
        "rpc on 127.0.0.1:8580 (HTTP/WS, 1 API key(s))",
        "sink local (mqtt)",
        // The example's stdout sink is disabled: say so, and do not count it as active.
        "sink debug (stdout, disabled)",
        "2 (1 enabled) sink(s)",
        "telemetry every 1m (telemetry/demo-gw/_gateway/…)",
    ] {
        assert!(out.contains(want), "want {want:?} in:\n{out}");
    }
    cfg.as_object_mut().unwrap().remove("rpc");
    cfg.as_object_mut().unwrap().remove("broker");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let (code, out, _) = osgate_cmd(&["check", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("rpc none") && out.contains("broker none"),
        "{out}"
    );
}

#[test]
fn a_taken_port_names_the_listener_once_and_logs_carry_no_colour() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = temp_dir();
    for (section, field) in [
        (json!({"rpc": {"listen": addr}}), "rpc.listen"),
        (
            json!({"broker": {"embedded": {"listen": addr}}}),
            "broker.embedded.listen",
        ),
    ] {
        let mut cfg = json!({"gateway": {"id": "gwport"}, "sinks": [], "connectors": []});
        for (k, v) in section.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        let path = dir.path().join("c.json");
        std::fs::write(&path, cfg.to_string()).unwrap();
        // stderr is a pipe here, as with a log file or journald: no ANSI colour codes.
        let (code, _, err) = osgate_cmd(&["-c", path.to_str().unwrap()]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(&format!("{field} {addr}")), "{field}: {err}");
        assert_eq!(
            err.matches("Address already in use").count(),
            1,
            "{field}: {err}"
        );
        assert!(!err.contains('\x1b'), "colour codes in a pipe: {err:?}");
    }
}
