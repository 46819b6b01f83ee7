//! ExternalSecrets as the operator keeps them. Its own children (labelled) keep what ownership,
//! drift and readiness need: metadata without managedFields, the spec as raw JSON text (parsed
//! only to check drift) and ESO's Ready condition. Any other ExternalSecret is known by its
//! metadata alone, enough to refuse (or adopt) a same-name object.

use std::borrow::Cow;
use std::sync::OnceLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::core::{ApiResource, DynamicResourceScope, PartialObjectMeta, Resource};
use secretbundle_api::{BUNDLE_LABEL, SecretBundle};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::mirror::Cached;
use crate::children::{APPLIED_HASH_ANNOTATION, is_subset};
use crate::error::Error;

/// Kept client-side by `kubectl apply`: the whole object again, never needed here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// One of the operator's children (an ExternalSecret labelled with its bundle).
#[derive(Clone, Debug, Deserialize)]
pub struct Child {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<Box<RawValue>>,
    #[serde(default)]
    pub status: ChildStatus,
    /// The applied hash this object was found to match in full, so it is checked once.
    #[serde(skip)]
    verified: OnceLock<String>,
}

/// The part of an ExternalSecret's status the operator reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildStatus {
    #[serde(default)]
    pub conditions: Vec<ChildCondition>,
    #[serde(default)]
    pub synced_resource_version: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ChildCondition {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

impl Resource for Child {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }
    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

fn version_of(meta: &ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

impl Cached for std::sync::Arc<Child> {
    fn version(&self) -> Option<u64> {
        version_of(&self.metadata)
    }
    fn same(&self, other: &Self) -> bool {
        self.metadata.uid == other.metadata.uid
            && self.metadata.resource_version == other.metadata.resource_version
    }
}

impl Child {
    /// Drops what the operator never reads, before the object is kept.
    pub fn trimmed(mut self) -> Self {
        self.metadata.managed_fields = None;
        if let Some(a) = self.metadata.annotations.as_mut() {
            a.remove(LAST_APPLIED);
        }
        self.status.conditions.retain(|c| c.type_ == "Ready");
        self
    }

    /// The bundle its label names.
    pub fn bundle(&self) -> Option<&str> {
        self.labels().get(BUNDLE_LABEL).map(String::as_str)
    }

    pub fn ready(&self) -> Option<&ChildCondition> {
        self.status.conditions.iter().find(|c| c.type_ == "Ready")
    }

    /// Whether this object already is `want` (hash annotation included): every field of `want`
    /// is here with the same value; server defaults are fine, anything else is drift to undo.
    pub fn matches(&self, want: &DynamicObject) -> Result<bool, Error> {
        let Some(hash) = want.annotations().get(APPLIED_HASH_ANNOTATION) else {
            return Ok(false);
        };
        if self.annotations().get(APPLIED_HASH_ANNOTATION) != Some(hash) {
            return Ok(false);
        }
        if self.verified.get() == Some(hash) {
            return Ok(true);
        }
        let serialize = |source| Error::Serialize {
            what: "child",
            source,
        };
        let mut want_json = serde_json::to_value(want).map_err(serialize)?;
        if let Some(obj) = want_json.as_object_mut() {
            obj.remove("apiVersion");
            obj.remove("kind");
        }
        if let Some(meta) = want_json.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("name");
            meta.remove("namespace");
        }
        let spec = match &self.spec {
            Some(raw) => serde_json::from_str(raw.get()).map_err(serialize)?,
            None => Value::Null,
        };
        let have = serde_json::json!({
            "metadata": {
                "labels": self.metadata.labels,
                "annotations": self.metadata.annotations,
                "ownerReferences": self.metadata.owner_references,
            },
            "spec": spec,
        });
        let ok = is_subset(&want_json, &have);
        if ok {
            let _ = self.verified.set(hash.clone());
        }
        Ok(ok)
    }
}

/// Any ExternalSecret without the bundle label, by its metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Foreign {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// UIDs of its owners: one may be a bundle whose label was removed by hand.
    pub owners: Vec<String>,
}

impl Foreign {
    pub fn from_meta(obj: &PartialObjectMeta<DynamicObject>) -> Self {
        Foreign {
            uid: obj.metadata.uid.clone(),
            resource_version: obj.metadata.resource_version.clone(),
            owners: obj
                .owner_references()
                .iter()
                .map(|o| o.uid.clone())
                .collect(),
        }
    }

    pub fn owned_by(&self, bundle: &SecretBundle) -> bool {
        bundle
            .metadata
            .uid
            .as_ref()
            .is_some_and(|uid| self.owners.contains(uid))
    }
}

impl Cached for Foreign {
    fn version(&self) -> Option<u64> {
        self.resource_version.as_deref()?.parse().ok()
    }
    /// Only who it is and who owns it matter to a bundle; the newest version is kept anyway.
    fn same(&self, other: &Self) -> bool {
        self.uid == other.uid && self.owners == other.owners
    }
}
