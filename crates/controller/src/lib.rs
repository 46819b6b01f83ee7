//! The SecretBundle controller. Its folders are the stages a change in the cluster passes through:
//!
//! 1. `watch`: watches bundles, namespaces, the ESO CRDs and their objects, fills the [`cache`]
//!    and wakes the bundles a change concerns; [`run`] starts it all.
//! 2. [`cache`]: the operator's view of the cluster, read by every reconcile instead of GETs.
//! 3. [`reconcile`]: one bundle at a time. [`reconcile::observe`] gathers its [`facts`] from the
//!    caches, [`reconcile::gates`] decide whether anything may be written, [`reconcile::render`]
//!    builds the ExternalSecrets (pure) and [`reconcile::apply`] applies and prunes them.
//! 4. [`status`]: the outcome as kstatus conditions (pure), written off the reconcile path.
//!
//! Imports point one way: `watch` uses `reconcile`, which uses `status`; all three use the
//! `cache`, which holds `facts`; any module may use the cross-cutting ones at the top ([`eso`],
//! [`reason`], `error`, `metrics`, [`limit`], [`shard`], `backoff`, `task`), which use no stage.
//! docs/architecture.md has the details, and the one import still left pointing the other way.

pub mod applied;
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
