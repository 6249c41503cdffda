//! S7 data types ([`DataType`]) and their byte layout: decoding the bytes a read returns into a
//! reading [`Value`], and encoding a written value into the bytes a write sends.
//!
//! Everything in an S7 CPU is big-endian. BOOL is one bit of a byte; BYTE/WORD/DWORD/LWORD and
//! USINT/UINT/UDINT/ULINT are unsigned, SINT/INT/DINT/LINT signed, REAL/LREAL IEEE floats;
//! S7 STRING is a max-length byte, a current-length byte and the characters; DATE counts days
//! from 1990-01-01, TIME signed milliseconds, TIME_OF_DAY milliseconds since midnight;
//! DATE_AND_TIME is 8 BCD bytes, DTL 12 binary bytes; counters are 3 BCD digits and S5TIME
//! is a time base and 3 BCD digits. Dates and times of day are published as ISO 8601 text in
//! the PLC's own (zone-less) time.

use std::fmt;
use std::sync::Arc;

use osgate_core::reading::Value;

/// The type of a channel's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// BOOL: one bit.
    Bool,
    /// BYTE (8 bits, unsigned).
    Byte,
    /// USINT (8 bits, unsigned).
    Usint,
    /// SINT (8 bits, signed).
    Sint,
    /// CHAR: one character.
    Char,
    /// WORD (16 bits, unsigned).
    Word,
    /// UINT (16 bits, unsigned).
    Uint,
    /// INT (16 bits, signed).
    Int,
    /// DWORD (32 bits, unsigned).
    Dword,
    /// UDINT (32 bits, unsigned).
    Udint,
    /// DINT (32 bits, signed).
    Dint,
    /// REAL (32-bit float).
    Real,
    /// LWORD (64 bits, unsigned).
    Lword,
    /// ULINT (64 bits, unsigned).
    Ulint,
    /// LINT (64 bits, signed).
    Lint,
    /// LREAL (64-bit float).
    Lreal,
    /// S7 STRING: max length, current length, characters (`length` gives the max).
    String,
    /// DATE: days since 1990-01-01, published as `YYYY-MM-DD`.
    Date,
    /// TIME: signed milliseconds.
    Time,
    /// TIME_OF_DAY: milliseconds since midnight, published as `HH:MM:SS.mmm`.
    TimeOfDay,
    /// DATE_AND_TIME (DT): 8 BCD bytes, published as `YYYY-MM-DDTHH:MM:SS.mmm`.
    DateAndTime,
    /// DTL: 12 bytes with nanoseconds, published as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnn`.
    Dtl,
    /// S5TIME: time base and 3 BCD digits, published in milliseconds.
    S5time,
    /// A counter value: 3 BCD digits (0–999).
    Counter,
}

/// Every type with its config names (the first is the canonical one).
const NAMES: &[(DataType, &[&str])] = &[
    (DataType::Bool, &["bool"]),
    (DataType::Byte, &["byte"]),
    (DataType::Usint, &["usint"]),
    (DataType::Sint, &["sint"]),
    (DataType::Char, &["char"]),
    (DataType::Word, &["word"]),
    (DataType::Uint, &["uint"]),
    (DataType::Int, &["int"]),
    (DataType::Dword, &["dword"]),
    (DataType::Udint, &["udint"]),
    (DataType::Dint, &["dint"]),
    (DataType::Real, &["real"]),
    (DataType::Lword, &["lword"]),
    (DataType::Ulint, &["ulint"]),
    (DataType::Lint, &["lint"]),
    (DataType::Lreal, &["lreal"]),
    (DataType::String, &["string"]),
    (DataType::Date, &["date"]),
    (DataType::Time, &["time"]),
    (DataType::TimeOfDay, &["time_of_day", "tod"]),
    (DataType::DateAndTime, &["date_and_time", "dt"]),
    (DataType::Dtl, &["dtl"]),
    (DataType::S5time, &["s5time"]),
    (DataType::Counter, &["counter"]),
];

/// The longest S7 STRING (characters).
pub const MAX_STRING: u16 = 254;

impl DataType {
    /// The canonical config name.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(t, _)| *t == self)
            .map_or("?", |(_, n)| n[0])
    }

    /// Bytes the value takes in the PLC (`length` is a STRING's max length).
    pub fn size(self, length: u16) -> u32 {
        match self {
            DataType::Bool | DataType::Byte | DataType::Usint | DataType::Sint | DataType::Char => {
                1
            }
            DataType::Word
            | DataType::Uint
            | DataType::Int
            | DataType::Date
            | DataType::S5time
            | DataType::Counter => 2,
            DataType::Dword
            | DataType::Udint
            | DataType::Dint
            | DataType::Real
            | DataType::Time
            | DataType::TimeOfDay => 4,
            DataType::Lword
            | DataType::Ulint
            | DataType::Lint
            | DataType::Lreal
            | DataType::DateAndTime => 8,
            DataType::Dtl => 12,
            DataType::String => u32::from(length) + 2,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DataType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        NAMES
            .iter()
            .find(|(_, names)| names.iter().any(|n| n.eq_ignore_ascii_case(s)))
            .map(|(t, _)| *t)
            .ok_or_else(|| {
                let all: Vec<&str> = NAMES.iter().map(|(_, n)| n[0]).collect();
                format!("unknown type \"{s}\", expected one of {}", all.join(", "))
            })
    }
}

impl<'de> serde::Deserialize<'de> for DataType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why bytes could not be decoded or a value encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The PLC returned fewer bytes than the type needs.
    #[error("short answer: {got} of {want} bytes")]
    Short {
        /// Bytes received.
        got: usize,
        /// Bytes needed.
        want: usize,
    },
    /// The bytes are not a valid value of the type (bad BCD, a date out of range…).
    #[error("invalid {ty} value: {why}")]
    Invalid {
        /// The type.
        ty: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A written value does not fit the type.
    #[error("{0}")]
    Unfit(String),
}

fn invalid(ty: DataType, why: impl Into<String>) -> CodecError {
    CodecError::Invalid {
        ty: ty.name(),
        why: why.into(),
    }
}

/// Decodes `bytes` (at least the type's size; `bit` for BOOL) into a value.
pub fn decode(ty: DataType, bytes: &[u8], bit: u8) -> Result<Value, CodecError> {
    let want = ty.size(0).max(if ty == DataType::String { 2 } else { 0 }) as usize;
    if bytes.len() < want {
        return Err(CodecError::Short {
            got: bytes.len(),
            want,
        });
    }
    let be = |n: usize| {
        bytes[..n]
            .iter()
            .fold(0u64, |a, b| (a << 8) | u64::from(*b))
    };
    Ok(match ty {
        DataType::Bool => Value::Bool(bytes[0] & (1 << bit) != 0),
        DataType::Byte | DataType::Usint => Value::U64(be(1)),
        DataType::Sint => Value::I64(i64::from(bytes[0] as i8)),
        DataType::Char => Value::Text(Arc::from(latin1(&bytes[..1]))),
        DataType::Word | DataType::Uint => Value::U64(be(2)),
        DataType::Int => Value::I64(i64::from(be(2) as u16 as i16)),
        DataType::Dword | DataType::Udint => Value::U64(be(4)),
        DataType::Dint => Value::I64(i64::from(be(4) as u32 as i32)),
        DataType::Real => Value::F64(f64::from(f32::from_bits(be(4) as u32))),
        DataType::Lword | DataType::Ulint => Value::U64(be(8)),
        DataType::Lint => Value::I64(be(8) as i64),
        DataType::Lreal => Value::F64(f64::from_bits(be(8))),
        DataType::String => {
            let (max, cur) = (bytes[0] as usize, bytes[1] as usize);
            let n = cur.min(max).min(bytes.len() - 2);
            Value::Text(Arc::from(latin1(&bytes[2..2 + n])))
        }
        DataType::Date => {
            let (y, m, d) = civil_from_days(DATE_EPOCH + be(2) as i64);
            Value::Text(format!("{y:04}-{m:02}-{d:02}").into())
        }
        DataType::Time => Value::I64(i64::from(be(4) as u32 as i32)),
        DataType::TimeOfDay => {
            let ms = be(4);
            if ms >= 86_400_000 {
                return Err(invalid(ty, format!("{ms} ms is past midnight")));
            }
            Value::Text(time_text(ms / 1000, (ms % 1000) as u32 * 1_000_000, 3).into())
        }
        DataType::DateAndTime => decode_dt(bytes)?,
        DataType::Dtl => decode_dtl(bytes)?,
        DataType::S5time => Value::U64(decode_s5time(be(2) as u16)?),
        DataType::Counter => Value::U64(u64::from(bcd(ty, be(2) as u32 & 0x0FFF, 3)?)),
    })
}

/// Encodes a (raw, already checked) value of `ty` into its bytes. STRING writes the max-length
/// byte `length`, the current length and the characters, not the unused rest.
pub fn encode(ty: DataType, v: &Value, length: u16) -> Result<Vec<u8>, CodecError> {
    let int = || -> Result<i128, CodecError> {
        match v {
            Value::Bool(b) => Ok(i128::from(*b)),
            Value::I64(i) => Ok(i128::from(*i)),
            Value::U64(u) => Ok(i128::from(*u)),
            Value::F64(f) if f.is_finite() => Ok(f.round() as i128),
            _ => Err(CodecError::Unfit(format!("type {ty} takes a number"))),
        }
    };
    let text = || -> Result<&str, CodecError> {
        match v {
            Value::Text(t) => Ok(t),
            _ => Err(CodecError::Unfit(format!("type {ty} takes text"))),
        }
    };
    let ranged = |min: i128, max: i128, n: usize| -> Result<Vec<u8>, CodecError> {
        let i = int()?;
        if !(min..=max).contains(&i) {
            return Err(CodecError::Unfit(format!(
                "{i} is out of range for {ty} ({min}..={max})"
            )));
        }
        Ok((i as u64).to_be_bytes()[8 - n..].to_vec())
    };
    Ok(match ty {
        DataType::Bool => vec![u8::from(int()? != 0)],
        DataType::Byte | DataType::Usint => ranged(0, 255, 1)?,
        DataType::Sint => ranged(-128, 127, 1)?,
        DataType::Word | DataType::Uint => ranged(0, 65535, 2)?,
        DataType::Int => ranged(-32768, 32767, 2)?,
        DataType::Dword | DataType::Udint => ranged(0, u32::MAX.into(), 4)?,
        DataType::Dint | DataType::Time => ranged(i32::MIN.into(), i32::MAX.into(), 4)?,
        DataType::Lword | DataType::Ulint => ranged(0, u64::MAX.into(), 8)?,
        DataType::Lint => ranged(i64::MIN.into(), i64::MAX.into(), 8)?,
        DataType::Real | DataType::Lreal => {
            let f = v
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| CodecError::Unfit(format!("type {ty} takes a finite number")))?;
            if ty == DataType::Real {
                (f as f32).to_be_bytes().to_vec()
            } else {
                f.to_be_bytes().to_vec()
            }
        }
        DataType::Char => {
            let b = to_latin1(ty, text()?)?;
            if b.len() != 1 {
                return Err(CodecError::Unfit("type char takes one character".into()));
            }
            b
        }
        DataType::String => {
            let b = to_latin1(ty, text()?)?;
            if b.len() > usize::from(length) {
                return Err(CodecError::Unfit(format!(
                    "{} characters do not fit the string's length {length}",
                    b.len()
                )));
            }
            let mut out = vec![length as u8, b.len() as u8];
            out.extend_from_slice(&b);
            out
        }
        DataType::Date => {
            let d: jiff::civil::Date = text()?
                .parse()
                .map_err(|e| CodecError::Unfit(format!("type date takes YYYY-MM-DD: {e}")))?;
            let days =
                days_from_civil(d.year().into(), d.month() as u32, d.day() as u32) - DATE_EPOCH;
            if !(0..=65535).contains(&days) {
                return Err(CodecError::Unfit(format!(
                    "{d} is outside the S7 DATE range 1990-01-01..=2169-06-06"
                )));
            }
            (days as u16).to_be_bytes().to_vec()
        }
        DataType::TimeOfDay => {
            let t: jiff::civil::Time = text()?.parse().map_err(|e| {
                CodecError::Unfit(format!("type time_of_day takes HH:MM:SS[.mmm]: {e}"))
            })?;
            let ms = (t.hour() as u32 * 3600 + t.minute() as u32 * 60 + t.second() as u32) * 1000
                + t.subsec_nanosecond() as u32 / 1_000_000;
            ms.to_be_bytes().to_vec()
        }
        DataType::DateAndTime => encode_dt(text()?)?,
        DataType::Dtl => encode_dtl(text()?)?,
        DataType::S5time => encode_s5time(int()?)?.to_be_bytes().to_vec(),
        DataType::Counter => {
            let n = int()?;
            if !(0..=999).contains(&n) {
                return Err(CodecError::Unfit(format!(
                    "{n} is out of range for a counter (0..=999)"
                )));
            }
            let n = n as u16;
            ((n / 100) << 8 | (n / 10 % 10) << 4 | (n % 10))
                .to_be_bytes()
                .to_vec()
        }
    })
}

/// Text as the PLC stores it: one byte per character (ISO 8859-1).
fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

fn to_latin1(ty: DataType, s: &str) -> Result<Vec<u8>, CodecError> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| {
            CodecError::Unfit(format!(
                "type {ty} holds only ISO 8859-1 characters (one byte each)"
            ))
        })
}

/// Days from 1970-01-01 to 1990-01-01.
const DATE_EPOCH: i64 = 7305;

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `HH:MM:SS.fff…` with `digits` fraction digits.
fn time_text(secs: u64, nanos: u32, digits: usize) -> String {
    let frac = format!("{nanos:09}");
    format!(
        "{:02}:{:02}:{:02}.{}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        &frac[..digits]
    )
}

/// Decodes `digits` BCD digits of `v`.
fn bcd(ty: DataType, v: u32, digits: u32) -> Result<u32, CodecError> {
    let mut out = 0;
    for i in (0..digits).rev() {
        let d = (v >> (4 * i)) & 0xF;
        if d > 9 {
            return Err(invalid(ty, format!("0x{v:X} is not BCD")));
        }
        out = out * 10 + d;
    }
    Ok(out)
}

fn to_bcd(n: u32) -> u8 {
    ((n / 10 % 10) << 4 | (n % 10)) as u8
}

fn decode_dt(b: &[u8]) -> Result<Value, CodecError> {
    let ty = DataType::DateAndTime;
    let f = |i: usize| bcd(ty, u32::from(b[i]), 2);
    let yy = f(0)?;
    let year = if yy >= 90 { 1900 + yy } else { 2000 + yy };
    let (mo, d, h, mi, s) = (f(1)?, f(2)?, f(3)?, f(4)?, f(5)?);
    let ms = bcd(ty, u32::from(b[6]) << 4 | u32::from(b[7] >> 4), 3)?;
    check_civil(ty, year as i64, mo, d, h, mi, s)?;
    Ok(Value::Text(
        format!(
            "{year:04}-{mo:02}-{d:02}T{}",
            time_text(u64::from(h * 3600 + mi * 60 + s), ms * 1_000_000, 3)
        )
        .into(),
    ))
}

fn decode_dtl(b: &[u8]) -> Result<Value, CodecError> {
    let ty = DataType::Dtl;
    let year = u32::from(u16::from_be_bytes([b[0], b[1]]));
    let (mo, d) = (u32::from(b[2]), u32::from(b[3]));
    let (h, mi, s) = (u32::from(b[5]), u32::from(b[6]), u32::from(b[7]));
    let ns = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
    check_civil(ty, year.into(), mo, d, h, mi, s)?;
    if ns > 999_999_999 {
        return Err(invalid(ty, format!("{ns} nanoseconds")));
    }
    Ok(Value::Text(
        format!(
            "{year:04}-{mo:02}-{d:02}T{}",
            time_text(u64::from(h * 3600 + mi * 60 + s), ns, 9)
        )
        .into(),
    ))
}

fn check_civil(
    ty: DataType,
    y: i64,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
    s: u32,
) -> Result<(), CodecError> {
    let (yy, mm, dd) = civil_from_days(days_from_civil(y, mo, d));
    if (yy, mm, dd) != (y, mo, d)
        || !(1..=12).contains(&mo)
        || d == 0
        || h > 23
        || mi > 59
        || s > 59
    {
        return Err(invalid(
            ty,
            format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} is not a date and time"),
        ));
    }
    Ok(())
}

/// A date and time from text, with its weekday (1 = Sunday, as S7 counts).
fn parse_datetime(ty: DataType, s: &str) -> Result<(jiff::civil::DateTime, u8), CodecError> {
    let dt: jiff::civil::DateTime = s.parse().map_err(|e| {
        CodecError::Unfit(format!(
            "type {ty} takes YYYY-MM-DDTHH:MM:SS[.fraction]: {e}"
        ))
    })?;
    let wd = dt.date().weekday().to_sunday_one_offset() as u8;
    Ok((dt, wd))
}

fn encode_dt(s: &str) -> Result<Vec<u8>, CodecError> {
    let (dt, wd) = parse_datetime(DataType::DateAndTime, s)?;
    let y = i32::from(dt.year());
    if !(1990..=2089).contains(&y) {
        return Err(CodecError::Unfit(format!(
            "year {y} is outside the DATE_AND_TIME range 1990..=2089"
        )));
    }
    let ms = dt.subsec_nanosecond() as u32 / 1_000_000;
    Ok(vec![
        to_bcd((y % 100) as u32),
        to_bcd(dt.month() as u32),
        to_bcd(dt.day() as u32),
        to_bcd(dt.hour() as u32),
        to_bcd(dt.minute() as u32),
        to_bcd(dt.second() as u32),
        to_bcd(ms / 10),
        ((ms % 10) << 4) as u8 | wd,
    ])
}

fn encode_dtl(s: &str) -> Result<Vec<u8>, CodecError> {
    let (dt, wd) = parse_datetime(DataType::Dtl, s)?;
    let y = i32::from(dt.year());
    if !(1970..=2554).contains(&y) {
        return Err(CodecError::Unfit(format!(
            "year {y} is outside the DTL range 1970..=2554"
        )));
    }
    let mut out = (y as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&[
        dt.month() as u8,
        dt.day() as u8,
        wd,
        dt.hour() as u8,
        dt.minute() as u8,
        dt.second() as u8,
    ]);
    out.extend_from_slice(&(dt.subsec_nanosecond() as u32).to_be_bytes());
    Ok(out)
}

/// S5TIME time bases in milliseconds (bits 12–13).
const S5_BASES: [u64; 4] = [10, 100, 1000, 10_000];

fn decode_s5time(w: u16) -> Result<u64, CodecError> {
    let base = S5_BASES[usize::from((w >> 12) & 0x3)];
    Ok(u64::from(bcd(DataType::S5time, u32::from(w & 0x0FFF), 3)?) * base)
}

/// The finest time base that holds `ms` (rounded to it); at most 9990 s.
fn encode_s5time(ms: i128) -> Result<u16, CodecError> {
    if !(0..=9_990_000).contains(&ms) {
        return Err(CodecError::Unfit(format!(
            "{ms} ms is out of range for s5time (0..=9990000 ms)"
        )));
    }
    let ms = ms as u64;
    for (i, base) in S5_BASES.iter().enumerate() {
        let n = (ms + base / 2) / base;
        if n <= 999 {
            let n = n as u16;
            return Ok((i as u16) << 12 | (n / 100) << 8 | (n / 10 % 10) << 4 | (n % 10));
        }
    }
    Ok(0x3999)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn every_type_round_trips() {
        let cases: Vec<(DataType, Value, Vec<u8>)> = vec![
            (DataType::Byte, Value::U64(0xAB), vec![0xAB]),
            (DataType::Sint, Value::I64(-2), vec![0xFE]),
            (DataType::Char, text("Z"), vec![b'Z']),
            (DataType::Word, Value::U64(0xBEEF), vec![0xBE, 0xEF]),
            (
                DataType::Int,
                Value::I64(-12345),
                (-12345i16).to_be_bytes().to_vec(),
            ),
            (
                DataType::Dword,
                Value::U64(0xDEADBEEF),
                vec![0xDE, 0xAD, 0xBE, 0xEF],
            ),
            (
                DataType::Dint,
                Value::I64(-123456789),
                (-123456789i32).to_be_bytes().to_vec(),
            ),
            (
                DataType::Real,
                Value::F64(-1.25),
                (-1.25f32).to_be_bytes().to_vec(),
            ),
            (
                DataType::Lreal,
                Value::F64(6.02214076e23),
                6.02214076e23f64.to_be_bytes().to_vec(),
            ),
            (
                DataType::Lint,
                Value::I64(i64::MIN),
                i64::MIN.to_be_bytes().to_vec(),
            ),
            (DataType::Ulint, Value::U64(u64::MAX), vec![0xFF; 8]),
            (DataType::Date, text("2026-12-07"), vec![]),
            (
                DataType::Time,
                Value::I64(-1500),
                (-1500i32).to_be_bytes().to_vec(),
            ),
            (
                DataType::TimeOfDay,
                text("13:14:15.250"),
                47_655_250u32.to_be_bytes().to_vec(),
            ),
            (
                DataType::DateAndTime,
                text("2026-12-07T13:14:15.678"),
                vec![0x26, 0x12, 0x07, 0x13, 0x14, 0x15, 0x67, 0x82],
            ),
            (
                DataType::Dtl,
                text("2026-12-07T13:14:15.123456789"),
                vec![0x07, 0xEA, 12, 7, 2, 13, 14, 15, 0x07, 0x5B, 0xCD, 0x15],
            ),
            (DataType::S5time, Value::U64(2500), vec![0x02, 0x50]),
            (DataType::S5time, Value::U64(25_000), vec![0x12, 0x50]),
            (DataType::Counter, Value::U64(987), vec![0x09, 0x87]),
        ];
        for (ty, v, bytes) in cases {
            let enc = encode(ty, &v, 0).unwrap_or_else(|e| panic!("{ty}: {e}"));
            if ty != DataType::Date {
                assert_eq!(enc, bytes, "{ty} encode");
            }
            assert_eq!(decode(ty, &enc, 0).unwrap(), v, "{ty} decode");
        }
    }

    #[test]
    fn date_counts_days_from_1990() {
        assert_eq!(
            decode(DataType::Date, &[0, 0], 0).unwrap(),
            text("1990-01-01")
        );
        assert_eq!(
            decode(DataType::Date, &[0, 59], 0).unwrap(),
            text("1990-03-01")
        );
        assert_eq!(
            encode(DataType::Date, &text("1990-01-02"), 0).unwrap(),
            vec![0, 1]
        );
        assert!(encode(DataType::Date, &text("1989-12-31"), 0).is_err());
    }

    #[test]
    fn bits_strings_and_errors() {
        for bit in 0..8 {
            assert_eq!(
                decode(DataType::Bool, &[1 << bit], bit).unwrap(),
                Value::Bool(true)
            );
            assert_eq!(
                decode(DataType::Bool, &[!(1 << bit)], bit).unwrap(),
                Value::Bool(false)
            );
        }
        let s = encode(DataType::String, &text("osgate"), 10).unwrap();
        assert_eq!(s, b"\x0a\x06osgate");
        let mut padded = s.clone();
        padded.extend_from_slice(&[b'x'; 4]);
        assert_eq!(
            decode(DataType::String, &padded, 0).unwrap(),
            text("osgate")
        );
        assert!(encode(DataType::String, &text("too long text"), 4).is_err());
        assert!(encode(DataType::String, &text("€"), 4).is_err());
        assert!(encode(DataType::Int, &Value::I64(40000), 0).is_err());
        assert!(encode(DataType::Counter, &Value::U64(1000), 0).is_err());
        assert!(decode(DataType::Counter, &[0x00, 0xA0], 0).is_err());
        assert!(decode(DataType::DateAndTime, &[0x26, 0x13, 1, 0, 0, 0, 0, 0], 0).is_err());
        assert_eq!(
            decode(DataType::Dint, &[1, 2], 0),
            Err(CodecError::Short { got: 2, want: 4 })
        );
        assert_eq!(encode_s5time(9_990_000).unwrap(), 0x3999);
        assert_eq!(decode_s5time(0x0999).unwrap(), 9990);
        assert_eq!("TOD".parse::<DataType>(), Ok(DataType::TimeOfDay));
        assert!("float".parse::<DataType>().unwrap_err().contains("lreal"));
    }
}
