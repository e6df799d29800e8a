//! `xvs realserver start|stop|status --vip ADDR [--mode dr|tun]`: the script every LVS-DR
//! and LVS-TUN tutorial ends with, for the real servers, done once and undone exactly.
//!
//! What it applies is what the seed tutorials apply, in their order (the sysctls before
//! the address, so the VIP is never answered for by ARP in between):
//!
//! - DR: `arp_ignore=1` and `arp_announce=2` on `all`, on `lo` and on each interface
//!   (`--iface`, by default every interface with an IPv4 address), then the VIP as
//!   `VIP/32` on `lo` with the label `lo:0` (the kernel adds the local route itself, so the
//!   seeds' `route add -host VIP dev lo:0` is not needed);
//! - TUN: the tunnel device `tunl0` (`ip link add tunl0 type ipip` when the kernel has not
//!   made it; without the kernel's ipip module this is refused with one line, before
//!   anything changes), up; the same ARP sysctls, on `tunl0` too; `rp_filter=0` on `all` and
//!   `tunl0` (decapsulated packets arrive on `tunl0` while the route back to the client is
//!   elsewhere); then `VIP/32` on `tunl0`.
//!
//! Every change is recorded, with the value it replaced, in a state file (by default
//! `/run/xvs/realserver-VIP.json`, `--state` elsewhere) as soon as it is made, so `stop`
//! puts back exactly the previous values and removes only what `start` added, even after a
//! crash halfway. A `start` that fails undoes what it did and changes nothing; a second
//! `start` in the same mode re-applies what drifted and keeps the first start's record; in
//! another mode it is refused. The state file names the network namespace it was written
//! in, so a file shared by namespaces (`/run` is not per namespace) is refused, not
//! misapplied. Addresses and links go through `ip` (iproute2), as the tutorials do, and
//! sysctls through `/proc/sys`, as their `echo 1 > /proc/sys/...` lines do.
//!
//! An IPv6 VIP gets less, because IPv6 has no ARP to silence: Linux answers a Neighbour
//! Solicitation only for an address of the interface it arrived on, and takes the source of
//! its own solicitations only from the sending interface, so a VIP on `lo` or on the tunnel
//! is neither answered for nor announced. `arp_ignore`/`arp_announce` are IPv4's
//! (`net.ipv4.conf`) and are not touched, nor is anything per interface (`--iface` is only
//! checked to exist, and a host without any IPv4 address is fine):
//!
//! - DR: the VIP as `VIP/128` on `lo`, `nodad` (no label: IPv6 addresses have none). The
//!   kernel already skips duplicate address detection on `lo` and on tunnels (no neighbour
//!   discovery there), so `accept_dad` is not needed either; `nodad` keeps the address from
//!   ever being tentative, usable at once;
//! - TUN: IPVS's IPv6 tunnels are IPv6-in-IPv6 (next header 41), which a Linux real server
//!   takes off on the ip6_tunnel module's fallback device `ip6tnl0` (mode ip6ip6, any local
//!   and remote). It is created as `ip link add ip6tnl0 type ip6tnl mode ip6ip6` when the
//!   kernel has not made it (refused with one line, before anything changes, without the
//!   module), brought up, and gets `VIP/128`. IPv6 has no `rp_filter` sysctl, so nothing
//!   is turned off: only a firewall's reverse-path rule (`ip6tables -m rpfilter`, nft's
//!   `fib saddr . iif`) could drop the decapsulated packets, and that has to be loose or
//!   exempt `ip6tnl0` (xvs does not touch firewalls). An IPv6 VIP over IPv4 real-server
//!   addresses (6in4, `sit`) is not set up here.
//!
//! The state file of an IPv6 VIP is named with the address as Rust prints it (RFC 5952's
//! compressed lower case: `/run/xvs/realserver-2001:db8::10.json`), so every spelling of
//! one address finds one file; colons are ordinary in Linux file names.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// The tunnel device of LVS-TUN real servers (the kernel's ipip fallback device).
pub const TUNNEL_DEV: &str = "tunl0";

/// The tunnel device of LVS-TUN real servers of an IPv6 VIP (the kernel's ip6_tunnel
/// fallback device, IPv6-in-IPv6).
pub const TUNNEL_DEV6: &str = "ip6tnl0";

/// A real server's tunnel device: its name, the kernel module behind it, and how `ip`
/// makes it when the kernel has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    /// `tunl0` or `ip6tnl0`.
    pub dev: &'static str,
    /// The kernel module that provides it.
    pub module: &'static str,
    /// `ip link add ...`, in the mode of the kernel's own fallback device.
    pub add: &'static [&'static str],
}

/// The tunnel that carries `vip`'s packets: IPIP for IPv4, IPv6-in-IPv6 for IPv6.
pub fn tunnel(vip: IpAddr) -> Tunnel {
    match vip {
        IpAddr::V4(_) => Tunnel {
            dev: TUNNEL_DEV,
            module: "ipip",
            add: &["link", "add", TUNNEL_DEV, "type", "ipip"],
        },
        IpAddr::V6(_) => Tunnel {
            dev: TUNNEL_DEV6,
            module: "ip6_tunnel",
            add: &[
                "link",
                "add",
                TUNNEL_DEV6,
                "type",
                "ip6tnl",
                "mode",
                "ip6ip6",
            ],
        },
    }
}

/// The VIP as a host address: `VIP/32` or `VIP/128`.
pub fn host_cidr(vip: IpAddr) -> String {
    format!("{vip}/{}", host_len(vip))
}

fn host_len(vip: IpAddr) -> u8 {
    match vip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `--vip`: any IPv4 address, or an IPv6 unicast address a director can route to this
/// host. IPv6's loopback, unspecified, multicast and link-local addresses are refused, and
/// an IPv4-mapped one, which means the IPv4 VIP.
pub fn parse_vip(text: &str) -> Result<IpAddr, String> {
    let vip: IpAddr = text
        .parse()
        .map_err(|_| format!("--vip {text}: not an IPv4 or IPv6 address"))?;
    if let IpAddr::V6(v6) = vip {
        if let Some(v4) = v6.to_ipv4_mapped() {
            return Err(format!(
                "--vip {text}: an IPv4-mapped address; give the IPv4 VIP {v4}"
            ));
        }
        if v6.is_unspecified()
            || v6.is_loopback()
            || v6.is_multicast()
            || v6.is_unicast_link_local()
        {
            return Err(format!(
                "--vip {text}: not a unicast address a director can route here"
            ));
        }
    }
    Ok(vip)
}

/// LVS-DR or LVS-TUN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RsMode {
    /// Direct routing: the VIP on `lo`.
    Dr,
    /// IP tunnelling: the VIP on `tunl0` (`ip6tnl0` for IPv6).
    Tun,
}

impl fmt::Display for RsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RsMode::Dr => "dr",
            RsMode::Tun => "tun",
        })
    }
}

impl std::str::FromStr for RsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dr" => Ok(RsMode::Dr),
            "tun" => Ok(RsMode::Tun),
            other => Err(format!("unknown mode '{other}' (dr or tun)")),
        }
    }
}

/// What `xvs realserver` was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealServerArgs {
    /// `--vip`.
    pub vip: IpAddr,
    /// `--mode`.
    pub mode: RsMode,
    /// `--iface`; empty: every interface with an IPv4 address but `lo` and `tunl0`. Not
    /// used for an IPv6 VIP, which needs nothing per interface.
    pub ifaces: Vec<String>,
    /// `--state`; `None`: `/run/xvs/realserver-VIP.json`.
    pub state: Option<PathBuf>,
}

impl RealServerArgs {
    /// The state file (the VIP as Rust prints it, for IPv6 RFC 5952's form).
    pub fn state_path(&self) -> PathBuf {
        self.state
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/run/xvs/realserver-{}.json", self.vip)))
    }

    /// `--iface`, or by default for an IPv4 VIP every interface with an IPv4 address; an
    /// IPv6 VIP has no default (it needs none, and a host may have no IPv4 at all).
    fn interfaces(&self) -> RsResult<Vec<String>> {
        if self.ifaces.is_empty() && self.vip.is_ipv4() {
            default_ifaces()
        } else {
            Ok(self.ifaces.clone())
        }
    }
}

/// A refusal: one line, the caller prefixes `xvs realserver: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RsError(pub String);

type RsResult<T> = Result<T, RsError>;

/// A sysctl under `net.ipv4.conf`: the device (`all`, `lo`, `eth0`) and the setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfSysctl {
    /// `all`, `lo`, an interface.
    pub dev: String,
    /// `arp_ignore`, `arp_announce`, `rp_filter`.
    pub name: String,
}

impl ConfSysctl {
    fn new(dev: &str, name: &str) -> ConfSysctl {
        ConfSysctl {
            dev: dev.to_string(),
            name: name.to_string(),
        }
    }

    fn path(&self) -> PathBuf {
        Path::new("/proc/sys/net/ipv4/conf")
            .join(&self.dev)
            .join(&self.name)
    }

    /// The current value.
    pub fn read(&self) -> RsResult<String> {
        std::fs::read_to_string(self.path())
            .map(|v| v.trim().to_string())
            .map_err(|e| RsError(format!("cannot read {self}: {e}")))
    }

    fn write(&self, value: &str) -> RsResult<()> {
        std::fs::write(self.path(), format!("{value}\n"))
            .map_err(|e| RsError(format!("cannot set {self}={value}: {e}")))
    }
}

impl fmt::Display for ConfSysctl {
    /// sysctl's spelling; a dot in an interface name (a VLAN) becomes a slash, as there.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "net.ipv4.conf.{}.{}",
            self.dev.replace('.', "/"),
            self.name
        )
    }
}

/// One thing `start` makes true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The VIP's tunnel device ([`tunnel`]) exists and is up.
    Tunnel,
    /// A sysctl holds `value`.
    Sysctl(ConfSysctl, String),
    /// The VIP is on `dev` (`label`: the alias name the tutorials give it).
    Address {
        /// `lo`, `tunl0` or `ip6tnl0`.
        dev: String,
        /// `lo:0` for IPv4 DR.
        label: Option<String>,
    },
}

/// What `start` applies for `vip` in `mode`, in order: [`plan`] or [`plan6`].
pub fn plan_for(vip: IpAddr, mode: RsMode, ifaces: &[String]) -> Vec<Step> {
    match vip {
        IpAddr::V4(_) => plan(mode, ifaces),
        IpAddr::V6(_) => plan6(mode),
    }
}

/// What `start` applies for an IPv6 VIP in `mode`: no sysctls (see the module doc), so no
/// interfaces; the tunnel first, so a kernel without ip6_tunnel is refused before the VIP.
pub fn plan6(mode: RsMode) -> Vec<Step> {
    let mut steps = Vec::new();
    let dev = match mode {
        RsMode::Dr => "lo",
        RsMode::Tun => {
            steps.push(Step::Tunnel);
            TUNNEL_DEV6
        }
    };
    steps.push(Step::Address {
        dev: dev.into(),
        label: None,
    });
    steps
}

/// What `start` applies for an IPv4 VIP in `mode`, in order, with `ifaces` the real
/// server's interfaces.
pub fn plan(mode: RsMode, ifaces: &[String]) -> Vec<Step> {
    let mut devs: Vec<String> = vec!["all".into(), "lo".into()];
    if mode == RsMode::Tun {
        devs.push(TUNNEL_DEV.into());
    }
    devs.extend(
        ifaces
            .iter()
            .filter(|i| !devs.contains(i))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let mut steps = Vec::new();
    if mode == RsMode::Tun {
        steps.push(Step::Tunnel);
    }
    for dev in &devs {
        steps.push(Step::Sysctl(ConfSysctl::new(dev, "arp_ignore"), "1".into()));
        steps.push(Step::Sysctl(
            ConfSysctl::new(dev, "arp_announce"),
            "2".into(),
        ));
    }
    match mode {
        RsMode::Dr => steps.push(Step::Address {
            dev: "lo".into(),
            label: Some("lo:0".into()),
        }),
        RsMode::Tun => {
            for dev in ["all", TUNNEL_DEV] {
                steps.push(Step::Sysctl(ConfSysctl::new(dev, "rp_filter"), "0".into()));
            }
            steps.push(Step::Address {
                dev: TUNNEL_DEV.into(),
                label: None,
            });
        }
    }
    steps
}

/// One change made, with what it replaced: enough to undo it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Change {
    /// The tunnel device: created by xvs or found; up before or not.
    Tunnel {
        /// The device.
        dev: String,
        /// xvs created it (stop deletes it).
        created: bool,
        /// It was up already (stop leaves it up).
        was_up: bool,
    },
    /// A sysctl set to `value`; it held `previous`.
    Sysctl {
        /// Which.
        sysctl: ConfSysctl,
        /// What xvs set.
        value: String,
        /// What it was.
        previous: String,
    },
    /// The VIP on a device.
    Address {
        /// The device.
        dev: String,
        /// The label given.
        label: Option<String>,
        /// xvs added it (stop removes it); false: it was there already.
        added: bool,
    },
}

impl Change {
    /// Whether this change records `step`.
    fn records(&self, step: &Step) -> bool {
        match (self, step) {
            (Change::Tunnel { .. }, Step::Tunnel) => true,
            (Change::Sysctl { sysctl, .. }, Step::Sysctl(s, _)) => sysctl == s,
            (Change::Address { dev, .. }, Step::Address { dev: d, .. }) => dev == d,
            _ => false,
        }
    }
}

/// The state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The VIP (files written before IPv6 hold an IPv4 one, spelt the same).
    pub vip: IpAddr,
    /// The mode.
    pub mode: RsMode,
    /// The network namespace it was written in (`net:[4026531840]`).
    pub netns: String,
    /// The changes, in the order they were made.
    pub changes: Vec<Change>,
}

impl State {
    fn load(path: &Path) -> RsResult<Option<State>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RsError(format!("{}: {e}", path.display()))),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            RsError(format!(
                "{}: not an xvs realserver state: {e}",
                path.display()
            ))
        })
    }

    /// Written whole to a temporary file, then renamed: a crash leaves the old or the new.
    fn save(&self, path: &Path) -> RsResult<()> {
        let fail = |e: std::io::Error| RsError(format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(&tmp, text + "\n").map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }
}

/// `ip ARGS`; its stdout, or its stderr as the error.
fn ip(args: &[&str]) -> RsResult<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| RsError(format!("cannot run ip (iproute2): {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(RsError(format!(
            "`ip {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// This process's network namespace.
fn netns() -> String {
    std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Interfaces with an address of `family` (`-4`, `-6`), with each address (`ip -j -4 addr
/// show`).
fn addresses(family: &str, dev: Option<&str>) -> RsResult<Vec<(String, IpAddr, u8)>> {
    let mut args = vec!["-j", family, "addr", "show"];
    if let Some(dev) = dev {
        args.extend(["dev", dev]);
    }
    let text = ip(&args)?;
    let links: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| RsError(format!("cannot read `ip -j addr`: {e}")))?;
    let mut out = Vec::new();
    for link in links.as_array().into_iter().flatten() {
        let name = link["ifname"].as_str().unwrap_or_default();
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if let (Some(local), Some(len)) = (a["local"].as_str(), a["prefixlen"].as_u64())
                && let Ok(addr) = local.parse()
            {
                out.push((name.to_string(), addr, len as u8));
            }
        }
    }
    Ok(out)
}

fn has_vip(dev: &str, vip: IpAddr) -> RsResult<bool> {
    let family = if vip.is_ipv4() { "-4" } else { "-6" };
    Ok(addresses(family, Some(dev))?
        .iter()
        .any(|&(_, a, len)| a == vip && len == host_len(vip)))
}

/// Why an IPv6 address cannot go on `dev`: IPv6 off there (`disable_ipv6=1`, which xvs
/// does not turn on behind the operator's back) or in the whole kernel.
fn ipv6_off(dev: &str) -> Option<String> {
    if !Path::new("/proc/sys/net/ipv6").exists() {
        return Some("this kernel has IPv6 disabled (no /proc/sys/net/ipv6)".into());
    }
    let path = Path::new("/proc/sys/net/ipv6/conf")
        .join(dev)
        .join("disable_ipv6");
    let off = std::fs::read_to_string(path).is_ok_and(|v| v.trim() == "1");
    off.then(|| {
        format!(
            "IPv6 is disabled on {dev} (net.ipv6.conf.{}.disable_ipv6=1)",
            dev.replace('.', "/")
        )
    })
}

/// Whether `dev` exists, and whether it is up.
fn link(dev: &str) -> Option<bool> {
    let text = ip(&["-j", "link", "show", "dev", dev]).ok()?;
    let links: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
    let flags = links[0]["flags"].as_array()?;
    Some(flags.iter().any(|f| f == "UP"))
}

/// The default `--iface`: every interface with an IPv4 address, but `lo` and `tunl0`.
fn default_ifaces() -> RsResult<Vec<String>> {
    let mut ifaces = Vec::new();
    for (dev, _, _) in addresses("-4", None)? {
        if dev != "lo" && dev != TUNNEL_DEV && !ifaces.contains(&dev) {
            ifaces.push(dev);
        }
    }
    Ok(ifaces)
}

/// Makes `step` true; the record of what it found.
fn apply(step: &Step, vip: IpAddr) -> RsResult<Change> {
    match step {
        Step::Tunnel => {
            let Tunnel { dev, module, add } = tunnel(vip);
            let (created, was_up) = match link(dev) {
                Some(up) => (false, up),
                None => {
                    if let Err(RsError(why)) = ip(add) {
                        return Err(RsError(if why.contains("Unknown device type") {
                            format!(
                                "--mode tun needs the kernel's {module} module for {dev}, and this kernel has none ({why})"
                            )
                        } else {
                            why
                        }));
                    }
                    (true, false)
                }
            };
            if !was_up && let Err(e) = ip(&["link", "set", dev, "up"]) {
                if created {
                    let _ = ip(&["link", "del", dev]);
                }
                return Err(e);
            }
            Ok(Change::Tunnel {
                dev: dev.into(),
                created,
                was_up,
            })
        }
        Step::Sysctl(sysctl, value) => {
            let previous = sysctl.read()?;
            if previous != *value {
                sysctl.write(value)?;
            }
            Ok(Change::Sysctl {
                sysctl: sysctl.clone(),
                value: value.clone(),
                previous,
            })
        }
        Step::Address { dev, label } => {
            let present = has_vip(dev, vip)?;
            if !present {
                let cidr = host_cidr(vip);
                let mut args = vec!["addr", "add", cidr.as_str(), "dev", dev.as_str()];
                if let Some(label) = label {
                    args.extend(["label", label.as_str()]);
                }
                if vip.is_ipv6() {
                    if let Some(why) = ipv6_off(dev) {
                        return Err(RsError(format!("{vip} cannot go on {dev}: {why}")));
                    }
                    args.push("nodad");
                }
                ip(&args)?;
            }
            Ok(Change::Address {
                dev: dev.clone(),
                label: label.clone(),
                added: !present,
            })
        }
    }
}

/// Whether what `change` made is still so.
fn in_place(change: &Change, vip: IpAddr) -> bool {
    match change {
        Change::Tunnel { dev, .. } => link(dev) == Some(true),
        Change::Sysctl { sysctl, value, .. } => sysctl.read().is_ok_and(|v| v == *value),
        Change::Address { dev, .. } => has_vip(dev, vip).unwrap_or(false),
    }
}

/// Undoes `change`: the previous value back, what was added removed.
fn undo(change: &Change, vip: IpAddr) -> RsResult<()> {
    match change {
        Change::Tunnel {
            dev,
            created,
            was_up,
        } => {
            if *created {
                ip(&["link", "del", dev]).map(|_| ())
            } else if !was_up {
                ip(&["link", "set", dev, "down"]).map(|_| ())
            } else {
                Ok(())
            }
        }
        Change::Sysctl {
            sysctl, previous, ..
        } => sysctl.write(previous),
        Change::Address { dev, added, .. } => {
            if *added && has_vip(dev, vip)? {
                ip(&["addr", "del", &host_cidr(vip), "dev", dev]).map(|_| ())
            } else {
                Ok(())
            }
        }
    }
}

/// Reads the state file, refusing one of another VIP or network namespace.
fn load_state(args: &RealServerArgs, path: &Path) -> RsResult<Option<State>> {
    let Some(state) = State::load(path)? else {
        return Ok(None);
    };
    if state.vip != args.vip {
        return Err(RsError(format!(
            "{} is the state of {}, not {}",
            path.display(),
            state.vip,
            args.vip
        )));
    }
    let here = netns();
    if state.netns != here {
        return Err(RsError(format!(
            "{} was written in network namespace {}, this is {here}: give each namespace its own --state",
            path.display(),
            state.netns
        )));
    }
    Ok(Some(state))
}

/// `start`: applies the plan, recording each change as it is made. Returns the line to
/// print.
pub fn start(args: &RealServerArgs) -> RsResult<String> {
    let path = args.state_path();
    let existing = load_state(args, &path)?;
    if let Some(state) = &existing
        && state.mode != args.mode
    {
        return Err(RsError(format!(
            "{} is already set up for {} ({}): run `xvs realserver stop --vip {}` first",
            args.vip,
            state.mode,
            path.display(),
            args.vip
        )));
    }
    let ifaces = args.interfaces()?;
    for iface in &ifaces {
        if link(iface).is_none() {
            return Err(RsError(format!("--iface {iface}: no such interface")));
        }
    }
    let again = existing.is_some();
    let mut state = existing.clone().unwrap_or(State {
        vip: args.vip,
        mode: args.mode,
        netns: netns(),
        changes: Vec::new(),
    });
    let mut made = Vec::new();
    let mut fixed = 0;
    for step in plan_for(args.vip, args.mode, &ifaces) {
        let result = match state.changes.iter().find(|c| c.records(&step)) {
            // Recorded by the first start: make it so again, keep what it found.
            Some(recorded) if in_place(recorded, args.vip) => continue,
            Some(_) => apply(&step, args.vip).map(|_| {
                fixed += 1;
            }),
            None => apply(&step, args.vip).and_then(|change| {
                made.push(change.clone());
                state.changes.push(change);
                state.save(&path)
            }),
        };
        if let Err(e) = result {
            roll_back(&made, args.vip);
            match &existing {
                Some(old) => old.save(&path)?,
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
            return Err(e);
        }
    }
    Ok(match (again, made.len() + fixed) {
        (true, 0) => format!(
            "{} ({}) already started; nothing changed",
            args.vip, args.mode
        ),
        (true, n) => format!(
            "{} ({}) already started; {n} setting(s) put back",
            args.vip, args.mode
        ),
        (false, _) => format!(
            "{} ({}) started: {} change(s) recorded in {}",
            args.vip,
            args.mode,
            state.changes.len(),
            path.display()
        ),
    })
}

/// Undoes `changes` in reverse order, as far as it can.
fn roll_back(changes: &[Change], vip: IpAddr) {
    for change in changes.iter().rev() {
        let _ = undo(change, vip);
    }
}

/// `stop`: undoes every recorded change, last first, and removes the state file.
pub fn stop(args: &RealServerArgs) -> RsResult<String> {
    let path = args.state_path();
    let Some(state) = load_state(args, &path)? else {
        return Err(RsError(format!(
            "{} is not started: no state file {}",
            args.vip,
            path.display()
        )));
    };
    let mut failed = Vec::new();
    for change in state.changes.iter().rev() {
        if let Err(RsError(why)) = undo(change, args.vip) {
            failed.push(why);
        }
    }
    if !failed.is_empty() {
        return Err(RsError(format!(
            "{} not fully stopped (state kept in {}): {}",
            args.vip,
            path.display(),
            failed.join("; ")
        )));
    }
    std::fs::remove_file(&path).map_err(|e| RsError(format!("{}: {e}", path.display())))?;
    Ok(format!(
        "{} ({}) stopped: {} change(s) undone",
        args.vip,
        state.mode,
        state.changes.len()
    ))
}

/// `status`: what is applied. The text and the exit code: 0 started and in place, 1
/// started but changed since, 3 not started (as an init script's `status`).
pub fn status(args: &RealServerArgs) -> RsResult<(String, u8)> {
    let path = args.state_path();
    let state = load_state(args, &path)?;
    let mut out = String::new();
    let mut drifted = false;
    match &state {
        Some(state) => {
            out.push_str(&format!(
                "{} ({}): started, state {}\n",
                args.vip,
                state.mode,
                path.display()
            ));
            for change in &state.changes {
                let ok = in_place(change, args.vip);
                drifted |= !ok;
                out.push_str(&status_line(change, args.vip, ok));
            }
        }
        None => {
            out.push_str(&format!(
                "{} ({}): not started (no state {})\n",
                args.vip,
                args.mode,
                path.display()
            ));
            for step in plan_for(args.vip, args.mode, &args.interfaces()?) {
                out.push_str(&match step {
                    Step::Tunnel => format!(
                        "  link     {:<40} {}\n",
                        tunnel(args.vip).dev,
                        if link(tunnel(args.vip).dev).is_some() {
                            "present"
                        } else {
                            "absent"
                        }
                    ),
                    Step::Sysctl(s, want) => format!(
                        "  sysctl   {:<40} {:<8} (start sets {want})\n",
                        s.to_string(),
                        s.read().unwrap_or_else(|_| "-".into())
                    ),
                    Step::Address { dev, .. } => format!(
                        "  address  {:<40} {}\n",
                        format!("{} dev {dev}", host_cidr(args.vip)),
                        if has_vip(&dev, args.vip).unwrap_or(false) {
                            "present"
                        } else {
                            "absent"
                        }
                    ),
                });
            }
        }
    }
    let code = match (&state, drifted) {
        (None, _) => 3,
        (Some(_), true) => 1,
        (Some(_), false) => 0,
    };
    Ok((out, code))
}

fn status_line(change: &Change, vip: IpAddr, ok: bool) -> String {
    let changed = if ok { "" } else { "  CHANGED since start" };
    match change {
        Change::Tunnel { dev, created, .. } => format!(
            "  link     {dev:<40} {:<8} {}{changed}\n",
            if ok { "up" } else { "down" },
            if *created { "created by xvs" } else { "found" }
        ),
        Change::Sysctl {
            sysctl,
            value,
            previous,
        } => format!(
            "  sysctl   {:<40} {:<8} was {previous}{changed}\n",
            sysctl.to_string(),
            if ok {
                value.clone()
            } else {
                sysctl.read().unwrap_or_else(|_| "-".into())
            }
        ),
        Change::Address { dev, added, .. } => format!(
            "  address  {:<40} {:<8} {}{changed}\n",
            format!("{} dev {dev}", host_cidr(vip)),
            if ok { "present" } else { "absent" },
            if *added { "added by xvs" } else { "found" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysctls(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Sysctl(k, v) => Some(format!("{k}={v}")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn dr_applies_the_seeds_sysctls_before_the_vip_on_lo() {
        let steps = plan(RsMode::Dr, &["eth1".to_string()]);
        assert_eq!(
            sysctls(&steps),
            [
                "net.ipv4.conf.all.arp_ignore=1",
                "net.ipv4.conf.all.arp_announce=2",
                "net.ipv4.conf.lo.arp_ignore=1",
                "net.ipv4.conf.lo.arp_announce=2",
                "net.ipv4.conf.eth1.arp_ignore=1",
                "net.ipv4.conf.eth1.arp_announce=2",
            ]
        );
        assert_eq!(
            steps.last(),
            Some(&Step::Address {
                dev: "lo".into(),
                label: Some("lo:0".into())
            }),
            "the address comes last"
        );
        assert!(!steps.contains(&Step::Tunnel));
    }

    #[test]
    fn tun_makes_the_tunnel_first_and_turns_rp_filter_off() {
        let steps = plan(RsMode::Tun, &["eth0".to_string(), "lo".to_string()]);
        assert_eq!(steps[0], Step::Tunnel, "refused before anything changes");
        let s = sysctls(&steps);
        assert!(s.contains(&"net.ipv4.conf.tunl0.arp_ignore=1".to_string()));
        assert!(s.contains(&"net.ipv4.conf.all.rp_filter=0".to_string()));
        assert!(s.contains(&"net.ipv4.conf.tunl0.rp_filter=0".to_string()));
        assert_eq!(
            s.iter().filter(|k| k.contains(".lo.")).count(),
            2,
            "lo once"
        );
        assert_eq!(
            steps.last(),
            Some(&Step::Address {
                dev: "tunl0".into(),
                label: None
            })
        );
    }

    #[test]
    fn sysctl_names_are_sysctls_spelling() {
        let vlan = ConfSysctl::new("eth0.100", "arp_ignore");
        assert_eq!(vlan.to_string(), "net.ipv4.conf.eth0/100.arp_ignore");
        assert_eq!(
            vlan.path(),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/arp_ignore")
        );
    }

    #[test]
    fn state_round_trips_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("rs.json");
        let state = State {
            vip: "172.16.21.10".parse().unwrap(),
            mode: RsMode::Dr,
            netns: "net:[1]".into(),
            changes: vec![
                Change::Sysctl {
                    sysctl: ConfSysctl::new("all", "arp_ignore"),
                    value: "1".into(),
                    previous: "0".into(),
                },
                Change::Address {
                    dev: "lo".into(),
                    label: Some("lo:0".into()),
                    added: true,
                },
            ],
        };
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), Some(state));
        assert_eq!(State::load(&dir.path().join("none.json")).unwrap(), None);
        std::fs::write(&path, "{}").unwrap();
        let e = State::load(&path).unwrap_err().0;
        assert!(e.contains("not an xvs realserver state"), "{e}");
    }

    #[test]
    fn ipv6_dr_is_the_vip_on_lo_alone() {
        let vip: IpAddr = "2001:db8:21::10".parse().unwrap();
        let steps = plan_for(vip, RsMode::Dr, &["eth1".to_string()]);
        assert_eq!(
            steps,
            [Step::Address {
                dev: "lo".into(),
                label: None
            }],
            "no ARP sysctls, nothing per interface, no label"
        );
        assert_eq!(host_cidr(vip), "2001:db8:21::10/128");
        // An IPv4 VIP still gets the whole seed plan.
        let v4 = plan_for("172.16.21.10".parse().unwrap(), RsMode::Dr, &[]);
        assert_eq!(v4, plan(RsMode::Dr, &[]));
        assert_eq!(sysctls(&v4).len(), 4);
    }

    #[test]
    fn ipv6_tun_is_ip6tnl0_first_then_the_vip_and_no_rp_filter() {
        let vip: IpAddr = "2001:db8:21::10".parse().unwrap();
        let steps = plan_for(vip, RsMode::Tun, &["eth0".to_string()]);
        assert_eq!(
            steps,
            [
                Step::Tunnel,
                Step::Address {
                    dev: TUNNEL_DEV6.into(),
                    label: None
                }
            ]
        );
        let t = tunnel(vip);
        assert_eq!((t.dev, t.module), ("ip6tnl0", "ip6_tunnel"));
        assert_eq!(
            t.add.join(" "),
            "link add ip6tnl0 type ip6tnl mode ip6ip6",
            "the mode of the kernel's own fallback device"
        );
        let t4 = tunnel("172.16.21.10".parse().unwrap());
        assert_eq!(t4.add.join(" "), "link add tunl0 type ipip");
        assert_eq!(t4.module, "ipip");
    }

    #[test]
    fn ipv6_state_file_is_named_by_the_compressed_address() {
        let args = |vip: &str| RealServerArgs {
            vip: parse_vip(vip).unwrap(),
            mode: RsMode::Dr,
            ifaces: Vec::new(),
            state: None,
        };
        let want = Path::new("/run/xvs/realserver-2001:db8:21::10.json");
        assert_eq!(args("2001:db8:21::10").state_path(), want);
        assert_eq!(args("2001:DB8:21:0:0:0:0:10").state_path(), want);
        assert_eq!(
            args("172.16.21.10").state_path(),
            Path::new("/run/xvs/realserver-172.16.21.10.json")
        );
        // IPv6 needs no default interfaces, so none are looked up (an IPv6-only host has
        // no IPv4 address to find them by).
        assert_eq!(
            args("2001:db8:21::10").interfaces().unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn vip_parsing_refuses_garbage_and_non_unicast_ipv6_with_one_line() {
        assert_eq!(
            parse_vip("172.16.21.10"),
            Ok(IpAddr::from([172, 16, 21, 10]))
        );
        assert!(parse_vip("2001:db8::10").unwrap().is_ipv6());
        for (text, why) in [
            ("garbage", "not an IPv4 or IPv6 address"),
            ("172.16.21.10/32", "not an IPv4 or IPv6 address"),
            ("[2001:db8::10]", "not an IPv4 or IPv6 address"),
            (
                "::ffff:172.16.21.10",
                "IPv4-mapped address; give the IPv4 VIP 172.16.21.10",
            ),
            ("::", "not a unicast address"),
            ("::1", "not a unicast address"),
            ("ff02::1", "not a unicast address"),
            ("fe80::10", "not a unicast address"),
        ] {
            let e = parse_vip(text).unwrap_err();
            assert!(e.starts_with(&format!("--vip {text}: ")), "{e}");
            assert!(e.contains(why), "{text}: {e}");
            assert_eq!(e.lines().count(), 1);
        }
    }

    #[test]
    fn ipv6_state_round_trips_and_ipv4_files_from_before_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rs6.json");
        let state = State {
            vip: "2001:db8:21::10".parse().unwrap(),
            mode: RsMode::Tun,
            netns: "net:[1]".into(),
            changes: vec![
                Change::Tunnel {
                    dev: TUNNEL_DEV6.into(),
                    created: true,
                    was_up: false,
                },
                Change::Address {
                    dev: TUNNEL_DEV6.into(),
                    label: None,
                    added: true,
                },
            ],
        };
        state.save(&path).unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains(r#""vip": "2001:db8:21::10""#)
        );
        assert_eq!(State::load(&path).unwrap(), Some(state));
        // Written by the IPv4-only xvs, whose vip was an Ipv4Addr.
        let old = r#"{
  "vip": "172.16.21.10",
  "mode": "dr",
  "netns": "net:[4026531840]",
  "changes": [
    {"kind": "sysctl", "sysctl": {"dev": "all", "name": "arp_ignore"}, "value": "1", "previous": "0"},
    {"kind": "address", "dev": "lo", "label": "lo:0", "added": true}
  ]
}"#;
        std::fs::write(&path, old).unwrap();
        let loaded = State::load(&path).unwrap().unwrap();
        assert_eq!(loaded.vip, IpAddr::from([172, 16, 21, 10]));
        assert_eq!(loaded.changes.len(), 2);
    }

    #[test]
    fn status_lines_print_an_ipv6_vip_as_ipv4_is_printed() {
        let change = Change::Address {
            dev: "lo".into(),
            label: None,
            added: true,
        };
        assert_eq!(
            status_line(&change, "2001:db8:21::10".parse().unwrap(), true),
            "  address  2001:db8:21::10/128 dev lo               present  added by xvs\n"
        );
        assert_eq!(
            status_line(&change, "172.16.21.10".parse().unwrap(), false),
            "  address  172.16.21.10/32 dev lo                   absent   added by xvs  CHANGED since start\n"
        );
    }
}
