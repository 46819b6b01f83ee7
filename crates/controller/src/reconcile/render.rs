//! Pure rendering of a bundle into the ExternalSecrets it owns. No I/O: unit-tested here and
//! exposed through `secretbundle-operator render` for reviews and CI diffs.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt, api::DynamicObject};
use secretbundle_api::{
    BUNDLE_LABEL, BundleSecret, DataFrom, DeletionPolicy, MANAGED_BY_LABEL, MANAGER,
    REFRESH_ANNOTATION, SecretBundle,
};
use serde_json::{Map, Value, json};

use crate::eso::{EsoKind, EsoVersion, FORCE_SYNC_ANNOTATION, GENERATORS_API_VERSION};

/// A spec the schema let through but that cannot be rendered; `field` names the culprit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSpec {
    pub field: String,
    pub message: String,
}

/// Renders every child ExternalSecret of `bundle`, in spec order.
///
/// Children carry an ownerReference to the bundle only under `deletionPolicy: Delete`, and only
/// once the bundle has a UID (`render` from a file leaves it out). Under `Orphan` they carry
/// none, so no deletion propagation (foreground, background or orphan) lets the garbage
/// collector take them, and their Secrets, away; the finalizer releases them instead.
pub fn render(
    bundle: &SecretBundle,
    version: EsoVersion,
) -> Result<Vec<DynamicObject>, InvalidSpec> {
    check_target_names(bundle)?;
    let owner = match bundle.spec.deletion_policy {
        DeletionPolicy::Delete => bundle.controller_owner_ref(&()),
        DeletionPolicy::Orphan => None,
    };
    Ok(bundle
        .spec
        .secrets
        .iter()
        .map(|s| render_one(bundle, s, version, owner.clone()))
        .collect())
}

/// Two entries writing the same Secret would fight over it forever.
fn check_target_names(bundle: &SecretBundle) -> Result<(), InvalidSpec> {
    let mut seen = BTreeSet::new();
    for (i, s) in bundle.spec.secrets.iter().enumerate() {
        if !seen.insert(s.target_secret_name()) {
            return Err(InvalidSpec {
                field: format!("spec.secrets[{i}].targetName"),
                message: format!(
                    "Secret {:?} is already written by another entry of this bundle",
                    s.target_secret_name()
                ),
            });
        }
    }
    Ok(())
}

fn render_one(
    bundle: &SecretBundle,
    secret: &BundleSecret,
    version: EsoVersion,
    owner: Option<OwnerReference>,
) -> DynamicObject {
    let spec = &bundle.spec;
    let refresh = secret
        .refresh_interval
        .as_deref()
        .unwrap_or(&spec.refresh_interval);

    let mut es_spec = Map::new();
    // A secret fed only by generators reads no store; naming one would make ESO (and the store
    // gate) wait for a store it never uses.
    if secret.reads_store() {
        let store = secret
            .secret_store_ref
            .as_deref()
            .unwrap_or(&spec.secret_store_ref);
        es_spec.insert(
            "secretStoreRef".into(),
            json!({"name": store.name, "kind": store.kind()}),
        );
    }
    es_spec.insert("refreshInterval".into(), refresh.into());
    if let Some(p) = secret.refresh_policy {
        es_spec.insert("refreshPolicy".into(), json!(p));
    }
    es_spec.insert("target".into(), target(secret));
    if !secret.data.is_empty() {
        es_spec.insert("data".into(), json!(secret.data));
    }
    if !secret.data_from.is_empty() {
        let from: Vec<Value> = secret.data_from.iter().map(data_from).collect();
        es_spec.insert("dataFrom".into(), from.into());
    }

    let labels = BTreeMap::from([
        (BUNDLE_LABEL.to_string(), bundle.name_any()),
        (MANAGED_BY_LABEL.to_string(), MANAGER.to_string()),
    ]);
    // ESO re-syncs whenever force-sync changes; passing the bundle's request through makes one
    // annotation on the bundle refresh every child.
    let annotations = bundle
        .annotations()
        .get(REFRESH_ANNOTATION)
        .map(|v| BTreeMap::from([(FORCE_SYNC_ANNOTATION.to_string(), v.clone())]));

    let ar = EsoKind::ExternalSecret.api_resource(version);
    let mut obj = DynamicObject::new(&secret.name, &ar).within(&spec.target_namespace);
    obj.metadata = ObjectMeta {
        labels: Some(labels),
        annotations,
        owner_references: owner.map(|o| vec![o]),
        ..obj.metadata
    };
    obj.data = json!({ "spec": es_spec });
    obj
}

/// `spec.target`: the Secret's name, how ESO creates and keeps it, and its template. Only what
/// the bundle sets is written; ESO's own defaults fill the rest.
fn target(secret: &BundleSecret) -> Value {
    let mut target = Map::new();
    target.insert("name".into(), secret.target_secret_name().into());
    if let Some(p) = secret.creation_policy {
        target.insert("creationPolicy".into(), json!(p));
    }
    if let Some(p) = secret.deletion_policy {
        target.insert("deletionPolicy".into(), json!(p));
    }
    if let Some(i) = secret.immutable {
        target.insert("immutable".into(), i.into());
    }
    let mut template = Map::new();
    if let Some(t) = &secret.secret_type {
        template.insert("type".into(), t.clone().into());
    }
    let mut template_meta = Map::new();
    if !secret.labels.is_empty() {
        template_meta.insert("labels".into(), json!(secret.labels));
    }
    if !secret.annotations.is_empty() {
        template_meta.insert("annotations".into(), json!(secret.annotations));
    }
    if !template_meta.is_empty() {
        template.insert("metadata".into(), template_meta.into());
    }
    if let Some(t) = &secret.template {
        // Bundle templates are always engine v2 syntax, whatever ESO's default may become.
        template.insert("engineVersion".into(), "v2".into());
        if !t.data.is_empty() {
            template.insert("data".into(), json!(t.data));
        }
        if let Some(p) = t.merge_policy {
            template.insert("mergePolicy".into(), json!(p));
        }
        if !t.template_from.is_empty() {
            template.insert("templateFrom".into(), json!(t.template_from));
        }
    }
    if !template.is_empty() {
        target.insert("template".into(), template.into());
    }
    target.into()
}

fn data_from(d: &DataFrom) -> Value {
    let mut m = Map::new();
    if let Some(e) = &d.extract {
        m.insert("extract".into(), json!(e));
    }
    if let Some(f) = &d.find {
        m.insert("find".into(), json!(f));
    }
    if let Some(s) = &d.source_ref {
        let g = &s.generator_ref;
        m.insert(
            "sourceRef".into(),
            json!({"generatorRef": {"apiVersion": GENERATORS_API_VERSION, "kind": g.kind, "name": g.name}}),
        );
    }
    if !d.rewrite.is_empty() {
        m.insert("rewrite".into(), json!(d.rewrite));
    }
    m.into()
}

#[cfg(test)]
#[path = "render_tests.rs"]
pub(crate) mod tests;
