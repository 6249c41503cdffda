//! `osgate s7 read|write ADDRESS`: a commissioning tool for S7 PLCs.
//!
//! It takes the same host, rack/slot or TSAPs, address, type and length as the connector's
//! config, connects once through the same transport, wire and codec the connector uses, and
//! prints the value (and the PDU the PLC granted), so a channel can be tried out before it
//! goes into `osgate.json`. Values are raw (no scale/offset). Exit codes: 0 done, 1 the PLC
//! failed or refused, 2 invalid options.

use std::process::ExitCode;
use std::sync::Arc;

use super::codec::{self, DataType};
use super::poller::{value_kind, ChannelInfo, Link};
use super::transport::Connection;
use super::wire::{self, ItemKind, ItemSpec};
use super::{ConnectionType, S7Channel, S7Settings, Tsap};
use osgate_core::config::parse_duration;
use crate::device::payload::{parse_bool, parse_number};
use crate::device::{ValueKind, WriteError};
use osgate_core::reading::Value;

/// `osgate s7 …`.
#[derive(Debug, clap::Args)]
pub struct S7Command {
    /// What to do.
    #[command(subcommand)]
    pub op: Op,
}

/// The operations.
#[derive(Debug, clap::Subcommand)]
pub enum Op {
    /// Read and print one value.
    Read(Target),
    /// Write one value, then read it back.
    Write(WriteArgs),
}

/// The PLC and the value, as in a connector's and a channel's config.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The address in Siemens notation: DB1.DBD0, DB1.DBX6.3, MW20, I0.0, Q0.1, C5, T3, …
    pub address: String,
    /// The PLC's host name or IP address.
    #[arg(long)]
    pub host: String,
    /// ISO-on-TCP port.
    #[arg(long, default_value_t = 102)]
    pub port: u16,
    /// Rack of the CPU.
    #[arg(long, default_value_t = 0)]
    pub rack: u8,
    /// Slot of the CPU (S7-300: 2, S7-1200/1500: 1).
    #[arg(long, default_value_t = 1)]
    pub slot: u8,
    /// Our TSAP instead of the rack/slot default (`01.00`, `0x0100`).
    #[arg(long)]
    pub local_tsap: Option<String>,
    /// The PLC's TSAP instead of rack/slot (`03.01`, `0x0301`).
    #[arg(long)]
    pub remote_tsap: Option<String>,
    /// Data type (default from the address): bool, byte, int, dint, real, lreal, string, …
    #[arg(long = "type")]
    pub data_type: Option<String>,
    /// For string: its declared length in characters.
    #[arg(long)]
    pub length: Option<u16>,
    /// Time to wait for the PLC.
    #[arg(long, default_value = "2s")]
    pub timeout: String,
}

/// `osgate s7 write`.
#[derive(Debug, clap::Args)]
pub struct WriteArgs {
    /// The PLC and the value.
    #[command(flatten)]
    pub target: Target,
    /// The value: a number, true/false, or text (string, char, date and time types).
    #[arg(long, allow_hyphen_values = true)]
    pub value: String,
}

fn resolve(t: &Target) -> Result<(Link, ChannelInfo), Vec<String>> {
    let mut errs = Vec::new();
    let tsap = |s: &Option<String>, what: &str, errs: &mut Vec<String>| {
        s.as_deref().and_then(|s| {
            s.parse::<Tsap>()
                .map_err(|e| errs.push(format!("--{what}: {e}")))
                .ok()
        })
    };
    let local_tsap = tsap(&t.local_tsap, "local-tsap", &mut errs);
    let remote_tsap = tsap(&t.remote_tsap, "remote-tsap", &mut errs);
    let timeout = parse_duration(&t.timeout)
        .map_err(|e| errs.push(format!("--timeout: {e}")))
        .ok();
    let data_type = t.data_type.as_deref().and_then(|s| {
        s.parse::<DataType>()
            .map_err(|e| errs.push(format!("--type: {e}")))
            .ok()
    });
    if t.rack > 7 {
        errs.push(format!("--rack: must be 0..=7, got {}", t.rack));
    }
    if t.slot > 31 {
        errs.push(format!("--slot: must be 0..=31, got {}", t.slot));
    }
    let ch = S7Channel {
        address: t.address.clone(),
        data_type,
        length: t.length,
        interval: None,
        writable: false,
    };
    let info = match ch.resolve() {
        Ok((addr, ty, length)) => Some(ChannelInfo { addr, ty, length }),
        Err((field, msg)) => {
            errs.push(format!("--{field}: {msg}"));
            None
        }
    };
    let (Some(info), Some(timeout), true) = (info, timeout, errs.is_empty()) else {
        return Err(errs);
    };
    let settings = S7Settings {
        host: t.host.clone(),
        port: t.port,
        rack: t.rack,
        slot: t.slot,
        connection_type: ConnectionType::Pg,
        local_tsap,
        remote_tsap,
        pdu_size: 960,
        max_items: 20,
        max_gap: 16,
        retries: 0,
        max_connections: 1,
    };
    Ok((Link::new(Arc::new(settings), timeout), info))
}

/// `osgate s7 …` in the protocol registry.
pub const TOOL: crate::Tool = crate::Tool {
    about: "Read or write one value of a Siemens S7 PLC (commissioning)",
    args: <S7Command as clap::Args>::augment_args,
    run: |m| crate::Tool::run_with(m, main),
    methods: &[],
};

/// Runs `osgate s7 …` and returns the process exit code.
pub fn main(cmd: S7Command) -> ExitCode {
    let rt = match osgate_core::runtime(false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match cmd.op {
        Op::Read(t) => match resolve(&t) {
            Err(errs) => crate::Tool::usage_error(&errs),
            Ok((mut link, info)) => {
                match rt.block_on(read(&mut link, info)) {
                    Ok(v) => {
                        osgate_core::outln!("{} = {}", info.addr, Shown(&v));
                        ExitCode::SUCCESS
                    }
                    Err(e) => crate::Tool::failed(&e),
                }
            }
        },
        Op::Write(args) => match resolve(&args.target).and_then(|r| writable(r, &args.value)) {
            Err(errs) => crate::Tool::usage_error(&errs),
            Ok((mut link, info, value)) => {
                let res = rt.block_on(async {
                    link.write_raw(info, &value).await.map_err(|e| match e {
                        WriteError::Invalid(m)
                        | WriteError::Refused(m)
                        | WriteError::Offline(m) => m,
                    })?;
                    read(&mut link, info).await
                });
                match res {
                    Ok(back) => {
                        osgate_core::outln!(
                            "{} = {} (written {})",
                            info.addr,
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

/// Inputs, counters and timers are not written; the value must suit the type. Both are usage
/// errors (exit 2), found before the PLC is contacted.
fn writable(
    (link, info): (Link, ChannelInfo),
    text: &str,
) -> Result<(Link, ChannelInfo, Value), Vec<String>> {
    use super::address::Area;
    if matches!(info.addr.area, Area::Inputs | Area::Counters | Area::Timers) {
        return Err(vec![format!(
            "{}: inputs, counters and timers are read-only; write to DB, M or Q",
            info.addr
        )]);
    }
    let value = match value_kind(info.ty) {
        ValueKind::Bool => parse_bool(text).map(Value::Bool),
        ValueKind::Text => Some(Value::Text(text.into())),
        _ => parse_number(text),
    }
    .ok_or_else(|| vec![format!("--value: \"{text}\" is not a {} value", info.ty)])?;
    codec::encode(info.ty, &value, info.length).map_err(|e| vec![format!("--value: {e}")])?;
    Ok((link, info, value))
}

/// Reads one value as one item.
async fn read(link: &mut Link, c: ChannelInfo) -> Result<Value, String> {
    let conn: &mut Connection = link.connection().await.map_err(|e| e.to_string())?;
    let unit = c.addr.area.unit_bytes();
    let bytes = c.ty.size(c.length);
    let cap = usize::from(conn.pdu()) - wire::ACK_HEADER - 2 - wire::ITEM_HEADER;
    if bytes as usize > cap {
        return Err(format!(
            "the value takes {bytes} bytes, more than one item within the PLC's PDU of {} holds",
            conn.pdu()
        ));
    }
    let item = ItemSpec {
        area: c.addr.area,
        kind: ItemKind::of(c.addr.area),
        start: c.addr.offset,
        bit: 0,
        count: (bytes / unit).max(1) as u16,
    };
    let r = conn.take_ref();
    wire::read_request(&mut conn.tx, r, std::iter::once(item));
    let ack = conn.exchange().await.map_err(|e| e.to_string())?;
    let mut items = wire::read_answer(&ack, 1).map_err(|e| e.to_string())?;
    match items.next() {
        Some(Ok(data)) => {
            codec::decode(c.ty, data, c.addr.bit().unwrap_or(0)).map_err(|e| e.to_string())
        }
        Some(Err(e)) => Err(format!("{}: {}", c.addr, e.describe(c.addr.area))),
        None => Err("empty answer".into()),
    }
}

/// A value as printed: floats in their shortest round-trip form, whole ones without `.0`.
struct Shown<'a>(&'a Value);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Value::F64(x) if x.is_finite() => {
                let mut b = ryu::Buffer::new();
                let s = b.format_finite(*x);
                f.write_str(s.strip_suffix(".0").unwrap_or(s))
            }
            v => write!(f, "{v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(address: &str) -> Target {
        Target {
            address: address.into(),
            host: "127.0.0.1".into(),
            port: 102,
            rack: 0,
            slot: 1,
            local_tsap: None,
            remote_tsap: None,
            data_type: None,
            length: None,
            timeout: "1s".into(),
        }
    }

    #[test]
    fn options_are_checked_before_connecting() {
        let (_, info) = resolve(&target("DB1.DBX6.3")).unwrap();
        assert_eq!(info.ty, DataType::Bool);
        let mut t = target("DB1.DBW4");
        t.data_type = Some("real".into());
        t.rack = 9;
        let errs = resolve(&t).err().expect("invalid");
        assert!(errs.iter().any(|e| e.starts_with("--rack")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("DB1.DBD4")), "{errs:?}");
        let r = resolve(&target("IW0")).unwrap();
        assert!(writable(r, "1").is_err());
        let r = resolve(&target("MW0")).unwrap();
        assert!(writable(r, "70000").is_err());
        let r = resolve(&target("MW0")).unwrap();
        assert!(writable(r, "7").is_ok());
    }
}
