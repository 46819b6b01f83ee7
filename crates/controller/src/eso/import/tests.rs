//! Import of single ExternalSecrets and their grouping into bundles.

use serde_json::{Value, json};

use super::*;
use crate::eso::EsoVersion;
use crate::reconcile::render::render;

fn es(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/instance": "vault-secrets-argocd"}},
        "spec": spec,
    })
}

/// Every typed field a bundle carries, set once.
fn full_spec() -> Value {
    json!({
        "secretStoreRef": {"name": "ameide-vault", "kind": "ClusterSecretStore"},
        "refreshInterval": "15m",
        "refreshPolicy": "Periodic",
        "target": {
            "name": "argocd-secret-out",
            "creationPolicy": "Owner",
            "deletionPolicy": "Retain",
            "immutable": false,
            "template": {
                "engineVersion": "v2",
                "type": "kubernetes.io/basic-auth",
                "metadata": {"labels": {"a": "b"}, "annotations": {"c": "d"}},
                "data": {"url": "https://{{ .user }}@x"},
                "mergePolicy": "Merge",
                "templateFrom": [
                    {"configMap": {"name": "tpl", "items": [{"key": "k", "templateAs": "KeysAndValues"}]}, "target": "Labels"},
                    {"secret": {"name": "tpl2", "items": [{"key": "k2"}]}}
                ]
            }
        },
        "data": [{"secretKey": "user", "remoteRef": {"key": "argocd/admin", "property": "user", "version": "3",
                  "conversionStrategy": "Default", "decodingStrategy": "Base64", "metadataPolicy": "None"}}],
        "dataFrom": [
            {"extract": {"key": "argocd/repo"}, "rewrite": [{"regexp": {"source": "^a", "target": "b"}}]},
            {"find": {"path": "argocd/", "name": {"regexp": "^db-"}, "tags": {"t": "v"},
                      "conversionStrategy": "Unicode", "decodingStrategy": "Auto"},
             "rewrite": [{"transform": {"template": "{{ .value | upper }}"}}]},
            {"sourceRef": {"generatorRef": {"apiVersion": "generators.external-secrets.io/v1alpha1",
                                            "kind": "Password", "name": "pw"}}}
        ]
    })
}

fn one(object: Value) -> Entry {
    entry(&object).expect("an ExternalSecret")
}

fn refused_fields(e: &Entry) -> Vec<&str> {
    e.refusals.iter().map(|r| r.field.as_str()).collect()
}

#[test]
fn every_typed_field_is_carried_and_renders_back_unchanged() {
    let input = es("argocd", "argocd-secret", full_spec());
    let e = one(input.clone());
    assert_eq!(e.refusals, vec![], "nothing refused");
    assert_eq!(e.release.as_deref(), Some("vault-secrets-argocd"));
    let imported = bundles(vec![e], None);
    assert!(imported.refused.is_empty());
    let [b] = imported.bundles.as_slice() else {
        panic!("one bundle: {:?}", imported.bundles)
    };
    assert_eq!(b.metadata.name.as_deref(), Some("vault-secrets-argocd"));
    assert_eq!(
        b.spec.adoption_policy,
        secretbundle_api::AdoptionPolicy::IfExists
    );
    assert_eq!(b.spec.refresh_interval, "15m");
    let children = render(b, EsoVersion::V1).expect("renders");
    let spec = &serde_json::to_value(&children[0]).expect("json")["spec"];
    assert_eq!(spec, &input["spec"]);
}

#[test]
fn eso_defaults_are_written_out_where_a_bundle_differs() {
    // No kind: ESO reads a SecretStore; a bundle's default would be a ClusterSecretStore.
    let e = one(es(
        "ns",
        "db",
        json!({"secretStoreRef": {"name": "local"}, "data": [{"secretKey": "k", "remoteRef": {"key": "x"}}],
               "target": {"name": "db"}}),
    ));
    assert_eq!(e.refusals, vec![]);
    assert_eq!(e.refresh_interval, "1h", "ESO's default");
    assert_eq!(e.secret.target_name, None, "target.name equal to the name");
    let b = &bundles(vec![e], Some("db")).bundles[0];
    assert_eq!(
        b.spec.secret_store_ref.kind,
        Some(secretbundle_api::StoreKind::SecretStore)
    );
}

#[test]
fn what_a_bundle_cannot_express_is_refused_by_field() {
    let mut spec = full_spec();
    spec["syncWindows"] = json!({"kind": "allow", "windows": []});
    spec["target"]["creationPolicy"] = json!("CreateOrMerge");
    spec["target"]["manifest"] = json!({"apiVersion": "v1", "kind": "ConfigMap"});
    spec["target"]["template"]["engineVersion"] = json!("v1");
    spec["target"]["template"]["templateFrom"][1]["literal"] = json!("{{ .x }}");
    spec["data"][0]["sourceRef"] = json!({"storeRef": {"name": "other"}});
    spec["data"][0]["remoteRef"]["nullBytePolicy"] = json!("Fail");
    spec["dataFrom"][0]["sourceRef"] = json!({"storeRef": {"name": "other"}});
    spec["dataFrom"][2]["sourceRef"]["generatorRef"]["apiVersion"] = json!("example.com/v1");
    spec["dataFrom"][1]["rewrite"][0]["merge"] = json!({"into": "x"});
    spec["somethingNew"] = json!(1);
    let e = one(es("argocd", "argocd-secret", spec));
    let mut fields = refused_fields(&e);
    fields.sort();
    assert_eq!(
        fields,
        vec![
            "spec.dataFrom[0].sourceRef.storeRef",
            "spec.dataFrom[1].rewrite[0].merge",
            "spec.dataFrom[2].sourceRef.generatorRef.apiVersion",
            "spec.data[0].remoteRef.nullBytePolicy",
            "spec.data[0].sourceRef",
            "spec.somethingNew",
            "spec.syncWindows",
            "spec.target.creationPolicy",
            "spec.target.manifest",
            "spec.target.template.engineVersion",
            "spec.target.template.templateFrom[1].literal",
        ]
    );
    let why = |f: &str| {
        e.refusals
            .iter()
            .find(|r| r.field == f)
            .map(|r| r.message.clone())
    };
    assert!(
        why("spec.target.creationPolicy")
            .is_some_and(|m| m.contains("CreateOrMerge") && m.contains("Owner"))
    );
    assert!(why("spec.target.template.engineVersion").is_some_and(|m| m.contains("engine v2")));
    assert!(why("spec.syncWindows").is_some_and(|m| m.contains("sync windows")));
    assert!(why("spec.somethingNew").is_some_and(|m| m.contains("no field")));

    // Refused objects are left out; the rest still becomes a bundle, and the refusals name them.
    let ok = one(es(
        "argocd",
        "other",
        json!({"secretStoreRef": {"name": "v", "kind": "ClusterSecretStore"},
        "data": [{"secretKey": "k", "remoteRef": {"key": "x"}}]}),
    ));
    let imported = bundles(vec![e, ok], None);
    assert_eq!(imported.bundles.len(), 1);
    assert_eq!(imported.bundles[0].spec.secrets.len(), 1);
    assert_eq!(imported.bundles[0].spec.secrets[0].name, "other");
    assert!(
        imported
            .refused
            .iter()
            .all(|(id, _)| id == "argocd/argocd-secret")
    );
    assert_eq!(imported.refused.len(), 11);
}

#[test]
fn what_the_bundle_schema_would_reject_is_refused() {
    let e = one(es("ns", "a", json!({"secretStoreRef": {"name": "v"}})));
    assert_eq!(refused_fields(&e), vec!["spec.data"]);
    let e = one(es(
        "ns",
        "a",
        json!({"data": [{"secretKey": "k", "remoteRef": {"key": "x"}},
                                               {"secretKey": "k", "remoteRef": {"key": "y"}}]}),
    ));
    assert_eq!(
        refused_fields(&e),
        vec!["spec.data[1].secretKey", "spec.secretStoreRef"]
    );
    let e = one(es(
        "ns",
        "a",
        json!({"secretStoreRef": {"name": "v"},
        "data": [{"secretKey": "k", "remoteRef": {"key": "x"}}],
        "target": {"creationPolicy": "Orphan", "deletionPolicy": "Delete"}}),
    ));
    assert_eq!(refused_fields(&e), vec!["spec.target.deletionPolicy"]);
    let e = one(es(
        "ns",
        "a",
        json!({"secretStoreRef": {"name": "v"},
        "dataFrom": [{"extract": {"key": "x"}, "find": {"name": {"regexp": "y"}}}]}),
    ));
    assert_eq!(refused_fields(&e), vec!["spec.dataFrom[0]"]);
}

#[test]
fn objects_that_are_not_external_secrets_are_errors() {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "b"}});
    assert!(entry(&cm).is_err_and(|e| e.contains("not an ExternalSecret")));
    let mut old = es("ns", "a", json!({}));
    old["apiVersion"] = json!("external-secrets.io/v1alpha1");
    assert!(entry(&old).is_err_and(|e| e.contains("v1alpha1 is not supported")));
    let mut no_ns = es("ns", "a", json!({}));
    no_ns["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("namespace");
    assert!(entry(&no_ns).is_err_and(|e| e.contains("metadata.namespace")));
}

#[test]
fn shared_settings_are_lifted_and_the_odd_ones_kept_on_their_entry() {
    let spec = |store: &str, refresh: &str| {
        json!({"secretStoreRef": {"name": store, "kind": "ClusterSecretStore"}, "refreshInterval": refresh,
               "data": [{"secretKey": "k", "remoteRef": {"key": "x"}}]})
    };
    let entries = vec![
        one(es("ns", "c", spec("vault", "1h"))),
        one(es("ns", "a", spec("other", "1h"))),
        one(es("ns", "b", spec("vault", "5m"))),
        one(es(
            "ns",
            "gen",
            json!({"secretStoreRef": {"name": "unused"},
            "dataFrom": [{"sourceRef": {"generatorRef": {"kind": "Password", "name": "p"}}}]}),
        )),
    ];
    let imported = bundles(entries.clone(), None);
    assert_eq!(
        imported.notes.len(),
        1,
        "the generator-only store: {:?}",
        imported.notes
    );
    let b = &imported.bundles[0];
    assert_eq!(b.spec.secret_store_ref.name, "vault");
    assert_eq!(b.spec.refresh_interval, "1h");
    let names: Vec<_> = b.spec.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "gen"], "sorted by name");
    assert_eq!(
        b.spec.secrets[0]
            .secret_store_ref
            .as_ref()
            .map(|s| s.name.as_str()),
        Some("other")
    );
    assert_eq!(b.spec.secrets[1].refresh_interval.as_deref(), Some("5m"));
    assert_eq!(b.spec.secrets[2].secret_store_ref, None);
    assert_eq!(b.spec.secrets[3].secret_store_ref, None, "reads no store");
    // Rendering gives every ExternalSecret its own settings back.
    let children = render(b, EsoVersion::V1).expect("renders");
    for (child, e) in children.iter().zip(["a", "b", "c", "gen"]) {
        let input = entries.iter().find(|x| x.secret.name == e).expect("input");
        let spec = &child.data["spec"];
        assert_eq!(spec["refreshInterval"], json!(input.refresh_interval));
        if e != "gen" {
            assert_eq!(
                spec["secretStoreRef"]["name"],
                json!(input.store.as_ref().map(|s| &s.name))
            );
        } else {
            assert!(spec.get("secretStoreRef").is_none());
        }
    }
}

#[test]
fn bundles_are_named_by_flag_release_or_namespace_and_never_collide() {
    let spec = json!({"secretStoreRef": {"name": "v"}, "data": [{"secretKey": "k", "remoteRef": {"key": "x"}}]});
    let mut plain = es("plain", "a", spec.clone());
    plain["metadata"]
        .as_object_mut()
        .expect("meta")
        .remove("labels");
    let mut annotated = es("argocd", "a", spec.clone());
    annotated["metadata"]["annotations"] = json!({"meta.helm.sh/release-name": "from-annotation"});
    let names = |entries: Vec<Value>, name: Option<&str>| -> Vec<String> {
        bundles(entries.into_iter().map(one).collect(), name)
            .bundles
            .iter()
            .filter_map(|b| b.metadata.name.clone())
            .collect()
    };
    assert_eq!(names(vec![plain.clone()], None), ["plain"]);
    assert_eq!(names(vec![annotated.clone()], None), ["from-annotation"]);
    assert_eq!(names(vec![plain.clone()], Some("mine")), ["mine"]);
    assert_eq!(
        names(vec![plain, annotated, es("other", "b", spec)], Some("mine")),
        ["mine-argocd", "mine-other", "mine-plain"]
    );
}

#[test]
fn duplicates_are_refused_not_merged() {
    let spec = json!({"secretStoreRef": {"name": "v"}, "data": [{"secretKey": "k", "remoteRef": {"key": "x"}}]});
    let mut same_target = es("ns", "b", spec.clone());
    same_target["spec"]["target"] = json!({"name": "a"});
    let imported = bundles(
        vec![
            one(es("ns", "a", spec.clone())),
            one(es("ns", "a", spec)),
            one(same_target),
        ],
        None,
    );
    assert_eq!(imported.bundles[0].spec.secrets.len(), 1);
    let fields: Vec<_> = imported
        .refused
        .iter()
        .map(|(id, r)| format!("{id} {}", r.field))
        .collect();
    assert_eq!(fields, ["ns/a metadata.name", "ns/b spec.target.name"]);
}

#[test]
fn the_table_explains_every_refusal_it_lists() {
    for f in FIELDS.iter().filter(|f| f.bundle.is_none()) {
        assert!(!f.note.is_empty(), "{} is refused without a reason", f.es);
        let indexed = f.es.replace("[]", "[0]");
        assert_eq!(fields::why_refused(&indexed), f.note);
    }
}
