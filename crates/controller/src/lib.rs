//! The SecretBundle controller: gates, pure rendering, apply and status.
//!
//! A reconcile runs in phases: [`observe`] gathers facts, [`gates`] decide whether anything may
//! be written, [`render`] builds the ExternalSecrets (pure), [`children`] applies and prunes
//! them, and [`status`] turns the outcome into kstatus conditions (pure).

pub mod children;
pub mod error;
pub mod eso;
pub mod gates;
pub mod metrics;
pub mod observe;
pub mod reason;
pub mod reconcile;
pub mod render;
pub mod status;
pub mod watch;

pub use error::Error;
pub use metrics::Metrics;
pub use reason::Reason;
pub use watch::run;
