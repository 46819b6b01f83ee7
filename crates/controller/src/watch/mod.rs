//! Wiring: which changes in the cluster wake which bundles. Everything is driven by watches:
//! bundles, namespaces, the ESO CRDs and (once their CRDs exist) ExternalSecrets and stores.
//! Each watch fills its cache first and only then wakes the bundles its change affects
//! (see [`crate::cache`]); the controller starts once every cache holds a complete list, so a
//! restart neither reports a gate closed that is open nor writes anything that has not changed.

mod eso;
mod listwatch;
mod triggers;

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{StreamExt, TryStreamExt, future};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::core::{PartialObjectMeta, Selector};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{Controller, WatchStreamExt, controller, watcher};
use kube::{Client, CustomResourceExt, ResourceExt};
use secretbundle_api::SecretBundle;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use self::listwatch::Lists;
use self::triggers::Triggers;

use crate::cache::Caches;
use crate::metrics::Metrics;
use crate::reconcile::gates::NamespaceFact;
use crate::reconcile::{Context, Failures, error_policy, reconcile};
use crate::status::StatusWriter;

/// How the controller runs.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Bundles reconciled at the same time.
    pub concurrency: u16,
    /// Reconcile only bundles whose labels match (one shard of several); all bundles are still
    /// read, since a bundle may depend on one in another shard.
    pub shard: Option<Selector>,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let options = Options {
        concurrency,
        shard: None,
    };
    run_with(client, metrics, options, shutdown).await;
}

/// [`run`] with every option.
pub async fn run_with(
    client: Client,
    metrics: Arc<Metrics>,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // No permits would block every reconcile forever; the CLI refuses 0, a library caller too.
    let options = Options {
        concurrency: options.concurrency.max(1),
        ..options
    };
    await_own_crd(&client).await;
    let lists = Lists::detect(&client).await;
    let (wake, woken) = mpsc::unbounded();
    let caches = Arc::new(Caches::new(wake));
    let _namespaces = AbortOnDrop(tokio::spawn(watch_namespaces(
        client.clone(),
        lists.clone(),
        caches.clone(),
    )));
    let _eso = AbortOnDrop(tokio::spawn(eso::run(
        client.clone(),
        lists.clone(),
        caches.clone(),
    )));
    caches.wait_ready().await;
    info!("caches filled; reconciling");

    let (store, writer) = reflector::store();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: secretbundle_api::MANAGER.into(),
            instance: None,
        },
    );
    let status = StatusWriter::new(
        client.clone(),
        store.clone(),
        recorder,
        metrics.clone(),
        options.shard.clone(),
    );
    let failures = Arc::new(Failures::default());
    let gone = Gone {
        metrics: metrics.clone(),
        failures: failures.clone(),
        status: status.clone(),
    };
    let bundle_events = bundle_events(&client, &lists, writer, store.clone(), caches.clone(), gone);
    let writers: Vec<_> = (0..2)
        .map(|_| AbortOnDrop(tokio::spawn(status.clone().run())))
        .collect();
    let ctx = Arc::new(Context {
        client,
        bundles: store.clone(),
        caches,
        status: status.clone(),
        metrics,
        failures,
        writes: tokio::sync::Semaphore::new(options.concurrency.into()),
        shard: options.shard,
    });
    Controller::for_stream(bundle_events, store)
        .with_config(controller::Config::default().concurrency(options.concurrency))
        .reconcile_on(woken)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(bundle = %obj.name, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile did not complete"),
            }
        })
        .await;
    // Every reconcile has finished; no status write may be left in flight either.
    status.stop();
    status.drained().await;
    drop(writers);
}

/// The bundle watch: fills the bundle cache, then the index, then wakes dependents, in that
/// order: a dependent reads its dependency from the cache, so it must never be woken before
/// the cache has the change. Errors are logged here, not passed on: the controller would
/// hold back every wake-up for a backoff on any error of its input.
fn bundle_events(
    client: &Client,
    lists: &Lists,
    writer: reflector::store::Writer<SecretBundle>,
    store: Store<SecretBundle>,
    caches: Arc<Caches>,
    gone: Gone,
) -> impl futures::Stream<Item = Result<SecretBundle, watcher::Error>> + Send + 'static {
    lists
        .watch(
            Api::<SecretBundle>::all(client.clone()),
            watcher::Config::default(),
        )
        .backoff(WatchBackoff::default())
        .modify(|b: &mut SecretBundle| b.managed_fields_mut().clear())
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
struct Gone {
    metrics: Arc<Metrics>,
    failures: Arc<Failures>,
    status: Arc<StatusWriter>,
}

impl Gone {
    fn on(&self, event: &watcher::Event<SecretBundle>, store: &Store<SecretBundle>) {
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
            watcher::Event::Apply(_) | watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }
}

/// Delays between watch retries: at once, then 0.5 s doubling up to 5 s; from the start again
/// after any event.
///
/// kube's default climbs to 30 s (plus jitter) and stays there until two quiet minutes pass. After
/// a 30 s apiserver outage that left the operator blind for up to ~47 s once the apiserver was
/// back: resumed watches end in `410 Gone` (the restarted apiserver's watch cache starts afresh)
/// and back off once more before relisting, and the Controller backs off all its triggers
/// together whenever one of its watches fails. A watch retry is one cheap request. The first
/// retry is immediate: the usual first error is a `410 Gone` that only asks for a relist (a
/// watch of a CRD created a moment ago often gets one), and bundles may be waiting on it.
#[derive(Default)]
pub struct WatchBackoff(Option<Duration>);

impl WatchBackoff {
    const SECOND: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(5);
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.0.unwrap_or(Duration::ZERO);
        self.0 = Some(self.0.map_or(Self::SECOND, |d| (d * 2).min(Self::MAX)));
        Some(delay)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.0 = None;
    }
}

/// Returns once the SecretBundle CRD is Established. Started before it (a fresh install where
/// the operator's pod wins the race), the operator would otherwise list a missing resource and
/// back off for tens of seconds; a watch on the CRD wakes it the moment it is there.
async fn await_own_crd(client: &Client) {
    let name = SecretBundle::crd_name();
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let wc = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, wc)
        .backoff(WatchBackoff::default())
        .applied_objects()
        .boxed();
    let mut logged = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(crd) if crate::eso::is_established(&crd) => return,
            Ok(_) => {}
            Err(e) => warn!(error = %e, crd = name, "CRD watch failed; retrying"),
        }
        if !logged {
            info!(
                crd = name,
                "waiting for the CRD to be installed and Established"
            );
            logged = true;
        }
    }
}

/// Stops a spawned task when its owner goes away, even if the owner is itself cancelled.
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Replaces a watch event's object by what the cache keeps of it.
pub(crate) fn map_event<K, T>(event: watcher::Event<K>, f: impl Fn(K) -> T) -> watcher::Event<T> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(f(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(f(o)),
        watcher::Event::InitApply(o) => watcher::Event::InitApply(f(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// Namespaces by metadata alone: whether each exists, is terminating, and its labels.
async fn watch_namespaces(client: Client, lists: Lists, caches: Arc<Caches>) {
    let api = Api::<PartialObjectMeta<Namespace>>::all(client);
    let mut events = lists
        .watch(api, watcher::Config::default())
        .backoff(WatchBackoff::default())
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => caches.namespace_event(map_event(event, |ns| {
                let fact = if ns.metadata.deletion_timestamp.is_some() {
                    NamespaceFact::Terminating
                } else {
                    NamespaceFact::Active {
                        labels: ns.metadata.labels.clone().unwrap_or_default(),
                    }
                };
                (ns.name_any(), fact)
            })),
            Err(e) => warn!(error = %e, "Namespace watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn watch_retries_stay_within_seconds_and_reset() {
        let mut b = WatchBackoff::default();
        let delays: Vec<u64> = b.by_ref().take(7).map(|d| d.as_millis() as u64).collect();
        assert_eq!(delays, [0, 500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(), Some(Duration::ZERO));
    }
}
