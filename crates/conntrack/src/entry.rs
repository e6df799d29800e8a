//! One slot of a shard: the shared, atomically readable form of a connection or template.
//!
//! Every field is an atomic so that workers other than the owner may read a slot (NAT
//! replies, templates) without a lock and without `unsafe`. The layout is 88 bytes; with the
//! owner's 12-byte wheel link and two 4-byte bucket heads per slot the table stays under the
//! 128-byte budget per connection, IPv6-capable addresses included.
//!
//! Everything that changes after creation and matters across threads — state, flags, the
//! deadline and a generation — lives in one 64-bit [`StateWord`], changed only by
//! compare-and-swap. That is what makes counter updates exactly-once: whichever thread's CAS
//! moves the word across the active/inactive boundary reports it, and a slot that is freed and
//! reused gets a new generation, so stale handles fail instead of touching a stranger.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::key::{Addr, Endpoint, Family, Protocol};
use crate::state::TcpState;
use crate::timeouts::Secs;

/// Flags in the state word.
pub(crate) mod flag {
    /// Counted in InActConn, not ActiveConn (IPVS `IP_VS_CONN_F_INACTIVE`).
    pub const INACTIVE: u8 = 1 << 0;
    /// No output packet seen yet, INPUT-ONLY table applies (IPVS `IP_VS_CONN_F_NOOUTPUT`).
    pub const NO_OUTPUT: u8 = 1 << 1;
    /// A template whose real server became unavailable or quiescent: no longer matched
    /// (IPVS rehashes it with vport 0xffff), but it lives on until its timer ends.
    pub const INVALID: u8 = 1 << 2;
    /// Freed: the slot belongs to nobody until reused.
    pub const DEAD: u8 = 1 << 3;
    /// Installed by connection sync and no packet of it seen here yet.
    pub const SYNCED: u8 = 1 << 4;
}

const GEN_BITS: u32 = 20;
const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

/// The mutable part of an entry, packed: deadline (32) | state (4) | flags (8) | gen (20).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StateWord(pub(crate) u64);

impl StateWord {
    #[inline]
    pub(crate) fn new(deadline: Secs, state: TcpState, flags: u8, gen_: u32) -> Self {
        StateWord(
            deadline as u64
                | ((state as u64) & 0xf) << 32
                | (flags as u64) << 36
                | ((gen_ & GEN_MASK) as u64) << 44,
        )
    }
    #[inline]
    pub(crate) fn deadline(self) -> Secs {
        self.0 as u32
    }
    #[inline]
    pub(crate) fn state(self) -> TcpState {
        TcpState::from_u8(((self.0 >> 32) & 0xf) as u8)
    }
    /// Whether the word's state is `state`, compared without decoding it.
    #[inline]
    pub(crate) fn is_in(self, state: TcpState) -> bool {
        (self.0 >> 32) & 0xf == state as u64
    }
    #[inline]
    pub(crate) fn flags(self) -> u8 {
        (self.0 >> 36) as u8
    }
    #[inline]
    pub(crate) fn generation(self) -> u32 {
        (self.0 >> 44) as u32
    }
    #[inline]
    pub(crate) fn has(self, f: u8) -> bool {
        self.flags() & f != 0
    }
    #[inline]
    pub(crate) fn with(self, deadline: Secs, state: TcpState, flags: u8) -> Self {
        StateWord::new(deadline, state, flags, self.generation())
    }
    /// The word of a freed slot: DEAD, next generation.
    #[inline]
    pub(crate) fn killed(self) -> Self {
        StateWord::new(
            0,
            TcpState::None,
            flag::DEAD,
            self.generation().wrapping_add(1),
        )
    }
}

/// Immutable-while-alive facts of an entry, packed into one word:
/// cport (16) | vport (16) | dport (16) | proto (8) | kind (8).
pub(crate) mod kind {
    pub const V6: u8 = 1 << 0;
    pub const TEMPLATE: u8 = 1 << 1;
    /// Return traffic passes the director (NAT): indexed for outbound lookups.
    pub const VIA_DIRECTOR: u8 = 1 << 2;
    /// A firewall-mark template (IPVS keys these with IPPROTO_IP).
    pub const FWMARK: u8 = 1 << 3;
    /// The real server's address is of the other family than the client's (a TUN real
    /// server of the other family: IPv4-in-IPv6 or IPv6-in-IPv4).
    pub const DEST_OTHER_FAMILY: u8 = 1 << 4;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta(pub(crate) u64);

impl Meta {
    #[inline]
    pub(crate) const fn new(cport: u16, vport: u16, dport: u16, proto: u8, kind: u8) -> Self {
        Meta(
            cport as u64
                | (vport as u64) << 16
                | (dport as u64) << 32
                | (proto as u64) << 48
                | (kind as u64) << 56,
        )
    }
    #[inline]
    pub(crate) fn cport(self) -> u16 {
        self.0 as u16
    }
    #[inline]
    pub(crate) fn vport(self) -> u16 {
        (self.0 >> 16) as u16
    }
    #[inline]
    pub(crate) fn dport(self) -> u16 {
        (self.0 >> 32) as u16
    }
    #[inline]
    pub(crate) fn proto_byte(self) -> u8 {
        (self.0 >> 48) as u8
    }
    #[inline]
    pub(crate) fn protocol(self) -> Protocol {
        Protocol::from_u8(self.proto_byte())
    }
    #[inline]
    pub(crate) fn kind(self) -> u8 {
        (self.0 >> 56) as u8
    }
    #[inline]
    pub(crate) fn is(self, k: u8) -> bool {
        self.kind() & k != 0
    }
    #[inline]
    pub(crate) fn family(self) -> Family {
        if self.is(kind::V6) {
            Family::V6
        } else {
            Family::V4
        }
    }
    /// The family of the real server's address (`daddr`).
    #[inline]
    pub(crate) fn dest_family(self) -> Family {
        if self.is(kind::V6) != self.is(kind::DEST_OTHER_FAMILY) {
            Family::V6
        } else {
            Family::V4
        }
    }
}

/// The kind bit of a real server at `dest` for a client of `family`.
#[inline]
pub(crate) fn dest_kind(family: Family, dest: Family) -> u8 {
    if family == dest {
        0
    } else {
        kind::DEST_OTHER_FAMILY
    }
}

/// A 128-bit address as two relaxed atomics.
#[derive(Debug, Default)]
pub(crate) struct AtomicAddr([AtomicU64; 2]);

impl AtomicAddr {
    #[inline]
    pub(crate) fn store(&self, bits: u128) {
        self.0[0].store(bits as u64, Ordering::Relaxed);
        self.0[1].store((bits >> 64) as u64, Ordering::Relaxed);
    }
    #[inline]
    pub(crate) fn load(&self) -> u128 {
        self.0[0].load(Ordering::Relaxed) as u128
            | (self.0[1].load(Ordering::Relaxed) as u128) << 64
    }
    /// Compares without assembling the full value when the low half already differs.
    #[inline]
    pub(crate) fn equals(&self, bits: u128) -> bool {
        self.0[0].load(Ordering::Relaxed) == bits as u64
            && self.0[1].load(Ordering::Relaxed) == (bits >> 64) as u64
    }
}

/// Control word of a template: marker (1) | generation (23) | controlled connections (40).
/// IPVS `n_control`; a template is freed only by moving `(gen, 0)` to `(gen + 1, 0)`, and a
/// connection attaches only by moving `(gen, n)` to `(gen, n + 1)`, so the two can never
/// both succeed. The marker bit keeps a stale template handle from matching a slot that was
/// reused for a connection (whose control field holds a template reference instead).
pub(crate) mod control {
    pub const COUNT_BITS: u32 = 40;
    pub const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
    const GEN_MASK: u64 = (1 << 23) - 1;
    const TEMPLATE_MARK: u64 = 1 << 63;

    /// The generation of a template control word; `None` if the word is not one.
    #[inline]
    pub fn generation(word: u64) -> Option<u32> {
        (word & TEMPLATE_MARK != 0).then_some(((word >> COUNT_BITS) & GEN_MASK) as u32)
    }
    #[inline]
    pub fn count(word: u64) -> u64 {
        word & COUNT_MASK
    }
    #[inline]
    pub fn make(generation: u32, count: u64) -> u64 {
        TEMPLATE_MARK | ((generation as u64 & GEN_MASK) << COUNT_BITS) | (count & COUNT_MASK)
    }

    /// A connection's reference to the template that controls it: shard and slot (+1, so 0
    /// means "none").
    #[inline]
    pub fn template_ref(shard: u16, slot: u32) -> u64 {
        (shard as u64) << 32 | (slot as u64 + 1)
    }
    #[inline]
    pub fn parse_template_ref(word: u64) -> Option<(u16, u32)> {
        let slot = word as u32;
        (slot != 0).then(|| ((word >> 32) as u16, slot - 1))
    }
}

/// One connection or template.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// Client address (templates: the masked client network).
    pub(crate) caddr: AtomicAddr,
    /// Virtual address (fwmark templates: the mark).
    pub(crate) vaddr: AtomicAddr,
    /// Real server address.
    pub(crate) daddr: AtomicAddr,
    pub(crate) meta: AtomicU64,
    pub(crate) word: AtomicU64,
    /// Templates: [`control`] word. Connections: [`control::template_ref`] or 0.
    pub(crate) control: AtomicU64,
    pub(crate) dest: AtomicU32,
    /// Templates: persistence timeout in seconds. Connections: the connection-sync word
    /// (`crate::sync`): input packets counted << 4 | state when last synced.
    pub(crate) aux: AtomicU32,
    /// Link in the inbound chain (connections) or template chain (templates).
    pub(crate) next_primary: AtomicU32,
    /// Link in the outbound chain (NAT connections).
    pub(crate) next_outbound: AtomicU32,
}

impl Slot {
    #[inline]
    pub(crate) fn meta(&self) -> Meta {
        Meta(self.meta.load(Ordering::Relaxed))
    }

    #[inline]
    pub(crate) fn word(&self) -> StateWord {
        StateWord(self.word.load(Ordering::Acquire))
    }

    #[inline]
    pub(crate) fn cas_word(&self, old: StateWord, new: StateWord) -> Result<(), StateWord> {
        self.word
            .compare_exchange(old.0, new.0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(StateWord)
    }

    #[inline]
    pub(crate) fn endpoint(&self, addr: &AtomicAddr, port: u16, family: Family) -> Endpoint {
        Endpoint {
            addr: Addr::from_parts(addr.load(), family),
            port,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_fits_the_budget() {
        // One slot for both families: its three addresses are 128 bits wide, so an IPv6
        // connection takes the same 88 bytes as an IPv4 one (the budget is 128).
        assert_eq!(std::mem::size_of::<AtomicAddr>(), 16);
        assert_eq!(std::mem::size_of::<Slot>(), 88);
        let slot = Slot::default();
        let v6 = Addr::from(std::net::Ipv6Addr::new(
            0x2001, 0xdb8, 0, 0, 0, 0, 0xffff, 0xfffe,
        ));
        slot.daddr.store(v6.bits());
        assert_eq!(slot.endpoint(&slot.daddr, 80, Family::V6).addr, v6);
    }

    #[test]
    fn state_word_round_trips() {
        let w = StateWord::new(
            123_456,
            TcpState::SynAck,
            flag::INACTIVE | flag::NO_OUTPUT,
            77,
        );
        assert_eq!(w.deadline(), 123_456);
        assert_eq!(w.state(), TcpState::SynAck);
        assert!(w.has(flag::INACTIVE) && w.has(flag::NO_OUTPUT) && !w.has(flag::DEAD));
        assert_eq!(w.generation(), 77);
        let k = w.killed();
        assert!(k.has(flag::DEAD));
        assert_eq!(k.generation(), 78);
        let wrap = StateWord::new(0, TcpState::None, 0, GEN_MASK).killed();
        assert_eq!(wrap.generation(), 0);
    }

    #[test]
    fn meta_round_trips() {
        for (k, client, dest) in [
            (0, Family::V4, Family::V4),
            (kind::V6, Family::V6, Family::V6),
            (kind::DEST_OTHER_FAMILY, Family::V4, Family::V6),
            (kind::V6 | kind::DEST_OTHER_FAMILY, Family::V6, Family::V4),
        ] {
            let m = Meta::new(1, 2, 3, 6, k);
            assert_eq!((m.family(), m.dest_family()), (client, dest), "{k:#x}");
            assert_eq!(k & kind::DEST_OTHER_FAMILY, dest_kind(client, dest));
        }
        let m = Meta::new(40000, 80, 8080, 6, kind::V6 | kind::VIA_DIRECTOR);
        assert_eq!((m.cport(), m.vport(), m.dport()), (40000, 80, 8080));
        assert_eq!(m.protocol(), Protocol::Tcp);
        assert_eq!(m.family(), Family::V6);
        assert!(m.is(kind::VIA_DIRECTOR) && !m.is(kind::TEMPLATE));
    }

    #[test]
    fn control_words() {
        let w = control::make(5, 3);
        assert_eq!((control::generation(w), control::count(w)), (Some(5), 3));
        let r = control::template_ref(2, 9);
        assert_eq!(control::parse_template_ref(r), Some((2, 9)));
        // A connection's template reference is never mistaken for a template's control word.
        assert_eq!(control::generation(r), None);
        assert_eq!(control::generation(control::template_ref(0, 0)), None);
        assert_eq!(control::parse_template_ref(0), None);
    }
}
