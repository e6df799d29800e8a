//! Big zeroed arrays on transparent huge pages, and cache prefetch.
//!
//! At millions of entries a lookup is a few random memory accesses, and with 4 KiB pages
//! each of them also misses the TLB (a 100 MiB table spans 25 000 pages, far beyond the
//! TLB). DPDK runs on huge pages for this reason. The table's slot and bucket arrays are
//! therefore allocated zeroed and untouched, advised `MADV_HUGEPAGE` before the first
//! write, so the kernel backs them with 2 MiB pages where it can (the advice is harmless
//! where it cannot). Zeroed allocation also keeps untouched capacity out of resident
//! memory.

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

/// `len` zeroed values, on huge pages when the array is large enough to benefit.
pub(crate) fn zeroed_slice<T: ZeroIsValid>(len: usize) -> Box<[T]> {
    let zeroed = Box::<[T]>::new_zeroed_slice(len);
    advise_huge_pages(zeroed.as_ptr() as usize, std::mem::size_of_val(&*zeroed));
    // SAFETY: new_zeroed_slice filled every byte with zero, and `T: ZeroIsValid` promises
    // that all-zero bytes are a valid `T`.
    unsafe { zeroed.assume_init() }
}

fn advise_huge_pages(addr: usize, len: usize) {
    if len < HUGE_PAGE {
        return;
    }
    // madvise wants a page-aligned start; advise the whole pages inside the allocation.
    let start = addr.next_multiple_of(PAGE);
    let end = (addr + len) & !(PAGE - 1);
    if end <= start {
        return;
    }
    // SAFETY: the range lies inside one live allocation we own; MADV_HUGEPAGE only changes
    // how the kernel backs the pages, never their contents, and its failure is harmless (we
    // ignore the result: the table works the same on small pages).
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
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
        let slots: Box<[Slot]> = zeroed_slice(10);
        assert_eq!(slots[9].word().0, 0);
        prefetch(&slots[3]);
    }
}
