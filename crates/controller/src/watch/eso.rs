//! Watches ESO's CRDs and, while one is usable, its objects at the version that CRD serves:
//! the operator's children (by label, in full), other ExternalSecrets (metadata only, to find
//! same-name objects) and the secret stores. A kind's version is shown to reconciles only once
//! its caches hold a complete list, and every bundle is woken then (and only then).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{StreamExt, stream};
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use secretbundle_api::{BUNDLE_LABEL, StoreKind};
use serde::de::{DeserializeOwned, IgnoredAny};
use tracing::{info, warn};

use super::listwatch::Lists;
use super::stream::{WatchBackoff, map_event};
use crate::cache::{Caches, Child, ChildKey, Elsewhere, EsObject, Foreign, StoreId, child_key};
use crate::eso::{self, CrdProblem, CrdSummary, EsoKind, EsoVersion, ServedSchema};
use crate::facts::read_store;
use crate::shard::Shard;
use crate::task::AbortOnDrop;

/// Follows the three ESO CRDs until the operator stops.
pub async fn run(client: Client, lists: Lists, caches: Arc<Caches>, shard: Option<Shard>) {
    let crds: Vec<_> = EsoKind::ALL
        .into_iter()
        .map(|kind| match kind {
            EsoKind::ExternalSecret => crd_events::<serde_json::Value>(&client, &lists, kind),
            // Only the ExternalSecret CRD's schema is read: the store CRDs' are skipped.
            _ => crd_events::<IgnoredAny>(&client, &lists, kind),
        })
        .collect();
    let mut events = stream::select_all(crds);
    // What a relist in progress found, per kind.
    let mut listing: BTreeMap<EsoKind, Served> = BTreeMap::new();
    let mut running: BTreeMap<EsoKind, (EsoVersion, AbortOnDrop)> = BTreeMap::new();
    while let Some((kind, event)) = events.next().await {
        let (state, schema) = match event {
            Ok(watcher::Event::Init) => {
                listing.insert(kind, (Err(CrdProblem::Absent), None));
                continue;
            }
            Ok(watcher::Event::InitApply(served)) => {
                listing.insert(kind, served);
                continue;
            }
            Ok(watcher::Event::InitDone) => listing
                .remove(&kind)
                .unwrap_or((Err(CrdProblem::Absent), None)),
            Ok(watcher::Event::Apply(served)) => served,
            Ok(watcher::Event::Delete(_)) => (Err(CrdProblem::Absent), None),
            Err(e) => {
                warn!(error = %e, crd = kind.crd_name(), "CRD watch failed; retrying");
                continue;
            }
        };
        if kind == EsoKind::ExternalSecret {
            caches.set_eso_schema(schema);
        }
        match state {
            Ok(version) if running.get(&kind).map(|(v, _)| *v) == Some(version) => {
                caches.crd_usable(kind, version, false);
            }
            Ok(version) => {
                info!(
                    kind = kind.kind(),
                    version = version.as_str(),
                    "watching ESO objects"
                );
                // The old watch (if any) stops first; the new one replaces its cache when listed.
                running.remove(&kind);
                caches.crd_usable(kind, version, true);
                let task = tokio::spawn(watch_objects(
                    client.clone(),
                    shard.clone(),
                    // Bundles may be waiting on it: no streaming list's extra second.
                    if caches.running() {
                        lists.paged()
                    } else {
                        lists.clone()
                    },
                    caches.clone(),
                    kind,
                    version,
                ));
                running.insert(kind, (version, AbortOnDrop(task)));
            }
            Err(problem) => {
                if running.remove(&kind).is_some() {
                    info!(
                        kind = kind.kind(),
                        "ESO CRD unusable; stopped watching its objects"
                    );
                    caches.forget(kind);
                }
                caches.crd_unusable(kind, problem);
            }
        }
    }
}

/// The version a CRD serves that the operator can use (or why none), and its schema (only
/// the ExternalSecret CRD's is read).
type Served = (Result<EsoVersion, CrdProblem>, Option<Arc<ServedSchema>>);

/// What one ESO CRD's watch reports, as [`Served`].
fn crd_events<S>(
    client: &Client,
    lists: &Lists,
    kind: EsoKind,
) -> BoxStream<'static, (EsoKind, watcher::Result<watcher::Event<Served>>)>
where
    CrdSummary<S>: Serves + Clone + std::fmt::Debug + DeserializeOwned + Send + 'static,
{
    let api = Api::<CrdSummary<S>>::all(client.clone());
    let wc = watcher::Config::default().fields(&format!("metadata.name={}", kind.crd_name()));
    lists
        .watch(api, wc)
        .backoff(WatchBackoff::default())
        .map(move |ev| (kind, ev.map(|ev| map_event(ev, |crd| crd.served()))))
        .boxed()
}

trait Serves {
    fn served(&self) -> Served;
}

impl Serves for CrdSummary {
    fn served(&self) -> Served {
        let version = eso::usable_version(Some(self));
        let schema = version
            .as_ref()
            .ok()
            .and_then(|v| ServedSchema::of(self, *v));
        (version, schema.map(Arc::new))
    }
}

impl Serves for CrdSummary<IgnoredAny> {
    fn served(&self) -> Served {
        (eso::usable_version(Some(self)), None)
    }
}

/// Whether `event` completes this watch's own list. The cache may already be synced from the
/// watch this one replaced (an ESO upgrade that switched versions): only this watch's own
/// complete list may publish the new version, not its first event.
fn own_list_done<K>(event: &watcher::Event<K>) -> bool {
    matches!(event, watcher::Event::InitDone)
}

async fn watch_objects(
    client: Client,
    shard: Option<Shard>,
    lists: Lists,
    caches: Arc<Caches>,
    kind: EsoKind,
    version: EsoVersion,
) {
    match kind {
        EsoKind::ExternalSecret => {
            watch_external_secrets(client, shard, lists, caches, version).await;
        }
        EsoKind::SecretStore | EsoKind::ClusterSecretStore => {
            watch_stores(client, lists, caches, kind, version).await;
        }
    }
}

type Meta = PartialObjectMeta<DynamicObject>;

/// Which stream an ExternalSecret event came from.
enum Es {
    Ours(watcher::Result<watcher::Event<EsObject>>),
    Other(watcher::Result<watcher::Event<Meta>>),
    Elsewhere(watcher::Result<watcher::Event<Meta>>),
}

/// The operator's children in full (by label; this shard's, when sharded), other shards'
/// children and any other ExternalSecret by metadata.
async fn watch_external_secrets(
    client: Client,
    shard: Option<Shard>,
    lists: Lists,
    caches: Arc<Caches>,
    version: EsoVersion,
) {
    let ar = EsoKind::ExternalSecret.api_resource(version);
    let ours_selector = shard
        .as_ref()
        .map_or_else(|| BUNDLE_LABEL.to_string(), Shard::children);
    let ours = lists
        .watch(
            Api::<EsObject>::all_with(client.clone(), &ar),
            watcher::Config::default().labels(&ours_selector),
        )
        .backoff(WatchBackoff::default())
        .map(Es::Ours);
    let meta = |selector: &str| {
        lists
            .watch(
                Api::<Meta>::all_with(client.clone(), &ar),
                watcher::Config::default().labels(selector),
            )
            .backoff(WatchBackoff::default())
    };
    let others = meta(&format!("!{BUNDLE_LABEL}")).map(Es::Other);
    let mut streams = vec![ours.boxed(), others.boxed()];
    if let Some(shard) = &shard {
        streams.push(meta(&shard.others_children()).map(Es::Elsewhere).boxed());
    }
    let mut events = stream::select_all(streams);
    let (mut ours_listed, mut others_listed) = (false, false);
    // Unsharded, there is no other shard's child to list.
    let mut elsewhere_listed = shard.is_none();
    while let Some(event) = events.next().await {
        let was_listed = ours_listed && others_listed && elsewhere_listed;
        match event {
            Es::Ours(Ok(event)) => {
                let done = own_list_done(&event);
                let synced = caches.child_event(map_event(event, |o: EsObject| {
                    (key_of(&o), Arc::new(Child::from(o)))
                }));
                ours_listed |= done && synced;
            }
            Es::Other(Ok(event)) => {
                let done = own_list_done(&event);
                let synced = caches
                    .foreign_event(map_event(event, |o| (key_of(&o), Foreign::from_meta(&o))));
                others_listed |= done && synced;
            }
            Es::Elsewhere(Ok(event)) => {
                let done = own_list_done(&event);
                let synced = caches
                    .elsewhere_event(map_event(event, |o| (key_of(&o), Elsewhere::from_meta(&o))));
                elsewhere_listed |= done && synced;
            }
            Es::Ours(Err(e)) | Es::Other(Err(e)) | Es::Elsewhere(Err(e)) => {
                warn!(error = %e, "ExternalSecret watch failed; retrying");
                continue;
            }
        }
        if ours_listed && others_listed && elsewhere_listed && !was_listed {
            caches.synced(EsoKind::ExternalSecret, version);
        }
    }
}

fn key_of(o: &impl ResourceExt) -> ChildKey {
    child_key(&o.namespace().unwrap_or_default(), &o.name_any())
}

async fn watch_stores(
    client: Client,
    lists: Lists,
    caches: Arc<Caches>,
    kind: EsoKind,
    version: EsoVersion,
) {
    let store_kind = match kind {
        EsoKind::SecretStore => StoreKind::SecretStore,
        _ => StoreKind::ClusterSecretStore,
    };
    let api = Api::<DynamicObject>::all_with(client, &kind.api_resource(version));
    let mut events = lists
        .watch(api, watcher::Config::default())
        .backoff(WatchBackoff::default())
        .boxed();
    let mut listed = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                let was_listed = listed;
                let done = own_list_done(&event);
                let synced = caches.store_event(
                    kind,
                    map_event(event, |o: DynamicObject| {
                        let id = StoreId {
                            kind: store_kind,
                            namespace: o.namespace().unwrap_or_default(),
                            name: o.name_any(),
                        };
                        (id, read_store(&o.data))
                    }),
                );
                listed |= done && synced;
                if listed && !was_listed {
                    caches.synced(kind, version);
                }
            }
            Err(e) => warn!(error = %e, kind = kind.kind(), "watch failed; retrying"),
        }
    }
}

#[cfg(test)]
#[path = "eso_tests.rs"]
mod tests;
