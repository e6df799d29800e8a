//! The seed labs as network namespaces: a client, a director and two real servers, wired as
//! the LVS tutorials wire them.
//!
//! DR and TUN (seed "LVS-DR"): the client sits behind a router; the router, the director and
//! the real servers share one LAN (a bridge); the router routes the VIP to the director, and
//! the director also carries the VIP on its interface as the seed does. Real servers hold the
//! VIP on `lo` with `arp_ignore=1`, `arp_announce=2`, set up by `xvs realserver start` as an
//! operator would ([`RealServerSetup`]), and route replies through the router, never
//! through the director. TUN's real servers are set up the same way (`--mode dr`: this
//! kernel has no ipip module for `--mode tun`, so the lab's own decapsulator delivers the
//! inner packets to the VIP on `lo`).
//!
//! NAT (seed "LVS-NAT"): a two-arm director. The client is on the external network with the
//! VIP; the real servers are on a private network whose gateway is the director's internal
//! address, so replies come back through the director.
//!
//! Addresses follow the seeds: VIP 172.16.21.10, DIP 192.168.40.11, RIPs 192.168.40.12/.13
//! (DR, TUN); VIP 192.168.0.11, internal 10.168.0.90, RIPs 10.168.0.94/.95 (NAT).
//!
//! [`Topology::add_ipv6`] makes a lab dual-stack: IPv6 addresses beside the IPv4 ones on
//! every host ([`Ipv6Plan`]), IPv6 routes as the IPv4 ones, and the IPv6 VIP where the IPv4
//! VIP is (director and, for DR and TUN, the real servers' `lo`). Duplicate address
//! detection is off in every lab namespace, so no address stays tentative.
//!
//! [`HaTopology`] is the same with two directors, active and standby, and the VIP (for NAT
//! also the real servers' gateway) floating between them.

use std::fmt;
use std::path::{Path, PathBuf};

use super::netns::{LabError, LabResult, Namespace, unique_tag, veth};

/// How the lab sets up its DR and TUN real servers: `xvs realserver start` from `xvs`,
/// each real server's state file in `dir`.
#[derive(Debug, Clone)]
pub struct RealServerSetup {
    /// The `xvs` binary.
    pub xvs: PathBuf,
    /// Where the state files go (the lab's directory).
    pub dir: PathBuf,
}

impl RealServerSetup {
    /// `xvs realserver start --vip VIP --mode dr --iface DEV` in `ns`; the state file is
    /// `dir/NAME-realserver.json` (`/run` is shared by the namespaces), for an IPv6 VIP
    /// `dir/NAME-realserver6.json`.
    fn start(&self, ns: &Namespace, name: &str, vip: &str, dev: &str) -> LabResult<()> {
        let state = if vip.contains(':') {
            self.state_file6(name)
        } else {
            self.state_file(name)
        };
        let state = state.to_string_lossy();
        let xvs = self.xvs.to_string_lossy();
        let args = [
            "realserver",
            "start",
            "--vip",
            vip,
            "--mode",
            "dr",
            "--iface",
            dev,
            "--state",
            &state,
        ];
        ns.exec(&xvs, &args).map(|_| ())
    }

    /// The state file of real server `name`.
    pub fn state_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-realserver.json"))
    }

    /// The state file of real server `name`'s IPv6 VIP, in a dual-stack lab.
    pub fn state_file6(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-realserver6.json"))
    }

    /// A setup with its files in `dir`.
    pub fn new(xvs: &Path, dir: &Path) -> RealServerSetup {
        RealServerSetup {
            xvs: xvs.to_path_buf(),
            dir: dir.to_path_buf(),
        }
    }
}

/// LVS's three forwarding methods, as the lab builds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Direct routing (`-g`).
    Dr,
    /// NAT (`-m`).
    Nat,
    /// IP tunnelling (`-i`).
    Tun,
}

impl Mode {
    /// The ipvsadm option of the method.
    pub fn option(self) -> &'static str {
        match self {
            Mode::Dr => "-g",
            Mode::Nat => "-m",
            Mode::Tun => "-i",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Dr => "dr",
            Mode::Nat => "nat",
            Mode::Tun => "tun",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dr" => Ok(Mode::Dr),
            "nat" => Ok(Mode::Nat),
            "tun" => Ok(Mode::Tun),
            other => Err(format!("unknown lab mode '{other}' (dr, nat or tun)")),
        }
    }
}

/// A real server of the lab.
#[derive(Debug)]
pub struct RealServerHost {
    /// Its name, which its HTTP server answers with.
    pub name: String,
    /// Its namespace.
    pub ns: Namespace,
    /// Its address (RIP).
    pub rip: String,
    /// Its LAN interface.
    pub dev: String,
    /// Its IPv6 address, in a dual-stack lab.
    pub rip6: Option<String>,
}

/// The IPv6 addresses of a dual-stack lab, beside the IPv4 ones.
///
/// DR and TUN: client 2001:db8:16::100 behind the router (2001:db8:16::254, and
/// 2001:db8:40::254 on the LAN), director 2001:db8:40::11, real servers 2001:db8:40::12 and
/// ::13, VIP 2001:db8:21::10 routed by the router to the director. NAT: client
/// 2001:db8::100 and the VIP 2001:db8::11 on the external link, director fd00:168::90 on
/// the internal one, real servers fd00:168::94 and ::95 with the director as gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Plan {
    /// The IPv6 virtual IP.
    pub vip: String,
    /// The client's IPv6 address.
    pub client_ip: String,
    /// The director's IPv6 address on the real servers' network (TUN's tunnel source).
    pub dip: String,
}

/// A built lab. Dropping it removes every namespace (and so every link) it created.
#[derive(Debug)]
pub struct Topology {
    /// The forwarding method the lab is wired for.
    pub mode: Mode,
    /// The virtual IP.
    pub vip: String,
    /// The client's namespace and address.
    pub client: Namespace,
    /// The client's address.
    pub client_ip: String,
    /// The director's namespace.
    pub director: Namespace,
    /// The director's interfaces for xvs: one (DR, TUN) or external then internal (NAT).
    pub director_ifaces: Vec<String>,
    /// The director's address on the real servers' network (TUN's tunnel source).
    pub dip: String,
    /// The real servers.
    pub real_servers: Vec<RealServerHost>,
    /// The IPv6 addresses, once [`Topology::add_ipv6`] made the lab dual-stack.
    pub ipv6: Option<Ipv6Plan>,
    /// Router and LAN bridge namespaces, kept alive until the lab is dropped.
    _infrastructure: Vec<Namespace>,
}

impl Topology {
    /// Builds the seed topology for `mode`, tagged uniquely for this run.
    pub fn build(mode: Mode, setup: &RealServerSetup) -> LabResult<Topology> {
        let tag = unique_tag();
        match mode {
            Mode::Dr | Mode::Tun => one_arm(mode, &tag, setup),
            Mode::Nat => two_arm(&tag),
        }
    }

    /// Adds IPv6 beside IPv4 on every host, as [`Ipv6Plan`] describes; DR and TUN real
    /// servers get the IPv6 VIP by `xvs realserver start` (`setup`), as the IPv4 one.
    pub fn add_ipv6(&mut self, setup: &RealServerSetup) -> LabResult<()> {
        let v6 = |ns: &Namespace, dev: &str, cidr: &str| {
            ns.ip(&["-6", "addr", "add", cidr, "dev", dev, "nodad"])
                .map(|_| ())
        };
        let route = |ns: &Namespace, to: &str, via: &str| {
            ns.ip(&["-6", "route", "add", to, "via", via]).map(|_| ())
        };
        let plan = match self.mode {
            Mode::Dr | Mode::Tun => {
                let plan = Ipv6Plan {
                    vip: "2001:db8:21::10".into(),
                    client_ip: "2001:db8:16::100".into(),
                    dip: "2001:db8:40::11".into(),
                };
                let router = &self._infrastructure[0];
                v6(&self.client, "eth0", "2001:db8:16::100/64")?;
                route(&self.client, "default", "2001:db8:16::254")?;
                v6(router, "eth0", "2001:db8:16::254/64")?;
                v6(router, "eth1", "2001:db8:40::254/64")?;
                router.sysctl("net.ipv6.conf.all.forwarding", "1")?;
                route(router, &format!("{}/128", plan.vip), &plan.dip)?;
                v6(&self.director, "eth0", "2001:db8:40::11/64")?;
                v6(&self.director, "eth0", &format!("{}/128", plan.vip))?;
                route(&self.director, "default", "2001:db8:40::254")?;
                for (i, rs) in self.real_servers.iter_mut().enumerate() {
                    let rip = format!("2001:db8:40::{}", 12 + i);
                    v6(&rs.ns, &rs.dev, &format!("{rip}/64"))?;
                    route(&rs.ns, "default", "2001:db8:40::254")?;
                    // VIP/128 on lo; IPv6 has no ARP to silence: the kernel answers
                    // neighbour solicitations only for addresses of the receiving interface.
                    setup
                        .start(&rs.ns, &rs.name, &plan.vip, &rs.dev)
                        .map_err(|e| LabError(format!("{}: {e}", rs.name)))?;
                    rs.rip6 = Some(rip);
                }
                plan
            }
            Mode::Nat => {
                let plan = Ipv6Plan {
                    vip: "2001:db8::11".into(),
                    client_ip: "2001:db8::100".into(),
                    dip: "fd00:168::90".into(),
                };
                v6(&self.client, "eth0", "2001:db8::100/64")?;
                v6(&self.director, "ext0", &format!("{}/64", plan.vip))?;
                v6(&self.director, "int0", "fd00:168::90/64")?;
                for (i, rs) in self.real_servers.iter_mut().enumerate() {
                    let rip = format!("fd00:168::{}", 94 + i);
                    v6(&rs.ns, &rs.dev, &format!("{rip}/64"))?;
                    route(&rs.ns, "default", &plan.dip)?;
                    rs.rip6 = Some(rip);
                }
                plan
            }
        };
        self.ipv6 = Some(plan);
        Ok(())
    }
}

fn namespace(tag: &str, role: &str) -> LabResult<Namespace> {
    let ns = Namespace::create(&format!("xvs-{tag}-{role}"))?;
    // No duplicate address detection: links made from now on get link-local addresses that
    // are usable at once (neighbour discovery sends from them). Kernels without IPv6 lack
    // the keys, and IPv4 labs do not need them.
    for key in [
        "net.ipv6.conf.all.accept_dad",
        "net.ipv6.conf.default.accept_dad",
    ] {
        let _ = ns.sysctl(key, "0");
    }
    Ok(ns)
}

/// A LAN: a bridge in its own namespace that ports are plugged into.
struct Lan {
    ns: Namespace,
    ports: u32,
}

impl Lan {
    fn new(tag: &str, role: &str) -> LabResult<Lan> {
        let ns = namespace(tag, role)?;
        ns.ip(&["link", "add", "br0", "type", "bridge"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        Ok(Lan { ns, ports: 0 })
    }

    /// Plugs `dev` of `host` into the bridge.
    fn plug(&mut self, host: &Namespace, dev: &str) -> LabResult<()> {
        self.ports += 1;
        let port = format!("p{}", self.ports);
        veth(dev, host, &port, &self.ns)?;
        self.ns.ip(&["link", "set", &port, "master", "br0"])?;
        self.ns.ip(&["link", "set", &port, "up"])?;
        // Frames forwarded on veth carry "partial" checksums unless offload is off; the
        // bridge ports forward as they are, so the hosts' ends matter (set by the callers).
        Ok(())
    }
}

/// A real server: RIP on `dev`, default route via `gateway`; for DR and TUN also the VIP on
/// `lo`, with the ARP sysctls that keep it from answering for the VIP (`xvs realserver`).
fn real_server(
    tag: &str,
    name: &str,
    lan: &mut Lan,
    rip_cidr: &str,
    gateway: &str,
    vip: Option<(&str, &RealServerSetup)>,
) -> LabResult<RealServerHost> {
    let ns = namespace(tag, name)?;
    lan.plug(&ns, "eth0")?;
    ns.addr("eth0", rip_cidr)?;
    ns.no_tx_offload("eth0")?;
    ns.ip(&["route", "add", "default", "via", gateway])?;
    if let Some((vip, setup)) = vip {
        setup
            .start(&ns, name, vip, "eth0")
            .map_err(|e| LabError(format!("{name}: {e}")))?;
    }
    let rip = rip_cidr.split('/').next().unwrap_or_default().to_string();
    Ok(RealServerHost {
        name: name.to_string(),
        ns,
        rip,
        dev: "eth0".to_string(),
        rip6: None,
    })
}

/// The client (172.16.0.100) behind a router (172.16.0.254 towards it, 192.168.40.254 on
/// `lan`, forwarding): the one-arm labs' outside. The caller routes the VIP on the router.
fn routed_client(tag: &str, lan: &mut Lan) -> LabResult<(Namespace, Namespace)> {
    let client = namespace(tag, "client")?;
    let router = namespace(tag, "router")?;
    veth("eth0", &client, "eth0", &router)?;
    client.addr("eth0", "172.16.0.100/24")?;
    client.no_tx_offload("eth0")?;
    client.ip(&["route", "add", "default", "via", "172.16.0.254"])?;
    router.addr("eth0", "172.16.0.254/24")?;
    router.no_tx_offload("eth0")?;
    lan.plug(&router, "eth1")?;
    router.addr("eth1", "192.168.40.254/24")?;
    router.no_tx_offload("eth1")?;
    router.sysctl("net.ipv4.ip_forward", "1")?;
    Ok((client, router))
}

/// A one-arm director named `role`: `eth0` on `lan` with `address`, default route via the
/// router.
fn one_arm_director(tag: &str, role: &str, lan: &mut Lan, address: &str) -> LabResult<Namespace> {
    let director = namespace(tag, role)?;
    lan.plug(&director, "eth0")?;
    director.addr("eth0", &format!("{address}/24"))?;
    director.no_tx_offload("eth0")?;
    director.ip(&["route", "add", "default", "via", "192.168.40.254"])?;
    Ok(director)
}

/// The one-arm labs' real servers rs1 192.168.40.12 and rs2 .13, VIP on `lo`, replies via
/// the router.
fn one_arm_real_servers(
    mode: Mode,
    tag: &str,
    lan: &mut Lan,
    vip: &str,
    setup: &RealServerSetup,
) -> LabResult<Vec<RealServerHost>> {
    let mut real_servers = Vec::new();
    for (i, rip) in ["192.168.40.12/24", "192.168.40.13/24"].iter().enumerate() {
        let rs = real_server(
            tag,
            &format!("rs{}", i + 1),
            lan,
            rip,
            "192.168.40.254",
            Some((vip, setup)),
        )?;
        if mode == Mode::Tun {
            // The decapsulated packet enters on the tunnel device while the route to the
            // client is via eth0: strict reverse-path filtering would drop it.
            rs.ns.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            rs.ns.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
        }
        real_servers.push(rs);
    }
    Ok(real_servers)
}

/// The NAT labs' real servers rs1 10.168.0.94 and rs2 .95 on `lan`, default route via the
/// director's internal address 10.168.0.90.
fn nat_real_servers(tag: &str, lan: &mut Lan) -> LabResult<Vec<RealServerHost>> {
    let mut real_servers = Vec::new();
    for (i, rip) in ["10.168.0.94/24", "10.168.0.95/24"].iter().enumerate() {
        real_servers.push(real_server(
            tag,
            &format!("rs{}", i + 1),
            lan,
            rip,
            NAT_GATEWAY,
            None,
        )?);
    }
    Ok(real_servers)
}

const DR_VIP: &str = "172.16.21.10";
const NAT_VIP: &str = "192.168.0.11";
/// The NAT real servers' gateway: the (active) director's internal address.
const NAT_GATEWAY: &str = "10.168.0.90";

fn one_arm(mode: Mode, tag: &str, setup: &RealServerSetup) -> LabResult<Topology> {
    let vip = DR_VIP;
    let mut lan = Lan::new(tag, "lan")?;
    let (client, router) = routed_client(tag, &mut lan)?;
    // The upstream router sends VIP traffic to the director.
    router.ip(&["route", "add", &format!("{vip}/32"), "via", "192.168.40.11"])?;
    let director = one_arm_director(tag, "director", &mut lan, "192.168.40.11")?;
    director.ip(&["addr", "add", &format!("{vip}/32"), "dev", "eth0"])?;
    let real_servers = one_arm_real_servers(mode, tag, &mut lan, vip, setup)?;
    Ok(Topology {
        mode,
        vip: vip.to_string(),
        client,
        client_ip: "172.16.0.100".to_string(),
        director,
        director_ifaces: vec!["eth0".to_string()],
        dip: "192.168.40.11".to_string(),
        real_servers,
        ipv6: None,
        _infrastructure: vec![router, lan.ns],
    })
}

/// A two-arm director's internal arm: `int0` on `lan` with `cidr`.
fn internal_arm(director: &Namespace, lan: &mut Lan, cidr: &str) -> LabResult<()> {
    lan.plug(director, "int0")?;
    director.addr("int0", cidr)?;
    director.no_tx_offload("int0")
}

fn two_arm(tag: &str) -> LabResult<Topology> {
    let vip = NAT_VIP;
    let mut lan = Lan::new(tag, "lan")?;
    let client = namespace(tag, "client")?;
    let director = namespace(tag, "director")?;
    veth("eth0", &client, "ext0", &director)?;
    client.addr("eth0", "192.168.0.100/24")?;
    client.no_tx_offload("eth0")?;
    director.addr("ext0", &format!("{vip}/24"))?;
    director.no_tx_offload("ext0")?;
    internal_arm(&director, &mut lan, &format!("{NAT_GATEWAY}/24"))?;
    let real_servers = nat_real_servers(tag, &mut lan)?;
    Ok(Topology {
        mode: Mode::Nat,
        vip: vip.to_string(),
        client,
        client_ip: "192.168.0.100".to_string(),
        director,
        director_ifaces: vec!["ext0".to_string(), "int0".to_string()],
        dip: NAT_GATEWAY.to_string(),
        real_servers,
        ipv6: None,
        _infrastructure: vec![lan.ns],
    })
}

/// One of the two directors of an HA lab.
#[derive(Debug)]
pub struct HaDirector {
    /// Its namespace (`director1`, `director2`).
    pub ns: Namespace,
    /// Its interfaces for xvs: one (DR) or external then internal (NAT).
    pub ifaces: Vec<String>,
    /// Its own address on the real servers' network.
    pub address: String,
}

/// An address that moves with the active director (keepalived's `virtual_ipaddress`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Floating {
    /// The address, without prefix length.
    pub address: String,
    /// The interface it goes on (the same name on both directors).
    pub dev: String,
}

/// A high-availability lab: the seed topology with two directors, active and standby,
/// between which the VIP floats (moved by keepalived: `xvs_cli::lab::ha`).
///
/// DR: the client behind the router; the router, director1 (192.168.40.11), director2
/// (192.168.40.14) and the real servers share one LAN. The router routes the VIP on-link
/// (`dev eth1`, no next hop), so it ARPs for the VIP and follows the gratuitous ARPs of
/// whichever director takes it.
///
/// NAT: the client (192.168.0.100) and both directors' `ext0` (192.168.0.1, .2) share an
/// external LAN where the VIP 192.168.0.11 floats; both directors' `int0` (10.168.0.91,
/// .92) and the real servers share the internal LAN, where the real servers' gateway
/// 10.168.0.90 floats together with the VIP.
///
/// No director holds a floating address when this returns.
#[derive(Debug)]
pub struct HaTopology {
    /// The forwarding method (DR or NAT).
    pub mode: Mode,
    /// The virtual IP.
    pub vip: String,
    /// The client's namespace.
    pub client: Namespace,
    /// The client's address.
    pub client_ip: String,
    /// The two directors.
    pub directors: Vec<HaDirector>,
    /// The addresses that float with the active director, the VIP first.
    pub floating: Vec<Floating>,
    /// The real servers.
    pub real_servers: Vec<RealServerHost>,
    /// Router and LAN bridge namespaces, kept alive until the lab is dropped.
    _infrastructure: Vec<Namespace>,
}

impl HaTopology {
    /// Builds the HA topology for `mode` (DR or NAT), tagged uniquely for this run.
    pub fn build(mode: Mode, setup: &RealServerSetup) -> LabResult<HaTopology> {
        let tag = unique_tag();
        match mode {
            Mode::Dr => ha_one_arm(&tag, setup),
            Mode::Nat => ha_two_arm(&tag),
            Mode::Tun => Err(LabError("the HA lab is built for DR and NAT only".into())),
        }
    }
}

fn ha_one_arm(tag: &str, setup: &RealServerSetup) -> LabResult<HaTopology> {
    let vip = DR_VIP;
    let mut lan = Lan::new(tag, "lan")?;
    let (client, router) = routed_client(tag, &mut lan)?;
    // On-link: the router ARPs for the VIP and so follows the active director.
    router.ip(&["route", "add", &format!("{vip}/32"), "dev", "eth1"])?;
    let mut directors = Vec::new();
    for (i, address) in ["192.168.40.11", "192.168.40.14"].iter().enumerate() {
        let ns = one_arm_director(tag, &format!("director{}", i + 1), &mut lan, address)?;
        directors.push(HaDirector {
            ns,
            ifaces: vec!["eth0".to_string()],
            address: address.to_string(),
        });
    }
    let real_servers = one_arm_real_servers(Mode::Dr, tag, &mut lan, vip, setup)?;
    Ok(HaTopology {
        mode: Mode::Dr,
        vip: vip.to_string(),
        client,
        client_ip: "172.16.0.100".to_string(),
        directors,
        floating: vec![Floating {
            address: vip.to_string(),
            dev: "eth0".to_string(),
        }],
        real_servers,
        _infrastructure: vec![router, lan.ns],
    })
}

fn ha_two_arm(tag: &str) -> LabResult<HaTopology> {
    let vip = NAT_VIP;
    let mut external = Lan::new(tag, "ext")?;
    let mut internal = Lan::new(tag, "lan")?;
    let client = namespace(tag, "client")?;
    external.plug(&client, "eth0")?;
    client.addr("eth0", "192.168.0.100/24")?;
    client.no_tx_offload("eth0")?;
    let mut directors = Vec::new();
    for (i, (ext, int)) in [
        ("192.168.0.1", "10.168.0.91"),
        ("192.168.0.2", "10.168.0.92"),
    ]
    .iter()
    .enumerate()
    {
        let ns = namespace(tag, &format!("director{}", i + 1))?;
        external.plug(&ns, "ext0")?;
        ns.addr("ext0", &format!("{ext}/24"))?;
        ns.no_tx_offload("ext0")?;
        internal_arm(&ns, &mut internal, &format!("{int}/24"))?;
        directors.push(HaDirector {
            ns,
            ifaces: vec!["ext0".to_string(), "int0".to_string()],
            address: int.to_string(),
        });
    }
    let real_servers = nat_real_servers(tag, &mut internal)?;
    Ok(HaTopology {
        mode: Mode::Nat,
        vip: vip.to_string(),
        client,
        client_ip: "192.168.0.100".to_string(),
        directors,
        floating: vec![
            Floating {
                address: vip.to_string(),
                dev: "ext0".to_string(),
            },
            Floating {
                address: NAT_GATEWAY.to_string(),
                dev: "int0".to_string(),
            },
        ],
        real_servers,
        _infrastructure: vec![external.ns, internal.ns],
    })
}

/// One director of a scale-out lab.
#[derive(Debug)]
pub struct ScaleOutDirector {
    /// Its namespace (`director1`, `director2`, ...).
    pub ns: Namespace,
    /// Its interface for xvs (and its BGP session).
    pub iface: String,
    /// Its own address on the LAN: BGP's local address and the router's next hop.
    pub address: String,
}

/// The router's address on the directors' LAN (its BGP local address).
pub const SCALE_OUT_ROUTER: &str = "192.168.40.254";
/// The directors' addresses, first `n` used.
const SCALE_OUT_DIRECTORS: [&str; 3] = ["192.168.40.11", "192.168.40.14", "192.168.40.15"];
/// The client's addresses on its network: the lab's "many clients".
pub const SCALE_OUT_CLIENTS: u8 = 10;

/// A scale-out lab: the seed LVS-DR topology with N directors (2 or 3) behind a router that
/// spreads the VIP's flows over them by ECMP.
///
/// The client holds 172.16.0.100 to .109 behind the router; the router (192.168.40.254),
/// the directors (192.168.40.11, .14, .15) and the real servers (rs1 .12, rs2 .13, VIP on
/// `lo`, replies via the router) share one LAN. The router has no route to the VIP: the
/// directors announce it over BGP (`xvs_cli::lab::scaleout`), and its kernel hashes flows
/// over the next hops by their L4 tuple (`net.ipv4.fib_multipath_hash_policy=1`).
#[derive(Debug)]
pub struct ScaleOutTopology {
    /// The virtual IP.
    pub vip: String,
    /// The client's namespace.
    pub client: Namespace,
    /// The client's addresses.
    pub client_ips: Vec<String>,
    /// The router's namespace (where the BGP daemon with ECMP runs).
    pub router: Namespace,
    /// The directors.
    pub directors: Vec<ScaleOutDirector>,
    /// The real servers.
    pub real_servers: Vec<RealServerHost>,
    /// The LAN bridge's namespace, kept alive until the lab is dropped.
    _infrastructure: Vec<Namespace>,
}

impl ScaleOutTopology {
    /// Builds the lab with `directors` directors (2 or 3), tagged uniquely for this run.
    pub fn build(directors: usize, setup: &RealServerSetup) -> LabResult<ScaleOutTopology> {
        if !(2..=SCALE_OUT_DIRECTORS.len()).contains(&directors) {
            return Err(LabError(format!(
                "the scale-out lab has 2 or 3 directors, not {directors}"
            )));
        }
        let tag = unique_tag();
        let vip = DR_VIP;
        let mut lan = Lan::new(&tag, "lan")?;
        let (client, router) = routed_client(&tag, &mut lan)?;
        let mut client_ips = vec!["172.16.0.100".to_string()];
        for k in 1..SCALE_OUT_CLIENTS {
            let ip = format!("172.16.0.{}", 100 + k);
            client.addr("eth0", &format!("{ip}/24"))?;
            client_ips.push(ip);
        }
        // ECMP over the L4 tuple, as Maglev's and Katran's routers hash.
        router.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        let mut out = Vec::new();
        for (i, address) in SCALE_OUT_DIRECTORS.iter().take(directors).enumerate() {
            let ns = one_arm_director(&tag, &format!("director{}", i + 1), &mut lan, address)?;
            out.push(ScaleOutDirector {
                ns,
                iface: "eth0".to_string(),
                address: address.to_string(),
            });
        }
        let real_servers = one_arm_real_servers(Mode::Dr, &tag, &mut lan, vip, setup)?;
        Ok(ScaleOutTopology {
            vip: vip.to_string(),
            client,
            client_ips,
            router,
            directors: out,
            real_servers,
            _infrastructure: vec![lan.ns],
        })
    }
}
