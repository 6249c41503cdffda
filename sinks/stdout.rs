//! The stdout sink (`"type": "stdout"`): one JSON line per reading (or per batch with
//! `"format": "device"`), for debugging and for piping into other tools.

use std::io::Write;
use std::sync::atomic::Ordering::Relaxed;

use bytes::{BufMut, BytesMut};
use serde::Deserialize;

use super::format::{encode_device, encode_reading, Format};
use super::{SinkContext, SinkError};
use osgate_core::pipeline::Envelope;

/// Settings of the stdout sink.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// `reading` (default): a line per reading; `device`: a line per batch.
    #[serde(default)]
    pub format: Format,
}

/// Writes every envelope of the queue to stdout until the queue ends.
pub async fn run(cfg: StdoutSinkConfig, mut ctx: SinkContext) -> Result<(), SinkError> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    ctx.counters.connected.store(true, Relaxed);
    while let Some(env) = ctx.rx.recv().await {
        // Encode what is queued now (up to 64 KiB), then write it in one go: one blocking
        // write per burst, not per batch.
        let mut n = 0;
        let mut next = Some(env);
        while let Some(env) = next.take() {
            if let Envelope::Batch(batch) = env {
                n += batch.readings.len() as u64;
                match cfg.format {
                    Format::Reading => {
                        for r in &batch.readings {
                            encode_reading(&mut buf, r, true);
                            buf.put_u8(b'\n');
                        }
                    }
                    Format::Device => {
                        encode_device(&mut buf, &batch, true);
                        buf.put_u8(b'\n');
                    }
                }
            }
            if buf.len() < 64 * 1024 {
                next = ctx.rx.try_recv().ok();
            }
        }
        if buf.is_empty() {
            continue;
        }
        ctx.counters.received.fetch_add(n, Relaxed);
        // Writing to a pipe may block; keep it off the async workers.
        let out = std::mem::take(&mut buf);
        let out = tokio::task::spawn_blocking(move || {
            let mut lock = std::io::stdout().lock();
            lock.write_all(&out).and_then(|_| lock.flush()).map(|_| out)
        })
        .await
        .map_err(std::io::Error::other)??;
        buf = out;
        buf.clear();
        ctx.counters.published.fetch_add(n, Relaxed);
        ctx.counters.acked.fetch_add(n, Relaxed);
    }
    ctx.counters.connected.store(false, Relaxed);
    Ok(())
}
