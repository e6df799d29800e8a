//! Virtual services: the configured table ([`spec`]) and, later, the compiled snapshot the
//! workers read.

pub mod classify;
pub mod snapshot;
pub mod spec;
