//! Await a condition with a deadline: watch-driven, never a fixed sleep.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use anyhow::{Result, anyhow};
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use secretbundle_api::SecretBundle;
use serde::de::DeserializeOwned;

/// Generous: two cores may run several control planes at once.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Waits until `cond` holds for object `name`; the error shows the object as last seen.
pub async fn until<K>(api: &Api<K>, name: &str, what: &str, cond: impl Condition<K>) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    match tokio::time::timeout(TIMEOUT, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(obj))) => Ok(obj),
        Ok(Ok(None)) => Err(anyhow!("{name}: {what}: object is gone")),
        Ok(Err(e)) => Err(anyhow!("{name}: {what}: watch failed: {e}")),
        Err(_) => {
            let last = api.get_opt(name).await.ok().flatten();
            Err(anyhow!(
                "{name}: timed out after {TIMEOUT:?} waiting for {what}; last seen: {last:#?}"
            ))
        }
    }
}

pub async fn until_deleted<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    until_deleted_within(api, name, TIMEOUT).await
}

/// [`until_deleted`] with another deadline (the benchmark's busy control planes take longer).
pub async fn until_deleted_within<K>(api: &Api<K>, name: &str, within: Duration) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let uid = match api.get_opt(name).await? {
        Some(o) => o.uid().unwrap_or_default(),
        None => return Ok(()),
    };
    match tokio::time::timeout(
        within,
        await_condition(api.clone(), name, conditions::is_deleted(&uid)),
    )
    .await
    {
        Ok(r) => r
            .map(|_| ())
            .map_err(|e| anyhow!("{name}: waiting for deletion: {e}")),
        Err(_) => Err(anyhow!("{name}: still exists after {within:?}")),
    }
}

pub async fn crd_established(api: &Api<CustomResourceDefinition>, name: &str) -> Result<()> {
    until(api, name, "Established", conditions::is_crd_established())
        .await
        .map(|_| ())
}

/// The bundle's Ready condition, for its current generation, has `reason` and a message
/// containing `needle`.
pub fn ready_is<'a>(reason: &'a str, needle: &'a str) -> impl Condition<SecretBundle> + 'a {
    move |b: Option<&SecretBundle>| {
        b.and_then(|b| {
            let status = b.status.as_ref()?;
            let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
            Some(
                ready.reason == reason
                    && ready.message.contains(needle)
                    && ready.observed_generation == b.metadata.generation,
            )
        })
        .unwrap_or(false)
    }
}

/// Whether a bundle's status has condition `type_` with status True.
pub fn condition_true(status: &secretbundle_api::SecretBundleStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Waits until the bundle's Ready condition has `reason`; returns the bundle.
pub async fn bundle_reason(
    api: &Api<SecretBundle>,
    name: &str,
    reason: &str,
) -> Result<SecretBundle> {
    until(
        api,
        name,
        &format!("Ready reason {reason}"),
        ready_is(reason, ""),
    )
    .await
}

/// Waits until the bundle's Ready condition has `reason` and a message containing `needle`.
pub async fn bundle_message(
    api: &Api<SecretBundle>,
    name: &str,
    reason: &str,
    needle: &str,
) -> Result<SecretBundle> {
    until(
        api,
        name,
        &format!("Ready reason {reason} with message {needle:?}"),
        ready_is(reason, needle),
    )
    .await
}

/// Waits until exactly `count` objects match `lp` in `api`, watching them; returns them.
pub async fn until_count(
    api: &Api<DynamicObject>,
    lp: &ListParams,
    count: usize,
) -> Result<Vec<DynamicObject>> {
    let mut wc = watcher::Config::default();
    if let Some(labels) = &lp.label_selector {
        wc = wc.labels(labels);
    }
    let mut events = watcher(api.clone(), wc).boxed();
    let (mut seen, mut listing) = (BTreeMap::new(), BTreeMap::new());
    let mut listed = false;
    let wait = async {
        while let Some(event) = events.next().await {
            match event? {
                watcher::Event::Init => listing.clear(),
                watcher::Event::InitApply(o) => drop(listing.insert(o.name_any(), o)),
                watcher::Event::InitDone => (seen, listed) = (std::mem::take(&mut listing), true),
                watcher::Event::Apply(o) => drop(seen.insert(o.name_any(), o)),
                watcher::Event::Delete(o) => drop(seen.remove(&o.name_any())),
            }
            if listed && seen.len() == count {
                return Ok(seen.values().cloned().collect());
            }
        }
        Err(anyhow!("watch ended"))
    };
    tokio::time::timeout(TIMEOUT, wait)
        .await
        .unwrap_or_else(|_| Err(anyhow!("expected {count} objects after {TIMEOUT:?}")))
}
