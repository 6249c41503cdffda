//! `osgate opcua browse URL [NODE]`: prints the address space under a node (default the
//! Objects folder) as an indented tree, with the NodeId to put in a channel's `node` and the
//! current value of each variable, so channels can be found while commissioning. It connects
//! exactly as the connector does (same security options, certificates and trust). Exit codes:
//! 0 done, 1 the server failed or refused, 2 invalid options.

use std::time::Duration;
use std::path::PathBuf;
use std::process::ExitCode;

use opcua::types::{
    BrowseDescription, BrowseDirection, BrowseResultMask, NodeClass, NodeId, ReferenceTypeId,
};

use super::session::{Connection, Endpoint, NodeRef};
use super::{value, Mode, OpcuaSettings, Policy, Security, User};
use osgate_core::config::parse_duration;

/// `osgate opcua …`.
#[derive(Debug, clap::Args)]
pub struct OpcuaCommand {
    /// What to do.
    #[command(subcommand)]
    pub op: Op,
}

/// The operations.
#[derive(Debug, clap::Subcommand)]
pub enum Op {
    /// Print the nodes under NODE (default the Objects folder, i=85) with their NodeIds and
    /// the values of variables.
    Browse(BrowseArgs),
}

/// `osgate opcua browse` options.
#[derive(Debug, clap::Args)]
pub struct BrowseArgs {
    /// Endpoint URL, `opc.tcp://host:port/path`.
    pub url: String,
    /// The node to start from: `ns=2;s=Plant`, `i=85`, `nsu=<URI>;s=…`.
    pub node: Option<String>,
    /// Levels below NODE to print.
    #[arg(long, default_value_t = 3)]
    pub depth: u32,
    /// At most this many nodes are printed.
    #[arg(long, default_value_t = 2000)]
    pub limit: usize,
    /// Security policy: None, Basic256Sha256, Aes128Sha256RsaOaep, Aes256Sha256RsaPss.
    #[arg(long, default_value = "None")]
    pub policy: String,
    /// Security mode: None, Sign, SignAndEncrypt (default: SignAndEncrypt with a policy).
    #[arg(long)]
    pub mode: Option<String>,
    /// User name (anonymous without it).
    #[arg(long)]
    pub user: Option<String>,
    /// Password of --user (e.g. `--password "$OPCUA_PASSWORD"`).
    #[arg(long)]
    pub password: Option<String>,
    /// Client certificate and key, and trusted/rejected server certificates.
    #[arg(long, default_value = "osgate-pki")]
    pub pki_dir: PathBuf,
    /// Directory of trusted server certificates (default PKI_DIR/trusted).
    #[arg(long)]
    pub trusted_dir: Option<PathBuf>,
    /// Trust the server's certificate if it is unknown, and keep it.
    #[arg(long)]
    pub trust_on_first_use: bool,
    /// Bound of connecting and of every request.
    #[arg(long, default_value = "10s")]
    pub timeout: String,
}

/// `osgate opcua …`, the protocol's tool in the registry.
pub const TOOL: crate::Tool = crate::Tool {
    about: "Browse an OPC-UA server's address space (commissioning)",
    args: <OpcuaCommand as clap::Args>::augment_args,
    run: |m| crate::Tool::run_with(m, main),
    methods: super::tool::METHODS,
};

/// Runs `osgate opcua …`.
pub fn main(cmd: OpcuaCommand) -> ExitCode {
    let rt = match osgate_core::runtime(false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match cmd.op {
        Op::Browse(args) => {
            let (settings, timeout, start) = match options(&args) {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let ep = match Endpoint::new(&settings, timeout) {
                Ok(ep) => ep,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            match rt.block_on(browse(&ep, &start, args.depth, args.limit)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// The connector settings, timeout and start node the options stand for.
pub(super) fn options(a: &BrowseArgs) -> Result<(OpcuaSettings, Duration, NodeRef), String> {
    fn parse<T: serde::de::DeserializeOwned>(what: &str, v: &str) -> Result<T, String> {
        serde_json::from_value(serde_json::Value::String(v.to_string()))
            .map_err(|_| format!("--{what} \"{v}\" is not one of the allowed values"))
    }
    let policy: Policy = parse("policy", &a.policy)?;
    let mode: Option<Mode> = a.mode.as_deref().map(|m| parse("mode", m)).transpose()?;
    let timeout = parse_duration(&a.timeout).map_err(|e| format!("--timeout: {e}"))?;
    let user = match (&a.user, &a.password) {
        (Some(u), Some(p)) => Some(User {
            username: u.clone(),
            password: p.clone(),
        }),
        (Some(_), None) => return Err("--user needs --password".into()),
        (None, _) => None,
    };
    let settings = OpcuaSettings {
        url: a.url.clone(),
        security: Security {
            policy,
            mode,
            trusted_dir: a.trusted_dir.clone(),
            trust_on_first_use: a.trust_on_first_use,
        },
        user,
        pki_dir: a.pki_dir.clone(),
        cert_file: None,
        key_file: None,
    };
    let start = a.node.as_deref().unwrap_or("i=85").parse::<NodeRef>()?;
    Ok((settings, timeout, start))
}

async fn browse(ep: &Endpoint, start: &NodeRef, depth: u32, limit: usize) -> Result<(), String> {
    let conn = ep.connect().await.map_err(|f| f.message)?;
    let ns = conn.namespaces(ep).await.map_err(|f| f.message)?;
    let mut table: Vec<(&String, &u16)> = ns.known_namespaces().iter().collect();
    table.sort_by_key(|(_, i)| **i);
    for (uri, i) in table {
        println!("# ns={i} {uri}");
    }
    let root = start.resolve(Some(&ns))?;
    println!("{root}");
    let mut printed = 0;
    // Depth first, in the server's order: a node is printed, then what is below it.
    let mut stack: Vec<(Child, u32)> = Vec::new();
    push_children(ep, &conn, &root, 1, &mut stack).await?;
    while let Some((c, level)) = stack.pop() {
        if printed >= limit {
            println!("… (--limit {limit} reached)");
            break;
        }
        printed += 1;
        println!(
            "{}{}  {}  {:?}{}",
            "  ".repeat(level as usize),
            c.name,
            c.id,
            c.class,
            c.shown
        );
        if level < depth {
            push_children(ep, &conn, &c.id, level + 1, &mut stack).await?;
        }
    }
    drop(conn);
    // Let the session close politely before the runtime goes.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    Ok(())
}

/// A node to print.
struct Child {
    id: NodeId,
    name: String,
    class: NodeClass,
    /// ` = value` of a variable (or why it has none).
    shown: String,
}

/// Pushes the children of `node` (at `level`) onto `stack`, first child on top, with the
/// values of the variables among them (one `Read`).
async fn push_children(
    ep: &Endpoint,
    conn: &Connection,
    node: &NodeId,
    level: u32,
    stack: &mut Vec<(Child, u32)>,
) -> Result<(), String> {
    let children = children(ep, conn, node).await?;
    let vars: Vec<NodeId> = children
        .iter()
        .filter(|c| c.2 == NodeClass::Variable)
        .map(|c| c.0.clone())
        .collect();
    let values = if vars.is_empty() {
        Vec::new()
    } else {
        conn.read(ep, &vars).await.map_err(|f| f.message)?
    };
    let mut values = values.iter();
    let mut out = Vec::with_capacity(children.len());
    for (id, name, class) in children {
        let shown = if class == NodeClass::Variable {
            match values.next().map(value::reading) {
                Some(Ok((v, _))) => format!(" = {v}"),
                Some(Err((why, _))) => format!(" ({why})"),
                None => String::new(),
            }
        } else {
            String::new()
        };
        out.push((
            Child {
                id,
                name,
                class,
                shown,
            },
            level,
        ));
    }
    stack.extend(out.into_iter().rev());
    Ok(())
}

/// The hierarchical children of `node`: (id, display name, class), continuation points
/// followed.
pub(super) async fn children(
    ep: &Endpoint,
    conn: &Connection,
    node: &NodeId,
) -> Result<Vec<(NodeId, String, NodeClass)>, String> {
    let desc = BrowseDescription {
        node_id: node.clone(),
        browse_direction: BrowseDirection::Forward,
        reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
        include_subtypes: true,
        node_class_mask: 0,
        result_mask: BrowseResultMask::All as u32,
    };
    let mut out = Vec::new();
    let mut results = ep
        .bounded("Browse answer", conn.session.browse(&[desc], 1000, None))
        .await
        .map_err(|f| f.message)?
        .map_err(|e| format!("Browse {node}: {}", e.status()))?;
    while let Some(r) = results.pop() {
        if r.status_code.is_bad() {
            return Err(format!(
                "Browse {node}: {}",
                value::status_name(r.status_code)
            ));
        }
        for rd in r.references.into_iter().flatten() {
            out.push((
                rd.node_id.node_id,
                rd.display_name.text.to_string(),
                rd.node_class,
            ));
        }
        if r.continuation_point.is_null() {
            break;
        }
        results = ep
            .bounded(
                "BrowseNext answer",
                conn.session
                    .browse_next(false, std::slice::from_ref(&r.continuation_point)),
            )
            .await
            .map_err(|f| f.message)?
            .map_err(|e| format!("BrowseNext {node}: {}", e.status()))?;
    }
    Ok(out)
}
