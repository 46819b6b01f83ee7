//! Status writes, off the reconcile path. A reconcile hands over what it concluded and moves on
//! to the next bundle; the latest conclusion per bundle is written (an older one still waiting
//! is replaced, so a state that lasted milliseconds costs no write), then the bundle's event.
//! Together with the rate limit's preference for child writes, a gate that opens for hundreds
//! of bundles at once gets their children out before their statuses.
//!
//! Whether a write is needed is judged against the status the bundle has now. The bundle cache
//! learns of the writer's own patch only when the watch delivers it, a round trip or more later;
//! judged against the cache alone, a report that undoes the last write within that window (a
//! child not Ready, then Ready again) would look unchanged and be dropped, and since a status
//! change wakes no reconcile the bundle would keep the old reason. So the writer keeps what it
//! last wrote, with the resourceVersion the apiserver gave it, and trusts the cache again only
//! once the cache holds that version or a newer one.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use secretbundle_api::{MANAGER, SecretBundle, SecretBundleStatus};
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

use super::conditions::{self, Report};
use super::digest;
use crate::backoff::retry_delay;
use crate::metrics::Metrics;
use crate::reason::{Phase, Reason};

/// A conclusion waiting to be written.
#[derive(Clone, Debug)]
struct Pending {
    uid: Option<String>,
    /// The generation the report was reached for: a report for an older one is dropped.
    generation: Option<i64>,
    report: Report,
    failures: u32,
    /// Not written before: a conclusion replaced within [`SETTLE`] costs no write.
    due: Instant,
}

/// How long a conclusion other than Ready waits before it is written. When a gate opens for
/// many bundles at once (ESO's CRDs installed, then its store), the intermediate states they
/// pass through for a few milliseconds would otherwise cost a status write and an event each,
/// and take the rate limit's budget from the children users wait for. Ready is written at once:
/// `kubectl wait` and dependents should not wait for it.
const SETTLE: Duration = Duration::from_millis(250);

/// A status this writer wrote that the bundle cache may not show yet.
#[derive(Clone, Debug)]
struct Written {
    uid: Option<String>,
    /// The resourceVersion the apiserver answered the patch with.
    resource_version: Option<String>,
    status: Option<SecretBundleStatus>,
}

#[derive(Default)]
struct Queue {
    pending: HashMap<String, Pending>,
    /// Being written now: not picked by a second writer, so writes of a bundle stay in order.
    busy: HashSet<String>,
    /// Last writes the cache has not caught up with yet.
    written: HashMap<String, Written>,
    stopped: bool,
}

impl Queue {
    /// `bundle` as it is now: the cached object, with the status last written when the cache
    /// has not seen that write yet. Forgets a write the cache has caught up with.
    fn current(&mut self, bundle: &SecretBundle) -> SecretBundle {
        let name = bundle.name_any();
        let Some(w) = self.written.get(&name) else {
            return bundle.clone();
        };
        if w.uid != bundle.metadata.uid
            || caught_up(
                bundle.metadata.resource_version.as_deref(),
                w.resource_version.as_deref(),
            )
        {
            self.written.remove(&name);
            return bundle.clone();
        }
        let mut now = bundle.clone();
        now.status.clone_from(&w.status);
        now
    }
}

/// Whether a cached object at `cached` includes the write that returned `written`. The
/// apiserver's resourceVersions are increasing integers (etcd revisions); anything else is
/// compared for equality only.
fn caught_up(cached: Option<&str>, written: Option<&str>) -> bool {
    let number = |v: Option<&str>| v.and_then(|v| v.parse::<u64>().ok());
    match (number(cached), number(written)) {
        (Some(c), Some(w)) => c >= w,
        _ => cached == written,
    }
}

pub struct StatusWriter {
    client: Client,
    bundles: Store<SecretBundle>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// This replica's shard: a bundle that left it is written by the shard it moved to.
    shard: Option<Selector>,
    queue: Mutex<Queue>,
    wake: Notify,
    /// Told whenever the last write in flight finishes ([`StatusWriter::drained`]).
    idle: Notify,
}

impl StatusWriter {
    pub fn new(
        client: Client,
        bundles: Store<SecretBundle>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        shard: Option<Selector>,
    ) -> Arc<Self> {
        Arc::new(StatusWriter {
            client,
            bundles,
            recorder,
            metrics,
            shard,
            queue: Mutex::default(),
            wake: Notify::new(),
            idle: Notify::new(),
        })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes `report` for `bundle`, unless its status already says exactly that.
    pub fn submit(&self, bundle: &SecretBundle, report: Report) {
        let name = bundle.name_any();
        let mut q = self.queue();
        if q.stopped {
            return;
        }
        if !q.busy.contains(&name)
            && !q.pending.contains_key(&name)
            && unchanged(&q.current(bundle), &report)
        {
            return; // nothing changed: no write
        }
        let now = Instant::now();
        let earlier = q.pending.get(&name);
        let due = match (report.reason, earlier) {
            (Reason::Ready, _) => now,
            // Replaced: still written by when the first one was due, however often it changes.
            (_, Some(earlier)) => earlier.due,
            (_, None) => now + SETTLE,
        };
        // A write that keeps failing keeps backing off, whatever it now says.
        let failures = earlier.map_or(0, |e| e.failures);
        q.pending.insert(
            name,
            Pending {
                uid: bundle.metadata.uid.clone(),
                generation: bundle.metadata.generation,
                report,
                failures,
                due,
            },
        );
        drop(q);
        self.wake.notify_one();
    }

    /// Writes until [`StatusWriter::stop`]; run a few of these.
    pub async fn run(self: Arc<Self>) {
        loop {
            let notified = self.wake.notified();
            let now = Instant::now();
            let (next, earliest) = {
                let mut q = self.queue();
                if q.stopped {
                    return;
                }
                let free = || q.pending.iter().filter(|(n, _)| !q.busy.contains(*n));
                let name = free().find(|(_, p)| p.due <= now).map(|(n, _)| n.clone());
                let earliest = free().map(|(_, p)| p.due).min();
                let next = name.and_then(|n| {
                    let p = q.pending.remove(&n)?;
                    q.busy.insert(n.clone());
                    Some((n, p))
                });
                (next, earliest)
            };
            let Some((name, pending)) = next else {
                match earliest {
                    Some(due) => {
                        tokio::select! {
                            () = notified => {}
                            () = tokio::time::sleep_until(due) => {}
                        }
                    }
                    None => notified.await,
                }
                continue;
            };
            let result = self.write(&name, &pending).await;
            let mut q = self.queue();
            q.busy.remove(&name);
            if q.busy.is_empty() {
                self.idle.notify_waiters();
            }
            if let Err(e) = result {
                self.metrics
                    .status_write_failed(crate::error::kube_category(&e));
                // Retried from the queue, so a newer report replaces it rather than racing it.
                if !q.stopped && !q.pending.contains_key(&name) {
                    let delay = retry_delay(pending.failures);
                    warn!(bundle = %name, error = %e, retry_in = ?delay, "status write failed");
                    let retry = Pending {
                        failures: pending.failures.saturating_add(1),
                        due: Instant::now() + delay,
                        ..pending
                    };
                    q.pending.insert(name, retry);
                }
            }
            drop(q);
            // Another bundle may be waiting behind this one.
            self.wake.notify_one();
        }
    }

    /// Drops what was not written yet; writers stop after the write in flight, if any.
    pub fn stop(&self) {
        let mut q = self.queue();
        q.stopped = true;
        q.pending.clear();
        drop(q);
        self.wake.notify_waiters();
    }

    /// The bundle is gone: nothing of it is kept.
    pub fn forget(&self, name: &str) {
        let mut q = self.queue();
        q.pending.remove(name);
        q.written.remove(name);
    }

    /// The bundle cache now holds `bundle`: a write it includes need not be kept any longer
    /// (at 10,000 children, kept writes were a tenth of the operator's memory).
    pub fn seen(&self, bundle: &SecretBundle) {
        let mut q = self.queue();
        let name = bundle.name_any();
        let done = q.written.get(&name).is_some_and(|w| {
            w.uid != bundle.metadata.uid
                || caught_up(
                    bundle.metadata.resource_version.as_deref(),
                    w.resource_version.as_deref(),
                )
        });
        if done {
            q.written.remove(&name);
        }
    }

    /// Forgets every bundle `keep` says is gone (after a relist, which reports no deletions).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut q = self.queue();
        q.pending.retain(|n, _| keep(n));
        q.written.retain(|n, _| keep(n));
    }

    /// Whether a write is still in flight (after [`StatusWriter::stop`], wait for none).
    pub fn idle(&self) -> bool {
        self.queue().busy.is_empty()
    }

    async fn write(&self, name: &str, p: &Pending) -> Result<(), kube::Error> {
        // The bundle as it is now: the status is built on its current one.
        let Some(cached) = self.bundles.get(&ObjectRef::new(name)) else {
            return Ok(()); // deleted meanwhile
        };
        if cached.metadata.uid != p.uid || cached.metadata.generation != p.generation {
            return Ok(()); // replaced or changed: its own reconcile reports on it
        }
        if let Some(shard) = &self.shard
            && !shard.matches(cached.labels())
        {
            return Ok(()); // moved to another shard, which reports on it now
        }
        let bundle = self.queue().current(&cached);
        let next = conditions::next_status(
            &bundle,
            &p.report,
            &Time(k8s_openapi::jiff::Timestamp::now()),
        );
        if digest::same(bundle.status.as_ref(), Some(&next)) {
            return Ok(());
        }
        let patch = json!({
            "apiVersion": SecretBundle::api_version(&()),
            "kind": SecretBundle::kind(&()),
            "status": next,
        });
        let result = Api::<SecretBundle>::all(self.client.clone())
            .patch_status(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await;
        match result {
            Ok(written) => {
                let mut q = self.queue();
                if !q.stopped {
                    q.written.insert(
                        name.to_string(),
                        Written {
                            uid: written.metadata.uid.clone().or(p.uid.clone()),
                            resource_version: written.metadata.resource_version.clone(),
                            status: written.status.clone().or(Some(next)),
                        },
                    );
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
        let before = conditions::ready_reason(bundle.status.as_ref());
        if before != Some(p.report.reason) {
            info!(bundle = %name, reason = %p.report.reason, message = %p.report.message, "bundle moved");
            // An event for what a person should notice (Ready, or something wrong); waiting and
            // progress are in the status, and would cost a write per bundle per gate.
            if matches!(p.report.reason.phase(), Phase::Ready | Phase::Stalled) {
                self.publish(&bundle, &p.report).await;
            }
        }
        Ok(())
    }

    /// Events are best effort: a failure to record one fails nothing.
    async fn publish(&self, bundle: &SecretBundle, report: &Report) {
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
        if let Err(e) = self.recorder.publish(&event, &bundle.object_ref(&())).await {
            warn!(bundle = %bundle.name_any(), error = %e, "could not record event");
        }
    }

    /// After `stop`: returns once no write is in flight.
    pub async fn drained(&self) {
        loop {
            // Registered before looking, so a write that ends in between is not missed.
            let idle = self.idle.notified();
            if self.idle() {
                return;
            }
            idle.await;
        }
    }
}

/// The bundle's status already is what `report` would write.
fn unchanged(bundle: &SecretBundle, report: &Report) -> bool {
    let next = conditions::next_status(bundle, report, &Time(k8s_openapi::jiff::Timestamp::now()));
    digest::same(bundle.status.as_ref(), Some(&next))
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
