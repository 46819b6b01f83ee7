//! Writes to the target namespace: apply, prune, and cleanup on deletion. Only children this
//! bundle owns are ever changed, unless its adoption policy allows taking one over.

use std::sync::Arc;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use secretbundle_api::{
    AdoptionPolicy, BUNDLE_LABEL, BundleSecret, MANAGED_BY_LABEL, MANAGER, REFRESH_ANNOTATION,
    RefreshPolicy, SecretBundle, SecretStatus,
};
use serde_json::json;

use futures::{StreamExt, stream};
use tokio::sync::Semaphore;

use super::handover;
use super::render::render;
use crate::applied::{APPLIED_HASH_ANNOTATION, with_hash};
use crate::cache::{Caches, Child, ChildKey, Claim, Current, EsObject, child_key};
use crate::error::{Error, KubeContext};
use crate::eso::{EsoKind, EsoVersion};
use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::shard::Shard;
use crate::status::{self, Report};

fn api<K>(client: &Client, ns: &str, version: EsoVersion) -> Api<K>
where
    K: kube::Resource<
            DynamicType = kube::core::ApiResource,
            Scope = kube::core::DynamicResourceScope,
        >,
{
    Api::namespaced_with(
        client.clone(),
        ns,
        &EsoKind::ExternalSecret.api_resource(version),
    )
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
/// Ownership is decided from the caches; creating a name no one has is claimed first, so two
/// bundles never both create it, and done without force, so the apiserver refuses it if another
/// writer created it meanwhile. Bundles of one namespace reconcile side by side.
pub async fn sync(
    client: &Client,
    caches: &Caches,
    metrics: &Metrics,
    writes: &Semaphore,
    shard: Option<&Shard>,
    bundle: &SecretBundle,
    version: EsoVersion,
) -> Result<(Report, Option<u16>), Error> {
    let ns = &bundle.spec.target_namespace;
    let desired = match render(bundle, version) {
        Ok(mut d) => {
            if let Some(shard) = shard {
                shard.stamp(bundle, &mut d);
            }
            d
        }
        Err(e) => {
            let r = report(bundle, version, Reason::InvalidSpec, e.to_string(), vec![]);
            return Ok((r, None));
        }
    };
    let api = api::<EsObject>(client, ns, version);
    let me = bundle.name_any();
    let one = One {
        api: &api,
        caches,
        metrics,
        writes,
        bundle,
        me: &me,
    };
    // Side by side, in spec order; `writes` bounds the writes in flight across all bundles.
    let settling: Vec<_> = desired
        .into_iter()
        .zip(&bundle.spec.secrets)
        .map(|(want, spec)| one.settle(want, spec))
        .collect();
    let outcomes: Vec<Result<Outcome, Error>> = stream::iter(settling)
        .buffered(CHILDREN_IN_FLIGHT)
        .collect()
        .await;
    let mut secrets = Vec::with_capacity(outcomes.len());
    let (mut conflicts, mut rejections) = (Vec::new(), Vec::new());
    let mut refused = None;
    for (outcome, spec) in outcomes.into_iter().zip(&bundle.spec.secrets) {
        let name = spec.name.clone();
        match outcome? {
            Outcome::Current(c) | Outcome::Written(c) => secrets.push(status::child_status(
                &name,
                Some(&c),
                refresh_disabled(bundle, spec),
            )),
            Outcome::Conflict(message) => {
                conflicts.push(message.clone());
                secrets.push(child_failure(name, Reason::Conflict, message));
            }
            // The cluster said no (admission, schema, RBAC): report it in its words and go on
            // with the other children; the reconcile is retried with backoff.
            Outcome::Rejected(code, message) => {
                refused.get_or_insert(code);
                rejections.push(format!("ExternalSecret {ns}/{name}: {message}"));
                secrets.push(child_failure(name, Reason::ApplyFailed, message));
            }
        }
    }
    prune(&api, caches, metrics, bundle).await?;

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
    Ok((report(bundle, version, reason, message, secrets), refused))
}

/// A bundle's children settled side by side: at most this many at once per bundle.
const CHILDREN_IN_FLIGHT: usize = 8;

/// What settling one child needs.
struct One<'a> {
    api: &'a Api<EsObject>,
    caches: &'a Caches,
    metrics: &'a Metrics,
    writes: &'a Semaphore,
    bundle: &'a SecretBundle,
    me: &'a str,
}

impl One<'_> {
    /// Brings one child to `want`, deciding ownership from the caches.
    async fn settle(&self, want: DynamicObject, spec: &BundleSecret) -> Result<Outcome, Error> {
        let (bundle, me) = (self.bundle, self.me);
        let ns = &bundle.spec.target_namespace;
        let name = want.name_any();
        let key = child_key(ns, &name);
        let adopt =
            spec.adoption_policy.unwrap_or(bundle.spec.adoption_policy) == AdoptionPolicy::IfExists;
        let want = with_hash(want)?;
        let forced = PatchParams::apply(MANAGER).force();
        Ok(match self.caches.current(&key) {
            Current::Labelled(c) if c.bundle() != Some(me) => {
                let other = c.bundle().unwrap_or_default();
                Outcome::Conflict(managed_by_other(ns, &name, other))
            }
            // As wanted; still shared if adopted before the hand-over existed or claimed anew.
            Current::Labelled(c) if c.matches(&want)? => match c.shares_spec() {
                true => self.hand_over(key, &want, c).await?,
                false => Outcome::Current(c),
            },
            // Ours: fields another manager changed by hand are drift, ours to restore.
            Current::Labelled(_) => self.write(key, want, forced).await?,
            // Ours with its labels removed by hand, or adopted (adoption is for objects no bundle
            // manages: two bundles never take one from each other).
            Current::Foreign(f) if f.owned_by(bundle) || f.carries(&want) || adopt => {
                // Take over exactly the object we looked at, or fail and look again.
                let mut want = want;
                want.metadata
                    .resource_version
                    .clone_from(&f.resource_version);
                self.write(key, want, forced).await?
            }
            Current::Foreign(_) => Outcome::Conflict(not_ours(ns, &name)),
            Current::Elsewhere(e) if e.bundle() != me => {
                Outcome::Conflict(managed_by_other(ns, &name, e.bundle()))
            }
            // Ours, still labelled for the shard this bundle moved from: relabel exactly it.
            Current::Elsewhere(e) => {
                let mut want = want;
                want.metadata.resource_version = e.resource_version();
                self.write(key, want, forced).await?
            }
            Current::Absent => match self.caches.claim(&key, me) {
                // New: no force, so an object someone created meanwhile is a conflict, not ours.
                // The claim is held until what was created is in the cache.
                Claim::Granted(_claim) => {
                    self.write(key, want, PatchParams::apply(MANAGER)).await?
                }
                Claim::Held(other) => Outcome::Conflict(format!(
                    "ExternalSecret {ns}/{name} is being created for bundle {other}; remove it from one of the two"
                )),
                // Created since we looked: its watch event wakes this bundle to look again.
                Claim::Exists => Outcome::Conflict(format!(
                    "ExternalSecret {ns}/{name} was created meanwhile; checking who manages it"
                )),
            },
        })
    }

    async fn write(
        &self,
        key: ChildKey,
        want: DynamicObject,
        pp: PatchParams,
    ) -> Result<Outcome, Error> {
        let outcome = {
            let _permit = self.writes.acquire().await;
            write(self.api, &want, pp).await?
        };
        let Outcome::Written(c) = outcome else {
            return Ok(outcome);
        };
        self.metrics.applied();
        self.caches.written(key.clone(), c.clone(), self.me);
        // Adopted (or edited by hand): the old manager still co-owns the spec.
        if c.shares_spec() {
            return self.hand_over(key, &want, c).await;
        }
        Ok(Outcome::Written(c))
    }

    /// Leaves the spec of `c`, already as wanted, to the operator alone: see [`handover`].
    async fn hand_over(
        &self,
        key: ChildKey,
        want: &DynamicObject,
        c: Arc<Child>,
    ) -> Result<Outcome, Error> {
        let written = {
            let _permit = self.writes.acquire().await;
            handover::drop_other_spec_managers(self.api, &key.1).await
        };
        match written {
            Ok(Some(o)) => {
                let c = Arc::new(Child::from(o).applied(want));
                self.caches.written(key, c.clone(), self.me);
                Ok(Outcome::Written(c))
            }
            Ok(None) => Ok(Outcome::Current(c)),
            Err(kube::Error::Api(s)) if rejected(&s) => Ok(Outcome::Rejected(s.code, s.message)),
            Err(e) => Err(e).during("hand over ExternalSecret"),
        }
    }
}

/// The conflict of a child another bundle manages (the controller's and `diff`'s words).
pub fn managed_by_other(ns: &str, name: &str, other: &str) -> String {
    format!(
        "ExternalSecret {ns}/{name} is managed by bundle {other}; remove it from one of the two"
    )
}

/// The conflict of an existing child no bundle manages and this one may not adopt.
pub fn not_ours(ns: &str, name: &str) -> String {
    format!(
        "ExternalSecret {ns}/{name} exists and is not managed by this bundle; delete it, or set adoptionPolicy: IfExists to take it over"
    )
}

/// What became of one child.
enum Outcome {
    /// Already as wanted.
    Current(Arc<Child>),
    /// Applied; the apiserver's answer.
    Written(Arc<Child>),
    Conflict(String),
    /// Refused by the apiserver: its code (for the failure's category) and words.
    Rejected(u16, String),
}

fn child_failure(name: String, reason: Reason, message: String) -> SecretStatus {
    SecretStatus {
        name,
        ready: false,
        reason: reason.as_str().into(),
        message,
    }
}

async fn write(
    api: &Api<EsObject>,
    want: &DynamicObject,
    pp: PatchParams,
) -> Result<Outcome, Error> {
    match api.patch(&want.name_any(), &pp, &Patch::Apply(want)).await {
        Ok(child) => Ok(Outcome::Written(Arc::new(Child::from(child).applied(want)))),
        Err(kube::Error::Api(s)) if rejected(&s) => Ok(Outcome::Rejected(s.code, s.message)),
        Err(e) => Err(e).during("apply ExternalSecret"),
    }
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
    no_refresh_cause(bundle, spec).is_some()
}

/// Why ESO will not sync this child again after its first sync (not even on request), if so:
/// ESO's `shouldRefresh`. OnChange re-syncs on any change to the child, force-sync included.
fn no_refresh_cause(bundle: &SecretBundle, spec: &BundleSecret) -> Option<&'static str> {
    match spec.refresh_policy {
        Some(RefreshPolicy::CreatedOnce) => Some("refreshPolicy is CreatedOnce"),
        Some(RefreshPolicy::OnChange) => None,
        Some(RefreshPolicy::Periodic) | None => is_zero_duration(
            spec.refresh_interval
                .as_deref()
                .unwrap_or(&bundle.spec.refresh_interval),
        )
        .then_some("refreshInterval is zero"),
    }
}

/// A Go duration (as the schema admits them: `0`, `0s`, `1h30m`, `0.5s`) that is zero. Units
/// hold no digits, so it is zero exactly when every digit is.
pub fn is_zero_duration(d: &str) -> bool {
    d.chars().any(|c| c.is_ascii_digit())
        && d.chars().filter(char::is_ascii_digit).all(|c| c == '0')
}

/// ESO ignores force-sync on a child it will not sync again: say so, naming each and why.
fn refresh_note(bundle: &SecretBundle) -> Option<String> {
    bundle.annotations().get(REFRESH_ANNOTATION)?;
    let skipped: Vec<String> = bundle
        .spec
        .secrets
        .iter()
        .filter_map(|s| Some(format!("{} ({})", s.name, no_refresh_cause(bundle, s)?)))
        .collect();
    (!skipped.is_empty()).then(|| {
        format!(
            "; refresh request not honoured by ESO for {}",
            skipped.join(", ")
        )
    })
}

async fn prune(
    api: &Api<EsObject>,
    caches: &Caches,
    metrics: &Metrics,
    bundle: &SecretBundle,
) -> Result<(), Error> {
    let ns = &bundle.spec.target_namespace;
    let wanted = bundle.spec.secret_names();
    let mine = caches.children_of(&bundle.name_any(), bundle.metadata.uid.as_deref());
    for ((child_ns, name), current) in mine {
        if *child_ns != **ns || wanted.contains(&*name) {
            continue;
        }
        let uid = match &current {
            Current::Labelled(c) => c.uid(),
            Current::Foreign(f) => f.uid.clone(),
            Current::Elsewhere(e) => e.uid(),
            Current::Absent => continue,
        };
        delete(api, &name, uid).await?;
        caches.deleted(&(child_ns, name));
        metrics.pruned();
    }
    Ok(())
}

async fn delete<K>(api: &Api<K>, name: &str, uid: Option<String>) -> Result<(), Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    // The UID precondition makes sure we delete the object we looked at, not a successor.
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
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
    let api = api::<DynamicObject>(client, &bundle.spec.target_namespace, version);
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
            secretbundle_api::DeletionPolicy::Delete => {
                delete(&api, &child.name_any(), child.uid()).await?;
            }
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
    fn every_zero_duration_disables_refresh() {
        for zero in ["0", "0s", "0m", "0h", "0ms", "0.0s", "0h0m0s", "00s"] {
            assert!(is_zero_duration(zero), "{zero}");
        }
        for nonzero in ["1h", "0.5s", "10m", "1h0m", "100ms"] {
            assert!(!is_zero_duration(nonzero), "{nonzero}");
        }
    }

    #[test]
    fn the_refresh_note_names_every_child_eso_will_not_refresh_and_why() {
        let b: SecretBundle = serde_json::from_value(json!({
            "metadata": {"name": "b", "annotations": {REFRESH_ANNOTATION: "r1"}},
            "spec": {"targetNamespace": "ns", "secretStoreRef": {"name": "s"}, "refreshInterval": "0s",
                "secrets": [
                    {"name": "zero", "dataFrom": [{"extract": {"key": "k"}}]},
                    {"name": "periodic-zero", "refreshPolicy": "Periodic", "dataFrom": [{"extract": {"key": "k"}}]},
                    {"name": "on-change", "refreshPolicy": "OnChange", "dataFrom": [{"extract": {"key": "k"}}]},
                    {"name": "once", "refreshPolicy": "CreatedOnce", "refreshInterval": "1h", "dataFrom": [{"extract": {"key": "k"}}]},
                    {"name": "hourly", "refreshInterval": "1h", "dataFrom": [{"extract": {"key": "k"}}]}
                ]}
        }))
        .expect("bundle");
        assert_eq!(
            refresh_note(&b).as_deref(),
            Some(
                "; refresh request not honoured by ESO for zero (refreshInterval is zero), \
                 periodic-zero (refreshInterval is zero), once (refreshPolicy is CreatedOnce)"
            )
        );
        let refreshed: Vec<bool> = b
            .spec
            .secrets
            .iter()
            .map(|s| refresh_disabled(&b, s))
            .collect();
        assert_eq!(refreshed, [true, true, false, true, false]);
    }
}
