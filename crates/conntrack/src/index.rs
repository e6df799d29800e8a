//! A chained hash index over a shard's slots, written by one thread and readable by all.
//!
//! This is how any worker resolves a NAT reply (or a persistence template) in a shard it does
//! not own without taking a lock. The design:
//! - buckets hold the first slot of a chain (`slot + 1`, 0 = empty), each slot holds the next
//!   link; all are atomics, so a reader never races with a plain write;
//! - only the shard's owner links and unlinks, and it brackets every change of bucket `b` with
//!   a *stripe* sequence counter (a seqlock: odd while writing);
//! - a reader walks the chain, copies what it needs, then re-reads the stripe counter: if it
//!   moved, something changed under it and it walks again. A slot is unlinked (bumping the
//!   stripe) before it is reused, so a reader can never accept a half-rewritten slot.
//!
//! Readers never write shared memory, so lookups from many workers do not bounce cache lines;
//! only the owner's rare link/unlink (once per connection, not per packet) invalidates one
//! stripe line.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicU32, Ordering, fence};

/// Empty bucket / end of chain.
pub(crate) const NIL: u32 = 0;

/// Bucket chains longer than this are treated as a torn read (a reader followed a link that
/// was being rewritten) and retried; honest chains at load factor <= 1 are far shorter.
const MAX_CHAIN: usize = 4096;

/// Stripes per index at most: enough that concurrent writes and reads rarely meet on one.
const STRIPES: usize = 4096;
/// Buckets per stripe at least, so small tables do not pay for a large stripe array.
const MIN_BUCKETS_PER_STRIPE: usize = 16;

#[derive(Debug)]
pub(crate) struct ChainIndex {
    heads: Box<[AtomicU32]>,
    stripes: Box<[AtomicU32]>,
    mask: usize,
}

impl ChainIndex {
    /// An index with at least `buckets` buckets (rounded up to a power of two).
    pub(crate) fn new(buckets: usize) -> Self {
        let n = buckets.max(16).next_power_of_two();
        ChainIndex {
            // Hashes scatter a few connections over the whole array: small pages.
            heads: crate::memory::zeroed_sparse_slice(n),
            stripes: (0..STRIPES.min(n / MIN_BUCKETS_PER_STRIPE))
                .map(|_| AtomicU32::new(0))
                .collect(),
            mask: n - 1,
        }
    }

    #[inline]
    pub(crate) fn bucket(&self, hash: u64) -> usize {
        (hash as usize) & self.mask
    }

    /// Starts loading the cache line of `bucket`'s head (batch lookups).
    #[inline]
    pub(crate) fn prefetch_bucket(&self, bucket: usize) {
        crate::memory::prefetch(&self.heads[bucket]);
    }

    /// The first slot of `bucket`'s chain, if any (owner-side batch lookups).
    #[inline]
    pub(crate) fn head(&self, bucket: usize) -> Option<u32> {
        match self.heads[bucket].load(Ordering::Relaxed) {
            NIL => None,
            s => Some(s - 1),
        }
    }

    #[inline]
    fn stripe(&self, bucket: usize) -> &AtomicU32 {
        &self.stripes[bucket & (self.stripes.len() - 1)]
    }

    /// Opens a write section on `bucket`'s stripe (owner only).
    #[inline]
    fn write_begin(&self, bucket: usize) -> u32 {
        let stripe = self.stripe(bucket);
        let v = stripe.load(Ordering::Relaxed);
        stripe.store(v.wrapping_add(1), Ordering::Relaxed);
        // Readers that see any of the writes below also see the odd counter.
        fence(Ordering::Release);
        v
    }

    #[inline]
    fn write_end(&self, bucket: usize, v: u32) {
        self.stripe(bucket)
            .store(v.wrapping_add(2), Ordering::Release);
    }

    /// Links `slot` at the head of `bucket` (owner only). `next` is the slot's link for this
    /// index.
    pub(crate) fn link(&self, bucket: usize, slot: u32, next: &AtomicU32) {
        let v = self.write_begin(bucket);
        next.store(
            self.heads[bucket].load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        self.heads[bucket].store(slot + 1, Ordering::Relaxed);
        self.write_end(bucket, v);
    }

    /// Unlinks `slot` from `bucket` (owner only). Returns false if it was not there.
    pub(crate) fn unlink<'a>(
        &'a self,
        bucket: usize,
        slot: u32,
        next_of: impl Fn(u32) -> &'a AtomicU32,
    ) -> bool {
        let target = slot + 1;
        let mut prev: &AtomicU32 = &self.heads[bucket];
        let mut cur = prev.load(Ordering::Relaxed);
        while cur != NIL {
            let link = next_of(cur - 1);
            if cur == target {
                let v = self.write_begin(bucket);
                prev.store(link.load(Ordering::Relaxed), Ordering::Relaxed);
                self.write_end(bucket, v);
                return true;
            }
            prev = link;
            cur = link.load(Ordering::Relaxed);
        }
        false
    }

    /// Walks `bucket` as its owner (no other writer exists, so no validation). `visit`
    /// returns `Some` to stop at a slot.
    #[inline]
    pub(crate) fn find_owned<'a, R>(
        &'a self,
        bucket: usize,
        next_of: impl Fn(u32) -> &'a AtomicU32,
        mut visit: impl FnMut(u32) -> Option<R>,
    ) -> Option<R> {
        let mut cur = self.heads[bucket].load(Ordering::Relaxed);
        while cur != NIL {
            if let Some(r) = visit(cur - 1) {
                return Some(r);
            }
            cur = next_of(cur - 1).load(Ordering::Relaxed);
        }
        None
    }

    /// Walks `bucket` from any thread. `visit` must only read (it may run more than once)
    /// and must copy out what it returns; the copy is accepted only if no write section
    /// overlapped the walk.
    #[inline]
    pub(crate) fn find_shared<'a, R>(
        &'a self,
        bucket: usize,
        next_of: impl Fn(u32) -> &'a AtomicU32,
        mut visit: impl FnMut(u32) -> Option<R>,
    ) -> Option<R> {
        let stripe = self.stripe(bucket);
        'retry: loop {
            let before = stripe.load(Ordering::Acquire);
            if before & 1 == 1 {
                spin_loop();
                continue;
            }
            let mut found = None;
            let mut cur = self.heads[bucket].load(Ordering::Relaxed);
            let mut steps = 0;
            while cur != NIL {
                steps += 1;
                if steps > MAX_CHAIN {
                    continue 'retry;
                }
                if let Some(r) = visit(cur - 1) {
                    found = Some(r);
                    break;
                }
                cur = next_of(cur - 1).load(Ordering::Relaxed);
            }
            // Order the reads above before the re-check of the counter.
            fence(Ordering::Acquire);
            if stripe.load(Ordering::Relaxed) == before {
                return found;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_find_unlink() {
        let idx = ChainIndex::new(16);
        let next: Vec<AtomicU32> = (0..8).map(|_| AtomicU32::new(NIL)).collect();
        for s in [1u32, 3, 5] {
            idx.link(2, s, &next[s as usize]);
        }
        let walk =
            |want: u32| idx.find_shared(2, |s| &next[s as usize], |s| (s == want).then_some(s));
        assert_eq!(walk(3), Some(3));
        assert!(idx.unlink(2, 3, |s| &next[s as usize]));
        assert_eq!(walk(3), None);
        assert_eq!(walk(1), Some(1));
        assert_eq!(walk(5), Some(5));
        assert!(!idx.unlink(2, 3, |s| &next[s as usize]));
        assert_eq!(
            idx.find_owned(2, |s| &next[s as usize], |s| (s == 5).then_some(s)),
            Some(5)
        );
    }
}
