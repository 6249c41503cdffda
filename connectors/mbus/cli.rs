//! `osgate mbus decode|scan|read`: field tools for M-Bus.
//!
//! - `decode HEX-OR-FILE` prints one frame as JSON (type and fields, header and records of an
//!   RSP_UD, the bytes of a CI it does not read); exit 0 for one valid frame of any type (ACK,
//!   short, control, long), 2 only when the input is not one (bad checksum, wrong length,
//!   truncated, bytes left over, malformed records) with the reason on stderr.
//! - `scan --serial PORT|--tcp HOST:PORT [--secondary]` lists the meters on a bus.
//! - `read --serial PORT|--tcp HOST:PORT --address N|--id ID` reads one meter and prints each
//!   telegram like `decode`.
//!
//! Exit codes: 0 done, 1 the bus or meter failed, 2 invalid input or options.

use std::process::ExitCode;
use std::time::Duration;

use tokio::time::Instant;

use super::link::{self, Address, Endpoint, Link, Secondary, Timing};
use super::{frame, json, BAUDS};
use osgate_core::config::parse_duration;

/// `osgate mbus …`.
#[derive(Debug, clap::Args)]
pub struct MbusCommand {
    /// What to do.
    #[command(subcommand)]
    pub op: Op,
}

/// The operations.
#[derive(Debug, clap::Subcommand)]
pub enum Op {
    /// Decode one frame given as hex (or a file of hex or raw bytes) and print it as JSON.
    Decode {
        /// Hex bytes ("68 3C 3C 68 …") or a file holding them (or the raw frame).
        input: String,
    },
    /// List the meters on a bus (primary addresses, or a secondary wildcard search).
    Scan(ScanArgs),
    /// Read one meter and print its telegrams as JSON.
    Read(ReadArgs),
}

/// The bus.
#[derive(Debug, clap::Args)]
pub struct BusArgs {
    /// Serial port of an M-Bus level converter, e.g. /dev/ttyUSB0.
    #[arg(long, group = "bus", value_name = "PORT")]
    pub serial: Option<String>,
    /// TCP level converter, `host:port`.
    #[arg(long, group = "bus", value_name = "HOST:PORT")]
    pub tcp: Option<String>,
    /// Baud rate of the bus.
    #[arg(long, default_value_t = 2400)]
    pub baud: u32,
    /// Serial parity: even (M-Bus) or none.
    #[arg(long, default_value = "even")]
    pub parity: String,
    /// Time to wait for an answer (default from the baud rate).
    #[arg(long)]
    pub timeout: Option<String>,
}

/// `osgate mbus scan`.
#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// The bus.
    #[command(flatten)]
    pub bus: BusArgs,
    /// Search by secondary address (wildcards, narrowing on collisions).
    #[arg(long)]
    pub secondary: bool,
    /// Stop scanning after this long.
    #[arg(long, default_value = "10m")]
    pub max_time: String,
}

/// `osgate mbus read`.
#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// The bus.
    #[command(flatten)]
    pub bus: BusArgs,
    /// Primary address (0-250).
    #[arg(long, group = "meter")]
    pub address: Option<u8>,
    /// Secondary address (8 id digits, or 16 hex digits with manufacturer, version, medium).
    #[arg(long, group = "meter")]
    pub id: Option<String>,
}

/// `osgate mbus …`, the protocol's tool in the registry.
pub const TOOL: crate::Tool = crate::Tool {
    about: "M-Bus field tools: decode a frame, scan a bus, read a meter",
    args: <MbusCommand as clap::Args>::augment_args,
    run: |m| crate::Tool::run_with(m, main),
};

/// Runs `osgate mbus …` and returns the process exit code.
pub fn main(cmd: MbusCommand) -> ExitCode {
    match cmd.op {
        Op::Decode { input } => decode(&input),
        Op::Scan(args) => with_link(&args.bus, |mut link| async move {
            let max = parse_duration(&args.max_time).map_err(CliError::Usage)?;
            let deadline = Instant::now() + max;
            let found = if args.secondary {
                link::scan_secondary(&mut link, deadline).await
            } else {
                link::scan_primary(&mut link, 0..=250, deadline).await
            }
            .map_err(|e| CliError::Failed(e.to_string()))?;
            for f in &found {
                println!("{}", json::found(f));
            }
            eprintln!("{} meter(s) found", found.len());
            Ok(())
        }),
        Op::Read(args) => with_link(&args.bus, |mut link| async move {
            let address = match (args.address, &args.id) {
                (Some(a), None) if a <= 250 => Address::Primary(a),
                (None, Some(id)) => {
                    Address::Secondary(Secondary::parse(id).map_err(CliError::Usage)?)
                }
                _ => return Err(CliError::Usage("give --address 0-250 or --id".into())),
            };
            let telegrams = link
                .read_meter(address, 16)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            for t in &telegrams {
                let f = frame::parse(t).map_err(|e| CliError::Failed(e.to_string()))?;
                let j = json::frame(&f).map_err(|e| CliError::Failed(e.to_string()))?;
                println!("{j}");
            }
            Ok(())
        }),
    }
}

/// Why a command failed: bad options (exit 2) or the bus or meter (exit 1).
enum CliError {
    Usage(String),
    Failed(String),
}

/// Opens the bus from the options and runs `f` on it.
fn with_link<F, Fut>(bus: &BusArgs, f: F) -> ExitCode
where
    F: FnOnce(Link) -> Fut,
    Fut: std::future::Future<Output = Result<(), CliError>>,
{
    let link = match link_of(bus) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match osgate_core::runtime(false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(f(link)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn link_of(bus: &BusArgs) -> Result<Link, String> {
    if !BAUDS.contains(&bus.baud) {
        return Err(format!(
            "--baud {}: expected one of 300, 600, 1200, 2400, 4800, 9600, 19200, 38400",
            bus.baud
        ));
    }
    let endpoint = match (&bus.serial, &bus.tcp) {
        (Some(p), None) => Endpoint::Serial {
            port: p.clone(),
            baud: bus.baud,
            even_parity: match bus.parity.as_str() {
                "even" => true,
                "none" => false,
                other => return Err(format!("--parity {other}: expected even or none")),
            },
        },
        (None, Some(a)) => Endpoint::Tcp(a.clone()),
        _ => return Err("give --serial PORT or --tcp HOST:PORT".into()),
    };
    let timeout = match &bus.timeout {
        Some(t) => parse_duration(t).map_err(|e| format!("--timeout: {e}"))?,
        None => super::default_timeout(bus.baud),
    };
    Ok(Link::new(
        endpoint,
        Timing {
            timeout,
            retries: 1,
            baud: bus.baud,
        },
    ))
}

/// The bytes of `input`: a file of hex text or raw bytes, or hex on the command line.
fn input_bytes(input: &str) -> Result<Vec<u8>, String> {
    let path = std::path::Path::new(input);
    if path.is_file() {
        let raw = std::fs::read(path).map_err(|e| format!("{input}: {e}"))?;
        let is_text = raw
            .iter()
            .all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace() || *b == b':');
        if is_text {
            return frame::parse_hex(&String::from_utf8_lossy(&raw))
                .map_err(|e| format!("{input}: {e}"));
        }
        return Ok(raw);
    }
    frame::parse_hex(input).map_err(|e| format!("not a file, and not hex: {e}"))
}

fn decode(input: &str) -> ExitCode {
    let bytes = match input_bytes(input) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let f = match frame::parse(&bytes) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: invalid frame: {e}");
            return ExitCode::from(2);
        }
    };
    match json::frame(&f) {
        Ok(j) => {
            if let Some(e) = j.get("error").and_then(|e| e.get("message")) {
                eprintln!(
                    "meter reports an application error: {}",
                    e.as_str().unwrap_or("")
                );
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&j).unwrap_or_else(|_| j.to_string())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: invalid user data: {e}");
            ExitCode::from(2)
        }
    }
}

/// Scans the bus of a running connector for at most `max_time`: the `mbus.scan` RPC.
pub async fn scan(
    endpoint: Endpoint,
    timing: Timing,
    secondary: bool,
    max_time: Duration,
) -> Result<Vec<link::Found>, link::LinkError> {
    let mut link = Link::new(endpoint, timing);
    let deadline = Instant::now() + max_time;
    if secondary {
        link::scan_secondary(&mut link, deadline).await
    } else {
        link::scan_primary(&mut link, 0..=250, deadline).await
    }
}
