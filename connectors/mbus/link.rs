//! The M-Bus link layer (EN 13757-2) over a serial port (8E1) or a TCP level converter:
//! SND_NKE and its `E5`, secondary selection (SND_UD, CI 0x52, wildcards), REQ_UD2 with the
//! frame count bit toggled per telegram, multi-telegram readouts, per-request timeouts and
//! retries, and the idle time the bus needs between frames at its baud rate.
//!
//! [`Link`] owns one connection and is used by one task (the connector's line, or a CLI
//! command); the poller turns the telegrams it returns into readings, [`scan_primary`] and [`scan_secondary`] find meters.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout, Instant};

use super::frame::{self, Frame, FrameError};
use super::record;

/// How to reach the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A serial port at a baud rate (8 data bits, 1 stop bit, even parity unless told).
    Serial {
        /// The device path.
        port: String,
        /// The baud rate.
        baud: u32,
        /// Even parity (M-Bus); `false` for none (converters that add it themselves, ptys).
        even_parity: bool,
    },
    /// A TCP level converter in transparent mode, `host:port`.
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Serial { port, baud, .. } => write!(f, "serial {port} at {baud} baud"),
            Endpoint::Tcp(a) => write!(f, "tcp {a}"),
        }
    }
}

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The connection could not be opened or broke.
    #[error("{0}")]
    Io(String),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An answer that is no valid frame (a collision, noise, a broken meter).
    #[error("garbled answer: {0}")]
    Garbled(FrameError),
    /// A valid frame that is not the expected answer.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// The meter answered with an application error or malformed user data.
    #[error("{0}")]
    Decode(#[from] record::DecodeError),
}

impl LinkError {
    /// A stable label of the kind of failure, for the kit's "log once per change".
    pub fn kind(&self) -> &'static str {
        match self {
            LinkError::Io(_) => "io",
            LinkError::Timeout(_) => "timeout",
            LinkError::Garbled(_) => "garbled",
            LinkError::Unexpected(_) => "unexpected",
            LinkError::Decode(e) => e.kind(),
        }
    }
}

/// A secondary address with wildcards: 8 id digits (`F` = any), manufacturer, version and
/// medium (`None` = any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secondary {
    /// Id digits, most significant first; 0x0F is a wildcard.
    pub id: [u8; 8],
    /// Manufacturer (packed), or any.
    pub manufacturer: Option<u16>,
    /// Version, or any.
    pub version: Option<u8>,
    /// Medium, or any.
    pub medium: Option<u8>,
}

impl Secondary {
    /// Every meter.
    pub const ANY: Secondary = Secondary {
        id: [0x0F; 8],
        manufacturer: None,
        version: None,
        medium: None,
    };

    /// Parses `12345678` or `1234FFFF` (id only, `F`/`*` wildcards) or the 16-hex-digit
    /// libmbus form `IIIIIIIIMMMMVVMM` (id, manufacturer, version, medium; `F`s for any).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || {
            format!("secondary address \"{s}\": expected 8 id digits (F or * as wildcards) or 16 hex digits (id, manufacturer, version, medium)")
        };
        if s.len() != 8 && s.len() != 16 {
            return Err(bad());
        }
        let mut id = [0u8; 8];
        for (i, c) in s[..8].chars().enumerate() {
            id[i] = match c {
                '0'..='9' => c as u8 - b'0',
                'F' | 'f' | '*' => 0x0F,
                _ => return Err(bad()),
            };
        }
        let mut sec = Secondary {
            id,
            ..Secondary::ANY
        };
        if s.len() == 16 {
            let hex = |r: std::ops::Range<usize>| u32::from_str_radix(&s[r], 16).map_err(|_| bad());
            let man = hex(8..12)? as u16;
            let ver = hex(12..14)? as u8;
            let med = hex(14..16)? as u8;
            sec.manufacturer = (man != 0xFFFF).then_some(man);
            sec.version = (ver != 0xFF).then_some(ver);
            sec.medium = (med != 0xFF).then_some(med);
        }
        Ok(sec)
    }

    /// The 8 bytes of a selection SND_UD (CI 0x52): id BCD least significant first, then
    /// manufacturer, version, medium.
    pub fn select_bytes(&self) -> [u8; 8] {
        let mut b = [0xFF; 8];
        for (i, byte) in b.iter_mut().take(4).enumerate() {
            *byte = (self.id[6 - 2 * i] << 4) | self.id[7 - 2 * i];
        }
        let man = self.manufacturer.unwrap_or(0xFFFF).to_le_bytes();
        b[4] = man[0];
        b[5] = man[1];
        b[6] = self.version.unwrap_or(0xFF);
        b[7] = self.medium.unwrap_or(0xFF);
        b
    }

    /// Whether a meter with this header matches (for responders and tests).
    pub fn matches(&self, id: [u8; 4], manufacturer: u16, version: u8, medium: u8) -> bool {
        let want = self.select_bytes();
        let id_ok = (0..4).all(|i| {
            let (w, g) = (want[i], id[i]);
            (w >> 4 == 0x0F || w >> 4 == g >> 4) && (w & 0x0F == 0x0F || w & 0x0F == g & 0x0F)
        });
        id_ok
            && self.manufacturer.is_none_or(|m| m == manufacturer)
            && self.version.is_none_or(|v| v == version)
            && self.medium.is_none_or(|m| m == medium)
    }
}

impl std::fmt::Display for Secondary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for d in self.id {
            write!(f, "{}", if d > 9 { 'F' } else { char::from(b'0' + d) })?;
        }
        Ok(())
    }
}

/// How a device is addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address {
    /// Primary address 0–250.
    Primary(u8),
    /// Secondary address (selected before each readout, then addressed as 0xFD).
    Secondary(Secondary),
}

/// What a selection got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Nobody answered.
    Nobody,
    /// One clean `E5`.
    One,
    /// Garbled or several answers: more than one meter matched.
    Collision,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Timing of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Time to wait for the first byte of an answer.
    pub timeout: Duration,
    /// Extra attempts of a request that got no (valid) answer.
    pub retries: u32,
    /// Baud rate of the bus (also behind a TCP converter), for frame and idle times.
    pub baud: u32,
}

impl Timing {
    /// Time for `n` characters on the bus (11 bits each: start, 8 data, parity, stop).
    pub fn chars(&self, n: usize) -> Duration {
        Duration::from_micros((n as u64 * 11 * 1_000_000) / u64::from(self.baud.max(1)))
    }

    /// Idle time before the master sends again (33 bit times, EN 13757-2).
    pub fn idle(&self) -> Duration {
        Duration::from_micros(33 * 1_000_000 / u64::from(self.baud.max(1)))
    }

    /// The longest gap between two characters of one frame (a few character times, at least
    /// 50 ms for converters that send in chunks).
    pub fn char_gap(&self) -> Duration {
        self.chars(4).max(Duration::from_millis(50))
    }
}

/// One connection to a bus.
pub struct Link {
    endpoint: Endpoint,
    timing: Timing,
    io: Option<Box<dyn Io>>,
    last_rx: Option<Instant>,
    buf: Vec<u8>,
}

impl Link {
    /// A link to `endpoint`, opened on first use.
    pub fn new(endpoint: Endpoint, timing: Timing) -> Self {
        Link {
            endpoint,
            timing,
            io: None,
            last_rx: None,
            buf: Vec::with_capacity(261),
        }
    }

    /// The link's timing.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Closes the connection (opened again on next use).
    pub fn close(&mut self) {
        self.io = None;
    }

    async fn open(&mut self) -> Result<&mut Box<dyn Io>, LinkError> {
        if self.io.is_none() {
            let io: Box<dyn Io> = match &self.endpoint {
                Endpoint::Serial {
                    port,
                    baud,
                    even_parity,
                } => Box::new(open_serial(port, *baud, *even_parity)?),
                Endpoint::Tcp(addr) => {
                    let s = timeout(
                        self.timing.timeout.max(Duration::from_secs(1)),
                        tokio::net::TcpStream::connect(addr),
                    )
                    .await
                    .map_err(|_| LinkError::Io(format!("connect to {addr}: timed out")))?
                    .map_err(|e| LinkError::Io(format!("connect to {addr}: {e}")))?;
                    let _ = s.set_nodelay(true);
                    Box::new(s)
                }
            };
            self.io = Some(io);
        }
        Ok(self.io.as_mut().expect("opened above"))
    }

    /// Sends `f` after the bus has been idle long enough, dropping stale input first.
    async fn send(&mut self, f: &Frame<'_>) -> Result<(), LinkError> {
        if let Some(at) = self.last_rx {
            tokio::time::sleep_until(at + self.timing.idle()).await;
        }
        let bytes = f.to_bytes();
        let io = self.open().await?;
        // Stale bytes (a late answer to an earlier request) would be taken for the answer.
        let mut junk = [0u8; 64];
        while let Ok(Ok(n)) = timeout(Duration::ZERO, io.read(&mut junk)).await {
            if n == 0 {
                break;
            }
        }
        let res = io.write_all(&bytes).await.and(io.flush().await);
        if let Err(e) = res {
            self.close();
            return Err(LinkError::Io(format!("write: {e}")));
        }
        Ok(())
    }

    /// Receives one frame into `self.buf`: the first byte within the timeout (plus the time
    /// our own frame takes on the bus), the others each within [`Timing::char_gap`].
    async fn recv(&mut self, sent_len: usize) -> Result<(), LinkError> {
        self.buf.clear();
        let first = self.timing.timeout + self.timing.chars(sent_len);
        let gap = self.timing.char_gap();
        let Some(io) = self.io.as_mut() else {
            return Err(LinkError::Io("not connected".into()));
        };
        let mut chunk = [0u8; 300];
        loop {
            let wait = if self.buf.is_empty() { first } else { gap };
            let n = match timeout(wait, io.read(&mut chunk)).await {
                Err(_) if self.buf.is_empty() => return Err(LinkError::Timeout(first)),
                Err(_) => {
                    let need = frame::frame_len(&self.buf).ok().flatten().unwrap_or(0);
                    return Err(LinkError::Garbled(FrameError::Truncated {
                        need,
                        got: self.buf.len(),
                    }));
                }
                Ok(Ok(0)) => {
                    self.io = None;
                    return Err(LinkError::Io("connection closed".into()));
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    self.io = None;
                    return Err(LinkError::Io(format!("read: {e}")));
                }
            };
            self.buf.extend_from_slice(&chunk[..n]);
            self.last_rx = Some(Instant::now());
            match frame::frame_len(&self.buf) {
                Err(e) => return Err(LinkError::Garbled(e)),
                Ok(Some(len)) if self.buf.len() >= len => {
                    if self.buf.len() > len {
                        // Two answers at once: a collision (or noise).
                        return Err(LinkError::Garbled(FrameError::Trailing(
                            self.buf.len() - len,
                        )));
                    }
                    frame::parse(&self.buf).map_err(LinkError::Garbled)?;
                    // A second meter may still be answering: wait one character gap.
                    if let Ok(Ok(n)) = timeout(self.timing.chars(2), io.read(&mut chunk)).await {
                        if n > 0 {
                            return Err(LinkError::Garbled(FrameError::Trailing(n)));
                        }
                    }
                    return Ok(());
                }
                Ok(_) => {}
            }
        }
    }

    /// Sends `f` and receives one answer, retrying on timeouts and garbled answers.
    async fn exchange(&mut self, f: &Frame<'_>, attempts: u32) -> Result<Vec<u8>, LinkError> {
        let mut last = LinkError::Timeout(self.timing.timeout);
        for _ in 0..attempts.max(1) {
            self.send(f).await?;
            match self.recv(f.to_bytes().len()).await {
                Ok(()) => return Ok(self.buf.clone()),
                Err(e @ LinkError::Io(_)) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// SND_NKE to `address`; true when it answered `E5`.
    pub async fn snd_nke(&mut self, address: u8) -> Result<bool, LinkError> {
        let f = Frame::Short {
            control: frame::C_SND_NKE,
            address,
        };
        match self.exchange(&f, 1).await {
            Ok(b) if b == [frame::ACK] => Ok(true),
            Ok(b) => Err(LinkError::Unexpected(format!("{:02X?} to SND_NKE", b))),
            Err(LinkError::Timeout(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Selects the meters matching `sec` (SND_UD to 0xFD, CI 0x52) and tells what answered.
    pub async fn select(&mut self, sec: &Secondary) -> Result<Probe, LinkError> {
        let data = sec.select_bytes();
        let f = Frame::Long {
            control: frame::C_SND_UD,
            address: frame::ADDR_SELECTED,
            ci: 0x52,
            data: &data,
        };
        match self.exchange(&f, 1).await {
            Ok(b) if b == [frame::ACK] => Ok(Probe::One),
            Ok(_) | Err(LinkError::Garbled(_)) => Ok(Probe::Collision),
            Err(LinkError::Timeout(_)) => Ok(Probe::Nobody),
            Err(e) => Err(e),
        }
    }

    /// REQ_UD2 to `address` with the frame count bit `fcb`; the RSP_UD frame's bytes.
    pub async fn req_ud2(&mut self, address: u8, fcb: bool) -> Result<Vec<u8>, LinkError> {
        let f = Frame::Short {
            control: frame::C_REQ_UD2 | if fcb { frame::FCB } else { 0 },
            address,
        };
        // A retry keeps the same FCB: the meter then repeats its last telegram.
        let bytes = self.exchange(&f, 1 + self.timing.retries).await?;
        match frame::parse(&bytes).map_err(LinkError::Garbled)? {
            Frame::Long { control, .. } | Frame::Control { control, .. }
                if control & 0x4F == frame::C_RSP_UD =>
            {
                Ok(bytes)
            }
            other => Err(LinkError::Unexpected(format!(
                "{} to REQ_UD2",
                other.kind()
            ))),
        }
    }

    /// Reads every telegram of one meter: (re)initialise or select it, then REQ_UD2 with the
    /// FCB toggled while the telegram ends with "more records follow" (at most
    /// `max_telegrams`). Returns the RSP_UD frames' bytes.
    pub async fn read_meter(
        &mut self,
        address: Address,
        max_telegrams: usize,
    ) -> Result<Vec<Vec<u8>>, LinkError> {
        let target = match address {
            Address::Primary(a) => {
                if !self.snd_nke(a).await? {
                    return Err(LinkError::Timeout(self.timing.timeout));
                }
                a
            }
            Address::Secondary(sec) => {
                match self.select(&sec).await? {
                    Probe::One => {}
                    Probe::Nobody => return Err(LinkError::Timeout(self.timing.timeout)),
                    Probe::Collision => {
                        return Err(LinkError::Unexpected(format!(
                            "secondary address {sec} matches more than one meter"
                        )))
                    }
                }
                frame::ADDR_SELECTED
            }
        };
        let mut out = Vec::new();
        let mut fcb = true;
        loop {
            let bytes = self.req_ud2(target, fcb).await?;
            let more = match frame::parse(&bytes).map_err(LinkError::Garbled)? {
                Frame::Long { ci, data, .. } => record::decode(ci, data)
                    .map(|ud| ud.more_records_follow())
                    .unwrap_or(false),
                _ => false,
            };
            out.push(bytes);
            if !more || out.len() >= max_telegrams {
                return Ok(out);
            }
            fcb = !fcb;
        }
    }
}

/// Opens a serial port as M-Bus wants it: 8 data bits, even parity (unless `even_parity` is
/// false), 1 stop bit.
pub fn open_serial(
    port: &str,
    baud: u32,
    even_parity: bool,
) -> Result<tokio_serial::SerialStream, LinkError> {
    use tokio_serial::SerialPortBuilderExt as _;
    tokio_serial::new(port, baud)
        .data_bits(tokio_serial::DataBits::Eight)
        .parity(if even_parity {
            tokio_serial::Parity::Even
        } else {
            tokio_serial::Parity::None
        })
        .stop_bits(tokio_serial::StopBits::One)
        .open_native_async()
        .map_err(|e| LinkError::Io(format!("open {port}: {e}")))
}

/// A meter found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// How to address it.
    pub address: String,
    /// Its first telegram (RSP_UD frame bytes), when it answered a REQ_UD2.
    pub telegram: Option<Vec<u8>>,
}

/// Scans primary addresses `range` with SND_NKE; stops at `deadline`.
pub async fn scan_primary(
    link: &mut Link,
    range: std::ops::RangeInclusive<u8>,
    deadline: Instant,
) -> Result<Vec<Found>, LinkError> {
    let mut found = Vec::new();
    for a in range {
        if Instant::now() >= deadline {
            break;
        }
        if link.snd_nke(a).await? {
            let telegram = link.req_ud2(a, true).await.ok();
            found.push(Found {
                address: a.to_string(),
                telegram,
            });
        }
    }
    Ok(found)
}

/// Secondary scan: selects with the id digits fixed one position at a time (0–9), narrowing
/// to the next digit where several meters answer; stops at `deadline`.
pub async fn scan_secondary(link: &mut Link, deadline: Instant) -> Result<Vec<Found>, LinkError> {
    let mut found = Vec::new();
    let mut stack = vec![(Secondary::ANY, 0usize)];
    while let Some((mask, pos)) = stack.pop() {
        if pos >= 8 {
            continue;
        }
        // Push in reverse so digits are tried 0 to 9.
        let mut next = Vec::new();
        for d in 0..10u8 {
            if Instant::now() >= deadline {
                return Ok(found);
            }
            let mut m = mask;
            m.id[pos] = d;
            match link.select(&m).await? {
                Probe::Nobody => {}
                Probe::Collision => next.push((m, pos + 1)),
                Probe::One => {
                    let telegram = link.req_ud2(frame::ADDR_SELECTED, true).await.ok();
                    let address = telegram
                        .as_deref()
                        .and_then(secondary_of)
                        .unwrap_or_else(|| m.to_string());
                    found.push(Found { address, telegram });
                }
            }
        }
        stack.extend(next.into_iter().rev());
    }
    Ok(found)
}

/// The full secondary address (`IIIIIIIIMMMMVVMM`) of an RSP_UD frame.
pub fn secondary_of(bytes: &[u8]) -> Option<String> {
    let Ok(Frame::Long { ci, data, .. }) = frame::parse(bytes) else {
        return None;
    };
    let h = record::decode(ci, data).ok()?.header;
    Some(format!(
        "{}{:04X}{:02X}{:02X}",
        h.id_string()?,
        h.manufacturer?,
        h.version?,
        h.medium?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secondary_masks() {
        let s = Secondary::parse("1234FFFF").unwrap();
        assert_eq!(
            s.select_bytes(),
            [0xFF, 0xFF, 0x34, 0x12, 0xFF, 0xFF, 0xFF, 0xFF]
        );
        assert!(s.matches([0x78, 0x56, 0x34, 0x12], 1, 2, 3));
        assert!(!s.matches([0x78, 0x56, 0x34, 0x13], 1, 2, 3));
        let full = Secondary::parse("12345678C5140E07").unwrap();
        assert_eq!(full.manufacturer, Some(0x0E14).map(|_| 0xC514));
        assert_eq!(full.version, Some(0x0E));
        assert!(Secondary::parse("12x45678").is_err());
        assert_eq!(
            Secondary::parse("12**5678").unwrap().to_string(),
            "12FF5678"
        );
    }

    #[test]
    fn timing_follows_baud() {
        let t = Timing {
            timeout: Duration::from_millis(500),
            retries: 1,
            baud: 2400,
        };
        assert_eq!(t.chars(1), Duration::from_micros(4583));
        assert_eq!(t.idle(), Duration::from_micros(13750));
    }
}
