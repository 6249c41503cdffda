//! Variable-length data (DIF data field `0xD`): the LVAR byte that precedes the data says
//! how long it is and how to read it (EN 13757-3:2018, "coding of LVAR").
//!
//! | LVAR | data |
//! |---|---|
//! | `00`–`BF` | text of LVAR characters, sent last character first |
//! | `C0`–`C9` | positive BCD number of (LVAR − C0) · 2 digits |
//! | `D0`–`D9` | negative BCD number of (LVAR − D0) · 2 digits |
//! | `E0`–`EF` | binary number of (LVAR − E0) bytes |
//! | `F0`–`F4` | binary number of 4 · (LVAR − EC) bytes |
//! | `F5`, `F6` | binary number of 48, 64 bytes |
//! | `F7`–`FF` | reserved |
//!
//! Text whose bytes are not printable ASCII is shown as hex bytes, never as garbled text;
//! numbers of at most 8 bytes become numbers (scaled by the record's VIF), longer ones hex.

use super::record::{bcd_le, int_le, RecordValue};

/// What an LVAR byte announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lvar {
    /// Text of this many bytes.
    Text(usize),
    /// A positive BCD number of this many bytes (two digits each).
    PositiveBcd(usize),
    /// A negative BCD number of this many bytes.
    NegativeBcd(usize),
    /// A binary number of this many bytes.
    Binary(usize),
}

impl Lvar {
    /// Reads an LVAR byte; `None` for the reserved codes (`CA`–`CF`, `DA`–`DF`, `F7`–`FF`).
    pub fn parse(b: u8) -> Option<Lvar> {
        Some(match b {
            0x00..=0xBF => Lvar::Text(usize::from(b)),
            0xC0..=0xC9 => Lvar::PositiveBcd(usize::from(b - 0xC0)),
            0xD0..=0xD9 => Lvar::NegativeBcd(usize::from(b - 0xD0)),
            0xE0..=0xEF => Lvar::Binary(usize::from(b - 0xE0)),
            0xF0..=0xF4 => Lvar::Binary(4 * usize::from(b - 0xEC)),
            0xF5 => Lvar::Binary(48),
            0xF6 => Lvar::Binary(64),
            _ => return None,
        })
    }

    /// The number of data bytes that follow.
    pub fn len(self) -> usize {
        match self {
            Lvar::Text(n) | Lvar::PositiveBcd(n) | Lvar::NegativeBcd(n) | Lvar::Binary(n) => n,
        }
    }

    /// True when no data follows.
    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The value of `raw` (telegram order, `len()` bytes); numbers unscaled.
    pub fn value(self, raw: &[u8]) -> RecordValue<'_> {
        let hex = RecordValue::Bytes {
            bytes: raw,
            reversed: true,
        };
        match self {
            Lvar::Text(_) if printable(raw) => RecordValue::Text(raw),
            Lvar::Text(_) => hex,
            Lvar::PositiveBcd(n) if n <= 9 => RecordValue::Number(bcd_digits(raw) as f64),
            Lvar::NegativeBcd(n) if n <= 9 => RecordValue::Number(-(bcd_digits(raw) as f64)),
            Lvar::Binary(n) if (1..=8).contains(&n) => RecordValue::Number(int_le(raw) as f64),
            _ => hex,
        }
    }
}

/// True when `text` (sent last character first) is printable ASCII, allowing NUL padding at
/// either end (meters pad fixed-size fields with it).
pub fn printable(text: &[u8]) -> bool {
    let inner = {
        let start = text.iter().position(|&c| c != 0).unwrap_or(text.len());
        let end = text.iter().rposition(|&c| c != 0).map_or(start, |e| e + 1);
        &text[start..end]
    };
    inner.iter().all(|&c| (0x20..0x7F).contains(&c))
}

/// The digits of a BCD number (least significant byte first, at most 9 bytes); the sign
/// comes from the LVAR range.
fn bcd_digits(raw: &[u8]) -> i64 {
    let mut buf = [0u8; 9];
    let n = raw.len().min(buf.len());
    buf[..n].copy_from_slice(&raw[..n]);
    // Mask a sign nibble `F` a meter may still put in front; the LVAR range decides.
    if n > 0 && buf[n - 1] >> 4 == 0xF {
        buf[n - 1] &= 0x0F;
    }
    bcd_le(&buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_has_its_length() {
        assert_eq!(Lvar::parse(0x00), Some(Lvar::Text(0)));
        assert_eq!(Lvar::parse(0x05), Some(Lvar::Text(5)));
        assert_eq!(Lvar::parse(0xBF), Some(Lvar::Text(191)));
        assert_eq!(Lvar::parse(0xC0), Some(Lvar::PositiveBcd(0)));
        assert_eq!(Lvar::parse(0xC9), Some(Lvar::PositiveBcd(9)));
        assert_eq!(Lvar::parse(0xCA), None);
        assert_eq!(Lvar::parse(0xCF), None);
        assert_eq!(Lvar::parse(0xD3), Some(Lvar::NegativeBcd(3)));
        assert_eq!(Lvar::parse(0xDA), None);
        assert_eq!(Lvar::parse(0xE0), Some(Lvar::Binary(0)));
        assert_eq!(Lvar::parse(0xEF), Some(Lvar::Binary(15)));
        assert_eq!(Lvar::parse(0xF0), Some(Lvar::Binary(16)));
        assert_eq!(Lvar::parse(0xF4), Some(Lvar::Binary(32)));
        assert_eq!(Lvar::parse(0xF5), Some(Lvar::Binary(48)));
        assert_eq!(Lvar::parse(0xF6), Some(Lvar::Binary(64)));
        for b in 0xF7..=0xFF {
            assert_eq!(Lvar::parse(b), None, "{b:02X}");
        }
        assert!(Lvar::Text(0).is_empty() && !Lvar::Binary(1).is_empty());
    }

    #[test]
    fn text_is_text_only_when_printable() {
        // "1.6.3" sent last character first.
        let t = Lvar::Text(5).value(b"3.6.1");
        assert_eq!(t, RecordValue::Text(b"3.6.1"));
        assert_eq!(t.text().as_deref(), Some("1.6.3"));
        // An AES key is no text: hex, most significant (last sent) byte first.
        let key = [0x0A, 0xB3, 0xED, 0x14];
        let v = Lvar::Text(4).value(&key);
        assert_eq!(v.text().as_deref(), Some("14 ED B3 0A"));
        // Latin-1 or UTF-8 bytes are not ASCII: hex rather than mojibake.
        assert_eq!(
            Lvar::Text(2).value(&[0xB0, 0xC2]).text().as_deref(),
            Some("C2 B0")
        );
        // NUL padding does not make text binary.
        assert_eq!(
            Lvar::Text(4).value(b"\0BA\0").text().as_deref(),
            Some(" AB ")
        );
        assert!(printable(b""));
        assert!(!printable(b"A\x01B"));
        assert!(!printable(b"A\x7FB"));
    }

    #[test]
    fn bcd_ranges_carry_their_sign() {
        assert_eq!(
            Lvar::PositiveBcd(3).value(&[0x56, 0x34, 0x12]),
            RecordValue::Number(123456.0)
        );
        assert_eq!(
            Lvar::NegativeBcd(2).value(&[0x21, 0x43]),
            RecordValue::Number(-4321.0)
        );
        // A sign nibble does not turn a negative range positive.
        assert_eq!(
            Lvar::NegativeBcd(2).value(&[0x21, 0xF3]),
            RecordValue::Number(-321.0)
        );
        assert_eq!(Lvar::PositiveBcd(0).value(&[]), RecordValue::Number(0.0));
    }

    #[test]
    fn binary_numbers_up_to_eight_bytes_are_numbers() {
        assert_eq!(
            Lvar::Binary(2).value(&[0x34, 0x12]),
            RecordValue::Number(4660.0)
        );
        assert_eq!(Lvar::Binary(1).value(&[0xFF]), RecordValue::Number(-1.0));
        let long = [0x11u8; 16];
        assert_eq!(
            Lvar::Binary(16).value(&long),
            RecordValue::Bytes {
                bytes: &long,
                reversed: true
            }
        );
        assert!(matches!(
            Lvar::Binary(0).value(&[]),
            RecordValue::Bytes { .. }
        ));
    }
}
