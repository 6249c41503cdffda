//! Opening Modbus connections (TCP, RTU on a serial port, RTU over TCP) and running single
//! requests with a deadline.
//!
//! tokio-modbus has no timeouts of its own and returns a nested result (`Ok(Err(exception))` for
//! a Modbus exception); [`call`] wraps every request in `tokio::time::timeout` and flattens the
//! outcome into [`CallError`], whose kind tells the poller what to do next: an exception marks
//! the request's channels bad but keeps the connection, anything else (no answer, wrong
//! transaction or unit id, a garbled frame, a closed socket) drops the connection.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_modbus::client::Context;
use tokio_modbus::{ExceptionCode, Slave};

use super::{Parity, SerialSettings, Transport};

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The device answered with a Modbus exception; the connection is fine.
    #[error("modbus exception: {0}")]
    Exception(String),
    /// No (complete) answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The answer did not match the request (transaction id, unit id, function code).
    #[error("mismatched answer: {0}")]
    Mismatch(String),
    /// The connection failed or a frame could not be decoded.
    #[error("transport error: {0}")]
    Io(String),
}

impl CallError {
    /// True when the connection must be dropped and opened again.
    pub fn needs_reconnect(&self) -> bool {
        !matches!(self, CallError::Exception(_))
    }

    /// A stable label of the error kind, for "log once per state change".
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Exception(_) => "exception",
            CallError::Timeout(_) => "timeout",
            CallError::Mismatch(_) => "mismatch",
            CallError::Io(_) => "io",
        }
    }
}

/// Names an exception like the specification does (`IllegalDataAddress` → "illegal data
/// address (0x02)").
pub fn exception_text(e: ExceptionCode) -> String {
    format!("{e} (0x{:02X})", u8::from(e))
}

/// Runs one tokio-modbus request with a deadline and flattens its nested result.
pub async fn call<T, F>(timeout: Duration, request: F) -> Result<T, CallError>
where
    F: Future<Output = tokio_modbus::Result<T>>,
{
    flatten(tokio::time::timeout(timeout, request).await, timeout)
}

fn flatten<T>(
    res: Result<tokio_modbus::Result<T>, tokio::time::error::Elapsed>,
    timeout: Duration,
) -> Result<T, CallError> {
    match res {
        Err(_) => Err(CallError::Timeout(timeout)),
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(exc))) => Err(CallError::Exception(exception_text(exc))),
        Ok(Err(tokio_modbus::Error::Protocol(p))) => Err(CallError::Mismatch(short(&p))),
        Ok(Err(tokio_modbus::Error::Transport(io))) => Err(CallError::Io(io.to_string())),
    }
}

/// Changes bits of holding register `address` by `masks` (from
/// [`super::codec::bit_masks`]). With Mask Write Register (0x16) the device applies them
/// itself, so bits another master writes at the same time are kept. A device without 0x16
/// (exception "illegal function") gets the register read and written back instead, which such
/// a race can undo; `mask_write` records the answer (start with `true`), so a device is asked
/// only once.
pub async fn write_masked(
    ctx: &mut Context,
    timeout: Duration,
    address: u16,
    masks: (u16, u16),
    mask_write: &mut bool,
) -> Result<(), CallError> {
    use tokio_modbus::client::{Reader as _, Writer as _};
    if *mask_write {
        let res = tokio::time::timeout(
            timeout,
            ctx.masked_write_register(address, masks.0, masks.1),
        )
        .await;
        if !matches!(res, Ok(Ok(Err(ExceptionCode::IllegalFunction)))) {
            return flatten(res, timeout);
        }
        *mask_write = false;
        tracing::debug!(
            address,
            "device lacks Mask Write Register (0x16): bit writes read and write back"
        );
    }
    let cur = call(timeout, ctx.read_holding_registers(address, 1)).await?;
    let cur = *cur
        .first()
        .ok_or_else(|| CallError::Io("short answer from the device".into()))?;
    call(
        timeout,
        ctx.write_single_register(address, super::codec::apply_masks(cur, masks)),
    )
    .await
}

/// A protocol error without the (possibly long) decoded response tokio-modbus appends.
fn short(p: &tokio_modbus::ProtocolError) -> String {
    match p {
        tokio_modbus::ProtocolError::HeaderMismatch { message, .. } => message.clone(),
        tokio_modbus::ProtocolError::FunctionCodeMismatch { request, .. } => {
            format!("function code does not match the request ({request})")
        }
    }
}

/// Opens a connection for `transport`, addressed to `unit` (change it with
/// `tokio_modbus::client::SlaveContext::set_slave`). Takes at most `timeout`.
pub async fn connect(
    transport: &Transport,
    unit: u8,
    timeout: Duration,
) -> Result<Context, CallError> {
    let slave = Slave(unit);
    match transport {
        Transport::Tcp(addr) => {
            let stream = tcp(addr, timeout).await?;
            Ok(tokio_modbus::client::tcp::attach_slave(stream, slave))
        }
        Transport::RtuOverTcp(addr) => {
            let stream = tcp(addr, timeout).await?;
            Ok(tokio_modbus::client::rtu::attach_slave(stream, slave))
        }
        Transport::Rtu(line) => {
            let port = open_serial(line)?;
            Ok(tokio_modbus::client::rtu::attach_slave(port, slave))
        }
    }
}

async fn tcp(addr: &str, timeout: Duration) -> Result<TcpStream, CallError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| CallError::Timeout(timeout))?
        .map_err(|e| CallError::Io(format!("connecting to {addr}: {e}")))?;
    // Requests are small and latency-bound: never wait for Nagle.
    stream
        .set_nodelay(true)
        .map_err(|e| CallError::Io(format!("connecting to {addr}: {e}")))?;
    Ok(stream)
}

/// Opens a serial port with the line's settings.
pub fn open_serial(line: &SerialSettings) -> Result<tokio_serial::SerialStream, CallError> {
    use tokio_serial::SerialPortBuilderExt as _;
    let data_bits = match line.data_bits {
        5 => tokio_serial::DataBits::Five,
        6 => tokio_serial::DataBits::Six,
        7 => tokio_serial::DataBits::Seven,
        _ => tokio_serial::DataBits::Eight,
    };
    let stop_bits = if line.stop_bits == 2 {
        tokio_serial::StopBits::Two
    } else {
        tokio_serial::StopBits::One
    };
    let parity = match line.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    tokio_serial::new(&line.port, line.baud)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .parity(parity)
        .open_native_async()
        .map_err(|e| CallError::Io(format!("opening {}: {e}", line.port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn call_flattens_every_outcome() {
        let t = Duration::from_millis(50);
        assert_eq!(call(t, async { Ok(Ok(7u16)) }).await, Ok(7));
        let exc = call::<u16, _>(t, async { Ok(Err(ExceptionCode::IllegalDataAddress)) }).await;
        assert!(
            matches!(&exc, Err(CallError::Exception(m)) if m.contains("0x02")),
            "{exc:?}"
        );
        assert!(!exc.unwrap_err().needs_reconnect());
        let io = call::<u16, _>(t, async {
            Err(tokio_modbus::Error::Transport(
                std::io::ErrorKind::BrokenPipe.into(),
            ))
        })
        .await
        .unwrap_err();
        assert!(io.needs_reconnect());
        assert_eq!(io.kind(), "io");
        let slow = call::<u16, _>(t, std::future::pending()).await.unwrap_err();
        assert_eq!(slow, CallError::Timeout(t));
    }

    #[tokio::test]
    async fn connecting_to_a_closed_port_fails_fast() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let Err(err) = connect(&Transport::Tcp(addr), 1, Duration::from_secs(2)).await else {
            panic!("connected to a closed port")
        };
        assert!(matches!(err, CallError::Io(_)), "{err:?}");
        let Err(err) = connect(
            &Transport::Rtu(SerialSettings {
                port: "/dev/does-not-exist".into(),
                baud: 9600,
                parity: Parity::None,
                data_bits: 8,
                stop_bits: 1,
            }),
            1,
            Duration::from_secs(1),
        )
        .await
        else {
            panic!("opened a missing port")
        };
        assert!(err.to_string().contains("/dev/does-not-exist"), "{err}");
    }
}
