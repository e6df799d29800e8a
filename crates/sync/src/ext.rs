//! xvs's own sync messages, beside IPVS's: bulk resync.
//!
//! IPVS has no way for a (re)starting backup to learn the connections that already exist: it
//! only hears about a connection at its next state change or its next `sync_period` packets,
//! so a restarted backup stays incomplete for minutes (keepalived issue 1966). With resync on,
//! a starting backup asks for the whole table and the master streams it as ordinary version 1
//! messages, then says it is done.
//!
//! ```text
//!   0 reserved = 0 | 1 syncid | 2-3 size = 0 | 4-7 "XVS" and a kind byte
//!   kind 1 request: 8-11 nonce (be32)
//!   kind 2 done:    8-11 nonce (be32) | 12-15 entries sent (be32)
//! ```
//!
//! The `size` of 0 makes a kernel IPVS backup drop these as "bogus message size" before it
//! reads anything else, so mixing xvs and kernel directors stays safe; an xvs receiver
//! recognises them by the magic before it tries version 1.

/// Magic after the first four bytes.
const MAGIC: [u8; 3] = *b"XVS";
const KIND_REQUEST: u8 = 1;
const KIND_DONE: u8 = 2;

/// One extension message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext {
    /// A backup asks the master for its whole table; `nonce` ties the answer to the request.
    ResyncRequest {
        /// The requester's syncid (a master with another non-zero syncid ignores it).
        syncid: u8,
        /// Chosen by the requester.
        nonce: u32,
    },
    /// The master has sent every entry it had for the request `nonce`.
    ResyncDone {
        /// The master's syncid.
        syncid: u8,
        /// The request's nonce.
        nonce: u32,
        /// Entries streamed.
        entries: u32,
    },
}

impl Ext {
    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let (syncid, kind) = match *self {
            Ext::ResyncRequest { syncid, .. } => (syncid, KIND_REQUEST),
            Ext::ResyncDone { syncid, .. } => (syncid, KIND_DONE),
        };
        let mut out = vec![0, syncid, 0, 0, MAGIC[0], MAGIC[1], MAGIC[2], kind];
        match *self {
            Ext::ResyncRequest { nonce, .. } => out.extend_from_slice(&nonce.to_be_bytes()),
            Ext::ResyncDone { nonce, entries, .. } => {
                out.extend_from_slice(&nonce.to_be_bytes());
                out.extend_from_slice(&entries.to_be_bytes());
            }
        }
        out
    }

    /// An extension message, if `buf` is one (`None` for anything else, version 1 included).
    pub fn decode(buf: &[u8]) -> Option<Ext> {
        if buf.len() < 12 || buf[0] != 0 || buf[2..4] != [0, 0] || buf[4..7] != MAGIC {
            return None;
        }
        let word = |at: usize| u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        match (buf[7], buf.len()) {
            (KIND_REQUEST, 12) => Some(Ext::ResyncRequest {
                syncid: buf[1],
                nonce: word(8),
            }),
            (KIND_DONE, 16) => Some(Ext::ResyncDone {
                syncid: buf[1],
                nonce: word(8),
                entries: word(12),
            }),
            _ => None,
        }
    }
}

/// Whether `buf` looks like an xvs extension (a size of 0 and the magic), well formed or not.
pub fn is_extension(buf: &[u8]) -> bool {
    buf.len() >= 8 && buf[2..4] == [0, 0] && buf[4..7] == MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{DecodeError, decode};

    #[test]
    fn round_trip_and_layout() {
        let req = Ext::ResyncRequest {
            syncid: 7,
            nonce: 0xdeadbeef,
        };
        let bytes = req.encode();
        assert_eq!(
            bytes,
            [0, 7, 0, 0, b'X', b'V', b'S', 1, 0xde, 0xad, 0xbe, 0xef]
        );
        assert_eq!(Ext::decode(&bytes), Some(req));
        let done = Ext::ResyncDone {
            syncid: 7,
            nonce: 1,
            entries: 100_000,
        };
        assert_eq!(Ext::decode(&done.encode()), Some(done));
        assert!(is_extension(&done.encode()));
    }

    #[test]
    fn a_kernel_backup_drops_them_as_bogus_size() {
        // What ip_vs_process_message checks first after the header length.
        let bytes = Ext::ResyncRequest {
            syncid: 0,
            nonce: 1,
        }
        .encode();
        assert_eq!(decode(&bytes, 0).unwrap_err(), DecodeError::BadSize);
    }

    #[test]
    fn anything_else_is_not_an_extension() {
        assert_eq!(Ext::decode(&[0; 12]), None);
        let mut bytes = Ext::ResyncRequest {
            syncid: 0,
            nonce: 1,
        }
        .encode();
        bytes.push(0);
        assert_eq!(Ext::decode(&bytes), None, "wrong length");
        bytes.pop();
        bytes[7] = 9;
        assert_eq!(Ext::decode(&bytes), None, "unknown kind");
    }
}
