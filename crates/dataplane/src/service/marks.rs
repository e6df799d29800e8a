//! Which firewall mark a packet carries: the compiled [`MarkRule`]s.
//!
//! A separate stage beside the `(protocol, VIP, port)` classifier, asked first as IPVS's
//! `ip_vs_service_find` asks for the fwmark service first. Per packet it costs one binary
//! search per distinct prefix length the rules use (most specific first; one or two in
//! practice), then one over that destination's sorted port ranges: no hashing, no
//! allocation, bounded by [`MAX_MARK_RULES`](xvs_model::mark::MAX_MARK_RULES).
//!
//! IPv4 and IPv6 share the code: an IPv4 address sits in the top 32 bits of a `u128`, so a
//! prefix of either family is the same top-bits mask. Each range carries, next to its mark,
//! the index of the fwmark service of that mark and family, resolved when the snapshot is
//! built, so a packet goes from its tuple to its service without a second lookup.

use std::net::{IpAddr, Ipv4Addr};

use xvs_model::mark::{MarkRule, PortRange, Prefix};

/// No fwmark service for the range's mark (the packet falls through to the address
/// classifier, as an IPVS packet whose mark no service has).
pub const NO_SERVICE: u16 = u16::MAX;

/// The compiled rules of one snapshot.
#[derive(Debug, Clone, Default)]
pub struct MarkClassifier {
    v4: FamilyTable,
    v6: FamilyTable,
    rules: Vec<MarkRule>,
    /// The rules whose mark a service of their family serves: only their traffic is worth
    /// taking from the kernel.
    served: Vec<MarkRule>,
}

/// The rules of one address family, by prefix length.
#[derive(Debug, Clone, Default)]
struct FamilyTable {
    /// Longest prefix first.
    levels: Vec<Level>,
    /// Every destination's ranges, each destination's slice sorted by port.
    ranges: Vec<MarkedRange>,
}

#[derive(Debug, Clone)]
struct Level {
    mask: u128,
    /// Sorted by `(protocol, network)`.
    destinations: Vec<Destination>,
}

#[derive(Debug, Clone, Copy)]
struct Destination {
    protocol: u8,
    network: u128,
    start: u32,
    end: u32,
}

/// Ports `first..=last` carry `mark`; `service` serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MarkedRange {
    first: u16,
    last: u16,
    mark: u32,
    service: u16,
}

/// What a packet's tuple matched: its mark and the fwmark service of that mark
/// ([`NO_SERVICE`] if none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marked {
    /// The mark.
    pub mark: u32,
    /// Index of the service in the snapshot, or [`NO_SERVICE`].
    pub service: u16,
}

#[inline(always)]
fn v4_key(addr: [u8; 4]) -> u128 {
    u128::from(u32::from_be_bytes(addr)) << 96
}

fn prefix_key(prefix: &Prefix) -> u128 {
    match prefix.addr() {
        IpAddr::V4(a) => v4_key(a.octets()),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The top-`len`-bits mask of the 128-bit key space (an IPv4 /24 is `len` 24 too).
fn top_bits(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl MarkClassifier {
    /// Compiles `rules` (already accepted by [`xvs_model::mark::check_rules`]);
    /// `service_of(mark, ipv6)` names the fwmark service of a mark, if any. Should two
    /// different marks claim one port anyway, the earlier rule keeps it.
    pub fn new(rules: &[MarkRule], service_of: impl Fn(u32, bool) -> Option<u16>) -> Self {
        let mut classifier = MarkClassifier {
            rules: rules.to_vec(),
            served: rules
                .iter()
                .filter(|r| service_of(r.mark, r.destination.is_ipv6()).is_some())
                .cloned()
                .collect(),
            ..Default::default()
        };
        for ipv6 in [false, true] {
            let family: Vec<&MarkRule> = rules
                .iter()
                .filter(|r| r.destination.is_ipv6() == ipv6)
                .collect();
            let table =
                compile_family(&family, |mark| service_of(mark, ipv6).unwrap_or(NO_SERVICE));
            if ipv6 {
                classifier.v6 = table;
            } else {
                classifier.v4 = table;
            }
        }
        classifier
    }

    /// The mark of an IPv4 packet to `dst:port` over IP protocol `protocol`.
    #[inline]
    pub fn mark_v4(&self, protocol: u8, dst: Ipv4Addr, port: u16) -> Option<Marked> {
        self.v4.lookup(protocol, v4_key(dst.octets()), port)
    }

    /// The mark of an IPv6 packet to `dst:port` over IP protocol `protocol` (the 16 bytes
    /// as they sit in the header).
    #[inline]
    pub fn mark_v6(&self, protocol: u8, dst: &[u8; 16], port: u16) -> Option<Marked> {
        self.v6.lookup(protocol, u128::from_be_bytes(*dst), port)
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules compiled.
    pub fn rules(&self) -> &[MarkRule] {
        &self.rules
    }

    /// For the XDP filter: each `(protocol, destination)` of the rules a service serves, with
    /// every port range such a rule marks there, its own and those of wider destinations
    /// covering it (the filter finds the longest matching prefix only, so that entry must
    /// answer for all), merged and sorted. `ipv6` selects the family. Rules of a mark no
    /// service has are left out: their traffic stays the kernel's.
    pub fn filter_entries(&self, ipv6: bool) -> Vec<(u8, Prefix, Vec<PortRange>)> {
        let family: Vec<&MarkRule> = self
            .served
            .iter()
            .filter(|r| r.destination.is_ipv6() == ipv6)
            .collect();
        let mut keys: Vec<(u8, Prefix)> = family
            .iter()
            .map(|r| (r.protocol as u8, r.destination))
            .collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .map(|(protocol, dst)| {
                let mut ranges: Vec<PortRange> = family
                    .iter()
                    .filter(|r| r.protocol as u8 == protocol && r.destination.covers(&dst))
                    .flat_map(|r| r.ports.iter().copied())
                    .collect();
                ranges.sort();
                (protocol, dst, merge(ranges))
            })
            .collect()
    }
}

/// Whether the data path can take `rules`: [`xvs_model::mark::check_rules`], and within the
/// XDP filter's bounds (destinations in its mark map, port ranges per destination counting
/// those of wider destinations covering it). One line naming what is over and the bound.
pub fn check_mark_rules(rules: &[MarkRule]) -> Result<(), String> {
    xvs_model::mark::check_rules(rules)?;
    let compiled = MarkClassifier::new(rules, |_, _| Some(0));
    for ipv6 in [false, true] {
        let entries = compiled.filter_entries(ipv6);
        if entries.len() > crate::xdp::MAX_MARK_DESTS {
            return Err(format!(
                "mark: {} distinct (protocol, destination) pairs, the XDP filter takes at most {}",
                entries.len(),
                crate::xdp::MAX_MARK_DESTS
            ));
        }
        if let Some((protocol, dst, ranges)) = entries
            .iter()
            .find(|(_, _, r)| r.len() > crate::xdp::MARK_RANGES)
        {
            let word = if *protocol == 6 { "tcp" } else { "udp" };
            return Err(format!(
                "mark: {word} {dst} has {} separate port ranges (with those of wider destinations \
                 covering it), the XDP filter takes at most {} per destination; join them into ranges",
                ranges.len(),
                crate::xdp::MARK_RANGES
            ));
        }
    }
    Ok(())
}

/// The fwmark services of `table` no rule gives their mark (in their family): accepted, as
/// IPVS accepts a service nothing marks for, but they receive no traffic; worth a warning.
pub fn unmarked_services(
    table: &xvs_model::spec::ServiceTableSpec,
    rules: &[MarkRule],
) -> Vec<u32> {
    table
        .services
        .iter()
        .filter_map(|s| match s.addr {
            xvs_model::spec::ServiceAddr::Fwmark { mark, ipv6 } => Some((mark, ipv6)),
            _ => None,
        })
        .filter(|&(mark, ipv6)| {
            !rules
                .iter()
                .any(|r| r.mark == mark && r.destination.is_ipv6() == ipv6)
        })
        .map(|(mark, _)| mark)
        .collect()
}

/// Sorted ranges with overlapping and adjacent ones joined.
fn merge(sorted: Vec<PortRange>) -> Vec<PortRange> {
    let mut out: Vec<PortRange> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match out.last_mut() {
            Some(last) if u32::from(r.first) <= u32::from(last.last) + 1 => {
                last.last = last.last.max(r.last);
            }
            _ => out.push(r),
        }
    }
    out
}

fn compile_family(rules: &[&MarkRule], service_of: impl Fn(u32) -> u16) -> FamilyTable {
    let mut lengths: Vec<u8> = rules.iter().map(|r| r.destination.len()).collect();
    lengths.sort_unstable_by(|a, b| b.cmp(a));
    lengths.dedup();
    let mut table = FamilyTable::default();
    for len in lengths {
        let mut keys: Vec<(u8, u128)> = rules
            .iter()
            .filter(|r| r.destination.len() == len)
            .map(|r| (r.protocol as u8, prefix_key(&r.destination)))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut destinations = Vec::with_capacity(keys.len());
        for (protocol, network) in keys {
            let start = table.ranges.len();
            let mut ranges: Vec<MarkedRange> = Vec::new();
            for rule in rules.iter().filter(|r| {
                r.protocol as u8 == protocol
                    && r.destination.len() == len
                    && prefix_key(&r.destination) == network
            }) {
                for p in &rule.ports {
                    // The earlier rule keeps a port two marks claim (refused by the check).
                    if ranges
                        .iter()
                        .any(|r| r.mark != rule.mark && r.first <= p.last && p.first <= r.last)
                    {
                        continue;
                    }
                    ranges.push(MarkedRange {
                        first: p.first,
                        last: p.last,
                        mark: rule.mark,
                        service: service_of(rule.mark),
                    });
                }
            }
            ranges.sort_unstable_by_key(|r| (r.first, r.last));
            // Join ranges of one mark that touch or overlap, so the ranges are disjoint.
            let mut joined: Vec<MarkedRange> = Vec::with_capacity(ranges.len());
            for r in ranges {
                match joined.last_mut() {
                    Some(last)
                        if last.mark == r.mark
                            && u32::from(r.first) <= u32::from(last.last) + 1 =>
                    {
                        last.last = last.last.max(r.last);
                    }
                    _ => joined.push(r),
                }
            }
            table.ranges.extend(joined);
            destinations.push(Destination {
                protocol,
                network,
                start: start as u32,
                end: table.ranges.len() as u32,
            });
        }
        table.levels.push(Level {
            mask: top_bits(len),
            destinations,
        });
    }
    table
}

impl FamilyTable {
    #[inline]
    fn lookup(&self, protocol: u8, key: u128, port: u16) -> Option<Marked> {
        for level in &self.levels {
            let network = key & level.mask;
            let Ok(at) = level
                .destinations
                .binary_search_by(|d| (d.protocol, d.network).cmp(&(protocol, network)))
            else {
                continue;
            };
            let d = level.destinations[at];
            let ranges = &self.ranges[d.start as usize..d.end as usize];
            // The last range starting at or below the port is the only candidate.
            let after = ranges.partition_point(|r| r.first <= port);
            if let Some(r) = after.checked_sub(1).map(|i| ranges[i])
                && port <= r.last
            {
                return Some(Marked {
                    mark: r.mark,
                    service: r.service,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;
    use xvs_model::Protocol;

    fn rule(mark: u32, protocol: Protocol, dst: &str, ports: &[&str]) -> MarkRule {
        MarkRule {
            mark,
            protocol,
            destination: dst.parse().unwrap(),
            ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    fn v4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn v6(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }

    /// The matcher against the plain reading of the rules, over many tuples.
    #[test]
    fn agrees_with_the_rules_most_specific_destination_first() {
        let rules = vec![
            rule(1, Protocol::Tcp, "192.0.2.10", &["80", "443"]),
            rule(2, Protocol::Tcp, "192.0.2.0/24", &["80", "8000-8100"]),
            rule(3, Protocol::Udp, "192.0.2.0/24", &["53"]),
            rule(4, Protocol::Tcp, "0.0.0.0/0", &["25"]),
            rule(5, Protocol::Tcp, "198.51.100.0/30", &["1-65535"]),
            rule(1, Protocol::Tcp, "192.0.2.10", &["444-450"]),
        ];
        let m = MarkClassifier::new(&rules, |mark, ipv6| {
            (!ipv6 && mark != 4).then_some(mark as u16 * 10)
        });
        let hit = |p: u8, a: &str, port| m.mark_v4(p, v4(a), port).map(|x| (x.mark, x.service));
        assert_eq!(hit(6, "192.0.2.10", 80), Some((1, 10)));
        assert_eq!(hit(6, "192.0.2.10", 443), Some((1, 10)));
        assert_eq!(hit(6, "192.0.2.10", 447), Some((1, 10)));
        // Not a port of the host rule: the /24's rule marks it.
        assert_eq!(hit(6, "192.0.2.10", 8050), Some((2, 20)));
        assert_eq!(hit(6, "192.0.2.11", 80), Some((2, 20)));
        assert_eq!(hit(6, "192.0.2.11", 443), None);
        assert_eq!(hit(17, "192.0.2.11", 53), Some((3, 30)));
        assert_eq!(hit(17, "192.0.2.11", 80), None);
        assert_eq!(hit(6, "203.0.113.5", 25), Some((4, NO_SERVICE)));
        assert_eq!(hit(6, "198.51.100.3", 65535), Some((5, 50)));
        assert_eq!(hit(6, "198.51.100.4", 1), None);
        // Exhaustive over ports and a spread of addresses: the most specific rule that
        // matches, as a plain reading of the rules says.
        for last in [0u8, 3, 4, 10, 11, 255] {
            for addr in [format!("192.0.2.{last}"), format!("198.51.100.{last}")] {
                for port in (1..=65535u16)
                    .step_by(7)
                    .chain([80, 443, 444, 450, 451, 8100, 8101])
                {
                    for p in [Protocol::Tcp, Protocol::Udp] {
                        let ip: IpAddr = addr.parse().unwrap();
                        let want = rules
                            .iter()
                            .filter(|r| r.matches(p, ip, port))
                            .max_by_key(|r| r.destination.len())
                            .map(|r| r.mark);
                        assert_eq!(
                            m.mark_v4(p as u8, v4(&addr), port).map(|x| x.mark),
                            want,
                            "{p:?} {addr}:{port}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn ipv6_prefixes_match_16_byte_addresses_and_families_stay_apart() {
        let rules = vec![
            rule(7, Protocol::Tcp, "2001:db8::/64", &["80", "443"]),
            rule(8, Protocol::Tcp, "2001:db8::10", &["443"]),
            rule(9, Protocol::Tcp, "192.0.2.10", &["80"]),
        ];
        let m = MarkClassifier::new(&rules, |mark, ipv6| (ipv6 && mark == 7).then_some(3));
        assert_eq!(
            m.mark_v6(6, &v6("2001:db8::1:2"), 80),
            Some(Marked {
                mark: 7,
                service: 3
            })
        );
        assert_eq!(
            m.mark_v6(6, &v6("2001:db8::10"), 443).map(|x| x.mark),
            Some(8)
        );
        assert_eq!(
            m.mark_v6(6, &v6("2001:db8::10"), 80).map(|x| x.mark),
            Some(7)
        );
        assert_eq!(m.mark_v6(6, &v6("2001:db8:0:1::1"), 80), None);
        assert_eq!(m.mark_v6(17, &v6("2001:db8::1"), 80), None);
        // 192.0.2.10 in IPv6's space (mapped or not) is no IPv4 rule's destination.
        assert_eq!(m.mark_v6(6, &v6("::ffff:192.0.2.10"), 80), None);
        assert_eq!(m.mark_v6(6, &v6("c000:20a::"), 80), None);
        assert_eq!(m.mark_v4(6, v4("192.0.2.10"), 80).map(|x| x.mark), Some(9));
        assert!(
            MarkClassifier::default()
                .mark_v4(6, v4("192.0.2.10"), 80)
                .is_none()
        );
    }

    #[test]
    fn rules_beyond_the_filters_bounds_are_refused_in_one_line() {
        let ports: Vec<String> = (0..17).map(|i| (1000 + 2 * i).to_string()).collect();
        let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
        let e = check_mark_rules(&[rule(1, Protocol::Tcp, "192.0.2.10", &ports)]).unwrap_err();
        assert!(
            e.starts_with("mark: tcp 192.0.2.10 has 17 separate port ranges"),
            "{e}"
        );
        // Adjacent ports join into one range: no limit reached.
        let ports: Vec<String> = (0..40).map(|i| (1000 + i).to_string()).collect();
        let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
        assert!(check_mark_rules(&[rule(1, Protocol::Tcp, "192.0.2.10", &ports)]).is_ok());
        assert!(check_mark_rules(&[rule(0, Protocol::Tcp, "192.0.2.10", &["80"])]).is_err());
    }

    #[test]
    fn filter_entries_carry_the_ports_of_covering_destinations() {
        let rules = vec![
            rule(1, Protocol::Tcp, "192.0.2.10", &["443", "80"]),
            rule(2, Protocol::Tcp, "192.0.2.0/24", &["81", "8000-8100"]),
            rule(3, Protocol::Udp, "192.0.2.0/24", &["53"]),
            rule(4, Protocol::Tcp, "2001:db8::/64", &["80"]),
            rule(5, Protocol::Tcp, "192.0.2.20", &["22"]),
        ];
        // Mark 5 has no service: its rule takes nothing from the kernel.
        let m = MarkClassifier::new(&rules, |mark, _| (mark != 5).then_some(0));
        let r = |a, b| PortRange::new(a, b).unwrap();
        assert_eq!(
            m.filter_entries(false),
            vec![
                (
                    6,
                    "192.0.2.0/24".parse().unwrap(),
                    vec![r(81, 81), r(8000, 8100)]
                ),
                (
                    6,
                    "192.0.2.10".parse().unwrap(),
                    vec![r(80, 81), r(443, 443), r(8000, 8100)]
                ),
                (17, "192.0.2.0/24".parse().unwrap(), vec![r(53, 53)]),
            ]
        );
        assert_eq!(
            m.filter_entries(true),
            vec![(6, "2001:db8::/64".parse().unwrap(), vec![r(80, 80)])]
        );
    }
}
