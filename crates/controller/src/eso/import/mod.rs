//! Import: an existing ExternalSecret (Helm-made, hand-written) as a bundle entry, the inverse
//! of [`crate::reconcile::render`]. Pure. Nothing is guessed: what a bundle cannot express
//! exactly is refused, naming the field, and every field is either carried or refused (see
//! [`reader`]).
//! [`bundles`] groups the entries into bundles, one per target namespace.

mod assemble;
pub mod fields;
mod reader;
mod spec;

pub use assemble::{Imported, bundles};
pub use fields::{FIELDS, Field};
pub use reader::Refusal;

use secretbundle_api::{BundleSecret, SecretStoreRef};
use serde_json::Value;

use super::GROUP;

/// Labels and annotations by which Helm (and charts following its conventions) name the release.
const RELEASE_ANNOTATION: &str = "meta.helm.sh/release-name";
const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";

/// One ExternalSecret, converted. `refusals` empty: `secret` is exact. Otherwise `secret` holds
/// what could be carried, and every field of the input is in one or the other.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub namespace: String,
    /// The Helm release it came from, if its metadata says.
    pub release: Option<String>,
    /// The store it names; unused (and not rendered) when every source is a generator.
    pub store: Option<SecretStoreRef>,
    /// Its refresh interval, ESO's default (`1h`) when unset.
    pub refresh_interval: String,
    /// The entry, without store or refresh interval (the bundle decides where those go).
    pub secret: BundleSecret,
    pub refusals: Vec<Refusal>,
    /// Fields carried in a form that differs from the input without changing what ESO does.
    pub notes: Vec<Refusal>,
}

impl Entry {
    /// `namespace/name`, as the refusals name the object.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.secret.name)
    }
}

/// Converts one ExternalSecret (any served version's JSON). `Err` when the object itself is not
/// one: not the kind, an unsupported API version, no name or namespace.
pub fn entry(object: &Value) -> Result<Entry, String> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    if kind != "ExternalSecret" || !api_version.starts_with(&format!("{GROUP}/")) {
        return Err(format!(
            "{api_version} {kind} is not an ExternalSecret ({GROUP})"
        ));
    }
    let meta = &object["metadata"];
    let name = meta["name"]
        .as_str()
        .ok_or("an ExternalSecret without metadata.name")?;
    let namespace = meta["namespace"]
        .as_str()
        .ok_or_else(|| format!("ExternalSecret {name} has no metadata.namespace"))?;
    if !matches!(
        api_version,
        "external-secrets.io/v1" | "external-secrets.io/v1beta1"
    ) {
        return Err(format!(
            "ExternalSecret {namespace}/{name}: {api_version} is not supported; read it as \
             external-secrets.io/v1 or v1beta1 (ESO serves those for the same object)"
        ));
    }
    let release = meta["annotations"][RELEASE_ANNOTATION]
        .as_str()
        .or_else(|| meta["labels"][INSTANCE_LABEL].as_str())
        .map(str::to_string);
    let converted = spec::convert(name, object.get("spec"));
    Ok(Entry {
        namespace: namespace.to_string(),
        release,
        store: converted.store,
        refresh_interval: converted.refresh_interval,
        secret: converted.secret,
        refusals: converted.refusals,
        notes: converted.notes,
    })
}

#[cfg(test)]
mod tests;
