//! The `SecretBundle` custom resource (`secrets.ameide.io/v1alpha1`): types only.
//!
//! A bundle is one service's set of External Secrets Operator `ExternalSecret`s for one
//! target namespace. It carries store key *references*, templates and generator references:
//! secret values come from the store or a generator, never from the bundle.

mod secret;
mod source;
mod spec;
mod status;

pub use secret::*;
pub use source::*;
pub use spec::*;
pub use status::*;

/// API group of the `SecretBundle` kind.
pub const GROUP: &str = "secrets.ameide.io";
/// The finalizer that lets the operator clean up (or orphan) children deterministically.
pub const FINALIZER: &str = "secrets.ameide.io/cleanup";
/// Label on every child naming the bundle that owns it.
pub const BUNDLE_LABEL: &str = "secrets.ameide.io/bundle";
/// Standard label naming the manager of every child.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] and the server-side apply field manager.
pub const MANAGER: &str = "secretbundle-operator";
/// Annotation on a bundle that asks ESO to re-sync every child now; any new value is a request.
pub const REFRESH_ANNOTATION: &str = "secrets.ameide.io/refresh-requested-at";
