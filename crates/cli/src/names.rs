//! Host and service names, as ipvsadm uses them: `-t www:http` on input, and names instead of
//! numbers in listings without `-n`.
//!
//! ipvsadm asks the C library (`gethostbyname`, `getservbyname` and their reverses). xvsadm
//! reads `/etc/hosts` and `/etc/services` itself and never asks DNS, so a listing never
//! waits on a resolver and the same files give the same answers on both sides of `-S`/`-R`.
//! Like ipvsadm's `host_to_addr`, a host name resolves to IPv4 only; IPv6 addresses are
//! written as literals.

use std::net::{IpAddr, Ipv4Addr};

use xvs_dataplane::service::spec::Protocol;

/// The name tables: empty ones ([`Names::none`]) make everything numeric.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// (address, names on its line; the first is the canonical name).
    hosts: Vec<(IpAddr, Vec<String>)>,
    /// (port, protocol, names; the first is the official name).
    services: Vec<(u16, String, Vec<String>)>,
}

impl Names {
    /// No names at all: parsing accepts only numbers, listings print only numbers.
    pub fn none() -> Self {
        Names::default()
    }

    /// The system's `/etc/hosts` and `/etc/services`; a missing file gives no names.
    pub fn system() -> Self {
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let services = std::fs::read_to_string("/etc/services").unwrap_or_default();
        Names::from_texts(&hosts, &services)
    }

    /// Tables from the text of an `/etc/hosts` and an `/etc/services` file.
    pub fn from_texts(hosts: &str, services: &str) -> Self {
        let mut names = Names::default();
        for line in hosts.lines() {
            let mut words = strip_comment(line).split_whitespace();
            let Some(Ok(addr)) = words.next().map(str::parse::<IpAddr>) else {
                continue;
            };
            let aliases: Vec<String> = words.map(str::to_string).collect();
            if !aliases.is_empty() {
                names.hosts.push((addr, aliases));
            }
        }
        for line in services.lines() {
            let mut words = strip_comment(line).split_whitespace();
            let (Some(name), Some(port_proto)) = (words.next(), words.next()) else {
                continue;
            };
            let Some((port, proto)) = port_proto.split_once('/') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let mut all = vec![name.to_string()];
            all.extend(words.map(str::to_string));
            names.services.push((port, proto.to_ascii_lowercase(), all));
        }
        names
    }

    /// `gethostbyname` over /etc/hosts: the first IPv4 address carrying `name`.
    pub fn host_v4(&self, name: &str) -> Option<Ipv4Addr> {
        self.hosts.iter().find_map(|(addr, names)| match addr {
            IpAddr::V4(v4) if names.iter().any(|n| n == name) => Some(*v4),
            _ => None,
        })
    }

    /// `gethostbyaddr` over /etc/hosts: the canonical name of the first line for `addr`.
    pub fn host_name(&self, addr: IpAddr) -> Option<&str> {
        self.hosts
            .iter()
            .find(|(a, _)| *a == addr)
            .and_then(|(_, names)| names.first())
            .map(String::as_str)
    }

    /// `getservbyname(name, proto)`.
    pub fn port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        let proto = proto_word(protocol);
        self.services
            .iter()
            .find(|(_, p, names)| p == proto && names.iter().any(|n| n == name))
            .map(|(port, _, _)| *port)
    }

    /// `getservbyport(port, proto)`: the official name.
    pub fn service_name(&self, port: u16, protocol: Protocol) -> Option<&str> {
        let proto = proto_word(protocol);
        self.services
            .iter()
            .find(|(p, pr, _)| *p == port && pr == proto)
            .and_then(|(_, _, names)| names.first())
            .map(String::as_str)
    }
}

fn proto_word(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Icmp => "icmp",
    }
}

fn strip_comment(line: &str) -> &str {
    line.split('#').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str = "127.0.0.1 localhost\n# a comment\n10.0.0.1 web1 web1.example # x\n::1 localhost ip6-localhost\n";
    const SERVICES: &str = "http 80/tcp www # WorldWideWeb\ndomain 53/udp\ndomain 53/tcp\n";

    #[test]
    fn resolves_both_ways() {
        let n = Names::from_texts(HOSTS, SERVICES);
        assert_eq!(n.host_v4("web1.example"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(n.host_v4("localhost"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(n.host_v4("ip6-localhost"), None, "IPv4 only, as ipvsadm");
        assert_eq!(n.host_name("10.0.0.1".parse().unwrap()), Some("web1"));
        assert_eq!(n.port("www", Protocol::Tcp), Some(80));
        assert_eq!(n.port("http", Protocol::Udp), None);
        assert_eq!(n.service_name(53, Protocol::Udp), Some("domain"));
        assert_eq!(n.service_name(8080, Protocol::Tcp), None);
        assert_eq!(Names::none().port("http", Protocol::Tcp), None);
    }
}
