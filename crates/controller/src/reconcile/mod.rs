//! One reconcile: gates -> build (pure render) -> apply -> status, wrapped in the finalizer.

pub mod apply;
pub mod gates;
mod handover;

pub mod observe;
pub mod render;

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event, finalizer};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use secretbundle_api::{FINALIZER, SecretBundle};
use tracing::{info, instrument, warn};

use crate::backoff::retry_delay;
use crate::cache::Caches;
use crate::error::Error;
use crate::eso::{CrdProblem, EsoKind};
use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::shard::Shard;
use crate::status::{Report, StatusWriter};

/// What every reconcile shares.
pub(crate) struct Context {
    pub client: Client,
    /// The controller's own cache of bundles: dependencies are read from here.
    pub bundles: Store<SecretBundle>,
    /// Namespaces, CRDs, stores and ExternalSecrets, as the watches report them.
    pub caches: Arc<Caches>,
    pub status: Arc<StatusWriter>,
    pub metrics: Arc<Metrics>,
    pub failures: Arc<Failures>,
    /// Child writes in flight, across all bundles: `--concurrency` of them.
    pub writes: tokio::sync::Semaphore,
    /// This replica's shard: only bundles whose labels match are reconciled (all when `None`).
    pub shard: Option<Shard>,
}

/// Consecutive failed reconciles per bundle, for exponential backoff.
#[derive(Default)]
pub(crate) struct Failures(std::sync::Mutex<std::collections::HashMap<String, u32>>);

impl Failures {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u32>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one more failure; returns how many came before it.
    pub(crate) fn record(&self, bundle: &str) -> u32 {
        let mut map = self.map();
        let n = map.entry(bundle.to_string()).or_default();
        *n = n.saturating_add(1);
        *n - 1
    }

    /// Whether `bundle` is backing off.
    #[cfg(test)]
    pub(crate) fn failing(&self, bundle: &str) -> bool {
        self.map().contains_key(bundle)
    }

    pub fn clear(&self, bundle: &str) {
        self.map().remove(bundle);
    }

    /// Forgets every bundle `keep` says is gone (after a relist, which reports no deletions).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.map().retain(|b, _| keep(b));
    }
}

#[instrument(skip_all, fields(bundle = %bundle.name_any()))]
pub(crate) async fn reconcile(
    bundle: Arc<SecretBundle>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let bundle_name = bundle.name_any();
    if let Some(shard) = &ctx.shard
        && !shard.matches(bundle.labels())
    {
        // Another shard's (or it just moved there): not ours to write.
        ctx.metrics.forget(&bundle_name);
        return Ok(Action::await_change());
    }
    let started = ctx.metrics.start();
    let api: Api<SecretBundle> = Api::all(ctx.client.clone());
    let result = finalizer(&api, FINALIZER, bundle, |event| async {
        match event {
            Event::Apply(b) => on_apply(&b, &ctx).await,
            Event::Cleanup(b) => on_cleanup(&b, &ctx).await,
        }
    })
    .await;
    let result = match result {
        // Gone already: a reconcile woken from a cache that had not seen the deletion yet ran
        // the cleanup once more and found the finalizer removed with the bundle. Done, as wanted.
        Err(finalizer::Error::RemoveFinalizer(kube::Error::Api(s))) if s.code == 404 => {
            Ok(Action::await_change())
        }
        other => other.map_err(|e| Error::Finalizer(Box::new(e))),
    };
    ctx.metrics
        .finished(started, result.as_ref().err().map(Error::category));
    if result.is_ok() {
        ctx.failures.clear(&bundle_name);
    }
    result
}

/// A failed reconcile (API unreachable, a write conflict, a rejected child) is logged and
/// retried with exponential backoff; a watch event may retry it sooner.
pub(crate) fn error_policy(bundle: Arc<SecretBundle>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = retry_delay(ctx.failures.record(&bundle.name_any()));
    warn!(bundle = %bundle.name_any(), category = error.category(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn on_apply(bundle: &SecretBundle, ctx: &Context) -> Result<Action, Error> {
    let facts = observe::facts(&ctx.caches, &ctx.bundles, bundle);
    let (report, refused) = match gates::evaluate(bundle, &facts) {
        Ok(version) => {
            apply::sync(
                &ctx.client,
                &ctx.caches,
                &ctx.metrics,
                &ctx.writes,
                ctx.shard.as_ref(),
                bundle,
                version,
            )
            .await?
        }
        Err(blocked) => (
            Report {
                reason: blocked.reason,
                message: blocked.message,
                eso_version: facts.crd.ok(),
                secrets: vec![],
                last_handled_refresh: bundle
                    .status
                    .as_ref()
                    .and_then(|s| s.last_handled_refresh.clone()),
            },
            None,
        ),
    };
    let (reason, message) = (report.reason, report.message.clone());
    // Written off the reconcile path, after the children: only the latest report counts.
    ctx.status.submit(bundle, report);
    ctx.metrics.reconciled(&bundle.name_any(), reason);
    if reason == Reason::ApplyFailed {
        // Reported; now an error, so the controller retries it with backoff.
        let code = refused.unwrap_or(422);
        return Err(Error::Rejected { code, message });
    }
    // Watches on every input drive the next reconcile; nothing is polled.
    Ok(Action::await_change())
}

async fn on_cleanup(bundle: &SecretBundle, ctx: &Context) -> Result<Action, Error> {
    let version = match ctx.caches.crd(EsoKind::ExternalSecret) {
        Ok(v) => Some(v),
        // No CRD, no ExternalSecrets: none of ours is left to delete or release.
        Err(CrdProblem::Absent) => None,
        // The CRD is there but its objects cannot be read or written now: children may exist
        // that must be released (Orphan) or deleted, so the finalizer stays until they can be.
        Err(problem) => {
            let message = cleanup_blocked(bundle, &problem);
            let report = Report {
                reason: Reason::WaitingForCRD,
                message: message.clone(),
                eso_version: None,
                secrets: vec![],
                last_handled_refresh: bundle
                    .status
                    .as_ref()
                    .and_then(|s| s.last_handled_refresh.clone()),
            };
            ctx.status.submit(bundle, report);
            ctx.metrics
                .reconciled(&bundle.name_any(), Reason::WaitingForCRD);
            return Err(Error::CleanupBlocked(message));
        }
    };
    apply::cleanup(&ctx.client, bundle, version).await?;
    ctx.metrics.forget(&bundle.name_any());
    info!(policy = ?bundle.spec.deletion_policy, "cleaned up children");
    Ok(Action::await_change())
}

/// Why a deleted bundle keeps its finalizer while the ExternalSecret CRD is unusable.
fn cleanup_blocked(bundle: &SecretBundle, problem: &CrdProblem) -> String {
    let what = match bundle.spec.deletion_policy {
        secretbundle_api::DeletionPolicy::Orphan => "released (deletionPolicy Orphan)",
        secretbundle_api::DeletionPolicy::Delete => "deleted (deletionPolicy Delete)",
    };
    format!(
        "deletion waits: the ExternalSecret CRD {problem}, and the bundle's ExternalSecrets must be \
         {what} before its finalizer is removed"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use futures::StreamExt as _;
    use kube::runtime::events::{Recorder, Reporter};
    use kube::runtime::reflector;
    use kube::runtime::watcher;
    use serde_json::json;

    fn deleted_bundle(policy: &str) -> SecretBundle {
        serde_json::from_value(json!({
            "apiVersion": "secrets.ameide.io/v1alpha1", "kind": "SecretBundle",
            "metadata": {"name": "b", "uid": "u1", "generation": 2, "resourceVersion": "5",
                         "finalizers": [FINALIZER], "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"targetNamespace": "ns", "secretStoreRef": {"name": "vault"},
                     "deletionPolicy": policy, "secrets": []},
        }))
        .expect("bundle")
    }

    /// A controller's context on a scripted API server, the ExternalSecret CRD in `crd`.
    fn context(
        crd: Result<crate::eso::EsoVersion, CrdProblem>,
        bundle: &SecretBundle,
    ) -> (
        Arc<Context>,
        futures::channel::mpsc::UnboundedReceiver<crate::mock_api::Exchange>,
    ) {
        let (client, requests) = crate::mock_api::pair();
        let (store, mut cache) = reflector::store();
        cache.apply_watcher_event(&watcher::Event::Apply(bundle.clone()));
        let caches = Arc::new(Caches::new(futures::channel::mpsc::unbounded().0));
        match crd {
            Ok(v) => {
                caches.crd_usable(EsoKind::ExternalSecret, v, true);
                caches.synced(EsoKind::ExternalSecret, v);
            }
            Err(p) => caches.crd_unusable(EsoKind::ExternalSecret, p),
        }
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(Metrics::new(&mut registry));
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "test".into(),
                instance: None,
            },
        );
        let status = StatusWriter::new(
            client.clone(),
            store.clone(),
            recorder,
            metrics.clone(),
            None,
        );
        let ctx = Context {
            client,
            bundles: store,
            caches,
            status,
            metrics,
            failures: Arc::default(),
            writes: tokio::sync::Semaphore::new(1),
            shard: None,
        };
        (Arc::new(ctx), requests)
    }

    /// Deleted while the ExternalSecret CRD exists but cannot be used: the Orphan children
    /// cannot be released, so the finalizer stays and the status says why.
    #[tokio::test(start_paused = true)]
    async fn cleanup_waits_for_a_usable_crd_and_says_why() {
        for problem in [
            CrdProblem::NotEstablished,
            CrdProblem::NoSupportedVersion(vec!["v2".into()]),
        ] {
            let bundle = deleted_bundle("Orphan");
            let (ctx, mut requests) = context(Err(problem.clone()), &bundle);
            let _writer = tokio::spawn(ctx.status.clone().run());
            // Spawned: the code before this fix waited on an answer to its finalizer removal.
            let task = tokio::spawn(reconcile(Arc::new(bundle), ctx.clone()));
            let write = requests.next().await.expect("a request");
            assert_eq!(
                write.path(),
                "/apis/secrets.ameide.io/v1alpha1/secretbundles/b/status",
                "{problem:?}: not a status write"
            );
            let message = write.body["status"]["conditions"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                message.contains(&problem.to_string()) && message.contains("Orphan"),
                "{message}"
            );
            let err = task
                .await
                .expect("task")
                .expect_err("the finalizer was removed");
            assert_eq!(err.category(), "cleanup_blocked", "{problem:?}");
            ctx.status.stop();
        }
    }

    /// Without the CRD no ExternalSecret can exist: nothing to release, the finalizer goes.
    #[tokio::test(start_paused = true)]
    async fn cleanup_without_the_crd_removes_the_finalizer() {
        let bundle = deleted_bundle("Orphan");
        let (ctx, mut requests) = context(Err(CrdProblem::Absent), &bundle);
        let task = tokio::spawn(reconcile(Arc::new(bundle.clone()), ctx));
        let patch = requests.next().await.expect("the finalizer's removal");
        assert_eq!(
            (patch.method.as_str(), patch.path()),
            ("PATCH", "/apis/secrets.ameide.io/v1alpha1/secretbundles/b")
        );
        assert!(patch.body.to_string().contains("remove"), "{}", patch.body);
        patch.json(200, &serde_json::to_value(&bundle).expect("json"));
        task.await.expect("task").expect("reconcile");
    }

    /// Woken again from a cache that has not seen the deletion yet: the cleanup runs once more,
    /// and the finalizer it would remove is gone with the bundle. That is done, not a failure.
    #[tokio::test(start_paused = true)]
    async fn a_second_cleanup_of_a_bundle_already_gone_succeeds() {
        let bundle = deleted_bundle("Orphan");
        let (ctx, mut requests) = context(Err(CrdProblem::Absent), &bundle);
        let task = tokio::spawn(reconcile(Arc::new(bundle), ctx));
        let patch = requests.next().await.expect("the finalizer's removal");
        assert_eq!(patch.method.as_str(), "PATCH");
        patch.status(404, "secretbundles.secrets.ameide.io \"b\" not found");
        task.await.expect("task").expect("nothing left to do");
    }

    #[test]
    fn failures_count_per_bundle_and_clear_on_success() {
        let f = Failures::default();
        assert_eq!((f.record("a"), f.record("a"), f.record("b")), (0, 1, 0));
        f.clear("a");
        assert_eq!(f.record("a"), 0);
    }
}
