//! Big zeroed arrays, on transparent huge pages where they fill densely, and cache prefetch.
//!
//! At millions of entries a lookup is a few random memory accesses, and with 4 KiB pages
//! each of them also misses the TLB (a 100 MiB table spans 25 000 pages, far beyond the
//! TLB). DPDK runs on huge pages for this reason. The table's slot arrays (and the timer
//! and half-open links indexed like them) fill from the start, one entry after another, so
//! they are allocated zeroed and untouched and advised `MADV_HUGEPAGE` before the first
//! write ([`zeroed_slice`]): the kernel backs them with 2 MiB pages where it can, and the
//! resident part still follows the entries in use.
//!
//! Bucket heads are the opposite: a connection's hash picks its bucket anywhere in the
//! array, so a few thousand connections touch a few thousand scattered places. On 2 MiB
//! pages each touch makes a whole huge page resident: 10 000 connections in a table of
//! 2^26 entries (`conn_table_size` 2^20) made 533 MB resident, 516 MB of it huge pages of
//! bucket heads; on small pages the same table holds them in 80 MB (BENCHMARKS.md,
//! "Connection table"). They are
//! therefore advised `MADV_NOHUGEPAGE` ([`zeroed_sparse_slice`]), even where the system
//! enables huge pages for everything, so each touch costs 4 KiB. Zeroed allocation keeps
//! untouched capacity out of resident memory in both cases.

use std::sync::atomic::AtomicU32;

use crate::entry::Slot;

/// Types for which all-zero bytes are a valid value.
///
/// # Safety
/// Implement only for types made of integers and integer atomics, with no invariants.
pub(crate) unsafe trait ZeroIsValid {}

// SAFETY: a Slot is only integer atomics (AtomicU64/AtomicU32 and arrays of them); zero is a
// valid value of each, and zero is the "empty, generation 0" slot the table expects.
unsafe impl ZeroIsValid for Slot {}
// SAFETY: an integer atomic; zero is NIL for bucket heads.
unsafe impl ZeroIsValid for AtomicU32 {}

const PAGE: usize = 4096;
const HUGE_PAGE: usize = 2 << 20;

/// `len` zeroed values filled from the start (slots and what is indexed like them), on huge
/// pages when the array is large enough to benefit.
pub(crate) fn zeroed_slice<T: ZeroIsValid>(len: usize) -> Box<[T]> {
    zeroed_advised(len, libc::MADV_HUGEPAGE)
}

/// `len` zeroed values touched at scattered places (hash buckets), kept on small pages so
/// resident memory follows the places touched.
pub(crate) fn zeroed_sparse_slice<T: ZeroIsValid>(len: usize) -> Box<[T]> {
    zeroed_advised(len, libc::MADV_NOHUGEPAGE)
}

fn zeroed_advised<T: ZeroIsValid>(len: usize, advice: libc::c_int) -> Box<[T]> {
    let zeroed = Box::<[T]>::new_zeroed_slice(len);
    advise(
        zeroed.as_ptr() as usize,
        std::mem::size_of_val(&*zeroed),
        advice,
    );
    // SAFETY: new_zeroed_slice filled every byte with zero, and `T: ZeroIsValid` promises
    // that all-zero bytes are a valid `T`.
    unsafe { zeroed.assume_init() }
}

/// Advises the kernel how to back the whole pages of an array (below one huge page the
/// kernel would not use a huge page anyway).
fn advise(addr: usize, len: usize, advice: libc::c_int) {
    if len < HUGE_PAGE {
        return;
    }
    // madvise wants a page-aligned start; advise the whole pages inside the allocation.
    let start = addr.next_multiple_of(PAGE);
    let end = (addr + len) & !(PAGE - 1);
    if end <= start {
        return;
    }
    // SAFETY: the range lies inside one live allocation we own; MADV_HUGEPAGE and
    // MADV_NOHUGEPAGE only change how the kernel backs the pages, never their contents, and
    // their failure is harmless (we ignore the result: the table works the same either way).
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, advice);
    }
}

/// Asks the CPU to start loading the cache line at `ptr` (a hint; never faults).
#[inline(always)]
pub(crate) fn prefetch<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is in the x86_64 baseline (SSE), reads no memory architecturally and
    // cannot fault, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(ptr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = ptr;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// `Rss` and `AnonHugePages` (kB) of the mapping holding `addr`, from /proc/self/smaps.
    fn mapping_kb(addr: usize) -> Option<(u64, u64)> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        let (mut rss, mut huge) = (None, None);
        for line in smaps.lines() {
            let range = line.split_whitespace().next().unwrap_or_default();
            if let Some((start, end)) = range.split_once('-')
                && let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                )
            {
                if inside {
                    break;
                }
                inside = (start..end).contains(&addr);
                continue;
            }
            let kb = || line.split_whitespace().nth(1)?.parse::<u64>().ok();
            if inside && line.starts_with("Rss:") {
                rss = kb();
            } else if inside && line.starts_with("AnonHugePages:") {
                huge = kb();
            }
        }
        Some((rss?, huge?))
    }

    #[test]
    fn scattered_touches_of_a_sparse_array_cost_small_pages() {
        // 256 MiB of bucket heads (2^26 entries), 2,000 touches at scattered places.
        let len = 1 << 26;
        let heads: Box<[AtomicU32]> = zeroed_sparse_slice(len);
        let touches = 2_000usize;
        for i in 0..touches {
            heads[(i * 2_654_435_761) % len].store(1, Ordering::Relaxed);
        }
        // The advice splits the allocation's mapping at its first whole page: look in the
        // middle, where the advised pages are.
        let middle = &heads[len / 2] as *const AtomicU32 as usize;
        let (rss_kb, huge_kb) = mapping_kb(middle).expect("its mapping in smaps");
        assert_eq!(huge_kb, 0, "no huge page backs it");
        assert!(
            rss_kb <= (touches as u64) * 4 + 64,
            "{rss_kb} kB resident for {touches} touches"
        );
    }

    #[test]
    fn zeroed_arrays_are_empty_and_usable() {
        let heads: Box<[AtomicU32]> = zeroed_slice(3 << 20);
        assert!(
            heads
                .iter()
                .step_by(4099)
                .all(|h| h.load(Ordering::Relaxed) == 0)
        );
        heads[12345].store(7, Ordering::Relaxed);
        assert_eq!(heads[12345].load(Ordering::Relaxed), 7);
        let sparse: Box<[AtomicU32]> = zeroed_sparse_slice(3 << 20);
        assert!(
            sparse
                .iter()
                .step_by(4099)
                .all(|h| h.load(Ordering::Relaxed) == 0)
        );
        sparse[(3 << 20) - 1].store(9, Ordering::Relaxed);
        assert_eq!(sparse[(3 << 20) - 1].load(Ordering::Relaxed), 9);
        let slots: Box<[Slot]> = zeroed_slice(10);
        assert_eq!(slots[9].word().0, 0);
        prefetch(&slots[3]);
    }
}
