//! The gates on a real control plane: each closed gate is reported precisely, writes nothing,
//! and opens by itself (watch-driven) when the missing piece appears.
//! ESO's controller is not running here: tests write ExternalSecret status as ESO would.

use kube::ResourceExt;
use kube::api::{Api, ListParams};
use secretbundle_controller::eso::EsoVersion;
use secretbundle_tests::{Env, eso, simple_bundle, wait};

#[tokio::test]
async fn bundle_waits_for_its_namespace_then_applies_without_a_nudge() -> anyhow::Result<()> {
    let env = Env::start().await?;
    env.install_eso_crds("v2.9.0").await?;
    eso::ready_cluster_store(&env.client, EsoVersion::V1, eso::TEST_STORE).await?;
    env.apply_bundle(&simple_bundle(
        "argocd",
        "argocd",
        &["argocd-secret", "argocd-repo"],
    ))
    .await?;

    let b = wait::bundle_reason(&env.bundles(), "argocd", "WaitingForNamespace").await?;
    let ready = &b.status.as_ref().expect("status").conditions[0];
    assert_eq!(
        (ready.type_.as_str(), ready.status.as_str()),
        ("Ready", "False")
    );
    assert_eq!(ready.message, r#"namespace "argocd" does not exist"#);
    let all = Api::<kube::api::DynamicObject>::all_with(
        env.client.clone(),
        &secretbundle_controller::eso::EsoKind::ExternalSecret.api_resource(EsoVersion::V1),
    );
    assert!(
        all.list(&ListParams::default()).await?.items.is_empty(),
        "nothing written while waiting"
    );

    env.create_namespace("argocd").await?;
    let es = eso::external_secrets(&env.client, "argocd", EsoVersion::V1);
    let children = wait::until_count(&es, &ListParams::default(), 2).await?;
    assert!(
        children
            .iter()
            .all(|c| c.labels()["secrets.ameide.io/bundle"] == "argocd")
    );
    let b = wait::bundle_reason(&env.bundles(), "argocd", "SecretsNotReady").await?;
    assert_eq!(
        b.status.as_ref().and_then(|s| s.eso_api_version.as_deref()),
        Some("external-secrets.io/v1")
    );

    for c in ["argocd-secret", "argocd-repo"] {
        eso::set_ready(&es, c, "True", "SecretSynced", "secret synced").await?;
    }
    let b = wait::bundle_reason(&env.bundles(), "argocd", "Ready").await?;
    let status = b.status.expect("status");
    assert_eq!((status.ready_secrets, status.total_secrets), (2, 2));
    assert_eq!(
        status.conditions.len(),
        1,
        "Reconciling is gone once Ready: {:?}",
        status.conditions
    );
    Ok(())
}
