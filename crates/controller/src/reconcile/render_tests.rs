//! Rendering of every bundle field, for both ESO API versions.

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
    for yaml in [ARGOCD, EVERY_FIELD] {
        assert_v1beta1_is_v1(&bundle(yaml));
    }
}

fn assert_v1beta1_is_v1(b: &SecretBundle) {
    let v1 = render(b, EsoVersion::V1).expect("renders");
    let beta = render(b, EsoVersion::V1beta1).expect("renders");
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

/// Every field of a bundle secret, each enum value at least once.
pub(crate) const EVERY_FIELD: &str = r#"
apiVersion: secrets.ameide.io/v1alpha1
kind: SecretBundle
metadata: {name: sink}
spec:
  targetNamespace: apps
  secretStoreRef: {name: vault}
  secrets:
    - name: db
      type: Opaque
      labels: {app: db}
      annotations: {team: data}
      refreshPolicy: OnChange
      creationPolicy: Orphan
      deletionPolicy: Retain
      immutable: true
      template:
        mergePolicy: Merge
        data:
          url: "postgresql://{{ .username }}:{{ .password | urlquery }}@{{ .host }}/app"
        templateFrom:
          - configMap: {name: db-templates, items: [{key: pgpass, templateAs: Values}]}
            target: Data
          - secret: {name: db-meta, items: [{key: labels.yaml, templateAs: KeysAndValues}]}
            target: Labels
          - configMap: {name: db-meta, items: [{key: annotations.yaml}]}
            target: Annotations
      data:
        - secretKey: password
          remoteRef: {key: db/app, property: password, version: "3", conversionStrategy: Default, decodingStrategy: Base64, metadataPolicy: None}
        - secretKey: owner
          remoteRef: {key: db/app, property: owner, decodingStrategy: None, metadataPolicy: Fetch}
      dataFrom:
        - extract: {key: db/app, conversionStrategy: Unicode, decodingStrategy: Auto}
          rewrite:
            - regexp: {source: "^db-(.*)", target: "$1"}
            - transform: {template: "{{ .value | lower }}"}
        - find:
            path: db/
            name: {regexp: "^replica-"}
            tags: {env: prod}
            conversionStrategy: Default
            decodingStrategy: Base64URL
    - name: generated
      refreshPolicy: CreatedOnce
      creationPolicy: Merge
      deletionPolicy: Merge
      dataFrom:
        - sourceRef: {generatorRef: {kind: Password, name: db-password}}
          rewrite: [{regexp: {source: password, target: DB_PASSWORD}}]
    - name: pull
      type: kubernetes.io/dockerconfigjson
      refreshPolicy: Periodic
      creationPolicy: Owner
      deletionPolicy: Delete
      immutable: false
      template:
        mergePolicy: Replace
        data:
          .dockerconfigjson: '{"auths":{"ghcr.io":{"auth":"{{ printf "%s:%s" .user .token | b64enc }}"}}}'
      data:
        - secretKey: user
          remoteRef: {key: ghcr/pull, property: user}
        - secretKey: token
          remoteRef: {key: ghcr/pull, property: token}
    - name: nothing-written
      creationPolicy: None
      template: {}
      data:
        - secretKey: token
          remoteRef: {key: ghcr/pull, property: token}
"#;

#[test]
fn renders_every_secret_field() {
    let children = render(&bundle(EVERY_FIELD), EsoVersion::V1).expect("renders");
    let specs: Vec<Value> = children.iter().map(|c| c.data["spec"].clone()).collect();
    let store = json!({"name": "vault", "kind": "ClusterSecretStore"});
    assert_eq!(
        specs[0],
        json!({
            "secretStoreRef": store,
            "refreshInterval": "1h",
            "refreshPolicy": "OnChange",
            "target": {
                "name": "db",
                "creationPolicy": "Orphan",
                "deletionPolicy": "Retain",
                "immutable": true,
                "template": {
                    "type": "Opaque",
                    "metadata": {"labels": {"app": "db"}, "annotations": {"team": "data"}},
                    "engineVersion": "v2",
                    "mergePolicy": "Merge",
                    "data": {"url": "postgresql://{{ .username }}:{{ .password | urlquery }}@{{ .host }}/app"},
                    "templateFrom": [
                        {"configMap": {"name": "db-templates", "items": [{"key": "pgpass", "templateAs": "Values"}]}, "target": "Data"},
                        {"secret": {"name": "db-meta", "items": [{"key": "labels.yaml", "templateAs": "KeysAndValues"}]}, "target": "Labels"},
                        {"configMap": {"name": "db-meta", "items": [{"key": "annotations.yaml"}]}, "target": "Annotations"}
                    ]
                }
            },
            "data": [
                {"secretKey": "password", "remoteRef": {"key": "db/app", "property": "password", "version": "3",
                    "conversionStrategy": "Default", "decodingStrategy": "Base64", "metadataPolicy": "None"}},
                {"secretKey": "owner", "remoteRef": {"key": "db/app", "property": "owner",
                    "decodingStrategy": "None", "metadataPolicy": "Fetch"}}
            ],
            "dataFrom": [
                {"extract": {"key": "db/app", "conversionStrategy": "Unicode", "decodingStrategy": "Auto"},
                 "rewrite": [{"regexp": {"source": "^db-(.*)", "target": "$1"}},
                             {"transform": {"template": "{{ .value | lower }}"}}]},
                {"find": {"path": "db/", "name": {"regexp": "^replica-"}, "tags": {"env": "prod"},
                    "conversionStrategy": "Default", "decodingStrategy": "Base64URL"}}
            ]
        })
    );
    // Generators only: no store to read from, none named.
    assert_eq!(
        specs[1],
        json!({
            "refreshInterval": "1h",
            "refreshPolicy": "CreatedOnce",
            "target": {"name": "generated", "creationPolicy": "Merge", "deletionPolicy": "Merge"},
            "dataFrom": [{
                "sourceRef": {"generatorRef": {"apiVersion": "generators.external-secrets.io/v1alpha1",
                    "kind": "Password", "name": "db-password"}},
                "rewrite": [{"regexp": {"source": "password", "target": "DB_PASSWORD"}}]
            }]
        })
    );
    assert_eq!(
        specs[2]["target"],
        json!({
            "name": "pull", "creationPolicy": "Owner", "deletionPolicy": "Delete", "immutable": false,
            "template": {
                "type": "kubernetes.io/dockerconfigjson",
                "engineVersion": "v2",
                "mergePolicy": "Replace",
                "data": {".dockerconfigjson": r#"{"auths":{"ghcr.io":{"auth":"{{ printf "%s:%s" .user .token | b64enc }}"}}}"#}
            }
        })
    );
    assert_eq!(specs[2]["refreshPolicy"], "Periodic");
    assert_eq!(
        specs[3]["target"],
        json!({"name": "nothing-written", "creationPolicy": "None", "template": {"engineVersion": "v2"}})
    );
    assert_eq!(specs[3]["secretStoreRef"], store);
}

#[test]
fn a_bundle_round_trips_through_its_own_serialization() {
    // What `kubectl get -o yaml` shows is what was written: no field is lost or invented.
    let b = bundle(EVERY_FIELD);
    let again: SecretBundle =
        serde_json::from_value(serde_json::to_value(&b).expect("json")).expect("parses");
    assert_eq!(b, again);
    assert_eq!(
        serde_json::to_value(&b.spec.secrets[1]).expect("json"),
        json!({"name": "generated", "refreshPolicy": "CreatedOnce", "creationPolicy": "Merge",
               "deletionPolicy": "Merge",
               "dataFrom": [{"sourceRef": {"generatorRef": {"kind": "Password", "name": "db-password"}},
                             "rewrite": [{"regexp": {"source": "password", "target": "DB_PASSWORD"}}]}]})
    );
}
