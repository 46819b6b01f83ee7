use std::sync::Arc;

use kube::api::DynamicObject;
use serde_json::json;

use super::*;
use crate::applied::{as_v0_1_0, with_hash};
use crate::eso::{EsoKind, EsoVersion};

fn want(interval: &str) -> DynamicObject {
    let ar = EsoKind::ExternalSecret.api_resource(EsoVersion::V1);
    let mut o = DynamicObject::new("db", &ar).data(json!({"spec": {"refreshInterval": interval}}));
    o.labels_mut().insert(BUNDLE_LABEL.into(), "b".into());
    with_hash(o).expect("hash")
}

/// The object as the watch sends it: `want`, at `generation`, with `spec` live.
fn live(want: &DynamicObject, generation: i64, rv: &str, spec: serde_json::Value) -> Arc<Child> {
    let mut o = serde_json::to_value(want).expect("json");
    o["metadata"]["uid"] = json!("u1");
    o["metadata"]["generation"] = json!(generation);
    o["metadata"]["resourceVersion"] = json!(rv);
    o["spec"] = spec;
    Arc::new(serde_json::from_value(o).expect("child"))
}

fn holds_spec(c: &Child) -> bool {
    c.spec.lock().expect("lock").is_some()
}

#[test]
fn a_verified_child_drops_its_spec_and_its_next_versions_need_none() {
    let w = want("1h");
    let first = live(&w, 1, "10", json!({"refreshInterval": "1h", "target": {}}));
    assert!(holds_spec(&first));
    assert!(first.matches(&w).expect("matches"));
    assert!(!holds_spec(&first), "dropped once verified");
    assert!(first.matches(&w).expect("matches"), "still matches");

    // ESO wrote its status: same generation, so still a match, without keeping the spec.
    let mut status_only = live(&w, 1, "11", json!({"refreshInterval": "1h"}));
    status_only.carry_from(&first);
    assert!(!holds_spec(&status_only));
    assert!(status_only.matches(&w).expect("matches"));

    // Someone edited the spec: a new generation is checked against its own spec again.
    let mut edited = live(&w, 2, "12", json!({"refreshInterval": "5m"}));
    edited.carry_from(&status_only);
    assert!(holds_spec(&edited));
    assert!(!edited.matches(&w).expect("matches"), "drift found");
}

#[test]
fn what_the_apiserver_answered_to_an_apply_matches_without_a_spec() {
    let w = want("1h");
    let o = serde_json::to_value(&w).expect("json");
    let answer: EsObject = serde_json::from_value(o).expect("object");
    let c = Child::from(answer).applied(&w);
    assert!(!holds_spec(&c));
    assert!(c.matches(&w).expect("matches"));
    assert!(!c.matches(&want("2h")).expect("matches"), "other hash");
}

#[test]
fn a_child_v0_1_0_applied_as_wanted_matches_without_a_rewrite() {
    let w = want("1h");
    let old = as_v0_1_0(&w);
    let first = live(
        &old,
        1,
        "10",
        json!({"refreshInterval": "1h", "target": {}}),
    );
    assert!(
        first.matches(&w).expect("matches"),
        "same content, older stamp"
    );
    assert!(!holds_spec(&first), "verified like any other");
    assert!(first.matches(&w).expect("matches"));

    // ESO wrote its status: still known to match, without its spec.
    let mut status_only = live(&old, 1, "11", json!({"refreshInterval": "1h"}));
    status_only.carry_from(&first);
    assert!(!holds_spec(&status_only));
    assert!(status_only.matches(&w).expect("matches"));

    // Drift under an old stamp is still drift; a changed bundle is still a change.
    let edited = live(&old, 2, "12", json!({"refreshInterval": "5m"}));
    assert!(!edited.matches(&w).expect("matches"), "drift found");
    let fresh = live(&old, 1, "10", json!({"refreshInterval": "1h"}));
    assert!(
        !fresh.matches(&want("2h")).expect("matches"),
        "the bundle changed"
    );
}

#[test]
fn a_legacy_format_hash_of_other_content_does_not_match() {
    let w = want("1h");
    let mut forged = as_v0_1_0(&w);
    forged.annotations_mut().insert(
        crate::applied::APPLIED_HASH_ANNOTATION.into(),
        "0123456789abcdef".into(),
    );
    let c = live(&forged, 1, "10", json!({"refreshInterval": "1h"}));
    assert!(!c.matches(&w).expect("matches"));
}

/// A child as the watch sends it, with these managedFields entries.
fn managed(entries: serde_json::Value) -> Child {
    let mut o = serde_json::to_value(want("1h")).expect("json");
    o["metadata"]["managedFields"] = entries;
    serde_json::from_value(o).expect("child")
}

#[test]
fn another_managers_claim_on_the_spec_is_seen() {
    let ours = json!({"manager": MANAGER, "operation": "Apply", "fieldsV1": {"f:spec": {}}});
    let eso = json!({"manager": "external-secrets", "operation": "Update",
        "subresource": "status", "fieldsV1": {"f:status": {}}});
    let label = json!({"manager": "kubectl-label", "operation": "Update",
        "fieldsV1": {"f:metadata": {"f:labels": {}}}});
    let helm = json!({"manager": "helm", "operation": "Update",
        "fieldsV1": {"f:metadata": {}, "f:spec": {"f:refreshInterval": {}}}});
    assert!(!managed(json!([ours, eso, label])).shares_spec());
    assert!(managed(json!([ours, helm])).shares_spec());
    assert!(!managed(json!([])).shares_spec(), "none listed");
}
