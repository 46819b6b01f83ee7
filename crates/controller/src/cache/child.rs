//! ExternalSecrets as the operator keeps them. Its own children (labelled) keep what ownership,
//! drift and readiness need: metadata without managedFields, the spec as raw JSON text (parsed
//! only to check drift) and ESO's Ready condition. Any other ExternalSecret is known by its
//! metadata alone, enough to refuse (or adopt) a same-name object.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use kube::api::DynamicObject;
use kube::core::{ApiResource, DynamicResourceScope, PartialObjectMeta, Resource};
use secretbundle_api::{BUNDLE_LABEL, MANAGER, SecretBundle};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;

use super::compact::{Annotation, Pool, Token, shared};
use super::mirror::Cached;
use crate::applied::{APPLIED_HASH_ANNOTATION, is_legacy_hash_of, is_subset};
use crate::error::Error;

/// Kept client-side by `kubectl apply`: the whole object again, never needed here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An ExternalSecret as the apiserver sends it (watch events, apply responses), minus what is
/// never read: of managedFields, most of an object's bytes, only whether another manager
/// claims the spec is kept (see [`Child::shares_spec`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "Wire")]
pub struct EsObject {
    pub metadata: ObjectMeta,
    spec: Option<Box<RawValue>>,
    status: ChildStatus,
    shares_spec: bool,
}

#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    metadata: WireMeta,
    #[serde(default)]
    spec: Option<Box<RawValue>>,
    #[serde(default)]
    status: ChildStatus,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<OwnerReference>>,
    #[serde(default)]
    managed_fields: Vec<WireManager>,
}

/// One managedFields entry, parsed only as far as who claims what.
#[derive(Deserialize)]
struct WireManager {
    manager: Option<String>,
    subresource: Option<String>,
    #[serde(rename = "fieldsV1")]
    fields: Option<WireFields>,
}

#[derive(Deserialize)]
struct WireFields {
    #[serde(rename = "f:spec")]
    spec: Option<IgnoredAny>,
}

impl WireManager {
    fn claims_spec(&self) -> bool {
        other_claims_spec(
            self.manager.as_deref(),
            self.subresource.as_deref(),
            self.fields.as_ref().is_some_and(|f| f.spec.is_some()),
        )
    }
}

/// Whether a managedFields entry (its manager, subresource, and whether its fields include
/// `f:spec`) is another writer (Helm, kubectl) of the main resource co-owning the spec.
pub(crate) fn other_claims_spec(
    manager: Option<&str>,
    subresource: Option<&str>,
    has_spec: bool,
) -> bool {
    manager != Some(MANAGER) && subresource.unwrap_or_default().is_empty() && has_spec
}

impl From<Wire> for EsObject {
    fn from(w: Wire) -> Self {
        let m = w.metadata;
        let shares_spec = m.managed_fields.iter().any(WireManager::claims_spec);
        EsObject {
            metadata: ObjectMeta {
                name: m.name,
                namespace: m.namespace,
                uid: m.uid,
                resource_version: m.resource_version,
                generation: m.generation,
                labels: m.labels,
                annotations: m.annotations,
                owner_references: m.owner_references,
                ..ObjectMeta::default()
            },
            spec: w.spec,
            status: w.status,
            shares_spec,
        }
    }
}

/// The part of an ExternalSecret's status the operator reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChildStatus {
    #[serde(default)]
    conditions: Vec<ChildCondition>,
    #[serde(default)]
    synced_resource_version: Option<String>,
}

/// ESO's Ready condition on a child.
#[derive(Clone, Debug, Default, Deserialize)]
struct ChildCondition {
    #[serde(rename = "type")]
    type_: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl Resource for EsObject {
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

/// Labels: keys and values shared with every other child carrying them (a bundle's name, say).
/// The whole set is shared too: a bundle's children carry the same labels.
type Labels = Arc<[(Arc<str>, Arc<str>)]>;
/// Annotations: shared keys; the values (an applied hash) are the child's own.
type Annotations = Box<[(Arc<str>, Annotation)]>;

static LABELS: Pool<[(Arc<str>, Arc<str>)]> = Pool::new();
static OWNERS: Pool<[Owner]> = Pool::new();

fn labels(map: Option<BTreeMap<String, String>>) -> Labels {
    let pairs: Vec<_> = map
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| (shared(k), shared(v)))
        .collect();
    LABELS.share(&pairs, || Arc::from(pairs.as_slice()))
}

/// The ownerReferences, shared: a bundle's children have the same one.
fn owners(refs: Option<Vec<OwnerReference>>) -> Arc<[Owner]> {
    let owners: Vec<Owner> = refs.iter().flatten().map(Owner::new).collect();
    OWNERS.share(&owners, || Arc::from(owners.as_slice()))
}

fn annotations(map: Option<BTreeMap<String, String>>) -> Annotations {
    map.unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != LAST_APPLIED)
        .map(|(k, v)| (shared(&k), Annotation::new(v)))
        .collect()
}

fn label<'a>(labels: &'a Labels, key: &str) -> Option<&'a str> {
    labels.iter().find(|(k, _)| &**k == key).map(|(_, v)| &**v)
}

/// Whether the annotation `key` is `value`.
fn annotated(pairs: &Annotations, key: &str, value: &str) -> bool {
    annotation(pairs, key).is_some_and(|a| a.is(value))
}

fn annotation<'a>(pairs: &'a Annotations, key: &str) -> Option<&'a Annotation> {
    pairs.iter().find(|(k, _)| &**k == key).map(|(_, v)| v)
}

fn to_map<V: std::fmt::Display>(pairs: &[(Arc<str>, V)]) -> Option<serde_json::Map<String, Value>> {
    (!pairs.is_empty()).then(|| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(v.to_string())))
            .collect()
    })
}

/// An ownerReference, its repeated strings shared.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Owner {
    api_version: Arc<str>,
    kind: Arc<str>,
    name: Arc<str>,
    uid: Token,
    controller: Option<bool>,
    block_owner_deletion: Option<bool>,
}

impl Owner {
    fn new(o: &OwnerReference) -> Self {
        Owner {
            api_version: shared(&o.api_version),
            kind: shared(&o.kind),
            name: shared(&o.name),
            uid: Token::new(&o.uid),
            controller: o.controller,
            block_owner_deletion: o.block_owner_deletion,
        }
    }

    /// As the apiserver writes it (unset flags left out).
    fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("apiVersion".into(), Value::from(&*self.api_version));
        m.insert("kind".into(), Value::from(&*self.kind));
        m.insert("name".into(), Value::from(&*self.name));
        m.insert("uid".into(), Value::from(self.uid.to_string()));
        if let Some(c) = self.controller {
            m.insert("controller".into(), Value::from(c));
        }
        if let Some(b) = self.block_owner_deletion {
            m.insert("blockOwnerDeletion".into(), Value::from(b));
        }
        Value::Object(m)
    }
}

/// ESO's Ready condition as kept: one copy of each distinct condition, shared by every child
/// that has it (thousands of synced children say the same).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ready {
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
}

static READY: Pool<Ready> = Pool::new();

fn ready(c: ChildCondition) -> Arc<Ready> {
    let r = Ready {
        status: c.status,
        reason: c.reason,
        message: c.message,
    };
    READY.share(&r, || Arc::new(r.clone()))
}

/// The applied hash a version of a child was found to match in full.
#[derive(Debug)]
enum Verified {
    /// The one its own annotation carries (the usual case: no second copy of it).
    Stamped,
    /// Another (an older release's hash of the same object was accepted).
    Hash(Box<str>),
}

/// One of the operator's children (an ExternalSecret labelled with its bundle), as kept: what
/// ownership, drift and readiness need, in as few bytes as 50,000 of them allow.
#[derive(Debug, Deserialize)]
#[serde(from = "EsObject")]
pub struct Child {
    uid: Option<Token>,
    resource_version: Option<Token>,
    generation: Option<i64>,
    labels: Labels,
    annotations: Annotations,
    owners: Arc<[Owner]>,
    /// The spec as raw JSON text, parsed only to check drift, and dropped once this version of
    /// the object is known to match: at 10,000 children, specs would be most of the cache.
    spec: Mutex<Option<Box<RawValue>>>,
    ready: Option<Arc<Ready>>,
    synced_resource_version: Option<Box<str>>,
    /// The applied hash this object was found to match in full, so it is checked once.
    verified: OnceLock<Verified>,
    /// Another manager co-owns fields of the spec: see [`Child::shares_spec`].
    shares_spec: bool,
}

impl From<EsObject> for Child {
    fn from(o: EsObject) -> Self {
        let m = o.metadata;
        Child {
            uid: m.uid.as_deref().map(Token::new),
            resource_version: m.resource_version.as_deref().map(Token::new),
            generation: m.generation,
            labels: labels(m.labels),
            annotations: annotations(m.annotations),
            owners: owners(m.owner_references),
            spec: Mutex::new(o.spec),
            ready: o
                .status
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")
                .map(ready),
            synced_resource_version: o.status.synced_resource_version.map(String::into_boxed_str),
            verified: OnceLock::new(),
            shares_spec: o.shares_spec,
        }
    }
}

impl Cached for std::sync::Arc<Child> {
    fn version(&self) -> Option<u64> {
        self.resource_version.as_ref()?.decimal()
    }
    fn same(&self, other: &Self) -> bool {
        self.uid == other.uid && self.resource_version == other.resource_version
    }

    /// A new version of a child known to match (ESO wrote its status, say) still matches when
    /// neither its spec (same generation: the apiserver bumps it on every spec change) nor the
    /// metadata the operator sets changed; then its spec need not be kept either.
    fn carry_from(&mut self, old: &Self) {
        let Some(verified) = old.verified.get() else {
            return;
        };
        let Some(new) = std::sync::Arc::get_mut(self) else {
            return;
        };
        if new.verified.get().is_none()
            && new.uid == old.uid
            && new.generation.is_some()
            && new.generation == old.generation
            && new.labels == old.labels
            && new.annotations == old.annotations
            && new.owners == old.owners
        {
            new.verified = OnceLock::from(match verified {
                Verified::Stamped => Verified::Stamped,
                Verified::Hash(h) => Verified::Hash(h.clone()),
            });
            *new.spec.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }
}

impl Child {
    /// The bundle its label names.
    pub fn bundle(&self) -> Option<&str> {
        label(&self.labels, BUNDLE_LABEL)
    }

    pub fn uid(&self) -> Option<String> {
        self.uid.as_ref().map(Token::to_string)
    }

    pub fn generation(&self) -> Option<i64> {
        self.generation
    }

    pub fn ready(&self) -> Option<&Ready> {
        self.ready.as_deref()
    }

    pub fn synced_resource_version(&self) -> Option<&str> {
        self.synced_resource_version.as_deref()
    }

    /// Another manager of the main resource (the Helm release a child was adopted from,
    /// `kubectl edit`) still claims fields of its spec. Such co-owned fields would outlive the
    /// bundle's apply: a field the bundle later drops stays set, and the old owner's next
    /// write goes through unopposed. Adoption hands the spec over to the operator alone.
    pub fn shares_spec(&self) -> bool {
        self.shares_spec
    }

    /// Whether this object already is `want` (hash annotation included): every field of `want`
    /// is here with the same value; server defaults are fine, anything else is drift to undo.
    pub fn matches(&self, want: &DynamicObject) -> Result<bool, Error> {
        let Some(hash) = want.annotations().get(APPLIED_HASH_ANNOTATION) else {
            return Ok(false);
        };
        // Set only once this very version passed the checks below against a `want` hashing so.
        if self
            .verified
            .get()
            .is_some_and(|v| self.verified_is(v, hash))
        {
            return Ok(true);
        }
        // An older release's hash of the same `want` (see crate::applied::hash) is as good as
        // ours: an upgrade must not rewrite converged children just to restamp them.
        let stamped = match annotation(&self.annotations, APPLIED_HASH_ANNOTATION) {
            Some(have) if have.is(hash) => None,
            Some(have) if is_legacy_hash_of(&have.to_string(), want)? => Some(have.to_string()),
            _ => return Ok(false),
        };
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
            if let Some(old) = stamped
                && let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut)
            {
                a.insert(APPLIED_HASH_ANNOTATION.into(), Value::from(old));
            }
        }
        let mut kept = self.spec.lock().unwrap_or_else(PoisonError::into_inner);
        let spec = match kept.as_ref() {
            Some(raw) => serde_json::from_str(raw.get()).map_err(serialize)?,
            None => Value::Null,
        };
        let have = serde_json::json!({
            "metadata": {
                "labels": to_map(&self.labels),
                "annotations": to_map(&self.annotations),
                "ownerReferences": self.owners.iter().map(Owner::to_json).collect::<Vec<_>>(),
            },
            "spec": spec,
        });
        let ok = is_subset(&want_json, &have);
        if ok {
            let _ = self.verified.set(self.verified_as(hash));
            *kept = None;
        }
        Ok(ok)
    }

    fn verified_as(&self, hash: &str) -> Verified {
        if annotated(&self.annotations, APPLIED_HASH_ANNOTATION, hash) {
            Verified::Stamped
        } else {
            Verified::Hash(hash.into())
        }
    }

    fn verified_is(&self, v: &Verified, hash: &str) -> bool {
        match v {
            Verified::Stamped => annotated(&self.annotations, APPLIED_HASH_ANNOTATION, hash),
            Verified::Hash(h) => **h == *hash,
        }
    }

    /// This object is the apiserver's answer to applying `want`: it matches, by definition.
    pub fn applied(mut self, want: &DynamicObject) -> Self {
        if let Some(hash) = want.annotations().get(APPLIED_HASH_ANNOTATION) {
            self.verified = OnceLock::from(self.verified_as(hash));
            *self.spec.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
        }
        self
    }
}

/// Any ExternalSecret without the bundle label, by its metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct Foreign {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// UIDs of its owners: one may be a bundle whose label was removed by hand.
    pub owners: Vec<String>,
    /// The hash of what a bundle applied, if one did: see [`Foreign::carries`].
    pub applied_hash: Option<String>,
}

impl Foreign {
    pub fn from_meta(obj: &PartialObjectMeta<DynamicObject>) -> Self {
        Self::of(&obj.metadata)
    }

    /// What a bundle needs to know of an object it does not label: from any object's metadata.
    pub fn of(meta: &ObjectMeta) -> Self {
        Foreign {
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            owners: meta
                .owner_references
                .iter()
                .flatten()
                .map(|o| o.uid.clone())
                .collect(),
            applied_hash: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(APPLIED_HASH_ANNOTATION))
                .cloned(),
        }
    }

    /// A child whose labels someone removed, which an Orphan bundle's child (no ownerReference)
    /// could otherwise not be told from a stranger's: it still carries the hash of exactly what
    /// this bundle applies. The hash covers the bundle's own label, so another bundle's child
    /// never matches, and releasing a child removes the hash. Never a reason to prune: only
    /// names in the bundle's spec are checked this way. An older release's hash counts too.
    pub fn carries(&self, want: &DynamicObject) -> bool {
        let Some(have) = self.applied_hash.as_deref() else {
            return false;
        };
        want.annotations()
            .get(APPLIED_HASH_ANNOTATION)
            .map(String::as_str)
            == Some(have)
            || is_legacy_hash_of(have, want).unwrap_or(false)
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
        self.uid == other.uid
            && self.owners == other.owners
            && self.applied_hash == other.applied_hash
    }
}

#[cfg(test)]
#[path = "child_tests.rs"]
mod tests;
