//! Small promises users notice: the operator finds its own CRD at once, our CRD installs without
//! warnings, the server adds no defaults inside lists (Argo CD compares lists whole), and
//! stores are read at the version their own CRD serves.
//! ESO's controller is not running here: tests write ExternalSecret and store status as ESO would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::{CustomResourceExt, ResourceExt};
use prometheus_client::registry::Registry;
use secretbundle_api::SecretBundle;
use secretbundle_controller::Metrics;
use secretbundle_controller::eso::{EsoKind, EsoVersion};
use secretbundle_tests::controlplane::ControlPlane;
use secretbundle_tests::{Env, apply_crds, eso, kubectl_with, repo_root, simple_bundle, wait};
use serde_json::{Value, json};

/// The API server's count of open WATCH requests on CRDs: the operator's first one shows it has
/// started and is waiting. Metrics have no watch, so this polls, with the suite's deadline.
async fn await_crd_watch(client: &kube::Client) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + wait::TIMEOUT;
    loop {
        let req = http::Request::get("/metrics").body(Vec::new())?;
        let text = client.request_text(req).await?;
        let open = text.lines().any(|l| {
            l.starts_with("apiserver_longrunning_requests{")
                && l.contains(r#"resource="customresourcedefinitions""#)
                && l.contains(r#"verb="WATCH""#)
                && !l.ends_with(" 0")
        });
        if open {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the operator never watched CRDs"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn operator_started_before_its_crd_notices_it_at_once() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client().await?;
    let metrics = Arc::new(Metrics::new(&mut Registry::default()));
    let operator = tokio::spawn(secretbundle_controller::run(
        client.clone(),
        metrics,
        4,
        std::future::pending(),
    ));
    await_crd_watch(&client).await?;

    apply_crds(&client, vec![SecretBundle::crd()]).await?;
    let established = Instant::now();
    let bundles = Api::<SecretBundle>::all(client.clone());
    let pp = PatchParams::apply("secretbundle-tests");
    let b = simple_bundle("argocd", "argocd", &["argocd-secret"]);
    bundles.patch("argocd", &pp, &Patch::Apply(&b)).await?;
    // Generous for a loaded CI machine; a watch backoff (10-30 s) would still miss it.
    let status = tokio::time::timeout(
        Duration::from_secs(5),
        wait::bundle_reason(&bundles, "argocd", "WaitingForNamespace"),
    )
    .await;
    operator.abort();
    status.map_err(|_| anyhow::anyhow!("no status within 5 s of the CRD being Established"))??;
    println!(
        "CRD Established -> first status: {:?}",
        established.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn our_crd_installs_without_warnings() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let crd = repo_root().join("crds/secretbundles.secrets.ameide.io.yaml");
    // Client-side first: after a server-side apply, kubectl itself warns about its missing
    // last-applied annotation, which says nothing about the CRD.
    for mode in [&["apply"][..], &["apply", "--server-side"][..]] {
        let mut args = mode.to_vec();
        let path = crd.to_string_lossy();
        args.extend(["-f", &path]);
        let out = kubectl_with(&cp.kubeconfig_path()?, &args)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode:?}: {stderr}");
        assert!(!stderr.contains("Warning"), "{mode:?}: {stderr}");
    }
    Ok(())
}

/// Every list in `want` equals the same list in `have`, item for item; maps may gain keys
/// (the API server may default fields of a map), lists may not.
fn lists_equal(want: &Value, have: &Value, path: &str, out: &mut Vec<String>) {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            for (k, v) in w {
                lists_equal(
                    v,
                    h.get(k).unwrap_or(&Value::Null),
                    &format!("{path}.{k}"),
                    out,
                );
            }
        }
        (Value::Array(_), _) if want != have => out.push(format!("{path}: {want} != {have}")),
        _ => {}
    }
}

#[tokio::test]
async fn the_server_adds_nothing_inside_lists() -> anyhow::Result<()> {
    let env = Env::start().await?;
    // Every optional field inside list items left out, the way users write them.
    let manifest = json!({
        "apiVersion": "secrets.ameide.io/v1alpha1", "kind": "SecretBundle",
        "metadata": {"name": "observability"},
        "spec": {
            "targetNamespace": "monitoring",
            "secretStoreRef": {"name": "ameide-vault"},
            "dependsOn": ["platform"],
            "secrets": [
                {"name": "grafana", "secretStoreRef": {"name": "local"},
                 "data": [{"secretKey": "admin", "remoteRef": {"key": "obs/grafana"}}]},
                {"name": "loki", "dataFrom": [{"extract": {"key": "obs/loki"}}]}
            ]
        }
    });
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), serde_json::to_string(&manifest)?)?;
    let out = env.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        &file.path().to_string_lossy(),
    ])?;
    assert!(out.status.success(), "{out:?}");
    let live = serde_json::to_value(env.bundles().get("observability").await?)?;
    let mut diffs = Vec::new();
    lists_equal(&manifest["spec"], &live["spec"], "spec", &mut diffs);
    assert!(diffs.is_empty(), "{diffs:#?}");
    Ok(())
}

#[tokio::test]
async fn stores_are_read_at_the_version_their_own_crd_serves() -> anyhow::Result<()> {
    let env = Env::start().await?;
    // ExternalSecret from ESO 2.9 (v1 only), stores from ESO 0.10 (v1beta1, no v1).
    let pick = |version: &str, plural: &str| -> anyhow::Result<_> {
        eso::crds(version)?
            .into_iter()
            .find(|c| c.name_any().starts_with(plural))
            .ok_or_else(|| anyhow::anyhow!("{plural} CRD in {version}"))
    };
    apply_crds(
        &env.client,
        vec![
            pick("v2.9.0", "externalsecrets.")?,
            pick("v0.10.7", "clustersecretstores.")?,
            pick("v0.10.7", "secretstores.")?,
        ],
    )
    .await?;
    eso::ready_cluster_store(&env.client, EsoVersion::V1beta1, eso::TEST_STORE).await?;
    env.create_namespace("platform").await?;
    env.apply_bundle(&simple_bundle("platform", "platform", &["db"]))
        .await?;
    let b = wait::bundle_reason(&env.bundles(), "platform", "SecretsNotReady").await?;
    assert_eq!(
        b.status.and_then(|s| s.eso_api_version).as_deref(),
        Some("external-secrets.io/v1")
    );
    let es: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        "platform",
        &EsoKind::ExternalSecret.api_resource(EsoVersion::V1),
    );
    wait::until_count(&es, &ListParams::default(), 1).await?;
    Ok(())
}
