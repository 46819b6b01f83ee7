//! The SecretBundle controller: gates, pure rendering, apply and status.
//!
//! A reconcile runs in phases: [`reconcile::observe`] gathers facts from the [`cache`]s the
//! watches keep, [`reconcile::gates`] decide whether anything may be written,
//! [`reconcile::render`] builds the ExternalSecrets (pure), [`reconcile::apply`] applies and
//! prunes them, and [`status`] turns the outcome into kstatus conditions (pure), written off the
//! reconcile path.

mod backoff;
pub mod cache;
mod error;
pub mod eso;
pub mod facts;
pub mod limit;
mod metrics;
#[cfg(test)]
mod mock_api;
pub mod reason;
pub mod reconcile;
pub mod shard;
pub mod status;
mod task;
mod watch;

pub use error::Error;
pub use metrics::Metrics;
pub use reason::Reason;
pub use watch::{Options, run, run_with};
