//! Health checks of real servers, as keepalived's and ldirectord's, inside the daemon.
//!
//! | module | concept |
//! |---|---|
//! | [`spec`] | what the file says: a check per real server, `on_failure`, sorry server, passive detection |
//! | [`probe`] | one check: TCP connect, HTTP/HTTPS GET (ureq, rustls), UDP request, external program |
//! | [`state`] | rise and fall counting |
//! | [`passive`] | DPVS-style detection of real servers whose new connections stay in SYN_RECV |
//! | [`overlay`] | the table in force: the operator's table with the checks' decisions laid over it |
//! | [`runner`] | the threads: one per check, one walking the connection table |
//!
//! Checks never change the operator's table (the file, `xvsadm`, ldirectord's ipvsadm
//! lines): the daemon keeps it as given and publishes the effective table that
//! [`overlay::Health::effective`] derives from it, which is what `xvsadm -L` lists (a
//! quiesced server shows weight 0, as in IPVS). So the operator's edits and the checks'
//! never fight: the operator decides whether a real server exists and its weight, the check
//! whether it takes new connections.

pub mod overlay;
pub mod passive;
pub mod probe;
pub mod runner;
pub mod spec;
pub mod state;

pub use overlay::Health;
pub use spec::{DestKey, HealthConfig};
