//! Pure status building: child readiness, the summary reason, and kstatus conditions whose
//! `lastTransitionTime` moves only when a condition's status does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use secretbundle_api::{SecretBundle, SecretBundleStatus, SecretStatus, condition};

use crate::cache::Child;

use crate::eso::EsoVersion;
use crate::reason::{Phase, Reason};

/// What a reconcile concluded, before it is turned into a status.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub reason: Reason,
    pub message: String,
    pub eso_version: Option<EsoVersion>,
    /// One entry per applied (or conflicting) child, in spec order; empty while a gate is closed.
    pub secrets: Vec<SecretStatus>,
    pub last_handled_refresh: Option<String>,
}

/// Reads ESO's view of one child. `refresh_disabled` children (refreshInterval "0") are never
/// re-synced by ESO after the first sync, so an older synced generation is not held against them.
pub fn child_status(name: &str, child: Option<&Child>, refresh_disabled: bool) -> SecretStatus {
    let not_ready = |reason: &str, message: String| SecretStatus {
        name: name.into(),
        ready: false,
        reason: reason.into(),
        message,
    };
    let Some(child) = child else {
        return not_ready("NotApplied", "the ExternalSecret does not exist yet".into());
    };
    let Some(ready) = child.ready() else {
        return not_ready(
            "Pending",
            "ESO has not reported on this ExternalSecret yet".into(),
        );
    };
    let reason = ready.reason.clone().unwrap_or_default();
    let message = ready.message.clone().unwrap_or_default();
    if ready.status != "True" {
        return not_ready(&reason, message);
    }
    // creationPolicy Merge before the Secret exists: ESO calls that Ready, yet no key arrived.
    // It looks again at its next refresh, or at once on a refresh request.
    if reason == SECRET_MISSING {
        return not_ready(
            SECRET_MISSING,
            format!("{message}; ESO looks again at its next refresh, or now on a refresh request"),
        );
    }
    // ESO records "<generation>-<hash>" of what it last synced.
    let synced = child.synced_resource_version();
    let generation = child.generation().unwrap_or_default();
    if let Some(synced) = synced
        && !refresh_disabled
        && !synced.starts_with(&format!("{generation}-"))
    {
        return not_ready(
            "Syncing",
            format!("ESO has not synced generation {generation} yet"),
        );
    }
    SecretStatus {
        name: name.into(),
        ready: true,
        reason,
        message,
    }
}

/// ESO's reason when creationPolicy Merge finds no Secret to merge into.
const SECRET_MISSING: &str = "SecretMissing";

/// Child reasons the operator itself gives while ESO has not (yet) had its say, and a Merge
/// target someone else has not created yet: waiting, not failing. Any other not-ready reason is
/// ESO reporting a failure in its own words.
const IN_PROGRESS: [&str; 4] = ["NotApplied", "Pending", "Syncing", SECRET_MISSING];

/// The summary of applied children: Ready, or how many are and the first failing one's words.
/// A child ESO cannot sync outranks one that is merely not synced yet.
pub fn summarize(secrets: &[SecretStatus]) -> (Reason, String) {
    let ready = secrets.iter().filter(|s| s.ready).count();
    let total = secrets.len();
    let failing = |s: &&SecretStatus| !s.ready && !IN_PROGRESS.contains(&s.reason.as_str());
    let (reason, first) = match secrets.iter().find(failing) {
        Some(s) => (Reason::SecretSyncFailed, s),
        None => match secrets.iter().find(|s| !s.ready) {
            Some(s) => (Reason::SecretsNotReady, s),
            None => return (Reason::Ready, format!("{ready}/{total} secrets ready")),
        },
    };
    let detail = if first.message.is_empty() {
        String::new()
    } else {
        format!(": {}", first.message)
    };
    (
        reason,
        format!(
            "{ready}/{total} secrets ready; {} is {}{detail}",
            first.name, first.reason
        ),
    )
}

/// The status to write for `report`; equal to the current one when nothing changed.
pub fn next_status(bundle: &SecretBundle, report: &Report, now: &Time) -> SecretBundleStatus {
    let old = bundle.status.clone().unwrap_or_default();
    let generation = bundle.metadata.generation;
    let phase = report.reason.phase();
    let mut wanted = vec![(condition::READY, phase == Phase::Ready)];
    match phase {
        Phase::Progressing => wanted.push((condition::RECONCILING, true)),
        Phase::Stalled => wanted.push((condition::STALLED, true)),
        Phase::Ready | Phase::Idle | Phase::Suspended => {}
    }
    let conditions = wanted
        .into_iter()
        .map(|(type_, is_true)| {
            let status = if is_true { "True" } else { "False" }.to_string();
            let last_transition_time = old
                .conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: type_.into(),
                status,
                reason: report.reason.as_str().into(),
                message: report.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect();
    let total = i32::try_from(bundle.spec.secrets.len()).unwrap_or(i32::MAX);
    let ready =
        i32::try_from(report.secrets.iter().filter(|s| s.ready).count()).unwrap_or(i32::MAX);
    SecretBundleStatus {
        observed_generation: generation,
        conditions,
        eso_api_version: report
            .eso_version
            .map(EsoVersion::api_version)
            .or(old.eso_api_version),
        ready_secrets: ready,
        total_secrets: total,
        secrets_ready: Some(format!("{ready}/{total}")),
        last_handled_refresh: report.last_handled_refresh.clone(),
        secrets: report.secrets.clone(),
    }
}

/// The Ready reason a status reports, if any.
pub fn ready_reason(status: Option<&SecretBundleStatus>) -> Option<Reason> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == condition::READY)
        .and_then(|c| Reason::parse(&c.reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn child(generation: i64, status: Value) -> Child {
        serde_json::from_value(json!({
            "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
            "metadata": {"name": "x", "namespace": "ns", "generation": generation},
            "status": status
        }))
        .expect("child")
    }

    fn ready_cond(status: &str, reason: &str, message: &str) -> Value {
        json!({"type": "Ready", "status": status, "reason": reason, "message": message})
    }

    #[test]
    fn child_readiness_follows_eso() {
        let missing = child_status("a", None, false);
        assert_eq!(
            (missing.ready, missing.reason.as_str()),
            (false, "NotApplied")
        );
        let pending = child_status("a", Some(&child(1, json!({}))), false);
        assert_eq!(pending.reason, "Pending");
        let failed = child(
            1,
            json!({"conditions": [ready_cond("False", "SecretSyncedError", "could not get secret data from provider")]}),
        );
        assert_eq!(
            child_status("a", Some(&failed), false),
            SecretStatus {
                name: "a".into(),
                ready: false,
                reason: "SecretSyncedError".into(),
                message: "could not get secret data from provider".into()
            }
        );
        let ok = child(
            2,
            json!({"syncedResourceVersion": "2-abc", "conditions": [ready_cond("True", "SecretSynced", "secret synced")]}),
        );
        assert!(child_status("a", Some(&ok), false).ready);
        let stale = child(
            3,
            json!({"syncedResourceVersion": "2-abc", "conditions": [ready_cond("True", "SecretSynced", "")]}),
        );
        assert_eq!(child_status("a", Some(&stale), false).reason, "Syncing");
        assert!(
            child_status("a", Some(&stale), true).ready,
            "refreshInterval 0 is never re-synced"
        );
    }

    #[test]
    fn a_merge_target_not_created_yet_is_waited_for_not_failed() {
        let missing = child(
            1,
            json!({"syncedResourceVersion": "1-abc", "conditions": [ready_cond("True", "SecretMissing", "secret will not be created due to CreationPolicy=Merge")]}),
        );
        let s = child_status("argocd-secret", Some(&missing), false);
        assert_eq!((s.ready, s.reason.as_str()), (false, "SecretMissing"));
        assert!(s.message.contains("CreationPolicy=Merge"), "{}", s.message);
        assert!(s.message.contains("refresh request"), "{}", s.message);
        assert_eq!(summarize(&[s]).0, Reason::SecretsNotReady);
    }

    #[test]
    fn summary_quotes_the_first_failing_child() {
        let ok = SecretStatus {
            name: "a".into(),
            ready: true,
            ..Default::default()
        };
        let bad = SecretStatus {
            name: "b".into(),
            ready: false,
            reason: "SecretSyncedError".into(),
            message: "key not found".into(),
        };
        assert_eq!(
            summarize(&[ok.clone(), ok.clone()]),
            (Reason::Ready, "2/2 secrets ready".into())
        );
        let pending = SecretStatus {
            name: "c".into(),
            ready: false,
            reason: "Pending".into(),
            message: "ESO has not reported on this ExternalSecret yet".into(),
        };
        assert_eq!(
            summarize(&[ok.clone(), pending.clone()]),
            (
                Reason::SecretsNotReady,
                "1/2 secrets ready; c is Pending: ESO has not reported on this ExternalSecret yet"
                    .into()
            )
        );
        assert_eq!(
            summarize(&[ok, pending, bad]),
            (
                Reason::SecretSyncFailed,
                "1/3 secrets ready; b is SecretSyncedError: key not found".into()
            ),
            "a failing sync outranks one still in progress"
        );
    }

    fn bundle(generation: i64) -> SecretBundle {
        let mut b: SecretBundle = serde_yaml::from_str(
            "metadata: {name: a}\nspec: {targetNamespace: ns, secretStoreRef: {name: s}, secrets: [{name: x, data: [{secretKey: k, remoteRef: {key: p}}]}]}",
        )
        .expect("bundle");
        b.metadata.generation = Some(generation);
        b
    }

    fn time(s: &str) -> Time {
        serde_json::from_value(json!(s)).expect("time")
    }

    fn report(reason: Reason, message: &str) -> Report {
        Report {
            reason,
            message: message.into(),
            eso_version: None,
            secrets: vec![],
            last_handled_refresh: None,
        }
    }

    #[test]
    fn kstatus_conditions_per_phase() {
        let t0 = time("2026-01-01T00:00:00Z");
        let waiting = next_status(
            &bundle(1),
            &report(
                Reason::WaitingForNamespace,
                "namespace \"ns\" does not exist",
            ),
            &t0,
        );
        let types: Vec<(&str, &str)> = waiting
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            types,
            vec![("Ready", "False")],
            "waiting for something absent is idle: neither Reconciling nor Stalled"
        );
        let syncing = next_status(&bundle(1), &report(Reason::SecretsNotReady, "0/1"), &t0);
        let types: Vec<(&str, &str)> = syncing
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(types, vec![("Ready", "False"), ("Reconciling", "True")]);
        assert!(
            waiting
                .conditions
                .iter()
                .all(|c| c.reason == "WaitingForNamespace" && c.observed_generation == Some(1))
        );
        assert_eq!(
            (waiting.secrets_ready.as_deref(), waiting.total_secrets),
            (Some("0/1"), 1)
        );

        let stalled = next_status(&bundle(1), &report(Reason::Conflict, "x"), &t0);
        let types: Vec<&str> = stalled
            .conditions
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(types, vec!["Ready", "Stalled"]);
        let suspended = next_status(&bundle(1), &report(Reason::Suspended, "x"), &t0);
        assert_eq!(suspended.conditions.len(), 1);
    }

    #[test]
    fn unchanged_report_gives_an_identical_status() {
        let t0 = time("2026-01-01T00:00:00Z");
        let t1 = time("2026-01-01T00:05:00Z");
        let mut b = bundle(1);
        let r = report(Reason::WaitingForCRD, "not installed");
        b.status = Some(next_status(&b, &r, &t0));
        assert_eq!(
            b.status,
            Some(next_status(&b, &r, &t1)),
            "no churn when nothing changed"
        );

        // A new reason with the same Ready status keeps Ready's transition time.
        let moved = next_status(&b, &report(Reason::WaitingForDependency, "platform"), &t1);
        assert_eq!(moved.conditions[0].last_transition_time, t0);
        assert_eq!(moved.conditions[0].reason, "WaitingForDependency");
        // Ready flipping to True moves its time; Reconciling disappears.
        let ready = next_status(&b, &report(Reason::Ready, "1/1 secrets ready"), &t1);
        assert_eq!(
            (
                ready.conditions.len(),
                ready.conditions[0].last_transition_time.clone()
            ),
            (1, t1)
        );
    }
}
