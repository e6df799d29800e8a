//! Errors of scheduler configuration; picking never errors, it returns `None`.

/// A scheduler could not be configured as asked. Each message fits on one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedError {
    /// The name is not one of [`crate::SCHEDULER_NAMES`].
    #[error(
        "unknown scheduler '{0}' (known: rr wrr lc wlc sed nq lblc lblcr dh sh mh fo ovf twos)"
    )]
    UnknownScheduler(String),
    /// A `-b` flag word that IPVS does not define.
    #[error(
        "unknown scheduler flag '{0}' (known: flag-1 flag-2 flag-3 sh-fallback sh-port mh-fallback mh-port)"
    )]
    UnknownFlag(String),
    /// An `sh-*` flag with a scheduler other than sh, or `mh-*` with one other than mh.
    #[error("scheduler flag '{flag}' does not apply to scheduler '{scheduler}'")]
    FlagNotForScheduler {
        /// The flag as written.
        flag: String,
        /// The service's scheduler.
        scheduler: String,
    },
    /// The Maglev table size is not a prime in the accepted range.
    #[error("mh table size {0} must be a prime between 2 and 1000003")]
    BadTableSize(u32),
}
