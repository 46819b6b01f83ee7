//! Wiring: which changes in the cluster wake which bundles. Everything is driven by watches:
//! bundles, their dependencies, namespaces, the ESO CRDs, and (once their CRDs exist) ESO's
//! ExternalSecrets and stores.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{Controller, WatchStreamExt, controller, watcher};
use kube::{Client, CustomResourceExt, ResourceExt};
use secretbundle_api::{BUNDLE_LABEL, SecretBundle, StoreKind};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::eso::{self, EsoKind, EsoVersion};
use crate::gates::referenced_stores;
use crate::metrics::Metrics;
use crate::reconcile::{Context, error_policy, reconcile};

type Trigger = mpsc::Sender<ObjectRef<SecretBundle>>;

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    await_own_crd(&client).await;
    let bundles = Api::<SecretBundle>::all(client.clone());
    let wc = watcher::Config::default();
    let (store, writer) = reflector::store();
    // One watch fills the bundle cache and wakes dependents, in that order: a dependent reads
    // its dependency from the cache, so it must never be woken before the cache has the change.
    let (dependents_tx, dependents_rx) = mpsc::unbounded();
    let dep_store = store.clone();
    let bundle_events = watcher(bundles, wc.clone())
        .backoff(WatchBackoff::default())
        .reflect(writer)
        .touched_objects()
        .inspect_ok(move |b| {
            for d in dependents(&dep_store, &b.name_any()) {
                // Only fails once the controller is gone.
                let _ = dependents_tx.unbounded_send(d);
            }
        });
    let (tx, rx) = mpsc::channel(1024);
    let _eso = AbortOnDrop(tokio::spawn(watch_eso(client.clone(), store.clone(), tx)));

    let ctx = Arc::new(Context {
        client: client.clone(),
        bundles: store.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: secretbundle_api::MANAGER.into(),
                instance: None,
            },
        ),
        metrics,
        locks: Default::default(),
        failures: Default::default(),
    });
    let ns_store = store.clone();
    Controller::for_stream(bundle_events, store)
        .with_config(controller::Config::default().concurrency(concurrency))
        .trigger_backoff(WatchBackoff::default())
        .watches(Api::<Namespace>::all(client), wc, move |ns| {
            targeting(&ns_store, &ns.name_any())
        })
        .reconcile_on(dependents_rx)
        .reconcile_on(rx)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(bundle = %obj.name, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile did not complete"),
            }
        })
        .await;
}

/// Delays between watch retries: 0.5 s doubling up to 5 s, back to 0.5 s after any event.
///
/// kube's default climbs to 30 s (plus jitter) and stays there until two quiet minutes pass. After
/// a 30 s apiserver outage that left the operator blind for up to ~47 s once the apiserver was
/// back: resumed watches end in `410 Gone` (the restarted apiserver's watch cache starts afresh)
/// and back off once more before relisting, and the Controller backs off all its triggers
/// together whenever one of its watches fails. A watch retry is one cheap request.
pub struct WatchBackoff(Duration);

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(5);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff(Self::FIRST)
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.0;
        self.0 = (delay * 2).min(Self::MAX);
        Some(delay)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.0 = Self::FIRST;
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
            Ok(crd) if eso::is_established(&crd) => return,
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

/// Stops a spawned watch when its owner goes away, even if the owner is itself cancelled.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Bundles whose target namespace is `ns`.
fn targeting(store: &Store<SecretBundle>, ns: &str) -> Vec<ObjectRef<SecretBundle>> {
    store
        .state()
        .iter()
        .filter(|b| b.spec.target_namespace == ns)
        .map(|b| ObjectRef::from(b.as_ref()))
        .collect()
}

/// Bundles that list `name` in `dependsOn`: they wait on its readiness.
fn dependents(store: &Store<SecretBundle>, name: &str) -> Vec<ObjectRef<SecretBundle>> {
    store
        .state()
        .iter()
        .filter(|b| b.spec.depends_on.iter().any(|d| d == name))
        .map(|b| ObjectRef::from(b.as_ref()))
        .collect()
}

/// Bundles affected by a change to an ESO object of `kind`.
fn affected(
    store: &Store<SecretBundle>,
    kind: EsoKind,
    obj: &DynamicObject,
) -> Vec<ObjectRef<SecretBundle>> {
    let (name, ns) = (obj.name_any(), obj.namespace().unwrap_or_default());
    let hit = |b: &SecretBundle| match kind {
        // Our own child, or a same-name object that blocks (or stops blocking) one of ours.
        EsoKind::ExternalSecret => {
            obj.labels().get(BUNDLE_LABEL) == Some(&b.name_any())
                || (b.spec.target_namespace == ns && b.spec.secrets.iter().any(|s| s.name == name))
        }
        EsoKind::ClusterSecretStore => referenced_stores(b)
            .iter()
            .any(|k| k.kind == StoreKind::ClusterSecretStore && k.name == name),
        EsoKind::SecretStore => {
            b.spec.target_namespace == ns
                && referenced_stores(b)
                    .iter()
                    .any(|k| k.kind == StoreKind::SecretStore && k.name == name)
        }
    };
    store
        .state()
        .iter()
        .filter(|b| hit(b))
        .map(|b| ObjectRef::from(b.as_ref()))
        .collect()
}

/// Watches the three ESO CRDs. While one is usable, watches its objects at the version the
/// operator writes; when it goes away or changes version, stops or restarts that watch. Any CRD
/// change wakes every bundle, since bundles may wait on it.
async fn watch_eso(client: Client, store: Store<SecretBundle>, mut tx: Trigger) {
    let crds: Vec<_> = EsoKind::ALL
        .into_iter()
        .map(|kind| {
            let api = Api::<CustomResourceDefinition>::all(client.clone());
            let wc =
                watcher::Config::default().fields(&format!("metadata.name={}", kind.crd_name()));
            watcher(api, wc)
                .backoff(WatchBackoff::default())
                .map(move |ev| (kind, ev))
                .boxed()
        })
        .collect();
    let mut events = stream::select_all(crds);
    let mut running: BTreeMap<EsoKind, (EsoVersion, AbortOnDrop)> = BTreeMap::new();
    while let Some((kind, event)) = events.next().await {
        let version = match event {
            Ok(watcher::Event::Apply(crd) | watcher::Event::InitApply(crd)) => {
                eso::usable_version(Some(&crd)).ok()
            }
            Ok(watcher::Event::Delete(_)) => None,
            Ok(watcher::Event::Init) => continue,
            Ok(watcher::Event::InitDone) => running.get(&kind).map(|(v, _)| *v),
            Err(e) => {
                warn!(error = %e, crd = kind.crd_name(), "CRD watch failed; retrying");
                continue;
            }
        };
        if running.get(&kind).map(|(v, _)| *v) != version {
            running.remove(&kind);
            if let Some(v) = version {
                info!(
                    kind = kind.kind(),
                    version = v.as_str(),
                    "watching ESO objects"
                );
                let watch = watch_kind(client.clone(), store.clone(), kind, v, tx.clone());
                running.insert(kind, (v, AbortOnDrop(tokio::spawn(watch))));
            } else {
                info!(
                    kind = kind.kind(),
                    "ESO CRD unusable; stopped watching its objects"
                );
            }
        }
        let all: Vec<_> = store
            .state()
            .iter()
            .map(|b| ObjectRef::from(b.as_ref()))
            .collect();
        if send_all(&mut tx, all).await.is_err() {
            break;
        }
    }
}

async fn watch_kind(
    client: Client,
    store: Store<SecretBundle>,
    kind: EsoKind,
    version: EsoVersion,
    mut tx: Trigger,
) {
    let api = Api::<DynamicObject>::all_with(client, &kind.api_resource(version));
    let mut objects = watcher(api, watcher::Config::default())
        .backoff(WatchBackoff::default())
        .touched_objects()
        .boxed();
    while let Some(obj) = objects.next().await {
        match obj {
            Ok(obj) => {
                if send_all(&mut tx, affected(&store, kind, &obj))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => warn!(error = %e, kind = kind.kind(), "watch failed; retrying"),
        }
    }
}

async fn send_all(
    tx: &mut Trigger,
    refs: Vec<ObjectRef<SecretBundle>>,
) -> Result<(), mpsc::SendError> {
    tx.send_all(&mut stream::iter(refs).map(Ok)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_retries_stay_within_seconds_and_reset() {
        let mut b = WatchBackoff::default();
        let delays: Vec<u64> = b.by_ref().take(7).map(|d| d.as_millis() as u64).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(500)));
    }
}
