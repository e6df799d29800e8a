//! A service's scheduler settings: the name, the flags (`ipvsadm -b`) and the other
//! options, and the check that they make sense. The algorithms themselves are xvs-sched's.

use crate::sched_error::SchedError;

/// Every scheduler name xvs knows, in ipvsadm's spelling.
pub const SCHEDULER_NAMES: [&str; 14] = [
    "rr", "wrr", "lc", "wlc", "sed", "nq", "lblc", "lblcr", "dh", "sh", "mh", "fo", "ovf", "twos",
];

/// The scheduler ipvsadm uses when `-s` is not given.
pub const DEFAULT_SCHEDULER: &str = "wlc";

/// IPVS's default Maglev table size (`CONFIG_IP_VS_MH_TAB_INDEX` 12 picks 4093).
pub const DEFAULT_MH_TABLE_SIZE: u32 = 4093;
/// The largest Maglev table accepted: 1,000,003 slots of 2 bytes is 2 MB per worker.
pub const MAX_MH_TABLE_SIZE: u32 = 1_000_003;

/// The three generic scheduler flags of IPVS (`flag-1`, `flag-2`, `flag-3`). sh and mh give
/// flag-1 and flag-2 their own names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchedFlags {
    /// flag-1, `sh-fallback` / `mh-fallback`: when the hashed server cannot take the
    /// connection, walk on to the next one instead of refusing.
    pub fallback: bool,
    /// flag-2, `sh-port` / `mh-port`: hash the client port with the address.
    pub port: bool,
    /// flag-3: accepted for compatibility; no xvs scheduler uses it.
    pub flag3: bool,
}

impl SchedFlags {
    /// Parses ipvsadm's `-b` argument for scheduler `scheduler`, e.g. `sh-fallback,sh-port`.
    /// `sh-*` names are refused with other schedulers, and `mh-*` likewise, so a typo does
    /// not silently change nothing.
    pub fn parse(scheduler: &str, text: &str) -> Result<Self, SchedError> {
        let mut flags = SchedFlags::default();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let owner = word.split_once('-').map(|(o, _)| o).unwrap_or("");
            if (owner == "sh" || owner == "mh") && owner != scheduler {
                return Err(SchedError::FlagNotForScheduler {
                    flag: word.to_string(),
                    scheduler: scheduler.to_string(),
                });
            }
            match word {
                "flag-1" | "sh-fallback" | "mh-fallback" => flags.fallback = true,
                "flag-2" | "sh-port" | "mh-port" => flags.port = true,
                "flag-3" => flags.flag3 = true,
                _ => return Err(SchedError::UnknownFlag(word.to_string())),
            }
        }
        Ok(flags)
    }

    /// The `-b` text ipvsadm prints for these flags under `scheduler` (empty when none).
    pub fn to_ipvsadm(&self, scheduler: &str) -> String {
        let named = scheduler == "sh" || scheduler == "mh";
        let mut words = Vec::new();
        if self.fallback {
            words.push(if named {
                format!("{scheduler}-fallback")
            } else {
                "flag-1".into()
            });
        }
        if self.port {
            words.push(if named {
                format!("{scheduler}-port")
            } else {
                "flag-2".into()
            });
        }
        if self.flag3 {
            words.push("flag-3".into());
        }
        words.join(",")
    }
}

/// Everything a service configures about its scheduler besides the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedOptions {
    /// `-b` flags.
    pub flags: SchedFlags,
    /// Maglev lookup table size; must be prime.
    pub mh_table_size: u32,
    /// lblc/lblcr: how long an unused cache entry lives (IPVS sysctl `lblc_expiration`,
    /// default 24 hours), and for lblcr how long a server set stays unchanged before its most
    /// loaded member is dropped.
    pub lblc_expiration_ms: u64,
    /// Seed for the per-worker random state of `twos`; give each worker its own.
    pub seed: u64,
}

impl Default for SchedOptions {
    fn default() -> Self {
        SchedOptions {
            flags: SchedFlags::default(),
            mh_table_size: DEFAULT_MH_TABLE_SIZE,
            lblc_expiration_ms: 24 * 60 * 60 * 1000,
            seed: 0x9E37_79B9_7F4A_7C15,
        }
    }
}

/// Checks that `options` make sense for scheduler `name` without building it (config
/// validation and `xvsadm -A` use this before changing anything).
pub fn validate(name: &str, options: &SchedOptions) -> Result<(), SchedError> {
    if !SCHEDULER_NAMES.contains(&name) {
        return Err(SchedError::UnknownScheduler(name.to_string()));
    }
    if name == "mh" && !is_valid_table_size(options.mh_table_size) {
        return Err(SchedError::BadTableSize(options.mh_table_size));
    }
    Ok(())
}

/// A Maglev table size must be prime, so every skip visits every slot.
fn is_valid_table_size(size: u32) -> bool {
    if !(2..=MAX_MH_TABLE_SIZE).contains(&size) {
        return false;
    }
    (2..)
        .take_while(|d| d * d <= size)
        .all(|d| !size.is_multiple_of(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipvsadm_names_and_generic_flags() {
        let f = SchedFlags::parse("sh", "sh-fallback,sh-port").unwrap();
        assert_eq!(
            f,
            SchedFlags {
                fallback: true,
                port: true,
                flag3: false
            }
        );
        assert_eq!(f.to_ipvsadm("sh"), "sh-fallback,sh-port");
        let g = SchedFlags::parse("wlc", "flag-2, flag-3").unwrap();
        assert_eq!(
            g,
            SchedFlags {
                fallback: false,
                port: true,
                flag3: true
            }
        );
        assert_eq!(g.to_ipvsadm("wlc"), "flag-2,flag-3");
        assert_eq!(
            SchedFlags::parse("mh", "mh-port").unwrap().to_ipvsadm("mh"),
            "mh-port"
        );
    }

    #[test]
    fn refuses_foreign_and_unknown_flags() {
        assert!(matches!(
            SchedFlags::parse("mh", "sh-port"),
            Err(SchedError::FlagNotForScheduler { .. })
        ));
        assert!(matches!(
            SchedFlags::parse("rr", "fast"),
            Err(SchedError::UnknownFlag(_))
        ));
    }
}
