//! Which virtual service a packet is for: `(protocol, VIP, port)` to a service index.
//!
//! Built once per snapshot and read for every packet, so it is a read-only open-addressing
//! table of packed 64-bit keys (a multiply, a mask and usually one compare), a quarter full
//! at most, rather than a general hash map.

/// `(IP protocol, IPv4 VIP, port)`.
pub type ClassKey = (u8, u32, u16);

/// No key packs to this (the protocol byte sits in bits 48..56).
const EMPTY: u64 = u64::MAX;

/// The classification table.
#[derive(Debug, Clone)]
pub struct Classifier {
    slots: Box<[(u64, u16)]>,
    mask: usize,
    len: usize,
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::with_capacity(0)
    }
}

#[inline]
fn pack((protocol, vip, port): ClassKey) -> u64 {
    u64::from(protocol) << 48 | u64::from(vip) << 16 | u64::from(port)
}

#[inline]
fn unpack(key: u64) -> ClassKey {
    ((key >> 48) as u8, (key >> 16) as u32, key as u16)
}

#[inline]
fn home(key: u64, mask: usize) -> usize {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & mask
}

impl Classifier {
    fn with_capacity(keys: usize) -> Classifier {
        let size = (keys * 4).next_power_of_two().max(8);
        Classifier {
            slots: vec![(EMPTY, 0); size].into_boxed_slice(),
            mask: size - 1,
            len: 0,
        }
    }

    /// Adds or replaces `key` (grows to stay a quarter full).
    pub fn insert(&mut self, key: ClassKey, service: u16) {
        if (self.len + 1) * 4 > self.slots.len() {
            let mut bigger = Classifier::with_capacity(self.len + 1);
            for (k, v) in self.iter() {
                bigger.insert(k, v);
            }
            *self = bigger;
        }
        let packed = pack(key);
        let mut i = home(packed, self.mask);
        loop {
            match self.slots[i].0 {
                EMPTY => {
                    self.slots[i] = (packed, service);
                    self.len += 1;
                    return;
                }
                k if k == packed => {
                    self.slots[i].1 = service;
                    return;
                }
                _ => i = (i + 1) & self.mask,
            }
        }
    }

    /// The service for `key`, if any.
    #[inline]
    pub fn get(&self, key: ClassKey) -> Option<u16> {
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
    pub fn iter(&self) -> impl Iterator<Item = (ClassKey, u16)> + '_ {
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
        let mut c = Classifier::default();
        let keys: Vec<ClassKey> = (0..1000u32)
            .map(|i| {
                (
                    if i % 2 == 0 { 6 } else { 17 },
                    0xc000_0200 + i / 7,
                    (i % 7) as u16 * 80,
                )
            })
            .collect();
        for (n, k) in keys.iter().enumerate() {
            c.insert(*k, n as u16);
        }
        assert_eq!(c.len(), 1000);
        for (n, k) in keys.iter().enumerate() {
            assert_eq!(c.get(*k), Some(n as u16));
        }
        assert_eq!(c.get((6, 0xc000_0200, 81)), None);
        assert_eq!(c.get((1, 0xc000_0200, 0)), None);
        c.insert(keys[3], 9);
        assert_eq!(
            (c.get(keys[3]), c.len()),
            (Some(9), 1000),
            "replaced, not added"
        );
        let mut all: Vec<ClassKey> = c.iter().map(|(k, _)| k).collect();
        all.sort();
        let mut want = keys.clone();
        want.sort();
        assert_eq!(all, want);
        assert!(Classifier::default().get((6, 1, 1)).is_none());
    }
}
