//! Latencies while the operator holds every child of a large cold start in its cache: a
//! namespace, a bundle and a CRD arriving, each to the children existing (`latency_{size}.*`).

use std::time::Instant;

use anyhow::{Context as _, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use secretbundle_api::StoreKind;
use secretbundle_controller::eso::{EsoKind, EsoVersion};
use secretbundle_tests::{apply_crds, eso, wait};
use serde_json::json;

use crate::cluster::{Cluster, bundles, child_keys, names};
use crate::observer::Observer;
use crate::scenarios::{LONG, Metrics, Preset, bundle_sample, ms, namespace_sample, record};

/// Bundles waiting for the SecretStore CRD in each trial.
const WAITING: usize = 100;

pub async fn latencies(
    m: &mut Metrics,
    c: &Cluster,
    obs: &Observer,
    size: &str,
    p: &Preset,
) -> Result<()> {
    let (mut by_ns, mut by_bundle) = (Vec::new(), Vec::new());
    c.namespaces(&["cached-apps".into()]).await?;
    for i in 0..p.cached_samples {
        by_ns.push(namespace_sample(c, obs, &format!("cached-late-{i}")).await?);
        by_bundle.push(bundle_sample(c, obs, &format!("cached-new-{i}"), "cached-apps").await?);
    }
    record(m, &format!("latency_{size}.namespace_ms"), by_ns);
    record(m, &format!("latency_{size}.bundle_ms"), by_bundle);
    let (total, stores, after) = store_crd(c, obs, p.crd_trials).await?;
    record(m, &format!("latency_{size}.store_crd_ms"), total);
    record(m, &format!("latency_{size}.store_crd_stores_ms"), stores);
    record(
        m,
        &format!("latency_{size}.store_crd_after_stores_ms"),
        after,
    );
    Ok(())
}

/// ESO's SecretStore CRD installed while every child is cached (the ExternalSecret and
/// ClusterSecretStore CRDs stay): each trial, 100 new bundles reading a SecretStore wait for it;
/// ms from the CRD being Established, the stores created after, to their children existing;
/// split into the benchmark's own part (creating the 10 stores and marking them Ready, one
/// request at a time) and what follows the last store turning Ready.
async fn store_crd(
    c: &Cluster,
    obs: &Observer,
    trials: usize,
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let crd = eso::crds(crate::cluster::ESO)?
        .into_iter()
        .find(|c| c.spec.names.kind == "SecretStore")
        .context("no SecretStore CRD")?;
    let crds = Api::<CustomResourceDefinition>::all(c.client.clone());
    delete_crd(&crds, &crd.name_any()).await?;
    let nss: Vec<String> = (0..10).map(|i| format!("store-crd-{i}")).collect();
    c.namespaces(&nss).await?;
    let (mut total, mut stores, mut after) = (Vec::new(), Vec::new(), Vec::new());
    for t in 0..trials {
        let mut set = bundles(&format!("store-crd-{t}"), WAITING, 1, &nss);
        for b in &mut set {
            b.spec.secret_store_ref.name = "vault".into();
            b.spec.secret_store_ref.kind = Some(StoreKind::SecretStore);
        }
        let (keys, bundle_names) = (child_keys(&set), names(&set));
        c.create_bundles(set).await?;
        obs.bundles_reason(&bundle_names, "WaitingForStore", LONG)
            .await?;
        apply_crds(&c.client, vec![crd.clone()]).await?;
        let t0 = Instant::now();
        let version = EsoVersion::V1;
        for ns in &nss {
            let api: Api<DynamicObject> = Api::namespaced_with(
                c.client.clone(),
                ns,
                &EsoKind::SecretStore.api_resource(version),
            );
            let store = json!({"apiVersion": version.api_version(), "kind": "SecretStore",
                "metadata": {"name": "vault", "namespace": ns},
                "spec": {"provider": {"fake": {"data": []}}}});
            api.patch("vault", &PatchParams::apply("bench"), &Patch::Apply(&store))
                .await?;
            eso::set_ready(&api, "vault", "True", "Valid", "store validated").await?;
        }
        let ready = Instant::now();
        let done = obs.all_children(&keys, LONG).await?;
        total.push(ms(t0, done));
        stores.push(ms(t0, ready));
        after.push(ms(ready, done.max(ready)));
        let api = Api::<secretbundle_api::SecretBundle>::all(c.client.clone());
        for name in &bundle_names {
            api.delete(name, &DeleteParams::default()).await?;
        }
        // Cleaned up before the next trial (and before the restart step that follows, which
        // would otherwise count this cleanup's writes as the restart's).
        for name in &bundle_names {
            wait::until_deleted_within(&api, name, LONG).await?;
        }
        delete_crd(&crds, &crd.name_any()).await?;
    }
    Ok((total, stores, after))
}

/// Deletes a CRD and waits until the apiserver has removed it (and every instance).
pub async fn delete_crd(crds: &Api<CustomResourceDefinition>, name: &str) -> Result<()> {
    match crds.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("deleting CRD {name}")),
    }
    wait::until_deleted_within(crds, name, LONG).await
}
