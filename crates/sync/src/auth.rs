//! Authenticated sync messages: an HMAC-SHA256 trailer, off by default.
//!
//! IPVS sync is plaintext and unauthenticated: anyone on the sync LAN can install
//! connections on a backup. With a shared key, every message (version 1 and [`crate::ext`])
//! carries a 48-byte trailer:
//!
//! ```text
//!   "XVSA" | sender id (be32) | counter (be64) | HMAC-SHA256(key, message || "XVSA" || id || counter)
//! ```
//!
//! The sender id is drawn at each start; the counter is the sender's clock in microseconds,
//! never repeated (it moves on by at least one per message). A receiver refuses a message
//! whose MAC is wrong, whose counter is not above the last one it accepted from that sender,
//! or whose counter is more than [`WINDOW_MICROS`] away from its own clock (a replay of a
//! message recorded earlier, even from a sender id it forgot). Directors therefore need clocks
//! within that window of each other, which NTP gives. The version 1 header's `size` excludes
//! the trailer, so a kernel IPVS backup drops authenticated messages ("bogus message size"):
//! authentication is for xvs directors only.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Length of the trailer.
pub const TRAILER_LEN: usize = 4 + 4 + 8 + 32;
/// How far a message's counter may be from the receiver's clock.
pub const WINDOW_MICROS: u64 = 30_000_000;
const MAGIC: [u8; 4] = *b"XVSA";
/// Senders remembered at most (oldest forgotten first; the window still guards them).
const MAX_SENDERS: usize = 1024;

type HmacSha256 = Hmac<Sha256>;

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Why an authenticated receiver refused a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No trailer (an unauthenticated sender, or a kernel IPVS master).
    Missing,
    /// The MAC does not match: another key, or changed bytes.
    BadMac,
    /// Seen before, or older than the last accepted message of its sender.
    Replayed,
    /// The counter is outside the clock window.
    Stale,
}

impl AuthError {
    /// A short name for counters.
    pub fn name(self) -> &'static str {
        match self {
            AuthError::Missing => "unauthenticated",
            AuthError::BadMac => "bad_mac",
            AuthError::Replayed => "replayed",
            AuthError::Stale => "stale",
        }
    }
}

/// The sending half: appends trailers.
#[derive(Clone)]
pub struct Signer {
    mac: HmacSha256,
    id: u32,
    last: u64,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer with `key` and sender id `id` (draw a fresh one per start).
    pub fn new(key: &[u8], id: u32) -> Self {
        Signer {
            mac: HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length"),
            id,
            last: 0,
        }
    }

    /// `message` followed by its trailer, with the counter at `now_micros` (or just past the
    /// last one).
    pub fn sign(&mut self, message: &[u8], now_micros: u64) -> Vec<u8> {
        self.last = now_micros.max(self.last + 1);
        let mut out = Vec::with_capacity(message.len() + TRAILER_LEN);
        out.extend_from_slice(message);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.last.to_be_bytes());
        let mut mac = self.mac.clone();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }
}

/// The receiving half: checks trailers and remembers each sender's last counter.
#[derive(Clone)]
pub struct Verifier {
    mac: HmacSha256,
    last: HashMap<u32, u64>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("senders", &self.last.len())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for `key`.
    pub fn new(key: &[u8]) -> Self {
        Verifier {
            mac: HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length"),
            last: HashMap::new(),
        }
    }

    /// The message without its trailer, if the trailer is good; `now_micros` is the
    /// receiver's clock.
    pub fn verify<'a>(
        &mut self,
        datagram: &'a [u8],
        now_micros: u64,
    ) -> Result<&'a [u8], AuthError> {
        if datagram.len() < TRAILER_LEN {
            return Err(AuthError::Missing);
        }
        let (signed, tag) = datagram.split_at(datagram.len() - 32);
        let trailer = &signed[signed.len() - 16..];
        if trailer[..4] != MAGIC {
            return Err(AuthError::Missing);
        }
        let mut mac = self.mac.clone();
        mac.update(signed);
        mac.verify_slice(tag).map_err(|_| AuthError::BadMac)?;
        let id = u32::from_be_bytes(trailer[4..8].try_into().unwrap_or_default());
        let counter = u64::from_be_bytes(trailer[8..16].try_into().unwrap_or_default());
        if counter.abs_diff(now_micros) > WINDOW_MICROS {
            return Err(AuthError::Stale);
        }
        if self.last.get(&id).is_some_and(|&last| counter <= last) {
            return Err(AuthError::Replayed);
        }
        if self.last.len() >= MAX_SENDERS && !self.last.contains_key(&id) {
            // Forget senders silent for longer than the window: their old messages are stale.
            self.last
                .retain(|_, &mut c| now_micros.saturating_sub(c) < WINDOW_MICROS);
            if self.last.len() >= MAX_SENDERS
                && let Some(oldest) = self.last.iter().min_by_key(|(_, c)| **c).map(|(id, _)| *id)
            {
                self.last.remove(&oldest);
            }
        }
        self.last.insert(id, counter);
        Ok(&signed[..signed.len() - 16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000_000;

    #[test]
    fn signed_messages_verify_and_replays_do_not() {
        let mut s = Signer::new(b"secret", 42);
        let mut v = Verifier::new(b"secret");
        let a = s.sign(b"hello", NOW);
        assert_eq!(a.len(), 5 + TRAILER_LEN);
        assert_eq!(&a[5..9], b"XVSA");
        assert_eq!(v.verify(&a, NOW), Ok(&b"hello"[..]));
        assert_eq!(v.verify(&a, NOW), Err(AuthError::Replayed));
        // Two messages in the same microsecond get distinct counters.
        let b = s.sign(b"again", NOW);
        assert_eq!(v.verify(&b, NOW + 1), Ok(&b"again"[..]));
        assert_eq!(
            v.verify(&a, NOW + 2),
            Err(AuthError::Replayed),
            "older than the last"
        );
    }

    #[test]
    fn wrong_key_tampering_staleness_and_plain_messages_are_refused() {
        let mut s = Signer::new(b"secret", 1);
        let mut v = Verifier::new(b"other");
        let m = s.sign(b"hello", NOW);
        assert_eq!(v.verify(&m, NOW), Err(AuthError::BadMac));
        let mut v = Verifier::new(b"secret");
        let mut changed = m.clone();
        changed[0] ^= 1;
        assert_eq!(v.verify(&changed, NOW), Err(AuthError::BadMac));
        assert_eq!(
            v.verify(&m, NOW + WINDOW_MICROS + 1),
            Err(AuthError::Stale),
            "a recording replayed later, even to a receiver that never saw the sender"
        );
        assert_eq!(
            v.verify(
                b"plain old version 1 message, no trailer here..........",
                NOW
            ),
            Err(AuthError::Missing)
        );
        assert_eq!(v.verify(b"short", NOW), Err(AuthError::Missing));
    }

    #[test]
    fn many_senders_stay_bounded() {
        let mut v = Verifier::new(b"k");
        for id in 0..(MAX_SENDERS as u32 + 10) {
            let mut s = Signer::new(b"k", id);
            assert!(v.verify(&s.sign(b"x", NOW + u64::from(id)), NOW).is_ok());
        }
        assert!(v.last.len() <= MAX_SENDERS);
    }
}
