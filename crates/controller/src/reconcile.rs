//! One reconcile: gates -> build (pure render) -> apply -> status, wrapped in the finalizer.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use secretbundle_api::{FINALIZER, MANAGER, SecretBundle};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::error::{Error, KubeContext};
use crate::metrics::Metrics;
use crate::reason::{Phase, Reason};
use crate::status::{self, Report};
use crate::{children, gates, observe};

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    /// The controller's own cache of bundles: dependencies are read from here.
    pub bundles: Store<SecretBundle>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub locks: children::NamespaceLocks,
    pub failures: Failures,
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

    fn clear(&self, bundle: &str) {
        self.map().remove(bundle);
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
    let started = ctx.metrics.start();
    let bundle_name = bundle.name_any();
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
    let facts = observe::facts(&ctx.client, &ctx.bundles, bundle).await?;
    let report = match gates::evaluate(bundle, &facts) {
        Ok(version) => {
            children::sync(&ctx.client, &ctx.metrics, &ctx.locks, bundle, version).await?
        }
        Err(blocked) => Report {
            reason: blocked.reason,
            message: blocked.message,
            eso_version: facts.crd.ok(),
            secrets: vec![],
            last_handled_refresh: bundle
                .status
                .as_ref()
                .and_then(|s| s.last_handled_refresh.clone()),
        },
    };
    write_status(bundle, &report, ctx).await?;
    ctx.metrics.reconciled(&bundle.name_any(), report.reason);
    if report.reason == Reason::ApplyFailed {
        // Reported; now an error, so the controller retries it with backoff.
        return Err(Error::Rejected(report.message));
    }
    // Watches on every input drive the next reconcile; nothing is polled.
    Ok(Action::await_change())
}

async fn cleanup(bundle: &SecretBundle, ctx: &Context) -> Result<Action, Error> {
    let version = observe::eso_version(&ctx.client).await?.ok();
    children::cleanup(&ctx.client, bundle, version).await?;
    ctx.metrics.forget(&bundle.name_any());
    info!(policy = ?bundle.spec.deletion_policy, "cleaned up children");
    Ok(Action::await_change())
}

async fn write_status(bundle: &SecretBundle, report: &Report, ctx: &Context) -> Result<(), Error> {
    let next = status::next_status(bundle, report, &Time(k8s_openapi::jiff::Timestamp::now()));
    if bundle.status.as_ref() == Some(&next) {
        return Ok(()); // nothing changed: no write
    }
    let patch = json!({
        "apiVersion": SecretBundle::api_version(&()),
        "kind": SecretBundle::kind(&()),
        "status": next,
    });
    Api::<SecretBundle>::all(ctx.client.clone())
        .patch_status(
            &bundle.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .during("patch bundle status")?;
    let before = status::ready_reason(bundle.status.as_ref());
    if before != Some(report.reason) {
        info!(reason = %report.reason, message = %report.message, "bundle moved");
        publish(bundle, report, ctx).await;
    }
    Ok(())
}

/// Events are best effort: a failure to record one must not fail the reconcile.
async fn publish(bundle: &SecretBundle, report: &Report, ctx: &Context) {
    let type_ = match report.reason.phase() {
        Phase::Stalled => EventType::Warning,
        Phase::Ready | Phase::Idle | Phase::Progressing | Phase::Suspended => EventType::Normal,
    };
    let event = KubeEvent {
        type_,
        reason: report.reason.as_str().into(),
        note: Some(report.message.chars().take(1000).collect()),
        action: if report.reason == Reason::Ready {
            "Reconciled"
        } else {
            "Waiting"
        }
        .into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &bundle.object_ref(&())).await {
        warn!(error = %e, "could not record event");
    }
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
