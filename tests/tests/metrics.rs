//! What /metrics says after each kind of failure. Each fault kind the API can answer a child
//! apply or a status write with lands in its own category of
//! `secretbundle_reconcile_failures_total` / `secretbundle_status_write_failures_total` (the ones
//! docs/operations.md alerts on), and the bundle is retried until its status is what the cluster
//! implies. A missing permission is `forbidden`, in the apiserver's words, until it is granted.
//! ESO's controller is not running here: a child is applied and stays not Ready.

use std::sync::{Arc, Mutex, PoisonError};

use http::Method;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, Patch, PatchParams};
use secretbundle_faults::{Filter, Kind, Plan};
use secretbundle_tests::{Env, identity, simple_bundle, wait};
use serde_json::json;

const NS: &str = "metrics";

/// The value of `metric{category="..."}` on the in-process operator's registry.
fn count(env: &Env, metric: &str, category: &str) -> u64 {
    let mut page = String::new();
    prometheus_client::encoding::text::encode(&mut page, &env.registry).expect("encode");
    let series = format!("{metric}{{category=\"{category}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0)
}

/// Whether `metric{category}` reaches 1 within the harness's deadline (it catches a lost count). A
/// failure is counted when the client sees it, which for a lost response is after the apiserver
/// applied the write and its watch event arrived; the registry has no change notification, so
/// it is read until then.
async fn counted(env: &Env, metric: &str, category: &str) -> bool {
    let deadline = tokio::time::Instant::now() + wait::TIMEOUT;
    while count(env, metric, category) == 0 {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    true
}

/// `kind` for the first child apply and the first status write; nothing else is touched.
fn first_write_of_each(kind: Kind) -> Plan {
    let hit = Arc::new(Mutex::new((false, false)));
    let only: Filter = Arc::new(move |method: &Method, path: &str| {
        if *method != Method::PATCH {
            return false;
        }
        let mut hit = hit.lock().unwrap_or_else(PoisonError::into_inner);
        let (child, status) = &mut *hit;
        let slot = if path.contains("/externalsecrets/") {
            child
        } else if path.starts_with("/apis/secrets.ameide.io/") && path.ends_with("/status") {
            status
        } else {
            return false;
        };
        !std::mem::replace(slot, true)
    });
    Plan::targeted(kind, 2, only)
}

async fn each_kind_is_counted(kind: Kind, category: &str) -> anyhow::Result<()> {
    let env = Env::start_with_eso_v1_faults(first_write_of_each(kind)).await?;
    env.create_namespace(NS).await?;
    env.apply_bundle(&simple_bundle("m", NS, &["a"])).await?;
    // Retried past both faults: the child is applied and the status says what ESO's is.
    wait::bundle_reason(&env.bundles(), "m", "SecretsNotReady").await?;
    let stats = env.faults.as_ref().map(|f| f.stats()).unwrap_or_default();
    assert_eq!(stats.of(kind), 2, "{stats}");
    // At least: a real apiserver may add a failure of its own (a 409 on a finalizer patch).
    assert!(
        counted(&env, "secretbundle_reconcile_failures_total", category).await,
        "the faulted child apply is counted as {category}"
    );
    // The status write is retried until it lands (the status above is a later write).
    assert!(
        counted(&env, "secretbundle_status_write_failures_total", category).await,
        "the faulted status write is counted as {category}"
    );
    env.assert_statuses_true().await?;
    Ok(())
}

#[tokio::test]
async fn a_server_error_is_counted_as_server_error() -> anyhow::Result<()> {
    each_kind_is_counted(Kind::ServerError, "server_error").await
}

#[tokio::test]
async fn throttling_is_counted_as_server_error() -> anyhow::Result<()> {
    each_kind_is_counted(Kind::TooManyRequests, "server_error").await
}

#[tokio::test]
async fn a_conflict_is_counted_as_conflict() -> anyhow::Result<()> {
    each_kind_is_counted(Kind::Conflict, "conflict").await
}

#[tokio::test]
async fn a_dropped_connection_is_counted_as_transport() -> anyhow::Result<()> {
    each_kind_is_counted(Kind::Dropped, "transport").await
}

#[tokio::test]
async fn a_lost_response_is_counted_as_transport() -> anyhow::Result<()> {
    each_kind_is_counted(Kind::ResponseLost, "transport").await
}

/// The operator's ClusterRole without `patch` on ExternalSecrets, or with it back.
async fn grant_patch(env: &Env, grant: bool) -> anyhow::Result<()> {
    let mut rules = identity::shipped_rules()?;
    if !grant {
        for r in &mut rules {
            if r.resources.iter().flatten().any(|x| x == "externalsecrets") {
                r.verbs.retain(|v| v != "patch");
            }
        }
    }
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": identity::ROLE}, "rules": rules});
    Api::<ClusterRole>::all(env.client.clone())
        .patch(
            identity::ROLE,
            &PatchParams::apply("secretbundle-tests").force(),
            &Patch::Apply(role),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_missing_permission_is_forbidden_in_the_apiservers_words() -> anyhow::Result<()> {
    let env = Env::start_with_eso_v1().await?;
    env.create_namespace(NS).await?;
    grant_patch(&env, false).await?;
    env.apply_bundle(&simple_bundle("m", NS, &["a"])).await?;
    let b = wait::bundle_reason(&env.bundles(), "m", "ApplyFailed").await?;
    let message = &b.status.as_ref().expect("status").conditions[0].message;
    assert!(
        message.contains("forbidden")
            && message.contains("cannot patch resource \"externalsecrets\""),
        "{message}"
    );
    assert!(counted(&env, "secretbundle_reconcile_failures_total", "forbidden").await);
    assert_eq!(
        count(&env, "secretbundle_reconcile_failures_total", "rejected"),
        0
    );
    // Granted again: the retry (with backoff) goes through.
    grant_patch(&env, true).await?;
    wait::bundle_reason(&env.bundles(), "m", "SecretsNotReady").await?;
    env.assert_statuses_true().await?;
    Ok(())
}
