//! # xvs-dataplane
//!
//! Everything between the NIC queue and the NIC queue: the virtual-service table, AF_XDP
//! frame I/O, the XDP filter, the per-queue workers and their statistics.

pub mod afxdp;
pub mod ceiling;
pub mod icmp_limit;
pub mod local;
pub mod memory_port;
pub mod neigh;
pub mod netdev;
pub mod netlink;
pub mod packet_io;
pub mod pipeline;
pub mod publish;
pub mod route;
pub mod runtime;
pub mod service;
pub mod stats;
pub mod syn_filter;
pub mod sync;
pub mod umem;
pub mod worker;
pub mod xdp;
