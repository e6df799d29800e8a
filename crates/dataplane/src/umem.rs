//! Frame memory: one region cut into equal chunks, each chunk holding one frame, and a record of
//! who owns each chunk.
//!
//! Both port implementations use it: AF_XDP registers the region with the kernel as its UMEM,
//! the in-memory port plays the kernel's part itself. A chunk is always in exactly one place:
//!
//! ```text
//!   Free --(give to fill ring / test rx queue)--> Kernel --(RX)--> Batch --(Transmit)--> Tx
//!    ^                                                              |                    |
//!    +-------------------------(Drop)-------------------------------+                    |
//!    +-----------------------------------(completion)----------------------------------+
//! ```
//!
//! Every transition checks the state it leaves, so a descriptor the kernel should not have
//! returned (an address outside the region, or a chunk that is not the kernel's) is refused and
//! counted instead of aliasing a frame already handed out. That check is what makes
//! [`Umem::process_batch`]'s `&mut` frames disjoint.
//!
//! Layout: packets arrive `data_offset` bytes into their chunk (AF_XDP: the UMEM headroom plus
//! the kernel's 256-byte `XDP_PACKET_HEADROOM`); everything before is headroom a rewrite may use
//! (TUN's outer header, ICMP errors), and the transmit address follows the frame's start.

use std::io;
use std::ptr::NonNull;

use arrayvec::ArrayVec;
use xvs_forwarders::Frame;

use crate::packet_io::{BATCH_SIZE, Verdict};

/// Bytes the kernel leaves before every received packet (`XDP_PACKET_HEADROOM`).
pub const XDP_PACKET_HEADROOM: u32 = 256;

/// Shape of the frame memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UmemConfig {
    /// Number of chunks. Default 4096.
    pub frame_count: u32,
    /// Bytes per chunk: 2048 or 4096 (a power of two, so a chunk is found by masking). Default
    /// 2048, which leaves 1792 bytes for a packet after the headroom: enough for a 1500 MTU.
    pub frame_size: u32,
    /// Extra headroom asked of the kernel before each packet, on top of the 256 bytes it always
    /// leaves. 0 by default: 256 bytes already exceed `xvs_forwarders::RECOMMENDED_HEADROOM`.
    pub frame_headroom: u32,
}

impl Default for UmemConfig {
    /// 4096 x 2048 bytes = 8 MiB: within the default 8 MiB RLIMIT_MEMLOCK when the process has
    /// no CAP_IPC_LOCK, with one UMEM per worker.
    fn default() -> Self {
        UmemConfig {
            frame_count: 4096,
            frame_size: 2048,
            frame_headroom: 0,
        }
    }
}

impl UmemConfig {
    /// Offset of the first packet byte in its chunk.
    pub fn data_offset(&self) -> u32 {
        XDP_PACKET_HEADROOM + self.frame_headroom
    }

    /// Total bytes of frame memory.
    pub fn len(&self) -> usize {
        self.frame_count as usize * self.frame_size as usize
    }

    /// True when the configuration has no frames.
    pub fn is_empty(&self) -> bool {
        self.frame_count == 0
    }

    fn validate(&self) -> io::Result<()> {
        let ok = self.frame_count > 0
            && (self.frame_size == 2048 || self.frame_size == 4096)
            && self.data_offset() + 64 <= self.frame_size;
        if ok {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad UMEM shape {self:?}: frame_size 2048 or 4096, room for a frame"),
            ))
        }
    }
}

/// A received or transmitted frame: absolute offset of its first byte in the region, length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Desc {
    /// Offset of the first frame byte from the region's start (the AF_XDP descriptor address).
    pub addr: u64,
    /// Frame length in bytes.
    pub len: u32,
}

/// Where a chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// In the free list.
    Free,
    /// Given to the kernel's fill ring (or the in-memory port's receive queue).
    Kernel,
    /// Received, being processed.
    Batch,
    /// On a transmit ring, waiting for its completion.
    Tx,
}

/// An anonymous private mapping, unmapped on drop.
struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain memory owned by this value; moving it to another thread moves the
// only handle through which Rust code reaches it (the kernel's access does not depend on the
// thread).
unsafe impl Send for Region {}

impl Region {
    fn map(len: usize) -> io::Result<Region> {
        // SAFETY: an anonymous mapping with no address hint touches no existing memory; the
        // result is checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Region { ptr, len })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `map`, and no slice into it
        // outlives `self` (slices are only lent inside `Umem::process_batch`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Frame memory and its chunks' owners. See the module documentation.
pub struct Umem {
    region: Region,
    config: UmemConfig,
    owners: Vec<Owner>,
    free: Vec<u64>,
    /// Chunks in the `Batch` state (received, not yet queued or freed).
    in_batch: u32,
}

impl std::fmt::Debug for Umem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Umem")
            .field("config", &self.config)
            .field("free", &self.free.len())
            .finish_non_exhaustive()
    }
}

impl Umem {
    /// Maps the region (pre-faulted) with every chunk free.
    pub fn new(config: UmemConfig) -> io::Result<Umem> {
        config.validate()?;
        let region = Region::map(config.len())?;
        let count = config.frame_count as usize;
        let free = (0..count as u64)
            .rev()
            .map(|i| i * u64::from(config.frame_size))
            .collect();
        Ok(Umem {
            region,
            config,
            owners: vec![Owner::Free; count],
            free,
            in_batch: 0,
        })
    }

    /// The shape this memory was made with.
    pub fn config(&self) -> UmemConfig {
        self.config
    }

    /// Start of the region (what AF_XDP registers).
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.region.ptr.as_ptr()
    }

    /// Number of free chunks.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Number of chunks received and held in a batch (neither queued for transmission nor
    /// freed yet).
    pub fn in_batch_count(&self) -> u32 {
        self.in_batch
    }

    /// Takes a free chunk for the kernel's fill ring; returns its address.
    pub(crate) fn alloc_for_kernel(&mut self) -> Option<u64> {
        let addr = self.free.pop()?;
        let i = self.index(addr);
        self.owners[i] = Owner::Kernel;
        Some(addr)
    }

    /// A received descriptor: the chunk must be the kernel's. False (nothing changed) otherwise.
    pub(crate) fn receive(&mut self, desc: Desc) -> bool {
        let fits = desc
            .addr
            .checked_add(u64::from(desc.len))
            .is_some_and(|end| {
                self.in_region(desc.addr) && end <= self.chunk_base(desc.addr) + self.chunk_len()
            });
        let received = fits && self.transition(desc.addr, Owner::Kernel, Owner::Batch);
        self.in_batch += u32::from(received);
        received
    }

    /// A processed frame goes to a transmit ring.
    pub(crate) fn queue_for_tx(&mut self, addr: u64) -> bool {
        let queued = self.transition(addr, Owner::Batch, Owner::Tx);
        self.in_batch -= u32::from(queued);
        queued
    }

    /// A processed frame is dropped: its chunk is free again.
    pub(crate) fn release(&mut self, addr: u64) {
        if self.transition(addr, Owner::Batch, Owner::Free) {
            self.in_batch -= 1;
            self.free.push(self.chunk_base(addr));
        }
    }

    /// A transmit completion: the chunk must be on a transmit ring. False otherwise.
    pub(crate) fn complete(&mut self, addr: u64) -> bool {
        if self.transition(addr, Owner::Tx, Owner::Free) {
            self.free.push(self.chunk_base(addr));
            true
        } else {
            false
        }
    }

    /// Writes `bytes` into a free chunk at the receive offset and hands the chunk to the
    /// "kernel", as a NIC would. Used by the in-memory port. None when no chunk is free or the
    /// frame does not fit.
    pub(crate) fn fill_from(&mut self, bytes: &[u8]) -> Option<Desc> {
        let offset = self.config.data_offset() as usize;
        if bytes.len() > self.chunk_len() as usize - offset {
            return None;
        }
        let base = self.alloc_for_kernel()?;
        let chunk = self.chunk_mut(base);
        chunk[offset..offset + bytes.len()].copy_from_slice(bytes);
        Some(Desc {
            addr: base + offset as u64,
            len: bytes.len() as u32,
        })
    }

    /// The bytes of a frame on a transmit ring (the in-memory port's "wire").
    pub(crate) fn tx_bytes(&mut self, desc: Desc) -> &[u8] {
        let (base, start) = (
            self.chunk_base(desc.addr),
            (desc.addr % self.chunk_len()) as usize,
        );
        if !self.in_region(desc.addr) || self.owners[self.index(base)] != Owner::Tx {
            return &[];
        }
        let chunk = self.chunk_mut(base);
        chunk.get(start..start + desc.len as usize).unwrap_or(&[])
    }

    /// Runs `process` over the frames of `descs` (each already `receive`d, so each is a
    /// distinct chunk in the `Batch` state) and writes back where each frame now starts and how
    /// long it is, since a rewrite may have moved its start into the headroom.
    pub(crate) fn process_batch(
        &mut self,
        descs: &mut [Desc],
        verdicts: &mut [Verdict],
        process: &mut dyn FnMut(&mut [Frame<'_>], &mut [Verdict]),
    ) {
        let chunk_len = self.chunk_len();
        let base = self.region.ptr.as_ptr();
        let mut frames: ArrayVec<Frame<'_>, BATCH_SIZE> = ArrayVec::new();
        for desc in descs.iter().take(BATCH_SIZE) {
            let chunk_base = self.chunk_base(desc.addr);
            debug_assert_eq!(self.owners[self.index(chunk_base)], Owner::Batch);
            // SAFETY: `chunk_base + chunk_len` lies inside the region (`receive` checked the
            // address), and the chunk is in the `Batch` state, which `receive` entered from
            // `Kernel` exactly once per chunk: no other frame of this batch and no other live
            // slice covers it. The kernel does not write a chunk it has returned until it is
            // given back through a ring, which happens only after this function returns. The
            // frames live in this function only: `process` is generic over their lifetime, so
            // it cannot keep them, and `&mut self` keeps every other accessor out meanwhile.
            let chunk = unsafe {
                std::slice::from_raw_parts_mut(base.add(chunk_base as usize), chunk_len as usize)
            };
            let start = (desc.addr - chunk_base) as usize;
            match Frame::new(chunk, start, desc.len as usize) {
                Ok(frame) => frames.push(frame),
                // `receive` checked the bounds; keep the batch aligned with `descs` anyway.
                Err(_) => frames.push(Frame::whole(&mut [])),
            }
        }
        let n = frames.len();
        process(&mut frames, &mut verdicts[..n]);
        for (desc, frame) in descs.iter_mut().zip(frames.iter()) {
            // A `Frame` keeps `start + len` inside its chunk, so this stays in the chunk too.
            desc.addr = (desc.addr & !(chunk_len - 1)) + frame.start() as u64;
            desc.len = frame.len() as u32;
        }
    }

    fn chunk_len(&self) -> u64 {
        u64::from(self.config.frame_size)
    }

    fn chunk_base(&self, addr: u64) -> u64 {
        addr & !(self.chunk_len() - 1)
    }

    fn in_region(&self, addr: u64) -> bool {
        addr < self.config.len() as u64
    }

    fn index(&self, addr: u64) -> usize {
        (addr / self.chunk_len()) as usize
    }

    fn transition(&mut self, addr: u64, from: Owner, to: Owner) -> bool {
        if !self.in_region(addr) {
            return false;
        }
        let i = self.index(addr);
        if self.owners[i] != from {
            return false;
        }
        self.owners[i] = to;
        true
    }

    fn chunk_mut(&mut self, base: u64) -> &mut [u8] {
        let len = self.chunk_len() as usize;
        // SAFETY: `base` is a chunk start inside the region (callers pass chunk bases of
        // addresses checked by `in_region`), and `&mut self` guarantees no other slice into the
        // region is alive.
        unsafe { std::slice::from_raw_parts_mut(self.region.ptr.as_ptr().add(base as usize), len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Umem {
        Umem::new(UmemConfig {
            frame_count: 4,
            frame_size: 2048,
            frame_headroom: 0,
        })
        .unwrap()
    }

    #[test]
    fn refuses_bad_shapes() {
        for config in [
            UmemConfig {
                frame_count: 0,
                ..UmemConfig::default()
            },
            UmemConfig {
                frame_size: 3000,
                ..UmemConfig::default()
            },
            UmemConfig {
                frame_headroom: 2000,
                ..UmemConfig::default()
            },
        ] {
            assert!(Umem::new(config).is_err(), "{config:?}");
        }
    }

    #[test]
    fn chunks_move_through_their_owners_once() {
        let mut umem = small();
        let desc = umem.fill_from(&[1, 2, 3]).unwrap();
        assert_eq!(desc, Desc { addr: 256, len: 3 });
        assert_eq!(umem.free_count(), 3);
        assert!(umem.receive(desc));
        assert_eq!(umem.in_batch_count(), 1);
        assert!(!umem.receive(desc), "a chunk is received once");
        assert_eq!(umem.in_batch_count(), 1);
        assert!(!umem.complete(desc.addr), "not on a transmit ring");
        assert!(umem.queue_for_tx(desc.addr));
        assert_eq!(umem.in_batch_count(), 0);
        assert_eq!(umem.tx_bytes(desc), &[1, 2, 3]);
        assert!(umem.complete(desc.addr));
        assert!(!umem.complete(desc.addr), "completed once");
        assert_eq!(umem.free_count(), 4);
    }

    #[test]
    fn refuses_descriptors_outside_the_region_or_chunk() {
        let mut umem = small();
        let desc = umem.fill_from(&[0; 10]).unwrap();
        assert!(!umem.receive(Desc {
            addr: 4 * 2048 + 256,
            len: 10
        }));
        assert!(!umem.receive(Desc {
            addr: desc.addr,
            len: 2048
        }));
        assert!(!umem.receive(Desc {
            addr: u64::MAX,
            len: 10
        }));
        assert!(umem.receive(desc));
    }

    #[test]
    fn a_batch_sees_each_frame_and_keeps_moved_starts() {
        let mut umem = small();
        let mut descs = [
            umem.fill_from(&[7; 60]).unwrap(),
            umem.fill_from(&[8; 70]).unwrap(),
        ];
        for d in descs {
            assert!(umem.receive(d));
        }
        let mut verdicts = [Verdict::Drop; 2];
        umem.process_batch(&mut descs, &mut verdicts, &mut |frames, verdicts| {
            assert_eq!(frames.len(), 2);
            assert_eq!(frames[0].data(), &[7; 60]);
            assert_eq!(frames[1].data(), &[8; 70]);
            assert_eq!(frames[0].headroom(), 256);
            frames[1].data_mut()[0] = 9;
            verdicts[1] = Verdict::Transmit { port: 0 };
        });
        assert_eq!(verdicts, [Verdict::Drop, Verdict::Transmit { port: 0 }]);
        assert_eq!(descs[1].len, 70);
        assert!(umem.queue_for_tx(descs[1].addr));
        assert_eq!(umem.tx_bytes(descs[1])[0], 9);
    }
}
