//! A configurable Modbus TCP device simulator for demos, tests and benchmarks.
//!
//! Serves `--units` unit ids (1..=N) on each of `--ports` listeners (the first on `--listen`, the
//! others on the following port numbers, or each on a free port when the port is 0). Every unit
//! has `--registers` holding and input registers and as many coils and discrete inputs, whose
//! values change every `--period`:
//!
//! - registers `0 .. n - 2*f`: u16 counters, `(tick + 7*address + unit) mod 65536`;
//! - the last `2*f` registers (`f` = `--floats`, default `n/4`): f32 sines (ABCD, two registers
//!   each), amplitude 100, one cycle per minute, phase shifted per address and unit;
//! - coils and discrete inputs: `(tick + address + unit)` is odd.
//!
//! Holding registers and coils accept writes (FC05/06/15/16); a written value sticks and hides
//! the simulated one. Out-of-range addresses answer IllegalDataAddress, a quantity over the
//! protocol limit (125 registers / 2000 bits) IllegalDataValue, an unknown unit id
//! GatewayTargetDevice. Values are computed on demand from the clock, so an idle simulator costs
//! nothing.
//!
//! Once listening it prints `READY <addr> [<addr> …]` on stdout, for scripts and test harnesses;
//! with `--stats` it then prints `STATS requests=<total>` every second (for benchmarks).
//!
//! ```text
//! cargo run --release --example modbus_sim -- --listen 127.0.0.1:5020 --units 100 --registers 100
//! ```

use std::collections::HashMap;
use std::future::{ready, Ready};
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::net::TcpListener;
use tokio_modbus::prelude::*;
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Modbus TCP device simulator")]
struct Args {
    /// Address of the first listener (port 0: a free port).
    #[arg(long, default_value = "127.0.0.1:5020")]
    listen: SocketAddr,
    /// Number of listeners (consecutive ports, or free ports when --listen has port 0).
    #[arg(long, default_value_t = 1)]
    ports: u16,
    /// Unit ids served on each listener: 1..=UNITS.
    #[arg(long, default_value_t = 1)]
    units: u8,
    /// Registers (and coils) per table and unit.
    #[arg(long, default_value_t = 100)]
    registers: u16,
    /// f32 values at the end of the register table (default: registers/4).
    #[arg(long)]
    floats: Option<u16>,
    /// How often values change, in milliseconds.
    #[arg(long, default_value_t = 100)]
    period_ms: u64,
    /// Print the number of requests served so far every second.
    #[arg(long)]
    stats: bool,
}

/// Which table a write went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Written {
    Coil,
    Holding,
}

/// The simulated devices; shared by every connection.
struct Sim {
    start: Instant,
    period: Duration,
    units: u8,
    registers: u16,
    /// First register of the f32 area.
    float_base: u16,
    /// Written values that override the simulated ones.
    written: Mutex<HashMap<(u8, Written, u16), u16>>,
    any_written: AtomicBool,
    /// Requests served.
    requests: AtomicU64,
}

impl Sim {
    fn new(args: &Args) -> Sim {
        let n = args.registers;
        let floats = args.floats.unwrap_or(n / 4).min(n / 2);
        Sim {
            start: Instant::now(),
            period: Duration::from_millis(args.period_ms.max(1)),
            units: args.units,
            registers: n,
            float_base: n - 2 * floats,
            written: Mutex::new(HashMap::new()),
            any_written: AtomicBool::new(false),
            requests: AtomicU64::new(0),
        }
    }

    fn tick(&self) -> u64 {
        (self.start.elapsed().as_nanos() / self.period.as_nanos()) as u64
    }

    fn overlay(&self, unit: u8, table: Written, addr: u16) -> Option<u16> {
        if !self.any_written.load(Ordering::Relaxed) {
            return None;
        }
        let w = self.written.lock().unwrap_or_else(|e| e.into_inner());
        w.get(&(unit, table, addr)).copied()
    }

    fn write(&self, unit: u8, table: Written, addr: u16, values: impl Iterator<Item = u16>) {
        let mut w = self.written.lock().unwrap_or_else(|e| e.into_inner());
        for (i, v) in values.enumerate() {
            w.insert((unit, table, addr + i as u16), v);
        }
        self.any_written.store(true, Ordering::Relaxed);
    }

    fn register(&self, unit: u8, addr: u16, tick: u64) -> u16 {
        if addr < self.float_base {
            return (tick as u16)
                .wrapping_add(addr.wrapping_mul(7))
                .wrapping_add(unit.into());
        }
        let k = (addr - self.float_base) / 2;
        let t = (tick as f64) * self.period.as_secs_f64();
        let phase = f64::from(k) * 0.1 + f64::from(unit);
        let v = (100.0 * (std::f64::consts::TAU * t / 60.0 + phase).sin()) as f32;
        let b = v.to_be_bytes();
        if (addr - self.float_base) % 2 == 0 {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_be_bytes([b[2], b[3]])
        }
    }

    fn registers(&self, unit: u8, addr: u16, cnt: u16, holding: bool) -> Vec<u16> {
        let tick = self.tick();
        (addr..addr + cnt)
            .map(|a| {
                holding
                    .then(|| self.overlay(unit, Written::Holding, a))
                    .flatten()
                    .unwrap_or_else(|| self.register(unit, a, tick))
            })
            .collect()
    }

    fn bits(&self, unit: u8, addr: u16, cnt: u16, coils: bool) -> Vec<bool> {
        let tick = self.tick();
        (addr..addr + cnt)
            .map(|a| {
                match coils
                    .then(|| self.overlay(unit, Written::Coil, a))
                    .flatten()
                {
                    Some(v) => v != 0,
                    None => (tick + u64::from(a) + u64::from(unit)) % 2 == 1,
                }
            })
            .collect()
    }

    /// Checks a range against the table size and the per-request limit.
    fn check(&self, addr: u16, cnt: usize, limit: usize) -> Result<(), ExceptionCode> {
        if cnt == 0 || cnt > limit {
            return Err(ExceptionCode::IllegalDataValue);
        }
        if usize::from(addr) + cnt > usize::from(self.registers) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        Ok(())
    }

    fn handle(&self, unit: u8, req: Request<'static>) -> Result<Response, ExceptionCode> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if unit == 0 || unit > self.units {
            return Err(ExceptionCode::GatewayTargetDevice);
        }
        match req {
            Request::ReadCoils(a, n) => {
                self.check(a, n.into(), 2000)?;
                Ok(Response::ReadCoils(self.bits(unit, a, n, true)))
            }
            Request::ReadDiscreteInputs(a, n) => {
                self.check(a, n.into(), 2000)?;
                Ok(Response::ReadDiscreteInputs(self.bits(unit, a, n, false)))
            }
            Request::ReadHoldingRegisters(a, n) => {
                self.check(a, n.into(), 125)?;
                Ok(Response::ReadHoldingRegisters(
                    self.registers(unit, a, n, true),
                ))
            }
            Request::ReadInputRegisters(a, n) => {
                self.check(a, n.into(), 125)?;
                Ok(Response::ReadInputRegisters(
                    self.registers(unit, a, n, false),
                ))
            }
            Request::WriteSingleCoil(a, v) => {
                self.check(a, 1, 1)?;
                self.write(unit, Written::Coil, a, std::iter::once(u16::from(v)));
                Ok(Response::WriteSingleCoil(a, v))
            }
            Request::WriteMultipleCoils(a, v) => {
                self.check(a, v.len(), 1968)?;
                self.write(unit, Written::Coil, a, v.iter().map(|b| u16::from(*b)));
                Ok(Response::WriteMultipleCoils(a, v.len() as u16))
            }
            Request::WriteSingleRegister(a, v) => {
                self.check(a, 1, 1)?;
                self.write(unit, Written::Holding, a, std::iter::once(v));
                Ok(Response::WriteSingleRegister(a, v))
            }
            Request::WriteMultipleRegisters(a, v) => {
                self.check(a, v.len(), 123)?;
                self.write(unit, Written::Holding, a, v.iter().copied());
                Ok(Response::WriteMultipleRegisters(a, v.len() as u16))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

/// The tokio-modbus service of one connection.
struct SimService(Arc<Sim>);

impl tokio_modbus::server::Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        ready(self.0.handle(req.slave, req.request))
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if args.registers == 0 || args.units == 0 || args.ports == 0 {
        eprintln!("--registers, --units and --ports must be at least 1");
        std::process::exit(2);
    }
    let sim = Arc::new(Sim::new(&args));
    let mut listeners = Vec::new();
    for i in 0..args.ports {
        let mut addr = args.listen;
        if addr.port() != 0 {
            addr.set_port(addr.port() + i);
        }
        listeners.push(TcpListener::bind(addr).await?);
    }
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<Result<_, _>>()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "READY {}", addrs.join(" "))?;
        out.flush()?;
    }
    eprintln!(
        "modbus_sim: {} unit(s) x {} registers; u16 counters at 0..{}, f32 sines at {}..{}, \
         values change every {} ms",
        args.units, args.registers, sim.float_base, sim.float_base, args.registers, args.period_ms
    );
    let mut tasks = tokio::task::JoinSet::new();
    if args.stats {
        let sim = sim.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let n = sim.requests.load(Ordering::Relaxed);
                let mut out = std::io::stdout().lock();
                if writeln!(out, "STATS requests={n}")
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    // Nobody reads the stats any more.
                    return Ok(());
                }
            }
        });
    }
    for listener in listeners {
        let sim = sim.clone();
        tasks.spawn(async move {
            let server = Server::new(listener);
            let on_connected = |stream, socket_addr| {
                let sim = sim.clone();
                async move {
                    accept_tcp_connection(stream, socket_addr, move |_| {
                        Ok(Some(SimService(sim.clone())))
                    })
                }
            };
            let on_error = |err| eprintln!("modbus_sim: connection error: {err}");
            server.serve(&on_connected, on_error).await
        });
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        Some(res) = tasks.join_next() => res.map_err(std::io::Error::other)?,
    }
}
