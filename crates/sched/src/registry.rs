//! Schedulers by ipvsadm name.

use crate::scheduler::Scheduler;
use crate::schedulers::{
    dh::DestinationHashing, fo::WeightedFailover, lblc::LocalityLeastConnection,
    lblcr::LocalityLeastConnectionReplicated, lc::LeastConnection, mh::MaglevHashing,
    nq::NeverQueue, ovf::Overflow, rr::RoundRobin, sed::ShortestExpectedDelay, sh::SourceHashing,
    twos::TwoChoices, wlc::WeightedLeastConnection, wrr::WeightedRoundRobin,
};
use crate::server::RealServer;
use xvs_model::{SchedError, SchedOptions, validate};

/// Builds scheduler `name` for `servers` (one instance per worker).
pub fn new_scheduler(
    name: &str,
    options: &SchedOptions,
    servers: &[RealServer],
) -> Result<Box<dyn Scheduler>, SchedError> {
    validate(name, options)?;
    let mut scheduler: Box<dyn Scheduler> = match name {
        "rr" => Box::new(RoundRobin::default()),
        "wrr" => Box::new(WeightedRoundRobin::default()),
        "lc" => Box::new(LeastConnection),
        "wlc" => Box::new(WeightedLeastConnection),
        "sed" => Box::new(ShortestExpectedDelay),
        "nq" => Box::new(NeverQueue),
        "lblc" => Box::new(LocalityLeastConnection::new(options.lblc_expiration_ms)),
        "lblcr" => Box::new(LocalityLeastConnectionReplicated::new(
            options.lblc_expiration_ms,
        )),
        "dh" => Box::new(DestinationHashing::default()),
        "sh" => Box::new(SourceHashing::new(options.flags)),
        "mh" => Box::new(MaglevHashing::new(options.flags, options.mh_table_size)),
        "fo" => Box::new(WeightedFailover),
        "ovf" => Box::new(Overflow),
        "twos" => Box::new(TwoChoices::new(options.seed)),
        other => return Err(SchedError::UnknownScheduler(other.to_string())),
    };
    scheduler.update(servers);
    Ok(scheduler)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xvs_model::{MAX_MH_TABLE_SIZE, SCHEDULER_NAMES};

    #[test]
    fn every_name_builds_and_reports_its_name() {
        for name in SCHEDULER_NAMES {
            let s = new_scheduler(name, &SchedOptions::default(), &[]).unwrap();
            assert_eq!(s.name(), name);
        }
    }

    #[test]
    fn unknown_names_and_bad_tables_are_refused() {
        assert_eq!(
            new_scheduler("fastest", &SchedOptions::default(), &[]).err(),
            Some(SchedError::UnknownScheduler("fastest".into()))
        );
        for size in [0, 1, 4096, 65535, MAX_MH_TABLE_SIZE + 2] {
            let options = SchedOptions {
                mh_table_size: size,
                ..Default::default()
            };
            assert_eq!(
                validate("mh", &options),
                Err(SchedError::BadTableSize(size))
            );
        }
        for size in [251, 4093, 65521, 65537, 131071] {
            let options = SchedOptions {
                mh_table_size: size,
                ..Default::default()
            };
            assert_eq!(validate("mh", &options), Ok(()));
        }
    }
}
