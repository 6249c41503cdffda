//! The S7 read planner: turns the channels of one poll group into as few read-var requests as
//! the negotiated PDU allows.
//!
//! 1. **Blocks.** Channels of one area (one DB, M, I, Q, C or T) are sorted by address and
//!    merged into a block while the hole between them is at most `max_gap` bytes: a separate
//!    item costs 12 bytes of request and 4 (+1 padding) of answer, so reading a few unused
//!    bytes is cheaper than a second item. A block stays within what one item of an answer
//!    can carry (PDU − 18 bytes); only a single value longer than that (a long STRING on a
//!    240-byte PDU) is split into several pieces.
//! 2. **Requests.** Pieces are packed first-fit into requests, each within the PLC's item
//!    limit (`max_items`), with its request (10 + 2 + 12 per item) and its answer (12 + 2 +
//!    4 + data + padding per item) within the negotiated PDU.
//!
//! The poller copies each piece of an answer into its block's buffer and decodes the channels
//! from there; an item the PLC refuses marks only the channels of its block bad (and a merged
//! block that draws a refusal is planned again channel by channel, see the poller).

use super::address::Area;
use super::wire::{read_answer_len, read_request_len, ACK_HEADER, ITEM_HEADER};

/// A channel's span, in units of its area (bytes, or counters/timers of 2 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The area.
    pub area: Area,
    /// First unit.
    pub start: u32,
    /// Units (at least 1).
    pub len: u32,
}

impl Span {
    fn end(&self) -> u32 {
        self.start + self.len.max(1)
    }
}

/// What to plan for one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanItem {
    /// The channel (index in the device's config).
    pub channel: u32,
    /// Where it is.
    pub span: Span,
    /// Read on its own, never merged (after its merged block drew a refusal).
    pub solo: bool,
}

/// Limits of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The negotiated PDU size in bytes.
    pub pdu: usize,
    /// Most items in one request.
    pub max_items: usize,
    /// Most unused bytes read to merge two channels into one item.
    pub max_gap: u32,
}

impl Limits {
    /// Bytes of data one item of an answer can carry.
    pub fn item_capacity(&self) -> usize {
        self.pdu.saturating_sub(ACK_HEADER + 2 + ITEM_HEADER).max(2)
    }
}

/// Consecutive units of one area read for one or more channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The area.
    pub area: Area,
    /// First unit.
    pub start: u32,
    /// Units.
    pub len: u32,
    /// The channels it holds.
    pub channels: Vec<u32>,
}

impl Block {
    /// Bytes the block spans.
    pub fn bytes(&self) -> usize {
        (self.len * self.area.unit_bytes()) as usize
    }
}

/// One item of a request: a part of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// Index of the block in [`Plan::blocks`].
    pub block: u32,
    /// First unit, relative to the block's start.
    pub offset: u32,
    /// Units.
    pub len: u32,
}

/// One read-var request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Its items.
    pub pieces: Vec<Piece>,
}

/// The plan of one poll group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The blocks read.
    pub blocks: Vec<Block>,
    /// The requests that read them.
    pub requests: Vec<Request>,
}

/// Plans the reads of `items` within `limits`.
pub fn plan(items: &[PlanItem], limits: &Limits) -> Plan {
    let mut sorted: Vec<&PlanItem> = items.iter().collect();
    sorted.sort_by_key(|i| (i.span.area, i.span.start, i.span.len));
    let cap_bytes = limits.item_capacity() as u32;
    let mut blocks: Vec<Block> = Vec::new();
    let mut open: Option<usize> = None;
    for it in sorted {
        let s = it.span;
        let unit = s.area.unit_bytes();
        let cap = (cap_bytes / unit).max(1);
        let gap = limits.max_gap / unit;
        if let Some(b) = open.map(|i| &mut blocks[i]) {
            let end = b.start + b.len;
            let fits = s.end().max(end) - b.start <= cap;
            if b.area == s.area && s.start <= end + gap && fits {
                b.len = s.end().max(end) - b.start;
                b.channels.push(it.channel);
                continue;
            }
        }
        blocks.push(Block {
            area: s.area,
            start: s.start,
            len: s.len.max(1),
            channels: vec![it.channel],
        });
        open = (!it.solo).then_some(blocks.len() - 1);
    }
    // Pieces, packed first-fit into requests.
    let mut requests: Vec<(Request, usize)> = Vec::new();
    for (bi, b) in blocks.iter().enumerate() {
        let unit = b.area.unit_bytes();
        let cap = (cap_bytes / unit).max(1);
        let mut offset = 0;
        while offset < b.len {
            let len = (b.len - offset).min(cap);
            let bytes = (len * unit) as usize;
            let piece = Piece {
                block: bi as u32,
                offset,
                len,
            };
            let add = ITEM_HEADER + bytes + (bytes & 1);
            let slot = requests.iter_mut().find(|(r, answer)| {
                let n = r.pieces.len() + 1;
                n <= limits.max_items
                    && read_request_len(n) <= limits.pdu
                    && answer + add <= limits.pdu
            });
            match slot {
                Some((r, answer)) => {
                    r.pieces.push(piece);
                    *answer += add;
                }
                None => requests.push((
                    Request {
                        pieces: vec![piece],
                    },
                    read_answer_len(std::iter::once(bytes)),
                )),
            }
            offset += len;
        }
    }
    Plan {
        blocks,
        requests: requests.into_iter().map(|(r, _)| r).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item(channel: u32, area: Area, start: u32, len: u32) -> PlanItem {
        PlanItem {
            channel,
            span: Span { area, start, len },
            solo: false,
        }
    }

    const LIMITS: Limits = Limits {
        pdu: 240,
        max_items: 20,
        max_gap: 16,
    };

    #[test]
    fn neighbours_merge_and_areas_do_not() {
        let items = [
            item(0, Area::Db(1), 0, 4),
            item(1, Area::Db(1), 4, 2),
            item(2, Area::Db(1), 6, 1),
            item(3, Area::Db(1), 30, 4),
            item(4, Area::Db(1), 60, 4),
            item(5, Area::Db(2), 0, 4),
            item(6, Area::Flags, 0, 1),
            item(7, Area::Counters, 3, 1),
            item(8, Area::Counters, 5, 1),
        ];
        let p = plan(&items, &LIMITS);
        let spans: Vec<_> = p
            .blocks
            .iter()
            .map(|b| (b.area, b.start, b.len, b.channels.clone()))
            .collect();
        assert_eq!(
            spans,
            vec![
                (Area::Flags, 0, 1, vec![6]),
                // A gap of 23 bytes costs more than a second item (16): not merged.
                (Area::Db(1), 0, 7, vec![0, 1, 2]),
                (Area::Db(1), 30, 4, vec![3]),
                (Area::Db(1), 60, 4, vec![4]),
                (Area::Db(2), 0, 4, vec![5]),
                (Area::Counters, 3, 3, vec![7, 8]),
            ]
        );
        assert_eq!(p.requests.len(), 1);
    }

    #[test]
    fn solo_items_stay_apart() {
        let mut items = [item(0, Area::Db(1), 0, 2), item(1, Area::Db(1), 2, 2)];
        items[0].solo = true;
        items[1].solo = true;
        assert_eq!(plan(&items, &LIMITS).blocks.len(), 2);
    }

    #[test]
    fn many_dbs_spread_over_requests_within_the_item_limit() {
        let items: Vec<_> = (0..50)
            .map(|i| item(i, Area::Db(i as u16 + 1), 0, 4))
            .collect();
        let p = plan(&items, &LIMITS);
        // 240 bytes: the request holds (240 - 12) / 12 = 19 items, the answer (240 - 14) / 8 = 28.
        assert!(p.requests.iter().all(|r| r.pieces.len() <= 19));
        assert_eq!(p.requests.len(), 3);
    }

    #[test]
    fn a_long_value_is_split_into_pieces() {
        let items = [item(0, Area::Db(1), 10, 256)];
        let p = plan(&items, &LIMITS);
        assert_eq!(p.blocks.len(), 1);
        let pieces: Vec<_> = p.requests.iter().flat_map(|r| r.pieces.clone()).collect();
        assert_eq!(pieces.iter().map(|p| p.len).sum::<u32>(), 256);
        assert!(pieces
            .iter()
            .all(|p| p.len as usize <= LIMITS.item_capacity()));
    }

    fn arb_item() -> impl Strategy<Value = (u8, u32, u32)> {
        (0u8..6, 0u32..600, 1u32..300)
    }

    proptest! {
        #[test]
        fn every_plan_fits_and_covers(
            raw in proptest::collection::vec(arb_item(), 1..80),
            pdu in prop_oneof![Just(240usize), Just(480), Just(960)],
            max_items in 1usize..25,
            max_gap in 0u32..40,
        ) {
            let limits = Limits { pdu, max_items, max_gap };
            let items: Vec<PlanItem> = raw.iter().enumerate().map(|(i, (a, start, len))| {
                let area = match a { 0 => Area::Flags, 1 => Area::Counters, 2 => Area::Inputs,
                                     n => Area::Db(u16::from(*n)) };
                item(i as u32, area, *start, if area.is_numbered() { 1 + len % 4 } else { *len })
            }).collect();
            let p = plan(&items, &limits);
            // Every request and answer within the PDU and the item limit.
            for r in &p.requests {
                prop_assert!(!r.pieces.is_empty() && r.pieces.len() <= max_items);
                prop_assert!(read_request_len(r.pieces.len()) <= pdu);
                let lens = r.pieces.iter().map(|pc| {
                    (pc.len * p.blocks[pc.block as usize].area.unit_bytes()) as usize
                });
                prop_assert!(read_answer_len(lens) <= pdu);
            }
            // Every block read exactly once, piece by piece.
            for (bi, b) in p.blocks.iter().enumerate() {
                let mut pieces: Vec<Piece> = p.requests.iter().flat_map(|r| r.pieces.iter())
                    .filter(|pc| pc.block as usize == bi).copied().collect();
                pieces.sort_by_key(|pc| pc.offset);
                let mut at = 0;
                for pc in pieces { prop_assert_eq!(pc.offset, at); at += pc.len; }
                prop_assert_eq!(at, b.len);
            }
            // Every channel inside its one block.
            for it in &items {
                let holders: Vec<&Block> = p.blocks.iter()
                    .filter(|b| b.channels.contains(&it.channel)).collect();
                prop_assert_eq!(holders.len(), 1);
                let b = holders[0];
                prop_assert!(b.area == it.span.area && b.start <= it.span.start
                    && it.span.end() <= b.start + b.len);
            }
        }
    }
}
