//! The bundle watch (of this shard's bundles, when sharded), and what is forgotten with a
//! bundle that is gone (or moved to another shard: to this watch, it was deleted).

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt, future};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use secretbundle_api::SecretBundle;
use tracing::warn;

use super::listwatch::Lists;
use super::stream::WatchBackoff;
use super::triggers::Triggers;
use crate::cache::Caches;
use crate::metrics::Metrics;
use crate::reconcile::Failures;
use crate::shard::Shard;
use crate::status::StatusWriter;

/// The bundle watch: fills the bundle cache, then the index, then wakes dependents, in that
/// order: a dependent reads its dependency from the cache, so it must never be woken before
/// the cache has the change. Errors are logged here, not passed on: the controller would
/// hold back every wake-up for a backoff on any error of its input.
pub(super) fn bundle_events(
    client: &Client,
    lists: &Lists,
    shard: Option<&Shard>,
    writer: reflector::store::Writer<SecretBundle>,
    store: Store<SecretBundle>,
    caches: Arc<Caches>,
    gone: Gone,
) -> impl futures::Stream<Item = Result<SecretBundle, watcher::Error>> + Send + 'static {
    lists
        .watch(
            Api::<SecretBundle>::all(client.clone()),
            match shard {
                Some(shard) => watcher::Config::default().labels(&shard.selector().to_string()),
                None => watcher::Config::default(),
            },
        )
        .backoff(WatchBackoff::default())
        .modify(|b: &mut SecretBundle| {
            b.managed_fields_mut().clear();
            if let Some(s) = b.status.as_mut() {
                crate::status::compact(s);
            }
        })
        .reflect(writer)
        .inspect_ok({
            let store = store.clone();
            move |event| {
                caches.bundle_event(event, &store);
                gone.on(event, &store);
            }
        })
        .scan(Triggers::default(), move |triggers, event| {
            let out: Vec<_> = match event {
                Ok(event) => triggers.on(&event, &store).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            future::ready(Some(futures::stream::iter(out)))
        })
        .flatten()
        .filter_map(|r| {
            future::ready(match r {
                Ok(b) => Some(Ok(b)),
                Err(e) => {
                    warn!(error = %e, "SecretBundle watch failed; retrying");
                    None
                }
            })
        })
}

/// What is kept per bundle outside the caches: its gauge, its backoff and its queued status.
/// A bundle's Delete event forgets it (also when its finalizer was removed by hand, so no
/// cleanup ran), and so does a relist that no longer has it.
pub(super) struct Gone {
    pub(super) metrics: Arc<Metrics>,
    pub(super) failures: Arc<Failures>,
    pub(super) status: Arc<StatusWriter>,
}

impl Gone {
    pub(super) fn on(&self, event: &watcher::Event<SecretBundle>, store: &Store<SecretBundle>) {
        match event {
            watcher::Event::Delete(b) => {
                let name = b.name_any();
                self.metrics.forget(&name);
                self.failures.clear(&name);
                self.status.forget(&name);
            }
            watcher::Event::InitDone => {
                let keep = |name: &str| store.get(&reflector::ObjectRef::new(name)).is_some();
                self.metrics.retain(keep);
                self.failures.retain(keep);
                self.status.retain(keep);
            }
            watcher::Event::Apply(b) | watcher::Event::InitApply(b) => self.status.seen(b),
            watcher::Event::Init => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::events::{Recorder, Reporter};

    use super::*;

    fn bundle(name: &str) -> SecretBundle {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "secrets.ameide.io/v1alpha1", "kind": "SecretBundle",
            "metadata": {"name": name, "uid": name},
            "spec": {"targetNamespace": "ns", "secretStoreRef": {"name": "vault"}, "secrets": []},
        }))
        .expect("bundle")
    }

    /// A bundle whose finalizer was removed by hand is gone without a cleanup: its Delete event
    /// (or a relist without it) must still clear what was kept for it.
    #[tokio::test]
    async fn a_deleted_bundle_leaves_the_gauges_and_the_backoff() {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(Metrics::new(&mut registry));
        let (client, _requests) = crate::mock_api::pair();
        let (store, mut cache) = reflector::store();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "test".into(),
                instance: None,
            },
        );
        let gone = Gone {
            metrics: metrics.clone(),
            failures: Arc::default(),
            status: StatusWriter::new(client, store.clone(), recorder, metrics.clone(), None),
        };
        let scrape = || {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
            out
        };
        for name in ["a", "b"] {
            cache.apply_watcher_event(&watcher::Event::Apply(bundle(name)));
            metrics.reconciled(name, crate::Reason::ApplyFailed);
            gone.failures.record(name);
        }
        assert!(scrape().contains("secretbundle_bundles{reason=\"ApplyFailed\"} 2"));

        let deleted = watcher::Event::Delete(bundle("a"));
        cache.apply_watcher_event(&deleted);
        gone.on(&deleted, &store);
        assert!(scrape().contains("secretbundle_bundles{reason=\"ApplyFailed\"} 1"));
        assert!(!gone.failures.failing("a") && gone.failures.failing("b"));

        // Deleted while the watch was down: the relist has no Delete event for it.
        for event in [watcher::Event::Init, watcher::Event::InitDone] {
            cache.apply_watcher_event(&event);
            gone.on(&event, &store);
        }
        assert!(scrape().contains("secretbundle_bundles{reason=\"ApplyFailed\"} 0"));
        assert!(!gone.failures.failing("b"));
    }
}
