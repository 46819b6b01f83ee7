//! What the operator knows about the External Secrets Operator: its API versions and kinds
//! ([`versions`]), its CRDs as the watches read them ([`crd`]), reading the schema an installed
//! CRD serves ([`schema`]), and which ESO serves
//! which field, with the refusal to apply what the installed one cannot express ([`features`]),
//! and existing ExternalSecrets as bundle entries ([`import`]).

pub mod crd;
pub mod features;
pub mod import;
pub mod schema;
pub mod versions;

pub use crd::CrdSummary;
pub use features::{Capabilities, EsoTooOld, Release};
pub use schema::{Gap, ServedSchema};
pub use versions::*;
