//! # xvs-sched: the IPVS schedulers
//!
//! A scheduler picks the real server for each *new* connection of a virtual service; the
//! connection table remembers the choice for the packets that follow. xvs implements every
//! IPVS algorithm with IPVS's formulas and tie-breaking, one file each under
//! [`schedulers`], all behind the [`Scheduler`] trait and chosen by ipvsadm name with
//! [`new_scheduler`]:
//!
//! | name | picks |
//! |---|---|
//! | rr | the next server in turn |
//! | wrr | in turn, in proportion to weight (interleaved) |
//! | lc | least `ActiveConn*256 + InActConn` |
//! | wlc | least `(ActiveConn*256 + InActConn) / weight` (the default) |
//! | sed | least `(ActiveConn + 1) / weight` |
//! | nq | an idle server if any, else sed |
//! | lblc | the server last used for the destination address, else wlc |
//! | lblcr | the least loaded of the destination's server set, growing it when busy |
//! | dh | a hash of the destination address |
//! | sh | a hash of the source address (and port with `sh-port`) |
//! | mh | Maglev consistent hashing of the source address (and port with `mh-port`) |
//! | fo | the highest-weight server |
//! | ovf | the highest-weight server until its ActiveConn exceed its weight |
//! | twos | the less loaded of two servers drawn at random by weight |
//!
//! Rules every algorithm follows: a server with weight 0 is quiesced (no new connections,
//! existing ones continue), an OVERLOADED server (past `-x`, until below `-y` or 3/4 of
//! `-x`) and one that health checks marked unavailable take no new connections, and when no
//! server is left the pick is `None` ("no destination available"). A pick allocates nothing
//! and takes no lock: each worker owns its scheduler instances, and the counters all workers
//! share are atomics in [`ServerLoad`].

mod hash;
mod least;
mod registry;
mod scheduler;
pub mod schedulers;
mod server;

pub use registry::new_scheduler;
pub use scheduler::{Request, Scheduler};
pub use server::{ConnKind, RealServer, ServerLoad};
// A service's scheduler settings and their check live in the model (they are configuration);
// re-exported so schedulers and their users name them from here.
pub use xvs_model::{
    DEFAULT_MH_TABLE_SIZE, DEFAULT_SCHEDULER, MAX_MH_TABLE_SIZE, MAX_WEIGHT, SCHEDULER_NAMES,
    SchedError, SchedFlags, SchedOptions, validate,
};
