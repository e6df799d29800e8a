//! AF_XDP ports: one socket per director interface on a worker's queue, all sharing one UMEM.
//!
//! Built on libxdp (`libxdp-sys`, the C library xsk-rs wraps) rather than on xsk-rs itself:
//! xsk-rs hands out frames as a headroom slice and a data slice and its descriptors keep the
//! receive address, so a rewrite that grows a frame into its headroom (TUN's 20-byte outer
//! header, ICMP errors) could not be sent without moving the packet. Driving the rings
//! directly lets a [`Frame`](xvs_forwarders::Frame) cover its whole chunk and the transmit
//! descriptor start wherever the rewrite left the frame. The frame memory is
//! [`crate::umem::Umem`], shared with the in-memory port, whose ownership checks guard every
//! descriptor the kernel returns.
//!
//! - Sockets are created with `XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD`: libxdp loads no program;
//!   the daemon puts [`AfXdpPorts::socket_fd`] into the [`crate::xdp::XdpFilter`]'s map.
//! - Bind: zero-copy is tried first (when [`BindMode::Auto`]) and copy mode used when the
//!   driver refuses (veth answers `EOPNOTSUPP`); the mode in use is read back from the
//!   socket (`XDP_OPTIONS`) and logged. Every socket asks for `XDP_USE_NEED_WAKEUP`.
//! - A second interface binds with `XDP_SHARED_UMEM` (its own fill and completion rings), so a
//!   frame received on one interface is transmitted on the other by descriptor, no copy. It
//!   inherits the first socket's copy/zero-copy mode.
//! - need_wakeup: TX is kicked (`sendto`) only after frames were queued and only when the
//!   kernel set the flag; the fill ring gets a `recvfrom` only when its flag is set. An empty
//!   poll makes no system call; an idle worker sleeps in [`PacketIo::wait`].

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::ptr::NonNull;
use std::time::Duration;

use libxdp_sys::{xsk_ring_cons, xsk_ring_prod, xsk_socket, xsk_umem};

use crate::packet_io::{
    BATCH_SIZE, FrameAccount, PacketIo, PollSummary, PortStats, ProcessFn, TxList, process_received,
};
use crate::umem::{Desc, Umem, UmemConfig};

/// `XDP_MAX_TX_SKB_BUDGET` of `<linux/if_xdp.h>` (Linux 6.17; not in older headers).
const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;

/// Which bind mode to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindMode {
    /// Zero-copy if the driver supports it, copy otherwise.
    #[default]
    Auto,
    /// Zero-copy or fail.
    ZeroCopy,
    /// Copy mode.
    Copy,
}

/// The bind mode in use, as `xvsadm` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMode {
    /// The NIC reads and writes the UMEM directly.
    ZeroCopy,
    /// The kernel copies between its buffers and the UMEM.
    Copy,
}

impl fmt::Display for CopyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CopyMode::ZeroCopy => "zero-copy",
            CopyMode::Copy => "copy",
        })
    }
}

/// Sizes of the frame memory and rings. Ring sizes are powers of two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XskConfig {
    /// The frame memory, shared by the worker's sockets.
    pub umem: UmemConfig,
    /// Receive ring entries per socket.
    pub rx_ring: u32,
    /// Transmit ring entries per socket.
    pub tx_ring: u32,
    /// Fill ring entries per socket; also how many chunks each socket keeps given to the kernel.
    pub fill_ring: u32,
    /// Completion ring entries per socket.
    pub comp_ring: u32,
    /// Zero-copy or copy.
    pub bind: BindMode,
}

impl Default for XskConfig {
    /// 4096 frames of 2048 bytes (8 MiB), rings of 2048, zero-copy when offered.
    fn default() -> Self {
        XskConfig {
            umem: UmemConfig::default(),
            rx_ring: 2048,
            tx_ring: 2048,
            fill_ring: 2048,
            comp_ring: 2048,
            bind: BindMode::Auto,
        }
    }
}

/// Why ports could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// The configuration is unusable.
    #[error("AF_XDP configuration: {0}")]
    Config(String),
    /// The frame memory could not be mapped or registered (ENOBUFS: RLIMIT_MEMLOCK without
    /// CAP_IPC_LOCK; make the UMEM smaller).
    #[error("AF_XDP UMEM: {0}")]
    Umem(#[source] io::Error),
    /// A socket could not be created or bound.
    #[error("AF_XDP socket on {ifname} queue {queue}: {source}")]
    Socket {
        /// Interface name.
        ifname: String,
        /// Queue id.
        queue: u32,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
}

/// Counters the kernel keeps for a socket (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Frames dropped for reasons other than a full ring.
    pub rx_dropped: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived.
    pub rx_fill_ring_empty: u64,
    /// Invalid RX descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: u64,
    /// Times the TX ring was empty when the kernel looked.
    pub tx_ring_empty: u64,
}

/// The libxdp UMEM registration, with the fill and completion rings libxdp made for it (the
/// first socket's, which libxdp unmaps itself when the UMEM is deleted unused).
struct UmemHandle {
    ptr: NonNull<xsk_umem>,
    fill: Box<xsk_ring_prod>,
    comp: Box<xsk_ring_cons>,
}

impl UmemHandle {
    fn register(umem: &mut Umem, config: &XskConfig) -> io::Result<UmemHandle> {
        let mut fill = Box::new(zeroed_prod());
        let mut comp = Box::new(zeroed_cons());
        let umem_config = libxdp_sys::xsk_umem_config {
            fill_size: config.fill_ring,
            comp_size: config.comp_ring,
            frame_size: config.umem.frame_size,
            frame_headroom: config.umem.frame_headroom,
            flags: 0,
        };
        let len = config.umem.len() as u64;
        let mut ptr = std::ptr::null_mut();
        // SAFETY: the region is `len` bytes of page-aligned memory that outlives the handle
        // (`AfXdpPorts` drops the handle before the `Umem`); the ring structs are boxed so the
        // addresses libxdp keeps stay valid until the handle is dropped.
        let err = unsafe {
            libxdp_sys::xsk_umem__create(
                &mut ptr,
                umem.as_mut_ptr().cast(),
                len,
                &mut *fill,
                &mut *comp,
                &umem_config,
            )
        };
        if err != 0 {
            return Err(io::Error::from_raw_os_error(-err));
        }
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::other("libxdp returned no UMEM"))?;
        Ok(UmemHandle { ptr, fill, comp })
    }
}

impl Drop for UmemHandle {
    fn drop(&mut self) {
        // SAFETY: every socket made from this UMEM is deleted before (field order in
        // `AfXdpPorts`, and `open` deletes failed attempts first), so the UMEM is unused; the
        // boxed rings are still alive here.
        unsafe { libxdp_sys::xsk_umem__delete(self.ptr.as_ptr()) };
    }
}

/// One bound socket and its four rings.
struct XskSocket {
    ptr: NonNull<xsk_socket>,
    fd: RawFd,
    ifname: String,
    mode: CopyMode,
    rx: Box<xsk_ring_cons>,
    tx: Box<xsk_ring_prod>,
    fill: Box<xsk_ring_prod>,
    comp: Box<xsk_ring_cons>,
    /// How many chunks the fill ring should hold.
    fill_target: u32,
    /// Chunks this socket's rings hold for the kernel, by the rings' own traffic: given to
    /// the fill ring and not received yet, plus queued on the TX ring and not completed yet.
    with_kernel: u32,
    stats: PortStats,
}

impl Drop for XskSocket {
    fn drop(&mut self) {
        // SAFETY: the socket was created by `xsk_socket__create_shared` and is deleted once;
        // the rings it points at are fields of `self`, dropped only after this body.
        unsafe { libxdp_sys::xsk_socket__delete(self.ptr.as_ptr()) };
    }
}

impl XskSocket {
    fn create(
        handle: &mut UmemHandle,
        first: bool,
        ifname: &str,
        queue: u32,
        config: &XskConfig,
        zero_copy: bool,
    ) -> io::Result<XskSocket> {
        let name = CString::new(ifname)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
        let mut rx = Box::new(zeroed_cons());
        let mut tx = Box::new(zeroed_prod());
        let mut fill = Box::new(zeroed_prod());
        let mut comp = Box::new(zeroed_cons());
        let copy_flag = if zero_copy {
            libxdp_sys::XDP_ZEROCOPY
        } else {
            libxdp_sys::XDP_COPY
        };
        let socket_config = libxdp_sys::xsk_socket_config {
            rx_size: config.rx_ring,
            tx_size: config.tx_ring,
            __bindgen_anon_1: libxdp_sys::xsk_socket_config__bindgen_ty_1 {
                libxdp_flags: libxdp_sys::XSK_LIBXDP_FLAGS__INHIBIT_PROG_LOAD,
            },
            xdp_flags: 0,
            bind_flags: (copy_flag | libxdp_sys::XDP_USE_NEED_WAKEUP) as u16,
        };
        // The first socket takes over the rings libxdp made with the UMEM (it copies their
        // state into ours); later ones, on other interfaces, get rings of their own.
        let (fill_ptr, comp_ptr): (*mut xsk_ring_prod, *mut xsk_ring_cons) = if first {
            (&mut *handle.fill, &mut *handle.comp)
        } else {
            (&mut *fill, &mut *comp)
        };
        let mut ptr = std::ptr::null_mut();
        // SAFETY: every pointer is to a live boxed ring (or the UMEM's, alive as long as the
        // handle, which outlives the socket); libxdp initialises them and keeps the addresses,
        // which stay valid because the boxes move into the returned socket or stay in the
        // handle. `name` is a valid C string for the call.
        let err = unsafe {
            libxdp_sys::xsk_socket__create_shared(
                &mut ptr,
                name.as_ptr(),
                queue,
                handle.ptr.as_ptr(),
                &mut *rx,
                &mut *tx,
                fill_ptr,
                comp_ptr,
                &socket_config,
            )
        };
        if err != 0 {
            return Err(io::Error::from_raw_os_error(-err));
        }
        let ptr = NonNull::new(ptr).ok_or_else(|| io::Error::other("libxdp returned no socket"))?;
        if first {
            // SAFETY: plain copies of the ring state libxdp wrote through `fill_ptr`/`comp_ptr`;
            // from now on only this socket's copies are used to produce and consume.
            unsafe {
                *fill = *fill_ptr;
                *comp = *comp_ptr;
            }
        }
        // SAFETY: `ptr` is the socket just created.
        let fd = unsafe { libxdp_sys::xsk_socket__fd(ptr.as_ptr()) };
        let mut socket = XskSocket {
            ptr,
            fd,
            ifname: ifname.to_string(),
            mode: CopyMode::Copy,
            rx,
            tx,
            fill,
            comp,
            fill_target: config.fill_ring,
            with_kernel: 0,
            stats: PortStats::default(),
        };
        socket.mode = socket.bound_mode()?;
        if socket.mode == CopyMode::Copy {
            socket.raise_tx_budget(config.tx_ring.min(BATCH_SIZE as u32));
        }
        Ok(socket)
    }

    /// In copy mode one `sendto` sends at most 32 frames unless the socket asks for more
    /// (`XDP_MAX_TX_SKB_BUDGET`, Linux 6.17): ask for a whole batch, so a batch costs one
    /// wake-up instead of two. Older kernels refuse the option (`ENOPROTOOPT`) and keep 32.
    fn raise_tx_budget(&self, budget: u32) {
        let value = budget.max(32);
        // SAFETY: `value` is a readable u32 of the size passed; an unknown option is refused.
        let rc = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_XDP,
                XDP_MAX_TX_SKB_BUDGET,
                (&value as *const u32).cast(),
                std::mem::size_of::<u32>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!(ifname = %self.ifname, error = %io::Error::last_os_error(),
                "copy-mode TX budget stays at the kernel's default");
        } else {
            tracing::info!(ifname = %self.ifname, budget = value, "copy-mode TX budget raised");
        }
    }

    /// Asks the socket whether it is bound in zero-copy mode (`XDP_OPTIONS`).
    fn bound_mode(&self) -> io::Result<CopyMode> {
        let mut options = libxdp_sys::xdp_options { flags: 0 };
        let mut len = std::mem::size_of::<libxdp_sys::xdp_options>() as libc::socklen_t;
        // SAFETY: `options` is a writable `xdp_options` of `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_XDP,
                libxdp_sys::XDP_OPTIONS as i32,
                (&mut options as *mut libxdp_sys::xdp_options).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(if options.flags & libxdp_sys::XDP_OPTIONS_ZEROCOPY != 0 {
            CopyMode::ZeroCopy
        } else {
            CopyMode::Copy
        })
    }

    fn kernel_stats(&self) -> io::Result<KernelStats> {
        // SAFETY: all-zero is a valid `xdp_statistics` (plain integers).
        let mut s: libxdp_sys::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libxdp_sys::xdp_statistics>() as libc::socklen_t;
        // SAFETY: `s` is a writable `xdp_statistics` of `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_XDP,
                libxdp_sys::XDP_STATISTICS as i32,
                (&mut s as *mut libxdp_sys::xdp_statistics).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(KernelStats {
            rx_dropped: s.rx_dropped,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty: s.rx_fill_ring_empty_descs,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            tx_ring_empty: s.tx_ring_empty_descs,
        })
    }

    /// Frees the chunks whose transmission completed.
    fn reclaim_completions(&mut self, umem: &mut Umem) {
        let mut idx = 0;
        // SAFETY: `comp` is this socket's initialised completion ring.
        let n = unsafe { libxdp_sys::xsk_ring_cons__peek(&mut *self.comp, u32::MAX, &mut idx) };
        for i in 0..n {
            // SAFETY: entries `idx..idx + n` were just peeked, so they are readable.
            let addr = unsafe { *libxdp_sys::xsk_ring_cons__comp_addr(&*self.comp, idx + i) };
            if umem.complete(addr) {
                self.with_kernel -= 1;
            } else {
                self.stats.invalid_descs += 1;
            }
        }
        if n > 0 {
            // SAFETY: releases exactly the `n` entries peeked above.
            unsafe { libxdp_sys::xsk_ring_cons__release(&mut *self.comp, n) };
        }
    }

    /// Gives free chunks to the fill ring until it is full or no chunk is free.
    /// Tops the fill ring up to `fill_target` chunks (not more, so that sockets sharing the
    /// UMEM each keep a share), as far as free chunks allow.
    fn refill(&mut self, umem: &mut Umem) {
        let size = self.fill.size;
        // SAFETY: `fill` is this socket's initialised fill ring; asking for `size` entries
        // makes libxdp re-read the consumer index, so the count is current.
        let free_slots = unsafe { libxdp_sys::xsk_prod_nb_free(&mut *self.fill, size) };
        let in_ring = size.saturating_sub(free_slots);
        let free_chunks = umem.free_count().min(u32::MAX as usize) as u32;
        let n = self
            .fill_target
            .saturating_sub(in_ring)
            .min(free_chunks)
            .min(free_slots);
        if n == 0 {
            if self.fill_needs_wakeup() {
                self.wake_rx();
            }
            return;
        }
        let mut idx = 0;
        // SAFETY: as above; `n` entries were just found free, so reserving them succeeds.
        let reserved = unsafe { libxdp_sys::xsk_ring_prod__reserve(&mut *self.fill, n, &mut idx) };
        for i in 0..reserved {
            let addr = umem.alloc_for_kernel().unwrap_or(0);
            // SAFETY: entry `idx + i` is among the `reserved` entries owned by us until submit.
            unsafe { *libxdp_sys::xsk_ring_prod__fill_addr(&mut *self.fill, idx + i) = addr };
        }
        // SAFETY: submits exactly the entries reserved and written above.
        unsafe { libxdp_sys::xsk_ring_prod__submit(&mut *self.fill, reserved) };
        self.with_kernel += reserved;
        if self.fill_needs_wakeup() {
            self.wake_rx();
        }
    }

    /// Takes up to `want` received descriptors into `descs`; returns how many are valid.
    fn receive(&mut self, umem: &mut Umem, descs: &mut [Desc; BATCH_SIZE], want: usize) -> usize {
        let mut idx = 0;
        // SAFETY: `rx` is this socket's initialised RX ring.
        let n = unsafe { libxdp_sys::xsk_ring_cons__peek(&mut *self.rx, want as u32, &mut idx) };
        let mut valid = 0;
        for i in 0..n {
            // SAFETY: entries `idx..idx + n` were just peeked, so they are readable.
            let raw = unsafe { *libxdp_sys::xsk_ring_cons__rx_desc(&*self.rx, idx + i) };
            let desc = Desc {
                addr: raw.addr,
                len: raw.len,
            };
            if umem.receive(desc) {
                descs[valid] = desc;
                valid += 1;
            } else {
                self.stats.invalid_descs += 1;
            }
        }
        self.with_kernel -= valid as u32;
        if n > 0 {
            // SAFETY: releases exactly the `n` entries peeked above.
            unsafe { libxdp_sys::xsk_ring_cons__release(&mut *self.rx, n) };
        }
        valid
    }

    /// Queues `list` on the TX ring; frames that do not fit are freed and counted.
    fn transmit(&mut self, umem: &mut Umem, list: &mut TxList) -> usize {
        if list.is_empty() {
            return 0;
        }
        let len = list.len() as u32;
        // SAFETY: `tx` is this socket's initialised TX ring.
        let mut room = unsafe { libxdp_sys::xsk_prod_nb_free(&mut *self.tx, len) };
        if room < len {
            // The kernel may not have consumed the ring yet: kick it and take completions.
            self.kick_tx();
            self.reclaim_completions(umem);
            // SAFETY: as above.
            room = unsafe { libxdp_sys::xsk_prod_nb_free(&mut *self.tx, len) };
        }
        let n = room.min(len);
        let mut idx = 0;
        // SAFETY: `n` entries are free, so reserving them succeeds (or reserves 0 if n is 0).
        let reserved = unsafe { libxdp_sys::xsk_ring_prod__reserve(&mut *self.tx, n, &mut idx) };
        let mut queued = 0;
        for desc in list.drain(..) {
            if queued < reserved && umem.queue_for_tx(desc.addr) {
                // SAFETY: entry `idx + queued` is among the reserved entries, ours until submit.
                let slot = unsafe {
                    &mut *libxdp_sys::xsk_ring_prod__tx_desc(&mut *self.tx, idx + queued)
                };
                slot.addr = desc.addr;
                slot.len = desc.len;
                slot.options = 0;
                queued += 1;
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += u64::from(desc.len);
            } else {
                self.stats.tx_ring_full += 1;
                umem.release(desc.addr);
            }
        }
        // Reserved entries are all written: `queued == reserved` unless `to_tx` refused one,
        // which cannot happen for frames of the current batch; give back any unwritten one.
        if queued < reserved {
            // Cancelling a producer reservation is moving the cached producer back.
            self.tx.cached_prod -= reserved - queued;
        }
        if queued > 0 {
            // SAFETY: submits exactly the entries written above.
            unsafe { libxdp_sys::xsk_ring_prod__submit(&mut *self.tx, queued) };
            self.with_kernel += queued;
            if self.tx_needs_wakeup() {
                self.kick_tx();
            }
        }
        queued as usize
    }

    /// Wakes the kernel again while frames wait on the TX ring: in copy mode one wake-up
    /// sends at most 32 of them, so without this the rest of a batch would wait for the next
    /// batch (or forever, if traffic stops). Makes no system call when the ring is empty.
    fn push_pending_tx(&mut self) {
        let size = self.tx.size;
        // SAFETY: `tx` is this socket's initialised TX ring; asking for `size` entries makes
        // libxdp re-read the consumer index.
        let free = unsafe { libxdp_sys::xsk_prod_nb_free(&mut *self.tx, size) };
        if free < size && self.tx_needs_wakeup() {
            self.kick_tx();
        }
    }

    fn tx_needs_wakeup(&self) -> bool {
        // SAFETY: `tx` is initialised; the flags word is mapped for the socket's lifetime.
        unsafe { libxdp_sys::xsk_ring_prod__needs_wakeup(&*self.tx) != 0 }
    }

    fn fill_needs_wakeup(&self) -> bool {
        // SAFETY: `fill` is initialised; the flags word is mapped for the socket's lifetime.
        unsafe { libxdp_sys::xsk_ring_prod__needs_wakeup(&*self.fill) != 0 }
    }

    /// Tells the kernel the TX ring has frames (copy mode sends them in this call).
    fn kick_tx(&mut self) {
        self.stats.wakeups += 1;
        // SAFETY: a zero-length send on our own socket, no buffers involved.
        unsafe {
            libc::sendto(
                self.fd,
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        // EAGAIN/EBUSY/ENOBUFS mean "try again next batch"; the frames stay queued.
    }

    /// Tells the kernel the fill ring has chunks again.
    fn wake_rx(&mut self) {
        self.stats.wakeups += 1;
        // SAFETY: a zero-length receive on our own socket, no buffers involved.
        unsafe {
            libc::recvfrom(
                self.fd,
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }
}

fn zeroed_prod() -> xsk_ring_prod {
    // SAFETY: an all-zero ring struct (null pointers, zero indexes) is what libxdp expects to
    // initialise.
    unsafe { std::mem::zeroed() }
}

fn zeroed_cons() -> xsk_ring_cons {
    // SAFETY: as for `zeroed_prod`.
    unsafe { std::mem::zeroed() }
}

/// A worker's AF_XDP ports: port `i` is interface `ifnames[i]`, all on one queue.
pub struct AfXdpPorts {
    // Drop order matters: sockets, then the UMEM registration, then the memory.
    sockets: Vec<XskSocket>,
    _registration: UmemHandle,
    umem: Umem,
    queue: u32,
    tx_lists: Vec<TxList>,
}

// SAFETY: the raw pointers inside (libxdp socket and UMEM, ring pointers into kernel-shared
// mappings) are used only through `&mut self`, never shared; libxdp keeps no thread-local
// state for them, so the whole set may move to the worker thread that polls it.
unsafe impl Send for AfXdpPorts {}

impl fmt::Debug for AfXdpPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ports: Vec<(&str, CopyMode)> = self
            .sockets
            .iter()
            .map(|s| (s.ifname.as_str(), s.mode))
            .collect();
        f.debug_struct("AfXdpPorts")
            .field("queue", &self.queue)
            .field("ports", &ports)
            .finish_non_exhaustive()
    }
}

impl AfXdpPorts {
    /// Opens one socket per interface on queue `queue`, sharing one UMEM, and fills their fill
    /// rings. Port `i` is `ifnames[i]`. Sockets must then be registered with each interface's
    /// XDP filter ([`AfXdpPorts::socket_fd`]) to receive anything.
    pub fn open(ifnames: &[&str], queue: u32, config: &XskConfig) -> Result<AfXdpPorts, XskError> {
        validate(ifnames, config)?;
        let socket_error = |ifname: &str, source| XskError::Socket {
            ifname: ifname.to_string(),
            queue,
            source,
        };
        let mut umem = Umem::new(config.umem).map_err(XskError::Umem)?;
        let mut handle = UmemHandle::register(&mut umem, config).map_err(XskError::Umem)?;
        let first = match config.bind {
            BindMode::Copy => {
                XskSocket::create(&mut handle, true, ifnames[0], queue, config, false)
            }
            BindMode::ZeroCopy => {
                XskSocket::create(&mut handle, true, ifnames[0], queue, config, true)
            }
            BindMode::Auto => {
                match XskSocket::create(&mut handle, true, ifnames[0], queue, config, true) {
                    Ok(socket) => Ok(socket),
                    Err(zc) => {
                        tracing::info!(ifname = ifnames[0], queue, error = %zc,
                            "zero-copy refused, binding in copy mode");
                        // Start over with a fresh registration: libxdp's state after a
                        // failed bind is not something to build on.
                        drop(handle);
                        handle = UmemHandle::register(&mut umem, config).map_err(XskError::Umem)?;
                        XskSocket::create(&mut handle, true, ifnames[0], queue, config, false)
                    }
                }
            }
        }
        .map_err(|e| socket_error(ifnames[0], e))?;
        let mut sockets = vec![first];
        for ifname in &ifnames[1..] {
            // Shared-UMEM binds take the first socket's mode; the flag asked here is ignored.
            match XskSocket::create(&mut handle, false, ifname, queue, config, false) {
                Ok(socket) => sockets.push(socket),
                Err(e) => {
                    drop(sockets);
                    drop(handle);
                    return Err(socket_error(ifname, e));
                }
            }
        }
        // Sockets share the frames: none may hoard them all in its fill ring.
        let share = config.umem.frame_count / sockets.len() as u32;
        for socket in &mut sockets {
            socket.fill_target = config.fill_ring.min(share);
        }
        for socket in &sockets {
            tracing::info!(ifname = %socket.ifname, queue, mode = %socket.mode, "AF_XDP socket bound");
        }
        let mut ports = AfXdpPorts {
            tx_lists: vec![TxList::new(); sockets.len()],
            sockets,
            _registration: handle,
            umem,
            queue,
        };
        ports.refill_all();
        Ok(ports)
    }

    /// The queue these ports are bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The socket of port `port`, for [`crate::xdp::XdpFilter::register_socket`].
    pub fn socket_fd(&self, port: usize) -> Option<BorrowedFd<'_>> {
        // SAFETY: the fd belongs to a socket owned by `self`, open as long as the borrow.
        self.sockets
            .get(port)
            .map(|s| unsafe { BorrowedFd::borrow_raw(s.fd) })
    }

    /// Zero-copy or copy, for port `port`.
    pub fn mode(&self, port: usize) -> Option<CopyMode> {
        self.sockets.get(port).map(|s| s.mode)
    }

    /// The interface name of port `port`.
    pub fn ifname(&self, port: usize) -> Option<&str> {
        self.sockets.get(port).map(|s| s.ifname.as_str())
    }

    /// The kernel's counters for port `port`'s socket.
    pub fn kernel_stats(&self, port: usize) -> io::Result<KernelStats> {
        match self.sockets.get(port) {
            Some(socket) => socket.kernel_stats(),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such port")),
        }
    }

    /// Sends frames this process made rather than received (a traffic generator's): each of
    /// `frames` (at most [`BATCH_SIZE`]) is copied into a free chunk and queued, in order, on
    /// port `port`'s TX ring, which is kicked when the kernel asks. Returns how many were
    /// queued: the first ones; fewer when no chunk is free or the ring is full (call again).
    pub fn transmit_frames(&mut self, port: usize, frames: &[&[u8]]) -> usize {
        let Some(socket) = self.sockets.get_mut(port) else {
            return 0;
        };
        socket.reclaim_completions(&mut self.umem);
        let mut list = TxList::new();
        for bytes in frames.iter().take(BATCH_SIZE) {
            // A chunk filled here starts as the kernel's, as if received; take it into a batch.
            let Some(desc) = self.umem.fill_from(bytes) else {
                break;
            };
            if self.umem.receive(desc) {
                list.push(desc);
            }
        }
        socket.transmit(&mut self.umem, &mut list)
    }

    /// Frames queued on port `port`'s TX ring that the kernel has not taken yet. Copy mode
    /// sends only a few dozen per wake-up, so a generator that stops queueing calls
    /// [`AfXdpPorts::flush_tx`] until this is 0.
    pub fn tx_pending(&mut self, port: usize) -> usize {
        let Some(socket) = self.sockets.get_mut(port) else {
            return 0;
        };
        let size = socket.tx.size;
        // SAFETY: `tx` is this socket's initialised TX ring; asking for `size` entries makes
        // libxdp re-read the consumer index, so the count is current.
        let free = unsafe { libxdp_sys::xsk_prod_nb_free(&mut *socket.tx, size) };
        size.saturating_sub(free) as usize
    }

    /// Wakes the kernel to send what waits on port `port`'s TX ring, and frees the frames
    /// whose transmission completed.
    pub fn flush_tx(&mut self, port: usize) {
        if let Some(socket) = self.sockets.get_mut(port) {
            socket.kick_tx();
            socket.reclaim_completions(&mut self.umem);
        }
    }

    fn refill_all(&mut self) {
        for socket in &mut self.sockets {
            socket.reclaim_completions(&mut self.umem);
        }
        for socket in &mut self.sockets {
            socket.refill(&mut self.umem);
        }
    }
}

fn validate(ifnames: &[&str], config: &XskConfig) -> Result<(), XskError> {
    let rings = [
        config.rx_ring,
        config.tx_ring,
        config.fill_ring,
        config.comp_ring,
    ];
    if ifnames.is_empty() || ifnames.len() > usize::from(u8::MAX) {
        return Err(XskError::Config("1 to 255 interfaces".into()));
    }
    if rings.iter().any(|r| !r.is_power_of_two()) {
        return Err(XskError::Config(format!(
            "ring sizes must be powers of two: {rings:?}"
        )));
    }
    Ok(())
}

impl PacketIo for AfXdpPorts {
    fn port_count(&self) -> usize {
        self.sockets.len()
    }

    fn poll(&mut self, budget: usize, process: &mut ProcessFn<'_>) -> io::Result<PollSummary> {
        for socket in &mut self.sockets {
            socket.push_pending_tx();
        }
        self.refill_all();
        let mut summary = PollSummary::default();
        for ingress in 0..self.sockets.len() {
            let mut left = budget;
            while left > 0 {
                let mut descs = [Desc::default(); BATCH_SIZE];
                let want = left.min(BATCH_SIZE);
                let n = self.sockets[ingress].receive(&mut self.umem, &mut descs, want);
                if n == 0 {
                    break;
                }
                left = left.saturating_sub(want);
                process_received(
                    &mut self.umem,
                    &mut descs[..n],
                    ingress,
                    &mut self.sockets[ingress].stats,
                    &mut self.tx_lists,
                    process,
                );
                for (socket, list) in self.sockets.iter_mut().zip(self.tx_lists.iter_mut()) {
                    summary.transmitted += socket.transmit(&mut self.umem, list);
                }
                summary.received += n;
                // Give the kernel its chunks back before the next batch.
                self.sockets[ingress].refill(&mut self.umem);
            }
        }
        Ok(summary)
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        // Nothing may stay queued for transmission while the worker sleeps.
        for socket in &mut self.sockets {
            for _ in 0..64 {
                let size = socket.tx.size;
                // SAFETY: as in `push_pending_tx`.
                if unsafe { libxdp_sys::xsk_prod_nb_free(&mut *socket.tx, size) } == size {
                    break;
                }
                socket.kick_tx();
            }
            socket.reclaim_completions(&mut self.umem);
        }
        let mut fds = [libc::pollfd {
            fd: -1,
            events: libc::POLLIN,
            revents: 0,
        }; 8];
        let n = self.sockets.len().min(fds.len());
        for (pfd, socket) in fds.iter_mut().zip(&self.sockets) {
            pfd.fd = socket.fd;
        }
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `fds[..n]` is a valid array of `n` pollfd structs.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, ms) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        Ok(())
    }

    fn stats(&self, port: usize) -> PortStats {
        self.sockets
            .get(port)
            .map_or_else(PortStats::default, |s| s.stats)
    }

    fn rx_ring_full(&self, port: usize) -> u64 {
        self.kernel_stats(port)
            .map_or(0, |s| s.rx_ring_full + s.rx_dropped)
    }

    fn frames(&self) -> FrameAccount {
        FrameAccount {
            total: self.umem.config().frame_count,
            free: self.umem.free_count() as u32,
            kernel: self.sockets.iter().map(|s| s.with_kernel).sum(),
            in_flight: self.umem.in_batch_count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_print_as_xvsadm_shows_them() {
        assert_eq!(CopyMode::ZeroCopy.to_string(), "zero-copy");
        assert_eq!(CopyMode::Copy.to_string(), "copy");
    }

    #[test]
    fn refuses_bad_configurations_before_touching_the_kernel() {
        let config = XskConfig {
            rx_ring: 1000,
            ..XskConfig::default()
        };
        assert!(matches!(
            AfXdpPorts::open(&["lo"], 0, &config),
            Err(XskError::Config(_))
        ));
        assert!(matches!(
            AfXdpPorts::open(&[], 0, &XskConfig::default()),
            Err(XskError::Config(_))
        ));
    }

    #[test]
    fn the_default_umem_fits_the_default_memlock_limit() {
        assert!(XskConfig::default().umem.len() <= 8 << 20);
    }
}
