//! Waiting on thousands of objects at once: one watch per kind, each object's verdict kept as
//! events arrive, done when the expected number are all good.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use anyhow::{Result, anyhow};
use futures::StreamExt as _;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use secretbundle_api::SecretBundle;
use serde::de::DeserializeOwned;

fn key<K: Resource>(o: &K) -> (String, String) {
    (o.namespace().unwrap_or_default(), o.name_any())
}

/// Waits until `api` holds `count` objects, every one `ok`, within `within`.
pub async fn until_all<K>(
    api: Api<K>,
    count: usize,
    within: Duration,
    what: &str,
    ok: impl Fn(&K) -> bool,
) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut events = watcher(api, watcher::Config::default()).boxed();
    let (mut seen, mut listing) = (BTreeMap::new(), BTreeMap::new());
    let mut listed = false;
    let wait = async {
        while let Some(event) = events.next().await {
            match event? {
                watcher::Event::Init => listing.clear(),
                watcher::Event::InitApply(o) => drop(listing.insert(key(&o), ok(&o))),
                watcher::Event::InitDone => (seen, listed) = (std::mem::take(&mut listing), true),
                watcher::Event::Apply(o) => drop(seen.insert(key(&o), ok(&o))),
                watcher::Event::Delete(o) => drop(seen.remove(&key(&o))),
            }
            if listed && seen.len() == count && seen.values().all(|v| *v) {
                return Ok(());
            }
        }
        Err(anyhow!("watch ended"))
    };
    match tokio::time::timeout(within, wait).await {
        Ok(r) => r,
        Err(_) => Err(anyhow!(
            "{what}: {} of {count} after {within:?}",
            seen.values().filter(|v| **v).count()
        )),
    }
}

/// Ready, for its current generation.
pub fn bundle_ready(b: &SecretBundle) -> bool {
    b.status.as_ref().is_some_and(|s| {
        s.observed_generation == b.metadata.generation
            && s.conditions.iter().any(|c| {
                c.type_ == "Ready"
                    && c.status == "True"
                    && c.observed_generation == b.metadata.generation
            })
    })
}

/// Synced by ESO: its Ready condition is True.
pub fn child_synced(o: &DynamicObject) -> bool {
    o.data["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Bundles seen not Ready (or not for their generation) since the watch started.
pub type Unready = std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>;

/// Records every bundle seen not Ready from now on, until the returned task is aborted.
pub fn watch_unready(api: Api<SecretBundle>) -> (tokio::task::JoinHandle<()>, Unready) {
    let unready = Unready::default();
    let seen = unready.clone();
    let task = tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Some(Ok(event)) = events.next().await {
            if let watcher::Event::Apply(b) | watcher::Event::InitApply(b) = event
                && !bundle_ready(&b)
            {
                seen.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(b.name_any());
            }
        }
    });
    (task, unready)
}
