//! SYN-flood defence: half-open connections never crowd real clients out of the table.
//!
//! A spoofed SYN costs the sender one packet and the director one entry, which sits in
//! SYN_RECV for a minute because no ACK ever comes. A few thousand such SYNs a second fill
//! any table, and a table that refuses new entries when full then refuses every real client.
//! IPVS answers with its defence strategies (`ip_vs_ctl.c`, `update_defense_level`), each a
//! sysctl with four modes ([`DefenseMode`]) switched on automatically while memory is low
//! (`amemthresh`). xvs keeps the names and modes, with its own measure of pressure (the
//! table's fill, since its memory is its table) and a stronger `drop_entry`:
//!
//! - **`drop_entry`**: IPVS drops random SYN_RECV entries each second; xvs evicts the
//!   *oldest* half-open connection (NONE, SYN_RECV or SYNACK) of the shard, at the moment a
//!   new entry needs its slot. Each shard keeps its TCP connections in creation order on an
//!   owner-private list ([`HalfOpen`]); an entry found established (or closing) is taken off
//!   the list and never evicted. With mode 3 the shard is also kept below the pressure line,
//!   so a flood never takes the table above it.
//! - **`secure_tcp`**: IPVS's hardened state tables, and SYN_RECV/SYNACK entries live
//!   [`Defense::secure_syn_recv_timeout`] seconds instead of [`Defense::syn_recv_timeout`].
//!
//! A real client's entry leaves the half-open list with its ACK, one round trip after its
//! SYN; a flood of `R` SYNs a second against `C` free slots evicts an entry after about
//! `C / R` seconds. So clients are served as long as their handshakes finish in that time
//! (a 16k-entry shard under 100k SYN/s: 160 ms), and established connections are never
//! touched.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};

use crate::index::NIL;
use crate::state::TcpState;
use crate::timeouts::{DEFAULT_TCP_TIMEOUTS, Secs, Timeouts};

/// IPVS's defence strategy modes (the values of its `drop_entry` and `secure_tcp` sysctls).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DefenseMode {
    /// 0: never.
    Off = 0,
    /// 1: automatic, not in force now (the table is below its pressure line).
    #[default]
    Auto = 1,
    /// 2: automatic, in force now (IPVS moves 1 to 2 when memory runs low, 2 back to 1 when
    /// it recovers; setting 2 means "on now, back to 1 once pressure is gone").
    AutoOn = 2,
    /// 3: always in force.
    Always = 3,
}

impl DefenseMode {
    /// The mode of a sysctl value 0..=3.
    pub fn from_u8(v: u8) -> Option<DefenseMode> {
        Some(match v {
            0 => DefenseMode::Off,
            1 => DefenseMode::Auto,
            2 => DefenseMode::AutoOn,
            3 => DefenseMode::Always,
            _ => return None,
        })
    }

    /// Whether the strategy acts now.
    pub fn in_force(self) -> bool {
        matches!(self, DefenseMode::AutoOn | DefenseMode::Always)
    }

    /// IPVS's `update_defense_level` step: automatic modes follow the pressure.
    pub fn step(self, pressure: bool) -> DefenseMode {
        match (self, pressure) {
            (DefenseMode::Auto, true) => DefenseMode::AutoOn,
            (DefenseMode::AutoOn, false) => DefenseMode::Auto,
            (mode, _) => mode,
        }
    }
}

/// The defence settings (config `[defense]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defense {
    /// Evict the oldest half-open connection for a new entry when a shard is full (1, 2),
    /// and also above the pressure line (3); 0 refuses new entries when full.
    pub drop_entry: DefenseMode,
    /// Hardened state tables and the shorter SYN_RECV timeout: under pressure (1, 2),
    /// always (3) or never (0).
    pub secure_tcp: DefenseMode,
    /// The table comes under pressure when its entries exceed this percentage of its
    /// capacity (IPVS's `amemthresh`, counted in table slots instead of free pages), and
    /// stays under it until they are down to half that.
    pub pressure_percent: u8,
    /// SYN_RECV timeout without `secure_tcp` (IPVS: 60 s).
    pub syn_recv_timeout: Secs,
    /// SYN_RECV and SYNACK timeout while `secure_tcp` is in force.
    pub secure_syn_recv_timeout: Secs,
    /// The XDP SYN filter (`xvs_dataplane::syn_filter`, not the table's): drops SYNs from
    /// sources not yet proven real before they reach a worker, automatic while a flood
    /// overwhelms the director (1, 2), always (3) or never (0). Kept here with the other
    /// `[defense]` settings; the table itself does not read it.
    pub syn_filter: DefenseMode,
    /// SYNs a second from sources not proven real at or above which the automatic SYN
    /// filter turns on (when the flood also does damage).
    pub syn_flood_rate: u32,
}

impl Default for Defense {
    /// IPVS's defaults: both strategies off (the daemon's configuration turns them on,
    /// automatic, by default).
    fn default() -> Self {
        Defense {
            drop_entry: DefenseMode::Off,
            secure_tcp: DefenseMode::Off,
            pressure_percent: 90,
            syn_recv_timeout: DEFAULT_TCP_TIMEOUTS[TcpState::SynRecv as usize],
            secure_syn_recv_timeout: 10,
            syn_filter: DefenseMode::Off,
            syn_flood_rate: 10_000,
        }
    }
}

/// What the defence is doing now (for listings and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefenseStatus {
    /// `drop_entry`'s mode now (1 or 2 for the automatic one).
    pub drop_entry: DefenseMode,
    /// `secure_tcp`'s mode now.
    pub secure_tcp: DefenseMode,
    /// The table's entries exceed its pressure line.
    pub under_pressure: bool,
}

/// Half-open TCP states: no ACK from the client seen yet.
#[inline]
pub(crate) fn is_half_open(state: TcpState) -> bool {
    matches!(state, TcpState::None | TcpState::SynRecv | TcpState::SynAck)
}

/// The defence's live settings, shared by all shards.
#[derive(Debug)]
pub(crate) struct DefenseState {
    drop_entry: AtomicU8,
    secure_tcp: AtomicU8,
    pressure_percent: AtomicU8,
    syn_recv_timeout: AtomicU32,
    secure_syn_recv_timeout: AtomicU32,
    syn_filter: AtomicU8,
    syn_flood_rate: AtomicU32,
    under_pressure: AtomicBool,
    /// The clock second last evaluated (once per second, by whichever shard comes first).
    evaluated: AtomicU32,
}

impl DefenseState {
    pub(crate) fn new(d: Defense) -> Self {
        let s = DefenseState {
            drop_entry: AtomicU8::new(0),
            secure_tcp: AtomicU8::new(0),
            pressure_percent: AtomicU8::new(0),
            syn_recv_timeout: AtomicU32::new(0),
            secure_syn_recv_timeout: AtomicU32::new(0),
            syn_filter: AtomicU8::new(0),
            syn_flood_rate: AtomicU32::new(0),
            under_pressure: AtomicBool::new(false),
            evaluated: AtomicU32::new(0),
        };
        s.store(d);
        s
    }

    fn store(&self, d: Defense) {
        self.drop_entry.store(d.drop_entry as u8, Ordering::Relaxed);
        self.secure_tcp.store(d.secure_tcp as u8, Ordering::Relaxed);
        self.pressure_percent
            .store(d.pressure_percent.clamp(1, 100), Ordering::Relaxed);
        self.syn_recv_timeout
            .store(d.syn_recv_timeout.max(1), Ordering::Relaxed);
        self.secure_syn_recv_timeout
            .store(d.secure_syn_recv_timeout.max(1), Ordering::Relaxed);
        self.syn_filter.store(d.syn_filter as u8, Ordering::Relaxed);
        self.syn_flood_rate
            .store(d.syn_flood_rate, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Defense {
        Defense {
            drop_entry: self.drop_entry(),
            secure_tcp: self.secure_tcp(),
            pressure_percent: self.pressure_percent.load(Ordering::Relaxed),
            syn_recv_timeout: self.syn_recv_timeout.load(Ordering::Relaxed),
            secure_syn_recv_timeout: self.secure_syn_recv_timeout.load(Ordering::Relaxed),
            syn_filter: DefenseMode::from_u8(self.syn_filter.load(Ordering::Relaxed))
                .unwrap_or_default(),
            syn_flood_rate: self.syn_flood_rate.load(Ordering::Relaxed),
        }
    }

    #[inline]
    pub(crate) fn drop_entry(&self) -> DefenseMode {
        DefenseMode::from_u8(self.drop_entry.load(Ordering::Relaxed)).unwrap_or_default()
    }

    fn secure_tcp(&self) -> DefenseMode {
        DefenseMode::from_u8(self.secure_tcp.load(Ordering::Relaxed)).unwrap_or_default()
    }

    /// Whether `used` of `capacity` entries is above the pressure line.
    #[inline]
    pub(crate) fn above_line(&self, used: usize, capacity: usize) -> bool {
        used * 100 > capacity * usize::from(self.pressure_percent.load(Ordering::Relaxed))
    }

    /// Whether the table is under pressure with `used` of `capacity` entries: it comes
    /// above the pressure line and ends at half of it. Without that hysteresis `secure_tcp`
    /// would flap under a steady flood: its short timeouts bring the fill under the line,
    /// the normal ones then fill the table with minute-long entries again.
    pub(crate) fn pressure(&self, used: usize, capacity: usize) -> bool {
        let line = usize::from(self.pressure_percent.load(Ordering::Relaxed));
        let line = if self.under_pressure.load(Ordering::Relaxed) {
            line / 2
        } else {
            line
        };
        used * 100 > capacity * line
    }

    pub(crate) fn status(&self) -> DefenseStatus {
        DefenseStatus {
            drop_entry: self.drop_entry(),
            secure_tcp: self.secure_tcp(),
            under_pressure: self.under_pressure.load(Ordering::Relaxed),
        }
    }

    /// Claims the evaluation of second `now` (false if another shard did it already).
    #[inline]
    pub(crate) fn claim(&self, now: Secs) -> bool {
        let last = self.evaluated.load(Ordering::Relaxed);
        now != last
            && self
                .evaluated
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// IPVS's `update_defense_level`: moves the automatic modes with the pressure and
    /// applies `secure_tcp`'s timeouts when it switches. Returns whether `secure_tcp` is in
    /// force.
    pub(crate) fn evaluate(&self, pressure: bool, timeouts: &Timeouts) -> bool {
        self.under_pressure.store(pressure, Ordering::Relaxed);
        let drop = self.drop_entry().step(pressure);
        self.drop_entry.store(drop as u8, Ordering::Relaxed);
        let before = self.secure_tcp();
        let after = before.step(pressure);
        self.secure_tcp.store(after as u8, Ordering::Relaxed);
        if before.in_force() != after.in_force() {
            self.apply_timeouts(after.in_force(), timeouts);
        }
        after.in_force()
    }

    /// Replaces the settings (a reload). An automatic mode already in force stays in force
    /// (a reload during a flood does not lift the defence); the next second re-evaluates.
    pub(crate) fn set(&self, d: Defense, timeouts: &Timeouts) -> bool {
        let keep = |new: DefenseMode, now: DefenseMode| match (new, now) {
            (DefenseMode::Auto, DefenseMode::AutoOn) => DefenseMode::AutoOn,
            (new, _) => new,
        };
        let d = Defense {
            drop_entry: keep(d.drop_entry, self.drop_entry()),
            secure_tcp: keep(d.secure_tcp, self.secure_tcp()),
            ..d
        };
        self.store(d);
        self.evaluated.store(0, Ordering::Relaxed);
        let secure = d.secure_tcp.in_force();
        self.apply_timeouts(secure, timeouts);
        secure
    }

    fn apply_timeouts(&self, secure: bool, timeouts: &Timeouts) {
        let (syn_recv, syn_ack) = if secure {
            let t = self.secure_syn_recv_timeout.load(Ordering::Relaxed);
            (t, t)
        } else {
            (
                self.syn_recv_timeout.load(Ordering::Relaxed),
                DEFAULT_TCP_TIMEOUTS[TcpState::SynAck as usize],
            )
        };
        timeouts.set_tcp_state(TcpState::SynRecv, syn_recv);
        timeouts.set_tcp_state(TcpState::SynAck, syn_ack);
    }
}

/// Link of one slot in the half-open list (`slot + 1`, NIL = none).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Link {
    prev: u32,
    next: u32,
}

// SAFETY: two u32s; all-zero is "not on the list".
unsafe impl crate::memory::ZeroIsValid for Link {}

/// A shard's TCP connections that may still be half-open, oldest first (owner-private).
///
/// Entries join when created and leave when freed, or when eviction finds them past the
/// handshake; the list is never scanned as a whole. Its links are a zeroed array, resident
/// only as far as slots are used.
#[derive(Debug)]
pub(crate) struct HalfOpen {
    links: Box<[Link]>,
    head: u32,
    tail: u32,
}

impl HalfOpen {
    pub(crate) fn new(capacity: usize) -> Self {
        HalfOpen {
            links: crate::memory::zeroed_slice(capacity),
            head: NIL,
            tail: NIL,
        }
    }

    fn linked(&self, slot: u32) -> bool {
        self.links[slot as usize].prev != NIL || self.head == slot + 1
    }

    /// Appends `slot` (the newest).
    pub(crate) fn push(&mut self, slot: u32) {
        if self.linked(slot) {
            return;
        }
        self.links[slot as usize] = Link {
            prev: self.tail,
            next: NIL,
        };
        if self.tail != NIL {
            self.links[(self.tail - 1) as usize].next = slot + 1;
        } else {
            self.head = slot + 1;
        }
        self.tail = slot + 1;
    }

    /// Takes `slot` off the list (no-op if it is not on it).
    pub(crate) fn remove(&mut self, slot: u32) {
        if !self.linked(slot) {
            return;
        }
        let Link { prev, next } = self.links[slot as usize];
        if prev != NIL {
            self.links[(prev - 1) as usize].next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            self.links[(next - 1) as usize].prev = prev;
        } else {
            self.tail = prev;
        }
        self.links[slot as usize] = Link {
            prev: NIL,
            next: NIL,
        };
    }

    /// The oldest slot on the list.
    pub(crate) fn oldest(&self) -> Option<u32> {
        (self.head != NIL).then(|| self.head - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_keeps_creation_order_and_removes_anywhere() {
        let mut l = HalfOpen::new(8);
        assert_eq!(l.oldest(), None);
        for s in [3, 0, 5, 7] {
            l.push(s);
        }
        l.push(5); // already on it: stays where it is
        assert_eq!(l.oldest(), Some(3));
        l.remove(5);
        l.remove(5);
        l.remove(3);
        assert_eq!(l.oldest(), Some(0));
        l.remove(0);
        assert_eq!(l.oldest(), Some(7));
        l.remove(7);
        assert_eq!(l.oldest(), None);
        l.push(5);
        assert_eq!(l.oldest(), Some(5));
    }

    #[test]
    fn automatic_modes_follow_pressure_as_ipvs_does() {
        use DefenseMode::*;
        assert_eq!(Auto.step(true), AutoOn);
        assert_eq!(AutoOn.step(true), AutoOn);
        assert_eq!(AutoOn.step(false), Auto);
        assert_eq!(Auto.step(false), Auto);
        assert_eq!(Off.step(true), Off);
        assert_eq!(Always.step(false), Always);
        assert!(!Auto.in_force() && AutoOn.in_force() && Always.in_force());
        assert_eq!(DefenseMode::from_u8(4), None);
    }

    #[test]
    fn a_reload_during_pressure_keeps_the_defence_in_force() {
        let t = Timeouts::default();
        let auto = Defense {
            drop_entry: DefenseMode::Auto,
            secure_tcp: DefenseMode::Auto,
            secure_syn_recv_timeout: 7,
            ..Defense::default()
        };
        let s = DefenseState::new(auto);
        s.evaluate(true, &t);
        assert!(s.set(auto, &t));
        assert_eq!(s.status().secure_tcp, DefenseMode::AutoOn);
        assert_eq!(t.for_state(crate::Protocol::Tcp, TcpState::SynRecv), 7);
        // Turning it off is obeyed at once.
        assert!(!s.set(Defense::default(), &t));
        assert_eq!(s.status().drop_entry, DefenseMode::Off);
        assert_eq!(t.for_state(crate::Protocol::Tcp, TcpState::SynRecv), 60);
    }

    #[test]
    fn secure_tcp_shortens_half_open_timeouts_and_restores_them() {
        let t = Timeouts::default();
        let s = DefenseState::new(Defense {
            secure_tcp: DefenseMode::Auto,
            syn_recv_timeout: 30,
            secure_syn_recv_timeout: 4,
            ..Defense::default()
        });
        assert!(s.evaluate(true, &t));
        assert_eq!(t.for_state(crate::Protocol::Tcp, TcpState::SynRecv), 4);
        assert_eq!(t.for_state(crate::Protocol::Tcp, TcpState::SynAck), 4);
        assert_eq!(s.status().secure_tcp, DefenseMode::AutoOn);
        assert!(!s.evaluate(false, &t));
        assert_eq!(t.for_state(crate::Protocol::Tcp, TcpState::SynRecv), 30);
        assert_eq!(t.for_state(crate::Protocol::Tcp, TcpState::SynAck), 120);
        assert!(s.above_line(91, 100) && !s.above_line(90, 100));
    }

    #[test]
    fn pressure_starts_above_the_line_and_ends_at_half_of_it() {
        let t = Timeouts::default();
        let s = DefenseState::new(Defense {
            pressure_percent: 80,
            ..Defense::default()
        });
        assert!(!s.pressure(80, 100));
        assert!(s.pressure(81, 100));
        s.evaluate(true, &t);
        assert!(s.pressure(41, 100), "still under pressure above 40%");
        assert!(!s.pressure(40, 100));
        s.evaluate(false, &t);
        assert!(!s.pressure(79, 100));
    }
}
