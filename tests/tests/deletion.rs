//! Deleting bundles with the real garbage collector (kube-controller-manager) and the real ESO
//! controller: `deletionPolicy: Orphan` keeps every ExternalSecret and its Secret under each
//! deletion propagation a user or a GitOps tool may ask for; `Delete` removes them.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject};
use secretbundle_api::{DeletionPolicy, SecretBundle};
use secretbundle_controller::eso::EsoVersion;
use secretbundle_tests::stack::{Stack, VAULT_STORE};
use secretbundle_tests::{bundle, eso, wait};

const NS: &str = "platform";

fn one_secret(name: &str, policy: DeletionPolicy) -> SecretBundle {
    let mut b = bundle(&format!(
        "metadata: {{name: {name}}}\nspec: {{targetNamespace: {NS}, secretStoreRef: {{name: {VAULT_STORE}}}, secrets: [{{name: {name}, data: [{{secretKey: password, remoteRef: {{key: platform/db, property: password}}}}]}}]}}"
    ));
    b.spec.deletion_policy = policy;
    b
}

/// The UIDs of a child and of the Secret ESO made for it.
async fn uids(es: &Api<DynamicObject>, secrets: &Api<Secret>, name: &str) -> (String, String) {
    let child = es.get(name).await.expect("child");
    let secret = secrets.get(name).await.expect("secret");
    (child.uid().expect("uid"), secret.metadata.uid.expect("uid"))
}

#[tokio::test]
async fn orphan_survives_every_propagation_and_delete_removes() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    s.bao.put("platform/db", &[("password", "pw")])?;
    s.env.create_namespace(NS).await?;
    let cases = [
        (
            "orphan-foreground",
            DeletionPolicy::Orphan,
            DeleteParams::foreground(),
        ),
        (
            "orphan-background",
            DeletionPolicy::Orphan,
            DeleteParams::background(),
        ),
        (
            "orphan-orphan",
            DeletionPolicy::Orphan,
            DeleteParams::orphan(),
        ),
        (
            "delete-foreground",
            DeletionPolicy::Delete,
            DeleteParams::foreground(),
        ),
        (
            "delete-background",
            DeletionPolicy::Delete,
            DeleteParams::background(),
        ),
        (
            "delete-orphan",
            DeletionPolicy::Delete,
            DeleteParams::orphan(),
        ),
    ];
    for (name, policy, _) in &cases {
        s.env.apply_bundle(&one_secret(name, *policy)).await?;
    }
    let es = eso::external_secrets(&s.env.client, NS, EsoVersion::V1);
    let secrets = Api::<Secret>::namespaced(s.env.client.clone(), NS);
    let mut before = Vec::new();
    for (name, policy, _) in &cases {
        wait::bundle_reason(&s.env.bundles(), name, "Ready").await?;
        let child = es.get(name).await?;
        // Only a Delete bundle is an owner: nothing the GC does can take an Orphan bundle's child.
        assert_eq!(
            child.owner_references().len(),
            usize::from(*policy == DeletionPolicy::Delete),
            "{name}: {:?}",
            child.owner_references()
        );
        before.push(uids(&es, &secrets, name).await);
    }

    for (name, _, dp) in &cases {
        s.env.bundles().delete(name, dp).await?;
    }
    for ((name, policy, dp), (child_uid, _)) in cases.iter().zip(&before) {
        wait::until_deleted(&s.env.bundles(), name).await?;
        match policy {
            DeletionPolicy::Delete => {
                // The policy in the spec wins over the propagation asked for, `orphan` included.
                wait::until_deleted(&es, name).await?;
                // ESO's Secret is owned by its ExternalSecret: the garbage collector takes it.
                wait::until_deleted(&secrets, name).await?;
            }
            DeletionPolicy::Orphan => {
                let child = es.get(name).await?;
                assert_eq!(child.uid().as_ref(), Some(child_uid), "{name} ({dp:?})");
                assert!(child.owner_references().is_empty(), "{name}");
                assert!(
                    !child.labels().contains_key("secrets.ameide.io/bundle"),
                    "{name}: released"
                );
            }
        }
    }
    // The Delete cases' Secrets are gone, so the garbage collector has acted on this namespace
    // since the deletions: the orphaned Secrets are still the very same objects.
    for ((name, policy, _), (_, secret_uid)) in cases.iter().zip(&before) {
        if *policy == DeletionPolicy::Orphan {
            let secret = secrets.get(name).await?;
            assert_eq!(secret.metadata.uid.as_ref(), Some(secret_uid), "{name}");
            assert_eq!(
                eso_value(&secret),
                Some("pw".to_string()),
                "{name}: value kept"
            );
        }
    }
    Ok(())
}

fn eso_value(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get("password")?;
    Some(String::from_utf8_lossy(&bytes.0).into_owned())
}

#[tokio::test]
async fn switching_to_orphan_removes_the_owner_reference() -> anyhow::Result<()> {
    let s = Stack::start().await?;
    s.bao.put("platform/db", &[("password", "pw")])?;
    s.env.create_namespace(NS).await?;
    s.env
        .apply_bundle(&one_secret("switch", DeletionPolicy::Delete))
        .await?;
    wait::bundle_reason(&s.env.bundles(), "switch", "Ready").await?;
    let es = eso::external_secrets(&s.env.client, NS, EsoVersion::V1);
    assert_eq!(es.get("switch").await?.owner_references().len(), 1);

    s.env
        .apply_bundle(&one_secret("switch", DeletionPolicy::Orphan))
        .await?;
    wait::until(
        &es,
        "switch",
        "ownerReference removed",
        |o: Option<&DynamicObject>| o.is_some_and(|o| o.owner_references().is_empty()),
    )
    .await?;
    s.env
        .bundles()
        .delete("switch", &DeleteParams::foreground())
        .await?;
    wait::until_deleted(&s.env.bundles(), "switch").await?;
    assert!(es.get_opt("switch").await?.is_some(), "kept");
    Ok(())
}
