//! `opcua.browse`: one level of `osgate opcua browse` as a management method. Params:
//! `endpoint` (`opc.tcp://host:port/path`), `node` (default the Objects folder, `i=85`), and the
//! CLI's connection options `policy`, `mode`, `user`, `password`, `trust_on_first_use`,
//! `timeout`; it connects as the connector does (the gateway's `osgate-pki` directory). The
//! result is `{"node", "children": [{"node", "name", "class", "value" | "error"}]}`, `node`
//! being what a channel's `node` takes; browse deeper by calling it with a child's node.

use opcua::types::NodeClass;
use serde::Deserialize;
use serde_json::{json, Value};

use super::cli::{self, BrowseArgs};
use super::session::Endpoint;
use super::value;
use crate::tool::{params, ToolError, ToolFuture, ToolMethod};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BrowseParams {
    #[serde(alias = "url")]
    endpoint: String,
    #[serde(default)]
    node: Option<String>,
    #[serde(default = "policy")]
    policy: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    trust_on_first_use: bool,
    #[serde(default = "timeout")]
    timeout: String,
}

fn policy() -> String {
    "None".into()
}
fn timeout() -> String {
    "10s".into()
}

/// `--user needs --password` (the CLI's words) → `user needs password`.
fn param_words(msg: String) -> String {
    msg.replace("--", "")
        .replace("trust-on-first-use", "trust_on_first_use")
}

async fn browse(v: Value) -> Result<Value, ToolError> {
    let p: BrowseParams = params(v)?;
    let args = BrowseArgs {
        url: p.endpoint,
        node: p.node,
        depth: 1,
        limit: usize::MAX,
        policy: p.policy,
        mode: p.mode,
        user: p.user,
        password: p.password,
        pki_dir: "osgate-pki".into(),
        trusted_dir: None,
        trust_on_first_use: p.trust_on_first_use,
        timeout: p.timeout,
    };
    let (settings, timeout, start) =
        cli::options(&args).map_err(|e| ToolError::Params(vec![param_words(e)]))?;
    let ep = Endpoint::new(&settings, timeout).map_err(|e| ToolError::Params(vec![e.to_string()]))?;
    let device = |e: String| ToolError::Device(e);
    let conn = ep.connect().await.map_err(|f| device(f.message))?;
    let ns = conn.namespaces(&ep).await.map_err(|f| device(f.message))?;
    let root = start
        .resolve(Some(&ns))
        .map_err(|e| ToolError::Params(vec![e]))?;
    let found = cli::children(&ep, &conn, &root).await.map_err(device)?;
    let vars: Vec<_> = found
        .iter()
        .filter(|c| c.2 == NodeClass::Variable)
        .map(|c| c.0.clone())
        .collect();
    let values = if vars.is_empty() {
        Vec::new()
    } else {
        conn.read(&ep, &vars).await.map_err(|f| device(f.message))?
    };
    let mut values = values.iter();
    let children: Vec<Value> = found
        .into_iter()
        .map(|(id, name, class)| {
            let mut c =
                json!({"node": id.to_string(), "name": name, "class": format!("{class:?}")});
            if class == NodeClass::Variable {
                match values.next().map(value::reading) {
                    Some(Ok((v, _))) => c["value"] = v.to_json(),
                    Some(Err((why, _))) => c["error"] = why.to_string().into(),
                    None => {}
                }
            }
            c
        })
        .collect();
    drop(conn);
    Ok(json!({"node": root.to_string(), "children": children}))
}

fn call(v: Value) -> ToolFuture {
    Box::pin(browse(v))
}

/// `opcua.browse`.
pub const METHODS: &[ToolMethod] = &[ToolMethod {
    name: "opcua.browse",
    call,
}];

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_params_are_refused_before_connecting() {
        let e = browse(json!({"endpoint": "opc.tcp://127.0.0.1:1", "policy": "Bogus"}))
            .await
            .unwrap_err();
        assert!(matches!(e, ToolError::Params(_)), "{e:?}");
        assert!(e.to_string().contains("policy"), "{e}");
        let e = browse(json!({"endpoint": "opc.tcp://127.0.0.1:1", "user": "u"}))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "user needs password");
        assert!(browse(json!({}))
            .await
            .unwrap_err()
            .to_string()
            .contains("endpoint"));
    }
}
