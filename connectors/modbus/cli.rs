//! `osgate modbus read|write`: a commissioning tool in the spirit of mbpoll.
//!
//! It takes the same transport, unit, table, address, type, order, bit, length, scale and
//! offset options as a channel in the config, talks to the device once through the same
//! transport and codec the connector uses, and prints the decoded values, so a channel can be
//! tried out before it goes into `osgate.json`. Exit codes: 0 done, 1 the device failed or
//! refused, 2 invalid options.

use std::process::ExitCode;
use std::time::Duration;

use tokio_modbus::client::{Reader as _, Writer as _};

use super::codec::{self, ByteOrder, DataType, Table, ValueFormat};
use super::transport::{self, CallError};
use super::{Parity, SerialSettings, Transport};
use osgate_core::config::parse_duration;
use osgate_core::reading::Value;

/// `osgate modbus …`.
#[derive(Debug, clap::Args)]
pub struct ModbusCommand {
    /// What to do.
    #[command(subcommand)]
    pub op: Op,
}

/// The operations.
#[derive(Debug, clap::Subcommand)]
pub enum Op {
    /// Read and print one value (or `--count` consecutive values) of a device.
    Read(ReadArgs),
    /// Write one value to a coil or holding register(s), then read it back.
    Write(WriteArgs),
}

/// Where and what, as in a channel's config.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// Modbus TCP peer, `host:port`.
    #[arg(long, group = "transport", value_name = "HOST:PORT")]
    pub tcp: Option<String>,
    /// Serial port for Modbus RTU, e.g. /dev/ttyUSB0.
    #[arg(long, group = "transport", value_name = "PORT")]
    pub rtu: Option<String>,
    /// RTU frames over TCP, `host:port`.
    #[arg(long, group = "transport", value_name = "HOST:PORT")]
    pub rtu_over_tcp: Option<String>,
    /// Serial baud rate.
    #[arg(long, default_value_t = 9600)]
    pub baud: u32,
    /// Serial parity: none, even, odd.
    #[arg(long, default_value = "none")]
    pub parity: String,
    /// Serial data bits.
    #[arg(long, default_value_t = 8)]
    pub data_bits: u8,
    /// Serial stop bits.
    #[arg(long, default_value_t = 1)]
    pub stop_bits: u8,
    /// Unit id (slave address).
    #[arg(long, short = 'u', default_value_t = 1)]
    pub unit: u8,
    /// Table: coil, discrete, holding, input.
    #[arg(long, short = 't', default_value = "holding")]
    pub table: String,
    /// First register or bit (0-based, as on the wire).
    #[arg(long, short = 'a')]
    pub address: u16,
    /// Data type: bool, u16, i16, u32, i32, u64, i64, f32, f64, string.
    #[arg(long = "type")]
    pub data_type: Option<String>,
    /// Byte/word order: ABCD, CDAB, BADC, DCBA.
    #[arg(long, default_value = "ABCD")]
    pub order: String,
    /// For bool in a register table: the bit (0-15).
    #[arg(long)]
    pub bit: Option<u8>,
    /// For string: length in registers.
    #[arg(long)]
    pub length: Option<u16>,
    /// Multiply read values by this (writes divide).
    #[arg(long)]
    pub scale: Option<f64>,
    /// Add this to read values (writes subtract).
    #[arg(long, allow_hyphen_values = true)]
    pub offset: Option<f64>,
    /// Time to wait for the device.
    #[arg(long, default_value = "1s")]
    pub timeout: String,
}

/// `osgate modbus read`.
#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// The device and value.
    #[command(flatten)]
    pub target: Target,
    /// Number of consecutive values to read.
    #[arg(long, short = 'n', default_value_t = 1)]
    pub count: u16,
}

/// `osgate modbus write`.
#[derive(Debug, clap::Args)]
pub struct WriteArgs {
    /// The device and value.
    #[command(flatten)]
    pub target: Target,
    /// The value (number, true/false, or text for strings), in engineering units.
    #[arg(long, allow_hyphen_values = true)]
    pub value: String,
}

/// A validated target.
pub(super) struct Resolved {
    transport: Transport,
    unit: u8,
    pub(super) table: Table,
    address: u16,
    format: ValueFormat,
    scale: Option<f64>,
    offset: Option<f64>,
    timeout: Duration,
}

fn parse_json_enum<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|e| format!("--{what}: {e}"))
}

pub(super) fn resolve(t: &Target, count: u16) -> Result<Resolved, Vec<String>> {
    let mut errs = Vec::new();
    let transport = match (&t.tcp, &t.rtu, &t.rtu_over_tcp) {
        (Some(a), None, None) => Some(Transport::Tcp(a.clone())),
        (None, None, Some(a)) => Some(Transport::RtuOverTcp(a.clone())),
        (None, Some(p), None) => {
            let parity = match t.parity.to_ascii_lowercase().as_str() {
                "none" | "n" => Some(Parity::None),
                "even" | "e" => Some(Parity::Even),
                "odd" | "o" => Some(Parity::Odd),
                other => {
                    errs.push(format!(
                        "--parity: unknown parity \"{other}\", expected none, even or odd"
                    ));
                    None
                }
            };
            parity.map(|parity| {
                Transport::Rtu(SerialSettings {
                    port: p.clone(),
                    baud: t.baud,
                    parity,
                    data_bits: t.data_bits,
                    stop_bits: t.stop_bits,
                })
            })
        }
        _ => {
            errs.push("one of --tcp, --rtu or --rtu-over-tcp is required".into());
            None
        }
    };
    let table = parse_json_enum::<Table>(&t.table, "table")
        .map_err(|e| errs.push(e))
        .ok();
    let data_type = match &t.data_type {
        Some(s) => parse_json_enum::<DataType>(s, "type")
            .map_err(|e| errs.push(e))
            .ok(),
        None => table.map(|t| {
            if t.is_bits() {
                DataType::Bool
            } else {
                DataType::U16
            }
        }),
    };
    let order = t
        .order
        .parse::<ByteOrder>()
        .map_err(|e| errs.push(format!("--order: {e}")))
        .ok();
    let timeout = parse_duration(&t.timeout)
        .map_err(|e| errs.push(format!("--timeout: {e}")))
        .ok();
    if count == 0 {
        errs.push("--count: must be at least 1".into());
    }
    let (Some(transport), Some(table), Some(data_type), Some(order), Some(timeout)) =
        (transport, table, data_type, order, timeout)
    else {
        return Err(errs);
    };
    let format = ValueFormat {
        data_type,
        order,
        bit: t.bit,
        length: t.length.unwrap_or(0),
    };
    let span = u32::from(format.count(table)) * u32::from(count.max(1));
    if span > u32::from(table.protocol_limit()) {
        errs.push(format!(
            "--count: {span} items do not fit in one request (at most {})",
            table.protocol_limit()
        ));
    }
    for (field, msg) in format.check(table, t.address) {
        errs.push(format!("--{field}: {msg}"));
    }
    if count > 1 && u32::from(t.address) + span > 65536 {
        errs.push(format!(
            "--count: {count} values from {} run past 65535",
            t.address
        ));
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Resolved {
        transport,
        unit: t.unit,
        table,
        address: t.address,
        format,
        scale: t.scale,
        offset: t.offset,
        timeout,
    })
}

/// `osgate modbus …`, the protocol's tool in the registry.
pub const TOOL: crate::Tool = crate::Tool {
    about: "Read or write one value of a Modbus device (commissioning, like mbpoll)",
    args: <ModbusCommand as clap::Args>::augment_args,
    run: |m| crate::Tool::run_with(m, main),
    methods: super::tool::METHODS,
};

/// Runs `osgate modbus …` and returns the process exit code.
pub fn main(cmd: ModbusCommand) -> ExitCode {
    let rt = match osgate_core::runtime(false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match cmd.op {
        Op::Read(args) => match resolve(&args.target, args.count) {
            Err(errs) => crate::Tool::usage_error(&errs),
            Ok(r) => match rt.block_on(read(&r, args.count)) {
                Ok(values) => {
                    for (addr, v) in values {
                        osgate_core::outln!("{}[{addr}] = {}", r.table, Shown(&v));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => crate::Tool::failed(&e),
            },
        },
        Op::Write(args) => match resolve(&args.target, 1).and_then(writable) {
            Err(errs) => crate::Tool::usage_error(&errs),
            Ok(r) => {
                let value = parse_value(&args.value, r.format.data_type);
                match rt.block_on(write(&r, &value)) {
                    Ok(back) => {
                        osgate_core::outln!(
                            "{}[{}] = {} (written {})",
                            r.table,
                            r.address,
                            Shown(&back),
                            Shown(&value)
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => crate::Tool::failed(&e),
                }
            }
        },
    }
}

/// Only coils and holding registers can be written: anything else is a usage error (exit 2),
/// found before the device is contacted.
fn writable(r: Resolved) -> Result<Resolved, Vec<String>> {
    if r.table.is_writable() {
        Ok(r)
    } else {
        Err(vec![format!(
            "--table: table \"{}\" is read-only; write to a coil or a holding register",
            r.table
        )])
    }
}

/// A value as printed: floats in their shortest round-trip form, as in MQTT payloads
/// (`1.653054e-40`, not forty zeros), whole ones without `.0`.
struct Shown<'a>(&'a Value);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Value::F64(x) if x.is_finite() => {
                let mut b = ryu::Buffer::new();
                let s = b.format_finite(*x);
                // Whole numbers as a person writes them: `25`, not `25.0`.
                f.write_str(s.strip_suffix(".0").unwrap_or(s))
            }
            v => write!(f, "{v}"),
        }
    }
}

/// A command-line value: JSON (numbers, true/false) where it parses, text otherwise.
fn parse_value(s: &str, dt: DataType) -> Value {
    if dt == DataType::String {
        return Value::Text(s.into());
    }
    serde_json::from_str::<serde_json::Value>(s)
        .ok()
        .and_then(|j| Value::from_json(&j))
        .unwrap_or_else(|| Value::Text(s.into()))
}

fn apply_scale(v: Value, r: &Resolved) -> Value {
    if r.scale.is_none() && r.offset.is_none() {
        return v;
    }
    match v.as_f64() {
        Some(x) if !matches!(v, Value::Bool(_)) => {
            Value::F64(x * r.scale.unwrap_or(1.0) + r.offset.unwrap_or(0.0))
        }
        _ => v,
    }
}

/// An error of the tool: a failed request or a value that cannot be encoded.
#[derive(Debug, thiserror::Error)]
pub(super) enum CliError {
    #[error("{0}")]
    Call(#[from] CallError),
    #[error("{0}")]
    Codec(#[from] codec::CodecError),
}

pub(super) async fn read(r: &Resolved, count: u16) -> Result<Vec<(u16, Value)>, CliError> {
    let mut ctx = transport::connect(&r.transport, r.unit, r.timeout).await?;
    let step = r.format.count(r.table);
    let n = step * count;
    let a = r.address;
    let t = r.timeout;
    let mut out = Vec::new();
    match r.table {
        Table::Coil | Table::Discrete => {
            let bits = if r.table == Table::Coil {
                transport::call(t, ctx.read_coils(a, n)).await?
            } else {
                transport::call(t, ctx.read_discrete_inputs(a, n)).await?
            };
            for (i, b) in bits.iter().take(usize::from(n)).enumerate() {
                out.push((a + i as u16, codec::decode_bit(*b)));
            }
        }
        Table::Holding | Table::Input => {
            let regs = if r.table == Table::Holding {
                transport::call(t, ctx.read_holding_registers(a, n)).await?
            } else {
                transport::call(t, ctx.read_input_registers(a, n)).await?
            };
            for (i, chunk) in regs
                .chunks(usize::from(step))
                .take(usize::from(count))
                .enumerate()
            {
                let v = codec::decode_registers(chunk, &r.format)?;
                out.push((a + i as u16 * step, apply_scale(v, r)));
            }
        }
    }
    Ok(out)
}

async fn write(r: &Resolved, value: &Value) -> Result<Value, CliError> {
    let mut ctx = transport::connect(&r.transport, r.unit, r.timeout).await?;
    let (a, t) = (r.address, r.timeout);
    match (r.table, r.format.data_type) {
        (Table::Coil, _) => {
            transport::call(t, ctx.write_single_coil(a, codec::to_coil(value)?)).await?;
        }
        (Table::Holding, DataType::Bool) => {
            let masks = codec::bit_masks(&r.format, codec::to_coil(value)?)?;
            transport::write_masked(&mut ctx, t, a, masks, &mut true).await?;
        }
        (Table::Holding, _) => {
            let raw = codec::unscale(value, r.scale, r.offset)?;
            let words = codec::encode_registers(&raw, &r.format)?;
            if words.len() == 1 {
                transport::call(t, ctx.write_single_register(a, words[0])).await?;
            } else {
                transport::call(t, ctx.write_multiple_registers(a, &words)).await?;
            }
        }
        // main() refuses other tables before connecting (a usage error).
        (table, _) => {
            return Err(CallError::Exception(format!("table \"{table}\" is read-only")).into())
        }
    }
    drop(ctx);
    let back = read(r, 1).await?;
    Ok(back
        .into_iter()
        .next()
        .map(|(_, v)| v)
        .unwrap_or(Value::Bool(false)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        cmd: ModbusCommand,
    }

    fn resolve_args(args: &[&str]) -> Result<Resolved, Vec<String>> {
        let cli = Cli::try_parse_from(std::iter::once("modbus").chain(args.iter().copied()))
            .expect("parses");
        match cli.cmd.op {
            Op::Read(a) => resolve(&a.target, a.count),
            Op::Write(a) => resolve(&a.target, 1),
        }
    }

    #[test]
    fn options_resolve_like_a_channel() {
        let r = resolve_args(&[
            "read",
            "--tcp",
            "127.0.0.1:502",
            "-u",
            "3",
            "-t",
            "input",
            "-a",
            "10",
            "--type",
            "f32",
            "--order",
            "cdab",
            "--scale",
            "0.1",
            "--offset",
            "-5",
        ])
        .unwrap();
        assert_eq!(r.unit, 3);
        assert_eq!(r.table, Table::Input);
        assert_eq!(r.format.data_type, DataType::F32);
        assert_eq!(r.format.order, ByteOrder::CDAB);
        assert_eq!(r.offset, Some(-5.0));
        assert_eq!(apply_scale(Value::U64(100), &r), Value::F64(5.0));
    }

    #[test]
    fn bad_options_name_the_option() {
        let cases: [(&[&str], &str); 6] = [
            (
                &["read", "--tcp", "h:1", "-a", "1", "--type", "f23"],
                "--type",
            ),
            (
                &["read", "--tcp", "h:1", "-a", "1", "--order", "ABDC"],
                "--order",
            ),
            (
                &["read", "--tcp", "h:1", "-a", "1", "-t", "holdings"],
                "--table",
            ),
            (
                &["read", "--tcp", "h:1", "-a", "65535", "--type", "u32"],
                "--address",
            ),
            (
                &[
                    "read", "--tcp", "h:1", "-a", "1", "--type", "bool", "--bit", "16",
                ],
                "--bit",
            ),
            (&["read", "-a", "1"], "--tcp"),
        ];
        for (args, want) in cases {
            let errs = resolve_args(args).err().unwrap_or_default();
            assert!(errs.iter().any(|e| e.contains(want)), "{args:?} → {errs:?}");
        }
    }

    #[test]
    fn command_line_values() {
        assert_eq!(parse_value("42", DataType::U16), Value::U64(42));
        assert_eq!(parse_value("-1.5", DataType::F32), Value::F64(-1.5));
        assert_eq!(parse_value("true", DataType::Bool), Value::Bool(true));
        assert_eq!(
            parse_value("42", DataType::String),
            Value::Text("42".into())
        );
    }

    #[test]
    fn writing_a_read_only_table_is_a_usage_error() {
        for table in ["input", "discrete"] {
            let r = resolve_args(&[
                "write",
                "--tcp",
                "127.0.0.1:1",
                "-t",
                table,
                "-a",
                "0",
                "--value",
                "1",
            ]);
            let errs = r.and_then(writable).err().expect("refused");
            assert_eq!(
                errs,
                [format!(
                    "--table: table \"{table}\" is read-only; write to a coil or a holding register"
                )]
            );
        }
        let r = resolve_args(&[
            "write",
            "--tcp",
            "127.0.0.1:1",
            "-t",
            "holding",
            "-a",
            "0",
            "--value",
            "1",
        ]);
        assert!(r.and_then(writable).is_ok());
    }

    #[test]
    fn floats_print_shortest_round_trip() {
        let tiny = f64::from(f32::from_bits(0x0001_2000)) * 0.1;
        let shown = Shown(&Value::F64(tiny)).to_string();
        assert!(!shown.starts_with("0.0000"), "{shown}");
        assert_eq!(shown.parse::<f64>().unwrap(), tiny);
        assert_eq!(Shown(&Value::F64(230.1)).to_string(), "230.1");
        assert_eq!(Shown(&Value::F64(25.0)).to_string(), "25");
        assert_eq!(Shown(&Value::U64(7)).to_string(), "7");
    }
}
