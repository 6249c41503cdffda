//! M-Bus application layer (EN 13757-3): the user data of an RSP_UD decoded into a header and
//! data records, values scaled to the base unit of their quantity.
//!
//! [`decode`] reads the CI field and the header (variable structure `0x72`/`0x76` with the 12-byte
//! header, `0x7A` short header, `0x78` none, fixed structure `0x73`/`0x77`) and turns an
//! application error (`0x70`) into [`DecodeError::Application`]. [`UserData::records`] walks
//! the records lazily and without allocating: DIF and the DIFE chain (storage number, tariff,
//! sub-unit), VIF and the VIFE chain (primary table, `0xFD` and `0xFB` extension tables,
//! plain-text VIF `0x7C`/`0xFC`, correction factors), and the data field (integers of 1–8 bytes,
//! BCD, Real32, dates of types F, G and I, variable length, manufacturer blocks). Scaling and
//! unit names follow libmbus's normalized output, so values compare one to one with the
//! reference implementation; the poller maps records to channels, the CLI prints them.

use std::fmt::Write as _;

/// Why user data cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The meter answered with an application error (CI 0x70).
    #[error("meter reports an application error: {}", app_error_text(*.0))]
    Application(u8),
    /// A CI field this decoder does not handle.
    #[error(
        "unsupported CI field 0x{0:02X} (expected 0x70, 0x72, 0x73, 0x76, 0x77, 0x78 or 0x7A)"
    )]
    UnsupportedCi(u8),
    /// The header is shorter than its CI field requires.
    #[error("header too short: CI 0x{ci:02X} needs {need} bytes, got {got}")]
    ShortHeader {
        /// The CI field.
        ci: u8,
        /// Bytes the header needs.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// A record ends before its DIF/VIF/data says.
    #[error("premature end of record {index} at {at}")]
    Premature {
        /// The record's index.
        index: u16,
        /// Where: "DIF", "VIF", "plain-text VIF", "data".
        at: &'static str,
    },
    /// More than 10 DIFEs.
    #[error("record {0}: too many DIFEs (more than 10)")]
    TooManyDife(u16),
    /// More than 10 VIFEs.
    #[error("record {0}: too many VIFEs (more than 10)")]
    TooManyVife(u16),
    /// A plain-text VIF longer than the standard's limit.
    #[error("record {index}: plain-text VIF of {len} bytes is too long (at most 128)")]
    TextVifTooLong {
        /// The record's index.
        index: u16,
        /// The announced length.
        len: u8,
    },
    /// An LVAR byte with no defined length.
    #[error("record {index}: unsupported variable-length code 0x{lvar:02X}")]
    BadLvar {
        /// The record's index.
        index: u16,
        /// The LVAR byte.
        lvar: u8,
    },
}

impl DecodeError {
    /// A stable label of the kind of error, for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Application(_) => "application_error",
            _ => "malformed",
        }
    }
}

/// The text of an application error code (EN 13757-3, CI 0x70).
pub fn app_error_text(code: u8) -> String {
    match code {
        0 => "unspecified error".into(),
        1 => "unimplemented CI field".into(),
        2 => "buffer too long, truncated".into(),
        3 => "too many records".into(),
        4 => "premature end of record".into(),
        5 => "more than 10 DIFEs".into(),
        6 => "more than 10 VIFEs".into(),
        7 => "reserved (code 7)".into(),
        8 => "application busy".into(),
        9 => "too many readouts".into(),
        c => format!("unknown application error 0x{c:02X}"),
    }
}

/// The fixed part of a variable-structure header, or what a short or fixed header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Identification number (4 bytes, least significant first, usually BCD); `None` with a
    /// short header.
    pub id: Option<[u8; 4]>,
    /// Manufacturer (three letters packed in 15 bits).
    pub manufacturer: Option<u16>,
    /// Version (generation) of the meter.
    pub version: Option<u8>,
    /// Medium code.
    pub medium: Option<u8>,
    /// Access number (transmission counter).
    pub access_number: u8,
    /// Status byte.
    pub status: u8,
    /// Signature (encryption), 0 when none.
    pub signature: u16,
}

impl Header {
    /// The identification number as printed on the meter (the BCD digits, or hex digits when
    /// it is not valid BCD).
    pub fn id_string(&self) -> Option<String> {
        self.id.map(u32::from_le_bytes).map(|v| format!("{v:08X}"))
    }

    /// The identification number as a number (`None` when not BCD).
    pub fn id_number(&self) -> Option<u32> {
        self.id_string()?.parse().ok()
    }

    /// The three-letter manufacturer code.
    pub fn manufacturer_code(&self) -> Option<String> {
        self.manufacturer.map(manufacturer_code)
    }

    /// The medium's name.
    pub fn medium_name(&self) -> Option<&'static str> {
        self.medium.map(medium_name)
    }
}

/// The three letters of a packed manufacturer id.
pub fn manufacturer_code(m: u16) -> String {
    [(m >> 10) & 0x1F, (m >> 5) & 0x1F, m & 0x1F]
        .iter()
        .map(|&c| char::from(c as u8 + 64))
        .collect()
}

/// Packs three letters into a manufacturer id (`None` unless three ASCII letters).
pub fn manufacturer_id(code: &str) -> Option<u16> {
    let b = code.as_bytes();
    if b.len() != 3 || !b.iter().all(|c| c.is_ascii_uppercase()) {
        return None;
    }
    Some(b.iter().fold(0u16, |m, &c| (m << 5) | u16::from(c - 64)))
}

/// The name of a medium code (EN 13757-3 table "Medium").
pub fn medium_name(m: u8) -> &'static str {
    match m {
        0x00 => "other",
        0x01 => "oil",
        0x02 => "electricity",
        0x03 => "gas",
        0x04 => "heat (outlet)",
        0x05 => "steam",
        0x06 => "warm water",
        0x07 => "water",
        0x08 => "heat cost allocator",
        0x09 => "compressed air",
        0x0A => "cooling load (outlet)",
        0x0B => "cooling load (inlet)",
        0x0C => "heat (inlet)",
        0x0D => "heat / cooling load",
        0x0E => "bus / system",
        0x0F => "unknown medium",
        0x15 => "hot water",
        0x16 => "cold water",
        0x17 => "dual register water",
        0x18 => "pressure",
        0x19 => "A/D converter",
        0x1A => "smoke detector",
        0x1B => "room sensor",
        0x1C => "gas detector",
        0x20 => "breaker (electricity)",
        0x21 => "valve (gas or water)",
        0x25 => "customer unit",
        0x28 => "waste water",
        0x29 => "garbage",
        0x2A => "carbon dioxide",
        0x31 => "communication controller",
        0x32 => "unidirectional repeater",
        0x33 => "bidirectional repeater",
        0x36 => "radio converter (system side)",
        0x37 => "radio converter (meter side)",
        _ => "reserved",
    }
}

/// Decoded user data of one RSP_UD: header plus records (read lazily).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UserData<'a> {
    /// The CI field.
    pub ci: u8,
    /// The header.
    pub header: Header,
    body: Body<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Body<'a> {
    Variable {
        data: &'a [u8],
        msb: bool,
    },
    Fixed {
        status: u8,
        units: [u8; 2],
        values: [[u8; 4]; 2],
    },
}

/// Decodes the user data after CI of an RSP_UD (`data` may be empty for a control frame).
pub fn decode(ci: u8, data: &[u8]) -> Result<UserData<'_>, DecodeError> {
    let need = |n: usize| {
        if data.len() < n {
            Err(DecodeError::ShortHeader {
                ci,
                need: n,
                got: data.len(),
            })
        } else {
            Ok(())
        }
    };
    match ci {
        0x70 => Err(DecodeError::Application(data.first().copied().unwrap_or(0))),
        0x72 | 0x76 => {
            need(12)?;
            let msb = ci == 0x76;
            let mut id = [data[0], data[1], data[2], data[3]];
            let mut man = [data[4], data[5]];
            let mut sig = [data[10], data[11]];
            if msb {
                id.reverse();
                man.reverse();
                sig.reverse();
            }
            let header = Header {
                id: Some(id),
                manufacturer: Some(u16::from_le_bytes(man)),
                version: Some(data[6]),
                medium: Some(data[7]),
                access_number: data[8],
                status: data[9],
                signature: u16::from_le_bytes(sig),
            };
            Ok(UserData {
                ci,
                header,
                body: Body::Variable {
                    data: &data[12..],
                    msb,
                },
            })
        }
        0x7A => {
            need(4)?;
            let header = Header {
                access_number: data[0],
                status: data[1],
                signature: u16::from_le_bytes([data[2], data[3]]),
                ..Header::default()
            };
            Ok(UserData {
                ci,
                header,
                body: Body::Variable {
                    data: &data[4..],
                    msb: false,
                },
            })
        }
        0x78 => Ok(UserData {
            ci,
            header: Header::default(),
            body: Body::Variable { data, msb: false },
        }),
        0x73 | 0x77 => {
            need(16)?;
            let four = |i: usize| {
                let mut v = [data[i], data[i + 1], data[i + 2], data[i + 3]];
                if ci == 0x77 {
                    v.reverse();
                }
                v
            };
            let (u1, u2) = (data[6], data[7]);
            let header = Header {
                id: Some(four(0)),
                medium: Some(((u2 & 0xC0) >> 4) | ((u1 & 0xC0) >> 6)),
                access_number: data[4],
                status: data[5],
                ..Header::default()
            };
            Ok(UserData {
                ci,
                header,
                body: Body::Fixed {
                    status: data[5],
                    units: [u1, u2],
                    values: [four(8), four(12)],
                },
            })
        }
        other => Err(DecodeError::UnsupportedCi(other)),
    }
}

impl<'a> UserData<'a> {
    /// The records, in telegram order; an `Err` ends the walk.
    pub fn records(&self) -> Records<'a> {
        Records {
            body: self.body,
            pos: 0,
            index: 0,
            failed: false,
        }
    }

    /// True when the telegram ends with DIF 0x1F: the meter has more records for the next
    /// REQ_UD2 (with the FCB toggled).
    pub fn more_records_follow(&self) -> bool {
        self.records()
            .filter_map(Result::ok)
            .any(|r| r.function == Function::MoreRecordsFollow)
    }
}

/// What a record's value is (DIF function field, or the special DIFs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    /// Instantaneous value.
    Instantaneous,
    /// Maximum value.
    Maximum,
    /// Minimum value.
    Minimum,
    /// Value during error state.
    Error,
    /// Manufacturer-specific data (DIF 0x0F): the rest of the telegram.
    ManufacturerSpecific,
    /// Manufacturer-specific data, more records follow in the next telegram (DIF 0x1F).
    MoreRecordsFollow,
    /// Fixed structure: actual value.
    Actual,
    /// Fixed structure: stored value.
    Stored,
}

impl Function {
    /// The name used in JSON output and channel selectors.
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Instantaneous => "instantaneous",
            Function::Maximum => "maximum",
            Function::Minimum => "minimum",
            Function::Error => "error",
            Function::ManufacturerSpecific => "manufacturer_specific",
            Function::MoreRecordsFollow => "more_records_follow",
            Function::Actual => "actual",
            Function::Stored => "stored",
        }
    }

    /// Parses [`Function::as_str`]'s names (and the short `max`/`min`).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "instantaneous" => Function::Instantaneous,
            "maximum" | "max" => Function::Maximum,
            "minimum" | "min" => Function::Minimum,
            "error" => Function::Error,
            "manufacturer_specific" => Function::ManufacturerSpecific,
            "more_records_follow" => Function::MoreRecordsFollow,
            "actual" => Function::Actual,
            "stored" => Function::Stored,
            _ => return None,
        })
    }
}

/// What a record measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity<'a> {
    /// A quantity of the VIF tables.
    Known(&'static str),
    /// A plain-text VIF: the meter names the unit itself (bytes in telegram order, i.e.
    /// reversed).
    Text(&'a [u8]),
    /// A VIF no table defines (the raw code, with 0x100 for 0xFD and 0x200 for 0xFB).
    Unknown(u16),
}

/// A calendar date or date and time as the meter sent it (fields not range-checked: meters
/// send `00` for "not set").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Year (full).
    pub year: u16,
    /// Month 0–15.
    pub month: u8,
    /// Day 0–31.
    pub day: u8,
    /// Hour, minute, second when the data type carries a time (F, I).
    pub time: Option<(u8, u8, u8)>,
}

impl std::fmt::Display for DateTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)?;
        if let Some((h, m, s)) = self.time {
            write!(f, "T{h:02}:{m:02}:{s:02}Z")?;
        }
        Ok(())
    }
}

/// A record's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RecordValue<'a> {
    /// No data (DIF data field 0 or 8).
    None,
    /// A number, scaled to the unit.
    Number(f64),
    /// A date (type G) or date and time (types F, I).
    Date(DateTime),
    /// Text (variable length, LVAR ≤ 0xBF); bytes in telegram order (reversed).
    Text(&'a [u8]),
    /// Raw bytes (manufacturer data, binary variable-length data), shown as hex.
    Bytes {
        /// The bytes in telegram order.
        bytes: &'a [u8],
        /// Show them last byte first (multi-byte values are sent least significant first).
        reversed: bool,
    },
}

impl RecordValue<'_> {
    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            RecordValue::Number(v) => Some(*v),
            _ => None,
        }
    }

    /// Text of a non-numeric value (ISO date, text, hex bytes); `None` for numbers and no
    /// data.
    pub fn text(&self) -> Option<String> {
        match *self {
            RecordValue::None | RecordValue::Number(_) => None,
            RecordValue::Date(d) => Some(d.to_string()),
            RecordValue::Text(b) => Some(reversed_text(b)),
            RecordValue::Bytes { bytes, reversed } => {
                let mut s = String::with_capacity(bytes.len() * 3);
                let mut put = |b: &u8| {
                    if !s.is_empty() {
                        s.push(' ');
                    }
                    let _ = write!(s, "{b:02X}");
                };
                if reversed {
                    bytes.iter().rev().for_each(&mut put);
                } else {
                    bytes.iter().for_each(&mut put);
                }
                Some(s)
            }
        }
    }
}

/// Text sent last character first, with control characters as spaces.
pub fn reversed_text(b: &[u8]) -> String {
    b.iter()
        .rev()
        .map(|&c| {
            if c < 0x20 || c == 0x7F {
                ' '
            } else {
                char::from(c)
            }
        })
        .collect()
}

/// One data record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Record<'a> {
    /// Position in the telegram (0-based, filler bytes not counted).
    pub index: u16,
    /// Storage number (0 = current value).
    pub storage: u64,
    /// Tariff (0 = total).
    pub tariff: u32,
    /// Sub-unit (device) number.
    pub subunit: u32,
    /// What kind of value.
    pub function: Function,
    /// What is measured.
    pub quantity: Quantity<'a>,
    /// The unit the value is in (libmbus's names: `Wh`, `m^3`, `°C`…; empty when none).
    pub unit: &'static str,
    /// The value.
    pub value: RecordValue<'a>,
    /// The DIF byte.
    pub dif: u8,
    /// The VIF byte (0 for fixed structure and manufacturer blocks).
    pub vif: u8,
}

impl Record<'_> {
    /// The quantity's name (`volume`, `flow temperature`; for a plain-text VIF `custom`).
    pub fn quantity_name(&self) -> &'static str {
        match self.quantity {
            Quantity::Known(q) => q,
            Quantity::Text(_) => "custom",
            Quantity::Unknown(_) => "unknown",
        }
    }

    /// The unit, with a plain-text VIF's own text.
    pub fn unit_text(&self) -> Option<String> {
        match self.quantity {
            Quantity::Text(t) => Some(reversed_text(t)),
            _ if self.unit.is_empty() => None,
            _ => Some(self.unit.to_string()),
        }
    }

    /// The stable derived name: quantity and unit (`energy_wh`, `volume_m3`,
    /// `flow_temperature_c`) with `_s{n}`, `_t{n}`, `_u{n}` for a storage number, tariff or
    /// sub-unit other than 0 and `_max`, `_min`, `_err` for a function other than
    /// instantaneous.
    pub fn name(&self) -> String {
        let mut s = String::with_capacity(32);
        slug_into(&mut s, self.quantity_name());
        if let Quantity::Unknown(code) = self.quantity {
            let _ = write!(s, "_{code:03x}");
        }
        let unit = self.unit_text();
        if let Some(u) = unit.as_deref().filter(|u| !u.is_empty()) {
            s.push('_');
            slug_into(&mut s, u);
        }
        if self.storage != 0 {
            let _ = write!(s, "_s{}", self.storage);
        }
        if self.tariff != 0 {
            let _ = write!(s, "_t{}", self.tariff);
        }
        if self.subunit != 0 {
            let _ = write!(s, "_u{}", self.subunit);
        }
        match self.function {
            Function::Maximum => s.push_str("_max"),
            Function::Minimum => s.push_str("_min"),
            Function::Error => s.push_str("_err"),
            Function::Stored => s.push_str("_stored"),
            _ => {}
        }
        s
    }
}

/// Appends `text` as a lower-case identifier: letters and digits kept, `°` and `^` dropped,
/// anything else one `_`.
fn slug_into(out: &mut String, text: &str) {
    let start = out.len();
    for c in text.chars() {
        match c {
            '°' | '^' | '%' | '.' | '(' | ')' => {}
            c if c.is_ascii_alphanumeric() => out.push(c.to_ascii_lowercase()),
            _ => {
                if out.len() > start && !out.ends_with('_') {
                    out.push('_');
                }
            }
        }
    }
    while out.len() > start && out.ends_with('_') {
        out.pop();
    }
}

/// Iterator over the records of a telegram.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    body: Body<'a>,
    pos: usize,
    index: u16,
    failed: bool,
}

const MAX_EXT: usize = 10;

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let res = match self.body {
            Body::Fixed {
                status,
                units,
                values,
            } => {
                if self.index >= 2 {
                    return None;
                }
                let i = self.index as usize;
                Some(Ok(fixed_record(self.index, status, units[i], &values[i])))
            }
            Body::Variable { data, msb } => self.next_variable(data, msb),
        };
        match &res {
            Some(Ok(_)) => self.index = self.index.saturating_add(1),
            Some(Err(_)) => self.failed = true,
            None => {}
        }
        res
    }
}

impl<'a> Records<'a> {
    fn next_variable(&mut self, d: &'a [u8], msb: bool) -> Option<Result<Record<'a>, DecodeError>> {
        let index = self.index;
        // Idle filler bytes between records.
        while d.get(self.pos) == Some(&0x2F) {
            self.pos += 1;
        }
        let dif = *d.get(self.pos)?;
        self.pos += 1;
        if dif == 0x0F || dif == 0x1F {
            let rest = &d[self.pos..];
            self.pos = d.len();
            return Some(Ok(Record {
                index,
                storage: 0,
                tariff: 0,
                subunit: 0,
                function: if dif == 0x1F {
                    Function::MoreRecordsFollow
                } else {
                    Function::ManufacturerSpecific
                },
                quantity: Quantity::Known("manufacturer specific"),
                unit: "",
                value: RecordValue::Bytes {
                    bytes: rest,
                    reversed: false,
                },
                dif,
                vif: 0,
            }));
        }
        Some(self.variable_record(d, msb, index, dif))
    }

    fn variable_record(
        &mut self,
        d: &'a [u8],
        msb: bool,
        index: u16,
        dif: u8,
    ) -> Result<Record<'a>, DecodeError> {
        let premature = |at| DecodeError::Premature { index, at };
        // DIFE chain: storage number, tariff, sub-unit.
        let mut storage = u64::from((dif >> 6) & 1);
        let (mut tariff, mut subunit) = (0u32, 0u32);
        let mut last = dif;
        let mut n = 0;
        while last & 0x80 != 0 {
            if n == MAX_EXT {
                return Err(DecodeError::TooManyDife(index));
            }
            let dife = *d.get(self.pos).ok_or(premature("DIF"))?;
            self.pos += 1;
            storage |= u64::from(dife & 0x0F) << (1 + 4 * n);
            tariff |= u32::from((dife >> 4) & 0x03) << (2 * n);
            subunit |= u32::from((dife >> 6) & 0x01) << n;
            last = dife;
            n += 1;
        }
        // VIF, plain-text VIF, VIFE chain.
        let vif = *d.get(self.pos).ok_or(premature("VIF"))?;
        self.pos += 1;
        let mut text: Option<&'a [u8]> = None;
        if vif & 0x7F == 0x7C {
            let len = *d.get(self.pos).ok_or(premature("plain-text VIF"))?;
            self.pos += 1;
            if len > 128 {
                return Err(DecodeError::TextVifTooLong { index, len });
            }
            let end = self.pos + len as usize;
            text = Some(d.get(self.pos..end).ok_or(premature("plain-text VIF"))?);
            self.pos = end;
        }
        let mut vifes = [0u8; MAX_EXT];
        let mut nvife = 0;
        let mut last = vif;
        while last & 0x80 != 0 {
            if nvife == MAX_EXT {
                return Err(DecodeError::TooManyVife(index));
            }
            let b = *d.get(self.pos).ok_or(premature("VIF"))?;
            self.pos += 1;
            vifes[nvife] = b;
            nvife += 1;
            last = b;
        }
        let vifes = &vifes[..nvife];
        // Data field.
        let coding = dif & 0x0F;
        let len = match coding {
            0x0 | 0x8 => 0,
            0x1 | 0x9 => 1,
            0x2 | 0xA => 2,
            0x3 | 0xB => 3,
            0x4 | 0x5 | 0xC => 4,
            0x6 | 0xE => 6,
            0x7 | 0xF => 8,
            _ => {
                let lvar = *d.get(self.pos).ok_or(premature("data"))?;
                self.pos += 1;
                match lvar {
                    0x00..=0xBF => lvar as usize,
                    0xC0..=0xC9 => (lvar - 0xC0) as usize * 2,
                    0xD0..=0xD9 => (lvar - 0xD0) as usize * 2,
                    0xE0..=0xEF => (lvar - 0xE0) as usize,
                    0xF0..=0xF4 => (lvar - 0xEC) as usize * 4,
                    0xF5 => 48,
                    0xF6 => 64,
                    _ => return Err(DecodeError::BadLvar { index, lvar }),
                }
            }
        };
        let end = self.pos + len;
        let raw = d.get(self.pos..end).ok_or(premature("data"))?;
        self.pos = end;
        let lvar_text = coding == 0xD && d[end - len - 1] <= 0xBF;

        let function = match dif & 0x30 {
            0x00 => Function::Instantaneous,
            0x10 => Function::Maximum,
            0x20 => Function::Minimum,
            _ => Function::Error,
        };
        let vife0 = vifes.first().map(|v| v & 0x7F);
        let info = vif_info(vif, vife0, text);
        let value = decode_value(coding, raw, msb, vif, vife0, lvar_text);
        let value = match value {
            RecordValue::Number(v) => RecordValue::Number(correct(v * info.scale, vif, vife0)),
            other => other,
        };
        Ok(Record {
            index,
            storage,
            tariff,
            subunit,
            function,
            quantity: info.quantity,
            unit: info.unit,
            value,
            dif,
            vif,
        })
    }
}

/// Applies the VIFE correction of a primary VIF (table "combinable VIFE": multiplicative
/// 10^(nnn-6), additive 10^(nn-3), ×1000).
fn correct(v: f64, vif: u8, vife0: Option<u8>) -> f64 {
    let Some(e) = vife0 else { return v };
    if vif & 0x80 == 0 || vif == 0xFD || vif == 0xFB {
        return v;
    }
    match e {
        0x70..=0x77 => v * pow10(i32::from(e & 0x07) - 6),
        0x78..=0x7B => v + pow10(i32::from(e & 0x03) - 3),
        0x7D => v * 1000.0,
        _ => v,
    }
}

fn pow10(e: i32) -> f64 {
    // Exact decimal constants (10f64.powi(-3) is not the nearest double to 1e-3).
    const P: [f64; 25] = [
        1e-12, 1e-11, 1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1e0, 1e1, 1e2,
        1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12,
    ];
    P.get((e + 12) as usize).copied().unwrap_or(f64::NAN)
}

struct VifInfo<'a> {
    quantity: Quantity<'a>,
    unit: &'static str,
    scale: f64,
}

fn known(quantity: &'static str, unit: &'static str, scale: f64) -> VifInfo<'static> {
    VifInfo {
        quantity: Quantity::Known(quantity),
        unit,
        scale,
    }
}

/// The quantity, unit and scale of a VIF (with the first VIFE for the extension tables).
fn vif_info<'a>(vif: u8, vife0: Option<u8>, text: Option<&'a [u8]>) -> VifInfo<'a> {
    if let Some(t) = text {
        return VifInfo {
            quantity: Quantity::Text(t),
            unit: "",
            scale: 1.0,
        };
    }
    let unknown = |code| VifInfo {
        quantity: Quantity::Unknown(code),
        unit: "",
        scale: 1.0,
    };
    match (vif, vife0) {
        (0xFD, Some(e)) => vif_fd(e).unwrap_or_else(|| unknown(0x100 | u16::from(e))),
        (0xFB, Some(e)) => vif_fb(e).unwrap_or_else(|| unknown(0x200 | u16::from(e))),
        (0xFD, None) | (0xFB, None) => unknown(u16::from(vif)),
        _ => vif_primary(vif & 0x7F).unwrap_or_else(|| unknown(u16::from(vif & 0x7F))),
    }
}

/// Time units of a 2-bit `nn` field: seconds, minutes, hours, days (in seconds).
const DURATION: [f64; 4] = [1.0, 60.0, 3600.0, 86400.0];
/// Average month and year in seconds.
const MONTH: f64 = 2_629_743.83;
const YEAR: f64 = 31_556_926.0;

/// Primary VIF table (EN 13757-3 table 10).
fn vif_primary(v: u8) -> Option<VifInfo<'static>> {
    let n = i32::from(v & 0x07);
    let nn = usize::from(v & 0x03);
    Some(match v {
        0x00..=0x07 => known("energy", "Wh", pow10(n - 3)),
        0x08..=0x0F => known("energy", "J", pow10(n)),
        0x10..=0x17 => known("volume", "m^3", pow10(n - 6)),
        0x18..=0x1F => known("mass", "kg", pow10(n - 3)),
        0x20..=0x23 => known("on time", "s", DURATION[nn]),
        0x24..=0x27 => known("operating time", "s", DURATION[nn]),
        0x28..=0x2F => known("power", "W", pow10(n - 3)),
        0x30..=0x37 => known("power", "J/h", pow10(n)),
        0x38..=0x3F => known("volume flow", "m^3/h", pow10(n - 6)),
        0x40..=0x47 => known("volume flow", "m^3/min", pow10(n - 7)),
        0x48..=0x4F => known("volume flow", "m^3/s", pow10(n - 9)),
        0x50..=0x57 => known("mass flow", "kg/h", pow10(n - 3)),
        0x58..=0x5B => known("flow temperature", "°C", pow10(nn as i32 - 3)),
        0x5C..=0x5F => known("return temperature", "°C", pow10(nn as i32 - 3)),
        0x60..=0x63 => known("temperature difference", "K", pow10(nn as i32 - 3)),
        0x64..=0x67 => known("external temperature", "°C", pow10(nn as i32 - 3)),
        0x68..=0x6B => known("pressure", "bar", pow10(nn as i32 - 3)),
        0x6C => known("date", "", 1.0),
        0x6D => known("date and time", "", 1.0),
        0x6E => known("hca units", "", 1.0),
        // Reserved: libmbus reports 0 for it, so do we.
        0x6F => known("reserved", "", 0.0),
        0x70..=0x73 => known("averaging duration", "s", DURATION[nn]),
        0x74..=0x77 => known("actuality duration", "s", DURATION[nn]),
        0x78 => known("fabrication number", "", 1.0),
        0x79 => known("enhanced identification", "", 1.0),
        0x7A => known("bus address", "", 1.0),
        0x7E => known("any", "", 1.0),
        0x7F => known("manufacturer specific", "", 1.0),
        _ => return None,
    })
}

/// Extension table after VIF 0xFD (EN 13757-3 table 14).
fn vif_fd(e: u8) -> Option<VifInfo<'static>> {
    let e = e & 0x7F;
    let n = i32::from(e & 0x0F);
    let nn = usize::from(e & 0x03);
    let plain = |q| known(q, "", 1.0);
    Some(match e {
        0x00..=0x03 => known("credit", "Currency units", pow10(nn as i32 - 3)),
        0x04..=0x07 => known("debit", "Currency units", pow10(nn as i32 - 3)),
        0x08 => plain("access number"),
        0x09 => plain("medium"),
        0x0A => plain("manufacturer"),
        0x0B => plain("parameter set identification"),
        0x0C => plain("model version"),
        0x0D => plain("hardware version"),
        0x0E => plain("firmware version"),
        0x0F => plain("software version"),
        0x10 => plain("customer location"),
        0x11 => plain("customer"),
        0x12 => plain("access code user"),
        0x13 => plain("access code operator"),
        0x14 => plain("access code system operator"),
        0x15 => plain("access code developer"),
        0x16 => plain("password"),
        0x17 => plain("error flags"),
        0x18 => plain("error mask"),
        0x1A => plain("digital output"),
        0x1B => plain("digital input"),
        0x1C => known("baud rate", "Baud", 1.0),
        0x1D => known("response delay time", "Bittimes", 1.0),
        0x1E => plain("retry"),
        0x20 => plain("first storage number"),
        0x21 => plain("last storage number"),
        0x22 => plain("storage block size"),
        0x24..=0x27 => known("storage interval", "s", DURATION[nn]),
        0x28 => known("storage interval", "s", MONTH),
        0x29 => known("storage interval", "s", YEAR),
        0x2C..=0x2F => known("duration since last readout", "s", DURATION[nn]),
        0x31..=0x33 => known("duration of tariff", "s", DURATION[nn]),
        0x34..=0x37 => known("period of tariff", "s", DURATION[nn]),
        0x38 => known("period of tariff", "s", MONTH),
        0x39 => known("period of tariff", "s", YEAR),
        0x3A => plain("dimensionless"),
        0x40..=0x4F => known("voltage", "V", pow10(n - 9)),
        0x50..=0x5F => known("current", "A", pow10(n - 12)),
        0x60 => plain("reset counter"),
        0x61 => plain("cumulation counter"),
        0x62 => plain("control signal"),
        0x63 => plain("day of week"),
        0x64 => plain("week number"),
        0x65 => plain("time point of day change"),
        0x66 => plain("state of parameter activation"),
        0x67 => plain("special supplier information"),
        0x68 => known("duration since last cumulation", "s", 3600.0),
        0x69 => known("duration since last cumulation", "s", 86400.0),
        0x6A => known("duration since last cumulation", "s", MONTH),
        0x6B => known("duration since last cumulation", "s", YEAR),
        0x6C => known("operating time battery", "s", 3600.0),
        0x6D => known("operating time battery", "s", 86400.0),
        0x6E => known("operating time battery", "s", MONTH),
        0x6F => known("operating time battery", "s", YEAR),
        0x70 => plain("date and time of battery change"),
        _ => plain("reserved"),
    })
}

/// Extension table after VIF 0xFB (EN 13757-3 table 12).
fn vif_fb(e: u8) -> Option<VifInfo<'static>> {
    let e = e & 0x7F;
    let n = i32::from(e & 0x01);
    let nn = i32::from(e & 0x03);
    Some(match e {
        0x00 | 0x01 => known("energy", "Wh", pow10(n + 5)),
        0x08 | 0x09 => known("energy", "J", pow10(n + 8)),
        0x10 | 0x11 => known("volume", "m^3", pow10(n + 2)),
        0x18 | 0x19 => known("mass", "kg", pow10(n + 5)),
        0x21 => known("volume", "feet^3", 0.1),
        0x22 | 0x23 => known("volume", "American gallon", pow10(n - 1)),
        0x24 => known("volume flow", "American gallon/min", 1e-3),
        0x25 => known("volume flow", "American gallon/min", 1.0),
        0x26 => known("volume flow", "American gallon/h", 1.0),
        0x28 | 0x29 => known("power", "W", pow10(n + 5)),
        0x30 | 0x31 => known("power", "J/h", pow10(n + 8)),
        0x58..=0x5B => known("flow temperature", "°F", pow10(nn - 3)),
        0x5C..=0x5F => known("return temperature", "°F", pow10(nn - 3)),
        0x60..=0x63 => known("temperature difference", "°F", pow10(nn - 3)),
        0x64..=0x67 => known("external temperature", "°F", pow10(nn - 3)),
        0x70..=0x73 => known("temperature limit", "°F", pow10(nn - 3)),
        0x74..=0x77 => known("temperature limit", "°C", pow10(nn - 3)),
        0x78..=0x7F => known("cumulative max power", "W", pow10(i32::from(e & 0x07) - 3)),
        _ => known("reserved", "", 1.0),
    })
}

/// Decodes the data field; numbers are returned unscaled.
fn decode_value<'a>(
    coding: u8,
    raw: &'a [u8],
    msb: bool,
    vif: u8,
    vife0: Option<u8>,
    lvar_text: bool,
) -> RecordValue<'a> {
    // Least significant byte first, whatever the telegram's order.
    let mut buf = [0u8; 8];
    let le: &[u8] = if msb && raw.len() <= 8 {
        for (i, b) in raw.iter().rev().enumerate() {
            buf[i] = *b;
        }
        &buf[..raw.len()]
    } else {
        raw
    };
    let is_datetime = vif & 0x7F == 0x6D || (vif == 0xFD && matches!(vife0, Some(0x30 | 0x70)));
    match coding {
        0x0 | 0x8 => RecordValue::None,
        0x2 if vif & 0x7F == 0x6C => RecordValue::Date(date_g(le)),
        0x4 if is_datetime => RecordValue::Date(date_f(le)),
        0x6 if is_datetime => RecordValue::Date(date_i(le)),
        0x1 | 0x2 | 0x3 | 0x4 | 0x6 | 0x7 => RecordValue::Number(int_le(le) as f64),
        0x5 => RecordValue::Number(f64::from(f32::from_le_bytes([le[0], le[1], le[2], le[3]]))),
        0x9 | 0xA | 0xB | 0xC | 0xE => RecordValue::Number(bcd_le(le) as f64),
        0xD if lvar_text => RecordValue::Text(raw),
        _ => RecordValue::Bytes {
            bytes: raw,
            reversed: !msb,
        },
    }
}

/// A signed (two's complement) little-endian integer of 1–8 bytes.
pub fn int_le(b: &[u8]) -> i64 {
    let mut v: u64 = 0;
    for (i, &x) in b.iter().enumerate().take(8) {
        v |= u64::from(x) << (8 * i);
    }
    let bits = 8 * b.len().min(8);
    if bits == 0 {
        return 0;
    }
    // Sign-extend from the top bit of the last byte.
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// A little-endian BCD number as meters send it: a high nibble of `F` in the most significant
/// byte marks a negative number, other non-decimal high nibbles count as 0 and non-decimal low
/// nibbles (such as the `D` of the error state `DD`) keep their value, as libmbus reads them.
pub fn bcd_le(b: &[u8]) -> i64 {
    let mut v: i64 = 0;
    for &x in b.iter().rev() {
        let hi = i64::from(x >> 4);
        v = v
            .wrapping_mul(10)
            .wrapping_add(if hi < 10 { hi } else { 0 });
        v = v.wrapping_mul(10).wrapping_add(i64::from(x & 0x0F));
    }
    if b.last().is_some_and(|x| x >> 4 == 0xF) {
        v = v.wrapping_neg();
    }
    v
}

/// Type G: date (2 bytes).
fn date_g(b: &[u8]) -> DateTime {
    DateTime {
        year: 2000 + u16::from(((b[0] & 0xE0) >> 5) | ((b[1] & 0xF0) >> 1)),
        month: b[1] & 0x0F,
        day: b[0] & 0x1F,
        time: None,
    }
}

/// Type F: date and time to the minute (4 bytes); the invalid bit gives the zero date.
fn date_f(b: &[u8]) -> DateTime {
    if b[0] & 0x80 != 0 {
        return DateTime {
            year: 1900,
            month: 1,
            day: 0,
            time: Some((0, 0, 0)),
        };
    }
    let year = u16::from(((b[2] & 0xE0) >> 5) | ((b[3] & 0xF0) >> 1));
    let mut century = u16::from((b[1] & 0x60) >> 5);
    if century == 0 && year <= 80 {
        // Old meters count a two-digit year from 2000.
        century = 1;
    }
    DateTime {
        year: 1900 + 100 * century + year,
        month: b[3] & 0x0F,
        day: b[2] & 0x1F,
        time: Some((b[1] & 0x1F, b[0] & 0x3F, 0)),
    }
}

/// Type I: date and time to the second (6 bytes).
fn date_i(b: &[u8]) -> DateTime {
    if b[1] & 0x80 != 0 {
        return DateTime {
            year: 1900,
            month: 1,
            day: 0,
            time: Some((0, 0, 0)),
        };
    }
    DateTime {
        year: 2000 + u16::from(((b[3] & 0xE0) >> 5) | ((b[4] & 0xF0) >> 1)),
        month: b[4] & 0x0F,
        day: b[3] & 0x1F,
        time: Some((b[2] & 0x1F, b[1] & 0x3F, b[0] & 0x3F)),
    }
}

/// One counter of a fixed-structure telegram (CI 0x73).
fn fixed_record(index: u16, status: u8, unit: u8, raw: &[u8; 4]) -> Record<'static> {
    let n = if status & 0x80 == 0 {
        bcd_le(raw)
    } else {
        int_le(raw)
    };
    let code = unit & 0x3F;
    let (quantity, unit_name, scale) = match code {
        0x00 => ("time", "", 1.0),
        0x01 => ("date", "", 1.0),
        0x02..=0x0A => ("energy", "Wh", pow10(i32::from(code) - 2)),
        0x0B..=0x13 => ("energy", "J", pow10(i32::from(code) - 0x0B + 3)),
        0x14..=0x1C => ("power", "W", pow10(i32::from(code) - 0x14)),
        0x1D..=0x25 => ("power", "J/h", pow10(i32::from(code) - 0x1D + 3)),
        0x26..=0x2E => ("volume", "m^3", pow10(i32::from(code) - 0x26 - 6)),
        0x2F..=0x37 => ("volume flow", "m^3/h", pow10(i32::from(code) - 0x2F - 6)),
        0x38 => ("temperature", "°C", 1e-3),
        0x39 => ("hca units", "", 1.0),
        0x3E => ("historic", "", 1.0),
        0x3F => ("no unit", "", 1.0),
        _ => ("reserved", "", 1.0),
    };
    Record {
        index,
        storage: u64::from(status & 0x40 != 0),
        tariff: 0,
        subunit: 0,
        function: if status & 0x40 != 0 {
            Function::Stored
        } else {
            Function::Actual
        },
        quantity: Quantity::Known(quantity),
        unit: unit_name,
        value: RecordValue::Number(n as f64 * scale),
        dif: 0,
        vif: unit,
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
