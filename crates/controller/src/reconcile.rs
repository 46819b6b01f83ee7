//! One reconcile: gates -> build (pure render) -> apply -> status, wrapped in the finalizer.

use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use secretbundle_api::{FINALIZER, SecretBundle};
use tracing::{info, instrument, warn};

use crate::cache::Caches;
use crate::error::Error;
use crate::eso::{CrdProblem, EsoKind};
use crate::metrics::Metrics;
use crate::reason::Reason;
use crate::status::Report;
use crate::writer::StatusWriter;
use crate::{children, gates, observe};

/// What every reconcile shares.
pub struct Context {
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
    pub shard: Option<Selector>,
}

/// Consecutive failed reconciles per bundle, for exponential backoff.
#[derive(Default)]
pub struct Failures(std::sync::Mutex<std::collections::HashMap<String, u32>>);

impl Failures {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, u32>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one more failure; returns how many came before it.
    fn record(&self, bundle: &str) -> u32 {
        let mut map = self.map();
        let n = map.entry(bundle.to_string()).or_default();
        *n = n.saturating_add(1);
        *n - 1
    }

    pub fn clear(&self, bundle: &str) {
        self.map().remove(bundle);
    }

    /// Forgets every bundle `keep` says is gone (after a relist, which reports no deletions).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.map().retain(|b, _| keep(b));
    }
}

/// 1 s, 2 s, 4 s, ... up to 5 minutes: quick after a blip, gentle on a cluster that keeps saying no.
pub fn retry_delay(previous_failures: u32) -> Duration {
    const BASE: Duration = Duration::from_secs(1);
    const CAP: Duration = Duration::from_secs(300);
    BASE.saturating_mul(2u32.saturating_pow(previous_failures.min(16)))
        .min(CAP)
}

#[instrument(skip_all, fields(bundle = %bundle.name_any()))]
pub async fn reconcile(bundle: Arc<SecretBundle>, ctx: Arc<Context>) -> Result<Action, Error> {
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
            Event::Apply(b) => apply(&b, &ctx).await,
            Event::Cleanup(b) => cleanup(&b, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .finished(started, result.as_ref().err().map(Error::category));
    if result.is_ok() {
        ctx.failures.clear(&bundle_name);
    }
    result
}

/// A failed reconcile (API unreachable, a write conflict, a rejected child) is logged and
/// retried with exponential backoff; a watch event may retry it sooner.
pub fn error_policy(bundle: Arc<SecretBundle>, error: &Error, ctx: Arc<Context>) -> Action {
    let delay = retry_delay(ctx.failures.record(&bundle.name_any()));
    warn!(bundle = %bundle.name_any(), category = error.category(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn apply(bundle: &SecretBundle, ctx: &Context) -> Result<Action, Error> {
    let facts = observe::facts(&ctx.caches, &ctx.bundles, bundle);
    let (report, refused) = match gates::evaluate(bundle, &facts) {
        Ok(version) => {
            children::sync(
                &ctx.client,
                &ctx.caches,
                &ctx.metrics,
                &ctx.writes,
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

async fn cleanup(bundle: &SecretBundle, ctx: &Context) -> Result<Action, Error> {
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
    children::cleanup(&ctx.client, bundle, version).await?;
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

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap() {
        let delays: Vec<u64> = (0..12).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn failures_count_per_bundle_and_clear_on_success() {
        let f = Failures::default();
        assert_eq!((f.record("a"), f.record("a"), f.record("b")), (0, 1, 0));
        f.clear("a");
        assert_eq!(f.record("a"), 0);
    }
}
