//! The expiry timer wheel of one shard (owner-private).
//!
//! IPVS gives every connection its own kernel timer. xvs keeps one wheel per shard: 1024
//! one-second buckets, each a doubly linked list threaded through the slots, so scheduling,
//! cancelling and firing are O(1) and expiry never scans the table.
//!
//! Timers are *lazy*: a packet only moves the deadline stored in the entry. When a bucket
//! fires, the owner compares each entry's real deadline with the clock and re-files the ones
//! that are still alive. So a busy ESTABLISHED flow costs one re-file per timeout period, not
//! one per packet. Deadlines beyond the wheel's span are filed at its far end and re-filed.

use crate::index::NIL;
use crate::timeouts::Secs;

/// Buckets in the wheel; one per second, so 17 minutes of span (ESTABLISHED is 15).
pub(crate) const WHEEL_SLOTS: u32 = 1024;

/// `filed` of a slot that is not on the wheel (zero, so the links array starts zeroed and
/// untouched: an empty table costs no resident memory for its timers).
const UNLINKED: u32 = 0;
/// `filed` of a slot whose bucket has fired and that waits in the ready list.
const READY: u32 = 1;
/// `filed` of a slot in a bucket is its tick plus this (ticks are seconds since the clock's
/// start, far below `u32::MAX - 2`).
const FILED_BASE: u32 = 2;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Link {
    prev: u32,
    next: u32,
    /// The tick whose bucket holds this slot (plus [`FILED_BASE`]), or READY / UNLINKED.
    filed: u32,
}

// SAFETY: three u32s; all-zero is "not on the wheel" (UNLINKED, NIL links).
unsafe impl crate::memory::ZeroIsValid for Link {}

#[derive(Debug)]
pub(crate) struct Wheel {
    heads: Box<[u32]>,
    links: Box<[Link]>,
    /// The last tick whose bucket was moved to the ready list.
    current: Secs,
    /// Slots whose bucket has fired and that wait to be examined.
    ready: u32,
}

impl Wheel {
    pub(crate) fn new(capacity: usize, now: Secs) -> Self {
        Wheel {
            heads: vec![NIL; WHEEL_SLOTS as usize].into_boxed_slice(),
            links: crate::memory::zeroed_slice(capacity),
            current: now,
            ready: NIL,
        }
    }

    /// The tick the wheel has been advanced to.
    #[cfg(test)]
    pub(crate) fn current(&self) -> Secs {
        self.current
    }

    /// The tick `slot` is filed under, if it is on the wheel.
    pub(crate) fn filed_at(&self, slot: u32) -> Option<Secs> {
        match self.links[slot as usize].filed {
            UNLINKED => None,
            READY => Some(self.current),
            filed => Some(filed - FILED_BASE),
        }
    }

    /// Files `slot` to fire at `deadline` (clamped into the wheel's span; an overdue
    /// deadline fires on the next tick).
    pub(crate) fn schedule(&mut self, slot: u32, deadline: Secs) {
        self.cancel(slot);
        self.file(slot, deadline);
    }

    /// [`schedule`](Self::schedule) for a slot that is not on the wheel (a slot just taken
    /// from the free list: freeing takes it off), without the cancel.
    #[inline]
    pub(crate) fn file(&mut self, slot: u32, deadline: Secs) {
        debug_assert_eq!(
            self.links[slot as usize].filed, UNLINKED,
            "slot {slot} is filed"
        );
        let at = deadline.clamp(
            self.current.wrapping_add(1),
            self.current.wrapping_add(WHEEL_SLOTS - 1),
        );
        let bucket = (at % WHEEL_SLOTS) as usize;
        let head = self.heads[bucket];
        if head != NIL {
            self.links[(head - 1) as usize].prev = slot + 1;
        }
        self.links[slot as usize] = Link {
            prev: NIL,
            next: head,
            filed: at + FILED_BASE,
        };
        self.heads[bucket] = slot + 1;
    }

    /// Takes `slot` off the wheel (no-op if it is not on it).
    pub(crate) fn cancel(&mut self, slot: u32) {
        let Link { prev, next, filed } = self.links[slot as usize];
        if filed == UNLINKED {
            return;
        }
        if next != NIL {
            self.links[(next - 1) as usize].prev = prev;
        }
        if prev != NIL {
            self.links[(prev - 1) as usize].next = next;
        } else if filed == READY {
            self.ready = next;
        } else {
            self.heads[((filed - FILED_BASE) % WHEEL_SLOTS) as usize] = next;
        }
        self.links[slot as usize].filed = UNLINKED;
    }

    /// The next slot whose bucket is due at `now`, taken off the wheel. The caller either
    /// frees it or files it again.
    pub(crate) fn pop_due(&mut self, now: Secs) -> Option<u32> {
        loop {
            if self.ready != NIL {
                let slot = self.ready - 1;
                self.cancel(slot);
                return Some(slot);
            }
            if self.current >= now {
                return None;
            }
            // After a long pause every bucket is due once; skip whole idle turns.
            if now - self.current > WHEEL_SLOTS {
                self.current = now - WHEEL_SLOTS;
            }
            self.current += 1;
            let bucket = (self.current % WHEEL_SLOTS) as usize;
            self.ready = std::mem::replace(&mut self.heads[bucket], NIL);
            let mut cur = self.ready;
            while cur != NIL {
                let link = &mut self.links[(cur - 1) as usize];
                link.filed = READY;
                cur = link.next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(w: &mut Wheel, now: Secs) -> Vec<u32> {
        let mut v = Vec::new();
        while let Some(s) = w.pop_due(now) {
            v.push(s);
        }
        v.sort();
        v
    }

    #[test]
    fn fires_at_deadline_not_before() {
        let mut w = Wheel::new(8, 100);
        w.schedule(1, 110);
        w.schedule(2, 105);
        assert!(drain(&mut w, 104).is_empty());
        assert_eq!(drain(&mut w, 105), vec![2]);
        assert!(drain(&mut w, 109).is_empty());
        assert_eq!(drain(&mut w, 110), vec![1]);
    }

    #[test]
    fn cancel_and_reschedule() {
        let mut w = Wheel::new(8, 0);
        w.schedule(1, 10);
        w.schedule(2, 10);
        w.schedule(3, 10);
        w.cancel(2);
        w.schedule(1, 20);
        assert_eq!(drain(&mut w, 10), vec![3]);
        assert_eq!(w.filed_at(1), Some(20));
        assert_eq!(drain(&mut w, 20), vec![1]);
        assert_eq!(w.filed_at(1), None);
    }

    #[test]
    fn far_deadlines_and_long_pauses() {
        let mut w = Wheel::new(8, 0);
        w.schedule(1, 5000); // beyond the span: filed at the far end
        let at = w.filed_at(1).unwrap();
        assert!((WHEEL_SLOTS - 1..5000).contains(&at));
        w.schedule(2, 3);
        // A pause of several turns still fires everything once.
        assert_eq!(drain(&mut w, 10_000), vec![1, 2]);
        assert_eq!(w.current(), 10_000);
    }

    #[test]
    fn overdue_fires_next_tick() {
        let mut w = Wheel::new(4, 50);
        w.schedule(0, 10);
        assert_eq!(drain(&mut w, 51), vec![0]);
    }

    #[test]
    fn cancel_from_ready_list() {
        let mut w = Wheel::new(4, 0);
        w.schedule(0, 1);
        w.schedule(1, 1);
        w.schedule(2, 1);
        let first = w.pop_due(1).unwrap();
        let other = (0..3)
            .find(|&s| s != first && w.filed_at(s).is_some())
            .unwrap();
        w.cancel(other);
        let rest = drain(&mut w, 1);
        assert_eq!(rest.len(), 1);
        assert!(!rest.contains(&other) && !rest.contains(&first));
    }
}
