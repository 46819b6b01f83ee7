//! The SecretBundle controller: gates, pure rendering, apply and status.
//!
//! A reconcile runs in phases: [`observe`] gathers facts from the [`cache`]s the watches keep,
//! [`gates`] decide whether anything may be written, [`render`] builds the ExternalSecrets
//! (pure), [`children`] applies and prunes them, and [`status`] turns the outcome into kstatus
//! conditions (pure), written off the reconcile path.

pub mod cache;
pub mod children;
pub mod error;
pub mod eso;
mod eso_watch;
pub mod gates;
mod handover;
pub mod hash;
pub mod limit;
mod listwatch;
pub mod metrics;
#[cfg(test)]
mod mock_api;
pub mod observe;
pub mod reason;
pub mod reconcile;
pub mod render;
pub mod shard;
pub mod status;
mod triggers;
pub mod watch;
mod writer;

pub use error::Error;
pub use metrics::Metrics;
pub use reason::Reason;
pub use watch::{Options, run, run_with};
