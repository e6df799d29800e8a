//! The `[defense]` and `[icmp]` sections of the configuration file: the SYN-flood defence
//! of the connection table (IPVS's `drop_entry` and `secure_tcp` strategies, automatic
//! under pressure by default), the XDP SYN filter (`syn_filter`, automatic while a flood
//! overwhelms the director, see `xvs_dataplane::syn_filter`) and the rate limits of the ICMP errors the director sends
//! (Linux's `icmp_ratelimit`, `icmp_msgs_per_sec`, `icmp_msgs_burst`). Keys and defaults:
//! crates/cli/README.md.

use serde::Deserialize;
use xvs_conntrack::{Defense, DefenseMode};
use xvs_dataplane::icmp_limit::IcmpLimits;

use crate::ipvsadm::MAX_TIMEOUT;

/// The daemon's defence: both strategies and the SYN filter automatic (IPVS's sysctls
/// default to off, which lets a small SYN flood lock every new client out).
pub fn default_defense() -> Defense {
    Defense {
        drop_entry: DefenseMode::Auto,
        secure_tcp: DefenseMode::Auto,
        syn_filter: DefenseMode::Auto,
        ..Defense::default()
    }
}

/// The most SYNs a second `defense.syn_flood_rate` may name.
const MAX_SYN_FLOOD_RATE: u32 = 1_000_000_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawDefense {
    drop_entry: Option<u8>,
    secure_tcp: Option<u8>,
    pressure_percent: Option<u8>,
    syn_recv_timeout: Option<u32>,
    secure_syn_recv_timeout: Option<u32>,
    syn_filter: Option<u8>,
    syn_flood_rate: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawIcmp {
    ratelimit: Option<u32>,
    msgs_per_sec: Option<u32>,
    msgs_burst: Option<u32>,
}

/// Validates `[defense]`, one error line per bad key.
pub(crate) fn defense(raw: RawDefense, errors: &mut Vec<String>) -> Defense {
    let mut d = default_defense();
    let mut mode = |key: &str, value: Option<u8>, into: &mut DefenseMode| {
        if let Some(v) = value {
            match DefenseMode::from_u8(v) {
                Some(m) => *into = m,
                None => errors.push(format!(
                    "defense.{key}: {v} is not a mode (0 off, 1 automatic, 2 on until pressure ends, 3 always)"
                )),
            }
        }
    };
    mode("drop_entry", raw.drop_entry, &mut d.drop_entry);
    mode("secure_tcp", raw.secure_tcp, &mut d.secure_tcp);
    mode("syn_filter", raw.syn_filter, &mut d.syn_filter);
    if let Some(r) = raw.syn_flood_rate {
        if (1..=MAX_SYN_FLOOD_RATE).contains(&r) {
            d.syn_flood_rate = r;
        } else {
            errors.push(format!(
                "defense.syn_flood_rate: {r} is outside 1..={MAX_SYN_FLOOD_RATE} SYNs a second"
            ));
        }
    }
    if let Some(p) = raw.pressure_percent {
        if (1..=100).contains(&p) {
            d.pressure_percent = p;
        } else {
            errors.push(format!("defense.pressure_percent: {p} is outside 1..=100"));
        }
    }
    let mut timeout = |key: &str, value: Option<u32>, into: &mut u32| {
        if let Some(v) = value {
            if (1..=MAX_TIMEOUT).contains(&v) {
                *into = v;
            } else {
                errors.push(format!(
                    "defense.{key}: {v} is outside 1..={MAX_TIMEOUT} seconds"
                ));
            }
        }
    };
    timeout(
        "syn_recv_timeout",
        raw.syn_recv_timeout,
        &mut d.syn_recv_timeout,
    );
    timeout(
        "secure_syn_recv_timeout",
        raw.secure_syn_recv_timeout,
        &mut d.secure_syn_recv_timeout,
    );
    d
}

/// Validates `[icmp]` (0 turns a limit off).
pub(crate) fn icmp(raw: RawIcmp, errors: &mut Vec<String>) -> IcmpLimits {
    let mut l = IcmpLimits::default();
    if let Some(ms) = raw.ratelimit {
        if ms <= 60_000 {
            l.ratelimit_ms = ms;
        } else {
            errors.push(format!(
                "icmp.ratelimit: {ms} ms is more than a minute (0 turns it off)"
            ));
        }
    }
    l.msgs_per_sec = raw.msgs_per_sec.unwrap_or(l.msgs_per_sec);
    l.msgs_burst = raw.msgs_burst.unwrap_or(l.msgs_burst);
    if l.msgs_per_sec != 0 && l.msgs_burst == 0 {
        errors.push("icmp.msgs_burst: must be at least 1 while msgs_per_sec is on".to_string());
    }
    l
}

#[cfg(test)]
mod tests {
    use crate::config::parse_str;
    use crate::names::Names;

    use super::*;

    #[test]
    fn defaults_are_automatic_defence_and_linuxs_icmp_limits() {
        let c = parse_str("", &Names::none()).unwrap().daemon;
        assert_eq!(c.defense, default_defense());
        assert_eq!(c.defense.drop_entry, DefenseMode::Auto);
        assert_eq!(c.defense.pressure_percent, 90);
        assert_eq!(c.defense.syn_recv_timeout, 60);
        assert_eq!(c.defense.syn_filter, DefenseMode::Auto);
        assert_eq!(c.defense.syn_flood_rate, 10_000);
        assert_eq!(c.icmp, IcmpLimits::default());
        assert_eq!(c.icmp.ratelimit_ms, 1000);
    }

    #[test]
    fn every_key_is_read() {
        let text = "[defense]\ndrop_entry = 3\nsecure_tcp = 0\npressure_percent = 75\n\
                    syn_recv_timeout = 30\nsecure_syn_recv_timeout = 4\n\
                    syn_filter = 3\nsyn_flood_rate = 50000\n\
                    [icmp]\nratelimit = 250\nmsgs_per_sec = 100\nmsgs_burst = 10\n";
        let c = parse_str(text, &Names::none()).unwrap().daemon;
        assert_eq!(
            c.defense,
            Defense {
                drop_entry: DefenseMode::Always,
                secure_tcp: DefenseMode::Off,
                pressure_percent: 75,
                syn_recv_timeout: 30,
                secure_syn_recv_timeout: 4,
                syn_filter: DefenseMode::Always,
                syn_flood_rate: 50_000,
            }
        );
        assert_eq!(
            c.icmp,
            IcmpLimits {
                ratelimit_ms: 250,
                msgs_per_sec: 100,
                msgs_burst: 10,
            }
        );
    }

    #[test]
    fn bad_values_are_one_line_each() {
        let text = "[defense]\ndrop_entry = 4\npressure_percent = 0\nsyn_recv_timeout = 0\n\
                    syn_filter = 5\nsyn_flood_rate = 0\n\
                    [icmp]\nratelimit = 70000\nmsgs_burst = 0\n";
        let e = parse_str(text, &Names::none()).unwrap_err();
        assert_eq!(
            e.0,
            vec![
                "defense.drop_entry: 4 is not a mode (0 off, 1 automatic, 2 on until pressure ends, 3 always)",
                "defense.syn_filter: 5 is not a mode (0 off, 1 automatic, 2 on until pressure ends, 3 always)",
                "defense.syn_flood_rate: 0 is outside 1..=1000000000 SYNs a second",
                "defense.pressure_percent: 0 is outside 1..=100",
                "defense.syn_recv_timeout: 0 is outside 1..=2678400 seconds",
                "icmp.ratelimit: 70000 ms is more than a minute (0 turns it off)",
                "icmp.msgs_burst: must be at least 1 while msgs_per_sec is on",
            ]
        );
        let e = parse_str("[defense]\nsyn_timeout = 5\n", &Names::none()).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert!(e.0[0].contains("syn_timeout"), "{}", e.0[0]);
    }
}
