//! # xvs-model: the control plane's model
//!
//! What an operator configures and reads back, independent of how packets move: the virtual
//! services and their real servers ([`spec`]) with IPVS's edit rules, each service's
//! scheduler settings ([`scheduler`]), the connection timeouts ([`timeouts`]) and the
//! traffic statistics and rates ([`stats`]), and the transport protocols and TCP flags
//! every crate names the same way ([`protocol`]). The dataplane compiles the specs into the snapshot its
//! workers read, xvs-sched builds the schedulers they name, and the CLI parses and prints them
//! in ipvsadm's syntax. This crate is at the bottom: it depends on no other xvs crate.

pub mod mark;
pub mod protocol;
mod sched_error;
pub mod scheduler;
pub mod spec;
pub mod stats;
pub mod timeouts;

pub use protocol::{Protocol, TcpEvent, TcpFlags};
pub use sched_error::SchedError;
pub use scheduler::{
    DEFAULT_MH_TABLE_SIZE, DEFAULT_SCHEDULER, MAX_MH_TABLE_SIZE, SCHEDULER_NAMES, SchedFlags,
    SchedOptions, validate,
};
pub use spec::MAX_WEIGHT;
pub use stats::{Rates, Stats};
pub use timeouts::Timeouts;
