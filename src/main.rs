//! The `osgate` command: run the gateway (`osgate [-d] -c osgate.json`), validate a config
//! (`osgate check -c FILE`).
//!
//! Exit codes: 0 clean stop, 1 runtime failure, 2 invalid configuration or usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use osgate::config::{self, LoadError};

#[derive(Debug, Parser)]
#[command(
    name = "osgate",
    version,
    about = "Industrial IoT gateway: connectors → channels → sinks"
)]
struct Cli {
    /// Configuration file (JSON).
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        default_value = "osgate.json"
    )]
    config: PathBuf,
    /// Debug logging for osgate (RUST_LOG, when set, takes precedence).
    #[arg(short = 'd', long = "debug", global = true)]
    debug: bool,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the local configuration file, print a summary, exit 0 (valid) or 2 (invalid).
    /// It does not fetch `remote.url`: a remote configuration is validated when it arrives.
    Check,
    /// Read or write one value of a Modbus device (commissioning, like mbpoll).
    #[cfg(feature = "modbus")]
    Modbus(Box<osgate::connectors::modbus::cli::ModbusCommand>),
    /// Browse an OPC-UA server's address space (commissioning).
    #[cfg(feature = "opcua")]
    Opcua(Box<osgate::connectors::opcua::cli::OpcuaCommand>),
    /// Call a running gateway's JSON-RPC management API: `osgate rpc METHOD [JSON-PARAMS]`.
    Rpc(osgate::rpc::client::RpcCommand),
}

fn init_logging(debug: bool, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(if debug {
            "info,osgate=debug,rumqttd=error"
        } else {
            "info,rumqttd=off,rumqttc=warn"
        })
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    osgate::install_crypto_provider();
    let cli = Cli::parse();
    init_logging(cli.debug, cli.log_format);
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => check(&cli.config),
        Command::Run => run(cli.config),
        #[cfg(feature = "modbus")]
        Command::Modbus(cmd) => osgate::connectors::modbus::cli::main(*cmd),
        #[cfg(feature = "opcua")]
        Command::Opcua(cmd) => osgate::connectors::opcua::cli::main(*cmd),
        Command::Rpc(cmd) => osgate::rpc::client::main(cmd),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load_file(path) {
        Ok(cfg) => {
            let devices: usize = cfg.connectors.iter().map(|c| c.devices.len()).sum();
            println!("{}: valid", path.display());
            println!("  gateway {}", cfg.gateway.id);
            for c in &cfg.connectors {
                println!(
                    "  connector {} ({}, {} device(s){})",
                    c.name,
                    c.protocol,
                    c.devices.len(),
                    if c.enabled { "" } else { ", disabled" }
                );
            }
            for s in &cfg.sinks {
                println!("  sink {}", s.name());
            }
            println!(
                "  {} connector(s), {devices} device(s), {} sink(s)",
                cfg.connectors.len(),
                cfg.sinks.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => config_error(&e),
    }
}

fn config_error(e: &LoadError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

fn run(path: PathBuf) -> ExitCode {
    let rt = match osgate::runtime(true) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(osgate::app::run_until_signalled(path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<LoadError>() {
            Some(le) => config_error(le),
            None => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}
