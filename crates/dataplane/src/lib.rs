//! # xvs-dataplane
//!
//! Everything between the NIC queue and the NIC queue: the virtual-service table, AF_XDP
//! frame I/O, the XDP filter, the per-queue workers and their statistics.

pub mod pipeline;
pub mod route;
pub mod service;
pub mod stats;
