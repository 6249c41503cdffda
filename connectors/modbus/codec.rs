//! Modbus value codec: turns raw registers and bits into [`Value`]s and back.
//!
//! A channel's [`ValueFormat`] (data type, byte/word order, bit index, string length) says how
//! many registers it spans and how to read them. The poller hands each channel its slice of a
//! planned block read to [`decode_registers`] / [`decode_bit`]; the resulting values then go
//! through the generic per-channel transform (scale, offset, …) in the pipeline. Writes run the
//! other way: [`unscale`] reverses the channel's scale/offset, then [`encode_registers`] produces
//! the words to send. Pure functions, no I/O.
//!
//! # Byte orders
//! A value's bytes, most significant first, are `A B C D` (`A`…`H` for 64-bit values). On the
//! wire, each register carries two bytes, high byte first:
//!
//! | order  | 32-bit registers | 64-bit registers     | meaning                          |
//! |--------|------------------|----------------------|----------------------------------|
//! | `ABCD` | `AB CD`          | `AB CD EF GH`        | big-endian (Modbus default)      |
//! | `CDAB` | `CD AB`          | `GH EF CD AB`        | word order reversed              |
//! | `BADC` | `BA DC`          | `BA DC FE HG`        | bytes swapped inside each word   |
//! | `DCBA` | `DC BA`          | `HG FE DC BA`        | little-endian                    |
//!
//! For 16-bit values only the byte swap matters (`BADC`/`DCBA` swap the two bytes). Strings are
//! a sequence of characters, so the word order never applies to them; `BADC`/`DCBA` put the
//! first character of each register in the low byte.

use std::fmt;

use serde::{Deserialize, Serialize};

use osgate_core::reading::Value;

/// Most registers one read request may return (FC03/FC04).
pub const MAX_REGISTERS_PER_READ: u16 = 125;
/// Most bits one read request may return (FC01/FC02).
pub const MAX_BITS_PER_READ: u16 = 2000;
/// Most registers one write request may carry (FC16).
pub const MAX_REGISTERS_PER_WRITE: u16 = 123;
/// Most coils one write request may carry (FC15).
pub const MAX_COILS_PER_WRITE: u16 = 1968;

/// A Modbus data table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Coils: read/write bits (FC01, FC05, FC15).
    #[serde(alias = "coils")]
    Coil,
    /// Discrete inputs: read-only bits (FC02).
    #[serde(alias = "discrete_input", alias = "discrete_inputs")]
    Discrete,
    /// Holding registers: read/write words (FC03, FC06, FC16).
    #[serde(alias = "holding_register", alias = "holding_registers")]
    Holding,
    /// Input registers: read-only words (FC04).
    #[serde(alias = "input_register", alias = "input_registers")]
    Input,
}

impl Table {
    /// True for the bit tables (coils, discrete inputs).
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// True for the tables a client may write (coils, holding registers).
    pub fn is_writable(self) -> bool {
        matches!(self, Table::Coil | Table::Holding)
    }

    /// The protocol's limit on items per read request for this table.
    pub fn protocol_limit(self) -> u16 {
        if self.is_bits() {
            MAX_BITS_PER_READ
        } else {
            MAX_REGISTERS_PER_READ
        }
    }

    /// The name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::Discrete => "discrete",
            Table::Holding => "holding",
            Table::Input => "input",
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The data type of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// A coil, a discrete input, or one bit (`bit`) of a register.
    Bool,
    /// Unsigned 16-bit integer (1 register).
    U16,
    /// Signed 16-bit integer (1 register).
    I16,
    /// Unsigned 32-bit integer (2 registers).
    U32,
    /// Signed 32-bit integer (2 registers).
    I32,
    /// Unsigned 64-bit integer (4 registers).
    U64,
    /// Signed 64-bit integer (4 registers).
    I64,
    /// IEEE 754 single precision (2 registers).
    F32,
    /// IEEE 754 double precision (4 registers).
    F64,
    /// ASCII text, two characters per register (`length` registers).
    String,
}

impl DataType {
    /// The name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
            DataType::String => "string",
        }
    }

    /// Registers a value of this type spans (`length` for strings; 1 for a bit of a register).
    pub fn registers(self, length: u16) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String => length,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Byte and word order of a multi-byte value; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
pub enum ByteOrder {
    /// Big-endian: the Modbus default.
    #[default]
    ABCD,
    /// Word order reversed ("word swap").
    CDAB,
    /// Bytes swapped inside each word ("byte swap").
    BADC,
    /// Little-endian.
    DCBA,
}

impl ByteOrder {
    /// Every order, for tests and help texts.
    pub const ALL: [ByteOrder; 4] = [
        ByteOrder::ABCD,
        ByteOrder::CDAB,
        ByteOrder::BADC,
        ByteOrder::DCBA,
    ];

    fn swaps_words(self) -> bool {
        matches!(self, ByteOrder::CDAB | ByteOrder::DCBA)
    }

    fn swaps_bytes(self) -> bool {
        matches!(self, ByteOrder::BADC | ByteOrder::DCBA)
    }

    /// The name used in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            ByteOrder::ABCD => "ABCD",
            ByteOrder::CDAB => "CDAB",
            ByteOrder::BADC => "BADC",
            ByteOrder::DCBA => "DCBA",
        }
    }
}

impl fmt::Display for ByteOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ByteOrder {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ByteOrder::ALL
            .into_iter()
            .find(|o| o.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown order \"{s}\", expected one of ABCD, CDAB, BADC, DCBA"))
    }
}

/// How one channel's value is laid out in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ValueFormat {
    /// The data type.
    pub data_type: DataType,
    /// Byte/word order (ignored for bits).
    pub order: ByteOrder,
    /// For `bool` in a register table: the bit (0 = least significant) of the register.
    pub bit: Option<u8>,
    /// For `string`: the number of registers.
    pub length: u16,
}

impl ValueFormat {
    /// A format with the default order and no bit or length.
    pub fn new(data_type: DataType) -> Self {
        ValueFormat {
            data_type,
            order: ByteOrder::ABCD,
            bit: None,
            length: 0,
        }
    }

    /// Items (registers or bits) this value spans in `table`.
    pub fn count(&self, table: Table) -> u16 {
        if table.is_bits() {
            1
        } else {
            self.data_type.registers(self.length)
        }
    }

    /// Semantic checks of the format against its table and start address.
    /// Each problem is `(field, message)`.
    pub fn check(&self, table: Table, address: u16) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        if table.is_bits() {
            if self.data_type != DataType::Bool {
                errs.push((
                    "type",
                    format!(
                        "table \"{table}\" holds bits, so the type must be bool, got \"{}\"",
                        self.data_type
                    ),
                ));
            }
            if self.bit.is_some() {
                errs.push((
                    "bit",
                    format!("only applies to register tables, not \"{table}\""),
                ));
            }
        } else if self.data_type == DataType::Bool {
            match self.bit {
                None => errs.push((
                    "bit",
                    format!("a bool in table \"{table}\" needs the bit index (0..=15)"),
                )),
                Some(b) if b > 15 => {
                    errs.push(("bit", format!("must be 0..=15, got {b}")));
                }
                Some(_) => {}
            }
        } else if self.bit.is_some() {
            errs.push((
                "bit",
                format!("only applies to type bool, not \"{}\"", self.data_type),
            ));
        }
        if self.data_type == DataType::String {
            if self.length == 0 {
                errs.push((
                    "length",
                    "a string needs a length of at least 1 register".into(),
                ));
            } else if self.length > MAX_REGISTERS_PER_READ {
                errs.push((
                    "length",
                    format!(
                        "must be at most {MAX_REGISTERS_PER_READ} registers (one request), got {}",
                        self.length
                    ),
                ));
            }
        }
        let count = u32::from(self.count(table)).max(1);
        let last = u32::from(address) + count - 1;
        if last > 65535 {
            errs.push((
                "address",
                format!(
                    "{address} + {count} {} runs past 65535 (last would be {last})",
                    if table.is_bits() { "bit" } else { "registers" }
                ),
            ));
        }
        errs
    }
}

/// Why a value could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CodecError {
    /// The slice has the wrong number of registers for the type.
    #[error("{data_type} needs {want} registers, got {got}")]
    WrongLength {
        /// The data type.
        data_type: DataType,
        /// Registers needed.
        want: usize,
        /// Registers given.
        got: usize,
    },
    /// The value does not fit the data type.
    #[error("value {value} is out of range for {data_type}")]
    OutOfRange {
        /// The value, as text.
        value: String,
        /// The data type.
        data_type: DataType,
    },
    /// The value's kind does not match the data type (e.g. text for an integer).
    #[error("a {data_type} channel cannot take the value {value:?}")]
    WrongType {
        /// The value, as text.
        value: String,
        /// The data type.
        data_type: DataType,
    },
    /// The text is longer than the channel's registers hold.
    #[error("text of {len} bytes does not fit in {registers} registers ({} bytes)", registers * 2)]
    StringTooLong {
        /// Bytes of the text.
        len: usize,
        /// Registers of the channel.
        registers: u16,
    },
    /// The text contains non-ASCII characters.
    #[error("text must be ASCII")]
    NotAscii,
    /// A bit index over 15.
    #[error("bit index {0} is over 15")]
    BadBit(u8),
    /// The scale is zero, so a write cannot be reversed.
    #[error("cannot reverse a scale of 0")]
    ZeroScale,
}

/// Puts canonical big-endian words into wire order (and back: the operation is its own inverse).
fn reorder(words: &mut [u16], order: ByteOrder) {
    if order.swaps_words() {
        words.reverse();
    }
    if order.swaps_bytes() {
        for w in words.iter_mut() {
            *w = w.swap_bytes();
        }
    }
}

/// Reads `N` wire words into canonical big-endian bytes.
fn be_bytes<const N: usize>(regs: &[u16], order: ByteOrder) -> [u8; N] {
    let mut words = [0u16; 4];
    let words = &mut words[..N / 2];
    words.copy_from_slice(&regs[..N / 2]);
    reorder(words, order);
    let mut out = [0u8; N];
    for (i, w) in words.iter().enumerate() {
        out[2 * i..2 * i + 2].copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// Canonical big-endian bytes to wire words.
fn wire_words(bytes: &[u8], order: ByteOrder) -> Vec<u16> {
    let mut words: Vec<u16> = bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    reorder(&mut words, order);
    words
}

/// An `f32` as the `f64` with the same shortest decimal form (`1.1f32` becomes `1.1`, not
/// `1.100000023841858`), so published values look like what the device holds.
pub fn f32_to_f64(v: f32) -> f64 {
    if !v.is_finite() {
        return f64::from(v);
    }
    let mut buf = ryu::Buffer::new();
    buf.format_finite(v).parse().unwrap_or(f64::from(v))
}

/// Decodes one channel from its registers (exactly `fmt.count()` of them, in wire order).
pub fn decode_registers(regs: &[u16], fmt: &ValueFormat) -> Result<Value, CodecError> {
    let want = usize::from(fmt.data_type.registers(fmt.length));
    if regs.len() != want {
        return Err(CodecError::WrongLength {
            data_type: fmt.data_type,
            want,
            got: regs.len(),
        });
    }
    let o = fmt.order;
    Ok(match fmt.data_type {
        DataType::Bool => {
            let bit = fmt.bit.unwrap_or(0);
            if bit > 15 {
                return Err(CodecError::BadBit(bit));
            }
            let w = u16::from_be_bytes(be_bytes::<2>(regs, o));
            Value::Bool(w >> bit & 1 == 1)
        }
        DataType::U16 => Value::U64(u16::from_be_bytes(be_bytes::<2>(regs, o)).into()),
        DataType::I16 => Value::I64(i16::from_be_bytes(be_bytes::<2>(regs, o)).into()),
        DataType::U32 => Value::U64(u32::from_be_bytes(be_bytes::<4>(regs, o)).into()),
        DataType::I32 => Value::I64(i32::from_be_bytes(be_bytes::<4>(regs, o)).into()),
        DataType::U64 => Value::U64(u64::from_be_bytes(be_bytes::<8>(regs, o))),
        DataType::I64 => Value::I64(i64::from_be_bytes(be_bytes::<8>(regs, o))),
        DataType::F32 => Value::F64(f32_to_f64(f32::from_be_bytes(be_bytes::<4>(regs, o)))),
        DataType::F64 => Value::F64(f64::from_be_bytes(be_bytes::<8>(regs, o))),
        DataType::String => {
            let mut bytes = Vec::with_capacity(regs.len() * 2);
            for w in regs {
                let w = if o.swaps_bytes() { w.swap_bytes() } else { *w };
                bytes.extend_from_slice(&w.to_be_bytes());
            }
            // Devices pad with NUL or spaces; neither is part of the value.
            while matches!(bytes.last(), Some(0) | Some(b' ')) {
                bytes.pop();
            }
            Value::Text(String::from_utf8_lossy(&bytes).as_ref().into())
        }
    })
}

/// Decodes a coil or discrete input.
pub fn decode_bit(bit: bool) -> Value {
    Value::Bool(bit)
}

fn value_text(v: &Value) -> String {
    v.to_string()
}

/// The value as an integer in `[min, max]`: integers exactly, floats rounded to nearest,
/// bools as 0/1.
fn to_integer(v: &Value, dt: DataType, min: i128, max: i128) -> Result<i128, CodecError> {
    let out_of_range = || CodecError::OutOfRange {
        value: value_text(v),
        data_type: dt,
    };
    let n: i128 = match v {
        Value::Bool(b) => i128::from(*b),
        Value::I64(i) => i128::from(*i),
        Value::U64(u) => i128::from(*u),
        Value::F64(f) => {
            if !f.is_finite() {
                return Err(out_of_range());
            }
            let r = f.round();
            // Beyond ±2^127 the cast saturates; the range check below rejects those anyway.
            if r.abs() > 1.7e38 {
                return Err(out_of_range());
            }
            r as i128
        }
        Value::Text(_) => {
            return Err(CodecError::WrongType {
                value: value_text(v),
                data_type: dt,
            })
        }
    };
    if n < min || n > max {
        return Err(out_of_range());
    }
    Ok(n)
}

fn to_float(v: &Value, dt: DataType) -> Result<f64, CodecError> {
    v.as_f64()
        .filter(|_| !matches!(v, Value::Bool(_)))
        .ok_or_else(|| CodecError::WrongType {
            value: value_text(v),
            data_type: dt,
        })
}

/// Encodes a value into wire-order registers for `fmt` (the reverse of [`decode_registers`]).
///
/// Integers accept integer values, and floats rounded to the nearest integer (after
/// [`unscale`] a value is usually a float). A `bool` of a register is not encoded here: it needs
/// the register's current value, see [`bit_masks`].
pub fn encode_registers(v: &Value, fmt: &ValueFormat) -> Result<Vec<u16>, CodecError> {
    let dt = fmt.data_type;
    let o = fmt.order;
    Ok(match dt {
        DataType::Bool => {
            let n = to_integer(v, dt, 0, 1)?;
            wire_words(&(n as u16).to_be_bytes(), o)
        }
        DataType::U16 => {
            let n = to_integer(v, dt, 0, u16::MAX.into())?;
            wire_words(&(n as u16).to_be_bytes(), o)
        }
        DataType::I16 => {
            let n = to_integer(v, dt, i16::MIN.into(), i16::MAX.into())?;
            wire_words(&(n as i16).to_be_bytes(), o)
        }
        DataType::U32 => {
            let n = to_integer(v, dt, 0, u32::MAX.into())?;
            wire_words(&(n as u32).to_be_bytes(), o)
        }
        DataType::I32 => {
            let n = to_integer(v, dt, i32::MIN.into(), i32::MAX.into())?;
            wire_words(&(n as i32).to_be_bytes(), o)
        }
        DataType::U64 => {
            let n = to_integer(v, dt, 0, u64::MAX.into())?;
            wire_words(&(n as u64).to_be_bytes(), o)
        }
        DataType::I64 => {
            let n = to_integer(v, dt, i64::MIN.into(), i64::MAX.into())?;
            wire_words(&(n as i64).to_be_bytes(), o)
        }
        DataType::F32 => {
            let f = to_float(v, dt)?;
            if f.is_finite() && f.abs() > f64::from(f32::MAX) {
                return Err(CodecError::OutOfRange {
                    value: value_text(v),
                    data_type: dt,
                });
            }
            wire_words(&(f as f32).to_be_bytes(), o)
        }
        DataType::F64 => wire_words(&to_float(v, dt)?.to_be_bytes(), o),
        DataType::String => {
            let Value::Text(s) = v else {
                return Err(CodecError::WrongType {
                    value: value_text(v),
                    data_type: dt,
                });
            };
            if !s.is_ascii() {
                return Err(CodecError::NotAscii);
            }
            let cap = usize::from(fmt.length) * 2;
            if s.len() > cap {
                return Err(CodecError::StringTooLong {
                    len: s.len(),
                    registers: fmt.length,
                });
            }
            let mut bytes = s.as_bytes().to_vec();
            bytes.resize(cap, 0);
            bytes
                .chunks(2)
                .map(|c| {
                    let w = u16::from_be_bytes([c[0], c[1]]);
                    if o.swaps_bytes() {
                        w.swap_bytes()
                    } else {
                        w
                    }
                })
                .collect()
        }
    })
}

/// The masks that set (`on`) or clear the channel's bit of a holding register, for Mask Write
/// Register (0x16), which computes `(current AND and_mask) OR (or_mask AND NOT and_mask)` on the
/// device. The bit is counted in the channel's byte order (`BADC`/`DCBA` swap the register's
/// bytes), the masks in wire order.
pub fn bit_masks(fmt: &ValueFormat, on: bool) -> Result<(u16, u16), CodecError> {
    let bit = fmt.bit.unwrap_or(0);
    if bit > 15 {
        return Err(CodecError::BadBit(bit));
    }
    let mut mask: u16 = 1 << bit;
    if fmt.order.swaps_bytes() {
        mask = mask.swap_bytes();
    }
    Ok((!mask, if on { mask } else { 0 }))
}

/// What Mask Write Register makes of `current` (for devices without 0x16, which get the
/// result written back instead).
pub fn apply_masks(current: u16, (and, or): (u16, u16)) -> u16 {
    (current & and) | (or & !and)
}

/// The value as a coil state: bools, and the numbers 0 and 1.
pub fn to_coil(v: &Value) -> Result<bool, CodecError> {
    Ok(to_integer(v, DataType::Bool, 0, 1)? == 1)
}

/// Reverses the channel transform `y = x * scale + offset` for a write: `x = (y - offset) / scale`.
///
/// Without scale and offset the value passes unchanged (so integers stay exact); otherwise the
/// result is a float that [`encode_registers`] rounds for integer types.
pub fn unscale(v: &Value, scale: Option<f64>, offset: Option<f64>) -> Result<Value, CodecError> {
    if scale.is_none() && offset.is_none() {
        return Ok(v.clone());
    }
    let scale = scale.unwrap_or(1.0);
    if scale == 0.0 {
        return Err(CodecError::ZeroScale);
    }
    let y = match v {
        Value::Bool(_) | Value::Text(_) => {
            return Err(CodecError::WrongType {
                value: value_text(v),
                data_type: DataType::F64,
            })
        }
        _ => v.as_f64().unwrap_or(0.0),
    };
    Ok(Value::F64((y - offset.unwrap_or(0.0)) / scale))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fmt(dt: DataType, order: ByteOrder) -> ValueFormat {
        ValueFormat {
            order,
            ..ValueFormat::new(dt)
        }
    }

    #[test]
    fn u32_in_every_order() {
        // 0x11223344: A=11 B=22 C=33 D=44.
        let cases = [
            (ByteOrder::ABCD, [0x1122, 0x3344]),
            (ByteOrder::CDAB, [0x3344, 0x1122]),
            (ByteOrder::BADC, [0x2211, 0x4433]),
            (ByteOrder::DCBA, [0x4433, 0x2211]),
        ];
        for (order, regs) in cases {
            let f = fmt(DataType::U32, order);
            assert_eq!(
                decode_registers(&regs, &f).unwrap(),
                Value::U64(0x1122_3344)
            );
            assert_eq!(
                encode_registers(&Value::U64(0x1122_3344), &f).unwrap(),
                regs
            );
        }
    }

    #[test]
    fn u64_in_every_order() {
        let v = 0x1122_3344_5566_7788u64;
        let cases = [
            (ByteOrder::ABCD, [0x1122, 0x3344, 0x5566, 0x7788]),
            (ByteOrder::CDAB, [0x7788, 0x5566, 0x3344, 0x1122]),
            (ByteOrder::BADC, [0x2211, 0x4433, 0x6655, 0x8877]),
            (ByteOrder::DCBA, [0x8877, 0x6655, 0x4433, 0x2211]),
        ];
        for (order, regs) in cases {
            let f = fmt(DataType::U64, order);
            assert_eq!(decode_registers(&regs, &f).unwrap(), Value::U64(v));
            assert_eq!(encode_registers(&Value::U64(v), &f).unwrap(), regs);
        }
    }

    #[test]
    fn sixteen_bit_types() {
        let f = fmt(DataType::I16, ByteOrder::ABCD);
        assert_eq!(decode_registers(&[0xFFFE], &f).unwrap(), Value::I64(-2));
        let f = fmt(DataType::U16, ByteOrder::BADC);
        assert_eq!(decode_registers(&[0x3412], &f).unwrap(), Value::U64(0x1234));
        let f = fmt(DataType::U16, ByteOrder::CDAB);
        assert_eq!(decode_registers(&[0x1234], &f).unwrap(), Value::U64(0x1234));
    }

    #[test]
    fn floats_decode_to_their_shortest_decimal() {
        // 1.1f32 = 0x3F8CCCCD.
        let f = fmt(DataType::F32, ByteOrder::ABCD);
        assert_eq!(
            decode_registers(&[0x3F8C, 0xCCCD], &f).unwrap(),
            Value::F64(1.1)
        );
        let f = fmt(DataType::F32, ByteOrder::CDAB);
        assert_eq!(
            decode_registers(&[0xCCCD, 0x3F8C], &f).unwrap(),
            Value::F64(1.1)
        );
        // -2.5f64 = 0xC004000000000000.
        let f = fmt(DataType::F64, ByteOrder::DCBA);
        assert_eq!(
            decode_registers(&[0, 0, 0, 0x04C0], &f).unwrap(),
            Value::F64(-2.5)
        );
        let f = fmt(DataType::F32, ByteOrder::ABCD);
        let Value::F64(nan) = decode_registers(&[0x7FC0, 0], &f).unwrap() else {
            panic!("not a float")
        };
        assert!(nan.is_nan());
    }

    #[test]
    fn signed_32_and_64() {
        let f = fmt(DataType::I32, ByteOrder::ABCD);
        assert_eq!(
            decode_registers(&[0xFFFF, 0xFFFF], &f).unwrap(),
            Value::I64(-1)
        );
        let f = fmt(DataType::I64, ByteOrder::CDAB);
        let regs = encode_registers(&Value::I64(-123_456_789_012), &f).unwrap();
        assert_eq!(
            decode_registers(&regs, &f).unwrap(),
            Value::I64(-123_456_789_012)
        );
    }

    #[test]
    fn strings() {
        let f = ValueFormat {
            length: 3,
            ..ValueFormat::new(DataType::String)
        };
        let regs = [u16::from_be_bytes(*b"AB"), u16::from_be_bytes(*b"C\0"), 0];
        assert_eq!(
            decode_registers(&regs, &f).unwrap(),
            Value::Text("ABC".into())
        );
        assert_eq!(
            encode_registers(&Value::Text("ABC".into()), &f).unwrap(),
            regs
        );
        let swapped = ValueFormat {
            order: ByteOrder::BADC,
            ..f
        };
        let regs = [u16::from_be_bytes(*b"BA"), u16::from_be_bytes(*b" C")];
        let f2 = ValueFormat {
            length: 2,
            ..swapped
        };
        assert_eq!(
            decode_registers(&regs, &f2).unwrap(),
            Value::Text("ABC".into())
        );
        // Word order does not apply to strings.
        let cdab = ValueFormat {
            order: ByteOrder::CDAB,
            length: 2,
            ..f
        };
        let regs = [u16::from_be_bytes(*b"AB"), u16::from_be_bytes(*b"CD")];
        assert_eq!(
            decode_registers(&regs, &cdab).unwrap(),
            Value::Text("ABCD".into())
        );
        assert_eq!(
            encode_registers(&Value::Text("ABCDE".into()), &cdab),
            Err(CodecError::StringTooLong {
                len: 5,
                registers: 2
            })
        );
        assert_eq!(
            encode_registers(&Value::Text("é".into()), &cdab),
            Err(CodecError::NotAscii)
        );
        // Garbage bytes never panic.
        assert!(decode_registers(&[0xFFFE], &ValueFormat { length: 1, ..f }).is_ok());
    }

    #[test]
    fn bits_of_registers() {
        let f = ValueFormat {
            bit: Some(0),
            ..ValueFormat::new(DataType::Bool)
        };
        assert_eq!(decode_registers(&[0x0001], &f).unwrap(), Value::Bool(true));
        let f15 = ValueFormat { bit: Some(15), ..f };
        assert_eq!(
            decode_registers(&[0x8000], &f15).unwrap(),
            Value::Bool(true)
        );
        assert_eq!(
            decode_registers(&[0x7FFF], &f15).unwrap(),
            Value::Bool(false)
        );
        // With a byte swap, bit 0 lives in the high byte on the wire.
        let swapped = ValueFormat {
            order: ByteOrder::BADC,
            ..f
        };
        assert_eq!(
            decode_registers(&[0x0100], &swapped).unwrap(),
            Value::Bool(true)
        );
        let set_bit = |cur, fmt: &ValueFormat, on| bit_masks(fmt, on).map(|m| apply_masks(cur, m));
        assert_eq!(set_bit(0x0000, &swapped, true).unwrap(), 0x0100);
        assert_eq!(set_bit(0xFFFF, &f15, false).unwrap(), 0x7FFF);
        assert_eq!(set_bit(0x00F0, &f, true).unwrap(), 0x00F1);
        let bad = ValueFormat { bit: Some(16), ..f };
        assert_eq!(decode_registers(&[0], &bad), Err(CodecError::BadBit(16)));
        assert_eq!(bit_masks(&bad, true), Err(CodecError::BadBit(16)));
        assert_eq!(decode_bit(true), Value::Bool(true));
    }

    #[test]
    fn bit_masks_change_only_their_bit_in_every_order() {
        for order in [
            ByteOrder::ABCD,
            ByteOrder::CDAB,
            ByteOrder::BADC,
            ByteOrder::DCBA,
        ] {
            for bit in 0..16u8 {
                let f = ValueFormat {
                    bit: Some(bit),
                    order,
                    ..ValueFormat::new(DataType::Bool)
                };
                for cur in [0x0000u16, 0xFFFF, 0xA5C3, 0x1234] {
                    for on in [false, true] {
                        let w = apply_masks(cur, bit_masks(&f, on).unwrap());
                        assert_eq!(decode_registers(&[w], &f).unwrap(), Value::Bool(on));
                        // Every other bit is as it was.
                        for other in (0..16u8).filter(|&b| b != bit) {
                            let g = ValueFormat {
                                bit: Some(other),
                                ..f
                            };
                            assert_eq!(
                                decode_registers(&[w], &g).unwrap(),
                                decode_registers(&[cur], &g).unwrap(),
                                "{order:?} bit {bit} of {cur:#06x}: bit {other} changed"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn wrong_lengths_are_errors_not_panics() {
        let f = fmt(DataType::F64, ByteOrder::ABCD);
        assert_eq!(
            decode_registers(&[1, 2], &f),
            Err(CodecError::WrongLength {
                data_type: DataType::F64,
                want: 4,
                got: 2
            })
        );
    }

    #[test]
    fn encode_rejects_out_of_range_and_wrong_kinds() {
        let u16f = fmt(DataType::U16, ByteOrder::ABCD);
        assert!(matches!(
            encode_registers(&Value::U64(65536), &u16f),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            encode_registers(&Value::I64(-1), &u16f),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            encode_registers(&Value::Text("1".into()), &u16f),
            Err(CodecError::WrongType { .. })
        ));
        assert!(matches!(
            encode_registers(&Value::F64(f64::NAN), &u16f),
            Err(CodecError::OutOfRange { .. })
        ));
        assert_eq!(
            encode_registers(&Value::F64(41.6), &u16f).unwrap(),
            vec![42]
        );
        let f32f = fmt(DataType::F32, ByteOrder::ABCD);
        assert!(matches!(
            encode_registers(&Value::F64(1e300), &f32f),
            Err(CodecError::OutOfRange { .. })
        ));
        assert!(matches!(
            encode_registers(&Value::Bool(true), &f32f),
            Err(CodecError::WrongType { .. })
        ));
        let u64f = fmt(DataType::U64, ByteOrder::ABCD);
        assert_eq!(
            encode_registers(&Value::U64(u64::MAX), &u64f).unwrap(),
            vec![0xFFFF; 4]
        );
        assert!(to_coil(&Value::U64(2)).is_err());
        assert!(to_coil(&Value::Bool(true)).unwrap());
        assert!(!to_coil(&Value::U64(0)).unwrap());
    }

    #[test]
    fn unscale_reverses_the_transform() {
        assert_eq!(unscale(&Value::U64(7), None, None).unwrap(), Value::U64(7));
        // y = x * 0.1 + 5 → x = (y - 5) / 0.1
        let Value::F64(x) = unscale(&Value::F64(28.0), Some(0.1), Some(5.0)).unwrap() else {
            panic!("not a float")
        };
        assert!((x - 230.0).abs() < 1e-9);
        let u16f = fmt(DataType::U16, ByteOrder::ABCD);
        let x = unscale(&Value::F64(28.0), Some(0.1), Some(5.0)).unwrap();
        assert_eq!(encode_registers(&x, &u16f).unwrap(), vec![230]);
        assert_eq!(
            unscale(&Value::U64(1), Some(0.0), None),
            Err(CodecError::ZeroScale)
        );
        assert!(unscale(&Value::Text("x".into()), Some(2.0), None).is_err());
    }

    #[test]
    fn format_checks_name_the_field() {
        let check = |table, f: ValueFormat, addr| {
            f.check(table, addr)
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        let u32f = ValueFormat::new(DataType::U32);
        assert!(check(Table::Holding, u32f, 65534).is_empty());
        assert_eq!(check(Table::Holding, u32f, 65535), vec!["address"]);
        let bit16 = ValueFormat {
            bit: Some(16),
            ..ValueFormat::new(DataType::Bool)
        };
        assert_eq!(check(Table::Holding, bit16, 0), vec!["bit"]);
        let nobit = ValueFormat::new(DataType::Bool);
        assert_eq!(check(Table::Input, nobit, 0), vec!["bit"]);
        assert!(check(Table::Coil, nobit, 65535).is_empty());
        assert_eq!(check(Table::Coil, u32f, 0), vec!["type"]);
        let s0 = ValueFormat::new(DataType::String);
        assert_eq!(check(Table::Holding, s0, 0), vec!["length"]);
        let s10 = ValueFormat { length: 10, ..s0 };
        assert_eq!(check(Table::Holding, s10, 65530), vec!["address"]);
    }

    #[test]
    fn config_names() {
        let t: Table = serde_json::from_str("\"holding_registers\"").unwrap();
        assert_eq!(t, Table::Holding);
        let err = serde_json::from_str::<Table>("\"holdings\"").unwrap_err();
        assert!(err.to_string().contains("unknown variant"), "{err}");
        let o: ByteOrder = serde_json::from_str("\"CDAB\"").unwrap();
        assert_eq!(o, ByteOrder::CDAB);
        assert_eq!("dcba".parse::<ByteOrder>().unwrap(), ByteOrder::DCBA);
        assert!("XYZW".parse::<ByteOrder>().is_err());
        let d: DataType = serde_json::from_str("\"f64\"").unwrap();
        assert_eq!(d, DataType::F64);
    }

    fn any_order() -> impl Strategy<Value = ByteOrder> {
        prop::sample::select(ByteOrder::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn integers_round_trip(v in any::<i64>(), u in any::<u64>(), order in any_order()) {
            for (dt, val) in [
                (DataType::I64, Value::I64(v)),
                (DataType::U64, Value::U64(u)),
                (DataType::I32, Value::I64(v as i32 as i64)),
                (DataType::U32, Value::U64(u as u32 as u64)),
                (DataType::I16, Value::I64(v as i16 as i64)),
                (DataType::U16, Value::U64(u as u16 as u64)),
            ] {
                let f = fmt(dt, order);
                let regs = encode_registers(&val, &f).unwrap();
                prop_assert_eq!(regs.len(), usize::from(dt.registers(0)));
                prop_assert_eq!(decode_registers(&regs, &f).unwrap(), val);
            }
        }

        #[test]
        fn f64_round_trips_bit_exact(bits in any::<u64>(), order in any_order()) {
            let x = f64::from_bits(bits);
            prop_assume!(x.is_finite());
            let f = fmt(DataType::F64, order);
            let regs = encode_registers(&Value::F64(x), &f).unwrap();
            let Value::F64(y) = decode_registers(&regs, &f).unwrap() else { unreachable!() };
            prop_assert_eq!(x.to_bits(), y.to_bits());
        }

        #[test]
        fn f32_round_trips(x in any::<f32>(), order in any_order()) {
            prop_assume!(x.is_finite());
            let f = fmt(DataType::F32, order);
            let regs = encode_registers(&Value::F64(f32_to_f64(x)), &f).unwrap();
            let Value::F64(y) = decode_registers(&regs, &f).unwrap() else { unreachable!() };
            prop_assert_eq!((y as f32).to_bits(), x.to_bits());
        }

        #[test]
        fn decoding_never_panics(regs in prop::collection::vec(any::<u16>(), 0..6),
                                 order in any_order(), bit in 0u8..20) {
            for dt in [DataType::Bool, DataType::U16, DataType::I32, DataType::F32,
                       DataType::U64, DataType::F64, DataType::String] {
                let f = ValueFormat { data_type: dt, order, bit: Some(bit), length: 3 };
                let _ = decode_registers(&regs, &f);
            }
        }

        #[test]
        fn ascii_strings_round_trip(s in "[ -~]{0,10}", order in any_order()) {
            let f = ValueFormat { order, length: 5, ..ValueFormat::new(DataType::String) };
            let regs = encode_registers(&Value::Text(s.as_str().into()), &f).unwrap();
            let want = s.trim_end_matches([' ', '\0']);
            prop_assert_eq!(decode_registers(&regs, &f).unwrap(), Value::Text(want.into()));
        }
    }
}
