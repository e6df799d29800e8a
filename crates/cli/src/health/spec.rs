//! What the configuration file says about health: a check per real server (its probe,
//! interval, timeout, rise and fall counts, start state), and per service what a failure
//! does (`on_failure`), the sorry server and passive detection. The file's spelling
//! (`Raw*`, serde) is validated here into [`HealthConfig`]; every error names its key.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use xvs_dataplane::service::spec::{DestSpec, ServiceAddr, SocketText};

/// Which real server of which service a check or a passive count is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestKey {
    /// The virtual service.
    pub service: ServiceAddr,
    /// The real server's address.
    pub addr: IpAddr,
    /// The real server's port (as in the table: DR and TUN use the virtual port).
    pub port: u16,
}

impl DestKey {
    /// The key of `dest` in `service`.
    pub fn of(service: ServiceAddr, dest: &DestSpec) -> Self {
        DestKey {
            service,
            addr: dest.addr,
            port: dest.port,
        }
    }

    /// Whether `dest` is this real server.
    pub fn is(&self, dest: &DestSpec) -> bool {
        dest.addr == self.addr && dest.port == self.port
    }
}

impl std::fmt::Display for DestKey {
    /// `TCP  172.16.21.10:80 -> 192.168.40.12:80`, as ipvsadm lists them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {}",
            self.service,
            SocketText(self.addr, self.port)
        )
    }
}

/// How a real server is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connection is accepted.
    Tcp,
    /// An HTTP (or, with `tls`, HTTPS) GET answers with an expected status and body.
    Http(HttpProbe),
    /// A datagram is answered.
    Udp {
        /// What to send.
        send: String,
        /// A substring the reply must hold (`None`: any reply).
        expect: Option<String>,
    },
    /// A program exits 0; the server's address and port are its last two arguments.
    External {
        /// The program and its first arguments.
        command: Vec<String>,
    },
}

impl Probe {
    /// The check's `type` as the file spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Tcp => "tcp",
            Probe::Http(h) if h.tls.is_some() => "https",
            Probe::Http(_) => "http",
            Probe::Udp { .. } => "udp",
            Probe::External { .. } => "external",
        }
    }
}

/// An HTTP or HTTPS GET and what its answer must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    /// The path (and query) asked for.
    pub path: String,
    /// The `Host` header, if not the server's address.
    pub host: Option<String>,
    /// Acceptable status codes.
    pub status: Vec<u16>,
    /// keepalived's `digest`: the MD5 of the body, lowercase hex.
    pub digest: Option<String>,
    /// A substring the body must hold.
    pub contains: Option<String>,
    /// HTTPS: how the server's certificate is verified.
    pub tls: Option<TlsCheck>,
}

/// HTTPS certificate verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsCheck {
    /// No verification, as keepalived's SSL_GET: real servers are checked by address and
    /// usually carry certificates for the public name, or self-signed ones.
    Unverified,
    /// The certificate must chain to one in this PEM file and name the server's address.
    CaFile(PathBuf),
}

/// Until proven otherwise, a checked server is...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartState {
    /// ...up: in service until `fall` checks fail.
    Up,
    /// ...down (keepalived's alpha mode): out of service until `rise` checks pass.
    Down,
}

/// One real server's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// What is probed.
    pub probe: Probe,
    /// The port probed (default the real server's).
    pub port: u16,
    /// From the start of one check to the start of the next.
    pub interval: Duration,
    /// The whole check's time limit (connect, request, answer; a command's run).
    pub timeout: Duration,
    /// Passed checks in a row that bring a down server up.
    pub rise: u32,
    /// Failed checks in a row that take an up server down.
    pub fall: u32,
    /// The state before the first checks decide.
    pub start: StartState,
}

/// What happens to a real server whose check fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Weight 0 (IPVS's `inhibit_on_failure`): its connections finish, it gets no new ones.
    #[default]
    Quiesce,
    /// Taken out of the table (keepalived's default); its connections are a removed real
    /// server's (`expire_nodest_conn`).
    Remove,
}

/// DPVS-style passive detection: new connections of a real server that stay in SYN_RECV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveSpec {
    /// A connection still in SYN_RECV this long after it was first seen there is stuck.
    pub syn_recv: Duration,
    /// Stuck connections at once that make the real server suspect.
    pub min_stuck: u32,
    /// Also quiesce a suspect server, for `hold`.
    pub quiesce: bool,
    /// How long a suspect server stays quiesced before it is given new connections again.
    pub hold: Duration,
}

/// The health settings of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHealth {
    /// The service.
    pub service: ServiceAddr,
    /// What a failed check does.
    pub on_failure: OnFailure,
    /// keepalived's `sorry_server`: takes new connections while no real server can.
    pub sorry: Option<DestSpec>,
    /// Passive detection, if on.
    pub passive: Option<PassiveSpec>,
    /// The checked real servers (`port` and `addr` as in the table).
    pub checks: Vec<(DestKey, CheckSpec)>,
}

/// Everything the file says about health, per service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthConfig {
    /// Services with any health setting, in file order.
    pub services: Vec<ServiceHealth>,
}

impl HealthConfig {
    /// The settings of `service`, if it has any.
    pub fn service(&self, service: &ServiceAddr) -> Option<&ServiceHealth> {
        self.services.iter().find(|s| s.service == *service)
    }

    /// Every check, with its key.
    pub fn checks(&self) -> impl Iterator<Item = &(DestKey, CheckSpec)> {
        self.services.iter().flat_map(|s| s.checks.iter())
    }

    /// Whether any service asks for passive detection.
    pub fn any_passive(&self) -> bool {
        self.services.iter().any(|s| s.passive.is_some())
    }
}

/// A `[service.check]` or `[service.real_server.check]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCheck {
    #[serde(rename = "type")]
    kind: Option<String>,
    port: Option<u32>,
    interval: Option<f64>,
    #[serde(alias = "connect_timeout")]
    timeout: Option<f64>,
    rise: Option<u32>,
    fall: Option<u32>,
    start: Option<String>,
    path: Option<String>,
    host: Option<String>,
    status: Option<StatusCodes>,
    digest: Option<String>,
    contains: Option<String>,
    ca_file: Option<PathBuf>,
    send: Option<String>,
    expect: Option<String>,
    command: Option<CommandLine>,
}

/// `status`: one code, or a list of them.
#[derive(Debug, Clone)]
enum StatusCodes {
    One(u32),
    Many(Vec<u32>),
}

impl<'de> Deserialize<'de> for StatusCodes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = StatusCodes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an HTTP status such as 200, or a list such as [200, 204]")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<StatusCodes, E> {
                u32::try_from(v)
                    .map(StatusCodes::One)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<StatusCodes, A::Error> {
                let mut codes = Vec::new();
                while let Some(code) = seq.next_element::<u32>()? {
                    codes.push(code);
                }
                Ok(StatusCodes::Many(codes))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `command`: a list of words, or one string split on spaces.
#[derive(Debug, Clone)]
enum CommandLine {
    Words(Vec<String>),
    Line(String),
}

impl<'de> Deserialize<'de> for CommandLine {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = CommandLine;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of strings such as [\"/usr/local/bin/check\", \"--quick\"], or a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CommandLine, E> {
                Ok(CommandLine::Line(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<CommandLine, A::Error> {
                let mut words = Vec::new();
                while let Some(word) = seq.next_element::<String>()? {
                    words.push(word);
                }
                Ok(CommandLine::Words(words))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `[service.passive_check]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPassive {
    syn_recv: Option<f64>,
    min_stuck: Option<u32>,
    quiesce: Option<bool>,
    hold: Option<f64>,
}

/// Defaults (ldirectord's `checkinterval` and `checktimeout` are 5 s; keepalived and
/// ldirectord act on the first failed check and the first passed one).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// The default whole-check time limit.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest interval and timeout accepted, seconds.
const MAX_SECS: f64 = 86_400.0;
/// Shortest interval and timeout accepted, seconds.
const MIN_SECS: f64 = 0.01;

fn seconds(key: &str, v: Option<f64>, default: Duration, errors: &mut Vec<String>) -> Duration {
    match v {
        None => default,
        Some(s) if (MIN_SECS..=MAX_SECS).contains(&s) => Duration::from_secs_f64(s),
        Some(s) => {
            errors.push(format!(
                "{key}: {s} is outside {MIN_SECS}..={MAX_SECS} seconds"
            ));
            default
        }
    }
}

/// Validates a check of the real server `dest` (key prefix `key`, e.g.
/// `service[0].real_server[1].check`). `None` (with errors pushed) if invalid, or for
/// `type = "none"`.
pub fn check_spec(
    raw: &RawCheck,
    key: &str,
    dest: &DestSpec,
    errors: &mut Vec<String>,
) -> Option<CheckSpec> {
    let before = errors.len();
    let kind = raw.kind.as_deref().map(str::to_ascii_lowercase);
    let Some(kind) = kind else {
        errors.push(format!(
            "{key}.type: missing (tcp, http, https, udp, external or none)"
        ));
        return None;
    };
    // Keys that only some types read are refused elsewhere, so a typo'd type or a
    // misplaced key is not silently ignored.
    let only = |name: &str, set: bool, types: &[&str], errors: &mut Vec<String>| {
        if set && !types.contains(&kind.as_str()) {
            errors.push(format!(
                "{key}.{name}: only for {} checks",
                types.join(" and ")
            ));
        }
    };
    let web = ["http", "https"];
    only("path", raw.path.is_some(), &web, errors);
    only("host", raw.host.is_some(), &web, errors);
    only("status", raw.status.is_some(), &web, errors);
    only("digest", raw.digest.is_some(), &web, errors);
    only("contains", raw.contains.is_some(), &web, errors);
    only("ca_file", raw.ca_file.is_some(), &["https"], errors);
    only("send", raw.send.is_some(), &["udp"], errors);
    only("expect", raw.expect.is_some(), &["udp"], errors);
    only("command", raw.command.is_some(), &["external"], errors);
    let probe = match kind.as_str() {
        "none" => return None,
        "tcp" => Probe::Tcp,
        "http" | "https" => Probe::Http(http_probe(raw, key, kind == "https", errors)),
        "udp" => Probe::Udp {
            send: raw.send.clone().unwrap_or_default(),
            expect: raw.expect.clone().filter(|e| !e.is_empty()),
        },
        "external" => {
            let command = match &raw.command {
                Some(CommandLine::Words(w)) => w.clone(),
                Some(CommandLine::Line(l)) => l.split_whitespace().map(str::to_string).collect(),
                None => Vec::new(),
            };
            if command.is_empty() {
                errors.push(format!(
                    "{key}.command: an external check needs a command (the server's address and port are appended)"
                ));
            }
            Probe::External { command }
        }
        other => {
            errors.push(format!(
                "{key}.type: unknown check type '{other}' (tcp, http, https, udp, external or none)"
            ));
            return None;
        }
    };
    let port = match raw.port {
        None => dest.port,
        Some(p) if (1..=65_535).contains(&p) => p as u16,
        Some(p) => {
            errors.push(format!("{key}.port: {p} is outside 1..=65535"));
            dest.port
        }
    };
    if port == 0 {
        errors.push(format!(
            "{key}.port: the real server has no port (a port-0 service): give the port to check"
        ));
    }
    let interval = seconds(
        &format!("{key}.interval"),
        raw.interval,
        DEFAULT_INTERVAL,
        errors,
    );
    let timeout = seconds(
        &format!("{key}.timeout"),
        raw.timeout,
        DEFAULT_TIMEOUT,
        errors,
    );
    let count = |name: &str, v: Option<u32>, errors: &mut Vec<String>| match v {
        None => 1,
        Some(n) if (1..=1000).contains(&n) => n,
        Some(n) => {
            errors.push(format!("{key}.{name}: {n} is outside 1..=1000"));
            1
        }
    };
    let rise = count("rise", raw.rise, errors);
    let fall = count("fall", raw.fall, errors);
    let start = match raw.start.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("up") => StartState::Up,
        Some("down") => StartState::Down,
        Some(other) => {
            errors.push(format!("{key}.start: '{other}' is neither up nor down"));
            StartState::Up
        }
    };
    let spec = CheckSpec {
        probe,
        port,
        interval,
        timeout,
        rise,
        fall,
        start,
    };
    (errors.len() == before).then_some(spec)
}

fn http_probe(raw: &RawCheck, key: &str, tls: bool, errors: &mut Vec<String>) -> HttpProbe {
    let path = raw.path.clone().unwrap_or_else(|| "/".to_string());
    if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        errors.push(format!(
            "{key}.path: '{path}' must start with / and hold no spaces"
        ));
    }
    let status: Vec<u32> = match &raw.status {
        None => vec![200],
        Some(StatusCodes::One(s)) => vec![*s],
        Some(StatusCodes::Many(v)) => v.clone(),
    };
    if status.is_empty() || status.iter().any(|s| !(100..=599).contains(s)) {
        errors.push(format!(
            "{key}.status: give HTTP status codes from 100 to 599"
        ));
    }
    let digest = raw.digest.as_ref().map(|d| d.to_ascii_lowercase());
    if let Some(d) = &digest
        && (d.len() != 32 || !d.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        errors.push(format!(
            "{key}.digest: '{d}' is not an MD5 digest (32 hex digits, as keepalived's genhash prints)"
        ));
    }
    let tls = tls.then(|| match &raw.ca_file {
        None => TlsCheck::Unverified,
        Some(path) => TlsCheck::CaFile(path.clone()),
    });
    if let Some(TlsCheck::CaFile(path)) = &tls
        && let Err(e) = std::fs::metadata(path)
    {
        errors.push(format!("{key}.ca_file: {}: {e}", path.display()));
    }
    HttpProbe {
        path,
        host: raw.host.clone(),
        status: status.into_iter().map(|s| s as u16).collect(),
        digest,
        contains: raw.contains.clone(),
        tls,
    }
}

/// Validates `[service.passive_check]` (key prefix `key`).
pub fn passive_spec(raw: &RawPassive, key: &str, errors: &mut Vec<String>) -> Option<PassiveSpec> {
    let before = errors.len();
    let min_stuck = match raw.min_stuck {
        None => 1,
        Some(n) if n >= 1 => n,
        Some(n) => {
            errors.push(format!("{key}.min_stuck: {n} must be at least 1"));
            1
        }
    };
    let spec = PassiveSpec {
        syn_recv: seconds(
            &format!("{key}.syn_recv"),
            raw.syn_recv,
            Duration::from_secs(5),
            errors,
        ),
        min_stuck,
        quiesce: raw.quiesce.unwrap_or(false),
        hold: seconds(
            &format!("{key}.hold"),
            raw.hold,
            Duration::from_secs(30),
            errors,
        ),
    };
    (errors.len() == before).then_some(spec)
}

/// `on_failure` (key `key`).
pub fn on_failure(raw: Option<&str>, key: &str, errors: &mut Vec<String>) -> OnFailure {
    match raw.map(str::to_ascii_lowercase).as_deref() {
        None | Some("quiesce") => OnFailure::Quiesce,
        Some("remove") => OnFailure::Remove,
        Some(other) => {
            errors.push(format!(
                "{key}: unknown action '{other}' (quiesce or remove)"
            ));
            OnFailure::Quiesce
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xvs_dataplane::service::spec::ForwardMethod;

    fn dest() -> DestSpec {
        DestSpec {
            addr: "10.0.0.1".parse().unwrap(),
            port: 80,
            method: ForwardMethod::Route,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    fn parse(toml_text: &str) -> (Option<CheckSpec>, Vec<String>) {
        let raw: RawCheck = crate::config::read::from_toml(toml_text).unwrap();
        let mut errors = Vec::new();
        let spec = check_spec(&raw, "c", &dest(), &mut errors);
        (spec, errors)
    }

    #[test]
    fn an_http_check_takes_its_defaults_and_fractional_seconds() {
        let (spec, errors) = parse("type = \"http\"\ninterval = 0.5\ntimeout = 1\n");
        assert!(errors.is_empty(), "{errors:?}");
        let spec = spec.unwrap();
        assert_eq!(spec.interval, Duration::from_millis(500));
        assert_eq!(spec.timeout, Duration::from_secs(1));
        assert_eq!((spec.rise, spec.fall, spec.port), (1, 1, 80));
        assert_eq!(spec.start, StartState::Up);
        let Probe::Http(h) = spec.probe else { panic!() };
        assert_eq!((h.path.as_str(), h.status.as_slice()), ("/", &[200][..]));
        assert!(h.tls.is_none());
    }

    #[test]
    fn keys_of_other_types_and_bad_values_are_refused_by_key() {
        let (spec, errors) = parse(
            "type = \"tcp\"\npath = \"/x\"\nrise = 0\nstart = \"maybe\"\ninterval = 0\nport = 70000\n",
        );
        assert!(spec.is_none());
        assert_eq!(
            errors,
            vec![
                "c.path: only for http and https checks",
                "c.port: 70000 is outside 1..=65535",
                "c.interval: 0 is outside 0.01..=86400 seconds",
                "c.rise: 0 is outside 1..=1000",
                "c.start: 'maybe' is neither up nor down",
            ]
        );
        let (_, errors) = parse("type = \"http\"\ndigest = \"abc\"\nstatus = [200, 700]\n");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("c.status:"));
        assert!(errors[1].starts_with("c.digest: 'abc' is not an MD5 digest"));
        let (_, errors) = parse("type = \"external\"\n");
        assert!(errors[0].starts_with("c.command:"), "{errors:?}");
        let (_, errors) = parse("type = \"htp\"\n");
        assert!(errors[0].starts_with("c.type: unknown check type 'htp'"));
        let (spec, errors) = parse("type = \"none\"\n");
        assert!(spec.is_none() && errors.is_empty());
    }

    #[test]
    fn external_commands_and_udp_checks() {
        let (spec, _) =
            parse("type = \"external\"\ncommand = \"/bin/check -v\"\nstart = \"down\"\n");
        let spec = spec.unwrap();
        assert_eq!(
            spec.probe,
            Probe::External {
                command: vec!["/bin/check".into(), "-v".into()]
            }
        );
        assert_eq!(spec.start, StartState::Down);
        let (spec, _) = parse("type = \"udp\"\nsend = \"ping\"\nexpect = \"pong\"\nport = 53\n");
        let spec = spec.unwrap();
        assert_eq!(spec.port, 53);
        assert_eq!(
            spec.probe,
            Probe::Udp {
                send: "ping".into(),
                expect: Some("pong".into())
            }
        );
    }
}
