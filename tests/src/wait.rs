//! Await a condition with a deadline: watch-driven, never a fixed sleep.

use std::fmt::Debug;
use std::time::Duration;

use anyhow::{Result, anyhow};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::wait::{Condition, await_condition, conditions};
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
    let uid = match api.get_opt(name).await? {
        Some(o) => o.uid().unwrap_or_default(),
        None => return Ok(()),
    };
    match tokio::time::timeout(
        TIMEOUT,
        await_condition(api.clone(), name, conditions::is_deleted(&uid)),
    )
    .await
    {
        Ok(r) => r
            .map(|_| ())
            .map_err(|e| anyhow!("{name}: waiting for deletion: {e}")),
        Err(_) => Err(anyhow!("{name}: still exists after {TIMEOUT:?}")),
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

/// Waits until `count` objects match in `api` (a list-watch would be neater; a list per
/// change event keeps it simple): returns them.
pub async fn until_count(
    api: &Api<DynamicObject>,
    lp: &ListParams,
    count: usize,
) -> Result<Vec<DynamicObject>> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let items = api.list(lp).await.map(|l| l.items).unwrap_or_default();
        if items.len() == count {
            return Ok(items);
        }
        if tokio::time::Instant::now() > deadline {
            let names: Vec<String> = items.iter().map(|o| o.name_any()).collect();
            return Err(anyhow!(
                "expected {count} objects, found {names:?} after {TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
