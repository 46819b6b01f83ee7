//! ESO pieces for tests: the real CRDs of three releases, and (until the real ESO controller
//! runs) status writes that imitate what ESO itself writes.

use anyhow::{Context as _, Result};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use secretbundle_controller::eso::{EsoKind, EsoVersion};
use serde::Deserialize;
use serde_json::json;

use crate::repo_root;

/// The ClusterSecretStore that test bundles read from.
pub const TEST_STORE: &str = "test-store";

/// The CRDs of one ESO release, vendored unmodified in `tests/fixtures/eso-crds/<version>/`.
pub fn crds(version: &str) -> Result<Vec<CustomResourceDefinition>> {
    let dir = repo_root().join("tests/fixtures/eso-crds").join(version);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path)?;
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_yaml::Value::deserialize(doc)?;
                if !value.is_null() {
                    out.push(
                        serde_yaml::from_value(value)
                            .with_context(|| format!("parsing {}", path.display()))?,
                    );
                }
            }
        }
    }
    Ok(out)
}

pub fn external_secrets(client: &Client, ns: &str, version: EsoVersion) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &EsoKind::ExternalSecret.api_resource(version),
    )
}

/// The managers of an object's main resource (not its status), from its managedFields.
pub fn main_managers(o: &DynamicObject) -> Vec<String> {
    o.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.subresource.as_deref().unwrap_or_default().is_empty())
        .filter_map(|m| m.manager.clone())
        .collect()
}

/// Creates ClusterSecretStore `name` (fake provider) and, as ESO would, marks it Ready.
pub async fn ready_cluster_store(client: &Client, version: EsoVersion, name: &str) -> Result<()> {
    let api: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &EsoKind::ClusterSecretStore.api_resource(version),
    );
    let store = json!({
        "apiVersion": version.api_version(), "kind": "ClusterSecretStore",
        "metadata": {"name": name},
        "spec": {"provider": {"fake": {"data": []}}}
    });
    api.patch(
        name,
        &PatchParams::apply("secretbundle-tests"),
        &Patch::Apply(&store),
    )
    .await?;
    set_ready(&api, name, "True", "Valid", "store validated").await
}

/// Writes a Ready condition on an ESO object's status subresource, the way ESO does.
/// For an ExternalSecret it also records `syncedResourceVersion` for its current generation.
pub async fn set_ready(
    api: &Api<DynamicObject>,
    name: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> Result<()> {
    let obj = api.get(name).await?;
    let generation = obj.metadata.generation.unwrap_or(1);
    let patch = json!({
        "status": {
            "syncedResourceVersion": format!("{generation}-fake"),
            "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message,
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        }
    });
    // Only ExternalSecrets have syncedResourceVersion; stores drop the unknown field (pruned).
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("writing status of {}", obj.name_any()))?;
    Ok(())
}
