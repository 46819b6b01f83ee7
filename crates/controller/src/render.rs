//! Pure rendering of a bundle into the ExternalSecrets it owns. No I/O: unit-tested here and
//! exposed through `secretbundle-operator render` for reviews and CI diffs.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt, api::DynamicObject};
use secretbundle_api::{
    BUNDLE_LABEL, BundleSecret, DeletionPolicy, MANAGED_BY_LABEL, MANAGER, REFRESH_ANNOTATION,
    RemoteRef, SecretBundle,
};
use serde_json::{Map, Value, json};

use crate::eso::{EsoKind, EsoVersion, FORCE_SYNC_ANNOTATION};

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
    let store = secret
        .secret_store_ref
        .as_ref()
        .unwrap_or(&spec.secret_store_ref);
    let refresh = secret
        .refresh_interval
        .as_deref()
        .unwrap_or(&spec.refresh_interval);

    let mut target = Map::new();
    target.insert("name".into(), secret.target_secret_name().into());
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
    if !template.is_empty() {
        target.insert("template".into(), template.into());
    }

    let mut es_spec = Map::new();
    es_spec.insert(
        "secretStoreRef".into(),
        json!({"name": store.name, "kind": store.kind()}),
    );
    es_spec.insert("refreshInterval".into(), refresh.into());
    es_spec.insert("target".into(), target.into());
    if !secret.data.is_empty() {
        let data: Vec<Value> = secret
            .data
            .iter()
            .map(|d| json!({"secretKey": d.secret_key, "remoteRef": remote_ref(&d.remote_ref)}))
            .collect();
        es_spec.insert("data".into(), data.into());
    }
    if !secret.data_from.is_empty() {
        let from: Vec<Value> = secret
            .data_from
            .iter()
            .map(|d| json!({"extract": remote_ref(&d.extract)}))
            .collect();
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

fn remote_ref(r: &RemoteRef) -> Value {
    let mut m = Map::new();
    m.insert("key".into(), r.key.clone().into());
    if let Some(p) = &r.property {
        m.insert("property".into(), p.clone().into());
    }
    if let Some(v) = &r.version {
        m.insert("version".into(), v.clone().into());
    }
    m.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn bundle(yaml: &str) -> SecretBundle {
        serde_yaml::from_str(yaml).expect("valid bundle yaml")
    }

    const ARGOCD: &str = r#"
apiVersion: secrets.ameide.io/v1alpha1
kind: SecretBundle
metadata: {name: argocd, uid: 1234, annotations: {secrets.ameide.io/refresh-requested-at: "r1"}}
spec:
  targetNamespace: argocd
  secretStoreRef: {name: ameide-vault}
  refreshInterval: 15m
  secrets:
    - name: argocd-secret
      data:
        - secretKey: admin.password
          remoteRef: {key: argocd/admin, property: password}
    - name: argocd-repo
      targetName: repo-creds
      type: kubernetes.io/basic-auth
      labels: {argocd.argoproj.io/secret-type: repo-creds}
      refreshInterval: "0"
      secretStoreRef: {name: local, kind: SecretStore}
      dataFrom:
        - extract: {key: argocd/repo, version: "2"}
"#;

    #[test]
    fn renders_v1_children_with_defaults_and_overrides() {
        let children = render(&bundle(ARGOCD), EsoVersion::V1).expect("renders");
        assert_eq!(children.len(), 2);
        let first = serde_json::to_value(&children[0]).expect("json");
        assert_eq!(
            first,
            json!({
                "apiVersion": "external-secrets.io/v1",
                "kind": "ExternalSecret",
                "metadata": {
                    "name": "argocd-secret",
                    "namespace": "argocd",
                    "labels": {"app.kubernetes.io/managed-by": "secretbundle-operator", "secrets.ameide.io/bundle": "argocd"},
                    "annotations": {"force-sync": "r1"},
                    "ownerReferences": [{"apiVersion": "secrets.ameide.io/v1alpha1", "kind": "SecretBundle",
                        "name": "argocd", "uid": "1234", "controller": true}]
                },
                "spec": {
                    "secretStoreRef": {"name": "ameide-vault", "kind": "ClusterSecretStore"},
                    "refreshInterval": "15m",
                    "target": {"name": "argocd-secret"},
                    "data": [{"secretKey": "admin.password", "remoteRef": {"key": "argocd/admin", "property": "password"}}]
                }
            })
        );
        let second = serde_json::to_value(&children[1]).expect("json");
        assert_eq!(
            second["spec"],
            json!({
                "secretStoreRef": {"name": "local", "kind": "SecretStore"},
                "refreshInterval": "0",
                "target": {"name": "repo-creds", "template": {
                    "type": "kubernetes.io/basic-auth",
                    "metadata": {"labels": {"argocd.argoproj.io/secret-type": "repo-creds"}}}},
                "dataFrom": [{"extract": {"key": "argocd/repo", "version": "2"}}]
            })
        );
    }

    #[test]
    fn v1beta1_differs_only_in_api_version() {
        let b = bundle(ARGOCD);
        let v1 = render(&b, EsoVersion::V1).expect("renders");
        let beta = render(&b, EsoVersion::V1beta1).expect("renders");
        for (a, b) in v1.iter().zip(&beta) {
            let (mut a, b) = (
                serde_json::to_value(a).expect("json"),
                serde_json::to_value(b).expect("json"),
            );
            assert_eq!(b["apiVersion"], "external-secrets.io/v1beta1");
            a["apiVersion"] = b["apiVersion"].clone();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn without_uid_or_refresh_request_there_is_no_owner_or_force_sync() {
        let mut b = bundle(ARGOCD);
        b.metadata.uid = None;
        b.metadata.annotations = None;
        let children = render(&b, EsoVersion::V1).expect("renders");
        assert!(children[0].metadata.owner_references.is_none());
        assert!(children[0].metadata.annotations.is_none());
    }

    #[test]
    fn orphan_children_carry_no_owner_reference() {
        let mut b = bundle(ARGOCD);
        b.spec.deletion_policy = DeletionPolicy::Orphan;
        let children = render(&b, EsoVersion::V1).expect("renders");
        assert!(
            children
                .iter()
                .all(|c| c.metadata.owner_references.is_none())
        );
    }

    #[test]
    fn two_entries_writing_one_secret_are_rejected_naming_the_field() {
        let mut b = bundle(ARGOCD);
        b.spec.secrets[1].target_name = Some("argocd-secret".into());
        let err = render(&b, EsoVersion::V1).unwrap_err();
        assert_eq!(err.field, "spec.secrets[1].targetName");
        assert!(err.message.contains("argocd-secret"), "{err}");
    }
}
