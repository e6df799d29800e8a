//! Why a frame was refused: one small enum the dataplane counts.
//!
//! Every refusal in this crate is one of these variants and nothing else, so the caller can keep
//! `[u64; Reason::COUNT]` per worker and bump `counters[reason as usize]` without a branch.

/// Why a frame was not rewritten. The frame is left as it was unless the variant says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    /// `Frame::new` got a data range outside its buffer (a dataplane bug, never traffic).
    FrameOutOfBounds,
    /// The frame ends before a header it announces (Ethernet, IPv4, TCP, UDP or ICMP).
    Truncated,
    /// The EtherType is not IPv4 (ARP, IPv6, VLAN tags, ...): not ours yet.
    NotIpv4,
    /// EtherType says IPv4 but the version nibble is not 4.
    BadIpVersion,
    /// IHL below 5 (20 bytes) or beyond the total length.
    BadIpHeaderLength,
    /// Total length shorter than the header, or longer than the bytes received.
    BadIpTotalLength,
    /// The IPv4 header checksum does not verify.
    BadIpChecksum,
    /// First fragment of a fragmented datagram (see `fragments` for the policy).
    FirstFragment,
    /// A non-first fragment: it carries no ports (see `fragments`).
    LaterFragment,
    /// Neither TCP, UDP nor ICMP (or ICMP where the rewrite needs ports).
    UnsupportedProtocol,
    /// TCP data offset below 5 or beyond the IP payload.
    BadTcpHeader,
    /// UDP length below 8 or beyond the IP payload.
    BadUdpLength,
    /// The `PacketView` does not describe this frame (a caller bug, never traffic).
    ViewMismatch,
    /// Not enough headroom (nor tailroom) in the frame buffer for the bytes to prepend.
    NoHeadroom,
    /// TTL would reach 0 and the packet may not be answered with an ICMP error (it is one).
    TtlExpired,
    /// Larger than the egress MTU and not answerable with "fragmentation needed"
    /// (DF clear, or the packet is itself an ICMP error): dropped, never fragmented here.
    TooBig,
    /// The tunnel's egress MTU leaves less than 68 bytes for the inner packet (IPVS refuses too).
    MtuTooSmall,
    /// An ICMP message that is not an error IPVS relays (echo, redirect, source quench, ...).
    NotIcmpError,
    /// The ICMP error quotes less than an IPv4 header plus 8 bytes of TCP/UDP.
    IcmpQuoteTruncated,
    /// The ICMP error quotes a non-first fragment: no ports to find the connection by.
    IcmpQuotesFragment,
    /// The ICMP error quotes something other than TCP or UDP (or IPIP carrying TCP or UDP),
    /// or an IPIP quote was handed to a NAT rewrite.
    IcmpQuotedProtocol,
    /// The ICMP checksum does not verify (checked before trusting the quoted header).
    BadIcmpChecksum,
    /// An ICMP error about one of our IPIP packets that IPVS does not pass on to the client:
    /// "fragmentation needed" while the client does not set DF, or a client address that may
    /// not be answered.
    TunnelErrorIgnored,
    /// The EtherType is not IPv6 (the IPv6 parser's counterpart of `NotIpv4`).
    NotIpv6,
    /// More IPv6 extension headers than the walker's bound (`wire::MAX_EXTENSION_HEADERS`).
    TooManyExtensionHeaders,
    /// An IPv6 extension header the forwarders may not pass: hop-by-hop options other than
    /// first, or a routing header with segments left (the VIP is not the final destination).
    BadExtensionHeader,
    /// A UDP checksum of 0 over IPv6, which RFC 8200 8.1 makes invalid.
    UdpZeroChecksum,
}

impl Reason {
    /// Number of variants: the length of a counter array indexed by `reason as usize`.
    pub const COUNT: usize = Self::ALL.len();

    /// Every variant in discriminant order, for stats listings.
    pub const ALL: [Reason; 27] = [
        Reason::FrameOutOfBounds,
        Reason::Truncated,
        Reason::NotIpv4,
        Reason::BadIpVersion,
        Reason::BadIpHeaderLength,
        Reason::BadIpTotalLength,
        Reason::BadIpChecksum,
        Reason::FirstFragment,
        Reason::LaterFragment,
        Reason::UnsupportedProtocol,
        Reason::BadTcpHeader,
        Reason::BadUdpLength,
        Reason::ViewMismatch,
        Reason::NoHeadroom,
        Reason::TtlExpired,
        Reason::TooBig,
        Reason::MtuTooSmall,
        Reason::NotIcmpError,
        Reason::IcmpQuoteTruncated,
        Reason::IcmpQuotesFragment,
        Reason::IcmpQuotedProtocol,
        Reason::BadIcmpChecksum,
        Reason::TunnelErrorIgnored,
        Reason::NotIpv6,
        Reason::TooManyExtensionHeaders,
        Reason::BadExtensionHeader,
        Reason::UdpZeroChecksum,
    ];

    /// A stable snake_case name for metrics and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::FrameOutOfBounds => "frame_out_of_bounds",
            Reason::Truncated => "truncated",
            Reason::NotIpv4 => "not_ipv4",
            Reason::BadIpVersion => "bad_ip_version",
            Reason::BadIpHeaderLength => "bad_ip_header_length",
            Reason::BadIpTotalLength => "bad_ip_total_length",
            Reason::BadIpChecksum => "bad_ip_checksum",
            Reason::FirstFragment => "first_fragment",
            Reason::LaterFragment => "later_fragment",
            Reason::UnsupportedProtocol => "unsupported_protocol",
            Reason::BadTcpHeader => "bad_tcp_header",
            Reason::BadUdpLength => "bad_udp_length",
            Reason::ViewMismatch => "view_mismatch",
            Reason::NoHeadroom => "no_headroom",
            Reason::TtlExpired => "ttl_expired",
            Reason::TooBig => "too_big",
            Reason::MtuTooSmall => "mtu_too_small",
            Reason::NotIcmpError => "not_icmp_error",
            Reason::IcmpQuoteTruncated => "icmp_quote_truncated",
            Reason::IcmpQuotesFragment => "icmp_quotes_fragment",
            Reason::IcmpQuotedProtocol => "icmp_quoted_protocol",
            Reason::BadIcmpChecksum => "bad_icmp_checksum",
            Reason::TunnelErrorIgnored => "tunnel_error_ignored",
            Reason::NotIpv6 => "not_ipv6",
            Reason::TooManyExtensionHeaders => "too_many_extension_headers",
            Reason::BadExtensionHeader => "bad_extension_header",
            Reason::UdpZeroChecksum => "udp_zero_checksum",
        }
    }
}

impl core::fmt::Display for Reason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for Reason {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_variant_in_discriminant_order() {
        for (index, reason) in Reason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index, "{reason}");
        }
        assert_eq!(Reason::COUNT, 27);
    }

    #[test]
    fn names_are_unique() {
        for (i, a) in Reason::ALL.iter().enumerate() {
            for b in &Reason::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
            }
        }
    }
}
