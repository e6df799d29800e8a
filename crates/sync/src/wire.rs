//! IPVS sync protocol version 1, as `net/netfilter/ipvs/ip_vs_sync.c` writes and reads it.
//!
//! ```text
//! message header (struct ip_vs_sync_mesg, 8 bytes)
//!   0 reserved = 0 | 1 syncid | 2-3 size (be16, whole message) | 4 nr_conns | 5 version = 1
//!   6-7 spare = 0
//! entry (struct ip_vs_sync_v4: 36 bytes; ip_vs_sync_v6: 72 bytes)
//!   0 type (bit 0: IPv6) | 1 protocol | 2-3 ver_size (be16: version << 12 | entry length)
//!   4-7 flags (be32, IP_VS_CONN_F_*) | 8-9 state (be16) | 10 cport | 12 vport | 14 dport
//!   16-19 fwmark (be32) | 20-23 timeout (be32, seconds) | 24 caddr | vaddr | daddr
//!   then optional parameters: type (1 byte), length (1 byte), data
//!     1 SEQ_DATA (24 bytes: in and out ip_vs_seq), 2 PE_DATA, 3 PE_NAME;
//!     type bit 7 set: optional, an unknown one is skipped; clear: mandatory
//! entries start on 32-bit boundaries: the padding before an entry counts in `size` but not
//! in the entry's own length
//! ```
//!
//! Ports and addresses travel in network order. The receiving rules are the kernel's
//! (`ip_vs_process_message`, `ip_vs_proc_sync_conn`): a header that is short, whose `size`
//! is not the datagram's length, whose syncid differs from a backup's non-zero syncid, or
//! that is not version 1 rejects the whole message; an entry that runs past the message or
//! has bad parameters ends it; an entry of an unknown protocol, an invalid state or an
//! unknown mandatory parameter is skipped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Connection flags (`IP_VS_CONN_F_*` of include/uapi/linux/ip_vs.h).
pub mod flags {
    /// Mask of the forwarding method.
    pub const FWD_MASK: u32 = 0x0007;
    /// NAT (masquerading).
    pub const MASQ: u32 = 0x0000;
    /// The real server is the director itself.
    pub const LOCALNODE: u32 = 0x0001;
    /// IP tunnelling.
    pub const TUNNEL: u32 = 0x0002;
    /// Direct routing.
    pub const DROUTE: u32 = 0x0003;
    /// Cache bypass.
    pub const BYPASS: u32 = 0x0004;
    /// Created by sync (set by the receiver, never meaningful on the wire).
    pub const SYNC: u32 = 0x0020;
    /// Hashed in the table (cleared by the sender).
    pub const HASHED: u32 = 0x0040;
    /// No output packet seen yet (DR, TUN).
    pub const NOOUTPUT: u32 = 0x0080;
    /// Not counted in ActiveConn.
    pub const INACTIVE: u32 = 0x0100;
    /// Output sequence numbers must be adjusted.
    pub const OUT_SEQ: u32 = 0x0200;
    /// Input sequence numbers must be adjusted.
    pub const IN_SEQ: u32 = 0x0400;
    /// Both sequence adjustments.
    pub const SEQ_MASK: u32 = 0x0600;
    /// No client port yet.
    pub const NO_CPORT: u32 = 0x0800;
    /// A persistence template, not a connection.
    pub const TEMPLATE: u32 = 0x1000;
    /// One-packet scheduling (never synced).
    pub const ONE_PACKET: u32 = 0x2000;
    /// What a backup takes from the wire (`IP_VS_CONN_F_BACKUP_MASK`).
    pub const BACKUP_MASK: u32 = FWD_MASK | NOOUTPUT | INACTIVE | SEQ_MASK | NO_CPORT | TEMPLATE;
}

/// Protocol version in the message header (`SYNC_PROTO_VER`).
pub const VERSION: u8 = 1;
/// Length of the message header.
pub const HEADER_LEN: usize = 8;
/// Length of an IPv4 entry without parameters.
pub const V4_LEN: usize = 36;
/// Length of an IPv6 entry without parameters.
pub const V6_LEN: usize = 72;
/// The most entries one message holds (`nr_conns` is one byte).
pub const MAX_ENTRIES: usize = 255;

/// Byte ranges of the header and of an entry, named once.
mod field {
    use std::ops::Range;
    pub const RESERVED: usize = 0;
    pub const SYNCID: usize = 1;
    pub const SIZE: Range<usize> = 2..4;
    pub const NR_CONNS: usize = 4;
    pub const VERSION: usize = 5;
    pub const SPARE: Range<usize> = 6..8;

    pub const TYPE: usize = 0;
    pub const PROTOCOL: usize = 1;
    pub const VER_SIZE: Range<usize> = 2..4;
    pub const FLAGS: Range<usize> = 4..8;
    pub const STATE: Range<usize> = 8..10;
    pub const CPORT: Range<usize> = 10..12;
    pub const VPORT: Range<usize> = 12..14;
    pub const DPORT: Range<usize> = 14..16;
    pub const FWMARK: Range<usize> = 16..20;
    pub const TIMEOUT: Range<usize> = 20..24;
    pub const ADDRS: usize = 24;
}

/// Entry type bit: IPv6 addresses (`STYPE_F_INET6`).
const TYPE_INET6: u8 = 1;
/// Entry version sits in the top 4 bits of `ver_size` (`SVER_SHIFT`); the length in the rest.
const SVER_SHIFT: u16 = 12;
const SVER_MASK: u16 = 0x0fff;

/// Optional parameter types (`IPVS_OPT_*`).
pub mod param {
    /// Sequence adjustment data.
    pub const SEQ_DATA: u8 = 1;
    /// Persistence engine data.
    pub const PE_DATA: u8 = 2;
    /// Persistence engine name.
    pub const PE_NAME: u8 = 3;
    /// Set on a parameter a receiver may ignore (`IPVS_OPT_F_PARAM`).
    pub const OPTIONAL: u8 = 0x80;
}

/// Length of the SEQ_DATA parameter: two `ip_vs_seq` of three be32 each.
const SEQ_DATA_LEN: usize = 24;
/// Longest persistence-engine data (`IP_VS_PEDATA_MAXLEN`) and name (`IP_VS_PENAME_MAXLEN`).
const PE_DATA_MAX: usize = 255;
const PE_NAME_MAX: usize = 16;

/// `struct ip_vs_seq`: TCP sequence adjustment of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seq {
    pub init_seq: u32,
    pub delta: u32,
    pub previous_delta: u32,
}

/// One synced connection or persistence template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConn {
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP; a fwmark template carries 0).
    pub protocol: u8,
    /// `IP_VS_CONN_F_*`.
    pub flags: u32,
    /// The protocol's state number (IPVS's TCP states; 0 for UDP and templates).
    pub state: u16,
    pub cport: u16,
    pub vport: u16,
    pub dport: u16,
    pub fwmark: u32,
    /// Seconds until the entry expires.
    pub timeout: u32,
    /// Client, virtual and real-server addresses, all of one family.
    pub caddr: IpAddr,
    pub vaddr: IpAddr,
    pub daddr: IpAddr,
    /// Sequence adjustment (input, output), if the master does any.
    pub seq: Option<(Seq, Seq)>,
    /// Persistence-engine data and name (e.g. `sip` and its Call-ID), if any.
    pub pe: Option<(Vec<u8>, Vec<u8>)>,
}

impl SyncConn {
    /// Whether this entry is a persistence template.
    pub fn is_template(&self) -> bool {
        self.flags & flags::TEMPLATE != 0
    }

    fn is_v6(&self) -> bool {
        self.caddr.is_ipv6()
    }

    /// The entry's own length (what `ver_size` says), without padding.
    pub fn encoded_len(&self) -> usize {
        let mut len = if self.is_v6() { V6_LEN } else { V4_LEN };
        if self.seq.is_some() {
            len += 2 + SEQ_DATA_LEN;
        }
        if let Some((data, name)) = &self.pe {
            len += 2 + data.len();
            if !name.is_empty() {
                len += 2 + name.len();
            }
        }
        len
    }

    /// Appends the entry to `out` (no padding).
    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let len = self.encoded_len();
        out.resize(start + if self.is_v6() { V6_LEN } else { V4_LEN }, 0);
        let e = &mut out[start..];
        e[field::TYPE] = if self.is_v6() { TYPE_INET6 } else { 0 };
        e[field::PROTOCOL] = self.protocol;
        e[field::VER_SIZE].copy_from_slice(&((len as u16) & SVER_MASK).to_be_bytes());
        e[field::FLAGS].copy_from_slice(&(self.flags & !flags::HASHED).to_be_bytes());
        e[field::STATE].copy_from_slice(&self.state.to_be_bytes());
        e[field::CPORT].copy_from_slice(&self.cport.to_be_bytes());
        e[field::VPORT].copy_from_slice(&self.vport.to_be_bytes());
        e[field::DPORT].copy_from_slice(&self.dport.to_be_bytes());
        e[field::FWMARK].copy_from_slice(&self.fwmark.to_be_bytes());
        e[field::TIMEOUT].copy_from_slice(&self.timeout.to_be_bytes());
        let mut at = field::ADDRS;
        for addr in [self.caddr, self.vaddr, self.daddr] {
            let bytes: Vec<u8> = match addr {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            e[at..at + bytes.len()].copy_from_slice(&bytes);
            at += bytes.len();
        }
        if let Some((input, output)) = &self.seq {
            out.extend_from_slice(&[param::SEQ_DATA, SEQ_DATA_LEN as u8]);
            for s in [input, output] {
                for v in [s.init_seq, s.delta, s.previous_delta] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
        }
        if let Some((data, name)) = &self.pe {
            out.extend_from_slice(&[param::PE_DATA, data.len() as u8]);
            out.extend_from_slice(data);
            if !name.is_empty() {
                out.extend_from_slice(&[param::PE_NAME, name.len() as u8]);
                out.extend_from_slice(name);
            }
        }
        debug_assert_eq!(out.len() - start, len);
    }
}

/// Builds one message of at most `maxlen` bytes, as the master's `ip_vs_sync_conn` fills its
/// current buffer.
#[derive(Debug, Clone)]
pub struct MessageWriter {
    buf: Vec<u8>,
    maxlen: usize,
}

impl MessageWriter {
    /// An empty message for `syncid`, at most `maxlen` bytes long (at least one IPv4 entry
    /// must fit).
    pub fn new(syncid: u8, maxlen: usize) -> Self {
        let maxlen = maxlen.max(HEADER_LEN + V4_LEN);
        let mut buf = Vec::with_capacity(maxlen);
        buf.extend_from_slice(&[0, syncid, 0, HEADER_LEN as u8, 0, VERSION, 0, 0]);
        MessageWriter { buf, maxlen }
    }

    /// Entries in the message.
    pub fn count(&self) -> usize {
        self.buf[field::NR_CONNS] as usize
    }

    /// Whether the message holds no entry.
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// Adds `conn` if it fits (the caller then sends the message and starts a new one).
    pub fn push(&mut self, conn: &SyncConn) -> bool {
        let pad = (4 - self.buf.len() % 4) % 4;
        let len = conn.encoded_len();
        if self.count() >= MAX_ENTRIES || self.buf.len() + pad + len > self.maxlen {
            return false;
        }
        self.buf.resize(self.buf.len() + pad, 0);
        conn.encode(&mut self.buf);
        self.buf[field::NR_CONNS] += 1;
        let size = self.buf.len() as u16;
        self.buf[field::SIZE].copy_from_slice(&size.to_be_bytes());
        true
    }

    /// The message as it goes on the wire.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Empties the message for reuse (same syncid and size limit).
    pub fn clear(&mut self) {
        self.buf.truncate(HEADER_LEN);
        self.buf[field::NR_CONNS] = 0;
        self.buf[field::SIZE].copy_from_slice(&(HEADER_LEN as u16).to_be_bytes());
    }
}

/// Why a whole message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the header ("message header too short").
    TooShort,
    /// `size` is not the datagram's length ("bogus message size").
    BadSize,
    /// Another syncid than the backup's ("Ignoring syncid").
    OtherSyncid(u8),
    /// Not a version 1 message (reserved, version or spare byte wrong: IPVS's version 0
    /// format, which xvs does not read).
    BadVersion,
}

impl DecodeError {
    /// A short name for counters.
    pub fn name(self) -> &'static str {
        match self {
            DecodeError::TooShort => "too_short",
            DecodeError::BadSize => "bad_size",
            DecodeError::OtherSyncid(_) => "other_syncid",
            DecodeError::BadVersion => "bad_version",
        }
    }
}

/// Why one entry was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryError {
    /// The entry runs past the message, or its parameters are malformed: the rest of the
    /// message is dropped too.
    Malformed,
    /// An entry version other than 0: the rest of the message is dropped.
    UnknownVersion,
    /// A protocol IPVS does not sync (only TCP, UDP and SCTP), or a state out of range:
    /// skipped.
    Unsupported,
    /// A mandatory parameter this receiver does not know: skipped.
    UnknownParameter,
}

impl EntryError {
    /// Whether the rest of the message is dropped after this entry.
    pub fn is_fatal(self) -> bool {
        matches!(self, EntryError::Malformed | EntryError::UnknownVersion)
    }

    /// A short name for counters.
    pub fn name(self) -> &'static str {
        match self {
            EntryError::Malformed => "malformed_entry",
            EntryError::UnknownVersion => "entry_version",
            EntryError::Unsupported => "unsupported_entry",
            EntryError::UnknownParameter => "unknown_parameter",
        }
    }
}

/// A checked message whose entries are decoded as they are iterated.
#[derive(Debug, Clone)]
pub struct Entries<'a> {
    buf: &'a [u8],
    at: usize,
    left: u8,
}

/// Checks a received datagram's header. `syncid` is the backup's: 0 takes every syncid.
pub fn decode(buf: &[u8], syncid: u8) -> Result<Entries<'_>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Err(DecodeError::TooShort);
    }
    let size = u16::from_be_bytes([buf[field::SIZE.start], buf[field::SIZE.start + 1]]);
    if size as usize != buf.len() {
        return Err(DecodeError::BadSize);
    }
    let theirs = buf[field::SYNCID];
    if syncid != 0 && theirs != syncid {
        return Err(DecodeError::OtherSyncid(theirs));
    }
    if buf[field::VERSION] != VERSION || buf[field::RESERVED] != 0 || buf[field::SPARE] != [0, 0] {
        return Err(DecodeError::BadVersion);
    }
    Ok(Entries {
        buf,
        at: HEADER_LEN,
        left: buf[field::NR_CONNS],
    })
}

impl Entries<'_> {
    /// The sender's syncid.
    pub fn syncid(&self) -> u8 {
        self.buf[field::SYNCID]
    }
}

impl Iterator for Entries<'_> {
    type Item = Result<SyncConn, EntryError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let result = decode_entry(&self.buf[self.at.min(self.buf.len())..]);
        match &result {
            Ok((_, size)) | Err((_, size)) => self.at += (size + 3) & !3,
        }
        match result {
            Ok((conn, _)) => Some(Ok(conn)),
            Err((e, _)) => {
                if e.is_fatal() {
                    self.left = 0;
                }
                Some(Err(e))
            }
        }
    }
}

fn be16(b: &[u8], r: std::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

fn be32(b: &[u8], r: std::ops::Range<usize>) -> u32 {
    u32::from_be_bytes([b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3]])
}

/// Number of states of each protocol IPVS syncs (`pp->num_states`).
fn num_states(protocol: u8) -> Option<u16> {
    match protocol {
        6 => Some(11),   // IP_VS_TCP_S_LAST
        17 => Some(1),   // IP_VS_UDP_S_LAST
        132 => Some(15), // IP_VS_SCTP_S_LAST
        _ => None,
    }
}

/// One entry at the start of `e`, and its length; an error comes with the length to skip.
fn decode_entry(e: &[u8]) -> Result<(SyncConn, usize), (EntryError, usize)> {
    if e.len() < V4_LEN {
        return Err((EntryError::Malformed, e.len()));
    }
    let ver_size = be16(e, field::VER_SIZE);
    let size = (ver_size & SVER_MASK) as usize;
    if size > e.len() {
        return Err((EntryError::Malformed, e.len()));
    }
    if ver_size >> SVER_SHIFT != 0 {
        return Err((EntryError::UnknownVersion, size));
    }
    let v6 = match e[field::TYPE] {
        0 => false,
        t if t & TYPE_INET6 != 0 => true,
        _ => return Err((EntryError::Malformed, size)),
    };
    let fixed = if v6 { V6_LEN } else { V4_LEN };
    if fixed > size {
        return Err((EntryError::Malformed, size));
    }
    let addr = |i: usize| -> IpAddr {
        if v6 {
            let at = field::ADDRS + 16 * i;
            let mut o = [0u8; 16];
            o.copy_from_slice(&e[at..at + 16]);
            IpAddr::V6(Ipv6Addr::from(o))
        } else {
            let at = field::ADDRS + 4 * i;
            IpAddr::V4(Ipv4Addr::new(e[at], e[at + 1], e[at + 2], e[at + 3]))
        }
    };
    let mut conn = SyncConn {
        protocol: e[field::PROTOCOL],
        flags: be32(e, field::FLAGS),
        state: be16(e, field::STATE),
        cport: be16(e, field::CPORT),
        vport: be16(e, field::VPORT),
        dport: be16(e, field::DPORT),
        fwmark: be32(e, field::FWMARK),
        timeout: be32(e, field::TIMEOUT),
        caddr: addr(0),
        vaddr: addr(1),
        daddr: addr(2),
        seq: None,
        pe: None,
    };
    // The optional parameters, up to the entry's end.
    let (mut pe_data, mut pe_name) = (None::<&[u8]>, None::<&[u8]>);
    let mut unknown_mandatory = false;
    let mut p = fixed;
    while p < size {
        if p + 2 > size {
            return Err((EntryError::Malformed, size));
        }
        let (ptype, plen) = (e[p], e[p + 1] as usize);
        p += 2;
        if plen == 0 || p + plen > size {
            return Err((EntryError::Malformed, size));
        }
        let data = &e[p..p + plen];
        match ptype & !param::OPTIONAL {
            param::SEQ_DATA => {
                if plen != SEQ_DATA_LEN || conn.seq.is_some() {
                    return Err((EntryError::Malformed, size));
                }
                let s = |i: usize| Seq {
                    init_seq: be32(data, i..i + 4),
                    delta: be32(data, i + 4..i + 8),
                    previous_delta: be32(data, i + 8..i + 12),
                };
                conn.seq = Some((s(0), s(12)));
            }
            param::PE_DATA => {
                if plen > PE_DATA_MAX || pe_data.is_some() {
                    return Err((EntryError::Malformed, size));
                }
                pe_data = Some(data);
            }
            param::PE_NAME => {
                if plen > PE_NAME_MAX || pe_name.is_some() {
                    return Err((EntryError::Malformed, size));
                }
                pe_name = Some(data);
            }
            _ if ptype & param::OPTIONAL == 0 => unknown_mandatory = true,
            _ => {}
        }
        p += plen;
    }
    if let Some(data) = pe_data {
        conn.pe = Some((data.to_vec(), pe_name.unwrap_or_default().to_vec()));
    }
    conn.flags &= flags::BACKUP_MASK;
    if !conn.is_template() {
        match num_states(conn.protocol) {
            Some(n) if conn.state < n => {}
            _ => return Err((EntryError::Unsupported, size)),
        }
    } else {
        // "protocol in templates is not used for state/timeout"
        conn.state = 0;
    }
    if unknown_mandatory {
        return Err((EntryError::UnknownParameter, size));
    }
    Ok((conn, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    /// An established DR connection 10.0.0.1:40000 -> 192.0.2.1:80 -> 10.1.0.5:80.
    fn dr_conn() -> SyncConn {
        SyncConn {
            protocol: 6,
            flags: flags::DROUTE | flags::NOOUTPUT,
            state: 1,
            cport: 40000,
            vport: 80,
            dport: 80,
            fwmark: 0,
            timeout: 900,
            caddr: v4([10, 0, 0, 1]),
            vaddr: v4([192, 0, 2, 1]),
            daddr: v4([10, 1, 0, 5]),
            seq: None,
            pe: None,
        }
    }

    /// The same message written out field by field from the kernel's struct layout.
    const ONE_DR_CONN: [u8; 44] = [
        // ip_vs_sync_mesg: reserved, syncid 7, size 44, nr_conns 1, version 1, spare
        0x00, 0x07, 0x00, 0x2c, 0x01, 0x01, 0x00, 0x00,
        // ip_vs_sync_v4: type 0, protocol TCP, ver_size = version 0 | 36
        0x00, 0x06, 0x00, 0x24, // flags DROUTE | NOOUTPUT, state ESTABLISHED
        0x00, 0x00, 0x00, 0x83, 0x00, 0x01, // cport 40000, vport 80, dport 80
        0x9c, 0x40, 0x00, 0x50, 0x00, 0x50, // fwmark 0, timeout 900
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x84, // caddr, vaddr, daddr
        10, 0, 0, 1, 192, 0, 2, 1, 10, 1, 0, 5,
    ];

    #[test]
    fn encodes_the_kernels_layout_byte_for_byte() {
        let mut m = MessageWriter::new(7, 1472);
        assert!(m.push(&dr_conn()));
        assert_eq!(m.bytes(), &ONE_DR_CONN[..]);
        let got: Vec<_> = decode(&ONE_DR_CONN, 7).unwrap().collect();
        assert_eq!(got, vec![Ok(dr_conn())]);
        // A backup with syncid 0 takes every syncid.
        assert_eq!(decode(&ONE_DR_CONN, 0).unwrap().count(), 1);
    }

    #[test]
    fn a_template_and_a_nat_connection_with_seq_data_and_padding() {
        // A NAT connection with sequence data (24 + 2 bytes of parameter: 62 bytes, so the
        // next entry starts after 2 bytes of padding), then a persistence template.
        let mut nat = dr_conn();
        nat.flags = flags::MASQ | flags::OUT_SEQ;
        nat.dport = 8080;
        let seq = Seq {
            init_seq: 0x01020304,
            delta: 5,
            previous_delta: 0xfffffffe,
        };
        nat.seq = Some((Seq::default(), seq));
        let template = SyncConn {
            flags: flags::TEMPLATE | flags::DROUTE,
            state: 0,
            cport: 0,
            timeout: 300,
            ..dr_conn()
        };
        let mut m = MessageWriter::new(0, 1472);
        assert!(m.push(&nat) && m.push(&template));
        let b = m.bytes();
        assert_eq!(b.len(), 8 + 62 + 2 + 36);
        assert_eq!(&b[2..4], &[0, 108], "size counts the padding");
        assert_eq!(&b[8 + 2..8 + 4], &[0x00, 62], "ver_size does not");
        assert_eq!(&b[8 + 36..8 + 38], &[param::SEQ_DATA, 24]);
        assert_eq!(&b[8 + 38 + 12..8 + 38 + 16], &[1, 2, 3, 4], "out init_seq");
        assert_eq!(&b[8 + 62..8 + 64], &[0, 0], "padding");
        assert_eq!(&b[8 + 64 + 4..8 + 64 + 8], &[0x00, 0x00, 0x10, 0x03]);
        let got: Vec<_> = decode(b, 0).unwrap().collect();
        assert_eq!(got, vec![Ok(nat), Ok(template)]);
    }

    #[test]
    fn ipv6_entries_are_72_bytes() {
        let c = SyncConn {
            caddr: "2001:db8::1".parse().unwrap(),
            vaddr: "2001:db8::10".parse().unwrap(),
            daddr: "2001:db8:1::5".parse().unwrap(),
            ..dr_conn()
        };
        let mut m = MessageWriter::new(1, 1472);
        assert!(m.push(&c));
        let b = m.bytes();
        assert_eq!(b.len(), 8 + 72);
        assert_eq!(b[8], 1, "type: IPv6");
        assert_eq!(&b[8 + 24..8 + 26], &[0x20, 0x01]);
        assert_eq!(decode(b, 1).unwrap().next(), Some(Ok(c)));
    }

    #[test]
    fn messages_fill_up_to_maxlen() {
        let mut m = MessageWriter::new(0, 1472);
        let mut n = 0;
        while m.push(&dr_conn()) {
            n += 1;
        }
        assert_eq!(n, (1472 - 8) / 36);
        assert!(m.bytes().len() <= 1472);
        m.clear();
        assert!(m.is_empty() && m.bytes().len() == 8);
        assert_eq!(decode(m.bytes(), 0).unwrap().count(), 0);
    }

    #[test]
    fn refuses_what_the_kernel_refuses() {
        assert_eq!(
            decode(&ONE_DR_CONN[..7], 0).unwrap_err(),
            DecodeError::TooShort
        );
        assert_eq!(
            decode(&ONE_DR_CONN[..40], 0).unwrap_err(),
            DecodeError::BadSize
        );
        assert_eq!(
            decode(&ONE_DR_CONN, 9).unwrap_err(),
            DecodeError::OtherSyncid(7)
        );
        let mut v0 = ONE_DR_CONN;
        v0[0] = 1;
        assert_eq!(decode(&v0, 0).unwrap_err(), DecodeError::BadVersion);
        let mut v2 = ONE_DR_CONN;
        v2[5] = 2;
        assert_eq!(decode(&v2, 0).unwrap_err(), DecodeError::BadVersion);
        // An entry that claims to run past the message ends it.
        let mut long = ONE_DR_CONN;
        long[11] = 40;
        assert_eq!(
            decode(&long, 0).unwrap().collect::<Vec<_>>(),
            vec![Err(EntryError::Malformed)]
        );
        // Entry version 1 ends the message too.
        let mut ver = ONE_DR_CONN;
        ver[10] = 0x10;
        assert_eq!(
            decode(&ver, 0).unwrap().next(),
            Some(Err(EntryError::UnknownVersion))
        );
        // A state past TCP's last is skipped, and so is ICMP.
        let mut state = ONE_DR_CONN;
        state[17] = 11;
        assert_eq!(
            decode(&state, 0).unwrap().next(),
            Some(Err(EntryError::Unsupported))
        );
        let mut icmp = ONE_DR_CONN;
        icmp[9] = 1;
        assert_eq!(
            decode(&icmp, 0).unwrap().next(),
            Some(Err(EntryError::Unsupported))
        );
        // nr_conns larger than what is there.
        let mut more = ONE_DR_CONN;
        more[4] = 2;
        let got: Vec<_> = decode(&more, 0).unwrap().collect();
        assert_eq!(got, vec![Ok(dr_conn()), Err(EntryError::Malformed)]);
    }

    #[test]
    fn unknown_parameters_optional_skipped_mandatory_refused() {
        let mut m = MessageWriter::new(0, 1472);
        m.push(&dr_conn());
        let mut bytes = m.bytes().to_vec();
        // Append an optional parameter (type 0x85, 2 bytes) and fix both lengths.
        bytes.extend_from_slice(&[0x85, 2, 0xaa, 0xbb]);
        bytes[11] = 40;
        bytes[3] = 48;
        assert_eq!(decode(&bytes, 0).unwrap().next(), Some(Ok(dr_conn())));
        bytes[44] = 0x05;
        assert_eq!(
            decode(&bytes, 0).unwrap().next(),
            Some(Err(EntryError::UnknownParameter))
        );
    }

    #[test]
    fn receiver_masks_flags_and_clears_template_state() {
        let mut c = dr_conn();
        c.flags |= flags::HASHED | flags::ONE_PACKET | (1 << 16);
        let mut t = c.clone();
        t.flags |= flags::TEMPLATE;
        t.state = 3;
        let mut m = MessageWriter::new(0, 1472);
        m.push(&c);
        m.push(&t);
        let got: Vec<_> = decode(m.bytes(), 0).unwrap().map(Result::unwrap).collect();
        assert_eq!(got[0].flags, flags::DROUTE | flags::NOOUTPUT);
        assert_eq!(
            got[1].flags,
            flags::DROUTE | flags::NOOUTPUT | flags::TEMPLATE
        );
        assert_eq!(got[1].state, 0);
    }

    proptest::proptest! {
        /// Random bytes never panic the decoder.
        #[test]
        fn random_datagrams_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut fixed = bytes.clone();
            if fixed.len() >= 8 {
                let len = fixed.len() as u16;
                fixed[2..4].copy_from_slice(&len.to_be_bytes());
                fixed[0] = 0;
                fixed[5] = 1;
                fixed[6] = 0;
                fixed[7] = 0;
            }
            for b in [&bytes, &fixed] {
                if let Ok(entries) = decode(b, 0) {
                    for e in entries {
                        let _ = e;
                    }
                }
            }
        }
    }
}
