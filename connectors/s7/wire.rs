//! The S7comm frames, built and parsed without I/O: RFC 1006 TPKT around ISO 8073 COTP
//! (connection request/confirm, data transfer) around S7 PDUs (setup communication, read var,
//! write var), and the S7 error classes and item return codes in operator terms.
//!
//! Layout of a frame on the wire:
//! `TPKT [03 00 len16] · COTP DT [02 F0 80] · S7 header [32 rosctr 0000 ref16 plen16 dlen16
//! (err-class err-code on acks)] · parameters · data`. A read-var parameter block lists items
//! `12 0A 10 ts count16 db16 area addr24` (`addr24` = byte × 8 + bit); each item of the answer
//! is `rc ts len16 data`, padded to an even length before the next item.

use std::fmt;

use super::address::Area;

/// TPKT header + COTP DT header: what precedes every S7 PDU.
pub const FRAME_HEADER: usize = 7;
/// S7 header of a job (request).
pub const JOB_HEADER: usize = 10;
/// S7 header of an acknowledgement (answer), with the error class and code.
pub const ACK_HEADER: usize = 12;
/// One item of a read/write-var parameter block.
pub const ITEM_SPEC: usize = 12;
/// The header of one item in a read answer or write request (`rc ts len16`).
pub const ITEM_HEADER: usize = 4;

const COTP_CR: u8 = 0xE0;
const COTP_CC: u8 = 0xD0;
const COTP_DR: u8 = 0x80;
const COTP_DT: u8 = 0xF0;
const FN_SETUP: u8 = 0xF0;
const FN_READ: u8 = 0x04;
const FN_WRITE: u8 = 0x05;

/// Transport size of a request item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// One bit (writes of BOOL).
    Bit,
    /// Bytes.
    Byte,
    /// Counters (16-bit each).
    Counter,
    /// Timers (16-bit each).
    Timer,
}

impl ItemKind {
    /// The kind used to read or write whole units of `area`.
    pub fn of(area: Area) -> Self {
        match area {
            Area::Counters => ItemKind::Counter,
            Area::Timers => ItemKind::Timer,
            _ => ItemKind::Byte,
        }
    }

    fn code(self) -> u8 {
        match self {
            ItemKind::Bit => 0x01,
            ItemKind::Byte => 0x02,
            ItemKind::Counter => 0x1C,
            ItemKind::Timer => 0x1D,
        }
    }

    /// Transport size of the data part of a write.
    fn data_code(self) -> u8 {
        match self {
            ItemKind::Bit => 0x03,
            ItemKind::Byte => 0x04,
            ItemKind::Counter | ItemKind::Timer => 0x09,
        }
    }
}

/// One item of a read or write: where, how, and how many units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemSpec {
    /// The area (and DB).
    pub area: Area,
    /// Transport size.
    pub kind: ItemKind,
    /// First byte, or counter/timer number.
    pub start: u32,
    /// Bit (for [`ItemKind::Bit`]).
    pub bit: u8,
    /// Units (bytes, or counters/timers; 1 for a bit).
    pub count: u16,
}

impl ItemSpec {
    fn put(&self, out: &mut Vec<u8>) {
        let addr = if self.area.is_numbered() {
            self.start
        } else {
            self.start * 8 + u32::from(self.bit)
        };
        out.extend_from_slice(&[0x12, 0x0A, 0x10, self.kind.code()]);
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.area.db().to_be_bytes());
        out.push(self.area.code());
        out.extend_from_slice(&addr.to_be_bytes()[1..]);
    }
}

/// The two TSAPs of a connection: ours (calling) and the PLC's (called).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tsaps {
    /// Local (calling) TSAP.
    pub local: u16,
    /// Remote (called) TSAP.
    pub remote: u16,
}

impl Tsaps {
    /// The TSAPs snap7 and TIA Portal use for a rack/slot: local 0x0100, remote
    /// `connection type << 8 | rack << 5 | slot` (type 1 = PG, 2 = OP, 3 = S7 basic).
    pub fn rack_slot(connection_type: u8, rack: u8, slot: u8) -> Self {
        Tsaps {
            local: 0x0100,
            remote: u16::from(connection_type) << 8
                | u16::from(rack & 0x7) << 5
                | u16::from(slot & 0x1F),
        }
    }
}

/// Starts a frame in `buf` (cleared): TPKT and COTP DT headers with the length left for
/// [`finish_frame`].
fn begin_frame(buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&[0x03, 0x00, 0, 0, 0x02, COTP_DT, 0x80]);
}

/// Fills in the TPKT length of a frame.
fn finish_frame(buf: &mut [u8]) {
    let len = buf.len() as u16;
    buf[2..4].copy_from_slice(&len.to_be_bytes());
}

/// A COTP connection request frame for `tsaps`, asking for 1024-byte TPDUs.
pub fn connect_request(tsaps: Tsaps) -> Vec<u8> {
    let mut f = vec![0x03, 0x00, 0, 0];
    let params: [u8; 11] = [
        0xC0,
        1,
        0x0A,
        0xC1,
        2,
        (tsaps.local >> 8) as u8,
        tsaps.local as u8,
        0xC2,
        2,
        (tsaps.remote >> 8) as u8,
        tsaps.remote as u8,
    ];
    f.push((6 + params.len()) as u8);
    f.extend_from_slice(&[COTP_CR, 0x00, 0x00, 0x00, 0x01, 0x00]);
    f.extend_from_slice(&params);
    finish_frame(&mut f);
    f
}

/// What a PLC answered to a connection request (the COTP part of a TPKT payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectReply {
    /// Connection confirm.
    Confirm,
    /// Disconnect request: the PLC refused (no such rack/slot or TSAP, no free resource).
    Disconnect(u8),
    /// Something else.
    Other(u8),
}

/// Parses the COTP payload of the answer to a connection request.
pub fn connect_reply(cotp: &[u8]) -> ConnectReply {
    match cotp.get(1).copied() {
        Some(COTP_CC) => ConnectReply::Confirm,
        Some(COTP_DR) => ConnectReply::Disconnect(cotp.get(6).copied().unwrap_or(0)),
        other => ConnectReply::Other(other.unwrap_or(0)),
    }
}

fn job_header(buf: &mut Vec<u8>, pdu_ref: u16, plen: usize, dlen: usize) {
    buf.extend_from_slice(&[0x32, 0x01, 0x00, 0x00]);
    buf.extend_from_slice(&pdu_ref.to_be_bytes());
    buf.extend_from_slice(&(plen as u16).to_be_bytes());
    buf.extend_from_slice(&(dlen as u16).to_be_bytes());
}

/// A setup-communication frame asking for `pdu` bytes.
pub fn setup_request(buf: &mut Vec<u8>, pdu_ref: u16, pdu: u16) {
    begin_frame(buf);
    job_header(buf, pdu_ref, 8, 0);
    buf.extend_from_slice(&[FN_SETUP, 0x00, 0x00, 0x01, 0x00, 0x01]);
    buf.extend_from_slice(&pdu.to_be_bytes());
    finish_frame(buf);
}

/// A read-var frame for `items`.
pub fn read_request(
    buf: &mut Vec<u8>,
    pdu_ref: u16,
    items: impl ExactSizeIterator<Item = ItemSpec>,
) {
    begin_frame(buf);
    let n = items.len();
    job_header(buf, pdu_ref, 2 + ITEM_SPEC * n, 0);
    buf.extend_from_slice(&[FN_READ, n as u8]);
    for it in items {
        it.put(buf);
    }
    finish_frame(buf);
}

/// A write-var frame writing `data` to one item.
pub fn write_request(buf: &mut Vec<u8>, pdu_ref: u16, item: ItemSpec, data: &[u8]) {
    begin_frame(buf);
    job_header(buf, pdu_ref, 2 + ITEM_SPEC, ITEM_HEADER + data.len());
    buf.extend_from_slice(&[FN_WRITE, 1]);
    item.put(buf);
    let len = match item.kind {
        ItemKind::Bit | ItemKind::Byte => {
            data.len() as u16 * if item.kind == ItemKind::Bit { 1 } else { 8 }
        }
        ItemKind::Counter | ItemKind::Timer => data.len() as u16,
    };
    buf.extend_from_slice(&[0x00, item.kind.data_code()]);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(data);
    finish_frame(buf);
}

/// Bytes a read request of `n` items takes.
pub fn read_request_len(n: usize) -> usize {
    JOB_HEADER + 2 + ITEM_SPEC * n
}

/// Bytes the answer to a read of items of `lens` bytes takes at most (each padded to even).
pub fn read_answer_len(lens: impl Iterator<Item = usize>) -> usize {
    ACK_HEADER + 2 + lens.map(|l| ITEM_HEADER + l + (l & 1)).sum::<usize>()
}

/// An S7 PDU as answered (after the TPKT/COTP headers).
#[derive(Debug, Clone, Copy)]
pub struct Ack<'a> {
    /// The PDU reference (echo of the request's).
    pub pdu_ref: u16,
    /// The parameter block.
    pub params: &'a [u8],
    /// The data block.
    pub data: &'a [u8],
}

/// Why an answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The PLC refused the whole request with an error class and code.
    #[error("{}", PlcError(*.0))]
    Refused(u16),
    /// The bytes are not a well-formed answer.
    #[error("malformed answer: {0}")]
    Malformed(String),
}

/// Parses an S7 acknowledgement (ROSCTR 2 or 3) and checks its error class/code.
pub fn parse_ack(pdu: &[u8]) -> Result<Ack<'_>, AnswerError> {
    let bad = |m: &str| AnswerError::Malformed(m.to_string());
    if pdu.len() < ACK_HEADER || pdu[0] != 0x32 {
        return Err(bad("not an S7 acknowledgement"));
    }
    if !matches!(pdu[1], 0x02 | 0x03) {
        return Err(AnswerError::Malformed(format!(
            "unexpected S7 PDU type 0x{:02X}",
            pdu[1]
        )));
    }
    let pdu_ref = u16::from_be_bytes([pdu[4], pdu[5]]);
    let plen = usize::from(u16::from_be_bytes([pdu[6], pdu[7]]));
    let dlen = usize::from(u16::from_be_bytes([pdu[8], pdu[9]]));
    let code = u16::from_be_bytes([pdu[10], pdu[11]]);
    if code != 0 {
        return Err(AnswerError::Refused(code));
    }
    let params = pdu
        .get(ACK_HEADER..ACK_HEADER + plen)
        .ok_or_else(|| bad("parameters cut short"))?;
    let data = pdu
        .get(ACK_HEADER + plen..ACK_HEADER + plen + dlen)
        .ok_or_else(|| bad("data cut short"))?;
    Ok(Ack {
        pdu_ref,
        params,
        data,
    })
}

/// The PDU size the PLC granted in a setup-communication answer.
pub fn setup_answer(ack: &Ack<'_>) -> Result<u16, AnswerError> {
    match ack.params {
        [FN_SETUP, _, _, _, _, _, hi, lo, ..] => Ok(u16::from_be_bytes([*hi, *lo])),
        _ => Err(AnswerError::Malformed(
            "not a setup-communication answer".into(),
        )),
    }
}

/// The items of a read answer, each its data or its return code, in request order.
pub fn read_answer<'a>(
    ack: &Ack<'a>,
    n: usize,
) -> Result<impl Iterator<Item = Result<&'a [u8], ItemError>> + 'a, AnswerError> {
    match ack.params {
        [FN_READ, got, ..] if usize::from(*got) == n => {}
        _ => {
            return Err(AnswerError::Malformed(format!(
                "not a read answer for {n} items"
            )))
        }
    }
    let data = ack.data;
    let mut pos = 0;
    let mut left = n;
    let mut broken = false;
    Ok(std::iter::from_fn(move || {
        if left == 0 || broken {
            return None;
        }
        left -= 1;
        let Some(h) = data.get(pos..pos + ITEM_HEADER) else {
            broken = true;
            return Some(Err(ItemError(0)));
        };
        let (rc, ts) = (h[0], h[1]);
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        pos += ITEM_HEADER;
        if rc != 0xFF {
            return Some(Err(ItemError(rc)));
        }
        // Lengths are in bits except for octet strings, reals and counters/timers in bytes.
        let bytes = match ts {
            0x07 | 0x09 => len,
            _ => len.div_ceil(8),
        };
        let Some(d) = data.get(pos..pos + bytes) else {
            broken = true;
            return Some(Err(ItemError(0)));
        };
        pos += bytes + (bytes & 1);
        Some(Ok(d))
    }))
}

/// The return code of the one item of a write answer.
pub fn write_answer(ack: &Ack<'_>) -> Result<Result<(), ItemError>, AnswerError> {
    match (ack.params, ack.data) {
        ([FN_WRITE, 1, ..], [0xFF, ..]) => Ok(Ok(())),
        ([FN_WRITE, 1, ..], [rc, ..]) => Ok(Err(ItemError(*rc))),
        _ => Err(AnswerError::Malformed("not a write answer".into())),
    }
}

/// An item return code other than success (0xFF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemError(pub u8);

impl ItemError {
    /// The message for an item at `area`.
    pub fn describe(self, area: Area) -> String {
        let what = match self.0 {
            0x01 => "hardware fault in the PLC".to_string(),
            0x03 => format!(
                "access to {area} not allowed: check the PLC's protection level and that \
                 PUT/GET access is enabled"
            ),
            0x05 => match area {
                Area::Db(_) => format!(
                    "address out of range: {area} is shorter than the address, or it has \
                     optimized block access (no absolute addresses; untick \"Optimized block \
                     access\" in the block's properties)"
                ),
                _ => format!("address out of range in {area}"),
            },
            0x06 => "data type not supported".to_string(),
            0x07 => "data type inconsistent".to_string(),
            0x0A => match area {
                Area::Db(_) => format!(
                    "object does not exist: {area} is not in the PLC, or it has optimized \
                     block access (no absolute addresses; untick \"Optimized block access\" \
                     in the block's properties)"
                ),
                _ => format!("object does not exist: {area}"),
            },
            0 => "the answer for the item was cut short".to_string(),
            _ => "refused".to_string(),
        };
        format!("{what} (item return code 0x{:02X})", self.0)
    }
}

/// An S7 error class and code in operator terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlcError(pub u16);

impl fmt::Display for PlcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self.0 {
            0x8104 => {
                "PUT/GET access not enabled in the PLC's protection settings (S7-1200/1500: \
                 tick \"Permit access with PUT/GET communication from remote partner\"), or \
                 the service is not supported"
            }
            0xD0A1 | 0x8703 => {
                "function not permitted in the PLC's current protection level (a password is \
                 set, or PUT/GET access is not enabled)"
            }
            0x8500 => "the request does not fit the negotiated PDU size",
            0x8404 => "the PLC could not perform the function (wrong address or area?)",
            0x8701 => "address error: the area is too short or does not exist",
            0x8702 => "the service is not supported by the PLC",
            0xD081 => "function not permitted in the PLC's current operating mode",
            0x8301 | 0x8302 => "the PLC lacks resources for the request",
            _ => {
                return write!(
                    f,
                    "the PLC refused the request: {} (error class 0x{:02X}, code 0x{:02X})",
                    class_text(self.0 >> 8),
                    self.0 >> 8,
                    self.0 & 0xFF
                )
            }
        };
        write!(f, "{text} (S7 error 0x{:04X})", self.0)
    }
}

fn class_text(class: u16) -> &'static str {
    match class {
        0x81 => "application relationship error",
        0x82 => "object definition error",
        0x83 => "no resources available",
        0x84 => "error on service processing",
        0x85 => "error on supplies",
        0x87 => "access error",
        0xD0 | 0xD4 | 0xD6 => "parameter error",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_request_carries_the_tsaps() {
        let t = Tsaps::rack_slot(1, 0, 2);
        assert_eq!(t.remote, 0x0102);
        let f = connect_request(t);
        assert_eq!(&f[..4], &[3, 0, 0, 22]);
        assert_eq!(f[4] as usize, f.len() - 5);
        assert_eq!(&f[5..6], &[0xE0]);
        assert_eq!(&f[f.len() - 4..], &[0xC2, 2, 0x01, 0x02]);
        assert_eq!(Tsaps::rack_slot(3, 1, 3).remote, 0x0323);
    }

    #[test]
    fn read_request_layout() {
        let mut buf = Vec::new();
        let item = ItemSpec {
            area: Area::Db(1),
            kind: ItemKind::Byte,
            start: 6,
            bit: 0,
            count: 4,
        };
        read_request(&mut buf, 7, [item].into_iter());
        assert_eq!(
            buf,
            vec![
                3, 0, 0, 31, 2, 0xF0, 0x80, 0x32, 1, 0, 0, 0, 7, 0, 14, 0, 0, 4, 1, 0x12, 0x0A,
                0x10, 2, 0, 4, 0, 1, 0x84, 0, 0, 48
            ]
        );
        assert_eq!(buf.len() - FRAME_HEADER, read_request_len(1));
    }

    #[test]
    fn bit_write_layout() {
        let mut buf = Vec::new();
        let item = ItemSpec {
            area: Area::Flags,
            kind: ItemKind::Bit,
            start: 10,
            bit: 3,
            count: 1,
        };
        write_request(&mut buf, 1, item, &[1]);
        let s7 = &buf[FRAME_HEADER..];
        assert_eq!(
            &s7[12..24],
            &[0x12, 0x0A, 0x10, 1, 0, 1, 0, 0, 0x83, 0, 0, 83]
        );
        assert_eq!(&s7[24..], &[0, 3, 0, 1, 1]);
    }

    #[test]
    fn read_answers_with_padding_and_refused_items() {
        let pdu = [
            0x32, 3, 0, 0, 0, 9, 0, 2, 0, 16, 0, 0, // header
            4, 3, // params
            0xFF, 4, 0, 8, 0xAB, 0, // 1 byte, padded
            0x0A, 0, 0, 0, // refused
            0xFF, 9, 0, 2, 0x12, 0x34, // counter, length in bytes
        ];
        let ack = parse_ack(&pdu).unwrap();
        assert_eq!(ack.pdu_ref, 9);
        let items: Vec<_> = read_answer(&ack, 3).unwrap().collect();
        assert_eq!(
            items,
            vec![Ok(&[0xAB][..]), Err(ItemError(0x0A)), Ok(&[0x12, 0x34][..])]
        );
        assert!(read_answer(&ack, 2).is_err());
        assert!(ItemError(0x0A).describe(Area::Db(4)).contains("DB4"));
    }

    #[test]
    fn refused_requests_name_the_cause() {
        let pdu = [0x32, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0x81, 0x04];
        let e = parse_ack(&pdu).unwrap_err();
        assert_eq!(e, AnswerError::Refused(0x8104));
        assert!(e.to_string().contains("PUT/GET"), "{e}");
        assert!(PlcError(0x8209).to_string().contains("object definition"));
        assert!(parse_ack(&[0x32, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
