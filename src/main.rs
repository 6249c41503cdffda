//! The `osgate` command: run the gateway (`osgate [-d] -c osgate.json`), validate a config
//! (`osgate check -c FILE`), check a running one (`osgate health`), and the tools `osgate rpc`
//! and `osgate modbus`. `osgate --version` names the git commit of the build.
//!
//! Exit codes: 0 clean stop, 1 runtime failure, 2 invalid configuration or usage, 3 stopped but
//! messages were unacknowledged at the flush deadline (data may be lost).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use osgate::config::{self, LoadError};

#[derive(Debug, Parser)]
#[command(
    name = "osgate",
    version = osgate::LONG_VERSION,
    about = "Industrial IoT gateway: connectors → channels → sinks"
)]
struct Cli {
    /// Gateway options when no command is given (`osgate -c FILE` runs the gateway).
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Debug logging for osgate (RUST_LOG, when set, takes precedence).
    #[arg(short = 'd', long = "debug", global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Options of the commands that load a configuration (`run`, `check`, and no command); the
/// tools (`rpc`, `modbus`) do not take them, so their help does not list them.
#[derive(Debug, Clone, Default, clap::Args)]
struct GatewayArgs {
    /// Configuration file (JSON) [default: osgate.json].
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log line format [default: text].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

impl GatewayArgs {
    /// These options where given, else `outer`'s (`osgate -c F check` and `osgate check -c F`).
    fn or(self, outer: GatewayArgs) -> GatewayArgs {
        GatewayArgs {
            config: self.config.or(outer.config),
            log_format: self.log_format.or(outer.log_format),
        }
    }

    fn config(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from("osgate.json"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run(GatewayArgs),
    /// Validate the local configuration file, print a summary, exit 0 (valid) or 2 (invalid).
    /// It does not fetch `remote.url`: a remote configuration is validated when it arrives.
    Check(GatewayArgs),
    /// Call a running gateway's JSON-RPC management API: `osgate rpc METHOD [JSON-PARAMS]`.
    Rpc(osgate::rpc::client::RpcCommand),
    /// Check that a running gateway answers and its sinks have not failed: exit 0 (healthy)
    /// or 1 (with the reason on stderr). For container health checks.
    Health(osgate::rpc::health::HealthCommand),
}

/// Colour codes only for a person at a terminal: not in files or journald, and never with
/// `NO_COLOR` set to anything (<https://no-color.org>).
fn use_colour(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

fn init_logging(debug: bool, format: LogFormat) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    // rumqttd logs every ordinary client disconnect as an ERROR, and the OPC-UA stack logs
    // several WARN/ERROR lines with long spans for every failed connect; their logs stay off
    // unless RUST_LOG asks for them: osgate logs the broker's start and failures, and one
    // clear line per connector state change, itself.
    const QUIET: &str = "rumqttd=off,opcua_client=off,opcua_core=off,opcua_crypto=off,opcua_types=off,opcua_nodes=off";
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(if debug {
            format!("info,osgate=debug,{QUIET}")
        } else {
            format!("info,rumqttc=warn,{QUIET}")
        })
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The whole command line: [`Cli`] and the protocols' own tools (`osgate modbus …`), which
/// come from the connector registry.
fn command() -> clap::Command {
    let mut command = Cli::command();
    for p in osgate::connectors::PROTOCOLS {
        if let Some(tool) = &p.tool {
            command = command.subcommand((tool.args)(clap::Command::new(p.name).about(tool.about)));
        }
    }
    command
}

fn main() -> ExitCode {
    osgate::install_crypto_provider();
    let matches = command().get_matches();
    if let Some((name, args)) = matches.subcommand() {
        if let Some(tool) = osgate::connectors::protocol(name).and_then(|p| p.tool.as_ref()) {
            return (tool.run)(args);
        }
    }
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let outer = cli.gateway.clone();
    let command = cli.command.unwrap_or(Command::Run(GatewayArgs::default()));
    let format = match &command {
        Command::Run(a) | Command::Check(a) => a.clone().or(outer.clone()).log_format,
        _ => None,
    };
    init_logging(cli.debug, format.unwrap_or(LogFormat::Text));
    match command {
        Command::Check(a) => check(&a.or(outer).config()),
        Command::Run(a) => run(a.or(outer).config()),
        Command::Rpc(cmd) => osgate::rpc::client::main(cmd),
        Command::Health(mut cmd) => {
            cmd.config = cmd.config.or(outer.config);
            osgate::rpc::health::main(cmd)
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load_file(path) {
        Ok(cfg) => {
            for line in summary(path, &cfg) {
                osgate::outln!("{line}");
            }
            let source = std::fs::read_to_string(path).unwrap_or_default();
            for line in config::secrets::key_lines(&source) {
                osgate::outln!("  {line}");
            }
            if let Some(w) = config::secrets::exposure_warning(path, &source) {
                eprintln!("{w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => config_error(&e),
    }
}

/// What `osgate check` prints for a valid configuration: every section, disabled parts marked.
fn summary(path: &std::path::Path, cfg: &config::GatewayConfig) -> Vec<String> {
    let mut out = vec![
        format!("{}: valid", path.display()),
        format!("  gateway {}", cfg.gateway.id),
    ];
    if let Some(r) = &cfg.remote {
        out.push(format!(
            "  remote {} (refresh {}, cache {})",
            r.url,
            r.refresh,
            r.cache.display()
        ));
    }
    match &cfg.broker.embedded {
        Some(b) => out.push(format!(
            "  broker embedded on {}{}",
            b.listen,
            if b.username.is_some() {
                " (username/password)"
            } else {
                " (anonymous, loopback only)"
            }
        )),
        None => out.push("  broker none (no embedded broker)".into()),
    }
    match &cfg.rpc {
        Some(r) => out.push(format!(
            "  rpc on {} ({}, {} API key(s){}{})",
            r.listen,
            if r.tls.is_some() {
                "HTTPS/WSS"
            } else {
                "HTTP/WS"
            },
            r.api_keys.len(),
            if r.api_keys.is_empty() {
                ", open to local processes"
            } else {
                ""
            },
            if r.mqtt { ", also over MQTT" } else { "" }
        )),
        None => out.push("  rpc none (no management API)".into()),
    }
    if cfg.telemetry.enabled {
        out.push(format!(
            "  telemetry every {} (telemetry/{}/_gateway/…)",
            cfg.telemetry.interval, cfg.gateway.id
        ));
    } else {
        out.push("  telemetry off".into());
    }
    for c in &cfg.connectors {
        out.push(format!(
            "  connector {} ({}, {} device(s){})",
            c.name,
            c.protocol,
            c.devices.len(),
            if c.enabled { "" } else { ", disabled" }
        ));
    }
    for s in &cfg.sinks {
        out.push(format!(
            "  sink {} ({}{})",
            s.name(),
            s.kind.type_name(),
            if s.common.enabled { "" } else { ", disabled" }
        ));
    }
    let devices: usize = cfg.connectors.iter().map(|c| c.devices.len()).sum();
    let active = |n: usize, of: usize| {
        if n == of {
            format!("{of}")
        } else {
            format!("{of} ({n} enabled)")
        }
    };
    out.push(format!(
        "  {} connector(s), {devices} device(s), {} sink(s)",
        active(
            cfg.connectors.iter().filter(|c| c.enabled).count(),
            cfg.connectors.len()
        ),
        active(
            cfg.sinks.iter().filter(|s| s.common.enabled).count(),
            cfg.sinks.len()
        ),
    ));
    out
}

/// Exit code of a stop that left messages unacknowledged at the flush deadline.
const EXIT_UNDELIVERED: u8 = 3;

fn config_error(e: &LoadError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

fn run(path: PathBuf) -> ExitCode {
    // The gateway's own process: what starting took is given back once it runs (not in a
    // process that embeds the service, such as the tests, whose binary is not ours to trim).
    osgate::memory::release_in_this_process();
    let rt = match osgate::runtime(true) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(run_until_signalled(path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<LoadError>() {
            Some(le) => config_error(le),
            None if e.downcast_ref::<osgate::service::Undelivered>().is_some() => {
                eprintln!("error: {e:#}");
                ExitCode::from(EXIT_UNDELIVERED)
            }
            None => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

/// Runs the gateway on `path` ([`osgate::app::run`]) until SIGINT or SIGTERM; SIGHUP reloads
/// the configuration; systemd hears from it when `$NOTIFY_SOCKET` is set.
async fn run_until_signalled(path: PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered before anything starts: a signal that arrives during start-up is kept.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (reload, reloads) = tokio::sync::mpsc::channel(1);
    let shown = path.clone();
    let hangups = tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(path = %shown.display(), "SIGHUP received: reloading configuration");
            // A reload still waiting covers this one too.
            let _ = reload.try_send(());
        }
    });
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    };
    let setup = osgate::app::Setup {
        source: osgate::app::Source::file(path),
        reloads,
        notify: osgate::notify::Notifier::from_env(),
        bound: None,
    };
    let res = osgate::app::run(setup, shutdown).await;
    hangups.abort();
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(!use_colour(false, None));
        assert!(!use_colour(true, Some("1".into())));
        assert!(use_colour(true, Some("".into())));
    }

    #[test]
    fn tools_do_not_list_the_gateway_options() {
        let mut cmd = command();
        for path in [&["rpc"][..], &["modbus", "read"][..]] {
            let mut sub = &mut cmd;
            for p in path {
                sub = sub.find_subcommand_mut(p).expect("subcommand");
            }
            let help = sub.render_help().to_string();
            assert!(!help.contains("--log-format"), "{path:?}: {help}");
            assert!(!help.contains("--config"), "{path:?}: {help}");
        }
        let help = cmd
            .find_subcommand_mut("check")
            .unwrap()
            .render_help()
            .to_string();
        assert!(
            help.contains("--config") && help.contains("--log-format"),
            "{help}"
        );
    }

    #[test]
    fn the_config_option_goes_before_or_after_the_command() {
        let c = Cli::try_parse_from(["osgate", "-c", "a.json", "check"]).unwrap();
        let Some(Command::Check(a)) = c.command else {
            panic!()
        };
        assert_eq!(a.or(c.gateway).config(), PathBuf::from("a.json"));
        let c = Cli::try_parse_from(["osgate", "check", "-c", "b.json"]).unwrap();
        let Some(Command::Check(a)) = c.command else {
            panic!()
        };
        assert_eq!(a.or(c.gateway).config(), PathBuf::from("b.json"));
        let c = Cli::try_parse_from(["osgate", "--log-format", "json"]).unwrap();
        assert_eq!(c.gateway.log_format, Some(LogFormat::Json));
        assert_eq!(c.gateway.config(), PathBuf::from("osgate.json"));
        assert!(Cli::try_parse_from(["osgate", "rpc", "-c", "x", "gateway.status"]).is_err());
    }
}
