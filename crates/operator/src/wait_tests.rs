use serde_json::json;

use super::*;

/// A bundle at generation 2 whose Ready condition has `reason` (True when it is "Ready") and
/// describes generation `observed`.
fn bundle_at(name: &str, deps: &[&str], reason: &str, observed: i64) -> SecretBundle {
    let status = if reason == "Ready" { "True" } else { "False" };
    serde_json::from_value(json!({
        "apiVersion": "secrets.ameide.io/v1alpha1", "kind": "SecretBundle",
        "metadata": {"name": name, "generation": 2},
        "spec": {"targetNamespace": "ns", "secretStoreRef": {"name": "s"}, "dependsOn": deps,
                 "secrets": [{"name": "x", "data": [{"secretKey": "k", "remoteRef": {"key": "k"}}]}]},
        "status": {"observedGeneration": observed, "conditions": [{
            "type": "Ready", "status": status, "reason": reason, "message": format!("{reason} msg"),
            "observedGeneration": observed, "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

fn bundle(name: &str, deps: &[&str], reason: &str) -> SecretBundle {
    bundle_at(name, deps, reason, 2)
}

fn all() -> Selection {
    Selection::All { require_all: false }
}

fn named(names: &[&str]) -> Selection {
    Selection::Named(names.iter().map(|n| n.to_string()).collect())
}

fn blocking(v: &Verdict) -> Vec<(&str, &str)> {
    v.blocking
        .iter()
        .map(|l| (l.name.as_str(), l.reason.as_str()))
        .collect()
}

fn idle_names(v: &Verdict) -> Vec<&str> {
    v.idle.iter().map(|l| l.name.as_str()).collect()
}

#[test]
fn a_named_bundle_is_done_only_when_ready_for_its_current_generation() {
    let v = evaluate(&[bundle("a", &[], "Ready")], &named(&["a"]));
    assert!(v.done());
    assert_eq!(v.ready, ["a"]);

    // Ready, but for the previous spec: not done.
    let v = evaluate(&[bundle_at("a", &[], "Ready", 1)], &named(&["a"]));
    assert_eq!(blocking(&v), [("a", "Progressing")]);
    assert!(v.blocking[0].message.contains("generation 1"));

    let v = evaluate(&[bundle("a", &[], "SecretsNotReady")], &named(&["a"]));
    assert_eq!(blocking(&v), [("a", "SecretsNotReady")]);
    assert_eq!(v.blocking[0].message, "SecretsNotReady msg");
}

#[test]
fn a_named_bundle_never_counts_as_idle() {
    let v = evaluate(&[bundle("a", &[], "WaitingForNamespace")], &named(&["a"]));
    assert_eq!(blocking(&v), [("a", "WaitingForNamespace")]);
}

#[test]
fn a_missing_named_bundle_blocks_as_not_found() {
    let v = evaluate(&[bundle("a", &[], "Ready")], &named(&["a", "b"]));
    assert_eq!(blocking(&v), [("b", "NotFound")]);
}

#[test]
fn a_bundle_without_status_blocks() {
    let mut b = bundle("a", &[], "Ready");
    b.status = None;
    let v = evaluate(&[b], &all());
    assert_eq!(blocking(&v), [("a", "NoStatus")]);
}

#[test]
fn all_counts_absent_namespaces_and_suspended_bundles_as_done() {
    let bundles = [
        bundle("platform", &[], "Ready"),
        bundle("argocd", &[], "WaitingForNamespace"),
        bundle("neo4j", &[], "Suspended"),
    ];
    let v = evaluate(&bundles, &all());
    assert!(v.done(), "{v:?}");
    assert_eq!(idle_names(&v), ["argocd", "neo4j"]);
    assert_eq!(v.ready, ["platform"]);

    let v = evaluate(&bundles, &Selection::All { require_all: true });
    assert_eq!(
        blocking(&v),
        [("argocd", "WaitingForNamespace"), ("neo4j", "Suspended")]
    );
}

#[test]
fn all_blocks_on_anything_wrong_or_in_progress() {
    for reason in [
        "SecretsNotReady",
        "WaitingForCRD",
        "WaitingForStore",
        "StoreNotReady",
        "SecretSyncFailed",
        "ApplyFailed",
        "Conflict",
        "DependencyCycle",
        "SomeFutureReason",
    ] {
        let v = evaluate(&[bundle("a", &[], reason)], &all());
        assert_eq!(blocking(&v), [("a", reason)]);
    }
}

#[test]
fn a_dependent_of_idle_bundles_is_idle_transitively() {
    let bundles = [
        bundle("ns-missing", &[], "WaitingForNamespace"),
        bundle("ready", &[], "Ready"),
        bundle("mid", &["ns-missing", "ready"], "WaitingForDependency"),
        bundle("top", &["mid"], "WaitingForDependency"),
    ];
    let v = evaluate(&bundles, &all());
    assert!(v.done(), "{v:?}");
    assert_eq!(idle_names(&v), ["mid", "ns-missing", "top"]);
}

#[test]
fn a_dependent_of_a_busy_or_missing_bundle_blocks() {
    let bundles = [
        bundle("busy", &[], "SecretsNotReady"),
        bundle("idle", &[], "WaitingForNamespace"),
        bundle("on-busy", &["idle", "busy"], "WaitingForDependency"),
        bundle("on-missing", &["nowhere"], "WaitingForDependency"),
        bundle("on-on-busy", &["on-busy"], "WaitingForDependency"),
    ];
    let v = evaluate(&bundles, &all());
    assert_eq!(
        blocking(&v),
        [
            ("busy", "SecretsNotReady"),
            ("on-busy", "WaitingForDependency"),
            ("on-missing", "WaitingForDependency"),
            ("on-on-busy", "WaitingForDependency"),
        ]
    );
}

#[test]
fn a_dependent_whose_dependencies_are_all_ready_is_about_to_move_on() {
    let bundles = [
        bundle("dep", &[], "Ready"),
        bundle("a", &["dep"], "WaitingForDependency"),
    ];
    let v = evaluate(&bundles, &all());
    assert_eq!(blocking(&v), [("a", "WaitingForDependency")]);
}

#[test]
fn a_dependency_cycle_is_never_idle() {
    let bundles = [
        bundle("a", &["b"], "WaitingForDependency"),
        bundle("b", &["a"], "DependencyCycle"),
        bundle("c", &["d"], "WaitingForDependency"),
        bundle("d", &["c"], "WaitingForDependency"),
    ];
    let v = evaluate(&bundles, &all());
    assert_eq!(v.blocking.len(), 4, "{v:?}");
}

#[test]
fn a_stale_idle_status_is_not_trusted() {
    let v = evaluate(&[bundle_at("a", &[], "WaitingForNamespace", 1)], &all());
    assert_eq!(blocking(&v), [("a", "Progressing")]);
}

#[test]
fn no_bundles_at_all_is_done() {
    assert!(evaluate(&[], &all()).done());
}
