//! One ISO-on-TCP connection to a PLC: TCP connect, COTP connection request (the TSAPs carry
//! rack and slot), S7 setup communication (the PDU size), then one request at a time.
//!
//! Every step runs under the connector's timeout and fails with an [`S7Error`] whose kind says
//! what the poller does next: a refusal of one request by the PLC ([`S7Error::Plc`]) keeps the
//! connection; anything else (refused or dropped connection, no answer, a garbled frame) drops
//! it. The frames are built and parsed in [`super::wire`]; the buffers are kept between
//! requests, so a poll allocates nothing for the wire.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::wire::{self, Ack, AnswerError, ConnectReply, PlcError, Tsaps, FRAME_HEADER};

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum S7Error {
    /// The PLC refused the request with an S7 error class/code; the connection is fine.
    #[error("{0}")]
    Plc(PlcError),
    /// The TCP connection or the ISO connection was refused.
    #[error("{0}")]
    Refused(String),
    /// No (complete) answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed or closed.
    #[error("{0}")]
    Io(String),
    /// The answer is not S7comm, or does not match the request.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl S7Error {
    /// True when the connection must be dropped and opened again.
    pub fn needs_reconnect(&self) -> bool {
        !matches!(self, S7Error::Plc(_))
    }

    /// A stable label of the error kind, for "log once per state change".
    pub fn kind(&self) -> &'static str {
        match self {
            S7Error::Plc(_) => "refused-request",
            S7Error::Refused(_) => "refused",
            S7Error::Timeout(_) => "timeout",
            S7Error::Io(_) => "io",
            S7Error::Protocol(_) => "protocol",
        }
    }
}

impl From<AnswerError> for S7Error {
    fn from(e: AnswerError) -> Self {
        match e {
            AnswerError::Refused(code) => S7Error::Plc(PlcError(code)),
            AnswerError::Malformed(m) => S7Error::Protocol(m),
        }
    }
}

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port`.
    pub addr: String,
    /// The TSAPs.
    pub tsaps: Tsaps,
    /// How rack/slot were given, for messages (`rack 0, slot 1` or the TSAPs).
    pub describe: String,
    /// PDU size to ask for.
    pub pdu: u16,
}

/// An open connection.
pub struct Connection {
    stream: TcpStream,
    pdu: u16,
    next_ref: u16,
    /// The frame being sent.
    pub tx: Vec<u8>,
    rx: Vec<u8>,
    timeout: Duration,
}

impl Connection {
    /// Connects, opens the ISO connection and negotiates the PDU; all within `timeout` each.
    pub async fn open(target: &Target, timeout: Duration) -> Result<Connection, S7Error> {
        let addr = &target.addr;
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| S7Error::Timeout(timeout))?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => S7Error::Refused(format!(
                    "connection refused by {addr}: no S7 server listens there (is it the PLC's \
                     address, and port 102?)"
                )),
                _ => S7Error::Io(format!("connecting to {addr}: {e}")),
            })?;
        // Requests are small and latency-bound: never wait for Nagle.
        let _ = stream.set_nodelay(true);
        let mut c = Connection {
            stream,
            pdu: 0,
            next_ref: 0,
            tx: Vec::with_capacity(1024),
            rx: Vec::with_capacity(1024),
            timeout,
        };
        let refused = |why: &str| {
            S7Error::Refused(format!(
                "the PLC at {addr} refused the ISO connection ({why}): check rack and slot \
                 ({}; S7-300: rack 0 slot 2, S7-1200/1500: rack 0 slot 1) or the TSAPs",
                target.describe
            ))
        };
        c.tx = wire::connect_request(target.tsaps);
        match c.round_trip().await {
            Ok(()) => {}
            Err(S7Error::Io(_)) => return Err(refused("it closed the connection")),
            Err(e) => return Err(e),
        }
        match wire::connect_reply(&c.rx[4..]) {
            ConnectReply::Confirm => {}
            ConnectReply::Disconnect(reason) => {
                return Err(refused(&format!("disconnect, reason 0x{reason:02X}")))
            }
            ConnectReply::Other(t) => {
                return Err(S7Error::Protocol(format!(
                    "expected a COTP connection confirm, got type 0x{t:02X}"
                )))
            }
        }
        let r = c.take_ref();
        wire::setup_request(&mut c.tx, r, target.pdu);
        let ack = match c.exchange().await {
            Err(S7Error::Io(_)) => return Err(refused("it closed the connection at setup")),
            other => other?,
        };
        let pdu = wire::setup_answer(&ack)?;
        if pdu < 64 {
            return Err(S7Error::Protocol(format!(
                "the PLC granted a PDU of {pdu} bytes"
            )));
        }
        c.pdu = pdu;
        Ok(c)
    }

    /// The negotiated PDU size.
    pub fn pdu(&self) -> u16 {
        self.pdu
    }

    /// A fresh PDU reference for the next request.
    pub fn take_ref(&mut self) -> u16 {
        self.next_ref = self.next_ref.wrapping_add(1);
        self.next_ref
    }

    /// Sends [`Connection::tx`] (a frame from [`wire`]) and returns the S7 answer, checked
    /// against the request's PDU reference and error class/code.
    pub async fn exchange(&mut self) -> Result<Ack<'_>, S7Error> {
        let want = u16::from_be_bytes([self.tx[FRAME_HEADER + 4], self.tx[FRAME_HEADER + 5]]);
        self.round_trip().await?;
        let cotp_len = usize::from(self.rx[4]) + 1;
        let pdu = self
            .rx
            .get(4 + cotp_len..)
            .ok_or_else(|| S7Error::Protocol("short COTP frame".into()))?;
        if self.rx[5] != 0xF0 {
            return Err(S7Error::Protocol(format!(
                "expected COTP data, got type 0x{:02X} (the PLC closed the connection?)",
                self.rx[5]
            )));
        }
        let ack = wire::parse_ack(pdu)?;
        if ack.pdu_ref != want {
            return Err(S7Error::Protocol(format!(
                "answer to request {} while waiting for {want}",
                ack.pdu_ref
            )));
        }
        Ok(ack)
    }

    /// Writes `tx` and reads one TPKT frame into `rx`, under the timeout.
    async fn round_trip(&mut self) -> Result<(), S7Error> {
        let timeout = self.timeout;
        let io = async {
            self.stream.write_all(&self.tx).await?;
            self.rx.resize(4, 0);
            self.stream.read_exact(&mut self.rx[..4]).await?;
            let len = usize::from(u16::from_be_bytes([self.rx[2], self.rx[3]]));
            if self.rx[0] != 3 || len < 7 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not a TPKT frame (version {}, length {len})", self.rx[0]),
                ));
            }
            self.rx.resize(len, 0);
            self.stream.read_exact(&mut self.rx[4..]).await?;
            // A PDU longer than the TPDU size comes in several COTP data frames: join them.
            while self.rx[5] == 0xF0 && self.rx[6] & 0x80 == 0 {
                let mut h = [0u8; 7];
                self.stream.read_exact(&mut h).await?;
                let more = usize::from(u16::from_be_bytes([h[2], h[3]]));
                if h[0] != 3 || more < 7 || h[5] != 0xF0 || self.rx.len() + more > 65_535 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "broken COTP data fragment",
                    ));
                }
                let at = self.rx.len();
                self.rx.resize(at + more - 7, 0);
                self.stream.read_exact(&mut self.rx[at..]).await?;
                self.rx[6] = h[6];
            }
            Ok(())
        };
        match tokio::time::timeout(timeout, io).await {
            Err(_) => Err(S7Error::Timeout(timeout)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(S7Error::Protocol(e.to_string()))
            }
            Ok(Err(e)) => Err(S7Error::Io(match e.kind() {
                std::io::ErrorKind::UnexpectedEof => "the PLC closed the connection".into(),
                _ => format!("connection lost: {e}"),
            })),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_millis(100), self.stream.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(addr: String) -> Target {
        Target {
            addr,
            tsaps: Tsaps::rack_slot(1, 0, 1),
            describe: "rack 0, slot 1".into(),
            pdu: 480,
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let Err(e) = Connection::open(&target(addr), Duration::from_secs(2)).await else {
            panic!("connected to a closed port")
        };
        assert_eq!(e.kind(), "refused");
        assert!(e.to_string().contains("connection refused"), "{e}");
    }

    #[tokio::test]
    async fn a_peer_that_hangs_up_names_rack_and_slot() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 22];
            let _ = s.read_exact(&mut buf).await;
            // A disconnect request, as a CPU sends for a TSAP it does not serve.
            let _ = s.write_all(&[3, 0, 0, 11, 6, 0x80, 0, 1, 0, 1, 0]).await;
        });
        let Err(e) = Connection::open(&target(addr), Duration::from_secs(2)).await else {
            panic!("connected")
        };
        assert!(e.to_string().contains("rack and slot"), "{e}");
        assert!(e.to_string().contains("rack 0, slot 1"), "{e}");
    }
}
