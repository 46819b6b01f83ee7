use serde_json::json;

use super::*;

fn bundle(name: &str, ns: &str, deps: &[&str], secrets: &[&str]) -> SecretBundle {
    let mut b = crate::simple_bundle(name, ns, secrets);
    b.spec.depends_on = deps.iter().map(|d| d.to_string()).collect();
    b.metadata.generation = Some(1);
    b
}

fn usable() -> Crd {
    let crd = serde_json::from_value(json!({
        "metadata": {"name": "externalsecrets.external-secrets.io"},
        "spec": {"group": "external-secrets.io", "scope": "Namespaced",
                 "names": {"plural": "externalsecrets", "kind": "ExternalSecret"},
                 "versions": [{"name": "v1", "served": true, "storage": true}]}
    }))
    .expect("crd");
    Crd::Usable {
        version: secretbundle_controller::eso::EsoVersion::V1,
        crd: Box::new(crd),
    }
}

fn obj(v: serde_json::Value) -> DynamicObject {
    serde_json::from_value(v).expect("object")
}

fn store(ready: bool, conditions: serde_json::Value) -> DynamicObject {
    obj(
        json!({"apiVersion": "external-secrets.io/v1", "kind": "ClusterSecretStore",
        "metadata": {"name": crate::eso::TEST_STORE},
        "spec": {"conditions": conditions},
        "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}}),
    )
}

fn child(ns: &str, name: &str, owner: &str, status: serde_json::Value) -> DynamicObject {
    obj(
        json!({"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": name, "namespace": ns, "generation": 1,
                     "labels": {BUNDLE_LABEL: owner}},
        "status": status}),
    )
}

fn synced() -> serde_json::Value {
    json!({"syncedResourceVersion": "1-abc",
           "conditions": [{"type": "Ready", "status": "True", "reason": "SecretSynced"}]})
}

/// One namespace `ns`, a Ready store admitting all, the CRD usable, no children.
fn world(bundles: Vec<SecretBundle>) -> Snapshot {
    Snapshot {
        bundles,
        namespaces: [("ns".to_string(), (false, BTreeMap::new()))].into(),
        crd: usable(),
        stores: [(
            (
                StoreKind::ClusterSecretStore,
                String::new(),
                crate::eso::TEST_STORE.to_string(),
            ),
            store(true, serde_json::Value::Null),
        )]
        .into(),
        children: BTreeMap::new(),
    }
}

fn with_child(mut s: Snapshot, c: DynamicObject) -> Snapshot {
    s.children
        .insert((c.namespace().unwrap_or_default(), c.name_any()), c);
    s
}

fn reasons(s: &Snapshot, name: &str) -> Vec<&'static str> {
    s.expected()[name].reasons.iter().copied().collect()
}

#[test]
fn the_gates_close_in_the_documented_order() {
    let mut b = bundle("a", "gone", &[], &["x"]);
    b.spec.suspend = true;
    assert_eq!(reasons(&world(vec![b.clone()]), "a"), ["Suspended"]);
    b.spec.suspend = false;
    assert_eq!(reasons(&world(vec![b]), "a"), ["WaitingForNamespace"]);
    let mut s = world(vec![bundle("a", "ns", &[], &["x"])]);
    s.namespaces.insert("ns".into(), (true, BTreeMap::new()));
    assert_eq!(reasons(&s, "a"), ["WaitingForNamespace"], "terminating");
    let mut s = world(vec![bundle("a", "ns", &[], &["x"])]);
    s.crd = Crd::Unusable("not installed".into());
    assert_eq!(reasons(&s, "a"), ["WaitingForCRD"]);
    let s = world(vec![
        bundle("a", "ns", &["b"], &["x"]),
        bundle("b", "ns", &["a"], &["y"]),
    ]);
    assert_eq!(reasons(&s, "a"), ["DependencyCycle"]);
    assert_eq!(reasons(&s, "b"), ["DependencyCycle"]);
}

#[test]
fn a_dependency_waits_or_progresses_as_its_own_reason_does() {
    // c waits on a missing bundle (idle); b's child is pending (progressing).
    let s = with_child(
        world(vec![
            bundle("a", "ns", &["b"], &["x"]),
            bundle("b", "ns", &[], &["y"]),
            bundle("c", "ns", &["missing"], &["z"]),
            bundle("d", "ns", &["c"], &["w"]),
        ]),
        child("ns", "y", "b", json!({})),
    );
    assert_eq!(reasons(&s, "b"), ["SecretsNotReady"]);
    assert_eq!(reasons(&s, "a"), ["DependencyProgressing"]);
    assert_eq!(reasons(&s, "c"), ["WaitingForDependency"]);
    assert_eq!(reasons(&s, "d"), ["WaitingForDependency"]);
    let s = with_child(
        world(vec![
            bundle("a", "ns", &["b"], &["x"]),
            bundle("b", "ns", &[], &["y"]),
        ]),
        child("ns", "y", "b", synced()),
    );
    assert_eq!(reasons(&s, "b"), ["Ready"]);
    assert_eq!(reasons(&s, "a"), ["ApplyFailed"], "gates open, x missing");
}

#[test]
fn stores_missing_not_ready_or_excluding_the_namespace() {
    let key = (
        StoreKind::ClusterSecretStore,
        String::new(),
        crate::eso::TEST_STORE.to_string(),
    );
    let mut s = world(vec![bundle("a", "ns", &[], &["x"])]);
    s.stores.clear();
    assert_eq!(reasons(&s, "a"), ["WaitingForStore"]);
    s.stores
        .insert(key.clone(), store(false, serde_json::Value::Null));
    assert_eq!(reasons(&s, "a"), ["StoreNotReady"]);
    s.stores
        .insert(key, store(true, json!([{"namespaces": ["other"]}])));
    assert_eq!(reasons(&s, "a"), ["StoreNotAllowed"]);
}

#[test]
fn children_say_conflict_sync_failure_progress_or_ready() {
    let b = || world(vec![bundle("a", "ns", &[], &["x"])]);
    assert_eq!(
        reasons(&with_child(b(), child("ns", "x", "other", synced())), "a"),
        ["Conflict"]
    );
    let failed = json!({"conditions": [{"type": "Ready", "status": "False", "reason": "SecretSyncedError"}]});
    assert_eq!(
        reasons(&with_child(b(), child("ns", "x", "a", failed)), "a"),
        ["SecretSyncFailed"]
    );
    let stale = json!({"syncedResourceVersion": "0-abc", "conditions": [{"type": "Ready", "status": "True", "reason": "SecretSynced"}]});
    assert_eq!(
        reasons(&with_child(b(), child("ns", "x", "a", stale.clone())), "a"),
        ["SecretsNotReady"]
    );
    let mut zero = b();
    zero.bundles[0].spec.refresh_interval = "0s".into();
    assert_eq!(
        reasons(&with_child(zero, child("ns", "x", "a", stale)), "a"),
        ["Ready"],
        "never re-synced"
    );
    assert_eq!(
        reasons(&with_child(b(), child("ns", "x", "a", synced())), "a"),
        ["Ready"]
    );
}

#[test]
fn store_conditions_admit_by_name_regex_or_labels() {
    let labels: BTreeMap<String, String> = [("team".to_string(), "a".to_string())].into();
    assert_eq!(admits(&serde_json::Value::Null, "ns", &labels), Some(true));
    assert_eq!(
        admits(&json!([{"namespaces": ["ns"]}]), "ns", &labels),
        Some(true)
    );
    assert_eq!(
        admits(&json!([{"namespaceRegexes": ["^n"]}]), "ns", &labels),
        Some(true)
    );
    assert_eq!(
        admits(
            &json!([{"namespaceSelector": {"matchLabels": {"team": "a"}}}]),
            "ns",
            &labels
        ),
        Some(true)
    );
    assert_eq!(
        admits(
            &json!([{"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}}]),
            "ns",
            &labels
        ),
        Some(false)
    );
    assert_eq!(admits(&json!({"not": "a list"}), "ns", &labels), None);
}

#[test]
fn the_kind_table_covers_every_reason_the_operator_has() {
    for r in secretbundle_controller::Reason::ALL {
        assert!(
            kind_of(r.as_str()).is_some(),
            "{} missing from the table",
            r.as_str()
        );
    }
}
