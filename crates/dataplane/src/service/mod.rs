//! Virtual services: the configured table ([`spec`], xvs-model's, re-exported here) and the
//! compiled snapshot the workers read.

pub mod classify;
pub mod classify6;
pub mod marks;
pub mod snapshot;
pub use xvs_model::spec;
