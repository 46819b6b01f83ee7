//! The real ESO schemas decide: every rendered child of every example (each bundle, and each
//! overlay as kustomize builds it) is server-side dry-run applied, with strict field validation,
//! against the vendored ExternalSecret CRDs of each ESO release. Where the operator's version
//! gate accepts a bundle, the API server must accept each child and keep every field of it; where
//! the gate refuses (EsoUpgradeRequired), server-side apply must indeed fail on the field the
//! gate names, and a plain create (Helm, client-side apply) would silently drop it: the degraded
//! child the gate prevents.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use secretbundle_api::SecretBundle;
use secretbundle_controller::applied::is_subset;
use secretbundle_controller::eso::{
    self, Capabilities, EXTERNAL_SECRET_CRD, EsoKind, Release, ServedSchema, features,
};
use secretbundle_controller::reconcile::render::render;
use secretbundle_tests::{ControlPlane, apply_crds, eso as fixtures, kubectl_with, repo_root};
use serde::Deserialize;

/// Every example bundle: the bundles themselves and every overlay's build of them.
fn example_bundles(kubeconfig: &std::path::Path) -> Result<Vec<(String, SecretBundle)>> {
    let mut out = Vec::new();
    let bundles = repo_root().join("examples/bundles");
    let mut dirs: Vec<_> = std::fs::read_dir(&bundles)?.collect::<Result<_, _>>()?;
    dirs.sort_by_key(|d| d.path());
    for dir in dirs {
        let file = dir.path().join("bundle.yaml");
        let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
        let name = format!("bundles/{}", dir.file_name().to_string_lossy());
        out.push((name, serde_yaml::from_str(&text)?));
    }
    for overlay in ["local", "staging", "production"] {
        let dir = repo_root().join("examples/overlays").join(overlay);
        let built = kubectl_with(kubeconfig, &["kustomize", &dir.to_string_lossy()])?;
        if !built.status.success() {
            bail!(
                "kustomize {overlay}: {}",
                String::from_utf8_lossy(&built.stderr)
            );
        }
        for doc in serde_yaml::Deserializer::from_slice(&built.stdout) {
            let b = SecretBundle::deserialize(doc)?;
            out.push((format!("overlays/{overlay}/{}", b.name_any()), b));
        }
    }
    Ok(out)
}

async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Checks every example against one release's CRDs; returns the examples the gate refused.
async fn examples_against(release: &str) -> Result<BTreeSet<String>> {
    let cp = ControlPlane::start().await?;
    let client = cp.client().await?;
    apply_crds(&client, fixtures::crds(release)?).await?;
    let crd = Api::<secretbundle_controller::eso::CrdSummary>::all(client.clone())
        .get(EXTERNAL_SECRET_CRD)
        .await?;
    let version = eso::usable_version(Some(&crd)).map_err(|p| anyhow::anyhow!("{p}"))?;
    let schema = ServedSchema::of(&crd, version).context("served schema")?;
    let known = Release::parse(release).context("release")?;
    let ar = EsoKind::ExternalSecret.api_resource(version);
    let strict = PatchParams::apply("eso-schemas")
        .dry_run()
        .validation_strict();
    let dry_create = PostParams {
        dry_run: true,
        field_manager: None,
    };

    let mut refused = BTreeSet::new();
    for (name, bundle) in example_bundles(&cp.kubeconfig_path()?)? {
        let ns = &bundle.spec.target_namespace;
        ensure_namespace(&client, ns).await?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        let children = render(&bundle, version)?;
        let live = features::check(&children, Capabilities::Installed(&schema));
        let table = features::check(&children, Capabilities::Release(known));
        assert_eq!(
            live.is_ok(),
            table.is_ok(),
            "{name} on {release}: the installed CRD says {live:?}, the release table {table:?}"
        );
        match live {
            Ok(()) => {
                for child in &children {
                    let applied = api
                        .patch(&child.name_any(), &strict, &Patch::Apply(child))
                        .await
                        .with_context(|| format!("{name}: {} on {release}", child.name_any()))?;
                    let (want, have) = (
                        serde_json::to_value(child)?,
                        serde_json::to_value(&applied)?,
                    );
                    assert!(
                        is_subset(&want, &have),
                        "{name}: {} lost fields on {release}:\nwant {want:#}\nhave {have:#}",
                        child.name_any()
                    );
                }
            }
            Err(too_old) => {
                refused.insert(name.clone());
                for u in &too_old.fields {
                    let child = &children[index_of(&u.field)?];
                    let field = u.gap.path.rsplit('.').next().unwrap_or_default();
                    match api
                        .patch(&child.name_any(), &strict, &Patch::Apply(child))
                        .await
                    {
                        // Server-side apply answers 500 "field not declared in schema": without
                        // the gate, an internal error retried forever, never a status reason.
                        Err(kube::Error::Api(s)) => assert!(
                            s.message.contains(field),
                            "{name} on {release}: rejected, but not for {field}: {}",
                            s.message
                        ),
                        other => bail!(
                            "{name} on {release}: {} was not rejected: {other:?}",
                            u.field
                        ),
                    }
                    // What a client that creates (Helm, client-side apply) would have got: the
                    // child, minus the field, and only a warning.
                    let pruned = api.create(&dry_create, child).await?;
                    let have = serde_json::to_value(&pruned)?;
                    assert!(
                        !is_subset(&serde_json::to_value(child)?, &have),
                        "{name} on {release}: {} survived a plain create",
                        u.gap.path
                    );
                }
            }
        }
    }
    Ok(refused)
}

/// `spec.secrets[3].refreshPolicy` -> 3.
fn index_of(field: &str) -> Result<usize> {
    let rest = field
        .strip_prefix("spec.secrets[")
        .context("a bundle secret field")?;
    Ok(rest[..rest.find(']').context("index")?].parse()?)
}

#[tokio::test]
async fn every_example_applies_unchanged_on_eso_v0_16_2() -> Result<()> {
    assert_eq!(examples_against("v0.16.2").await?, BTreeSet::new());
    Ok(())
}

#[tokio::test]
async fn every_example_applies_unchanged_on_eso_v2_9_0() -> Result<()> {
    assert_eq!(examples_against("v2.9.0").await?, BTreeSet::new());
    Ok(())
}

#[tokio::test]
async fn on_eso_v0_10_7_only_the_generated_local_credentials_are_refused() -> Result<()> {
    // refreshPolicy (CreatedOnce) arrived in ESO v0.16.1; everything else the examples use is
    // served by v0.10.7's v1beta1 schema.
    assert_eq!(
        examples_against("v0.10.7").await?,
        BTreeSet::from([
            "overlays/local/data-plane".to_string(),
            "overlays/local/platform".to_string()
        ])
    );
    Ok(())
}
