// SPDX-License-Identifier: GPL-2.0 OR MIT
//
// xvs XDP filter: sends to the AF_XDP socket of the receiving queue only the frames xvs must
// handle, and everything else to the kernel (XDP_PASS).
//
//   - IPv4 to a virtual service: (dst addr, dst port, protocol) is in xvs_vips;
//   - NAT return traffic: (src addr, src port, protocol) is in xvs_nat_returns, unless it is
//     addressed to one of the director's own addresses (xvs_locals);
//   - marked traffic (fwmark services): the longest prefix of (protocol, dst addr) in
//     xvs_marks_v4 (xvs_marks_v6 for IPv6) lists the destination port among its port ranges
//     (at most MARK_RANGES, a bounded loop; each entry holds the ranges of wider prefixes
//     covering it too).
//
// Each map is tried with the exact port, then port 0 ("any port" of that protocol, for
// persistent port-0 services), then port 0 and protocol 0 ("any traffic to that address").
// Non-first fragments carry no ports, so only the port-0 entries can match them.
//
// ICMP errors (unreachable, source quench, time exceeded, parameter problem) are matched by
// the packet they quote, as IPVS does: a quoted packet from a VIP:port (a reply xvs sent
// toward a client) or to a NAT real server's addr:port (a packet xvs sent to it) makes the
// error xvs's; so does a quoted IPIP packet from one of the director's addresses (TUN). ICMP
// echo to a VIP stays with the kernel, which answers it.
//
// IPv6 the same way, with maps of its own (xvs_vips6, xvs_nat_returns6, xvs_locals6,
// xvs_marks_v6): the
// upper-layer header is found by walking at most MAX_EXTENSION_HEADERS extension headers (as
// xvs's parser does; a longer chain stays with the kernel), a later fragment carries no
// ports, and ICMPv6 errors (types 1 to 4) are matched by the packet they quote (a quoted
// IPv6-in-IPv6 packet from one of the director's addresses is a TUN packet of ours). Every other
// ICMPv6 message (neighbour discovery, echo, router advertisements) is the kernel's.
//
// ARP, VLAN-tagged frames and everything not matching go to the kernel.
//
// The SYN filter (`syn_filter.rs` in xvs): while the director turns it on (under a SYN flood
// beyond what its workers can take), a TCP SYN to a service is dropped here, before it costs
// a worker anything, unless its source has proven real: a real client's TCP sends the same
// SYN again (same port, same sequence number) about a second later, a spoofed source never
// does. The first SYN seen from a source is remembered (xvs_syn_pending, one per source); the
// same SYN again between min_gap_ns and max_gap_ns later proves the source (xvs_syn_proven),
// and from then on its SYNs pass for proven_ns. Every SYN to a service is counted
// (xvs_syn_counts), on or off, so the director measures the flood the filter takes.
//
// Self-contained on purpose (no kernel or libbpf headers): build.rs compiles it with
// `clang -O2 -g -target bpf`, and the key layout below is mirrored by `xdp::MatchKey`.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name
#define __always_inline inline __attribute__((always_inline))

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

enum xdp_action { XDP_ABORTED = 0, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT };

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_LPM_TRIE 11
#define BPF_MAP_TYPE_XSKMAP 17
#define BPF_F_NO_PREALLOC 1

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
				   __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)51;

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define bpf_htons(x) __builtin_bswap16(x)
#else
#define bpf_htons(x) (x)
#endif

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IP_OFFSET_MASK 0x1fff /* fragment offset; non-zero on every fragment but the first */
#define IPPROTO_ICMP 1
#define IPPROTO_IPIP 4
#define IPPROTO_TCP 6
#define NEXTHDR_IPV6 41
#define IPPROTO_UDP 17
#define IPPROTO_SCTP 132
#define IPPROTO_ICMPV6 58
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_DEST 60
#define IPV6_HLEN 40
#define IPV6_FRAG_OFFSET_MASK 0xfff8 /* fragment offset in the fragment header */
#define MAX_EXTENSION_HEADERS 8       /* xvs_forwarders::wire::MAX_EXTENSION_HEADERS */
#define TCP_FLAGS 13
#define TCP_RST 0x04
#define TCP_SYN 0x02
#define TCP_ACK 0x10

// Addresses and ports in network byte order, as read from the packet.
struct match_key {
	__u32 addr;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

#define MAX_MATCHES 65536

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_MATCHES);
	__type(key, struct match_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} xvs_vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_MATCHES);
	__type(key, struct match_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} xvs_nat_returns SEC(".maps");

// The director's own addresses (port 0, protocol 0 keys). Traffic *to* them is the kernel's
// even when it comes from a NAT real server's service port: the director's own connections to
// a real server (health checks, an operator's curl) get their replies, as IPVS lets
// ip_vs_out() accept packets that belong to no connection.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct match_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} xvs_locals SEC(".maps");

// Mark rules: the key is a prefix of (protocol, IPv4 address), prefixlen = 8 + the
// address's prefix length; the value the destination ports marked there, in host order.
// Mirrored by `xdp::MarkKeyV4` and `xdp::MarkPorts`.
#define MAX_MARK_DESTS 4096
#define MARK_RANGES 16

struct mark_key_v4 {
	__u32 prefixlen;
	__u8 data[8]; /* protocol, address, 3 bytes of padding (never within the prefix) */
};

struct mark_ports {
	__u32 count;
	__u16 ranges[MARK_RANGES][2]; /* first, last */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_MARK_DESTS);
	__type(key, struct mark_key_v4);
	__type(value, struct mark_ports);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} xvs_marks_v4 SEC(".maps");

// The IPv6 maps, keyed like the IPv4 ones with a 16-byte address (`xdp::MatchKey6`).
struct match_key6 {
	__u8 addr[16];
	__u16 port;
	__u8 proto;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_MATCHES);
	__type(key, struct match_key6);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} xvs_vips6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_MATCHES);
	__type(key, struct match_key6);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} xvs_nat_returns6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct match_key6);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} xvs_locals6 SEC(".maps");

// IPv6 mark rules: as xvs_marks_v4 with a 16-byte address (`xdp::MarkKeyV6`).
struct mark_key_v6 {
	__u32 prefixlen;
	__u8 data[20]; /* protocol, address, 3 bytes of padding (never within the prefix) */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_MARK_DESTS);
	__type(key, struct mark_key_v6);
	__type(value, struct mark_ports);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} xvs_marks_v6 SEC(".maps");

// The SYN filter's settings, written by the director (`syn_filter::Settings`).
struct syn_filter_settings {
	__u32 on;
	__u32 pad;
	__u64 min_gap_ns; /* a retransmission comes at least this long after the first SYN */
	__u64 max_gap_ns; /* and at most this long */
	__u64 proven_ns;  /* how long a proven source stays proven */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct syn_filter_settings);
} xvs_syn_filter SEC(".maps");

// A source address, IPv4 as ::ffff:a.b.c.d.
struct syn_source {
	__u8 addr[16];
};

// The first SYN seen from a source not proven yet (port and sequence number as read).
struct syn_first {
	__u64 seen_ns;
	__u32 seq;
	__u16 port;
	__u16 pad;
};

// Least recently used go first. Against spoofed sources all different, a real client's
// first SYN stays remembered until its retransmission (1 s later) while the flood sends
// fewer than about 262144 SYNs a second from sources not proven.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct syn_source);
	__type(value, struct syn_first);
} xvs_syn_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct syn_source);
	__type(value, __u64); /* when proven (or last re-proven by use) */
} xvs_syn_proven SEC(".maps");

// Counters (`syn_filter::Counter`): SYNs to services, SYNs dropped, sources proven, SYNs
// passed because their source was proven.
#define SYN_COUNT_SEEN 0
#define SYN_COUNT_DROPPED 1
#define SYN_COUNT_PROVEN 2
#define SYN_COUNT_PASSED 3

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} xvs_syn_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} xvs_xsks SEC(".maps");

static __always_inline void syn_count(__u32 which)
{
	__u64 *count = bpf_map_lookup_elem(&xvs_syn_counts, &which);
	if (count)
		*count += 1;
}

// Whether the TCP segment at `tcp` from `src`, to a service, goes on to xvs: anything but a
// SYN does, and a SYN does while the filter is off or once its source proved real.
static __always_inline int syn_admitted(const struct syn_source *src, __u8 *tcp, void *data_end)
{
	if ((void *)(tcp + TCP_FLAGS + 1) > data_end)
		return 1; /* xvs's parser drops and counts it */
	if ((tcp[TCP_FLAGS] & (TCP_SYN | TCP_ACK | TCP_RST)) != TCP_SYN)
		return 1;
	syn_count(SYN_COUNT_SEEN);
	__u32 zero = 0;
	struct syn_filter_settings *settings = bpf_map_lookup_elem(&xvs_syn_filter, &zero);
	if (!settings || !settings->on)
		return 1;
	__u64 now = bpf_ktime_get_ns();
	__u64 *proven = bpf_map_lookup_elem(&xvs_syn_proven, src);
	if (proven && now - *proven < settings->proven_ns) {
		// In use: proven again, written at most twice a period.
		if (now - *proven > settings->proven_ns / 2)
			*proven = now;
		syn_count(SYN_COUNT_PASSED);
		return 1;
	}
	__u16 port = *(__u16 *)tcp;
	__u32 seq = *(__u32 *)(tcp + 4);
	struct syn_first *first = bpf_map_lookup_elem(&xvs_syn_pending, src);
	if (first && now - first->seen_ns < settings->max_gap_ns) {
		if (first->port == port && first->seq == seq &&
		    now - first->seen_ns >= settings->min_gap_ns) {
			bpf_map_update_elem(&xvs_syn_proven, src, &now, 0);
			bpf_map_delete_elem(&xvs_syn_pending, src);
			syn_count(SYN_COUNT_PROVEN);
			return 1;
		}
		// Another SYN while the first waits for its retransmission: the first is kept.
		syn_count(SYN_COUNT_DROPPED);
		return 0;
	}
	struct syn_first fresh = { .seen_ns = now, .seq = seq, .port = port, .pad = 0 };
	bpf_map_update_elem(&xvs_syn_pending, src, &fresh, 0);
	syn_count(SYN_COUNT_DROPPED);
	return 0;
}

static __always_inline int matches(void *map, __u32 addr, __u16 port, __u8 proto)
{
	struct match_key key = { .addr = addr, .port = port, .proto = proto, .pad = 0 };

	if (port && bpf_map_lookup_elem(map, &key))
		return 1;
	key.port = 0;
	if (bpf_map_lookup_elem(map, &key))
		return 1;
	key.proto = 0;
	return bpf_map_lookup_elem(map, &key) != 0;
}

// True when `port` (network order, as read) is in one of the ranges of `ports`.
static __always_inline int port_marked(const struct mark_ports *ports, __u16 port)
{
	if (!ports)
		return 0;
	__u16 p = bpf_htons(port);
#pragma unroll
	for (int i = 0; i < MARK_RANGES; i++) {
		if ((__u32)i >= ports->count)
			break;
		if (p >= ports->ranges[i][0] && p <= ports->ranges[i][1])
			return 1;
	}
	return 0;
}

// True when a mark rule marks (proto, addr, port): port in network order, as read.
static __always_inline int marked_v4(__u32 addr, __u16 port, __u8 proto)
{
	struct mark_key_v4 key = { .prefixlen = 40, .data = { proto } };

	if (!port)
		return 0;
	__builtin_memcpy(&key.data[1], &addr, 4);
	return port_marked(bpf_map_lookup_elem(&xvs_marks_v4, &key), port);
}

// marked_v4 for an IPv6 destination.
static __always_inline int marked_v6(const __u8 *addr, __u16 port, __u8 proto)
{
	struct mark_key_v6 key = { .prefixlen = 136, .data = { proto } };

	if (!port)
		return 0;
	__builtin_memcpy(&key.data[1], addr, 16);
	return port_marked(bpf_map_lookup_elem(&xvs_marks_v6, &key), port);
}

static __always_inline int is_local(__u32 addr)
{
	struct match_key key = { .addr = addr, .port = 0, .proto = 0, .pad = 0 };
	return bpf_map_lookup_elem(&xvs_locals, &key) != 0;
}

static __always_inline int carries_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

static __always_inline int is_first_fragment(__u8 *ip)
{
	return (*(__u16 *)(ip + 6) & bpf_htons(IP_OFFSET_MASK)) == 0;
}

// True when the ICMP message at `icmp` is an error quoting a packet of a VIP or NAT service.
static __always_inline int icmp_error_is_ours(__u8 *icmp, void *data_end)
{
	__u8 *inner = icmp + 8;

	if ((void *)(inner + 20) > data_end)
		return 0;
	__u8 type = icmp[0];
	if (type != 3 && type != 4 && type != 11 && type != 12)
		return 0;
	__u32 inner_ihl = (inner[0] & 0x0f) * 4;
	if ((inner[0] >> 4) != 4 || inner_ihl < 20)
		return 0;

	__u8 proto = inner[9];
	__u32 saddr = *(__u32 *)(inner + 12);
	__u32 daddr = *(__u32 *)(inner + 16);
	// One of our IPIP packets (TUN): the director sent it from one of its own addresses.
	if (proto == IPPROTO_IPIP)
		return is_local(saddr);
	__u16 sport = 0, dport = 0;
	if (carries_ports(proto) && is_first_fragment(inner)) {
		__u8 *l4 = inner + inner_ihl;
		if ((void *)(l4 + 4) > data_end)
			return 0;
		sport = *(__u16 *)l4;
		dport = *(__u16 *)(l4 + 2);
	}
	// A quoted packet the director itself sent to a real server is the kernel's business.
	return matches(&xvs_vips, saddr, sport, proto) || marked_v4(saddr, sport, proto) ||
	       (!is_local(saddr) && matches(&xvs_nat_returns, daddr, dport, proto));
}

static __always_inline int matches6(void *map, const __u8 *addr, __u16 port, __u8 proto)
{
	struct match_key6 key = { .port = port, .proto = proto, .pad = 0 };

	__builtin_memcpy(key.addr, addr, 16);
	if (port && bpf_map_lookup_elem(map, &key))
		return 1;
	key.port = 0;
	if (bpf_map_lookup_elem(map, &key))
		return 1;
	key.proto = 0;
	return bpf_map_lookup_elem(map, &key) != 0;
}

static __always_inline int is_local6(const __u8 *addr)
{
	struct match_key6 key = { .port = 0, .proto = 0, .pad = 0 };

	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(&xvs_locals6, &key) != 0;
}

// Finds the upper-layer header of the IPv6 packet at `ip` (its fixed header in bounds):
// sets *proto and *l4, and *later_fragment for a fragment other than the first. Returns 0
// when the chain is cut short by the frame or longer than MAX_EXTENSION_HEADERS.
static __always_inline int upper_layer6(__u8 *ip, void *data_end, __u8 *proto, __u8 **l4,
					int *later_fragment)
{
	__u8 next = ip[6];
	__u8 *p = ip + IPV6_HLEN;

#pragma unroll
	for (int i = 0; i < MAX_EXTENSION_HEADERS; i++) {
		if (next != NEXTHDR_HOP && next != NEXTHDR_ROUTING && next != NEXTHDR_DEST &&
		    next != NEXTHDR_FRAGMENT)
			break;
		if ((void *)(p + 8) > data_end)
			return 0;
		if (next == NEXTHDR_FRAGMENT) {
			if (*(__u16 *)(p + 2) & bpf_htons(IPV6_FRAG_OFFSET_MASK))
				*later_fragment = 1;
			next = p[0];
			p += 8;
		} else {
			next = p[0];
			p += ((__u32)p[1] + 1) * 8;
		}
	}
	if (next == NEXTHDR_HOP || next == NEXTHDR_ROUTING || next == NEXTHDR_DEST ||
	    next == NEXTHDR_FRAGMENT)
		return 0;
	*proto = next;
	*l4 = p;
	return 1;
}

// True when the ICMPv6 message at `icmp` is an error quoting a packet of an IPv6 VIP or NAT
// service.
static __always_inline int icmp6_error_is_ours(__u8 *icmp, void *data_end)
{
	__u8 *inner = icmp + 8;

	if ((void *)(inner + IPV6_HLEN) > data_end)
		return 0;
	if (icmp[0] < 1 || icmp[0] > 4 || (inner[0] >> 4) != 6)
		return 0;
	__u8 proto = 0;
	__u8 *l4 = 0;
	int later_fragment = 0;
	if (!upper_layer6(inner, data_end, &proto, &l4, &later_fragment))
		return 0;
	// One of our IPv6-in-IPv6 packets (TUN): the director sent it from one of its addresses.
	if (proto == NEXTHDR_IPV6)
		return is_local6(inner + 8);
	__u16 sport = 0, dport = 0;
	if (carries_ports(proto) && !later_fragment) {
		if ((void *)(l4 + 4) > data_end)
			return 0;
		sport = *(__u16 *)l4;
		dport = *(__u16 *)(l4 + 2);
	}
	return matches6(&xvs_vips6, inner + 8, sport, proto) || marked_v6(inner + 8, sport, proto) ||
	       (!is_local6(inner + 8) && matches6(&xvs_nat_returns6, inner + 24, dport, proto));
}

static __always_inline int filter6(struct xdp_md *ctx, __u8 *ip, void *data_end)
{
	if ((void *)(ip + IPV6_HLEN) > data_end || (ip[0] >> 4) != 6)
		return XDP_PASS;
	__u8 *saddr = ip + 8;
	__u8 *daddr = ip + 24;
	__u8 proto = 0;
	__u8 *l4 = 0;
	int later_fragment = 0;
	if (!upper_layer6(ip, data_end, &proto, &l4, &later_fragment))
		return XDP_PASS;
	if (proto == IPPROTO_ICMPV6) {
		if (!later_fragment && icmp6_error_is_ours(l4, data_end))
			return bpf_redirect_map(&xvs_xsks, ctx->rx_queue_index, XDP_PASS);
		return XDP_PASS;
	}
	__u16 sport = 0, dport = 0;
	if (carries_ports(proto) && !later_fragment) {
		if ((void *)(l4 + 4) > data_end)
			return XDP_PASS;
		sport = *(__u16 *)l4;
		dport = *(__u16 *)(l4 + 2);
	}
	if (matches6(&xvs_vips6, daddr, dport, proto) || marked_v6(daddr, dport, proto)) {
		if (proto == IPPROTO_TCP && !later_fragment) {
			struct syn_source src;
			__builtin_memcpy(src.addr, saddr, 16);
			if (!syn_admitted(&src, l4, data_end))
				return XDP_DROP;
		}
		return bpf_redirect_map(&xvs_xsks, ctx->rx_queue_index, XDP_PASS);
	}
	if (!is_local6(daddr) && matches6(&xvs_nat_returns6, saddr, sport, proto))
		return bpf_redirect_map(&xvs_xsks, ctx->rx_queue_index, XDP_PASS);
	return XDP_PASS;
}

SEC("xdp")
int xvs_filter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 *eth = data;
	__u8 *ip = eth + ETH_HLEN;

	if ((void *)(ip + 20) > data_end)
		return XDP_PASS;
	if (*(__u16 *)(eth + 12) == bpf_htons(ETH_P_IPV6))
		return filter6(ctx, ip, data_end);
	if (*(__u16 *)(eth + 12) != bpf_htons(ETH_P_IP))
		return XDP_PASS;

	__u8 version_ihl = ip[0];
	__u32 ihl = (version_ihl & 0x0f) * 4;
	if ((version_ihl >> 4) != 4 || ihl < 20)
		return XDP_PASS;

	__u8 proto = ip[9];
	__u32 saddr = *(__u32 *)(ip + 12);
	__u32 daddr = *(__u32 *)(ip + 16);
	__u16 sport = 0, dport = 0;

	int first_fragment = is_first_fragment(ip);
	if (carries_ports(proto) && first_fragment) {
		__u8 *l4 = ip + ihl;
		if ((void *)(l4 + 4) > data_end)
			return XDP_PASS;
		sport = *(__u16 *)l4;
		dport = *(__u16 *)(l4 + 2);
	}

	if (matches(&xvs_vips, daddr, dport, proto) || marked_v4(daddr, dport, proto)) {
		if (proto == IPPROTO_TCP && first_fragment) {
			struct syn_source src = { .addr = { [10] = 0xff, [11] = 0xff } };
			__builtin_memcpy(&src.addr[12], &saddr, 4);
			if (!syn_admitted(&src, ip + ihl, data_end))
				return XDP_DROP;
		}
		return bpf_redirect_map(&xvs_xsks, ctx->rx_queue_index, XDP_PASS);
	}
	if (!is_local(daddr) && matches(&xvs_nat_returns, saddr, sport, proto))
		return bpf_redirect_map(&xvs_xsks, ctx->rx_queue_index, XDP_PASS);
	if (proto == IPPROTO_ICMP && first_fragment && icmp_error_is_ours(ip + ihl, data_end))
		return bpf_redirect_map(&xvs_xsks, ctx->rx_queue_index, XDP_PASS);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
