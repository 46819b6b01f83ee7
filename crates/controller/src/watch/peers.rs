//! A shard's watch of the other shards' bundles, kept as what a dependent needs of them
//! ([`Peer`]): whether each is Ready and what it depends on.

use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use secretbundle_api::SecretBundle;
use tracing::warn;

use super::listwatch::Lists;
use super::stream::{WatchBackoff, map_event};
use crate::cache::Caches;
use crate::facts::Peer;
use crate::shard::Shard;

/// The bundles of other shards: the selector's negation, or every bundle when it has none.
pub(super) async fn watch(client: Client, lists: Lists, caches: Arc<Caches>, shard: Shard) {
    let wc = match shard.others() {
        Some(others) => watcher::Config::default().labels(&others),
        None => watcher::Config::default(),
    };
    let mut events = lists
        .watch(Api::<SecretBundle>::all(client), wc)
        .backoff(WatchBackoff::default())
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                caches.peer_event(map_event(event, |b| (b.name_any(), Peer::of(&b))));
            }
            Err(e) => warn!(error = %e, "SecretBundle watch (other shards) failed; retrying"),
        }
    }
}
