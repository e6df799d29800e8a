//! Which IPv6 virtual service a packet is for: `(protocol, VIP, port)` to a service index.
//!
//! The IPv6 sibling of [`super::classify`], a table of its own so the IPv4 lookup (packed
//! into one 64-bit word) stays as it is and other classifiers (firewall marks) can sit
//! beside both. Built once per snapshot, read for every IPv6 packet: read-only open
//! addressing, a quarter full at most, one 128-bit and one 32-bit compare per probe.

use std::net::Ipv6Addr;

/// `(IP protocol, IPv6 VIP, port)`.
pub type ClassKey6 = (u8, Ipv6Addr, u16);

/// A key as stored: the VIP's 128 bits and `protocol << 16 | port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed {
    vip: u128,
    /// `protocol << 16 | port`; `u32::MAX` marks an empty slot (no protocol is 0xffff).
    rest: u32,
}

const EMPTY: Packed = Packed {
    vip: 0,
    rest: u32::MAX,
};

#[inline]
fn pack((protocol, vip, port): ClassKey6) -> Packed {
    Packed {
        vip: vip.to_bits(),
        rest: u32::from(protocol) << 16 | u32::from(port),
    }
}

#[inline]
fn unpack(key: Packed) -> ClassKey6 {
    (
        (key.rest >> 16) as u8,
        Ipv6Addr::from_bits(key.vip),
        key.rest as u16,
    )
}

#[inline]
fn home(key: Packed, mask: usize) -> usize {
    // Every address bit takes part: VIPs of one /64 differ in the low half only.
    let folded = (key.vip as u64) ^ ((key.vip >> 64) as u64).rotate_left(29) ^ u64::from(key.rest);
    (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & mask
}

/// The IPv6 classification table.
#[derive(Debug, Clone)]
pub struct Classifier6 {
    slots: Box<[(Packed, u16)]>,
    mask: usize,
    len: usize,
}

impl Default for Classifier6 {
    fn default() -> Self {
        Classifier6::with_capacity(0)
    }
}

impl Classifier6 {
    fn with_capacity(keys: usize) -> Classifier6 {
        let size = (keys * 4).next_power_of_two().max(8);
        Classifier6 {
            slots: vec![(EMPTY, 0); size].into_boxed_slice(),
            mask: size - 1,
            len: 0,
        }
    }

    /// Adds or replaces `key` (grows to stay a quarter full).
    pub fn insert(&mut self, key: ClassKey6, service: u16) {
        if (self.len + 1) * 4 > self.slots.len() {
            let mut bigger = Classifier6::with_capacity(self.len + 1);
            for (k, v) in self.iter() {
                bigger.insert(k, v);
            }
            *self = bigger;
        }
        let packed = pack(key);
        let mut i = home(packed, self.mask);
        loop {
            let slot = &mut self.slots[i];
            if slot.0 == EMPTY {
                *slot = (packed, service);
                self.len += 1;
                return;
            }
            if slot.0 == packed {
                slot.1 = service;
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The service for `key`, if any.
    #[inline]
    pub fn get(&self, key: ClassKey6) -> Option<u16> {
        let packed = pack(key);
        let mut i = home(packed, self.mask);
        loop {
            let (k, v) = self.slots[i];
            if k == packed {
                return Some(v);
            }
            if k == EMPTY {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Every key and its service.
    pub fn iter(&self) -> impl Iterator<Item = (ClassKey6, u16)> + '_ {
        self.slots
            .iter()
            .filter(|(k, _)| *k != EMPTY)
            .map(|&(k, v)| (unpack(k), v))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_was_inserted_and_nothing_else() {
        let mut c = Classifier6::default();
        let base: u128 = 0x2001_0db8_0000_0000_0000_0000_0000_0000;
        let keys: Vec<ClassKey6> = (0..1000u128)
            .map(|i| {
                (
                    if i % 2 == 0 { 6 } else { 17 },
                    // Half differ in the low 64 bits only, half in the high 64 bits only.
                    Ipv6Addr::from_bits(if i % 3 == 0 {
                        base + i / 7
                    } else {
                        base + ((i / 7) << 64)
                    }),
                    (i % 7) as u16 * 80,
                )
            })
            .collect();
        for (n, k) in keys.iter().enumerate() {
            c.insert(*k, n as u16);
        }
        assert_eq!(c.len(), keys.len());
        for (n, k) in keys.iter().enumerate() {
            assert_eq!(c.get(*k), Some(n as u16));
        }
        let vip = Ipv6Addr::from_bits(base);
        assert_eq!(c.get((6, vip, 81)), None);
        assert_eq!(c.get((1, vip, 0)), None);
        assert_eq!(c.get((6, Ipv6Addr::from_bits(base ^ 1 << 127), 0)), None);
        c.insert(keys[3], 9);
        assert_eq!(
            (c.get(keys[3]), c.len()),
            (Some(9), 1000),
            "replaced, not added"
        );
        let mut all: Vec<ClassKey6> = c.iter().map(|(k, _)| k).collect();
        all.sort();
        let mut want = keys.clone();
        want.sort();
        assert_eq!(all, want);
        assert!(Classifier6::default().get((6, vip, 1)).is_none());
    }
}
