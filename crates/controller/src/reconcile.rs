//! One reconcile: gates -> build (pure render) -> apply -> status, wrapped in the finalizer.

use std::sync::Arc;

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
}

#[instrument(skip_all, fields(bundle = %bundle.name_any()))]
pub async fn reconcile(bundle: Arc<SecretBundle>, ctx: Arc<Context>) -> Result<Action, Error> {
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
    result
}

/// A failed reconcile (API unreachable, a write conflict) is logged and retried after 5 s.
pub fn error_policy(bundle: Arc<SecretBundle>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(bundle = %bundle.name_any(), category = error.category(), %error, "reconcile failed");
    Action::requeue(std::time::Duration::from_secs(5))
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
        Phase::Ready | Phase::Progressing | Phase::Suspended => EventType::Normal,
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
