//! The data field of a record (EN 13757-3 annex A): integers of 1–8 bytes (type B), BCD
//! (type A), Real32 (type H), and dates and times of types F, G, I and J. Numbers come back
//! unscaled; [`super::record`] scales them by the VIF. Variable-length data is
//! [`super::lvar`]'s.

use super::record::RecordValue;

/// A calendar date or date and time as the meter sent it (fields not range-checked: meters
/// send `00` for "not set").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Year (full); 0 for a time of day alone (type J).
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
        if let (0, Some((h, m, s))) = (self.year, self.time) {
            // Type J: a time of day alone.
            return write!(f, "{h:02}:{m:02}:{s:02}");
        }
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)?;
        if let Some((h, m, s)) = self.time {
            write!(f, "T{h:02}:{m:02}:{s:02}Z")?;
        }
        Ok(())
    }
}

/// Decodes the data field; numbers are returned unscaled.
pub(crate) fn decode_value<'a>(
    coding: u8,
    raw: &'a [u8],
    msb: bool,
    vif: u8,
    vife0: Option<u8>,
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
        0x3 if vif & 0x7F == 0x6D => RecordValue::Date(time_j(le)),
        0x4 if is_datetime => RecordValue::Date(date_f(le)),
        0x6 if is_datetime => RecordValue::Date(date_i(le)),
        0x1 | 0x2 | 0x3 | 0x4 | 0x6 | 0x7 => RecordValue::Number(int_le(le) as f64),
        0x5 => RecordValue::Number(f64::from(f32::from_le_bytes([le[0], le[1], le[2], le[3]]))),
        0x9 | 0xA | 0xB | 0xC | 0xE => RecordValue::Number(bcd_le(le) as f64),
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

/// Type J: time of day to the second (3 bytes), without a date.
fn time_j(b: &[u8]) -> DateTime {
    DateTime {
        year: 0,
        month: 0,
        day: 0,
        time: Some((b[2] & 0x1F, b[1] & 0x3F, b[0] & 0x3F)),
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
