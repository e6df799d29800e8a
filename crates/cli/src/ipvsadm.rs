//! ipvsadm's command line, parsed into a typed [`Command`].
//!
//! The syntax, defaults and error lines are ipvsadm 1.31's (ipvsadm.c `parse_options`,
//! `process_options`, `parse_service`, `generic_opt_check` and its command/option table,
//! `parse_sched_flags`, the tunnel options of 1.30): `-p` alone is 300 s, the scheduler
//! defaults to wlc, the method to `-g`, the weight to 1, a real server without a port takes
//! the virtual port, and DR/TUN real servers always use the virtual port. Short options
//! cluster (`-Ln`, `-At vip:80`), long ones take `--opt value` or `--opt=value`, and the
//! command may come anywhere on the line (ipvsadm wants it first; accepting more breaks no
//! script). A parse error is one line and an exit status: 2 for ipvsadm's `fail(2, ...)`,
//! 255 for its popt errors and "Try ... -h".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xvs_dataplane::service::spec::{
    DEFAULT_PERSISTENCE_SECS, DestSpec, ForwardMethod, PersistenceSpec, Protocol, ServiceAddr,
    ServiceSpec,
};
use xvs_dataplane::sync::Role;
use xvs_sched::{SchedError, SchedFlags};

use crate::director::{DaemonArgs, Edit};
use crate::listing::{ListFormat, Timeouts};
use crate::names::Names;

/// The longest timeout ipvsadm accepts: `MAX_TIMEOUT (86400*31)`, 31 days.
pub const MAX_TIMEOUT: u32 = 86_400 * 31;

/// What one ipvsadm command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `-A -E -D -C -a -e -d`.
    Edit(Edit),
    /// `-L`/`-l`.
    List(ListCommand),
    /// `-S [-n]`.
    Save {
        /// `-n`.
        numeric: bool,
    },
    /// `-R`: commands from standard input.
    Restore,
    /// `-Z [-t|u|f service]`.
    Zero {
        /// The one service, or all.
        service: Option<ServiceAddr>,
    },
    /// `--set tcp tcpfin udp` (0 keeps a value).
    SetTimeouts(Timeouts),
    /// `--start-daemon master|backup [--mcast-interface IF] [--syncid N] ...`.
    StartDaemon {
        /// Which daemon.
        role: Role,
        /// Its settings as given (the daemon fills in IPVS's defaults).
        args: DaemonArgs,
    },
    /// `--stop-daemon master|backup`.
    StopDaemon {
        /// Which daemon.
        role: Role,
    },
    /// `-h`.
    Help,
    /// `-v`.
    Version,
}

/// `-L` with its modifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListCommand {
    /// What to list.
    pub what: ListWhat,
    /// How.
    pub format: ListFormat,
}

/// The subject of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListWhat {
    /// Every service.
    All,
    /// `-t/-u/-f`: one service.
    Service(ServiceAddr),
    /// `-c`.
    Connections,
    /// `--timeout`.
    Timeouts,
    /// `--daemon`: the sync daemons.
    Daemon,
}

/// A refused command line: ipvsadm's message and exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// One line, no newline.
    pub message: String,
    /// The exit status ipvsadm uses for it.
    pub exit_code: i32,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

/// ipvsadm's `fail(2, ...)`.
fn fail(message: impl Into<String>) -> ParseError {
    ParseError {
        message: message.into(),
        exit_code: 2,
    }
}

/// popt's errors and `tryhelp_exit(argv[0], -1)`: exit status 255.
fn popt(message: impl Into<String>) -> ParseError {
    ParseError {
        message: message.into(),
        exit_code: 255,
    }
}

fn try_help(program: &str) -> ParseError {
    popt(format!(
        "Try `{program} -h' or '{program} --help' for more information."
    ))
}

/// The commands, in ipvsadm's `cmdnames` order (rows of [`COMMANDS_V_OPTIONS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Add,
    EditSvc,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    Timeout,
    StartDaemon,
    StopDaemon,
    Restore,
    Save,
    Zero,
}

const CMD_NAMES: [&str; 14] = [
    "add-service",
    "edit-service",
    "delete-service",
    "flush",
    "list",
    "add-server",
    "delete-server",
    "edit-server",
    "set",
    "start-daemon",
    "stop-daemon",
    "restore",
    "save",
    "zero",
];

/// Option indices (ipvsadm's `OPTC_*`), naming the columns of [`COMMANDS_V_OPTIONS`].
mod opt {
    pub const NUMERIC: usize = 0;
    pub const CONNECTION: usize = 1;
    pub const SERVICE: usize = 2;
    pub const SCHEDULER: usize = 3;
    pub const PERSISTENT: usize = 4;
    pub const NETMASK: usize = 5;
    pub const SERVER: usize = 6;
    pub const FORWARD: usize = 7;
    pub const WEIGHT: usize = 8;
    pub const UTHRESHOLD: usize = 9;
    pub const LTHRESHOLD: usize = 10;
    pub const MCAST: usize = 11;
    pub const TIMEOUT: usize = 12;
    pub const DAEMON: usize = 13;
    pub const STATS: usize = 14;
    pub const RATE: usize = 15;
    pub const THRESHOLDS: usize = 16;
    pub const PERSISTENTCONN: usize = 17;
    pub const NOSORT: usize = 18;
    pub const SYNCID: usize = 19;
    pub const EXACT: usize = 20;
    pub const ONEPACKET: usize = 21;
    pub const PE: usize = 22;
    pub const SCHED_FLAGS: usize = 23;
    pub const MCAST_GROUP: usize = 24;
    pub const MCAST_PORT: usize = 25;
    pub const MCAST_TTL: usize = 26;
    pub const SYNC_MAXLEN: usize = 27;
    pub const TUN_INFO: usize = 28;
    pub const TUN_TYPE: usize = 29;
    pub const TUN_PORT: usize = 30;
    pub const TUN_NOCSUM: usize = 31;
    pub const TUN_CSUM: usize = 32;
    pub const TUN_REMCSUM: usize = 33;
    pub const COUNT: usize = 34;
}

const OPT_NAMES: [&str; opt::COUNT] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "mcast-interface",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "syncid",
    "exact",
    "ops",
    "pe",
    "sched-flags",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
];

/// ipvsadm's `commands_v_options`: '+' compulsory, 'x' illegal, '1' exclusive, ' ' optional.
/// Columns: -n -c svc -s -p -M -r fwd -w -x -y mc tot dmn st rt thr pc srt sid ex ops pe -b
/// grp port ttl size tinf type tprt nocs csum remc.
const COMMANDS_V_OPTIONS: [&[u8; opt::COUNT]; 14] = [
    b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx", // add-service
    b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx", // edit-service
    b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // delete-service
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // flush
    b" 11xxxxxxxxx11       xxxxxxx xxxxx", // list
    b"xx+xxx+    xxxxxxxxxxxxxxxxxx     ", // add-server
    b"xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx", // delete-server
    b"xx+xxx+    xxxxxxxxxxxxxxxxxx     ", // edit-server
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // set
    b"xxxxxxxxxxx xxxxxxx xxxx    xxxxxx", // start-daemon
    b"xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx", // stop-daemon
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // restore
    b" xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // save
    b"xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // zero
];

/// How an option takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg {
    None,
    Required,
    /// popt's `POPT_ARGFLAG_OPTIONAL`: the next word, unless it starts with '-'.
    Optional,
}

/// Every option ipvsadm 1.31 knows: (long name, short name, argument, tag).
const OPTIONS: &[(&str, char, Arg, Tag)] = &[
    ("add-service", 'A', Arg::None, Tag::Cmd(Cmd::Add)),
    ("edit-service", 'E', Arg::None, Tag::Cmd(Cmd::EditSvc)),
    ("delete-service", 'D', Arg::None, Tag::Cmd(Cmd::Del)),
    ("clear", 'C', Arg::None, Tag::Cmd(Cmd::Flush)),
    ("list", 'L', Arg::None, Tag::Cmd(Cmd::List)),
    ("list", 'l', Arg::None, Tag::Cmd(Cmd::List)),
    ("zero", 'Z', Arg::None, Tag::Cmd(Cmd::Zero)),
    ("add-server", 'a', Arg::None, Tag::Cmd(Cmd::AddDest)),
    ("edit-server", 'e', Arg::None, Tag::Cmd(Cmd::EditDest)),
    ("delete-server", 'd', Arg::None, Tag::Cmd(Cmd::DelDest)),
    ("set", '\0', Arg::None, Tag::Cmd(Cmd::Timeout)),
    ("help", 'h', Arg::None, Tag::Help),
    ("version", 'v', Arg::None, Tag::Version),
    ("restore", 'R', Arg::None, Tag::Cmd(Cmd::Restore)),
    ("save", 'S', Arg::None, Tag::Cmd(Cmd::Save)),
    (
        "start-daemon",
        '\0',
        Arg::Required,
        Tag::Cmd(Cmd::StartDaemon),
    ),
    (
        "stop-daemon",
        '\0',
        Arg::Required,
        Tag::Cmd(Cmd::StopDaemon),
    ),
    ("tcp-service", 't', Arg::Required, Tag::Tcp),
    ("udp-service", 'u', Arg::Required, Tag::Udp),
    ("sctp-service", '\0', Arg::Required, Tag::Sctp),
    ("fwmark-service", 'f', Arg::Required, Tag::Fwmark),
    ("scheduler", 's', Arg::Required, Tag::Opt(opt::SCHEDULER)),
    ("persistent", 'p', Arg::Optional, Tag::Opt(opt::PERSISTENT)),
    ("netmask", 'M', Arg::Required, Tag::Opt(opt::NETMASK)),
    ("real-server", 'r', Arg::Required, Tag::Opt(opt::SERVER)),
    (
        "masquerading",
        'm',
        Arg::None,
        Tag::Method(ForwardMethod::Masq),
    ),
    ("ipip", 'i', Arg::None, Tag::Method(ForwardMethod::Tunnel)),
    (
        "gatewaying",
        'g',
        Arg::None,
        Tag::Method(ForwardMethod::Route),
    ),
    ("weight", 'w', Arg::Required, Tag::Opt(opt::WEIGHT)),
    ("u-threshold", 'x', Arg::Required, Tag::Opt(opt::UTHRESHOLD)),
    ("l-threshold", 'y', Arg::Required, Tag::Opt(opt::LTHRESHOLD)),
    ("numeric", 'n', Arg::None, Tag::Opt(opt::NUMERIC)),
    ("connection", 'c', Arg::None, Tag::Opt(opt::CONNECTION)),
    ("mcast-interface", '\0', Arg::Required, Tag::Opt(opt::MCAST)),
    ("syncid", '\0', Arg::Required, Tag::Opt(opt::SYNCID)),
    ("timeout", '\0', Arg::None, Tag::Opt(opt::TIMEOUT)),
    ("daemon", '\0', Arg::None, Tag::Opt(opt::DAEMON)),
    ("stats", '\0', Arg::None, Tag::Opt(opt::STATS)),
    ("rate", '\0', Arg::None, Tag::Opt(opt::RATE)),
    ("thresholds", '\0', Arg::None, Tag::Opt(opt::THRESHOLDS)),
    (
        "persistent-conn",
        '\0',
        Arg::None,
        Tag::Opt(opt::PERSISTENTCONN),
    ),
    ("nosort", '\0', Arg::None, Tag::Opt(opt::NOSORT)),
    ("sort", '\0', Arg::None, Tag::Sort),
    ("exact", 'X', Arg::None, Tag::Opt(opt::EXACT)),
    ("ipv6", '6', Arg::None, Tag::Ipv6),
    ("ops", 'o', Arg::None, Tag::Opt(opt::ONEPACKET)),
    ("pe", '\0', Arg::Required, Tag::Opt(opt::PE)),
    (
        "sched-flags",
        'b',
        Arg::Required,
        Tag::Opt(opt::SCHED_FLAGS),
    ),
    (
        "mcast-group",
        '\0',
        Arg::Required,
        Tag::Opt(opt::MCAST_GROUP),
    ),
    ("mcast-port", '\0', Arg::Required, Tag::Opt(opt::MCAST_PORT)),
    ("mcast-ttl", '\0', Arg::Required, Tag::Opt(opt::MCAST_TTL)),
    (
        "sync-maxlen",
        '\0',
        Arg::Required,
        Tag::Opt(opt::SYNC_MAXLEN),
    ),
    ("tun-info", '\0', Arg::None, Tag::Opt(opt::TUN_INFO)),
    ("tun-type", '\0', Arg::Required, Tag::Opt(opt::TUN_TYPE)),
    ("tun-port", '\0', Arg::Required, Tag::Opt(opt::TUN_PORT)),
    ("tun-nocsum", '\0', Arg::None, Tag::Opt(opt::TUN_NOCSUM)),
    ("tun-csum", '\0', Arg::None, Tag::Opt(opt::TUN_CSUM)),
    ("tun-remcsum", '\0', Arg::None, Tag::Opt(opt::TUN_REMCSUM)),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Cmd(Cmd),
    Help,
    Version,
    Tcp,
    Udp,
    Sctp,
    Fwmark,
    Method(ForwardMethod),
    Sort,
    Ipv6,
    Opt(usize),
}

/// The service selector as given (`-t/-u` text is parsed at once, as ipvsadm does).
#[derive(Debug, Clone, Copy)]
enum SvcArg {
    Inet(Protocol, IpAddr, u16),
    Fwmark(u32),
}

/// Everything the options said, before the checks that combine them.
#[derive(Debug, Default)]
struct Seen {
    cmd: Option<Cmd>,
    /// The value of a command that takes one (`--start-daemon master`).
    cmd_arg: Option<String>,
    options: u64,
    values: Vec<(usize, Option<String>)>,
    svc: Option<SvcArg>,
    method: Option<ForwardMethod>,
    ipv6: bool,
    help: bool,
    version: bool,
    positional: Vec<String>,
}

impl Seen {
    fn set_command(&mut self, cmd: Cmd) -> Result<(), ParseError> {
        if self.cmd.is_some() {
            return Err(fail("multiple commands specified"));
        }
        self.cmd = Some(cmd);
        Ok(())
    }

    fn set_option(&mut self, index: usize) -> Result<(), ParseError> {
        if self.options & (1 << index) != 0 {
            return Err(fail(format!(
                "multiple '{}' options specified",
                OPT_NAMES[index]
            )));
        }
        self.options |= 1 << index;
        Ok(())
    }

    fn has(&self, index: usize) -> bool {
        self.options & (1 << index) != 0
    }

    fn value(&self, index: usize) -> Option<&str> {
        self.values
            .iter()
            .find(|(i, _)| *i == index)
            .and_then(|(_, v)| v.as_deref())
    }
}

/// Parses one ipvsadm command line (`args` without the program name). `program` names the
/// tool in "Try `xvsadm -h'"; `names` resolves host and service names.
pub fn parse(args: &[String], program: &str, names: &Names) -> Result<Command, ParseError> {
    let seen = scan(args, names)?;
    if seen.help {
        return Ok(Command::Help);
    }
    if seen.version {
        return Ok(Command::Version);
    }
    let Some(cmd) = seen.cmd else {
        return Err(try_help(program));
    };
    build(cmd, &seen, names)
}

/// Reads the words of `args` into [`Seen`], checking each option on its own.
fn scan(args: &[String], names: &Names) -> Result<Seen, ParseError> {
    let mut seen = Seen::default();
    let mut i = 0;
    let mut only_positional = false;
    while i < args.len() {
        let word = normalize_dash(&args[i]);
        i += 1;
        if only_positional || word == "-" || !word.starts_with('-') {
            seen.positional.push(word);
            continue;
        }
        if word == "--" {
            only_positional = true;
            continue;
        }
        if let Some(long) = word.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let Some(&(_, _, arg, tag)) = OPTIONS.iter().find(|o| o.0 == name) else {
                return Err(popt(format!("--{name}: unknown option")));
            };
            let value = match (arg, inline) {
                (Arg::None, Some(_)) => {
                    return Err(popt(format!("--{name}: option does not take an argument")));
                }
                (Arg::None, None) => None,
                (_, Some(v)) => Some(v),
                (Arg::Required, None) => match args.get(i) {
                    Some(v) => {
                        i += 1;
                        Some(v.clone())
                    }
                    None => return Err(popt(format!("--{name}: missing argument"))),
                },
                (Arg::Optional, None) => match args.get(i) {
                    Some(v) if !v.starts_with('-') => {
                        i += 1;
                        Some(v.clone())
                    }
                    _ => None,
                },
            };
            take(&mut seen, tag, value, names)?;
            continue;
        }
        // A cluster of short options: `-Ln`, `-At1.2.3.4:80`, `-p300`.
        let chars: Vec<char> = word[1..].chars().collect();
        let mut k = 0;
        while k < chars.len() {
            let c = chars[k];
            k += 1;
            let Some(&(_, _, arg, tag)) = OPTIONS.iter().find(|o| o.1 == c && c != '\0') else {
                return Err(popt(format!("-{c}: unknown option")));
            };
            let rest: String = chars[k..].iter().collect();
            let value = match arg {
                Arg::None => None,
                _ if !rest.is_empty() => {
                    k = chars.len();
                    Some(rest)
                }
                Arg::Required => match args.get(i) {
                    Some(v) => {
                        i += 1;
                        Some(v.clone())
                    }
                    None => return Err(popt(format!("-{c}: missing argument"))),
                },
                Arg::Optional => match args.get(i) {
                    Some(v) if !v.starts_with('-') => {
                        i += 1;
                        Some(v.clone())
                    }
                    _ => None,
                },
            };
            take(&mut seen, tag, value, names)?;
        }
    }
    Ok(seen)
}

/// Web pages turn `--stats` into `–stats` (an en dash); read a leading en or em dash as
/// `--`, so command lines copied from the seed tutorials work as their authors meant.
fn normalize_dash(word: &str) -> String {
    for dash in ['\u{2013}', '\u{2014}'] {
        if let Some(rest) = word.strip_prefix(dash) {
            return format!("--{rest}");
        }
    }
    word.to_string()
}

fn take(seen: &mut Seen, tag: Tag, value: Option<String>, names: &Names) -> Result<(), ParseError> {
    match tag {
        Tag::Cmd(cmd) => {
            seen.set_command(cmd)?;
            seen.cmd_arg = value;
        }
        Tag::Help => seen.help = true,
        Tag::Version => seen.version = true,
        Tag::Tcp | Tag::Udp => {
            seen.set_option(opt::SERVICE)?;
            let protocol = if tag == Tag::Tcp {
                Protocol::Tcp
            } else {
                Protocol::Udp
            };
            let text = value.unwrap_or_default();
            let (addr, port) = parse_host_port(&text, Some(protocol), names)
                .ok_or_else(|| fail("illegal virtual server address[:port] specified"))?;
            seen.svc = Some(SvcArg::Inet(protocol, addr, port.unwrap_or(0)));
        }
        Tag::Sctp => {
            return Err(fail("xvs has no SCTP services: use -t or -u"));
        }
        Tag::Fwmark => {
            seen.set_option(opt::SERVICE)?;
            let text = value.unwrap_or_default();
            let mark = text
                .parse::<u64>()
                .ok()
                .filter(|m| (1..=u64::from(u32::MAX)).contains(m))
                .ok_or_else(|| fail(format!("invalid fwmark value `{text}' specified")))?;
            seen.svc = Some(SvcArg::Fwmark(mark as u32));
        }
        Tag::Method(m) => {
            seen.set_option(opt::FORWARD)?;
            seen.method = Some(m);
        }
        Tag::Sort => {}
        Tag::Ipv6 => seen.ipv6 = true,
        Tag::Opt(index) => {
            seen.set_option(index)?;
            check_value(index, value.as_deref())?;
            seen.values.push((index, value));
        }
    }
    Ok(())
}

/// The checks ipvsadm makes as it reads an option's value.
fn check_value(index: usize, value: Option<&str>) -> Result<(), ParseError> {
    let v = value.unwrap_or("");
    match index {
        opt::PERSISTENT => {
            if let Some(t) = value {
                parse_timeout(t, 1)?;
            }
        }
        opt::WEIGHT => {
            number(v, 0, 65_535).ok_or_else(|| fail("illegal weight specified"))?;
        }
        opt::UTHRESHOLD => {
            number(v, 0, i32::MAX as u64).ok_or_else(|| fail("illegal u_threshold specified"))?;
        }
        opt::LTHRESHOLD => {
            number(v, 0, i32::MAX as u64).ok_or_else(|| fail("illegal l_threshold specified"))?;
        }
        opt::SYNCID => {
            number(v, 0, 255).ok_or_else(|| fail("illegal syncid specified"))?;
        }
        opt::MCAST_GROUP => {
            v.parse::<Ipv4Addr>()
                .ok()
                .filter(Ipv4Addr::is_multicast)
                .ok_or_else(|| fail("illegal mcast-group specified"))?;
        }
        opt::MCAST_PORT => {
            number(v, 1, 65_535).ok_or_else(|| fail("illegal mcast-port specified"))?;
        }
        opt::MCAST_TTL => {
            number(v, 1, 255).ok_or_else(|| fail("illegal mcast-ttl specified"))?;
        }
        opt::SYNC_MAXLEN => {
            number(v, 1, 65_535 - 20 - 8).ok_or_else(|| fail("illegal sync-maxlen specified"))?;
        }
        opt::TUN_TYPE => match v {
            "ipip" => {}
            "gue" | "gre" => {
                return Err(fail(format!(
                    "tunnel type {v} is not supported by xvs (ipip only)"
                )));
            }
            _ => return Err(fail("illegal tunnel type specified")),
        },
        opt::TUN_PORT => {
            number(v, 1, 65_535).ok_or_else(|| fail("illegal tunnel port specified"))?;
        }
        _ => {}
    }
    Ok(())
}

/// ipvsadm's `string_to_number`: all of `s` in decimal, within `min..=max`.
fn number(s: &str, min: u64, max: u64) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().filter(|n| (min..=max).contains(n))
}

/// `parse_timeout`: `min..=MAX_TIMEOUT`, else "invalid timeout value `%s' specified".
fn parse_timeout(s: &str, min: u64) -> Result<u32, ParseError> {
    number(s, min, u64::from(MAX_TIMEOUT))
        .map(|n| n as u32)
        .ok_or_else(|| fail(format!("invalid timeout value `{s}' specified")))
}

/// ipvsadm's `parse_service` for `-t/-u/-r`: `host[:port]`, `[v6addr]:port` or a bare IPv6
/// address; a host name from /etc/hosts, a port name from /etc/services for `protocol`.
/// `None` where ipvsadm returns `SERVICE_NONE`; the port is `None` when not given.
pub fn parse_host_port(
    text: &str,
    protocol: Option<Protocol>,
    names: &Names,
) -> Option<(IpAddr, Option<u16>)> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port_of = |p: &str| -> Option<u16> {
        number(p, 0, 65_535)
            .map(|n| n as u16)
            .or_else(|| protocol.and_then(|proto| names.port(p, proto)))
    };
    if let Some(inner) = text.strip_prefix('[') {
        let (addr, rest) = inner.split_once(']')?;
        let port = rest.strip_prefix(':')?;
        let addr: Ipv6Addr = addr.parse().ok()?;
        return Some((IpAddr::V6(addr), Some(port_of(port)?)));
    }
    if let Ok(v6) = text.parse::<Ipv6Addr>() {
        return Some((IpAddr::V6(v6), None));
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (text, None),
    };
    let addr = host
        .parse::<Ipv4Addr>()
        .ok()
        .or_else(|| names.host_v4(host))?;
    let port = match port {
        Some(p) => Some(port_of(p)?),
        None => None,
    };
    Some((IpAddr::V4(addr), port))
}

/// `-M` for an IPv4 service: a dotted (or /etc/hosts) mask, contiguous, as a prefix length.
pub fn parse_netmask_v4(text: &str, names: &Names) -> Option<u8> {
    let mask = text
        .parse::<Ipv4Addr>()
        .ok()
        .or_else(|| names.host_v4(text))?;
    let bits = u32::from(mask);
    let len = bits.leading_ones();
    (bits.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// `-M` for an IPv6 service: `atoi`, 1..=128.
fn parse_netmask_v6(text: &str) -> Option<u8> {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=128).contains(n))
        .map(|n| n as u8)
}

/// `parse_sched_flags` for `-b`, with ipvsadm's two messages.
pub fn parse_sched_flags(scheduler: &str, text: &str) -> Result<SchedFlags, ParseError> {
    SchedFlags::parse(scheduler, text).map_err(|e| match e {
        SchedError::FlagNotForScheduler { flag, .. } => {
            fail(format!("incompatible scheduler flag `{flag}'"))
        }
        SchedError::UnknownFlag(flag) => fail(format!("invalid scheduler flag `{flag}'")),
        other => fail(other.to_string()),
    })
}

/// ipvsadm's `generic_opt_check` over [`COMMANDS_V_OPTIONS`].
fn generic_opt_check(cmd: Cmd, options: u64) -> Result<(), ParseError> {
    let row = COMMANDS_V_OPTIONS[cmd as usize];
    let name = CMD_NAMES[cmd as usize];
    let mut last: Option<usize> = None;
    for (j, &rule) in row.iter().enumerate() {
        if options & (1 << j) == 0 {
            if rule == b'+' {
                return Err(fail(format!(
                    "You need to supply the '{}' option for the '{name}' command",
                    OPT_NAMES[j]
                )));
            }
        } else {
            if rule == b'x' {
                return Err(fail(format!(
                    "Illegal '{}' option with the '{name}' command",
                    OPT_NAMES[j]
                )));
            }
            if rule == b'1' {
                match last {
                    None => last = Some(j),
                    Some(l) => {
                        return Err(fail(format!(
                            "The option '{}' conflicts with the '{}' option in the '{name}' command",
                            OPT_NAMES[j], OPT_NAMES[l]
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

fn service_addr(seen: &Seen) -> Result<ServiceAddr, ParseError> {
    let svc = seen
        .svc
        .ok_or_else(|| fail("You need to supply the 'service-address' option"))?;
    if seen.ipv6 && !matches!(svc, SvcArg::Fwmark(_)) {
        return Err(fail("-6 used before -f"));
    }
    Ok(match svc {
        SvcArg::Inet(protocol, addr, port) => ServiceAddr::Inet {
            protocol,
            addr,
            port,
        },
        SvcArg::Fwmark(mark) => ServiceAddr::Fwmark {
            mark,
            ipv6: seen.ipv6,
        },
    })
}

fn build(cmd: Cmd, seen: &Seen, names: &Names) -> Result<Command, ParseError> {
    let positional = &seen.positional;
    let mut rest = positional.iter();
    let timeouts = if cmd == Cmd::Timeout {
        let (Some(tcp), Some(fin), Some(udp)) = (rest.next(), rest.next(), rest.next()) else {
            return Err(fail("--set option requires 3 timeout values"));
        };
        Some(Timeouts {
            tcp: parse_timeout(tcp, 0)?,
            tcpfin: parse_timeout(fin, 0)?,
            udp: parse_timeout(udp, 0)?,
        })
    } else {
        None
    };
    if let Some(extra) = rest.next() {
        return Err(fail(format!("unexpected argument {extra}")));
    }
    generic_opt_check(cmd, seen.options)?;
    if seen.ipv6 && !matches!(seen.svc, Some(SvcArg::Fwmark(_))) {
        return Err(fail("-6 used before -f"));
    }

    match cmd {
        Cmd::Add | Cmd::EditSvc => {
            let addr = service_addr(seen)?;
            let spec = service_spec(addr, seen, names)?;
            Ok(Command::Edit(if cmd == Cmd::Add {
                Edit::AddService { service: spec }
            } else {
                Edit::EditService { service: spec }
            }))
        }
        Cmd::Del => Ok(Command::Edit(Edit::DeleteService {
            addr: service_addr(seen)?,
        })),
        Cmd::Flush => Ok(Command::Edit(Edit::Clear)),
        Cmd::AddDest | Cmd::EditDest | Cmd::DelDest => {
            let service = service_addr(seen)?;
            let dest = dest_spec(cmd, &service, seen, names)?;
            Ok(Command::Edit(match cmd {
                Cmd::AddDest => Edit::AddDest { service, dest },
                Cmd::EditDest => Edit::EditDest { service, dest },
                _ => Edit::DeleteDest {
                    service,
                    addr: dest.addr,
                    port: dest.port,
                },
            }))
        }
        Cmd::List => {
            let has = |i| seen.has(i);
            if ((has(opt::CONNECTION) || has(opt::TIMEOUT) || has(opt::DAEMON))
                && (has(opt::STATS) || has(opt::RATE) || has(opt::THRESHOLDS)))
                || ((has(opt::TIMEOUT) || has(opt::DAEMON)) && has(opt::PERSISTENTCONN))
            {
                return Err(fail("options conflicts in the list command"));
            }
            let format = ListFormat {
                numeric: has(opt::NUMERIC),
                stats: has(opt::STATS),
                rate: has(opt::RATE),
                thresholds: has(opt::THRESHOLDS),
                persistent_conn: has(opt::PERSISTENTCONN),
                exact: has(opt::EXACT),
                nosort: has(opt::NOSORT),
                tun_info: has(opt::TUN_INFO),
            };
            let what = if has(opt::CONNECTION) {
                ListWhat::Connections
            } else if has(opt::SERVICE) {
                ListWhat::Service(service_addr(seen)?)
            } else if has(opt::TIMEOUT) {
                ListWhat::Timeouts
            } else if has(opt::DAEMON) {
                ListWhat::Daemon
            } else {
                ListWhat::All
            };
            Ok(Command::List(ListCommand { what, format }))
        }
        Cmd::Timeout => Ok(Command::SetTimeouts(timeouts.unwrap_or_default())),
        Cmd::StartDaemon | Cmd::StopDaemon => {
            let role = match seen.cmd_arg.as_deref() {
                Some("master") => Role::Master,
                Some("backup") => Role::Backup,
                _ if cmd == Cmd::StartDaemon => {
                    return Err(fail("illegal start-daemon parameter specified"));
                }
                _ => return Err(fail("illegal stop-daemon parameter specified")),
            };
            if cmd == Cmd::StopDaemon {
                return Ok(Command::StopDaemon { role });
            }
            let num = |o| seen.value(o).and_then(|v| v.parse::<u64>().ok());
            Ok(Command::StartDaemon {
                role,
                args: DaemonArgs {
                    interface: seen.value(opt::MCAST).map(str::to_string),
                    syncid: num(opt::SYNCID).map(|n| n as u8),
                    maxlen: num(opt::SYNC_MAXLEN).map(|n| n as u16),
                    group: seen.value(opt::MCAST_GROUP).and_then(|g| g.parse().ok()),
                    port: num(opt::MCAST_PORT).map(|n| n as u16),
                    ttl: num(opt::MCAST_TTL).map(|n| n as u8),
                },
            })
        }
        Cmd::Restore => Ok(Command::Restore),
        Cmd::Save => Ok(Command::Save {
            numeric: seen.has(opt::NUMERIC),
        }),
        Cmd::Zero => Ok(Command::Zero {
            service: if seen.has(opt::SERVICE) {
                Some(service_addr(seen)?)
            } else {
                None
            },
        }),
    }
}

fn service_spec(addr: ServiceAddr, seen: &Seen, names: &Names) -> Result<ServiceSpec, ParseError> {
    let mut spec = ServiceSpec::new(addr);
    if let Some(s) = seen.value(opt::SCHEDULER) {
        spec.scheduler = s.to_string();
    }
    let ipv6 = spec.is_ipv6();
    let prefix_len = match seen.value(opt::NETMASK) {
        None => {
            if ipv6 {
                128
            } else {
                32
            }
        }
        Some(m) if ipv6 => {
            parse_netmask_v6(m).ok_or_else(|| fail("illegal ipv6 netmask specified"))?
        }
        Some(m) => parse_netmask_v4(m, names)
            .ok_or_else(|| fail("illegal virtual server persistent mask specified"))?,
    };
    if seen.has(opt::PERSISTENT) {
        let timeout_secs = match seen.value(opt::PERSISTENT) {
            Some(t) => parse_timeout(t, 1)?,
            None => DEFAULT_PERSISTENCE_SECS,
        };
        spec.persistence = Some(PersistenceSpec {
            timeout_secs,
            prefix_len,
        });
    }
    spec.one_packet = seen.has(opt::ONEPACKET);
    if let ServiceAddr::Inet { protocol, port, .. } = addr {
        if port == 0 && spec.persistence.is_none() {
            return Err(fail("Zero port specified for non-persistent service"));
        }
        if spec.one_packet && protocol != Protocol::Udp {
            return Err(fail(
                "One-Packet Scheduling is only for UDP virtual services",
            ));
        }
    }
    if let Some(pe) = seen.value(opt::PE) {
        return Err(fail(format!(
            "persistence engine {pe} is not supported by xvs"
        )));
    }
    if let Some(flags) = seen.value(opt::SCHED_FLAGS) {
        spec.flags = parse_sched_flags(&spec.scheduler, flags)?;
    }
    Ok(spec)
}

fn dest_spec(
    cmd: Cmd,
    service: &ServiceAddr,
    seen: &Seen,
    names: &Names,
) -> Result<DestSpec, ParseError> {
    let (svc_protocol, svc_port, fwmark) = match *service {
        ServiceAddr::Inet { protocol, port, .. } => (protocol, port, false),
        ServiceAddr::Fwmark { .. } => (Protocol::Tcp, 0, true),
    };
    let text = seen.value(opt::SERVER).unwrap_or("");
    let (addr, port) = parse_host_port(text, Some(svc_protocol), names)
        .ok_or_else(|| fail("illegal real server address[:port] specified"))?;
    // "copy vport to dport if not specified"
    let mut port = port.unwrap_or(svc_port);
    let method = seen.method.unwrap_or(ForwardMethod::Route);
    let weight = seen
        .value(opt::WEIGHT)
        .and_then(|w| number(w, 0, 65_535))
        .unwrap_or(1) as u32;
    let upper = seen
        .value(opt::UTHRESHOLD)
        .and_then(|v| number(v, 0, i32::MAX as u64))
        .unwrap_or(0) as u32;
    let lower = seen
        .value(opt::LTHRESHOLD)
        .and_then(|v| number(v, 0, i32::MAX as u64))
        .unwrap_or(0) as u32;
    if cmd != Cmd::DelDest {
        // "The destination port must be equal to the service port if the
        // IP_VS_CONN_F_TUNNEL or IP_VS_CONN_F_DROUTE is set."
        if !fwmark && method != ForwardMethod::Masq {
            port = svc_port;
        }
        let svc_v6 = match *service {
            ServiceAddr::Inet { addr, .. } => addr.is_ipv6(),
            ServiceAddr::Fwmark { ipv6, .. } => ipv6,
        };
        if addr.is_ipv6() != svc_v6 && method != ForwardMethod::Tunnel {
            return Err(fail(
                "Different address family is allowed only for tunneling servers",
            ));
        }
        let tun_opts = [
            opt::TUN_TYPE,
            opt::TUN_PORT,
            opt::TUN_NOCSUM,
            opt::TUN_CSUM,
            opt::TUN_REMCSUM,
        ];
        if tun_opts.iter().any(|&o| seen.has(o)) && method != ForwardMethod::Tunnel {
            return Err(fail("Tunnel options conflict with forward method"));
        }
        // tunnel_opt_check for the only type xvs has, ipip: no port, no checksum options.
        for o in &tun_opts[1..] {
            if seen.has(*o) {
                return Err(fail(format!(
                    "Illegal '{}' option with the 'ipip' tunnel type",
                    OPT_NAMES[*o]
                )));
            }
        }
    }
    Ok(DestSpec {
        addr,
        port,
        method,
        weight,
        upper_threshold: upper,
        lower_threshold: lower,
    })
}

/// Splits one line of `-R` input as ipvsadm's `config_stream_read` does: words separated
/// by blanks, the word `ipvsadm` (and `xvsadm`) dropped so saved scripts restore; a word
/// starting with `#` ends the line. An empty result is a line to skip.
pub fn restore_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    for w in line.split_whitespace() {
        if w.starts_with('#') {
            break;
        }
        if w != "ipvsadm" && w != "xvsadm" {
            words.push(w.to_string());
        }
    }
    words
}

/// What `-R` applies: the edits, in order, and the last `--set`, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restore {
    /// Table edits, applied all or none.
    pub edits: Vec<Edit>,
    /// The input line (1-based) of each edit, to name the line a refused edit came from.
    pub lines: Vec<usize>,
    /// `--set` lines (the last wins, as they would one after the other).
    pub timeouts: Option<Timeouts>,
}

/// Parses `-R` input. Only table edits and `--set` may appear; the first bad line stops
/// the restore before anything is applied, with `line N: message`.
pub fn parse_restore(input: &str, program: &str, names: &Names) -> Result<Restore, ParseError> {
    let mut restore = Restore::default();
    for (n, line) in input.lines().enumerate() {
        let words = restore_words(line);
        if words.is_empty() {
            continue;
        }
        let at = |e: ParseError| ParseError {
            message: format!("line {}: {}", n + 1, e.message),
            exit_code: e.exit_code,
        };
        match parse(&words, program, names).map_err(at)? {
            Command::Edit(edit) => {
                restore.edits.push(edit);
                restore.lines.push(n + 1);
            }
            Command::SetTimeouts(t) => restore.timeouts = Some(t),
            _ => {
                return Err(at(fail(
                    "only -A -E -D -C -a -e -d and --set can be restored",
                )));
            }
        }
    }
    Ok(restore)
}

/// ipvsadm's usage text, with this tool's name.
pub fn usage(program: &str) -> String {
    let p = program;
    format!(
        "{version}\
Usage:\n\
\x20 {p} -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags]\n\
\x20 {p} -D virtual-service\n\
\x20 {p} -C\n\
\x20 {p} -R\n\
\x20 {p} -S [-n]\n\
\x20 {p} -a|e virtual-service -r server-address [options]\n\
\x20 {p} -d virtual-service -r server-address\n\
\x20 {p} -L|l [virtual-service] [options]\n\
\x20 {p} -Z [virtual-service]\n\
\x20 {p} --set tcp tcpfin udp\n\
\x20 {p} -h\n\n\
Commands:\n\
Either long or short options are allowed.\n\
\x20 --add-service     -A        add virtual service with options\n\
\x20 --edit-service    -E        edit virtual service with options\n\
\x20 --delete-service  -D        delete virtual service\n\
\x20 --clear           -C        clear the whole table\n\
\x20 --restore         -R        restore rules from stdin (all or nothing)\n\
\x20 --save            -S        save rules to stdout\n\
\x20 --add-server      -a        add real server with options\n\
\x20 --edit-server     -e        edit real server with options\n\
\x20 --delete-server   -d        delete real server\n\
\x20 --list            -L|-l     list the table\n\
\x20 --zero            -Z        zero counters in a service or all services\n\
\x20 --set tcp tcpfin udp        set connection timeout values\n\
\x20 --help            -h        display this help message\n\n\
virtual-service:\n\
\x20 --tcp-service|-t  service-address   service-address is host[:port]\n\
\x20 --udp-service|-u  service-address   service-address is host[:port]\n\
\x20 --fwmark-service|-f fwmark          fwmark is an integer greater than zero\n\n\
Options:\n\
\x20 --ipv6         -6                   fwmark entry uses IPv6\n\
\x20 --scheduler    -s scheduler         one of rr|wrr|lc|wlc|sed|nq|lblc|lblcr|dh|sh|mh|fo|ovf|twos,\n\
\x20                                     the default scheduler is wlc.\n\
\x20 --persistent   -p [timeout]         persistent service\n\
\x20 --netmask      -M netmask           persistent granularity mask\n\
\x20 --real-server  -r server-address    server-address is host (and port)\n\
\x20 --gatewaying   -g                   gatewaying (direct routing) (default)\n\
\x20 --ipip         -i                   ipip encapsulation (tunneling)\n\
\x20 --masquerading -m                   masquerading (NAT)\n\
\x20 --tun-type      type                ipip (the only type xvs has)\n\
\x20 --weight       -w weight            capacity of real server\n\
\x20 --u-threshold  -x uthreshold        upper threshold of connections\n\
\x20 --l-threshold  -y lthreshold        lower threshold of connections\n\
\x20 --connection   -c                   output of current IPVS connections\n\
\x20 --timeout                           output of timeout (tcp tcpfin udp)\n\
\x20 --daemon                            output of daemon information\n\
\x20 --stats                             output of statistics information\n\
\x20 --rate                              output of rate information\n\
\x20 --exact                             expand numbers (display exact values)\n\
\x20 --thresholds                        output of thresholds information\n\
\x20 --persistent-conn                   output of persistent connection info\n\
\x20 --tun-info                          output of tunnel information\n\
\x20 --nosort                            disable sorting output of service/server entries\n\
\x20 --sort                              does nothing, for backwards compatibility\n\
\x20 --ops          -o                   one-packet scheduling\n\
\x20 --numeric      -n                   numeric output of addresses and ports\n\
\x20 --sched-flags  -b flags             scheduler flags (comma-separated)\n\n\
xvsadm options:\n\
\x20 --socket PATH                       the daemon's control socket (env XVS_SOCKET,\n\
\x20                                     default /run/xvs/xvs.sock)\n\
\x20 --json                              print listings as JSON\n",
        version = version_line(),
    )
}

/// `-v`: the version line.
pub fn version_line() -> String {
    format!(
        "xvsadm {} (ipvsadm v1.31 syntax, IPVS v{})\n",
        env!("CARGO_PKG_VERSION"),
        crate::listing::IPVS_VERSION
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    fn p(line: &str) -> Result<Command, ParseError> {
        parse(&words(line), "xvsadm", &Names::none())
    }

    fn tcp(a: &str, port: u16) -> ServiceAddr {
        ServiceAddr::Inet {
            protocol: Protocol::Tcp,
            addr: a.parse().unwrap(),
            port,
        }
    }

    fn err(line: &str) -> String {
        p(line).unwrap_err().message
    }

    #[test]
    fn sync_daemon_lines_parse_as_ipvsadm_reads_them() {
        assert_eq!(
            p("--start-daemon master --mcast-interface eth1 --syncid 7").unwrap(),
            Command::StartDaemon {
                role: Role::Master,
                args: DaemonArgs {
                    interface: Some("eth1".into()),
                    syncid: Some(7),
                    ..DaemonArgs::default()
                }
            }
        );
        assert_eq!(
            p("--start-daemon=backup --mcast-interface=eth0 --sync-maxlen 1400 --mcast-group 239.1.1.1 --mcast-port 9000 --mcast-ttl 2").unwrap(),
            Command::StartDaemon {
                role: Role::Backup,
                args: DaemonArgs {
                    interface: Some("eth0".into()),
                    syncid: None,
                    maxlen: Some(1400),
                    group: Some("239.1.1.1".parse().unwrap()),
                    port: Some(9000),
                    ttl: Some(2),
                }
            }
        );
        assert_eq!(
            p("--stop-daemon backup").unwrap(),
            Command::StopDaemon { role: Role::Backup }
        );
        assert_eq!(
            p("-L --daemon").unwrap(),
            Command::List(ListCommand {
                what: ListWhat::Daemon,
                format: ListFormat::default()
            })
        );
        // ipvsadm's refusals, one line each.
        assert_eq!(
            err("--start-daemon primary"),
            "illegal start-daemon parameter specified"
        );
        assert_eq!(
            err("--stop-daemon x"),
            "illegal stop-daemon parameter specified"
        );
        assert_eq!(
            err("--start-daemon master --syncid 256"),
            "illegal syncid specified"
        );
        assert_eq!(
            err("--start-daemon master --mcast-group 10.0.0.1"),
            "illegal mcast-group specified"
        );
        assert_eq!(
            err("--start-daemon master --mcast-port 0"),
            "illegal mcast-port specified"
        );
        assert_eq!(
            err("--start-daemon master --mcast-ttl 256"),
            "illegal mcast-ttl specified"
        );
        assert_eq!(
            err("--start-daemon master --sync-maxlen 70000"),
            "illegal sync-maxlen specified"
        );
        // stop-daemon takes no options but --syncid (ipvsadm's table), start-daemon no -n.
        assert!(err("--stop-daemon master --mcast-interface eth0").contains("Illegal '"));
        assert!(err("--start-daemon master -n").contains("Illegal '"));
    }

    #[test]
    fn add_service_defaults() {
        let Command::Edit(Edit::AddService { service }) = p("-A -t 172.16.21.10:80").unwrap()
        else {
            panic!()
        };
        assert_eq!(service.addr, tcp("172.16.21.10", 80));
        assert_eq!(service.scheduler, "wlc");
        assert_eq!(service.persistence, None);
        assert!(!service.one_packet);
    }

    #[test]
    fn persistence_default_value_and_mask() {
        let Command::Edit(Edit::AddService { service }) =
            p("-A -t 192.168.0.11:80 -s lc -p").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            service.persistence,
            Some(PersistenceSpec {
                timeout_secs: 300,
                prefix_len: 32
            })
        );
        // `-p` does not swallow the next option.
        let Command::Edit(Edit::AddService { service }) =
            p("-A -t 1.2.3.4:0 -p -M 255.255.0.0 -s rr").unwrap()
        else {
            panic!()
        };
        assert_eq!(service.scheduler, "rr");
        assert_eq!(service.persistence.unwrap().prefix_len, 16);
        assert_eq!(service.persistence.unwrap().timeout_secs, 300);
        let Command::Edit(Edit::AddService { service }) = p("-A -t 1.2.3.4:80 -p600").unwrap()
        else {
            panic!()
        };
        assert_eq!(service.persistence.unwrap().timeout_secs, 600);
        assert_eq!(
            err("-A -t 1.2.3.4:80 -p 0"),
            "invalid timeout value `0' specified"
        );
        assert_eq!(
            err("-A -t 1.2.3.4:80 -p -M 255.0.255.0"),
            "illegal virtual server persistent mask specified"
        );
    }

    #[test]
    fn real_server_defaults_and_port_rules() {
        // DR: no port given takes the virtual port; weight 1; -g.
        let Command::Edit(Edit::AddDest { service, dest }) =
            p("-a -t 172.16.21.10:80 -r 192.168.40.13").unwrap()
        else {
            panic!()
        };
        assert_eq!(service, tcp("172.16.21.10", 80));
        assert_eq!(dest.port, 80);
        assert_eq!(dest.weight, 1);
        assert_eq!(dest.method, ForwardMethod::Route);
        // DR/TUN always use the virtual port, as ipvsadm forces it.
        let Command::Edit(Edit::AddDest { dest, .. }) =
            p("-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -i -w 3").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (dest.port, dest.method, dest.weight),
            (80, ForwardMethod::Tunnel, 3)
        );
        // NAT maps ports.
        let Command::Edit(Edit::AddDest { dest, .. }) =
            p("-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -m -x 100 -y 50").unwrap()
        else {
            panic!()
        };
        assert_eq!(dest.port, 8080);
        assert_eq!((dest.upper_threshold, dest.lower_threshold), (100, 50));
        // -r before -t still defaults the port (ipvsadm would take the port as 0 here).
        let Command::Edit(Edit::DeleteDest { port, .. }) =
            p("-d -r 10.0.0.2 -t 10.0.0.1:80").unwrap()
        else {
            panic!()
        };
        assert_eq!(port, 80);
    }

    #[test]
    fn ipv6_and_fwmark() {
        let Command::Edit(Edit::AddService { service }) =
            p("-A -u [2001:db8::1]:53 -s sh -b sh-port -o -p 60 -M 64").unwrap()
        else {
            panic!()
        };
        assert!(service.one_packet);
        assert!(service.flags.port);
        assert_eq!(service.persistence.unwrap().prefix_len, 64);
        let Command::Edit(Edit::AddService { service }) = p("-A -f 7 -6 -s rr").unwrap() else {
            panic!()
        };
        assert_eq!(
            service.addr,
            ServiceAddr::Fwmark {
                mark: 7,
                ipv6: true
            }
        );
        let Command::Edit(Edit::AddDest { dest, .. }) =
            p("-a -f 7 -6 -r [2001:db8::2]:80 -g").unwrap()
        else {
            panic!()
        };
        assert_eq!(dest.port, 80, "fwmark real servers keep their port");
        assert_eq!(err("-A -t 1.2.3.4:80 -6"), "-6 used before -f");
        assert_eq!(err("-A -f 0"), "invalid fwmark value `0' specified");
        assert_eq!(
            err("-a -t 1.2.3.4:80 -r [2001:db8::2]:80 -g"),
            "Different address family is allowed only for tunneling servers"
        );
    }

    #[test]
    fn clusters_and_long_forms() {
        assert_eq!(
            p("-Ln").unwrap(),
            Command::List(ListCommand {
                what: ListWhat::All,
                format: ListFormat {
                    numeric: true,
                    ..Default::default()
                }
            })
        );
        let Command::Edit(Edit::AddService { service }) =
            p("--add-service --tcp-service=10.0.0.1:80 --scheduler wrr").unwrap()
        else {
            panic!()
        };
        assert_eq!(service.scheduler, "wrr");
        let Command::Edit(Edit::AddService { service }) = p("-At 10.0.0.1:443 -srr").unwrap()
        else {
            panic!()
        };
        assert_eq!(service.addr, tcp("10.0.0.1", 443));
        assert_eq!(service.scheduler, "rr");
        // The seed's "–stats" (en dash) reads as --stats.
        let Command::List(l) = p("-L -n \u{2013}stats").unwrap() else {
            panic!()
        };
        assert!(l.format.stats && l.format.numeric);
    }

    #[test]
    fn list_variants_and_conflicts() {
        let Command::List(l) = p("-L -n -c").unwrap() else {
            panic!()
        };
        assert_eq!(l.what, ListWhat::Connections);
        let Command::List(l) = p("-l --timeout").unwrap() else {
            panic!()
        };
        assert_eq!(l.what, ListWhat::Timeouts);
        let Command::List(l) = p("-L -t 1.2.3.4:80 --exact --rate --sort").unwrap() else {
            panic!()
        };
        assert_eq!(l.what, ListWhat::Service(tcp("1.2.3.4", 80)));
        assert!(l.format.exact && l.format.rate);
        assert_eq!(
            err("-L -c -t 1.2.3.4:80"),
            "The option 'service-address' conflicts with the 'connection' option in the 'list' command"
        );
        assert_eq!(
            err("-L -c --stats"),
            "options conflicts in the list command"
        );
    }

    #[test]
    fn ipvsadm_error_lines() {
        assert_eq!(
            err("-A -t 1.2.3.4:80 -r 10.0.0.1"),
            "Illegal 'real-server' option with the 'add-service' command"
        );
        assert_eq!(
            err("-a -t 1.2.3.4:80"),
            "You need to supply the 'real-server' option for the 'add-server' command"
        );
        assert_eq!(err("-A -L"), "multiple commands specified");
        assert_eq!(
            err("-a -t 1.2.3.4:80 -r 10.0.0.1 -g -m"),
            "multiple 'forwarding-method' options specified"
        );
        assert_eq!(
            err("-A -t 1.2.3.4"),
            "Zero port specified for non-persistent service"
        );
        assert_eq!(
            err("-A -t 1.2.3.4:80 -o"),
            "One-Packet Scheduling is only for UDP virtual services"
        );
        assert_eq!(
            err("-A -t 80"),
            "illegal virtual server address[:port] specified"
        );
        assert_eq!(
            err("-a -t 1.2.3.4:80 -r nohost"),
            "illegal real server address[:port] specified"
        );
        assert_eq!(
            err("-a -t 1.2.3.4:80 -r 10.0.0.1 -w 70000"),
            "illegal weight specified"
        );
        assert_eq!(
            err("-A -t 1.2.3.4:80 -s wlc -b sh-port"),
            "incompatible scheduler flag `sh-port'"
        );
        assert_eq!(
            err("-A -t 1.2.3.4:80 -b bogus"),
            "invalid scheduler flag `bogus'"
        );
        assert_eq!(err("--set 1 2"), "--set option requires 3 timeout values");
        assert_eq!(err("-C extra"), "unexpected argument extra");
        assert_eq!(
            err("-a -t 1.2.3.4:80 -r 10.0.0.1 -g --tun-type ipip"),
            "Tunnel options conflict with forward method"
        );
        let e = p("-n").unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.exit_code),
            (
                "Try `xvsadm -h' or 'xvsadm --help' for more information.",
                255
            )
        );
        let e = p("-L --bogus").unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.exit_code),
            ("--bogus: unknown option", 255)
        );
        assert_eq!(p("-A -t").unwrap_err().message, "-t: missing argument");
    }

    #[test]
    fn set_zero_save_restore_help() {
        assert_eq!(
            p("--set 900 120 300").unwrap(),
            Command::SetTimeouts(Timeouts {
                tcp: 900,
                tcpfin: 120,
                udp: 300
            })
        );
        assert_eq!(
            p("-Z -t 1.2.3.4:80").unwrap(),
            Command::Zero {
                service: Some(tcp("1.2.3.4", 80))
            }
        );
        assert_eq!(p("-Z").unwrap(), Command::Zero { service: None });
        assert_eq!(p("-S -n").unwrap(), Command::Save { numeric: true });
        assert_eq!(p("-R").unwrap(), Command::Restore);
        assert_eq!(p("-h").unwrap(), Command::Help);
        assert_eq!(p("-C").unwrap(), Command::Edit(Edit::Clear));
    }

    #[test]
    fn names_resolve_from_files() {
        let names = Names::from_texts("10.0.0.9 www\n", "http 80/tcp\n");
        let c = parse(&words("-A -t www:http -s rr"), "xvsadm", &names).unwrap();
        let Command::Edit(Edit::AddService { service }) = c else {
            panic!()
        };
        assert_eq!(service.addr, tcp("10.0.0.9", 80));
    }

    #[test]
    fn restore_input() {
        let input = "# saved\n\nipvsadm -A -t 1.2.3.4:80 -s rr\n-a -t 1.2.3.4:80 -r 10.0.0.1:80 -g -w 1 # rs1\n--set 0 0 60\n";
        let r = parse_restore(input, "xvsadm", &Names::none()).unwrap();
        assert_eq!(r.edits.len(), 2);
        assert_eq!(r.lines, vec![3, 4]);
        assert_eq!(r.timeouts.unwrap().udp, 60);
        let e = parse_restore("-A -t 1.2.3.4:80\n-L\n", "xvsadm", &Names::none()).unwrap_err();
        assert!(e.message.starts_with("line 2: "), "{}", e.message);
    }
}
