//! The SYN filter: under a SYN flood larger than the workers can take, spoofed SYNs are
//! dropped in XDP, before they cost a worker anything, and real clients still get in.
//!
//! Why: the connection table's defence (`drop_entry`, `secure_tcp`) keeps half-open entries
//! from crowding real clients out of the table, but every spoofed SYN still crosses the
//! AF_XDP ring and a worker. Past the workers' rate the kernel drops frames at the full RX
//! ring, real clients' with the flood's, so their connections fail however good the table
//! is. Only frames dropped before the ring leave room for theirs.
//!
//! How a source proves real: a real client's TCP sends its SYN again, same port and same
//! sequence number, when the first goes unanswered (Linux after 1 s, then 3 s); a spoofed
//! source never sees the drop and never repeats. While the filter is in force, the XDP
//! program (`bpf/xdp_filter.c`) drops a SYN to a service from a source not yet proven and
//! remembers the first one per source; the same SYN again between [`MIN_GAP`] and
//! [`MAX_GAP`] later proves the source, and its SYNs pass for [`PROVEN_FOR`]. Anything but a
//! SYN (the established connections, the handshakes' ACKs) is never touched. The price: a
//! client's first connection during a flood takes one retransmission longer (about 1 s);
//! its later ones do not. A flood that repeats every spoofed SYN a second later gets
//! through, as it would anyway without the filter.
//!
//! When: [`DefenseMode`] as for IPVS's strategies (`defense.syn_filter`, automatic by
//! default). The automatic mode turns on when, within one second, SYNs from sources not
//! proven reach `defense.syn_flood_rate` *and* the flood does damage (the table is under
//! pressure or the kernel dropped frames at a full RX ring), and turns off after
//! [`CALM_SECONDS`] seconds in a row below half that rate. The SYNs are counted in XDP
//! before the filter drops them, so the filter does not hide the flood it holds back.

use std::time::Duration;

use aya::Pod;
use aya::maps::{Array, MapData, MapError, PerCpuArray};
use xvs_conntrack::DefenseMode;

/// A retransmitted SYN comes at least this long after the first (Linux: 1 s).
pub const MIN_GAP: Duration = Duration::from_millis(500);
/// And at most this long (Linux's second retransmission comes 3 s after the first SYN).
pub const MAX_GAP: Duration = Duration::from_secs(5);
/// How long a proven source stays proven without SYNs (each SYN renews it).
pub const PROVEN_FOR: Duration = Duration::from_secs(600);
/// Seconds below half the flood rate before the automatic filter turns off.
pub const CALM_SECONDS: u32 = 10;

/// The settings the program reads (`struct syn_filter_settings`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Settings {
    on: u32,
    pad: u32,
    min_gap_ns: u64,
    max_gap_ns: u64,
    proven_ns: u64,
}

// SAFETY: plain integers, no padding (4 + 4 + 3 * 8 bytes, 8-aligned).
unsafe impl Pod for Settings {}

impl Settings {
    fn new(on: bool) -> Settings {
        Settings {
            on: u32::from(on),
            pad: 0,
            min_gap_ns: MIN_GAP.as_nanos() as u64,
            max_gap_ns: MAX_GAP.as_nanos() as u64,
            proven_ns: PROVEN_FOR.as_nanos() as u64,
        }
    }
}

/// The program's counters (`SYN_COUNT_*`), summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynCounts {
    /// SYNs to services seen, filter on or off.
    pub seen: u64,
    /// SYNs dropped because their source was not proven.
    pub dropped: u64,
    /// Sources proven by a retransmitted SYN.
    pub proven: u64,
    /// SYNs passed because their source was proven.
    pub passed: u64,
}

impl SynCounts {
    /// SYNs from sources not proven (the flood's measure).
    pub fn unproven(&self) -> u64 {
        self.seen.saturating_sub(self.passed)
    }

    fn add(&mut self, other: SynCounts) {
        self.seen += other.seen;
        self.dropped += other.dropped;
        self.proven += other.proven;
        self.passed += other.passed;
    }
}

/// One interface's filter maps: the switch and the counters.
pub struct SynFilterMaps {
    settings: Array<MapData, Settings>,
    counts: PerCpuArray<MapData, u64>,
}

impl SynFilterMaps {
    pub(crate) fn new(
        settings: Array<MapData, Settings>,
        counts: PerCpuArray<MapData, u64>,
    ) -> SynFilterMaps {
        SynFilterMaps { settings, counts }
    }

    /// Turns the filter on or off on this interface.
    pub fn set(&mut self, on: bool) -> Result<(), MapError> {
        self.settings.set(0, Settings::new(on), 0)
    }

    /// The counters since the filter was loaded.
    pub fn counts(&self) -> Result<SynCounts, MapError> {
        let sum =
            |index: u32| -> Result<u64, MapError> { Ok(self.counts.get(&index, 0)?.iter().sum()) };
        Ok(SynCounts {
            seen: sum(0)?,
            dropped: sum(1)?,
            proven: sum(2)?,
            passed: sum(3)?,
        })
    }
}

/// The automatic mode's decision, taken once a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trigger {
    mode: DefenseMode,
    /// Seconds in a row below half the flood rate while in force.
    calm: u32,
}

impl Trigger {
    /// Starts in `mode`.
    pub fn new(mode: DefenseMode) -> Trigger {
        Trigger { mode, calm: 0 }
    }

    /// The mode now.
    pub fn mode(&self) -> DefenseMode {
        self.mode
    }

    /// A reload's mode: an automatic filter in force stays in force (a reload during a
    /// flood does not lift it), every other mode is taken as given.
    pub fn configure(&mut self, mode: DefenseMode) {
        self.mode = match (mode, self.mode) {
            (DefenseMode::Auto, DefenseMode::AutoOn) => DefenseMode::AutoOn,
            (mode, _) => mode,
        };
    }

    /// One second passed with `unproven` SYNs from sources not proven; `damage` says the
    /// flood hurt (table under pressure, frames lost at a full RX ring). Returns whether the
    /// filter is in force for the next second.
    pub fn second(&mut self, unproven: u64, flood_rate: u32, damage: bool) -> bool {
        let rate = u64::from(flood_rate);
        match self.mode {
            DefenseMode::Auto if unproven >= rate && damage => {
                self.mode = DefenseMode::AutoOn;
                self.calm = 0;
            }
            DefenseMode::AutoOn if unproven < rate / 2 => {
                self.calm += 1;
                if self.calm >= CALM_SECONDS {
                    self.mode = DefenseMode::Auto;
                    self.calm = 0;
                }
            }
            DefenseMode::AutoOn => self.calm = 0,
            _ => {}
        }
        self.mode.in_force()
    }
}

/// What the SYN filter is doing, for listings and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SynFilterStatus {
    /// `defense.syn_filter`'s mode now (1 or 2 for the automatic one).
    pub mode: DefenseMode,
    /// SYNs from sources not proven in the last second, all interfaces.
    pub unproven_per_sec: u64,
    /// The counters, all interfaces.
    pub counts: SynCounts,
}

/// The filter of every interface, driven by one [`Trigger`] (the side thread's).
pub struct SynGuard {
    maps: Vec<SynFilterMaps>,
    trigger: Trigger,
    flood_rate: u32,
    last: SynCounts,
    in_force: Option<bool>,
}

impl SynGuard {
    /// Drives `maps` (one per interface) in `mode`.
    pub fn new(maps: Vec<SynFilterMaps>, mode: DefenseMode, flood_rate: u32) -> SynGuard {
        SynGuard {
            maps,
            trigger: Trigger::new(mode),
            flood_rate,
            last: SynCounts::default(),
            in_force: None,
        }
    }

    /// A reload's settings.
    pub fn configure(&mut self, mode: DefenseMode, flood_rate: u32) {
        self.trigger.configure(mode);
        self.flood_rate = flood_rate;
    }

    /// One second passed (`damage` as for [`Trigger::second`]): reads the counters, decides,
    /// and switches the interfaces' filters when the decision changes.
    pub fn second(&mut self, damage: bool) -> SynFilterStatus {
        let mut counts = SynCounts::default();
        for maps in &self.maps {
            match maps.counts() {
                Ok(c) => counts.add(c),
                Err(e) => tracing::warn!(error = %e, "cannot read the SYN filter's counters"),
            }
        }
        let unproven = counts.unproven().saturating_sub(self.last.unproven());
        self.last = counts;
        let on = self.trigger.second(unproven, self.flood_rate, damage);
        if self.in_force != Some(on) {
            let mut ok = true;
            for maps in &mut self.maps {
                if let Err(e) = maps.set(on) {
                    tracing::warn!(error = %e, "cannot switch the SYN filter");
                    ok = false;
                }
            }
            if self.in_force.is_some() {
                tracing::warn!(
                    in_force = on,
                    mode = self.trigger.mode() as u8,
                    unproven_syns_per_sec = unproven,
                    "SYN filter {}",
                    if on { "on" } else { "off" }
                );
            }
            // A failed switch is tried again next second.
            self.in_force = ok.then_some(on);
        }
        SynFilterStatus {
            mode: self.trigger.mode(),
            unproven_per_sec: unproven,
            counts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_have_the_programs_layout() {
        assert_eq!(std::mem::size_of::<Settings>(), 32);
        let s = Settings::new(true);
        assert_eq!(
            (s.on, s.min_gap_ns, s.max_gap_ns),
            (1, 500_000_000, 5_000_000_000)
        );
    }

    #[test]
    fn automatic_turns_on_for_a_damaging_flood_and_off_after_calm_seconds() {
        let mut t = Trigger::new(DefenseMode::Auto);
        assert!(!t.second(50_000, 10_000, false), "no damage, no filter");
        assert!(!t.second(9_999, 10_000, true), "below the rate, no filter");
        assert!(t.second(10_000, 10_000, true));
        assert_eq!(t.mode(), DefenseMode::AutoOn);
        // Held while the flood goes on, though the filter ends the damage.
        for _ in 0..30 {
            assert!(t.second(200_000, 10_000, false));
        }
        // Calm seconds in a row end it; a flood second in between starts the count again.
        for _ in 0..CALM_SECONDS - 1 {
            assert!(t.second(4_999, 10_000, false));
        }
        assert!(t.second(5_000, 10_000, false));
        for _ in 0..CALM_SECONDS - 1 {
            assert!(t.second(0, 10_000, false));
        }
        assert!(!t.second(0, 10_000, false));
        assert_eq!(t.mode(), DefenseMode::Auto);
    }

    #[test]
    fn fixed_modes_ignore_the_flood() {
        let mut off = Trigger::new(DefenseMode::Off);
        assert!(!off.second(u64::MAX, 1, true));
        let mut always = Trigger::new(DefenseMode::Always);
        assert!(always.second(0, 10_000, false));
        let mut on = Trigger::new(DefenseMode::AutoOn);
        for _ in 0..CALM_SECONDS - 1 {
            assert!(on.second(0, 10_000, false));
        }
        assert!(!on.second(0, 10_000, false), "2 is on until the flood ends");
    }

    #[test]
    fn a_reload_keeps_an_automatic_filter_in_force() {
        let mut t = Trigger::new(DefenseMode::Auto);
        assert!(t.second(20_000, 10_000, true));
        t.configure(DefenseMode::Auto);
        assert_eq!(t.mode(), DefenseMode::AutoOn);
        t.configure(DefenseMode::Off);
        assert!(!t.second(20_000, 10_000, true));
    }

    #[test]
    fn unproven_syns_are_the_ones_not_passed_as_proven() {
        let c = SynCounts {
            seen: 100,
            dropped: 60,
            proven: 2,
            passed: 38,
        };
        assert_eq!(c.unproven(), 62);
    }
}
