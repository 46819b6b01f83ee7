//! The bundle as the cluster would hold it once the file is applied, from a dry run: the CRD's
//! schema, defaults and CEL rules (transition rules included) judge it, in the apiserver's own
//! words, and an existing bundle keeps its UID, so its children render with their real owner.

use anyhow::Context as _;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use secretbundle_api::SecretBundle;
use serde_json::{Map, Value, json};

use super::input::BundleDoc;

/// Field manager of the dry-run that creates a bundle not in the cluster yet.
const DIFF_MANAGER: &str = "secretbundle-diff";

/// The bundle as applied, or the apiserver's reason for refusing it.
pub async fn as_applied(
    client: &Client,
    doc: &BundleDoc,
) -> anyhow::Result<Result<SecretBundle, String>> {
    let api = Api::<SecretBundle>::all(client.clone());
    let live = api
        .get_opt(&doc.name)
        .await
        .with_context(|| format!("getting SecretBundle {}", doc.name))?;
    let answer = match live {
        None => {
            let pp = PatchParams::apply(DIFF_MANAGER)
                .dry_run()
                .validation_strict();
            api.patch(&doc.name, &pp, &Patch::Apply(&doc.value)).await
        }
        Some(live) => {
            // The spec replaced whole (server-side apply under another manager would keep
            // fields the file dropped); metadata merged, so imperative annotations stay.
            let patch: json_patch::Patch = serde_json::from_value(replace_spec(&live, &doc.value))
                .context("building the dry-run patch")?;
            let pp = PatchParams::default().dry_run().validation_strict();
            api.patch(&doc.name, &pp, &Patch::Json::<()>(patch)).await
        }
    };
    match answer {
        Ok(bundle) => Ok(Ok(bundle)),
        Err(kube::Error::Api(s)) if matches!(s.code, 400 | 422) => Ok(Err(s.message)),
        Err(e) => Err(e).with_context(|| format!("dry-run of SecretBundle {}", doc.name)),
    }
}

/// An RFC 6902 patch: the file's spec whole, and the live labels and annotations with the
/// file's on top.
pub fn replace_spec(live: &SecretBundle, file: &Value) -> Value {
    let merged = |live: &std::collections::BTreeMap<String, String>, key: &str| {
        let mut out: Map<String, Value> = live
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        if let Some(Value::Object(file)) = file.pointer(&format!("/metadata/{key}")) {
            out.extend(file.clone());
        }
        Value::Object(out)
    };
    json!([
        {"op": "add", "path": "/spec", "value": file.get("spec").cloned().unwrap_or(Value::Null)},
        {"op": "add", "path": "/metadata/labels", "value": merged(live.labels(), "labels")},
        {"op": "add", "path": "/metadata/annotations", "value": merged(live.annotations(), "annotations")},
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_is_replaced_whole_and_metadata_merged() {
        let live: SecretBundle = serde_json::from_value(json!({
            "metadata": {"name": "b", "labels": {"team": "x", "tier": "1"},
                "annotations": {"secrets.ameide.io/refresh-requested-at": "r1"}},
            "spec": {"targetNamespace": "ns", "secretStoreRef": {"name": "s"}, "dependsOn": ["p"],
                "secrets": [{"name": "a", "dataFrom": [{"extract": {"key": "k"}}]}]}
        }))
        .expect("live");
        let file = json!({"metadata": {"name": "b", "labels": {"tier": "2"}},
            "spec": {"targetNamespace": "ns", "secretStoreRef": {"name": "s"}, "secrets": []}});
        let patch = replace_spec(&live, &file);
        assert_eq!(
            patch[0]["value"], file["spec"],
            "dependsOn dropped with the file"
        );
        assert_eq!(patch[1]["value"], json!({"team": "x", "tier": "2"}));
        assert_eq!(
            patch[2]["value"],
            json!({"secrets.ameide.io/refresh-requested-at": "r1"})
        );
        serde_json::from_value::<json_patch::Patch>(patch).expect("a valid RFC 6902 patch");
    }
}
