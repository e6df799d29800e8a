//! # xvs-cli
//!
//! The control plane of xvs: the `xvsadm` admin tool, which speaks ipvsadm 1.31's language
//! and prints its formats, and the `xvs` daemon's control side.
//!
//! | module | concept |
//! |---|---|
//! | [`names`] | host and service names (`/etc/hosts`, `/etc/services`) for `host:port` |
//! | [`ipvsadm`] | ipvsadm's command line, parsed into a typed [`ipvsadm::Command`] |
//! | [`listing`] | the data a listing shows ([`listing::ListData`]) and ipvsadm's text formats |
//! | [`director`] | what the daemon does for xvsadm ([`director::Director`]) and the table-only reference implementation |
//! | [`control`] | the unix control socket: JSON lines, the server loop and the client |
//! | [`config`] | the TOML configuration file, validated into [`config::DaemonConfig`] |
//! | [`daemon`] | `xvs run`: signals, reload, the control thread and the dataplane seam |
//! | [`forwarding`] | the AF_XDP dataplane behind that seam |
//! | [`metrics`] | the Prometheus endpoint: node_exporter's IPVS metrics and xvs's own |
//! | [`spelling`] | ipvsadm's words for the model's values (forwarding methods' column words and options) |
//! | [`realserver`] | `xvs realserver`: a DR or TUN real server's VIP and ARP sysctls, applied and undone |
//! | [`health`] | real servers' health checks and the table in force they derive |
//! | [`announce`] | scale-out: the VIPs held on a TUN device for a BGP daemon while healthy, `xvs drain` |
//! | [`lab`] | `xvs lab`: the seed labs in network namespaces, for people and for tests |

pub mod announce;
pub mod config;
pub mod control;
pub mod daemon;
pub mod defense;
pub mod director;
pub mod forwarding;
pub mod health;
pub mod ipvsadm;
pub mod lab;
pub mod listing;
pub mod metrics;
pub mod names;
pub mod realserver;
pub mod spelling;
