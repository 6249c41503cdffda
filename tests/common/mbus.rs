//! An M-Bus meter responder for tests: simulated meters on the slave side of a serial line
//! (one end of a socat pty pair) or a TCP "level converter", answering as meters do.
//!
//! It is written from the standard, byte by byte, without the connector's frame code: SND_NKE
//! → `E5`; SND_UD to 0xFD with CI 0x52 selects by id/manufacturer/version/medium with `F`
//! wildcards (one match → `E5`, several → a garbled collision, none → silence); REQ_UD2 →
//! the meter's next telegram when the FCB toggled, the same one again when it did not (so a
//! master that forgets to toggle never sees telegram 2). A meter can be silent or answer with
//! a corrupt checksum. Telegrams are corpus frames (tests/data/mbus).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

/// One simulated meter.
#[derive(Debug, Clone)]
pub struct Meter {
    /// Primary address.
    pub primary: u8,
    /// Id, 8 BCD digits as text.
    pub id: &'static str,
    /// Manufacturer (packed), version, medium.
    pub man: u16,
    /// Version.
    pub version: u8,
    /// Medium.
    pub medium: u8,
    /// Its telegrams (whole RSP_UD frames), sent in turn as the FCB toggles.
    pub telegrams: Vec<Vec<u8>>,
    /// Never answers.
    pub silent: bool,
    /// Answers REQ_UD2 with a bad checksum.
    pub corrupt: bool,
}

impl Meter {
    /// A meter at `primary` with id `id` sending `telegrams`.
    pub fn new(primary: u8, id: &'static str, telegrams: Vec<Vec<u8>>) -> Meter {
        Meter {
            primary,
            id,
            man: 0x0477,
            version: 1,
            medium: 7,
            telegrams,
            silent: false,
            corrupt: false,
        }
    }

    fn id_bytes(&self) -> [u8; 4] {
        let d: Vec<u8> = self.id.bytes().map(|c| c - b'0').collect();
        [
            (d[6] << 4) | d[7],
            (d[4] << 4) | d[5],
            (d[2] << 4) | d[3],
            (d[0] << 4) | d[1],
        ]
    }

    fn matches(&self, sel: &[u8]) -> bool {
        let id = self.id_bytes();
        let nib = |w: u8, g: u8| w == 0x0F || w == g;
        let id_ok =
            (0..4).all(|i| nib(sel[i] >> 4, id[i] >> 4) && nib(sel[i] & 0x0F, id[i] & 0x0F));
        let man = u16::from_le_bytes([sel[4], sel[5]]);
        id_ok
            && (man == 0xFFFF || man == self.man)
            && (sel[6] == 0xFF || sel[6] == self.version)
            && (sel[7] == 0xFF || sel[7] == self.medium)
    }
}

/// The bytes of a corpus frame (`tests/data/mbus/libmbus/test-frames/NAME.hex`).
pub fn corpus_frame(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/mbus/libmbus/test-frames")
        .join(format!("{name}.hex"));
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).expect("hex"))
        .collect()
}

/// What the responder saw, for assertions.
#[derive(Debug, Default)]
pub struct Seen {
    /// REQ_UD2 frames answered with a repeat because the FCB did not toggle.
    pub repeats: AtomicUsize,
    /// Selections that matched several meters.
    pub collisions: AtomicUsize,
    /// REQ_UD2 frames received.
    pub requests: AtomicUsize,
}

struct State {
    meters: Vec<Meter>,
    /// Per meter: telegram index and the FCB of the last REQ_UD2.
    cursor: Vec<(usize, Option<bool>)>,
    selected: Option<usize>,
}

/// A running responder (its task stops on drop).
pub struct Responder {
    task: JoinHandle<()>,
    /// What it saw.
    pub seen: Arc<Seen>,
    /// `host:port` when it listens on TCP.
    pub addr: Option<String>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Responder {
    /// Answers on the serial device `path` (one end of a pty pair).
    pub fn serial(path: &Path, meters: Vec<Meter>) -> Responder {
        use tokio_serial::SerialPortBuilderExt as _;
        let port = tokio_serial::new(path.to_string_lossy(), 38400)
            .open_native_async()
            .expect("open responder pty");
        let seen = Arc::new(Seen::default());
        let state = Arc::new(Mutex::new(State::new(meters)));
        let task = tokio::spawn(serve(port, state, seen.clone()));
        Responder {
            task,
            seen,
            addr: None,
        }
    }

    /// Answers on a TCP port of 127.0.0.1 (one connection at a time, meters keep their state).
    pub async fn tcp(meters: Vec<Meter>) -> Responder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let seen = Arc::new(Seen::default());
        let state = Arc::new(Mutex::new(State::new(meters)));
        let s2 = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                serve(sock, state.clone(), s2.clone()).await;
            }
        });
        Responder {
            task,
            seen,
            addr: Some(addr),
        }
    }
}

impl State {
    fn new(meters: Vec<Meter>) -> State {
        let cursor = vec![(0, None); meters.len()];
        State {
            meters,
            cursor,
            selected: None,
        }
    }

    fn targets(&self, addr: u8) -> Vec<usize> {
        if addr == 0xFD {
            return self.selected.into_iter().collect();
        }
        (0..self.meters.len())
            .filter(|&i| self.meters[i].primary == addr)
            .collect()
    }

    /// The answer to one master frame (`None`: silence).
    fn answer(&mut self, f: &[u8], seen: &Seen) -> Option<Vec<u8>> {
        match f[0] {
            0x10 => {
                let (c, a) = (f[1], f[2]);
                let t = self.targets(a);
                let i = *t.first()?;
                if self.meters[i].silent {
                    return None;
                }
                match c & !0x20 {
                    0x40 => {
                        self.cursor[i] = (0, None);
                        if a == 0xFD {
                            self.selected = None;
                        }
                        Some(vec![0xE5])
                    }
                    0x5B => {
                        seen.requests.fetch_add(1, Ordering::Relaxed);
                        let fcb = c & 0x20 != 0;
                        let m = &self.meters[i];
                        let (idx, last) = self.cursor[i];
                        let idx = match last {
                            None => 0,
                            Some(l) if l == fcb => {
                                seen.repeats.fetch_add(1, Ordering::Relaxed);
                                idx
                            }
                            Some(_) => (idx + 1) % m.telegrams.len(),
                        };
                        self.cursor[i] = (idx, Some(fcb));
                        let mut t = m.telegrams[idx].clone();
                        if t.len() > 16 && t[6] == 0x72 {
                            // The meter's own identity in the header of the corpus frame.
                            t[7..11].copy_from_slice(&m.id_bytes());
                            t[11..13].copy_from_slice(&m.man.to_le_bytes());
                            t[13] = m.version;
                            t[14] = m.medium;
                            let n = t.len();
                            t[n - 2] = t[4..n - 2].iter().fold(0u8, |a, b| a.wrapping_add(*b));
                        }
                        if m.corrupt {
                            let n = t.len();
                            t[n - 2] = t[n - 2].wrapping_add(1);
                        }
                        Some(t)
                    }
                    _ => None,
                }
            }
            0x68 if f.len() >= 17 && f[5] == 0xFD && f[6] == 0x52 => {
                let sel = &f[7..15];
                let hits: Vec<usize> = (0..self.meters.len())
                    .filter(|&i| self.meters[i].matches(sel))
                    .collect();
                self.selected = None;
                match hits.as_slice() {
                    [] => None,
                    [i] => {
                        self.selected = Some(*i);
                        self.cursor[*i] = (0, None);
                        (!self.meters[*i].silent).then(|| vec![0xE5])
                    }
                    _ => {
                        // Several meters answer at once: the master sees noise.
                        seen.collisions.fetch_add(1, Ordering::Relaxed);
                        Some(vec![0xE5, 0x3A, 0xFF])
                    }
                }
            }
            _ => None,
        }
    }
}

/// Reads master frames from `io` and answers them until the connection ends.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    state: Arc<Mutex<State>>,
    seen: Arc<Seen>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            let len = match buf.first() {
                None => break,
                Some(0x10) => 5,
                Some(0x68) if buf.len() >= 2 => usize::from(buf[1]) + 6,
                Some(0x68) => break,
                Some(_) => {
                    buf.remove(0);
                    continue;
                }
            };
            if buf.len() < len {
                break;
            }
            let f: Vec<u8> = buf.drain(..len).collect();
            let reply = state.lock().expect("state").answer(&f, &seen);
            if let Some(r) = reply {
                if io.write_all(&r).await.is_err() {
                    return;
                }
            }
        }
    }
}
