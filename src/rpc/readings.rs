//! Live readings: `readings.subscribe` streams every batch that reaches the sinks, optionally
//! only one device's or one channel's, as `readings` notifications over a WebSocket. Subscribers
//! read a tap of the pipeline ([`ReadingTap`](crate::pipeline::ReadingTap)) that never blocks it: a slow client skips
//! batches. At most `rpc.max_subscribers` are open at once.

use std::sync::Arc;

use jsonrpsee::server::{PendingSubscriptionSink, SubscriptionMessage};
use jsonrpsee::types::Params;
use jsonrpsee::RpcModule;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast::error::RecvError;

use super::codes::{self, app_error};
use super::params::{parse_optional, SubscribeParams};
use super::RpcContext;
use crate::reading::{Batch, Reading};

/// Registers `readings.subscribe` (and its `readings.unsubscribe`).
pub(super) fn register(m: &mut RpcModule<RpcContext>) {
    m.register_subscription(
        "readings.subscribe",
        "readings",
        "readings.unsubscribe",
        subscribe,
    )
    .expect("unique");
}

/// One reading as `device.read` and the `readings` notifications show it.
pub(super) fn reading_json(r: &Reading) -> Value {
    let mut m = Map::new();
    m.insert("channel".into(), r.channel.to_string().into());
    m.insert("value".into(), r.value.to_json());
    m.insert("ts".into(), r.ts.0.into());
    m.insert("quality".into(), r.quality.as_str().into());
    if let Some(reason) = r.quality.reason() {
        m.insert("reason".into(), reason.into());
    }
    if let Some(u) = &r.unit {
        m.insert("unit".into(), u.to_string().into());
    }
    Value::Object(m)
}

/// A batch as sent to `readings.subscribe` subscribers, keeping only `channel` if given.
fn batch_json(b: &Batch, channel: Option<&str>) -> Option<Value> {
    let readings: Vec<Value> = b
        .readings
        .iter()
        .filter(|r| channel.is_none_or(|c| *r.channel == *c))
        .map(reading_json)
        .collect();
    if readings.is_empty() {
        return None;
    }
    Some(json!({"connector": &*b.connector, "device": &*b.device, "readings": readings}))
}

async fn subscribe(
    params: Params<'static>,
    pending: PendingSubscriptionSink,
    ctx: Arc<RpcContext>,
    _: jsonrpsee::Extensions,
) -> jsonrpsee::core::SubscriptionResult {
    let p: SubscribeParams = match parse_optional(&params) {
        Ok(p) => p,
        Err(e) => {
            pending.reject(e).await;
            return Ok(());
        }
    };
    if let Some(d) = &p.device {
        if let Err(e) = ctx.resolve(d, None) {
            pending.reject(e).await;
            return Ok(());
        }
    }
    // At most rpc.max_subscribers at once: each holds a queue of batches.
    let Ok(_permit) = ctx.subscribers.clone().try_acquire_owned() else {
        if let Some(l) = &ctx.listener {
            l.stats().cut(crate::net::listen::Cause::Subscribers, None);
        }
        pending
            .reject(app_error(
                codes::TOO_MANY_SUBSCRIBERS,
                format!(
                    "{} live-reading subscriptions are open, the most rpc.max_subscribers allows; close one or raise it",
                    ctx.config.load().rpc.as_ref().map_or(0, |r| r.max_subscribers)
                ),
            ))
            .await;
        return Ok(());
    };
    // Subscribe before accepting so that nothing sent after the answer is missed.
    let mut tap = ctx.tap.subscribe();
    let mut sink = pending.accept().await?;
    loop {
        tokio::select! {
            _ = sink.closed() => break,
            r = tap.rx.recv() => match r {
                Ok(b) => {
                    if p.device.as_deref().is_some_and(|d| *b.device != *d) {
                        continue;
                    }
                    let Some(v) = batch_json(&b, p.channel.as_deref()) else { continue };
                    let msg = SubscriptionMessage::from(serde_json::value::to_raw_value(&v)?);
                    // A full connection buffer skips this batch: a slow client never slows
                    // the pipeline.
                    if let Err(jsonrpsee::core::server::TrySendError::Closed(_)) = sink.try_send(msg) {
                        break;
                    }
                }
                Err(RecvError::Lagged(n)) => tracing::debug!(skipped = n, "slow readings subscriber skipped batches"),
                Err(RecvError::Closed) => break,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::pipeline::ReadingTap;
    use crate::reading::Timestamp;

    #[tokio::test]
    async fn the_tap_feeds_listeners_only_and_a_slow_one_skips() {
        use crate::pipeline::{Envelope, ReadingSender};
        let out = ReadingSender::new(Vec::new());
        let batch = |n: u64| {
            Envelope::Batch(Arc::new(Batch {
                connector: "c".into(),
                device: "d".into(),
                readings: vec![Reading {
                    device: "d".into(),
                    channel: "x".into(),
                    value: crate::reading::Value::U64(n),
                    ts: Timestamp(n as i64),
                    quality: crate::reading::Quality::Good,
                    unit: None,
                }],
            }))
        };
        // Nobody listens: nothing is kept.
        out.try_send(batch(0));
        let mut slow = out.tap().subscribe();
        assert!(slow.rx.is_empty());
        // A listener that never reads: sending never waits, the listener lags.
        let n = ReadingTap::CAPACITY as u64 + 10;
        for i in 1..=n {
            tokio::time::timeout(Duration::from_secs(1), out.send(batch(i)))
                .await
                .expect("the tap never blocks the pipeline");
        }
        assert!(matches!(slow.rx.recv().await, Err(RecvError::Lagged(10))));
        let next = slow.rx.recv().await.unwrap();
        assert_eq!(next.readings[0].value, crate::reading::Value::U64(11));
        drop(slow);
        let fresh = out.tap().subscribe();
        out.try_send(batch(99));
        drop(fresh);
    }

    #[test]
    fn batch_filter_keeps_the_channel_asked_for() {
        use crate::reading::{Quality, Value as V};
        let r = |c: &str| Reading {
            device: "d".into(),
            channel: c.into(),
            value: V::U64(1),
            ts: Timestamp(5),
            quality: Quality::Good,
            unit: None,
        };
        let b = Batch {
            connector: "c".into(),
            device: "d".into(),
            readings: vec![r("a"), r("b")],
        };
        assert_eq!(
            batch_json(&b, None).unwrap()["readings"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let only = batch_json(&b, Some("b")).unwrap();
        assert_eq!(
            only["readings"],
            json!([{"channel": "b", "value": 1, "ts": 5, "quality": "good"}])
        );
        assert!(batch_json(&b, Some("zz")).is_none());
    }
}
