//! Handing an adopted child over to the operator alone. Server-side apply shares a field between
//! every manager that set it to the same value, so after adopting a Helm-made ExternalSecret,
//! Helm still co-owns its whole spec: a field the bundle later drops would stay set, and nothing
//! would tell a reader that the bundle now decides. The apiserver's documented way to change
//! ownership without changing values is to write managedFields itself.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::api::{Api, Patch, PatchParams};
use secretbundle_api::MANAGER;
use serde_json::json;

use crate::cache::{EsObject, other_claims_spec};

/// Attempts when the object changes between reading its managers and writing them.
const ATTEMPTS: usize = 3;

/// Removes every other manager's claim on the spec of `name`, leaving values untouched: what
/// they set stays, now owned by the operator's apply (or by no one, for fields the bundle does
/// not set). Entries of subresources (ESO's status) and claims on metadata only (a label someone
/// added) are kept. Returns the object as written, or `None` if no other manager claimed the
/// spec any more.
pub(crate) async fn drop_other_spec_managers(
    api: &Api<EsObject>,
    name: &str,
) -> Result<Option<EsObject>, kube::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let meta = api.get_metadata(name).await?.metadata;
        let all = meta.managed_fields.unwrap_or_default();
        let keep = kept(&all);
        // Never empty (ours is there): an empty list would mean "leave managedFields alone".
        if keep.len() == all.len() || keep.is_empty() {
            return Ok(None);
        }
        // Only for exactly the version read: a write in between may have claimed anew.
        let patch = json!({"metadata": {
            "resourceVersion": meta.resource_version,
            "managedFields": keep,
        }});
        let pp = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..PatchParams::default()
        };
        match api.patch(name, &pp, &Patch::Merge(&patch)).await {
            Ok(o) => return Ok(Some(o)),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < ATTEMPTS => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The entries that stay: the operator's own, those of subresources, and those that claim
/// nothing of the spec.
fn kept(entries: &[ManagedFieldsEntry]) -> Vec<&ManagedFieldsEntry> {
    entries
        .iter()
        .filter(|e| {
            let has_spec = e
                .fields_v1
                .as_ref()
                .is_some_and(|f| f.0.get("f:spec").is_some());
            !other_claims_spec(e.manager.as_deref(), e.subresource.as_deref(), has_spec)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;

    fn entry(
        manager: &str,
        subresource: Option<&str>,
        fields: serde_json::Value,
    ) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            subresource: subresource.map(Into::into),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        }
    }

    #[test]
    fn only_other_claims_on_the_spec_go() {
        let ours = entry(MANAGER, None, json!({"f:spec": {}}));
        let helm = entry("helm", None, json!({"f:metadata": {}, "f:spec": {}}));
        let eso = entry("external-secrets", Some("status"), json!({"f:status": {}}));
        let labeller = entry("kubectl-label", None, json!({"f:metadata": {}}));
        let all = [ours.clone(), helm, eso.clone(), labeller.clone()];
        let names: Vec<_> = kept(&all).iter().map(|e| e.manager.clone()).collect();
        assert_eq!(names, [ours.manager, eso.manager, labeller.manager]);
    }

    #[test]
    fn nothing_to_drop_keeps_all() {
        let all = [entry(MANAGER, None, json!({"f:spec": {}}))];
        assert_eq!(kept(&all).len(), 1);
    }
}
