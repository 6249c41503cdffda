//! The Modbus read planner: merges a device's channels into as few read requests as possible.
//!
//! Input is one [`PlanItem`] per channel (table, first address, item count, and a group key,
//! the channel's poll interval). Channels that share a table and a key are sorted by address and
//! joined greedily into one request while the request stays within the item limit of the table
//! (125 registers / 2000 bits by protocol, less if the device says so) and every hole of unused
//! items it reads is at most `max_gap`. The poller then issues one request per
//! [`ReadRequest`] and hands each channel its slice of the answer.
//!
//! Greedy by start address is optimal here: the first request must start at the first address,
//! and taking every channel that still fits can only leave later requests with less to cover.
//! The property tests check that against a brute-force search.

use std::collections::BTreeMap;

use crate::modbus::codec::{Table, MAX_BITS_PER_READ, MAX_REGISTERS_PER_READ};

/// One channel, as the planner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlanItem {
    /// Channels are only merged with channels of the same key (the poll interval in ms).
    pub key: u64,
    /// The table the channel is read from.
    pub table: Table,
    /// First register or bit.
    pub address: u16,
    /// Registers or bits the channel spans (at least 1).
    pub count: u16,
}

impl PlanItem {
    /// The last address, widened so that `0xFFFF + n` cannot overflow.
    fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.count.max(1)) - 1
    }
}

/// Limits for one device's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most registers per request (1..=125).
    pub max_registers: u16,
    /// Most bits per request (1..=2000).
    pub max_bits: u16,
    /// Most unused registers a request may read to join two ranges (bit tables allow 16× this
    /// many bits, the same number of bytes on the wire).
    pub max_gap: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_registers: MAX_REGISTERS_PER_READ,
            max_bits: MAX_BITS_PER_READ,
            max_gap: 8,
        }
    }
}

impl Limits {
    /// Items per request for `table`, capped at the protocol limit.
    pub fn max_items(&self, table: Table) -> u16 {
        let l = if table.is_bits() {
            self.max_bits
        } else {
            self.max_registers
        };
        l.clamp(1, table.protocol_limit())
    }

    /// Unused items a request of `table` may read between two channels.
    pub fn gap(&self, table: Table) -> u32 {
        if table.is_bits() {
            u32::from(self.max_gap) * 16
        } else {
            u32::from(self.max_gap)
        }
    }
}

/// One planned read request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    /// The group key of its channels.
    pub key: u64,
    /// The table to read.
    pub table: Table,
    /// First address.
    pub address: u16,
    /// Items to read.
    pub count: u16,
    /// Indices (into the planner's input) of the channels this request covers, by address.
    pub items: Vec<usize>,
}

impl ReadRequest {
    /// The offset of an address inside this request's answer.
    pub fn offset(&self, address: u16) -> usize {
        usize::from(address - self.address)
    }
}

/// Plans the requests for `items`. Every item lands in exactly one request. An item larger than
/// the limit (which config validation rejects) gets a request of its own.
///
/// Requests come out ordered by key, table and address.
pub fn plan(items: &[PlanItem], limits: &Limits) -> Vec<ReadRequest> {
    let mut groups: BTreeMap<(u64, Table), Vec<usize>> = BTreeMap::new();
    for (i, it) in items.iter().enumerate() {
        groups.entry((it.key, it.table)).or_default().push(i);
    }
    let mut out = Vec::new();
    for ((key, table), mut idx) in groups {
        idx.sort_by_key(|&i| (items[i].address, items[i].end()));
        let max = u32::from(limits.max_items(table));
        let gap = limits.gap(table);
        let mut cur: Option<(u32, u32, Vec<usize>)> = None;
        for i in idx {
            let it = &items[i];
            let (start, end) = (u32::from(it.address), it.end());
            if let Some((s, e, members)) = cur.as_mut() {
                let hole = start.saturating_sub(*e + 1);
                let new_end = (*e).max(end);
                if hole <= gap && new_end - *s < max {
                    *e = new_end;
                    members.push(i);
                    continue;
                }
            }
            if let Some((s, e, members)) = cur.take() {
                out.push(request(key, table, s, e, members));
            }
            cur = Some((start, end, vec![i]));
        }
        if let Some((s, e, members)) = cur {
            out.push(request(key, table, s, e, members));
        }
    }
    out
}

fn request(key: u64, table: Table, start: u32, end: u32, items: Vec<usize>) -> ReadRequest {
    ReadRequest {
        key,
        table,
        address: start as u16,
        // An oversized item (rejected by validation) is clamped; the request then fails on the
        // wire instead of the planner panicking.
        count: (end - start + 1).min(u32::from(u16::MAX)) as u16,
        items,
    }
}

/// Splits a request into one request per channel, for when the merged request drew an
/// exception and the poller needs to find which channels are really at fault.
pub fn split(req: &ReadRequest, items: &[PlanItem]) -> Vec<ReadRequest> {
    req.items
        .iter()
        .map(|&i| {
            let it = &items[i];
            request(req.key, req.table, it.address.into(), it.end(), vec![i])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn item(table: Table, address: u16, count: u16) -> PlanItem {
        PlanItem {
            key: 1000,
            table,
            address,
            count,
        }
    }

    fn limits(max_registers: u16, max_gap: u16) -> Limits {
        Limits {
            max_registers,
            max_bits: 2000,
            max_gap,
        }
    }

    #[test]
    fn adjacent_channels_merge() {
        let items = [
            item(Table::Holding, 0, 2),
            item(Table::Holding, 2, 2),
            item(Table::Holding, 4, 1),
        ];
        let p = plan(&items, &Limits::default());
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].address, p[0].count), (0, 5));
        assert_eq!(p[0].items, vec![0, 1, 2]);
    }

    #[test]
    fn gap_decides_merging() {
        let items = [item(Table::Input, 0, 2), item(Table::Input, 12, 2)];
        // Hole of 10 registers (2..=11).
        assert_eq!(plan(&items, &limits(125, 10)).len(), 1);
        assert_eq!(plan(&items, &limits(125, 9)).len(), 2);
        assert_eq!(plan(&items, &limits(125, 0)).len(), 2);
    }

    #[test]
    fn limit_splits_requests() {
        let items: Vec<_> = (0..130).map(|a| item(Table::Holding, a, 1)).collect();
        let p = plan(&items, &Limits::default());
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].address, p[0].count), (0, 125));
        assert_eq!((p[1].address, p[1].count), (125, 5));
        // A device that declares a smaller limit.
        assert_eq!(plan(&items, &limits(10, 8)).len(), 13);
        // A value never straddles two requests.
        let items: Vec<_> = (0..63).map(|i| item(Table::Holding, i * 2, 2)).collect();
        let p = plan(&items, &Limits::default());
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].count, 124);
    }

    #[test]
    fn tables_and_intervals_stay_apart() {
        let mut items = vec![
            item(Table::Holding, 0, 1),
            item(Table::Input, 1, 1),
            item(Table::Coil, 0, 1),
            item(Table::Discrete, 1, 1),
            item(Table::Holding, 1, 1),
        ];
        items[4].key = 5000;
        let p = plan(&items, &Limits::default());
        assert_eq!(p.len(), 5);
    }

    #[test]
    fn bits_use_bit_limits() {
        let items: Vec<_> = (0..2001).map(|a| item(Table::Coil, a, 1)).collect();
        let p = plan(&items, &Limits::default());
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].count, 2000);
        // Bit gaps are 16× the register gap.
        let items = [item(Table::Discrete, 0, 1), item(Table::Discrete, 129, 1)];
        assert_eq!(plan(&items, &limits(125, 8)).len(), 1);
        assert_eq!(plan(&items, &limits(125, 7)).len(), 2);
    }

    #[test]
    fn overlapping_channels_share_a_request() {
        // A u32 and the bits of its low register.
        let items = [
            item(Table::Holding, 10, 2),
            item(Table::Holding, 11, 1),
            item(Table::Holding, 11, 1),
        ];
        let p = plan(&items, &Limits::default());
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].address, p[0].count), (10, 2));
        assert_eq!(p[0].offset(11), 1);
    }

    #[test]
    fn top_of_address_space() {
        let items = [
            item(Table::Holding, 65532, 4),
            item(Table::Holding, 65535, 1),
        ];
        let p = plan(&items, &Limits::default());
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].address, p[0].count), (65532, 4));
    }

    #[test]
    fn split_gives_one_request_per_channel() {
        let items = [item(Table::Holding, 0, 2), item(Table::Holding, 4, 4)];
        let p = plan(&items, &Limits::default());
        assert_eq!(p.len(), 1);
        let s = split(&p[0], &items);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[1].address, s[1].count, s[1].items.clone()),
            (4, 4, vec![1])
        );
    }

    /// Is a set of items readable in one request?
    fn feasible(items: &[PlanItem], members: &[usize], l: &Limits) -> bool {
        let t = items[members[0]].table;
        if members
            .iter()
            .any(|&i| items[i].table != t || items[i].key != items[members[0]].key)
        {
            return false;
        }
        let mut r: Vec<(u32, u32)> = members
            .iter()
            .map(|&i| (u32::from(items[i].address), items[i].end()))
            .collect();
        r.sort();
        let start = r[0].0;
        let mut end = r[0].1;
        for &(s, e) in &r[1..] {
            if s.saturating_sub(end + 1) > l.gap(t) {
                return false;
            }
            end = end.max(e);
        }
        end - start < u32::from(l.max_items(t))
    }

    /// Same table and key, and the span within the limit (gaps aside).
    fn spans_ok(items: &[PlanItem], members: &[usize], l: &Limits) -> bool {
        let first = &items[members[0]];
        let same = members
            .iter()
            .all(|&i| items[i].table == first.table && items[i].key == first.key);
        let start = members.iter().map(|&i| u32::from(items[i].address)).min();
        let end = members.iter().map(|&i| items[i].end()).max();
        same && end.unwrap_or(0) - start.unwrap_or(0) < u32::from(l.max_items(first.table))
    }

    /// The fewest requests any partition needs (exhaustive; small inputs only).
    fn optimum(items: &[PlanItem], l: &Limits) -> usize {
        fn go(
            i: usize,
            items: &[PlanItem],
            l: &Limits,
            groups: &mut Vec<Vec<usize>>,
            best: &mut usize,
        ) {
            if groups.len() >= *best {
                return;
            }
            if i == items.len() {
                if groups.iter().all(|g| feasible(items, g, l)) {
                    *best = groups.len();
                }
                return;
            }
            for g in 0..groups.len() {
                groups[g].push(i);
                // Only the span is monotone; a later item may still bridge a gap.
                if spans_ok(items, &groups[g], l) {
                    go(i + 1, items, l, groups, best);
                }
                groups[g].pop();
            }
            groups.push(vec![i]);
            go(i + 1, items, l, groups, best);
            groups.pop();
        }
        let mut best = items.len() + 1;
        go(0, items, l, &mut Vec::new(), &mut best);
        best
    }

    fn arb_items(max_len: usize, span: u16) -> impl Strategy<Value = Vec<PlanItem>> {
        prop::collection::vec(
            (
                prop::sample::select(vec![Table::Holding, Table::Input, Table::Coil]),
                0..span,
                prop::sample::select(vec![1u16, 1, 1, 2, 2, 4, 6]),
                prop::sample::select(vec![100u64, 1000]),
            )
                .prop_map(|(table, address, count, key)| PlanItem {
                    key,
                    table,
                    address,
                    count,
                }),
            0..max_len,
        )
    }

    fn arb_limits() -> impl Strategy<Value = Limits> {
        (6u16..=125, 6u16..=2000, 0u16..=6).prop_map(|(r, b, g)| Limits {
            max_registers: r,
            max_bits: b,
            max_gap: g,
        })
    }

    proptest! {
        #[test]
        fn every_channel_once_and_within_limits(items in arb_items(60, 300), l in arb_limits()) {
            let p = plan(&items, &l);
            let mut seen = vec![0u32; items.len()];
            for r in &p {
                prop_assert!(r.count >= 1);
                prop_assert!(r.count <= l.max_items(r.table), "{r:?} over {l:?}");
                prop_assert!(u32::from(r.address) + u32::from(r.count) <= 65536);
                prop_assert!(feasible(&items, &r.items, &l), "infeasible {r:?}");
                for &i in &r.items {
                    seen[i] += 1;
                    let it = &items[i];
                    prop_assert_eq!((it.table, it.key), (r.table, r.key));
                    prop_assert!(it.address >= r.address);
                    prop_assert!(it.end() < u32::from(r.address) + u32::from(r.count));
                }
            }
            prop_assert!(seen.iter().all(|&n| n == 1), "coverage {seen:?}");
        }

        #[test]
        fn no_more_requests_than_needed(items in arb_items(8, 40), l in arb_limits()) {
            let l = Limits { max_registers: l.max_registers.min(12), ..l };
            let p = plan(&items, &l);
            prop_assert_eq!(p.len(), optimum(&items, &l), "{:?}", p);
        }

        #[test]
        fn disjoint_channels_within_the_gap_need_ceil_requests(
            n in 1usize..200, width in 1u16..=4, hole in 0u16..=4, max_gap in 0u16..=4,
        ) {
            // Evenly spaced channels: the plan must need exactly what arithmetic says.
            let stride = width + hole;
            let items: Vec<_> = (0..n as u16).map(|i| item(Table::Holding, i * stride, width)).collect();
            let l = limits(125, max_gap);
            let p = plan(&items, &l);
            let want = if hole > max_gap {
                n
            } else {
                // Channels per request: k with (k - 1) * stride + width <= 125.
                let k = usize::from((125 - width) / stride + 1);
                n.div_ceil(k)
            };
            prop_assert_eq!(p.len(), want);
        }
    }
}
