//! The MQTT session driver (`osgate::net::mqtt::MqttSession`, which every MQTT client of osgate
//! runs on) against a real mosquitto: connect, subscribe on every ConnAck, publishes written and
//! acknowledged in order through the outbox, messages, a broker restart (down with the cause,
//! backoff, connected again and subscribed again), and a clean close; batches of publishes
//! larger than the in-flight window, the queue's bound, and a DISCONNECT after them.

use std::time::Duration;

use osgate::backoff::Backoff;
use osgate::net::mqtt::{
    Ack, Delivery, MqttClientSettings, MqttSession, Outbox, SessionEvent, Weigh,
};
use rumqttc::{Publish, QoS, SubscribeFilter};

use crate::common::{Mosquitto, Subscriber, TEST_TIMEOUT};

/// A message of the test: its number.
struct Item(u32);

impl Weigh for Item {
    fn weight(&self) -> usize {
        1
    }
}

/// The next event that `keep` wants, handing acknowledgements to `acks` on the way.
async fn until(
    s: &mut MqttSession,
    acks: &mut Vec<Ack>,
    keep: impl Fn(&SessionEvent) -> bool,
) -> SessionEvent {
    tokio::time::timeout(TEST_TIMEOUT, async {
        loop {
            match s.next().await {
                SessionEvent::Due => s.connect(),
                ev if keep(&ev) => return ev,
                SessionEvent::Acks(a) => acks.extend(a),
                _ => {}
            }
        }
    })
    .await
    .expect("session event in time")
}

#[tokio::test]
async fn subscribes_on_every_connack_and_acks_in_order_across_a_restart() {
    let mut broker = Mosquitto::start();
    let settings = MqttClientSettings::new(broker.url(), "driver-test");
    let backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(200));
    let mut s = MqttSession::new(settings, backoff, 16).subscribe(vec![SubscribeFilter::new(
        "drv/in/#".into(),
        QoS::AtLeastOnce,
    )]);
    let mut acks = Vec::new();
    let ev = until(&mut s, &mut acks, |e| {
        matches!(e, SessionEvent::Connected(_))
    })
    .await;
    let SessionEvent::Connected(c) = ev else {
        unreachable!()
    };
    assert!(!c.again && c.subscribed && s.is_connected());
    until(&mut s, &mut acks, |e| matches!(e, SessionEvent::SubAck(_))).await;

    // Five publishes through the outbox: written and acknowledged in order.
    let mut outbox = Outbox::new();
    for i in 0..5 {
        outbox.push_back(Item(i));
    }
    let mut batch = Vec::new();
    while let Some(it) = outbox.pop() {
        batch.push(Publish::new(
            format!("drv/out/{}", it.0),
            QoS::AtLeastOnce,
            "x",
        ));
        outbox.handed(it);
    }
    assert!(s.publish(batch).is_ok());
    let mut done = Vec::new();
    tokio::time::timeout(TEST_TIMEOUT, async {
        while done.len() < 5 {
            for a in std::mem::take(&mut acks) {
                outbox.ack(a, |d| {
                    if let Delivery::Done(it) = d {
                        done.push(it.0)
                    }
                });
            }
            if done.len() < 5 {
                if let SessionEvent::Acks(a) = s.next().await {
                    acks = a;
                }
            }
        }
    })
    .await
    .expect("five PUBACKs");
    assert_eq!(done, [0, 1, 2, 3, 4]);
    assert!(outbox.is_empty() && outbox.weight() == 0);

    broker.publish("drv/in/a", "one").await;
    let SessionEvent::Message(m) =
        until(&mut s, &mut acks, |e| matches!(e, SessionEvent::Message(_))).await
    else {
        unreachable!()
    };
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("drv/in/a", &b"one"[..])
    );

    // The broker goes away: down with a cause, then attempts with backoff until it is back.
    broker.stop();
    let SessionEvent::Down(d) =
        until(&mut s, &mut acks, |e| matches!(e, SessionEvent::Down(_))).await
    else {
        unreachable!()
    };
    assert!(
        d.was_connected && d.new_cause && !d.cause.is_empty(),
        "{d:?}"
    );
    assert!(!s.is_linked());
    let SessionEvent::Down(d) =
        until(&mut s, &mut acks, |e| matches!(e, SessionEvent::Down(_))).await
    else {
        unreachable!()
    };
    assert!(!d.was_connected && d.error.is_some(), "{d:?}");
    broker.restart();
    let ev = until(&mut s, &mut acks, |e| {
        matches!(e, SessionEvent::Connected(_))
    })
    .await;
    let SessionEvent::Connected(c) = ev else {
        unreachable!()
    };
    assert!(c.again && c.subscribed);
    // A clean session: the messages come only because the filter was subscribed again.
    until(&mut s, &mut acks, |e| matches!(e, SessionEvent::SubAck(_))).await;
    broker.publish("drv/in/b", "two").await;
    let SessionEvent::Message(m) =
        until(&mut s, &mut acks, |e| matches!(e, SessionEvent::Message(_))).await
    else {
        unreachable!()
    };
    assert_eq!(m.topic, "drv/in/b");

    s.disconnect();
    until(&mut s, &mut acks, |e| matches!(e, SessionEvent::Closed)).await;
    assert!(!s.is_linked());
}

/// Publishes handed in batches larger than the in-flight window all reach the broker, in
/// order, each written and acknowledged once; more than the queue holds is handed back; a
/// DISCONNECT asked right after the last batch goes out after it.
#[tokio::test]
async fn batches_beyond_the_window_arrive_in_order_then_the_disconnect() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::connect(broker.port, "drv/batch/#").await;
    let mut settings = MqttClientSettings::new(broker.url(), "driver-batch");
    settings.inflight = Some(4);
    let backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(200));
    let mut s = MqttSession::new(settings, backoff, 64);
    let one = || vec![Publish::new("drv/batch/x", QoS::AtLeastOnce, "x")];
    assert!(s.publish(one()).is_err(), "no connection yet");
    let mut acks = Vec::new();
    until(&mut s, &mut acks, |e| {
        matches!(e, SessionEvent::Connected(_))
    })
    .await;
    assert!(s.publish(vec![]).is_ok());

    let batch = |from: u32, to: u32| -> Vec<Publish> {
        (from..to)
            .map(|i| Publish::new(format!("drv/batch/{i}"), QoS::AtLeastOnce, i.to_string()))
            .collect()
    };
    assert!(s.publish(batch(0, 30)).is_ok());
    assert!(s.publish(batch(30, 60)).is_ok());
    // 60 queued (at most 4 of them written so far): 5 more do not fit in 64.
    let back = s.publish(batch(60, 65)).expect_err("queue full");
    assert_eq!(back.len(), 5);
    assert!(s.publish(batch(60, 64)).is_ok());
    s.disconnect();

    let mut sent = Vec::new();
    let mut acked = Vec::new();
    tokio::time::timeout(TEST_TIMEOUT, async {
        loop {
            match s.next().await {
                SessionEvent::Acks(a) => {
                    for a in a {
                        match a {
                            Ack::Sent(p) => sent.push(p),
                            Ack::Acked(p) => acked.push(p),
                        }
                    }
                }
                SessionEvent::Closed => break,
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .expect("closed in time");
    // Packet ids wrap at the window: 64 written, never more than 4 unacknowledged.
    assert_eq!(sent.len(), 64);
    assert!(sent.iter().all(|p| (1..=4).contains(p)), "{sent:?}");
    assert!(
        acked.len() >= 60,
        "the DISCONNECT waits only for room to write"
    );
    assert!(!s.is_linked());

    let got = sub.collect_until(TEST_TIMEOUT, |m| m.len() >= 64).await;
    assert!(got, "64 messages at the broker");
    sub.drain();
    let order: Vec<u64> = sub.seen.iter().filter_map(|m| m.json.as_u64()).collect();
    assert_eq!(order, (0..64).collect::<Vec<_>>());
}
