//! Writes to the target namespace: apply, prune, and cleanup on deletion. Only children this
//! bundle owns are ever changed, unless its adoption policy allows taking one over.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use secretbundle_api::{
    AdoptionPolicy, BUNDLE_LABEL, BundleSecret, MANAGED_BY_LABEL, MANAGER, REFRESH_ANNOTATION,
    SecretBundle,
};
use serde_json::{Value, json};

use crate::error::{Error, KubeContext};
use crate::eso::{EsoKind, EsoVersion};
use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::render::render;
use crate::status::{self, Report};

/// Annotation on each child: a hash of what was applied, so an unchanged child is not rewritten.
pub const APPLIED_HASH_ANNOTATION: &str = "secrets.ameide.io/applied-hash";

fn api(client: &Client, ns: &str, version: EsoVersion) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &EsoKind::ExternalSecret.api_resource(version),
    )
}

/// One async lock per target namespace, created on first use.
#[derive(Default)]
pub struct NamespaceLocks(std::sync::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl NamespaceLocks {
    fn get(&self, ns: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(ns.to_string()).or_default().clone()
    }
}

/// Does `child` carry an ownerReference to this very bundle (same UID)?
pub fn owned_by(child: &DynamicObject, bundle: &SecretBundle) -> bool {
    let uid = bundle.metadata.uid.as_deref();
    uid.is_some()
        && child
            .owner_references()
            .iter()
            .any(|o| Some(o.uid.as_str()) == uid)
}

/// Is `child` this bundle's to manage: labelled for it, or owned by it?
pub fn managed_by(child: &DynamicObject, bundle: &SecretBundle) -> bool {
    child.labels().get(BUNDLE_LABEL) == Some(&bundle.name_any()) || owned_by(child, bundle)
}

/// Every field of `want` is in `have` with the same value (server defaults in `have` are fine).
pub fn is_subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| is_subset(v, hv))),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| is_subset(a, b))
        }
        _ => want == have,
    }
}

/// Stamps the applied-hash annotation; hashing excludes the annotation itself.
fn with_hash(mut obj: DynamicObject) -> Result<DynamicObject, Error> {
    let bytes = serde_json::to_vec(&obj).map_err(|source| Error::Serialize {
        what: "child",
        source,
    })?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    obj.annotations_mut().insert(
        APPLIED_HASH_ANNOTATION.into(),
        format!("{:016x}", h.finish()),
    );
    Ok(obj)
}

/// Exactly what the operator applies for `bundle`: its rendered children, hash annotation
/// included (the benchmark's floor client applies the same objects).
pub fn desired(
    bundle: &SecretBundle,
    version: EsoVersion,
) -> Result<Vec<DynamicObject>, Box<dyn std::error::Error + Send + Sync>> {
    let children = render(bundle, version)?;
    Ok(children
        .into_iter()
        .map(with_hash)
        .collect::<Result<_, _>>()?)
}

/// Applies what changed, prunes what left the spec, and reports the children's readiness.
pub async fn sync(
    client: &Client,
    metrics: &Metrics,
    locks: &NamespaceLocks,
    bundle: &SecretBundle,
    version: EsoVersion,
) -> Result<Report, Error> {
    let ns = &bundle.spec.target_namespace;
    // Bundles of one namespace take turns between listing and applying, so two of them never
    // both see a name as free and claim it (all bundles share one field manager).
    let lock = locks.get(ns);
    let _turn = lock.lock().await;
    let desired = match render(bundle, version) {
        Ok(d) => d,
        Err(e) => {
            return Ok(report(
                bundle,
                version,
                Reason::InvalidSpec,
                e.to_string(),
                vec![],
            ));
        }
    };
    let api = api(client, ns, version);
    // One list per reconcile: it shows both our children and any same-name object we must not touch.
    let existing: BTreeMap<String, DynamicObject> = api
        .list(&ListParams::default())
        .await
        .during("list ExternalSecrets")?
        .items
        .into_iter()
        .map(|o| (o.name_any(), o))
        .collect();

    let mut secrets = Vec::with_capacity(desired.len());
    let (mut conflicts, mut rejections) = (Vec::new(), Vec::new());
    for (want, spec) in desired.into_iter().zip(&bundle.spec.secrets) {
        let name = want.name_any();
        let current = existing.get(&name);
        let adopt =
            spec.adoption_policy.unwrap_or(bundle.spec.adoption_policy) == AdoptionPolicy::IfExists;
        // Adoption is for objects no bundle manages: two bundles never take one from each other.
        if let Some(c) = current
            && !managed_by(c, bundle)
            && (!adopt || c.labels().contains_key(BUNDLE_LABEL))
        {
            let message = match c.labels().get(BUNDLE_LABEL) {
                Some(other) => format!(
                    "ExternalSecret {ns}/{name} is managed by bundle {other}; remove it from one of the two"
                ),
                None => format!(
                    "ExternalSecret {ns}/{name} exists and is not managed by this bundle; delete it, or set adoptionPolicy: IfExists to take it over"
                ),
            };
            conflicts.push(message.clone());
            secrets.push(secretbundle_api::SecretStatus {
                name,
                ready: false,
                reason: Reason::Conflict.as_str().into(),
                message,
            });
            continue;
        }
        let want = with_hash(want)?;
        let want_json = serde_json::to_value(&want).map_err(|source| Error::Serialize {
            what: "child",
            source,
        })?;
        let up_to_date = current
            .map(serde_json::to_value)
            .transpose()
            .map_err(|source| Error::Serialize {
                what: "child",
                source,
            })?
            .is_some_and(|have| is_subset(&want_json, &have));
        let child = if up_to_date {
            current.cloned()
        } else {
            let mut want = want;
            let pp = match current {
                // Ours: fields another manager changed by hand are drift, ours to restore.
                Some(c) if managed_by(c, bundle) => PatchParams::apply(MANAGER).force(),
                // Adopted: take over exactly the object we looked at, or fail and look again.
                Some(c) => {
                    want.metadata.resource_version = c.resource_version();
                    PatchParams::apply(MANAGER).force()
                }
                // New: no force, so an object someone created meanwhile is a conflict, not ours.
                None => PatchParams::apply(MANAGER),
            };
            match api.patch(&name, &pp, &Patch::Apply(&want)).await {
                Ok(applied) => {
                    metrics.applied();
                    Some(applied)
                }
                // The cluster said no (admission, schema, RBAC): report it in its words and go
                // on with the other children; the reconcile is retried with backoff.
                Err(kube::Error::Api(s)) if rejected(&s) => {
                    rejections.push(format!("ExternalSecret {ns}/{name}: {}", s.message));
                    secrets.push(secretbundle_api::SecretStatus {
                        name,
                        ready: false,
                        reason: Reason::ApplyFailed.as_str().into(),
                        message: s.message,
                    });
                    continue;
                }
                Err(e) => return Err(e).during("apply ExternalSecret"),
            }
        };
        secrets.push(status::child_status(
            &name,
            child.as_ref(),
            refresh_disabled(bundle, spec),
        ));
    }
    prune(&api, metrics, bundle, &existing).await?;

    let (reason, mut message) = if !rejections.is_empty() {
        (Reason::ApplyFailed, rejections.join("; "))
    } else if !conflicts.is_empty() {
        (Reason::Conflict, conflicts.join("; "))
    } else {
        status::summarize(&secrets)
    };
    if let Some(note) = refresh_note(bundle) {
        message.push_str(&note);
    }
    Ok(report(bundle, version, reason, message, secrets))
}

fn report(
    bundle: &SecretBundle,
    version: EsoVersion,
    reason: Reason,
    message: String,
    secrets: Vec<secretbundle_api::SecretStatus>,
) -> Report {
    let handled = match reason {
        // Every child now carries the request as its force-sync annotation.
        Reason::Ready | Reason::SecretsNotReady => {
            bundle.annotations().get(REFRESH_ANNOTATION).cloned()
        }
        _ => bundle
            .status
            .as_ref()
            .and_then(|s| s.last_handled_refresh.clone()),
    };
    Report {
        reason,
        message,
        eso_version: Some(version),
        secrets,
        last_handled_refresh: handled,
    }
}

/// Errors that are the cluster's verdict on the object itself, not a passing fault: retrying
/// the same object cannot help until something changes, so they belong in the status.
fn rejected(s: &kube::core::Status) -> bool {
    matches!(s.code, 400 | 403 | 422)
}

fn refresh_disabled(bundle: &SecretBundle, spec: &BundleSecret) -> bool {
    is_zero_duration(
        spec.refresh_interval
            .as_deref()
            .unwrap_or(&bundle.spec.refresh_interval),
    )
}

/// A Go duration (as the schema admits them: `0`, `0s`, `1h30m`, `0.5s`) that is zero. Units
/// hold no digits, so it is zero exactly when every digit is.
pub fn is_zero_duration(d: &str) -> bool {
    d.chars().any(|c| c.is_ascii_digit())
        && d.chars().filter(char::is_ascii_digit).all(|c| c == '0')
}

/// ESO ignores force-sync on a child with refreshInterval "0" once it has synced: say so.
fn refresh_note(bundle: &SecretBundle) -> Option<String> {
    bundle.annotations().get(REFRESH_ANNOTATION)?;
    let skipped: Vec<&str> = bundle
        .spec
        .secrets
        .iter()
        .filter(|s| refresh_disabled(bundle, s))
        .map(|s| s.name.as_str())
        .collect();
    (!skipped.is_empty()).then(|| {
        format!(
            "; refresh request not honoured by ESO for {} (refreshInterval is zero)",
            skipped.join(", ")
        )
    })
}

async fn prune(
    api: &Api<DynamicObject>,
    metrics: &Metrics,
    bundle: &SecretBundle,
    existing: &BTreeMap<String, DynamicObject>,
) -> Result<(), Error> {
    let wanted: BTreeSet<&str> = bundle
        .spec
        .secrets
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    for (name, child) in existing {
        if managed_by(child, bundle) && !wanted.contains(name.as_str()) {
            delete(api, child).await?;
            metrics.pruned();
        }
    }
    Ok(())
}

async fn delete(api: &Api<DynamicObject>, child: &DynamicObject) -> Result<(), Error> {
    // The UID precondition makes sure we delete the object we looked at, not a successor.
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: child.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&child.name_any(), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e).during("delete ExternalSecret"),
    }
}

/// On bundle deletion: delete owned children (`Delete`) or release them (`Orphan`).
pub async fn cleanup(
    client: &Client,
    bundle: &SecretBundle,
    version: Option<EsoVersion>,
) -> Result<(), Error> {
    let Some(version) = version else {
        return Ok(());
    }; // no CRD: no children left to handle
    let api = api(client, &bundle.spec.target_namespace, version);
    let lp = ListParams::default().labels(&format!("{BUNDLE_LABEL}={}", bundle.name_any()));
    let children = match api.list(&lp).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(e).during("list ExternalSecrets"),
    };
    // By label, not ownerReference: Orphan children carry none. The policy in the spec decides,
    // whatever propagation the deletion asked for.
    for child in &children {
        match bundle.spec.deletion_policy {
            secretbundle_api::DeletionPolicy::Delete => delete(&api, child).await?,
            secretbundle_api::DeletionPolicy::Orphan => release(&api, bundle, child).await?,
        }
    }
    Ok(())
}

/// Removes our ownerReference and labels so garbage collection and later bundles leave it be.
async fn release(
    api: &Api<DynamicObject>,
    bundle: &SecretBundle,
    child: &DynamicObject,
) -> Result<(), Error> {
    let others: Vec<_> = child
        .owner_references()
        .iter()
        .filter(|o| Some(&o.uid) != bundle.metadata.uid.as_ref())
        .cloned()
        .collect();
    let patch = json!({"metadata": {
        "resourceVersion": child.resource_version(),
        "ownerReferences": others,
        "labels": {BUNDLE_LABEL: null, MANAGED_BY_LABEL: null},
        "annotations": {APPLIED_HASH_ANNOTATION: null},
    }});
    api.patch(
        &child.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .during("release ExternalSecret")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_tolerates_server_defaults_but_not_drift() {
        let want = json!({"spec": {"data": [{"secretKey": "a", "remoteRef": {"key": "k"}}]}});
        let defaulted = json!({"spec": {"data": [{"secretKey": "a", "remoteRef": {"key": "k", "conversionStrategy": "Default"}}], "target": {"creationPolicy": "Owner"}}});
        assert!(is_subset(&want, &defaulted));
        let edited = json!({"spec": {"data": [{"secretKey": "a", "remoteRef": {"key": "other"}}]}});
        assert!(!is_subset(&want, &edited));
        let extra_item = json!({"spec": {"data": [{"secretKey": "a", "remoteRef": {"key": "k"}}, {"secretKey": "b"}]}});
        assert!(!is_subset(&want, &extra_item));
    }

    #[test]
    fn every_zero_duration_disables_refresh() {
        for zero in ["0", "0s", "0m", "0h", "0ms", "0.0s", "0h0m0s", "00s"] {
            assert!(is_zero_duration(zero), "{zero}");
        }
        for nonzero in ["1h", "0.5s", "10m", "1h0m", "100ms"] {
            assert!(!is_zero_duration(nonzero), "{nonzero}");
        }
    }

    #[test]
    fn hash_is_stable_and_changes_with_content() {
        let ar = EsoKind::ExternalSecret.api_resource(EsoVersion::V1);
        let a = DynamicObject::new("a", &ar).data(json!({"spec": {"refreshInterval": "1h"}}));
        let b = DynamicObject::new("a", &ar).data(json!({"spec": {"refreshInterval": "2h"}}));
        let hash = |o: &DynamicObject| {
            with_hash(o.clone()).expect("hash").annotations()[APPLIED_HASH_ANNOTATION].clone()
        };
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
    }
}
