//! The publisher's outbox: every message a sink has taken on and the broker has not yet
//! acknowledged, so that delivery means a PUBACK, not a write to a socket.
//!
//! An item goes through three stages: **unsent** (queued), **handed** to the rumqttc client
//! (no packet id yet), **in flight** (written with a packet id, waiting for its PUBACK). rumqttc
//! hands out packet ids in request order, so the n-th written publish ([`Ack::Sent`]) is the
//! n-th item handed; a QoS 0 publish (packet id 0) is done once written. A QoS 1 broker
//! acknowledges in order (MQTT 3.1.1, 4.6), so an [`Ack::Acked`] is almost always the oldest
//! item in flight; another one is looked up. When a connection is lost, [`Outbox::requeue`]
//! puts what was handed or in flight back at the front, oldest first, to be sent again on the
//! next connection (at least once).
//!
//! The owner bounds it by a weight of its choice ([`Weigh`]: readings, say), kept per stage so
//! that "how much is held" costs nothing to ask. Items are whatever the owner renders when it
//! sends (a reference into a batch, a birth to build): the outbox never looks inside.

use std::collections::VecDeque;

use super::session::Ack;

/// What an item weighs towards its owner's bound (readings, for the sinks).
pub trait Weigh {
    /// The item's weight; zero for items that do not count (status messages).
    fn weight(&self) -> usize;
}

/// What an acknowledgement did to an item ([`Outbox::ack`]).
#[derive(Debug)]
pub enum Delivery<'a, T> {
    /// The item was written to the connection.
    Written(&'a T),
    /// The broker has the item (PUBACK, or written at QoS 0): it left the outbox.
    Done(T),
    /// A written packet without an item handed: nothing to do (logged by the owner).
    Stray(u16),
}

/// Items not yet acknowledged, in order (see the module docs).
#[derive(Debug)]
pub struct Outbox<T> {
    unsent: VecDeque<T>,
    handed: VecDeque<T>,
    inflight: VecDeque<(u16, T)>,
    unsent_weight: usize,
    sent_weight: usize,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Outbox {
            unsent: VecDeque::new(),
            handed: VecDeque::new(),
            inflight: VecDeque::new(),
            unsent_weight: 0,
            sent_weight: 0,
        }
    }
}

impl<T: Weigh> Outbox<T> {
    /// An empty outbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Items in every stage.
    pub fn len(&self) -> usize {
        self.unsent.len() + self.handed.len() + self.inflight.len()
    }

    /// Nothing left to deliver.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items not yet handed to the client.
    pub fn unsent_len(&self) -> usize {
        self.unsent.len()
    }

    /// Items handed to the client or in flight: what counts against the window.
    pub fn in_flight(&self) -> usize {
        self.handed.len() + self.inflight.len()
    }

    /// The weight of every item not acknowledged.
    pub fn weight(&self) -> usize {
        self.unsent_weight + self.sent_weight
    }

    /// The weight of the items not yet handed to the client.
    pub fn unsent_weight(&self) -> usize {
        self.unsent_weight
    }

    /// Queues an item at the back.
    pub fn push_back(&mut self, item: T) {
        self.unsent_weight += item.weight();
        self.unsent.push_back(item);
    }

    /// Queues an item at the front: it goes out next (a status after a reconnect, an item
    /// the client could not take).
    pub fn push_front(&mut self, item: T) {
        self.unsent_weight += item.weight();
        self.unsent.push_front(item);
    }

    /// Takes the next item to send; give it back with [`Outbox::handed`] once the client took
    /// it, or with [`Outbox::push_front`] when it did not.
    pub fn pop(&mut self) -> Option<T> {
        let item = self.unsent.pop_front()?;
        self.unsent_weight -= item.weight();
        Some(item)
    }

    /// The client took `item`: it waits for its packet id.
    pub fn handed(&mut self, item: T) {
        self.sent_weight += item.weight();
        self.handed.push_back(item);
    }

    /// Takes one acknowledgement of the connection, telling `f` what it did.
    pub fn ack(&mut self, ack: Ack, mut f: impl FnMut(Delivery<'_, T>)) {
        match ack {
            Ack::Sent(pkid) => {
                let Some(item) = self.handed.pop_front() else {
                    return f(Delivery::Stray(pkid));
                };
                f(Delivery::Written(&item));
                if pkid == 0 {
                    self.sent_weight -= item.weight();
                    f(Delivery::Done(item));
                } else {
                    self.inflight.push_back((pkid, item));
                }
            }
            Ack::Acked(pkid) => {
                let at = match self.inflight.front() {
                    Some((p, _)) if *p == pkid => Some(0),
                    _ => self.inflight.iter().position(|(p, _)| *p == pkid),
                };
                if let Some((_, item)) = at.and_then(|i| self.inflight.remove(i)) {
                    self.sent_weight -= item.weight();
                    f(Delivery::Done(item));
                }
            }
        }
    }

    /// The connection is gone: every item handed or in flight goes back to the front of the
    /// unsent ones, oldest first (the next connection sends it again).
    pub fn requeue(&mut self) {
        for item in self.handed.drain(..).rev() {
            self.unsent.push_front(item);
        }
        for (_, item) in self.inflight.drain(..).rev() {
            self.unsent.push_front(item);
        }
        self.unsent_weight += self.sent_weight;
        self.sent_weight = 0;
    }

    /// Keeps, in order, what `keep` returns for each unsent item (changed or not), and drops
    /// the rest (what is not worth sending again after a reconnect).
    pub fn retain_map(&mut self, mut keep: impl FnMut(T) -> Option<T>) {
        let n = self.unsent.len();
        self.unsent_weight = 0;
        for _ in 0..n {
            let item = self.unsent.pop_front().expect("counted");
            if let Some(item) = keep(item) {
                self.unsent_weight += item.weight();
                self.unsent.push_back(item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An item: its number and its weight.
    #[derive(Debug, PartialEq)]
    struct It(u32, usize);

    impl Weigh for It {
        fn weight(&self) -> usize {
            self.1
        }
    }

    /// Hands `n` items to the client.
    fn hand(o: &mut Outbox<It>, n: usize) {
        for _ in 0..n {
            let it = o.pop().unwrap();
            o.handed(it);
        }
    }

    /// Applies acks, returning the numbers written and done.
    fn acks(o: &mut Outbox<It>, acks: &[Ack]) -> (Vec<u32>, Vec<u32>) {
        let (mut written, mut done) = (Vec::new(), Vec::new());
        for a in acks {
            o.ack(*a, |d| match d {
                Delivery::Written(it) => written.push(it.0),
                Delivery::Done(it) => done.push(it.0),
                Delivery::Stray(_) => {}
            });
        }
        (written, done)
    }

    #[test]
    fn stages_weights_and_in_order_acks() {
        let mut o = Outbox::new();
        for i in 0..5 {
            o.push_back(It(i, 2));
        }
        assert_eq!((o.len(), o.weight(), o.unsent_weight()), (5, 10, 10));
        hand(&mut o, 3);
        assert_eq!(
            (o.in_flight(), o.unsent_len(), o.unsent_weight()),
            (3, 2, 4)
        );
        assert_eq!(o.weight(), 10);
        let (w, d) = acks(&mut o, &[Ack::Sent(1), Ack::Sent(2), Ack::Acked(1)]);
        assert_eq!((w, d), (vec![0, 1], vec![0]));
        assert_eq!((o.len(), o.weight(), o.in_flight()), (4, 8, 2));
        // QoS 0: done once written.
        let (w, d) = acks(&mut o, &[Ack::Sent(0)]);
        assert_eq!((w, d), (vec![2], vec![2]));
        // An acknowledgement out of order is found; an unknown one changes nothing.
        hand(&mut o, 1);
        let (_, d) = acks(&mut o, &[Ack::Sent(3), Ack::Acked(3), Ack::Acked(9)]);
        assert_eq!(d, vec![3]);
        let (_, d) = acks(&mut o, &[Ack::Acked(2)]);
        assert_eq!(d, vec![1]);
        assert_eq!((o.len(), o.weight()), (1, 2));
        // A packet written without an item handed is stray.
        let mut stray = None;
        o.ack(Ack::Sent(7), |d| {
            if let Delivery::Stray(p) = d {
                stray = Some(p)
            }
        });
        assert_eq!(stray, Some(7));
    }

    #[test]
    fn requeue_puts_everything_back_oldest_first() {
        let mut o = Outbox::new();
        for i in 0..6 {
            o.push_back(It(i, 1));
        }
        hand(&mut o, 4);
        // 0 acknowledged, 1 and 2 in flight, 3 handed, 4 and 5 unsent.
        acks(
            &mut o,
            &[Ack::Sent(1), Ack::Sent(2), Ack::Sent(3), Ack::Acked(1)],
        );
        o.requeue();
        assert_eq!((o.in_flight(), o.unsent_len(), o.weight()), (0, 5, 5));
        assert_eq!(o.unsent_weight(), 5);
        let order: Vec<u32> = std::iter::from_fn(|| o.pop()).map(|i| i.0).collect();
        assert_eq!(order, [1, 2, 3, 4, 5]);
        assert_eq!(o.weight(), 0);
    }

    #[test]
    fn retain_map_keeps_and_reweighs() {
        let mut o = Outbox::new();
        for i in 0..4 {
            o.push_back(It(i, 1));
        }
        o.push_front(It(9, 0));
        o.retain_map(|it| (it.0 % 2 == 1).then_some(It(it.0, 3)));
        assert_eq!((o.len(), o.unsent_weight()), (3, 9));
        let order: Vec<u32> = std::iter::from_fn(|| o.pop()).map(|i| i.0).collect();
        assert_eq!(order, [9, 1, 3]);
    }
}
