//! The namespace watch: whether each namespace exists, is terminating, and its labels.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::warn;

use super::listwatch::Lists;
use super::stream::{WatchBackoff, map_event};
use crate::cache::Caches;
use crate::facts::NamespaceFact;

/// Namespaces by metadata alone: whether each exists, is terminating, and its labels.
pub(super) async fn watch(client: Client, lists: Lists, caches: Arc<Caches>) {
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
