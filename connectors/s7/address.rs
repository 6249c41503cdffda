//! Siemens address notation (`DB1.DBX0.3`, `DB1.DBW4`, `MW20`, `I0.0`, `Q0.1`, `C5`, `T3`, …)
//! parsed into an [`Address`]: the memory area, the byte (or counter/timer number), and the
//! width the notation names (a bit, a byte, a word or a double word).
//!
//! Both the international (I/Q, C) and the German (E/A, Z) mnemonics are accepted, case and
//! spaces ignored, as users copy them from TIA Portal or STEP 7 tag tables. The width the
//! letter names is checked against the channel's type in [`Address::check_type`], so
//! `DB1.DBW4` with type `real` is a config error that says to write `DB1.DBD4`.

use std::fmt;

use super::codec::DataType;

/// Largest byte offset the 3-byte bit address of an S7 item can carry (`byte * 8 + bit`).
pub const MAX_BYTE: u32 = (1 << 21) - 1;

/// A memory area of the PLC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Area {
    /// The process image of inputs (I, German E).
    Inputs,
    /// The process image of outputs (Q, German A).
    Outputs,
    /// Bit memory / flags (M).
    Flags,
    /// A data block (`DB<n>`).
    Db(u16),
    /// Counters (C, German Z): 16-bit words addressed by number.
    Counters,
    /// Timers (T): 16-bit words addressed by number.
    Timers,
}

impl Area {
    /// The area code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Area::Inputs => 0x81,
            Area::Outputs => 0x82,
            Area::Flags => 0x83,
            Area::Db(_) => 0x84,
            Area::Counters => 0x1C,
            Area::Timers => 0x1D,
        }
    }

    /// The DB number on the wire (0 outside data blocks).
    pub fn db(self) -> u16 {
        match self {
            Area::Db(n) => n,
            _ => 0,
        }
    }

    /// Bytes per addressable unit: counters and timers are addressed by number, 2 bytes each;
    /// everything else by byte.
    pub fn unit_bytes(self) -> u32 {
        match self {
            Area::Counters | Area::Timers => 2,
            _ => 1,
        }
    }

    /// Whether the area is addressed by counter/timer number.
    pub fn is_numbered(self) -> bool {
        self.unit_bytes() == 2
    }
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Area::Inputs => f.write_str("I"),
            Area::Outputs => f.write_str("Q"),
            Area::Flags => f.write_str("M"),
            Area::Db(n) => write!(f, "DB{n}"),
            Area::Counters => f.write_str("C"),
            Area::Timers => f.write_str("T"),
        }
    }
}

/// The width an address names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Width {
    /// One bit (`X`, or `M10.1` style), 0–7.
    Bit(u8),
    /// A byte (`B`).
    Byte,
    /// A word, 2 bytes (`W`).
    Word,
    /// A double word, 4 bytes (`D`).
    DWord,
    /// A counter or timer (one 16-bit element).
    Element,
}

impl Width {
    /// Bytes the width spans (a bit is read as its byte).
    pub fn bytes(self) -> u32 {
        match self {
            Width::Bit(_) | Width::Byte => 1,
            Width::Word | Width::Element => 2,
            Width::DWord => 4,
        }
    }
}

/// A parsed address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address {
    /// The memory area.
    pub area: Area,
    /// The first byte (or the counter/timer number).
    pub offset: u32,
    /// What the notation names.
    pub width: Width,
}

/// Why an address does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{text}\": {reason}")]
pub struct AddressError {
    /// The address as written.
    pub text: String,
    /// What is wrong, and what is allowed.
    pub reason: String,
}

const EXPECTED: &str = "expected Siemens notation such as DB1.DBX0.3, DB1.DBB2, DB1.DBW4, \
                        DB1.DBD8, M10.1, MB10, MW20, MD24, I0.0, IW64, Q0.1, QB0, C5 or T3";

impl std::str::FromStr for Address {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, AddressError> {
        let err = |reason: String| AddressError {
            text: text.to_string(),
            reason,
        };
        let s: String = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase();
        if s.is_empty() {
            return Err(err(format!("empty; {EXPECTED}")));
        }
        if let Some(rest) = s.strip_prefix("DB") {
            let Some((num, item)) = rest.split_once('.') else {
                return Err(err(format!(
                    "a data block address needs an item after the number (DB1.DBW4); {EXPECTED}"
                )));
            };
            let db = number(num)
                .filter(|n| (1..=u32::from(u16::MAX)).contains(n))
                .ok_or_else(|| err(format!("DB number \"{num}\" must be 1..=65535")))?;
            let item = item.strip_prefix("DB").unwrap_or(item);
            let (width, rest) = width_letter(item).ok_or_else(|| {
                err(format!(
                    "\"{item}\" is not DBX, DBB, DBW or DBD; {EXPECTED}"
                ))
            })?;
            let area = Area::Db(db as u16);
            return finish(area, width, rest).map_err(err);
        }
        let (area, rest) = match s.as_bytes()[0] {
            b'I' | b'E' => (Area::Inputs, &s[1..]),
            b'Q' | b'A' => (Area::Outputs, &s[1..]),
            b'M' => (Area::Flags, &s[1..]),
            b'C' | b'Z' => (Area::Counters, &s[1..]),
            b'T' => (Area::Timers, &s[1..]),
            _ => return Err(err(format!("unknown area; {EXPECTED}"))),
        };
        if area.is_numbered() {
            let n = number(rest)
                .filter(|n| *n <= u32::from(u16::MAX))
                .ok_or_else(|| {
                    err(format!(
                        "a {} address is a number 0..=65535 ({area}5), got \"{rest}\"",
                        if area == Area::Counters {
                            "counter"
                        } else {
                            "timer"
                        }
                    ))
                })?;
            return Ok(Address {
                area,
                offset: n,
                width: Width::Element,
            });
        }
        // `M10.1` names a bit without the X; `MB10`, `MW10`, `MD10`, `MX10.1` name a width.
        let (width, rest) = match width_letter(rest) {
            Some(w) => w,
            None => (WidthLetter::X, rest),
        };
        finish(area, width, rest).map_err(err)
    }
}

#[derive(Clone, Copy)]
enum WidthLetter {
    X,
    B,
    W,
    D,
}

fn width_letter(s: &str) -> Option<(WidthLetter, &str)> {
    let w = match s.as_bytes().first()? {
        b'X' => WidthLetter::X,
        b'B' => WidthLetter::B,
        b'W' => WidthLetter::W,
        b'D' => WidthLetter::D,
        _ => return None,
    };
    Some((w, &s[1..]))
}

fn number(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 9 {
        return None;
    }
    s.parse().ok()
}

fn finish(area: Area, w: WidthLetter, rest: &str) -> Result<Address, String> {
    let (byte, bit) = match rest.split_once('.') {
        Some((b, bit)) => (b, Some(bit)),
        None => (rest, None),
    };
    let offset = number(byte)
        .filter(|n| *n <= MAX_BYTE)
        .ok_or_else(|| format!("byte offset \"{byte}\" must be a number 0..={MAX_BYTE}"))?;
    let width = match (w, bit) {
        (WidthLetter::X, Some(bit)) => {
            let b = number(bit)
                .filter(|b| *b <= 7)
                .ok_or_else(|| format!("bit \"{bit}\" must be 0..=7"))?;
            Width::Bit(b as u8)
        }
        (WidthLetter::X, None) => {
            return Err(format!(
                "a bit address needs its bit number: {area}{}{offset}.0",
                if matches!(area, Area::Db(_)) {
                    ".DBX"
                } else {
                    ""
                }
            ))
        }
        (_, Some(_)) => return Err("only bit addresses (X) take a \".bit\"".to_string()),
        (WidthLetter::B, None) => Width::Byte,
        (WidthLetter::W, None) => Width::Word,
        (WidthLetter::D, None) => Width::DWord,
    };
    Ok(Address {
        area,
        offset,
        width,
    })
}

impl Address {
    /// The type a channel at this address has when it names none: `bool` for a bit, `byte`,
    /// `word` or `dword` for the widths, `counter` and `s5time` for counters and timers.
    pub fn default_type(&self) -> DataType {
        match (self.width, self.area) {
            (Width::Bit(_), _) => DataType::Bool,
            (Width::Byte, _) => DataType::Byte,
            (Width::Word, _) => DataType::Word,
            (Width::DWord, _) => DataType::Dword,
            (Width::Element, Area::Counters) => DataType::Counter,
            (Width::Element, _) => DataType::S5time,
        }
    }

    /// The bit of a bit address.
    pub fn bit(&self) -> Option<u8> {
        match self.width {
            Width::Bit(b) => Some(b),
            _ => None,
        }
    }

    /// Checks that `ty` fits the width the address names: a bit address takes `bool` and
    /// `bool` needs a bit address; a B/W/D address takes a type of 1/2/4 bytes, and a type
    /// longer than 4 bytes (LREAL, STRING, DTL, …) starts at any byte address (`DB1.DBB10`);
    /// counters and timers are single words.
    pub fn check_type(&self, ty: DataType, size: u32) -> Result<(), String> {
        let name = ty.name();
        match (self.width, ty) {
            (Width::Bit(_), DataType::Bool) => Ok(()),
            (Width::Bit(_), _) => Err(format!(
                "{self} is a bit address; type {name} needs a byte address such as {}",
                self.with_width(Width::Byte)
            )),
            (_, DataType::Bool) => Err(format!(
                "type bool needs a bit address such as {}",
                self.with_width(Width::Bit(0))
            )),
            (Width::Element, _) if size == 2 => Ok(()),
            (Width::Element, _) => Err(format!(
                "counters and timers are 16-bit words; type {name} takes {size} bytes \
                 (use counter, s5time, word or int)"
            )),
            (w, _) if size > 4 || w.bytes() == size => Ok(()),
            (w, _) => {
                let fit = match size {
                    1 => Width::Byte,
                    2 => Width::Word,
                    _ => Width::DWord,
                };
                Err(format!(
                    "{self} names {} byte(s) but type {name} takes {size}: write {}",
                    w.bytes(),
                    self.with_width(fit)
                ))
            }
        }
    }

    fn with_width(&self, width: Width) -> Address {
        Address { width, ..*self }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let db = matches!(self.area, Area::Db(_));
        let sep = if db { ".DB" } else { "" };
        match self.width {
            Width::Element => write!(f, "{}{}", self.area, self.offset),
            Width::Bit(b) if db => write!(f, "{}.DBX{}.{b}", self.area, self.offset),
            Width::Bit(b) => write!(f, "{}{}.{b}", self.area, self.offset),
            Width::Byte => write!(f, "{}{sep}B{}", self.area, self.offset),
            Width::Word => write!(f, "{}{sep}W{}", self.area, self.offset),
            Width::DWord => write!(f, "{}{sep}D{}", self.area, self.offset),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Address {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_every_notation() {
        let cases = [
            ("DB1.DBX0.3", Area::Db(1), 0, Width::Bit(3)),
            ("db1.dbb2", Area::Db(1), 2, Width::Byte),
            ("DB1.DBW4", Area::Db(1), 4, Width::Word),
            ("DB65535.DBD8", Area::Db(65535), 8, Width::DWord),
            ("DB2.W6", Area::Db(2), 6, Width::Word),
            ("M10.1", Area::Flags, 10, Width::Bit(1)),
            ("MX10.7", Area::Flags, 10, Width::Bit(7)),
            ("MB10", Area::Flags, 10, Width::Byte),
            ("MW20", Area::Flags, 20, Width::Word),
            ("MD24", Area::Flags, 24, Width::DWord),
            ("I0.0", Area::Inputs, 0, Width::Bit(0)),
            ("E1.2", Area::Inputs, 1, Width::Bit(2)),
            ("IW64", Area::Inputs, 64, Width::Word),
            ("EB3", Area::Inputs, 3, Width::Byte),
            ("Q0.1", Area::Outputs, 0, Width::Bit(1)),
            ("A4.0", Area::Outputs, 4, Width::Bit(0)),
            ("QD8", Area::Outputs, 8, Width::DWord),
            ("AW2", Area::Outputs, 2, Width::Word),
            ("C5", Area::Counters, 5, Width::Element),
            ("Z7", Area::Counters, 7, Width::Element),
            ("T3", Area::Timers, 3, Width::Element),
            (" DB 1 . DBX 2 . 7 ", Area::Db(1), 2, Width::Bit(7)),
        ];
        for (text, area, offset, width) in cases {
            assert_eq!(
                p(text),
                Address {
                    area,
                    offset,
                    width
                },
                "{text}"
            );
        }
    }

    #[test]
    fn displays_as_written_by_siemens() {
        for s in [
            "DB1.DBX0.3",
            "DB1.DBB2",
            "DB1.DBW4",
            "DB1.DBD8",
            "M10.1",
            "MB1",
            "MW20",
            "MD4",
            "I0.0",
            "QW2",
            "C5",
            "T3",
        ] {
            assert_eq!(p(s).to_string(), s);
        }
    }

    #[test]
    fn bad_addresses_say_why() {
        let cases = [
            ("", "empty"),
            ("DB0.DBW0", "DB number"),
            ("DB70000.DBW0", "DB number"),
            ("DB1", "needs an item"),
            ("DB1.DBQ0", "is not DBX"),
            ("DB1.DBX0", "needs its bit number"),
            ("DB1.DBX0.8", "bit \"8\""),
            ("DB1.DBW0.1", "only bit addresses"),
            ("M10", "needs its bit number"),
            ("MW-1", "byte offset"),
            ("MW99999999", "byte offset"),
            ("X1.0", "unknown area"),
            ("C-1", "counter address"),
            ("T1.0", "timer address"),
        ];
        for (text, want) in cases {
            let e = text.parse::<Address>().expect_err(text).to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn types_must_fit_the_width() {
        assert!(p("DB1.DBD0").check_type(DataType::Real, 4).is_ok());
        assert!(p("DB1.DBB0").check_type(DataType::Lreal, 8).is_ok());
        assert!(p("DB1.DBD0").check_type(DataType::Lreal, 8).is_ok());
        let e = p("DB1.DBW4").check_type(DataType::Real, 4).unwrap_err();
        assert!(e.contains("write DB1.DBD4"), "{e}");
        let e = p("DB1.DBX4.1").check_type(DataType::Int, 2).unwrap_err();
        assert!(e.contains("DB1.DBB4"), "{e}");
        let e = p("MW4").check_type(DataType::Bool, 1).unwrap_err();
        assert!(e.contains("M4.0"), "{e}");
        assert!(p("C1").check_type(DataType::Counter, 2).is_ok());
        assert!(p("T1").check_type(DataType::Real, 4).is_err());
        assert_eq!(p("C1").default_type(), DataType::Counter);
        assert_eq!(p("T1").default_type(), DataType::S5time);
        assert_eq!(p("MW1").default_type(), DataType::Word);
    }
}
