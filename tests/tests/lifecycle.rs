//! Children over their life: prune, drift, conflicts, adoption, deletion policies, no churn.
//! ESO's controller is not running here: tests write ExternalSecret status as ESO would.
//!
//! Every test runs with 5% of the operator's requests faulted (500, 409, 429, dropped, lost
//! responses, delays, cut watches; seeded by the test's name, or `SB_FAULT_SEED` to replay), and
//! ends with every bundle's status equal to the one recomputed from the cluster.

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use secretbundle_api::{MANAGER, SecretBundle};
use secretbundle_controller::eso::EsoVersion;
use secretbundle_faults::Plan;
use secretbundle_tests::{Env, eso, faults, identity, simple_bundle, wait};
use serde_json::json;

const NS: &str = "observability";

async fn ready_env(test: &str) -> anyhow::Result<(Env, Api<DynamicObject>)> {
    let plan = Plan::new(faults::RATE, faults::seed_for(test));
    let env = Env::start_with_eso_v1_faults(plan).await?;
    env.create_namespace(NS).await?;
    let es = eso::external_secrets(&env.client, NS, EsoVersion::V1);
    Ok((env, es))
}

#[tokio::test]
async fn removed_secrets_are_pruned_and_drift_is_restored() -> anyhow::Result<()> {
    let (env, es) = ready_env("removed_secrets_are_pruned_and_drift_is_restored").await?;
    env.apply_bundle(&simple_bundle("obs", NS, &["grafana", "loki", "tempo"]))
        .await?;
    wait::until_count(&es, &ListParams::default(), 3).await?;

    env.apply_bundle(&simple_bundle("obs", NS, &["grafana", "loki"]))
        .await?;
    let left = wait::until_count(&es, &ListParams::default(), 2).await?;
    assert!(left.iter().all(|c| c.name_any() != "tempo"));

    // Deleted by hand: restored.
    es.delete("loki", &DeleteParams::default()).await?;
    wait::until(&es, "loki", "restored", |o: Option<&DynamicObject>| {
        o.is_some()
    })
    .await?;

    // Edited by hand: the field the bundle owns is restored.
    let edit = json!({"spec": {"refreshInterval": "5m"}});
    es.patch("grafana", &PatchParams::default(), &Patch::Merge(&edit))
        .await?;
    wait::until(
        &es,
        "grafana",
        "refreshInterval restored",
        |o: Option<&DynamicObject>| o.is_some_and(|o| o.data["spec"]["refreshInterval"] == "1h"),
    )
    .await?;
    env.assert_statuses_true().await?;
    Ok(())
}

#[tokio::test]
async fn unmanaged_externalsecret_is_never_touched_unless_adoption_is_allowed() -> anyhow::Result<()>
{
    let (env, es) =
        ready_env("unmanaged_externalsecret_is_never_touched_unless_adoption_is_allowed").await?;
    // A Helm-made ExternalSecret with the same name as one of the bundle's.
    let helm_made = json!({
        "apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
        "metadata": {"name": "grafana", "namespace": NS, "labels": {"app.kubernetes.io/managed-by": "Helm"}},
        "spec": {"secretStoreRef": {"name": "old-store", "kind": "ClusterSecretStore"}, "refreshInterval": "10m",
                 "target": {"name": "grafana"}, "data": [{"secretKey": "admin", "remoteRef": {"key": "old/grafana"}}]}
    });
    let before = es
        .patch(
            "grafana",
            &PatchParams::apply("helm"),
            &Patch::Apply(&helm_made),
        )
        .await?;
    env.apply_bundle(&simple_bundle("obs", NS, &["grafana", "loki"]))
        .await?;

    let b = wait::bundle_reason(&env.bundles(), "obs", "Conflict").await?;
    let status = b.status.expect("status");
    assert!(
        status.conditions[0].message.contains(
            "ExternalSecret observability/grafana exists and is not managed by this bundle"
        )
    );
    assert!(wait::condition_true(&status, "Stalled"));
    let conflicting = status
        .secrets
        .iter()
        .find(|s| s.name == "grafana")
        .expect("entry");
    assert_eq!(
        (conflicting.ready, conflicting.reason.as_str()),
        (false, "Conflict")
    );
    // The other child is applied; the unmanaged one is untouched.
    wait::until(&es, "loki", "applied", |o: Option<&DynamicObject>| {
        o.is_some()
    })
    .await?;
    let after = es.get("grafana").await?;
    assert_eq!(after.resource_version(), before.resource_version());

    // Adoption takes it over in place: same object, same UID.
    let mut adopting = simple_bundle("obs", NS, &["grafana", "loki"]);
    adopting.spec.adoption_policy = secretbundle_api::AdoptionPolicy::IfExists;
    env.apply_bundle(&adopting).await?;
    let adopted = wait::until(&es, "grafana", "adopted", |o: Option<&DynamicObject>| {
        o.is_some_and(|o| {
            o.labels()
                .get("secrets.ameide.io/bundle")
                .map(String::as_str)
                == Some("obs")
        })
    })
    .await?;
    assert_eq!(adopted.uid(), before.uid());
    assert_eq!(
        adopted.data["spec"]["secretStoreRef"]["name"],
        eso::TEST_STORE
    );
    // And handed over: Helm no longer co-owns the fields it set to what the bundle wants.
    let handed = wait::until(
        &es,
        "grafana",
        "handed over",
        |o: Option<&DynamicObject>| o.is_some_and(|o| eso::main_managers(o) == [MANAGER]),
    )
    .await?;
    assert_eq!(handed.uid(), before.uid());
    wait::bundle_reason(&env.bundles(), "obs", "SecretsNotReady").await?;
    env.assert_statuses_true().await?;
    Ok(())
}

#[tokio::test]
async fn deletion_deletes_children_or_orphans_them() -> anyhow::Result<()> {
    let (env, es) = ready_env("deletion_deletes_children_or_orphans_them").await?;
    env.apply_bundle(&simple_bundle("deleted", NS, &["a"]))
        .await?;
    let mut orphan = simple_bundle("orphaned", NS, &["b"]);
    orphan.spec.deletion_policy = secretbundle_api::DeletionPolicy::Orphan;
    env.apply_bundle(&orphan).await?;
    wait::until_count(&es, &ListParams::default(), 2).await?;
    let b = wait::bundle_reason(&env.bundles(), "deleted", "SecretsNotReady").await?;
    assert!(
        b.finalizers()
            .iter()
            .any(|f| f == "secrets.ameide.io/cleanup")
    );

    // No garbage collector runs here: what disappears, the finalizer deleted.
    for name in ["deleted", "orphaned"] {
        env.bundles().delete(name, &DeleteParams::default()).await?;
        wait::until_deleted(&env.bundles(), name).await?;
    }
    let left = wait::until_count(&es, &ListParams::default(), 1).await?;
    assert_eq!(left[0].name_any(), "b");
    assert!(
        left[0].owner_references().is_empty(),
        "released from the bundle"
    );
    assert!(!left[0].labels().contains_key("secrets.ameide.io/bundle"));
    assert_eq!(
        left[0].data["spec"]["target"]["name"], "b",
        "its spec is kept"
    );
    env.assert_statuses_true().await?;
    Ok(())
}

#[tokio::test]
async fn nothing_is_written_when_nothing_changed() -> anyhow::Result<()> {
    let (env, es) = ready_env("nothing_is_written_when_nothing_changed").await?;
    env.apply_bundle(&simple_bundle("quiet", NS, &["grafana"]))
        .await?;
    wait::until_count(&es, &ListParams::default(), 1).await?;
    eso::set_ready(&es, "grafana", "True", "SecretSynced", "").await?;
    let ready = wait::bundle_reason(&env.bundles(), "quiet", "Ready").await?;
    let child = es.get("grafana").await?;

    // An unrelated change to the bundle's metadata triggers a reconcile of an unchanged bundle.
    let reconciles = |env: &Env| {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &env.registry).expect("encode");
        text.lines()
            .find(|l| l.starts_with("secretbundle_reconciles_total{reason=\"Ready\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = reconciles(&env);
    // Writes by the operator that touch the unchanged bundle or its child, from the audit log.
    let quiet_writes = || -> anyhow::Result<Vec<identity::Write>> {
        Ok(
            identity::audit_writes_of(&env.cp.audit_log(), identity::USER)?
                .into_iter()
                .filter(|w| {
                    (w.resource.starts_with("secretbundles") && w.name == "quiet")
                        || (w.resource == "externalsecrets" && w.name == "grafana")
                })
                .collect(),
        )
    };
    let written_before = quiet_writes()?;
    let label = json!({"metadata": {"labels": {"team": "platform"}}});
    let touched = env
        .bundles()
        .patch("quiet", &PatchParams::default(), &Patch::Merge(&label))
        .await?;
    let deadline = tokio::time::Instant::now() + wait::TIMEOUT;
    while reconciles(&env) == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconcile after the label change"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let after: SecretBundle = env.bundles().get("quiet").await?;
    assert_eq!(
        after.resource_version(),
        touched.resource_version(),
        "status not rewritten"
    );
    assert_eq!(after.status, ready.status);
    assert_eq!(
        es.get("grafana").await?.resource_version(),
        child.resource_version(),
        "child not rewritten"
    );
    // The status writer runs apart from reconciles: a write it would wrongly make could still be
    // queued. A marker bundle's first status is written after anything queued before it, so once
    // it shows, the audit log holds every write made for the reconcile above.
    env.apply_bundle(&simple_bundle("marker", NS, &["marker"]))
        .await?;
    wait::bundle_reason(&env.bundles(), "marker", "SecretsNotReady").await?;
    let written_after = quiet_writes()?;
    assert_eq!(
        written_after[written_before.len()..],
        [],
        "written for an unchanged bundle"
    );
    let all = identity::audit_writes_of(&env.cp.audit_log(), identity::USER)?;
    assert!(
        all.iter()
            .any(|w| w.resource == "secretbundles/status" && w.name == "marker"),
        "the marker's status is in the log"
    );
    env.assert_statuses_true().await?;
    Ok(())
}

#[tokio::test]
async fn bundles_claiming_one_name_never_take_it_from_each_other() -> anyhow::Result<()> {
    let (env, es) = ready_env("bundles_claiming_one_name_never_take_it_from_each_other").await?;
    // Created together, so they reconcile at the same moment and race for the name.
    let names: Vec<String> = (0..8).map(|i| format!("claim-{i}")).collect();
    let applies = names
        .iter()
        .map(|n| env.apply_bundle_owned(simple_bundle(n, NS, &["shared"])));
    for r in futures::future::join_all(applies).await {
        r?;
    }
    let child = wait::until(&es, "shared", "applied", |o: Option<&DynamicObject>| {
        o.is_some()
    })
    .await?;
    let owner = child.labels()["secrets.ameide.io/bundle"].clone();
    wait::bundle_reason(&env.bundles(), &owner, "SecretsNotReady").await?;
    for loser in names.iter().filter(|n| **n != owner) {
        wait::bundle_message(&env.bundles(), loser, "Conflict", "observability/shared").await?;
    }
    let child = es.get("shared").await?;
    assert_eq!(
        child.labels()["secrets.ameide.io/bundle"],
        owner,
        "the first claim holds"
    );
    assert_eq!(
        child.owner_references().len(),
        1,
        "{:?}",
        child.owner_references()
    );
    env.assert_statuses_true().await?;
    Ok(())
}
