//! Wired M-Bus link-layer frames (EN 13757-2): parsing and building the four frame formats.
//!
//! - single character: `E5` (ACK);
//! - short frame: `10 C A CS 16` (SND_NKE, REQ_UD1, REQ_UD2);
//! - control frame: `68 03 03 68 C A CI CS 16`;
//! - long frame: `68 L L 68 C A CI data… CS 16` (RSP_UD, SND_UD), `L` = 3 + data length.
//!
//! [`parse`] checks start and stop bytes, both lengths and the checksum and borrows the user
//! data; [`frame_len`] tells a reader how many bytes a frame being received needs. What the
//! user data of an RSP_UD means is decoded by [`super::record`].

/// The single-character acknowledgement.
pub const ACK: u8 = 0xE5;
/// Start of a short frame.
pub const SHORT_START: u8 = 0x10;
/// Start of a control or long frame.
pub const LONG_START: u8 = 0x68;
/// Stop byte of every frame but the ACK.
pub const STOP: u8 = 0x16;

/// C field: SND_NKE (initialise the slave's link layer).
pub const C_SND_NKE: u8 = 0x40;
/// C field: SND_UD (send user data, FCV set).
pub const C_SND_UD: u8 = 0x53;
/// C field: REQ_UD2 (request class 2 data, FCV set; OR [`FCB`] to toggle).
pub const C_REQ_UD2: u8 = 0x5B;
/// C field: REQ_UD1 (request class 1 data).
pub const C_REQ_UD1: u8 = 0x5A;
/// C field: RSP_UD (response with user data).
pub const C_RSP_UD: u8 = 0x08;
/// The frame count bit of a master's C field.
pub const FCB: u8 = 0x20;

/// The primary address that selects the slave chosen by secondary addressing.
pub const ADDR_SELECTED: u8 = 0xFD;
/// The broadcast address whose frames every slave answers (only use with one slave).
pub const ADDR_BROADCAST_REPLY: u8 = 0xFE;
/// The broadcast address no slave answers.
pub const ADDR_BROADCAST: u8 = 0xFF;

/// Largest user data of a long frame (L is one byte, minus C, A and CI).
pub const MAX_DATA: usize = 252;

/// One parsed link-layer frame; a long frame borrows its user data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// The single character `E5`.
    Ack,
    /// A short frame.
    Short {
        /// C field.
        control: u8,
        /// A field.
        address: u8,
    },
    /// A control frame (a long frame without data).
    Control {
        /// C field.
        control: u8,
        /// A field.
        address: u8,
        /// CI field.
        ci: u8,
    },
    /// A long frame.
    Long {
        /// C field.
        control: u8,
        /// A field.
        address: u8,
        /// CI field.
        ci: u8,
        /// The user data after CI.
        data: &'a [u8],
    },
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Nothing at all.
    #[error("empty input")]
    Empty,
    /// The first byte starts no frame.
    #[error("byte 0x{0:02X} starts no frame (expected E5, 10 or 68)")]
    BadStart(u8),
    /// The frame ends before its length says.
    #[error("truncated frame: {need} bytes needed, {got} present")]
    Truncated {
        /// Bytes the header announces.
        need: usize,
        /// Bytes present.
        got: usize,
    },
    /// The two length bytes differ or announce less than C, A and CI.
    #[error("wrong length field: L1=0x{0:02X}, L2=0x{1:02X} (they must be equal and at least 3)")]
    BadLength(u8, u8),
    /// The second start byte of a long frame is not 68.
    #[error("second start byte is 0x{0:02X}, expected 0x68")]
    BadSecondStart(u8),
    /// The checksum does not match.
    #[error("bad checksum: frame has 0x{got:02X}, computed 0x{want:02X}")]
    Checksum {
        /// The checksum in the frame.
        got: u8,
        /// The sum of the checked bytes.
        want: u8,
    },
    /// The stop byte is not 16.
    #[error("stop byte is 0x{0:02X}, expected 0x16")]
    BadStop(u8),
    /// Bytes after a complete frame.
    #[error("{0} byte(s) left over after the frame")]
    Trailing(usize),
}

/// How many bytes the frame starting `buf` has in all, once enough of it is known: `Ok(None)`
/// while the header is incomplete, `Err` when `buf` does not start a frame.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    match buf.first() {
        None => Ok(None),
        Some(&ACK) => Ok(Some(1)),
        Some(&SHORT_START) => Ok(Some(5)),
        Some(&LONG_START) => {
            if buf.len() < 3 {
                return Ok(None);
            }
            if buf[1] != buf[2] || buf[1] < 3 {
                return Err(FrameError::BadLength(buf[1], buf[2]));
            }
            Ok(Some(buf[1] as usize + 6))
        }
        Some(&b) => Err(FrameError::BadStart(b)),
    }
}

/// The arithmetic sum of `bytes` without carry.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

/// Parses exactly one frame: bytes left over are an error.
pub fn parse(buf: &[u8]) -> Result<Frame<'_>, FrameError> {
    let (frame, used) = parse_prefix(buf)?;
    if used < buf.len() {
        return Err(FrameError::Trailing(buf.len() - used));
    }
    Ok(frame)
}

/// Parses the frame at the start of `buf`; returns it and the bytes it used.
pub fn parse_prefix(buf: &[u8]) -> Result<(Frame<'_>, usize), FrameError> {
    let len = frame_len(buf)?.ok_or(FrameError::Truncated {
        need: 3,
        got: buf.len(),
    })?;
    if buf.is_empty() {
        return Err(FrameError::Empty);
    }
    if buf.len() < len {
        return Err(FrameError::Truncated {
            need: len,
            got: buf.len(),
        });
    }
    let f = &buf[..len];
    let frame = match f[0] {
        ACK => Frame::Ack,
        SHORT_START => {
            check_tail(&f[1..3], f[3], f[4])?;
            Frame::Short {
                control: f[1],
                address: f[2],
            }
        }
        _ => {
            if f[3] != LONG_START {
                return Err(FrameError::BadSecondStart(f[3]));
            }
            let body = &f[4..len - 2];
            check_tail(body, f[len - 2], f[len - 1])?;
            let (control, address, ci) = (body[0], body[1], body[2]);
            if body.len() == 3 {
                Frame::Control {
                    control,
                    address,
                    ci,
                }
            } else {
                Frame::Long {
                    control,
                    address,
                    ci,
                    data: &body[3..],
                }
            }
        }
    };
    Ok((frame, len))
}

fn check_tail(summed: &[u8], cs: u8, stop: u8) -> Result<(), FrameError> {
    let want = checksum(summed);
    if cs != want {
        return Err(FrameError::Checksum { got: cs, want });
    }
    if stop != STOP {
        return Err(FrameError::BadStop(stop));
    }
    Ok(())
}

impl Frame<'_> {
    /// What kind of frame this is, by its C field (`"RSP_UD"`, `"REQ_UD2"`, …).
    pub fn kind(&self) -> &'static str {
        let c = match self {
            Frame::Ack => return "ACK",
            Frame::Short { control, .. }
            | Frame::Control { control, .. }
            | Frame::Long { control, .. } => *control,
        };
        if c & 0x40 == 0 {
            // Slave to master: the ACD/DFC bits may be set.
            return match c & 0x0F {
                0x08 => "RSP_UD",
                0x00 => "ACK",
                _ => "unknown",
            };
        }
        match c & !FCB {
            C_SND_NKE => "SND_NKE",
            C_SND_UD => "SND_UD",
            C_REQ_UD2 => "REQ_UD2",
            C_REQ_UD1 => "REQ_UD1",
            _ => "unknown",
        }
    }

    /// Writes the frame's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Frame::Ack => out.push(ACK),
            Frame::Short { control, address } => {
                out.extend_from_slice(&[
                    SHORT_START,
                    control,
                    address,
                    control.wrapping_add(address),
                    STOP,
                ]);
            }
            Frame::Control {
                control,
                address,
                ci,
            } => encode_long(out, control, address, ci, &[]),
            Frame::Long {
                control,
                address,
                ci,
                data,
            } => encode_long(out, control, address, ci, data),
        }
    }

    /// The frame's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        self.encode(&mut v);
        v
    }
}

fn encode_long(out: &mut Vec<u8>, control: u8, address: u8, ci: u8, data: &[u8]) {
    // A longer payload cannot be framed; callers build data of at most MAX_DATA bytes.
    let data = &data[..data.len().min(MAX_DATA)];
    let l = (data.len() + 3) as u8;
    out.extend_from_slice(&[LONG_START, l, l, LONG_START, control, address, ci]);
    out.extend_from_slice(data);
    let cs = checksum(&[control, address, ci]).wrapping_add(checksum(data));
    out.extend_from_slice(&[cs, STOP]);
}

/// Parses hex text (`"68 0C 0C 68 …"`, with or without spaces, colons or line breaks) into
/// bytes.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b':' && *b != b',')
        .collect();
    // Each space-separated token must be whole bytes, so "D 04" is refused rather than
    // re-paired.
    for tok in text.split(|c: char| c.is_ascii_whitespace() || c == ':' || c == ',') {
        if tok.len() % 2 != 0 {
            return Err(format!("\"{tok}\" is not a whole number of hex bytes"));
        }
    }
    if digits.len() % 2 != 0 {
        return Err("odd number of hex digits".into());
    }
    digits
        .chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).map_err(|_| "not hex".to_string())?;
            u8::from_str_radix(s, 16).map_err(|_| format!("\"{s}\" is not a hex byte"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_each_format() {
        assert_eq!(parse(&[0xE5]), Ok(Frame::Ack));
        assert_eq!(
            parse(&[0x10, 0x5B, 0x01, 0x5C, 0x16]),
            Ok(Frame::Short {
                control: 0x5B,
                address: 1
            })
        );
        let f = Frame::Long {
            control: 0x53,
            address: 0xFD,
            ci: 0x52,
            data: &[0x78, 0x56, 0x34, 0x12, 0xFF, 0xFF, 0xFF, 0xFF],
        };
        let b = f.to_bytes();
        assert_eq!(parse(&b), Ok(f));
        assert_eq!(f.kind(), "SND_UD");
        let c = Frame::Control {
            control: 0x08,
            address: 1,
            ci: 0x70,
        };
        assert_eq!(parse(&c.to_bytes()), Ok(c));
    }

    #[test]
    fn rejects_broken_frames() {
        assert_eq!(
            parse(&[0x10, 0x5B, 0x01, 0x5D, 0x16]),
            Err(FrameError::Checksum {
                got: 0x5D,
                want: 0x5C
            })
        );
        assert!(matches!(
            parse(&[0x68, 0x00, 0x00, 0x68, 0x08, 0x16]),
            Err(FrameError::BadLength(0, 0))
        ));
        assert!(matches!(
            parse(&[0x68, 0x04, 0x05, 0x68]),
            Err(FrameError::BadLength(4, 5))
        ));
        assert!(matches!(
            parse(&[0x10, 0x5B, 0x01]),
            Err(FrameError::Truncated { need: 5, got: 3 })
        ));
        assert_eq!(parse(&[0xE5, 0xE5]), Err(FrameError::Trailing(1)));
        assert_eq!(
            parse(&[0x10, 0x5B, 0x01, 0x5C, 0x17]),
            Err(FrameError::BadStop(0x17))
        );
        assert_eq!(parse(&[0x42]), Err(FrameError::BadStart(0x42)));
        assert_eq!(parse(&[]), Err(FrameError::Truncated { need: 3, got: 0 }));
    }

    #[test]
    fn hex_text() {
        assert_eq!(parse_hex("68 0a\nE5"), Ok(vec![0x68, 0x0A, 0xE5]));
        assert!(parse_hex("D 04 04").is_err());
        assert!(parse_hex("zz").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
            let _ = frame_len(&bytes);
        }

        #[test]
        fn long_frames_round_trip(c in any::<u8>(), a in any::<u8>(), ci in any::<u8>(),
                                  data in proptest::collection::vec(any::<u8>(), 1..252)) {
            let f = Frame::Long { control: c, address: a, ci, data: &data };
            let b = f.to_bytes();
            prop_assert_eq!(parse(&b), Ok(f));
        }
    }
}
