//! The ESO object watches against a scripted API server.

use std::time::Duration;

use futures::StreamExt as _;
use serde_json::json;

use super::*;
use crate::mock_api;

/// After ESO switched its SecretStore CRD from v1beta1 to v1, the new watch's cache is not
/// complete until its own list arrived; before that reconciles must keep seeing v1beta1 (the
/// old watch's cache), not v1 over a cache the old watch filled.
#[tokio::test(start_paused = true)]
async fn a_new_version_is_published_only_once_its_own_list_arrived() {
    let kind = EsoKind::SecretStore;
    let caches = Arc::new(Caches::new(futures::channel::mpsc::unbounded().0));
    // The old watch, at v1beta1, had listed everything.
    caches.crd_usable(kind, EsoVersion::V1beta1, true);
    caches.store_event(kind, watcher::Event::Init);
    caches.store_event(kind, watcher::Event::InitDone);
    caches.synced(kind, EsoVersion::V1beta1);
    assert_eq!(caches.crd(kind), Ok(EsoVersion::V1beta1));

    caches.crd_usable(kind, EsoVersion::V1, true);
    let (client, mut requests) = mock_api::pair();
    let _watch = AbortOnDrop(tokio::spawn(watch_stores(
        client,
        Lists::new(false),
        caches.clone(),
        kind,
        EsoVersion::V1,
    )));
    let list = requests.next().await.expect("the new watch's list");
    assert_eq!(list.path(), "/apis/external-secrets.io/v1/secretstores");
    assert_eq!(
        caches.crd(kind),
        Ok(EsoVersion::V1beta1),
        "v1 published before its list arrived"
    );
    list.json(
        200,
        &json!({"apiVersion": "external-secrets.io/v1", "kind": "SecretStoreList",
                "metadata": {"resourceVersion": "7"}, "items": [
                  {"apiVersion": "external-secrets.io/v1", "kind": "SecretStore",
                   "metadata": {"name": "vault", "namespace": "ns", "resourceVersion": "6"},
                   "status": {"conditions": [{"type": "Ready", "status": "True"}]}}]}),
    );
    let watch = requests.next().await.expect("the watch after the list");
    assert!(watch.uri.contains("watch=true"), "{}", watch.uri);
    assert_eq!(caches.crd(kind), Ok(EsoVersion::V1));
    let id = StoreId {
        kind: StoreKind::SecretStore,
        namespace: "ns".into(),
        name: "vault".into(),
    };
    assert!(matches!(
        caches.store(&id),
        crate::facts::StoreFact::Ready { .. }
    ));
    drop(watch);
    // Nothing else is asked for meanwhile.
    let more = tokio::time::timeout(Duration::from_millis(100), requests.next()).await;
    assert!(more.is_err() || more.is_ok_and(|r| r.is_some_and(|e| e.uri.contains("watch=true"))));
}
