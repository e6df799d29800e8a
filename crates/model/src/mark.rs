//! Mark rules: which packets carry which firewall mark.
//!
//! IPVS serves `-f MARK` services to packets netfilter marked. AF_XDP traffic never passes
//! netfilter, so xvs assigns marks itself, from rules in its configuration: a protocol, a
//! destination address or prefix (IPv4 or IPv6) and destination ports or port ranges give a
//! mark. The most specific destination whose ports include the packet's port decides, as a
//! route lookup would, so the rules' order does not matter; two rules claiming the same
//! protocol, destination and port for different marks are refused (which mark would win
//! would otherwise be an accident of the file's order).

use std::fmt;
use std::net::IpAddr;

use crate::protocol::Protocol;

/// At most this many rules: the data path's cost and the XDP filter's maps are bounded.
pub const MAX_MARK_RULES: usize = 1024;

/// At most this many port ranges in one rule.
pub const MAX_RULE_PORT_RANGES: usize = 64;

/// A destination address with a prefix length; host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// `addr/len`; refused when `len` exceeds the family's bits or host bits are set (a
    /// typo such as `192.0.2.10/24` would otherwise silently mean the whole /24).
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, String> {
        let bits = family_bits(addr);
        if len > bits {
            return Err(format!("prefix length {len} exceeds {bits}"));
        }
        let prefix = Prefix { addr, len };
        if prefix.network() != addr {
            return Err(format!(
                "{addr}/{len} has host bits set (the network is {}/{len})",
                prefix.network()
            ));
        }
        Ok(prefix)
    }

    /// One host (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Prefix {
        Prefix {
            addr,
            len: family_bits(addr),
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether the prefix is `/0`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether this is an IPv6 prefix.
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// Whether `addr` lies inside (a different family never does).
    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv6() == self.is_ipv6() && mask(addr, self.len) == self.addr
    }

    /// Whether `other` lies wholly inside this prefix.
    pub fn covers(&self, other: &Prefix) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }

    fn network(&self) -> IpAddr {
        mask(self.addr, self.len)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == family_bits(self.addr) {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

impl std::str::FromStr for Prefix {
    type Err = String;

    /// `192.0.2.10`, `192.0.2.0/24`, `2001:db8::10`, `2001:db8::/64`.
    fn from_str(text: &str) -> Result<Prefix, String> {
        let (addr, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{text}' is not an address or ADDRESS/PREFIX_LENGTH"))?;
        match len {
            None => Ok(Prefix::host(addr)),
            Some(l) => {
                let len: u8 = l.parse().map_err(|_| {
                    format!(
                        "'{text}': the prefix length must be 0..={}",
                        family_bits(addr)
                    )
                })?;
                Prefix::new(addr, len).map_err(|e| format!("'{text}': {e}"))
            }
        }
    }
}

fn family_bits(addr: IpAddr) -> u8 {
    if addr.is_ipv6() { 128 } else { 32 }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// Destination ports `first..=last` (one port: `first == last`); never port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port, at least 1.
    pub first: u16,
    /// Last port, at least `first`.
    pub last: u16,
}

impl PortRange {
    /// `first..=last`, refused when empty or including port 0.
    pub fn new(first: u16, last: u16) -> Result<PortRange, String> {
        if first == 0 {
            return Err("port 0 is not a destination port (ports are 1..=65535)".to_string());
        }
        if last < first {
            return Err(format!(
                "{first}-{last} is empty (the first port is higher)"
            ));
        }
        Ok(PortRange { first, last })
    }

    /// Whether `port` is inside.
    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }

    /// Whether the two share a port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;

    /// `80` or `8000-8100`.
    fn from_str(text: &str) -> Result<PortRange, String> {
        let port = |p: &str| {
            p.parse::<u16>().map_err(|_| {
                format!("'{text}' is not a port or FIRST-LAST range of ports 1..=65535")
            })
        };
        match text.split_once('-') {
            Some((a, b)) => PortRange::new(port(a)?, port(b)?),
            None => {
                let p = port(text)?;
                PortRange::new(p, p)
            }
        }
    }
}

/// One rule: TCP or UDP packets to `destination` on one of `ports` carry `mark`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MarkRule {
    /// The mark, at least 1 (0 means "unmarked", as in netfilter).
    pub mark: u32,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The destination address or prefix.
    pub destination: Prefix,
    /// Destination ports, at least one range.
    pub ports: Vec<PortRange>,
}

impl MarkRule {
    /// Whether the rule marks a packet to `addr:port` over `protocol`.
    pub fn matches(&self, protocol: Protocol, addr: IpAddr, port: u16) -> bool {
        self.protocol == protocol
            && self.destination.contains(addr)
            && self.ports.iter().any(|r| r.contains(port))
    }
}

/// Whether `rules` form a set the data path can compile: within [`MAX_MARK_RULES`], each
/// rule well formed, and no protocol, destination and port claimed by two different marks.
/// The error names the rule(s) by index (`mark[2]`) and says what is allowed.
pub fn check_rules(rules: &[MarkRule]) -> Result<(), String> {
    if rules.len() > MAX_MARK_RULES {
        return Err(format!(
            "mark: {} rules, at most {MAX_MARK_RULES} are allowed",
            rules.len()
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        check_rule(rule).map_err(|e| format!("mark[{i}]: {e}"))?;
    }
    for (i, a) in rules.iter().enumerate() {
        for (j, b) in rules.iter().enumerate().skip(i + 1) {
            if a.mark == b.mark || a.protocol != b.protocol || a.destination != b.destination {
                continue;
            }
            for ra in &a.ports {
                if let Some(rb) = b.ports.iter().find(|rb| ra.overlaps(rb)) {
                    return Err(format!(
                        "mark[{j}]: {} {} port {} is marked {} by mark[{i}] already (port {}); \
                         one destination port has one mark",
                        protocol_word(b.protocol),
                        b.destination,
                        rb,
                        a.mark,
                        ra
                    ));
                }
            }
        }
    }
    Ok(())
}

fn check_rule(rule: &MarkRule) -> Result<(), String> {
    if rule.mark == 0 {
        return Err("mark: 0 means unmarked; give 1..=4294967295".to_string());
    }
    if !matches!(rule.protocol, Protocol::Tcp | Protocol::Udp) {
        return Err("protocol: must be \"tcp\" or \"udp\"".to_string());
    }
    if rule.ports.is_empty() {
        return Err("ports: list at least one port or range (\"1-65535\" for all)".to_string());
    }
    if rule.ports.len() > MAX_RULE_PORT_RANGES {
        return Err(format!(
            "ports: {} entries, at most {MAX_RULE_PORT_RANGES} are allowed",
            rule.ports.len()
        ));
    }
    if let Some(r) = rule.ports.iter().find(|r| r.first == 0 || r.last < r.first) {
        return Err(format!("ports: {r} is not a range of ports 1..=65535"));
    }
    Ok(())
}

fn protocol_word(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Icmp => "icmp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(mark: u32, dst: &str, ports: &[&str]) -> MarkRule {
        MarkRule {
            mark,
            protocol: Protocol::Tcp,
            destination: dst.parse().unwrap(),
            ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn prefixes_parse_both_families_and_refuse_host_bits() {
        let p: Prefix = "192.0.2.0/24".parse().unwrap();
        assert!(p.contains("192.0.2.77".parse().unwrap()));
        assert!(!p.contains("192.0.3.1".parse().unwrap()));
        assert!(!p.contains("::ffff:192.0.2.1".parse().unwrap()));
        assert_eq!(p.to_string(), "192.0.2.0/24");
        let h: Prefix = "192.0.2.10".parse().unwrap();
        assert_eq!((h.len(), h.to_string().as_str()), (32, "192.0.2.10"));
        let v6: Prefix = "2001:db8::/64".parse().unwrap();
        assert!(v6.contains("2001:db8::1:2".parse().unwrap()));
        assert!(!v6.contains("2001:db8:0:1::1".parse().unwrap()));
        assert!(v6.covers(&"2001:db8::10".parse().unwrap()));
        let all: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
        assert!(
            "192.0.2.10/24"
                .parse::<Prefix>()
                .unwrap_err()
                .contains("host bits")
        );
        assert!("192.0.2.0/33".parse::<Prefix>().is_err());
        assert!("2001:db8::/129".parse::<Prefix>().is_err());
        assert!("web".parse::<Prefix>().is_err());
    }

    #[test]
    fn port_ranges_parse_and_refuse_port_0_and_empty_ranges() {
        assert_eq!(
            "8000-8100".parse::<PortRange>(),
            Ok(PortRange {
                first: 8000,
                last: 8100
            })
        );
        assert_eq!("80".parse::<PortRange>().unwrap().to_string(), "80");
        assert!("0".parse::<PortRange>().is_err());
        assert!("90-80".parse::<PortRange>().is_err());
        assert!("80-70000".parse::<PortRange>().is_err());
        assert!("http".parse::<PortRange>().is_err());
    }

    #[test]
    fn rules_match_protocol_destination_and_port() {
        let r = rule(1, "192.0.2.0/24", &["80", "8000-8100"]);
        let a = |s: &str| s.parse().unwrap();
        assert!(r.matches(Protocol::Tcp, a("192.0.2.9"), 80));
        assert!(r.matches(Protocol::Tcp, a("192.0.2.9"), 8100));
        assert!(!r.matches(Protocol::Tcp, a("192.0.2.9"), 8101));
        assert!(!r.matches(Protocol::Udp, a("192.0.2.9"), 80));
        assert!(!r.matches(Protocol::Tcp, a("192.0.3.9"), 80));
    }

    #[test]
    fn a_port_claimed_by_two_marks_is_refused_one_mark_twice_is_not() {
        assert!(
            check_rules(&[
                rule(1, "192.0.2.10", &["80"]),
                rule(1, "192.0.2.10", &["80"])
            ])
            .is_ok()
        );
        // A more specific destination may take a port from a wider one.
        assert!(
            check_rules(&[
                rule(1, "192.0.2.0/24", &["80"]),
                rule(2, "192.0.2.10", &["80"])
            ])
            .is_ok()
        );
        let e = check_rules(&[
            rule(1, "192.0.2.10", &["443"]),
            rule(2, "192.0.2.10", &["8000-8100", "400-500"]),
        ])
        .unwrap_err();
        assert_eq!(
            e,
            "mark[1]: tcp 192.0.2.10 port 400-500 is marked 1 by mark[0] already (port 443); one destination port has one mark"
        );
        assert!(
            check_rules(&[rule(0, "192.0.2.10", &["80"])])
                .unwrap_err()
                .starts_with("mark[0]: mark: 0")
        );
        assert!(
            check_rules(&[rule(1, "192.0.2.10", &[])])
                .unwrap_err()
                .contains("ports")
        );
        let many: Vec<_> = (0..=MAX_MARK_RULES)
            .map(|_| rule(1, "192.0.2.10", &["80"]))
            .collect();
        assert!(check_rules(&many).is_err());
    }
}
